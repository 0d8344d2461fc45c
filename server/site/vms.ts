// The Virtual Machines pages: the list to configure, Create, Add (register a .vmc), Configure
// (one form per part of the VM, as Virtual Server's site had them) and Remove. Every change is
// made by API calls as the signed-in user; a refusal shows the page again with the API's
// message beside the field it concerns and the entered values kept. The profile's limits are
// shown as hints, never as HTML min/max, so that the API is the one that says no.

import path from 'node:path';
import type { Response, Router } from 'express';
import { hardDisks, type VmConfig } from '../../vmm/config.js';
import { NIC_MODELS, PROFILE, SCSI_MODELS, USB_DEVICES } from '../../vmm/profile.js';
import { ApiError, toApiError } from '../api/errors.js';
import { SERVER_REF } from '../api/objects.js';
import { AUTO_START, SHUTDOWN_ACTIONS } from '../api/schema.js';
import { type FieldErrors, type SiteContext, type SiteRequest, api, can, errorName, fieldErrors, refusePage, wantsJson } from './context.js';

interface Ref { $ref: string }
type Form = Record<string, unknown>;

/** Where a field of the configuration document is edited on these pages. */
const DOCUMENT_FIELDS: Record<string, string> = {
  name: 'name', memoryMB: 'memory', networkAdapters: 'nic-model', scsi: 'scsi-model', usb: 'usb', com2: 'com2', lpt1: 'lpt1',
};

/** The default size of a new dynamic disk, as CreateDynamicVirtualHardDisk's (127 GB). */
const DEFAULT_DISK_MB = 127 * 1024;
/** The largest VHD, in MB (2040 GB), as the API's sizeMB allows. */
const MAX_DISK_MB = 2_088_960;

/**
 * A refusal, and the form field it is shown beside: the field `params` gives for the API
 * parameter it names, else the one the configuration document's field is edited in, else `field`.
 */
class Refusal extends Error {
  constructor(readonly field: string, readonly reason: unknown, readonly params: Record<string, string> = {}) {
    super(reason instanceof Error ? reason.message : String(reason));
  }
}

/** Runs one API call whose refusal belongs beside `field` (chosen by the error's name when a function). */
async function beside<T>(field: string | ((name: string) => string), work: Promise<T>, params: Record<string, string> = {}): Promise<T> {
  try {
    return await work;
  } catch (error) {
    throw new Refusal(typeof field === 'string' ? field : field(errorName(error)), error, params);
  }
}

/** A value the form can tell is wrong before the API is asked. */
function problem(field: string, message: string): Refusal {
  return new Refusal(field, new ApiError('VM_E_INVALID_PARAMS', message));
}

function text(form: Form, name: string): string {
  const value = form[name];
  return typeof value === 'string' ? value.trim() : '';
}

function wholeNumber(form: Form, name: string, what: string): number {
  const value = text(form, name);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) throw problem(name, `${what} is a whole number${value ? `; "${value}" is not one` : ''}`);
  return Number(value);
}

/** The HTTP status of a refusal: a missing right is 403, an unknown VM 404, a VM in the wrong state 409. */
function statusOf(error: unknown): number {
  const reason = error instanceof Refusal ? error.reason : error;
  switch (errorName(reason)) {
    case 'VM_E_ACCESS_DENIED': return 403;
    case 'VM_E_VM_UNKNOWN': return 404;
    case 'VM_E_VM_RUNNING':
    case 'VM_E_VM_SAVED': return 409;
    default: return 400;
  }
}

/** A refusal as messages by form field: the API's own field when it names one, else the step's. */
function errorsOf(error: unknown): FieldErrors {
  const field = error instanceof Refusal ? error.field : '_form';
  const reason = error instanceof Refusal ? error.reason : error;
  const params = error instanceof Refusal ? error.params : {};
  const errors = fieldErrors(reason, (apiField) => params[apiField] ?? DOCUMENT_FIELDS[apiField] ?? field);
  if (errors._form && field !== '_form') {
    errors[field] = errors[field] ? `${errors[field]}; ${errors._form}` : errors._form;
    delete errors._form;
  }
  return errors;
}

/** fieldErrors names a refused configuration by its top-level field: a refused MAC address belongs beside the MAC, not the model. */
function besideMac(error: unknown): unknown {
  const reason = error instanceof Refusal ? error.reason : error;
  const e = toApiError(reason);
  const problems = e.details.problems as { field: string; message: string }[] | undefined;
  if (e.errorName !== 'VM_E_CONFIG_INVALID' || !problems?.length || !problems.every((p) => p.field.endsWith('.mac'))) return error;
  return new Refusal('nic-mac', new ApiError(e.errorName, problems.map((p) => p.message).join('; ')));
}

/** Answers a refused form: the page again with the messages for a browser, JSON for the site's scripts. */
function answerRefusal(req: SiteRequest, res: Response, error: unknown, render: (status: number, errors: FieldErrors) => Promise<void> | void): Promise<void> | void {
  const status = statusOf(error);
  const errors = errorsOf(error);
  if (status === 403 || status === 404) return refusePage(req, res, status, Object.values(errors).join('; '));
  if (wantsJson(req)) {
    res.status(status).json({ error: { message: Object.values(errors).join('; '), fields: errors } });
    return;
  }
  return render(status, errors);
}

function answerDone(req: SiteRequest, res: Response, location: string): void {
  if (wantsJson(req)) res.json({ ok: true, location });
  else res.redirect(303, location);
}

// --- Reading a VM for the pages ---------------------------------------------------------------

interface VmView {
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
  disks: { ref: string; slot: string; bus: 'IDE' | 'SCSI'; busNumber: number; deviceNumber: number; path: string }[];
  dvds: { ref: string; slot: string; busNumber: number; deviceNumber: number; image: string | null }[];
  scsi: { ref: string; index: number; model: string; disks: number }[];
  nics: { ref: string; index: number; model: string; mac: string; network: string }[];
  com2: string | null;
  lpt1: string | null;
  floppy: { image: string | null } | null;
  usb: string[];
  /** IDE positions ("1:0") that hold nothing yet. */
  freeIde: string[];
}

async function readVm(ctx: SiteContext, req: SiteRequest, id: string): Promise<VmView> {
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
    disks: hardDisks(config).map(({ slot, path: file }) => {
      const [, bus, busNumber, deviceNumber] = /^(ide|scsi)(\d+)-(\d+)$/.exec(slot)!;
      return { ref: `HardDiskConnection/${config.id}/${slot}`, slot, bus: bus === 'ide' ? 'IDE' as const : 'SCSI' as const, busNumber: Number(busNumber), deviceNumber: Number(deviceNumber), path: file };
    }),
    dvds: config.ide.flatMap((d) => (d.type === 'DVD'
      ? [{ ref: `DVDROMDrive/${config.id}/ide${d.channel}-${d.device}`, slot: `ide${d.channel}-${d.device}`, busNumber: d.channel, deviceNumber: d.device, image: d.image }]
      : [])),
    scsi: config.scsi.map((a, index) => ({ ref: `SCSIController/${config.id}/${index}`, index, model: a.model, disks: a.disks.length })),
    nics: config.networkAdapters.map((n, index) => ({ ref: `NetworkAdapter/${config.id}/${index}`, index, model: n.model, mac: n.mac, network: n.network })),
    com2: await get<string | null>('get_SerialPort2'),
    lpt1: await get<string | null>('get_ParallelPort1'),
    floppy: await get<{ image: string | null } | null>('get_FloppyDrive'),
    usb: config.usb,
    freeIde: positions.filter((p) => !taken.has(p)),
  };
}

/** What every page of these shows of the profile: the limits, the models and the choices. */
const CHOICES = {
  profile: PROFILE, nicModels: NIC_MODELS, scsiModels: SCSI_MODELS, usbDevices: USB_DEVICES,
  autoStartRules: AUTO_START, shutdownActions: SHUTDOWN_ACTIONS, defaultDiskMB: DEFAULT_DISK_MB, maxDiskMB: MAX_DISK_MB,
};

/** The sections of the Configure page, with what the "saved" notice says. */
const SECTIONS: Record<string, string> = {
  general: 'The name and notes were saved.',
  memory: 'The memory was saved.',
  disks: 'The hard disks were changed.',
  dvd: 'The CD/DVD drives were changed.',
  scsi: 'The SCSI adapters were changed.',
  nics: 'The network adapters were changed.',
  ports: 'The COM and LPT ports were changed.',
  floppy: 'The floppy drive was changed.',
  usb: 'The USB devices were changed.',
  autostart: 'The automatic start and stop were saved.',
};

interface ConfigureOptions { status?: number; errors?: FieldErrors; form?: Form; saved?: string }

async function renderConfigure(ctx: SiteContext, req: SiteRequest, res: Response, id: string, options: ConfigureOptions = {}): Promise<void> {
  let vm: VmView;
  try {
    vm = await readVm(ctx, req, id);
  } catch (error) {
    return refusePage(req, res, statusOf(error) === 403 ? 403 : 404, Object.values(errorsOf(error)).join('; '));
  }
  const self = `VirtualMachine/${vm.id}`;
  res.status(options.status ?? 200).render('vms/configure', {
    title: `Configure ${vm.name}`,
    vm,
    errors: options.errors ?? {},
    form: options.form ?? {},
    saved: options.saved && Object.hasOwn(SECTIONS, options.saved) ? SECTIONS[options.saved] : null,
    canChange: can(ctx, req, 'change', self),
    canDelete: can(ctx, req, 'delete', self),
    ...CHOICES,
  });
}

// --- Changes made on the Configure page -------------------------------------------------------

/** A VM's API as one form uses it: calls on the VM unless the params name another "this". */
interface VmCalls {
  vm: VmView;
  call<T = unknown>(method: string, params?: Record<string, unknown>): Promise<T>;
}

interface Change {
  /** The section of the page the form is in. */
  section: string;
  apply(on: VmCalls, form: Form): Promise<void>;
}

/** The part's reference a remove or media form names, which must be one of the VM's. */
function partOf(form: Form, name: string, field: string): string {
  const reference = text(form, name);
  if (!reference) throw problem(field, `the form names no ${name}`);
  return reference;
}

/** The slot a DVD drive's reference names ("ide1-0"), which keys its image field. */
function driveSlot(reference: string): string {
  return /\/(ide\d-\d)$/.exec(reference)?.[1] ?? 'unknown';
}

const CHANGES: Record<string, Change> = {
  general: {
    section: 'general',
    async apply({ vm, call }, form) {
      // A running VM's name field is disabled, so the browser leaves it out.
      if (form.name !== undefined) {
        const name = text(form, 'name');
        if (!name) throw problem('name', 'a virtual machine needs a name');
        if (name !== vm.name) await beside('name', call('VirtualMachine.put_Name', { value: name }));
      }
      if (typeof form.notes === 'string' && form.notes !== vm.notes) await beside('notes', call('VirtualMachine.put_Notes', { value: form.notes }));
    },
  },
  memory: {
    section: 'memory',
    async apply({ call }, form) {
      await beside('memory', call('VirtualMachine.put_Memory', { value: wholeNumber(form, 'memory', 'Memory') }));
    },
  },
  'disks/add': {
    section: 'disks',
    async apply({ call }, form) {
      const file = text(form, 'disk-path');
      if (!file) throw problem('disk-path', 'choose the .vhd file to attach');
      const params = {
        path: file, busType: text(form, 'disk-bus-type'),
        busNumber: wholeNumber(form, 'disk-bus-number', 'The bus number'), deviceNumber: wholeNumber(form, 'disk-device-number', 'The device number'),
      };
      await beside((name) => (name.startsWith('VM_E_DRIVE_') ? 'disk-position' : 'disk-path'), call('VirtualMachine.AddHardDiskConnection', params),
        { path: 'disk-path', busType: 'disk-position', busNumber: 'disk-position', deviceNumber: 'disk-position' });
    },
  },
  'disks/remove': {
    section: 'disks',
    async apply({ call }, form) {
      await beside('disks-list', call('VirtualMachine.RemoveHardDiskConnection', { connection: partOf(form, 'connection', 'disks-list') }));
    },
  },
  'dvd/add': {
    section: 'dvd',
    async apply({ call }, form) {
      const position = /^(\d+):(\d+)$/.exec(text(form, 'dvd-position'));
      if (!position) throw problem('dvd-position', 'choose a free IDE position (channel:device)');
      await beside('dvd-position', call('VirtualMachine.AddDVDROMDrive', { busNumber: Number(position[1]), deviceNumber: Number(position[2]) }));
    },
  },
  'dvd/remove': {
    section: 'dvd',
    async apply({ call }, form) {
      await beside('dvd-list', call('VirtualMachine.RemoveDVDROMDrive', { drive: partOf(form, 'drive', 'dvd-list') }));
    },
  },
  'dvd/media': {
    section: 'dvd',
    async apply({ call }, form) {
      const drive = partOf(form, 'drive', 'dvd-list');
      const field = `dvd-image-${driveSlot(drive)}`;
      if (form.do === 'release') {
        await beside(field, call('DVDROMDrive.ReleaseImage', { this: drive }));
        return;
      }
      const image = text(form, field);
      if (!image) throw problem(field, 'choose the ISO image to put in the drive');
      await beside(field, call('DVDROMDrive.AttachImage', { this: drive, path: image }));
    },
  },
  'scsi/add': {
    section: 'scsi',
    async apply({ call }, form) {
      await beside('scsi-model', call('VirtualMachine.AddSCSIController', { model: text(form, 'scsi-model') }));
    },
  },
  'scsi/remove': {
    section: 'scsi',
    async apply({ call }, form) {
      await beside('scsi-list', call('VirtualMachine.RemoveSCSIController', { controller: partOf(form, 'controller', 'scsi-list') }));
    },
  },
  'nics/add': {
    section: 'nics',
    async apply({ call }, form) {
      const mac = text(form, 'nic-mac');
      try {
        await beside('nic-model', call('VirtualMachine.AddNetworkAdapter', { model: text(form, 'nic-model'), ...(mac ? { ethernetAddress: mac } : {}) }));
      } catch (error) {
        throw besideMac(error);
      }
    },
  },
  'nics/remove': {
    section: 'nics',
    async apply({ call }, form) {
      await beside('nics-list', call('VirtualMachine.RemoveNetworkAdapter', { adapter: partOf(form, 'adapter', 'nics-list') }));
    },
  },
  com2: {
    section: 'ports',
    async apply({ call }, form) {
      const file = text(form, 'com2');
      await beside('com2', call('VirtualMachine.ConfigureSerialPort2', file ? { path: file } : {}));
    },
  },
  lpt1: {
    section: 'ports',
    async apply({ call }, form) {
      const file = text(form, 'lpt1');
      await beside('lpt1', call('VirtualMachine.ConfigureParallelPort1', file ? { path: file } : {}));
    },
  },
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
      const image = text(form, 'floppy-image');
      if (!image) throw problem('floppy-image', 'choose the floppy disk image (.vfd) to put in the drive');
      await beside('floppy-image', call('VirtualMachine.AttachFloppyImage', { path: image }));
    },
  },
  usb: {
    section: 'usb',
    async apply({ vm, call }, form) {
      for (const device of USB_DEVICES) {
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
      const rule = text(form, 'auto-start');
      if (rule !== vm.autoStart) await beside('auto-start', call('VirtualMachine.put_AutoStartAtLaunch', { value: rule }));
      const action = text(form, 'shutdown-action');
      if (action !== vm.shutdownAction) await beside('shutdown-action', call('VirtualMachine.put_ShutdownActionOnQuit', { value: action }));
    },
  },
};

// --- Create and Add ---------------------------------------------------------------------------

/** Waits for a task the page started; its failure becomes the task's error. */
async function taskResult(ctx: SiteContext, req: SiteRequest, task: Ref): Promise<unknown> {
  const self = { this: task.$ref };
  if (!await api<boolean>(ctx, req, 'Task.WaitForCompletion', { ...self, timeoutMs: 60_000 })) {
    throw new ApiError('VM_E_TASK_TIMEOUT', `${await api<string>(ctx, req, 'Task.get_Description', self)} has not finished after a minute`);
  }
  const error = await api<{ name: string; message: string } | null>(ctx, req, 'Task.get_Error', self);
  if (error) throw new ApiError(error.name, error.message);
  return api(ctx, req, 'Task.get_Result', self);
}

/**
 * Creates a VM from the Create form, step by step through the API. Whatever fails after the VM
 * exists deletes it again (its .vmc and folder); the new disk is made last, so that a refusal
 * leaves no disk file behind.
 */
async function createVm(ctx: SiteContext, req: SiteRequest, form: Form): Promise<string> {
  const memory = wholeNumber(form, 'memory', 'Memory');
  const disk = text(form, 'disk');
  if (!['none', 'new', 'existing'].includes(disk)) throw problem('disk', 'choose no disk, a new disk or an existing one');
  const sizeMB = disk === 'new' ? wholeNumber(form, 'disk-size', 'The size') : undefined;
  const existing = disk === 'existing' ? text(form, 'disk-path') : undefined;
  if (existing === '') throw problem('disk-path', 'choose the .vhd file to attach');
  const bus = text(form, 'disk-bus');
  if (disk !== 'none' && !['IDE', 'SCSI'].includes(bus)) throw problem('disk-bus', 'choose IDE 0:0 or SCSI 0:0');
  const nicModel = text(form, 'nic-model');

  const vm = (await beside('name', api<Ref>(ctx, req, 'VirtualServer.CreateVirtualMachine', { name: text(form, 'name') }))).$ref;
  const call = <T>(method: string, params: Record<string, unknown> = {}): Promise<T> => api<T>(ctx, req, method, { this: vm, ...params });
  const attach = async (file: string, field: string): Promise<void> => {
    if (bus === 'SCSI') await beside(field, call('VirtualMachine.AddSCSIController'));
    await beside(field, call('VirtualMachine.AddHardDiskConnection', { path: file, busType: bus, busNumber: 0, deviceNumber: 0 }));
  };
  try {
    await beside('memory', call('VirtualMachine.put_Memory', { value: memory }));
    if (existing) await attach(existing, 'disk-path');
    if (nicModel && nicModel !== 'none') await beside('nic-model', call('VirtualMachine.AddNetworkAdapter', { model: nicModel }));
    if (sizeMB !== undefined) {
      const name = await call<string>('VirtualMachine.get_Name');
      const file = path.join(path.dirname(await call<string>('VirtualMachine.get_File')), `${name}.vhd`);
      const task = await beside('disk-size', api<Ref>(ctx, req, 'VirtualServer.CreateDynamicVirtualHardDisk', { path: file, sizeMB }));
      await beside('disk-size', taskResult(ctx, req, task));
      await attach(file, 'disk-size').catch((error: unknown) => {
        throw new Refusal('disk-size', new ApiError(errorName(error), `${(error as Error).message} (the new disk ${file} was kept)`));
      });
    }
  } catch (error) {
    await api(ctx, req, 'VirtualServer.DeleteVirtualMachine', { vm }).catch(() => undefined);
    throw error;
  }
  return vm.slice('VirtualMachine/'.length);
}

function mayCreate(ctx: SiteContext, req: SiteRequest, res: Response, what: string): boolean {
  if (can(ctx, req, 'change', SERVER_REF)) return true;
  refusePage(req, res, 403, `${what} needs the change right on the server, which ${String(res.locals.user)} (${String(res.locals.role)}) does not have`);
  return false;
}

// --- Routes -----------------------------------------------------------------------------------

export function vmRoutes(router: Router, ctx: SiteContext): void {
  router.get('/vms', async (req: SiteRequest, res: Response) => {
    const refs = await api<Ref[]>(ctx, req, 'VirtualServer.get_VirtualMachines');
    const rows = await Promise.all(refs.map(async ({ $ref }) => {
      const config = await api<VmConfig>(ctx, req, 'VirtualMachine.get_Configuration', { this: $ref });
      const state = await api<string>(ctx, req, 'VirtualMachine.get_State', { this: $ref });
      return { id: config.id, name: config.name, state, memoryMB: config.memoryMB, disks: hardDisks(config).length, nics: config.networkAdapters.length };
    }));
    res.render('vms/list', { title: 'Configure', rows, canCreate: can(ctx, req, 'change', SERVER_REF) });
  });

  router.get('/vms/create', (req: SiteRequest, res: Response) => {
    if (!mayCreate(ctx, req, res, 'Creating a virtual machine')) return;
    res.render('vms/create', { title: 'Create Virtual Machine', errors: {}, form: { memory: String(PROFILE.memoryMB.default), disk: 'new', 'disk-size': String(DEFAULT_DISK_MB), 'disk-bus': 'IDE', 'nic-model': PROFILE.networkAdapters.defaultModel }, ...CHOICES });
  });

  router.post('/vms/create', async (req: SiteRequest, res: Response) => {
    const form = req.body as Form;
    try {
      answerDone(req, res, `/vms/${await createVm(ctx, req, form)}`);
    } catch (error) {
      await answerRefusal(req, res, error, (status, errors) => res.status(status).render('vms/create', { title: 'Create Virtual Machine', errors, form, ...CHOICES }));
    }
  });

  router.get('/vms/add', (req: SiteRequest, res: Response) => {
    if (!mayCreate(ctx, req, res, 'Adding a virtual machine')) return;
    res.render('vms/add', { title: 'Add Virtual Machine', errors: {}, form: {} });
  });

  router.post('/vms/add', async (req: SiteRequest, res: Response) => {
    const form = req.body as Form;
    try {
      const file = text(form, 'path');
      if (!file) throw problem('path', 'choose the .vmc file of the virtual machine');
      const vm = await beside('path', api<Ref>(ctx, req, 'VirtualServer.RegisterVirtualMachine', { path: file }));
      answerDone(req, res, `/vms/${vm.$ref.slice('VirtualMachine/'.length)}`);
    } catch (error) {
      // A refused .vmc names the document's fields (memoryMB, ...): they are all the file's fault here.
      const reason = error instanceof Refusal ? error.reason : error;
      const whole = errorName(reason) === 'VM_E_CONFIG_INVALID' ? new Refusal('path', new ApiError('VM_E_CONFIG_INVALID', toApiError(reason).message)) : error;
      await answerRefusal(req, res, whole, (status, errors) => res.status(status).render('vms/add', { title: 'Add Virtual Machine', errors, form }));
    }
  });

  router.get('/vms/:id', async (req: SiteRequest, res: Response) => {
    const saved = typeof req.query.saved === 'string' ? req.query.saved : undefined;
    await renderConfigure(ctx, req, res, String(req.params.id), { saved });
  });

  for (const [action, change] of Object.entries(CHANGES)) {
    router.post(`/vms/:id/${action}`, async (req: SiteRequest, res: Response) => {
      const id = String(req.params.id);
      const form = req.body as Form;
      try {
        const vm = await readVm(ctx, req, id);
        const self = `VirtualMachine/${vm.id}`;
        await change.apply({ vm, call: (method, params = {}) => api(ctx, req, method, { this: self, ...params }) }, form);
        answerDone(req, res, `/vms/${vm.id}?saved=${change.section}#section-${change.section}`);
      } catch (error) {
        await answerRefusal(req, res, error, (status, errors) => renderConfigure(ctx, req, res, id, { status, errors, form }));
      }
    });
  }

  router.get('/vms/:id/remove', async (req: SiteRequest, res: Response) => {
    try {
      const vm = await readVm(ctx, req, String(req.params.id));
      res.render('vms/remove', { title: `Remove ${vm.name}`, vm, errors: {}, canDelete: can(ctx, req, 'delete', `VirtualMachine/${vm.id}`) });
    } catch (error) {
      refusePage(req, res, statusOf(error) === 403 ? 403 : 404, Object.values(errorsOf(error)).join('; '));
    }
  });

  router.post('/vms/:id/remove', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    const form = req.body as Form;
    try {
      const how = text(form, 'how');
      if (how !== 'unregister' && how !== 'delete') throw problem('how', 'choose to keep the files or to delete the .vmc and saved state');
      await beside('how', api(ctx, req, how === 'delete' ? 'VirtualServer.DeleteVirtualMachine' : 'VirtualServer.UnregisterVirtualMachine', { vm: `VirtualMachine/${id}` }));
      answerDone(req, res, '/');
    } catch (error) {
      await answerRefusal(req, res, error, async (status, errors) => {
        const vm = await readVm(ctx, req, id);
        res.status(status).render('vms/remove', { title: `Remove ${vm.name}`, vm, errors, canDelete: can(ctx, req, 'delete', `VirtualMachine/${vm.id}`) });
      });
    }
  });
}
