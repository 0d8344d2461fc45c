// The Configure page of a virtual machine: what it shows of the VM (readVm), and one form per
// part of the VM, as Virtual Server's site had them (CHANGES; the routes are in vms.ts). Every
// change is made by API calls as the signed-in user; only a turned-off VM's hardware can change.

import type { Response } from 'express';
import type { HaSettings } from '../cluster/model.js';
import { hardDisks, type VmConfig } from '../../vmm/config.js';
import { PROFILE, USB_DEVICES } from '../../vmm/profile.js';
import { ApiError, toApiError } from '../errors.js';
import { fieldOf } from '../api/fields.js';
import { type FieldErrors, type SiteContext, type SiteRequest, api, can, refuseFor } from './context.js';
import { DEFAULT_DYNAMIC_GB, MAX_SIZE_MB } from './disks.js';
import { type Form, Refusal, beside, problem, text, wholeNumber, wholeNumberWithin } from './forms.js';
import { networkChoices, pickedNetwork } from './networks.js';

/** A VM as the Configure and Remove pages show it. */
export interface VmView {
  id: string;
  name: string;
  notes: string;
  state: string;
  /** Only a turned-off VM's configuration can change. */
  off: boolean;
  file: string;
  memoryMB: number;
  autoStart: string;
  autoStartDelay: number;
  shutdownAction: string;
  /** Whether the VM writes to undo disks, and what turning it off does to them by default. */
  undoable: boolean;
  undoAction: string;
  /** undo: the undo disk (.vud) the VM writes instead of this disk, or null. */
  disks: { ref: string; slot: string; bus: 'IDE' | 'SCSI'; busNumber: number; deviceNumber: number; path: string; undo: string | null }[];
  dvds: { ref: string; slot: string; busNumber: number; deviceNumber: number; image: string | null }[];
  scsi: { ref: string; index: number; model: string; disks: number }[];
  /** network: the id of the virtual network the adapter is connected to, or null. */
  nics: { ref: string; index: number; model: string; mac: string; network: string | null }[];
  com2: string | null;
  lpt1: string | null;
  floppy: { image: string | null } | null;
  usb: string[];
  /** IDE positions ("1:0") that hold nothing yet. */
  freeIde: string[];
  /**
   * In a cluster: the host it runs on (or last ran on), that host's API address when it is
   * another host (this page then shows what that host answers), and its high availability; null on a host alone.
   */
  cluster: { host: string | null; elsewhere: { address: string } | null; ha: HaSettings } | null;
}

export async function readVm(ctx: SiteContext, req: SiteRequest, id: string): Promise<VmView> {
  const self = `VirtualMachine/${id}`;
  const get = <T>(member: string): Promise<T> => api<T>(ctx, req, `VirtualMachine.${member}`, { this: self });
  const config = await get<VmConfig>('get_Configuration');
  const state = await get<string>('get_State');
  const taken = new Set(config.ide.map((d) => `${d.channel}:${d.device}`));
  const positions = Array.from({ length: PROFILE.ide.channels }, (_, c) => Array.from({ length: PROFILE.ide.devicesPerChannel }, (__, d) => `${c}:${d}`)).flat();
  return {
    id: config.id,
    name: config.name,
    notes: await get<string>('get_Notes'),
    state,
    off: state === 'TurnedOff',
    file: await get<string>('get_File'),
    memoryMB: config.memoryMB,
    autoStart: await get<string>('get_AutoStartAtLaunch'),
    autoStartDelay: await get<number>('get_AutoStartAtLaunchDelay'),
    shutdownAction: await get<string>('get_ShutdownActionOnQuit'),
    undoable: await get<boolean>('get_Undoable'),
    undoAction: await get<string>('get_UndoAction'),
    disks: await Promise.all(hardDisks(config).map(async ({ slot, path: file }) => {
      const [, bus, busNumber, deviceNumber] = /^(ide|scsi)(\d+)-(\d+)$/.exec(slot)!;
      const ref = `HardDiskConnection/${config.id}/${slot}`;
      const undo = await api<string | null>(ctx, req, 'HardDiskConnection.get_UndoHardDisk', { this: ref });
      return { ref, slot, bus: bus === 'ide' ? 'IDE' as const : 'SCSI' as const, busNumber: Number(busNumber), deviceNumber: Number(deviceNumber), path: file, undo };
    })),
    dvds: config.ide.flatMap((d) => (d.type === 'DVD'
      ? [{ ref: `DVDROMDrive/${config.id}/ide${d.channel}-${d.device}`, slot: `ide${d.channel}-${d.device}`, busNumber: d.channel, deviceNumber: d.device, image: d.image }]
      : [])),
    scsi: config.scsi.map((a, index) => ({ ref: `SCSIController/${config.id}/${index}`, index, model: a.model, disks: a.disks.length })),
    nics: config.networkAdapters.map((n, index) => ({ ref: `NetworkAdapter/${config.id}/${index}`, index, model: n.model, mac: n.mac, network: n.network ?? null })),
    com2: await get<string | null>('get_SerialPort2'),
    lpt1: await get<string | null>('get_ParallelPort1'),
    floppy: await get<{ image: string | null } | null>('get_FloppyDrive'),
    usb: config.usb,
    freeIde: positions.filter((p) => !taken.has(p)),
    cluster: ctx.services.cluster ? await clusterView(ctx, req, ctx.services.cluster.hostName, get) : null,
  };
}

async function clusterView(ctx: SiteContext, req: SiteRequest, thisHost: string, get: <T>(member: string) => Promise<T>): Promise<VmView['cluster']> {
  const host = (await get<{ $ref: string } | null>('get_Host'))?.$ref.split('/').at(-1) ?? null;
  const elsewhere = host && host !== thisHost ? { address: await api<string>(ctx, req, 'Host.get_Address', { this: `Host/${host}` }) } : null;
  return { host, elsewhere, ha: await get<HaSettings>('get_HighAvailability') };
}

/** A declared parameter's choices (server/api/fields.ts), for a select or a set of checkboxes. */
function choicesOf(method: string, param: string): readonly string[] {
  return fieldOf(method, param).choices ?? [];
}

/**
 * What every page of these shows: the profile's counts, and each field's choices and limits as
 * the member it is posted to declares them.
 */
export const CHOICES = {
  profile: PROFILE,
  nicModels: choicesOf('VirtualMachine.AddNetworkAdapter', 'model'),
  scsiModels: choicesOf('VirtualMachine.AddSCSIController', 'model'),
  // AddUSBDevice declares its type as text (its doc names the devices): the profile's list.
  usbDevices: USB_DEVICES,
  busTypes: choicesOf('VirtualMachine.AddHardDiskConnection', 'busType'),
  autoStartRules: choicesOf('VirtualMachine.put_AutoStartAtLaunch', 'value'),
  shutdownActions: choicesOf('VirtualMachine.put_ShutdownActionOnQuit', 'value'),
  undoActions: choicesOf('VirtualMachine.put_UndoAction', 'value'),
  fields: {
    name: fieldOf('VirtualMachine.put_Name', 'value'),
    notes: fieldOf('VirtualMachine.put_Notes', 'value'),
    memory: fieldOf('VirtualMachine.put_Memory', 'value'),
    autoStartDelay: fieldOf('VirtualMachine.put_AutoStartAtLaunchDelay', 'value'),
  },
  defaultDiskMB: DEFAULT_DYNAMIC_GB * 1024, maxDiskMB: MAX_SIZE_MB,
};

/** The memory field of Create and Configure, in MB within put_Memory's declared limits. */
export function memoryOf(form: Form): number {
  const { min, max } = CHOICES.fields.memory;
  return wholeNumberWithin(form, 'memory', 'Memory', CHOICES.fields.memory, (value) => `${value} MB is outside the limits of ${String(min)} to ${String(max)} MB per VM`);
}

/** The sections of the Configure page, with what the "saved" notice says. */
const SECTIONS: Record<string, string> = {
  general: 'The name and notes were saved.',
  memory: 'The memory was saved.',
  disks: 'The hard disks were changed.',
  undo: 'The undo disk settings were saved.',
  'undo-off': 'Undo disks were turned off, and the undo disks there were discarded.',
  'undo-discarded': 'The undo disks were discarded: the hard disks are as they were before the VM was turned on with them.',
  dvd: 'The CD/DVD drives were changed.',
  scsi: 'The SCSI adapters were changed.',
  nics: 'The network adapters were changed.',
  ports: 'The COM and LPT ports were changed.',
  floppy: 'The floppy drive was changed.',
  usb: 'The USB devices were changed.',
  autostart: 'The automatic start and stop were saved.',
  ha: 'The high availability settings were saved.',
};

export interface ConfigureOptions { status?: number; errors?: FieldErrors; form?: Form; saved?: string }

/** The VM a page shows; null when it cannot be read, and the refusal page has answered. */
export async function vmForPage(ctx: SiteContext, req: SiteRequest, res: Response, id: string): Promise<VmView | null> {
  try {
    return await readVm(ctx, req, id);
  } catch (error) {
    refuseFor(req, res, error);
    return null;
  }
}

export async function renderConfigure(ctx: SiteContext, req: SiteRequest, res: Response, id: string, options: ConfigureOptions = {}): Promise<void> {
  const vm = await vmForPage(ctx, req, res, id);
  if (!vm) return;
  const self = `VirtualMachine/${vm.id}`;
  res.status(options.status ?? 200).render('vms/configure', {
    title: `Configure ${vm.name}`,
    vm,
    errors: options.errors ?? {},
    form: options.form ?? {},
    saved: options.saved && Object.hasOwn(SECTIONS, options.saved) ? SECTIONS[options.saved] : null,
    canChange: can(ctx, req, 'change', self),
    canControl: can(ctx, req, 'control', self),
    canDelete: can(ctx, req, 'delete', self),
    // The adapters' network pickers: every network the caller may see.
    networks: await networkChoices(ctx, req).catch(() => []),
    ...CHOICES,
  });
}

/** A VM's API as one form uses it: calls on the VM unless the params name another "this". */
export interface VmCalls {
  vm: VmView;
  call<T = unknown>(method: string, params?: Record<string, unknown>): Promise<T>;
}

export interface Change {
  /** The section of the page the form is in. */
  section: string;
  /** Returns the notice to show (a key of SECTIONS) when it is not the section's own. */
  apply(on: VmCalls, form: Form): Promise<string | void>;
}

/** The part's reference a remove or media form names, which must be one of the VM's. */
function partOf(form: Form, name: string, field: string): string {
  const reference = text(form[name]);
  if (!reference) throw problem(field, `the form names no ${name}`);
  return reference;
}

/** The slot a DVD drive's reference names ("ide1-0"), which keys its image field. */
function driveSlot(reference: string): string {
  return /\/(ide\d-\d)$/.exec(reference)?.[1] ?? 'unknown';
}

/** A form that removes one part of the VM: its reference is in the field `name`, which is also the API's parameter. */
function removal(section: string, method: string, name: string, list: string): Change {
  return {
    section,
    async apply({ call }, form) {
      await beside(list, call(method, { [name]: partOf(form, name, list) }));
    },
  };
}

/** COM2 or LPT1: sent to the file the field names, or to nothing when it is empty. */
function port(field: string, method: string): Change {
  return {
    section: 'ports',
    async apply({ call }, form) {
      const file = text(form[field]);
      await beside(field, call(method, file ? { path: file } : {}));
    },
  };
}

/** fieldErrors names a refused configuration by its top-level field: a refused MAC address belongs beside the MAC, not the model. */
function besideMac(error: unknown): unknown {
  const reason = error instanceof Refusal ? error.reason : error;
  const e = toApiError(reason);
  const problems = e.details.problems as { field: string; message: string }[] | undefined;
  if (e.errorName !== 'VM_E_CONFIG_INVALID' || !problems?.length || !problems.every((p) => p.field.endsWith('.mac'))) return error;
  return new Refusal('nic-mac', new ApiError(e.errorName, problems.map((p) => p.message).join('; ')));
}

/** The Configure page's forms, by the last part of the address they post to (/vms/ID/<action>). */
export const CHANGES: Record<string, Change> = {
  general: {
    section: 'general',
    async apply({ vm, call }, form) {
      // A running VM's name field is disabled, so the browser leaves it out.
      if (form.name !== undefined) {
        const name = text(form.name);
        if (!name) throw problem('name', 'a virtual machine needs a name');
        if (name !== vm.name) await beside('name', call('VirtualMachine.put_Name', { value: name }));
      }
      if (typeof form.notes === 'string' && form.notes !== vm.notes) await beside('notes', call('VirtualMachine.put_Notes', { value: form.notes }));
    },
  },
  memory: {
    section: 'memory',
    async apply({ call }, form) {
      await beside('memory', call('VirtualMachine.put_Memory', { value: memoryOf(form) }));
    },
  },
  'disks/add': {
    section: 'disks',
    async apply({ call }, form) {
      const file = text(form['disk-path']);
      if (!file) throw problem('disk-path', 'choose the .vhd file to attach');
      const params = {
        path: file, busType: text(form['disk-bus-type']),
        busNumber: wholeNumber(form, 'disk-bus-number', 'The bus number'), deviceNumber: wholeNumber(form, 'disk-device-number', 'The device number'),
      };
      await beside((e) => (e.errorName.startsWith('VM_E_DRIVE_') ? 'disk-position' : 'disk-path'), call('VirtualMachine.AddHardDiskConnection', params),
        { path: 'disk-path', busType: 'disk-position', busNumber: 'disk-position', deviceNumber: 'disk-position' });
    },
  },
  'disks/remove': removal('disks', 'VirtualMachine.RemoveHardDiskConnection', 'connection', 'disks-list'),
  undo: {
    section: 'disks',
    async apply({ vm, call }, form) {
      // The choice is checked first: then a refused one leaves the check box as it was.
      const action = text(form['undo-action']);
      if (!CHOICES.undoActions.includes(action)) throw problem('undo-action', `choose one of ${CHOICES.undoActions.join(', ')}`);
      // The check box is sent only while the VM is off (it is disabled otherwise); "undoable-shown" says it was on the page.
      const undoable = form['undoable-shown'] === '1' ? form.undoable === 'on' : vm.undoable;
      const discards = vm.undoable && !undoable && vm.disks.some((d) => d.undo !== null);
      if (undoable !== vm.undoable) await beside('undoable', call('VirtualMachine.put_Undoable', { value: undoable }));
      if (action !== vm.undoAction) await beside('undo-action', call('VirtualMachine.put_UndoAction', { value: action }));
      return discards ? 'undo-off' : 'undo';
    },
  },
  'undo/discard': {
    section: 'disks',
    async apply({ call }) {
      await beside('undo-disks', call('VirtualMachine.DiscardUndoDisks'));
      return 'undo-discarded';
    },
  },
  'dvd/add': {
    section: 'dvd',
    async apply({ call }, form) {
      const position = /^(\d+):(\d+)$/.exec(text(form['dvd-position']));
      if (!position) throw problem('dvd-position', 'choose a free IDE position (channel:device)');
      await beside('dvd-position', call('VirtualMachine.AddDVDROMDrive', { busNumber: Number(position[1]), deviceNumber: Number(position[2]) }));
    },
  },
  'dvd/remove': removal('dvd', 'VirtualMachine.RemoveDVDROMDrive', 'drive', 'dvd-list'),
  'dvd/media': {
    section: 'dvd',
    async apply({ call }, form) {
      const drive = partOf(form, 'drive', 'dvd-list');
      const field = `dvd-image-${driveSlot(drive)}`;
      if (form.do === 'release') {
        await beside(field, call('DVDROMDrive.ReleaseImage', { this: drive }));
        return;
      }
      const image = text(form[field]);
      if (!image) throw problem(field, 'choose the ISO image to put in the drive');
      await beside(field, call('DVDROMDrive.AttachImage', { this: drive, path: image }));
    },
  },
  'scsi/add': {
    section: 'scsi',
    async apply({ call }, form) {
      await beside('scsi-model', call('VirtualMachine.AddSCSIController', { model: text(form['scsi-model']) }));
    },
  },
  'scsi/remove': removal('scsi', 'VirtualMachine.RemoveSCSIController', 'controller', 'scsi-list'),
  'nics/add': {
    section: 'nics',
    async apply({ call }, form) {
      const mac = text(form['nic-mac']);
      try {
        // A refused MAC address (not under 00:03:FF, or another VM's) belongs beside the MAC field.
        await beside((e) => (e.errorName.startsWith('VM_E_MAC_') ? 'nic-mac' : 'nic-model'), call('VirtualMachine.AddNetworkAdapter', { model: text(form['nic-model']), ...(mac ? { ethernetAddress: mac } : {}) }));
      } catch (error) {
        throw besideMac(error);
      }
    },
  },
  'nics/network': {
    section: 'nics',
    // Connecting an adapter works while the VM runs, as the cable of a real one.
    async apply({ vm, call }, form) {
      const adapter = partOf(form, 'adapter', 'nics-list');
      const nic = vm.nics.find((n) => n.ref === adapter);
      if (!nic) throw problem('nics-list', `${adapter} is not one of ${vm.name}'s network adapters`);
      const field = `nic-network-${nic.index}`;
      const network = pickedNetwork(form, field);
      if (network === null) {
        if (nic.network !== null) await beside(field, call('NetworkAdapter.DetachFromVirtualNetwork', { this: adapter }));
      } else if (network !== `VirtualNetwork/${nic.network ?? ''}`) {
        await beside(field, call('NetworkAdapter.AttachToVirtualNetwork', { this: adapter, network }));
      }
    },
  },
  'nics/remove': removal('nics', 'VirtualMachine.RemoveNetworkAdapter', 'adapter', 'nics-list'),
  com2: port('com2', 'VirtualMachine.ConfigureSerialPort2'),
  lpt1: port('lpt1', 'VirtualMachine.ConfigureParallelPort1'),
  'floppy/add': {
    section: 'floppy',
    async apply({ call }) {
      await beside('floppy-drive', call('VirtualMachine.AddFloppyDrive'));
    },
  },
  'floppy/remove': {
    section: 'floppy',
    async apply({ call }) {
      await beside('floppy-drive', call('VirtualMachine.RemoveFloppyDrive'));
    },
  },
  'floppy/media': {
    section: 'floppy',
    async apply({ call }, form) {
      if (form.do === 'release') {
        await beside('floppy-image', call('VirtualMachine.ReleaseFloppyImage'));
        return;
      }
      const image = text(form['floppy-image']);
      if (!image) throw problem('floppy-image', 'choose the floppy disk image (.vfd) to put in the drive');
      await beside('floppy-image', call('VirtualMachine.AttachFloppyImage', { path: image }));
    },
  },
  usb: {
    section: 'usb',
    async apply({ vm, call }, form) {
      for (const device of CHOICES.usbDevices) {
        const wanted = form[`usb-${device}`] === 'on';
        if (wanted && !vm.usb.includes(device)) await beside('usb', call('VirtualMachine.AddUSBDevice', { type: device }));
        if (!wanted && vm.usb.includes(device)) await beside('usb', call('VirtualMachine.RemoveUSBDevice', { type: device }));
      }
    },
  },
  autostart: {
    section: 'autostart',
    async apply({ vm, call }, form) {
      // The delay first: it is the one a typing mistake makes the API refuse, and then nothing has changed.
      const delay = wholeNumber(form, 'auto-start-delay', 'The delay');
      if (delay !== vm.autoStartDelay) await beside('auto-start-delay', call('VirtualMachine.put_AutoStartAtLaunchDelay', { value: delay }));
      const rule = text(form['auto-start']);
      if (rule !== vm.autoStart) await beside('auto-start', call('VirtualMachine.put_AutoStartAtLaunch', { value: rule }));
      const action = text(form['shutdown-action']);
      if (action !== vm.shutdownAction) await beside('shutdown-action', call('VirtualMachine.put_ShutdownActionOnQuit', { value: action }));
    },
  },
  ha: {
    section: 'ha',
    async apply({ call }, form) {
      const value: HaSettings = {
        enabled: form['ha-enabled'] === 'on',
        priority: wholeNumber(form, 'ha-priority', 'The priority'),
        preferredHosts: text(form['ha-preferred']).split(/[\s,]+/).filter(Boolean),
        maxRestarts: wholeNumber(form, 'ha-max-restarts', 'The number of restarts'),
      };
      // One parameter holds every setting: a refusal names the field from its message's first words.
      await beside((e) => HA_FIELDS.find(([key]) => e.message.includes(key))?.[1] ?? 'ha-enabled', call('VirtualMachine.put_HighAvailability', { value }));
    },
  },
};

/** The HA form's fields, by the setting a refusal's message names. */
const HA_FIELDS = [['priority', 'ha-priority'], ['preferredHosts', 'ha-preferred'], ['maxRestarts', 'ha-max-restarts']] as const;
