// A VM's configuration: one JSON document, validated once against the machine profile into a
// typed value. Nothing downstream re-checks a limit. A document outside the profile is refused
// whole, with every problem named by its field and the limit it breaks. The format is in docs/vm-config.md.

import path from 'node:path';
import {
  NIC_MODELS, type NicModel, PROFILE, SCSI_MODELS, type ScsiModel, USB_DEVICES, type UsbDevice,
} from './profile.js';

export interface IdeHardDisk { channel: number; device: number; type: 'HardDisk'; path: string }
export interface IdeDvdDrive { channel: number; device: number; type: 'DVD'; image: string | null }
export type IdeDevice = IdeHardDisk | IdeDvdDrive;

export interface ScsiDisk { target: number; path: string }
export interface ScsiAdapter { model: ScsiModel; disks: ScsiDisk[] }

/**
 * A network adapter. `network` is the id of the virtual network it is attached to (vserverd's),
 * or null: the cable is unplugged (link down). `networkName` is that network's name: hosts know
 * one network by its name, so a VM that moves is attached to its new host's network of that name
 * (server/virtual-networks.ts, bindAdapters). With `network` null it is the network the adapter
 * awaits: its last host's, which this host lacks (null: detached). A dynamic MAC is vserver's to
 * choose; a static one was set by the user.
 */
export interface NetworkAdapter { model: NicModel; mac: string; network: string | null; networkName: string | null; dynamicMac: boolean }

/** The rule of names that also name files (a VM's NAME.vmc and NAME.vsv, a network's NAME.vnc): "." and ".." would name others. */
export const FILE_NAME_RULE = 'a name is 1 to 64 characters without control characters, "/" or "\\", and not only dots';
export function isFileName(name: string): boolean {
  return name.length >= 1 && name.length <= 64 && !hasControlCharacter(name) && !/[/\\]/.test(name) && !/^\.+$/.test(name);
}

/** Networks of .vmc files from before virtual networks existed: both read as unplugged. */
const UNPLUGGED_NAMES = ['none', 'loopback'];

/**
 * The TAP device that joins adapter `index` of VM `vmId` to its network's bridge (at most 15
 * characters, the kernel's limit). vserverd makes it; the worker hands it to QEMU when it exists.
 */
export function tapName(vmId: string, index: number): string {
  return `vst${vmId.replaceAll('-', '').slice(0, 8)}n${index}`;
}

/** QEMU rewrites a port's file at each turn on, so a VM's own kinds of file are refused as port files. */
export const PORT_FILE_REFUSED = ['.vhd', '.vmc', '.vsv', '.iso', '.vfd'] as const;

export const BOOT_DEVICES = ['floppy', 'dvd', 'disk', 'network'] as const;
export type BootDevice = (typeof BOOT_DEVICES)[number];
export const ENGINES = ['auto', 'kvm', 'tcg'] as const;
export type EngineChoice = (typeof ENGINES)[number];

export interface VmConfig {
  id: string;
  name: string;
  processors: 1;
  memoryMB: number;
  ide: IdeDevice[];
  scsi: ScsiAdapter[];
  networkAdapters: NetworkAdapter[];
  /** COM1 is always the serial console; COM2 and LPT1 may write to a text file, as Virtual Server allowed. */
  com2: { file: string } | null;
  lpt1: { file: string } | null;
  floppy: { image: string | null } | null;
  usb: UsbDevice[];
  bootOrder: BootDevice[];
  engine: EngineChoice;
  /** Where saved state goes (Virtual Server's .vsv). */
  savedState: string;
}

/**
 * What a problem is, by name: a device position that the profile does not have
 * (VM_E_DRIVE_INVALID), one already taken (VM_E_DRIVE_IN_USE), anything else VM_E_CONFIG_INVALID.
 */
export type ConfigErrorName = 'VM_E_CONFIG_INVALID' | 'VM_E_DRIVE_INVALID' | 'VM_E_DRIVE_IN_USE';
export interface ConfigProblem { field: string; message: string; error: ConfigErrorName }

export class VmConfigError extends Error {
  /**
   * When every problem is a drive position's, the first one's name, so that attaching a drive
   * where none can go is refused as the API always refused it; otherwise VM_E_CONFIG_INVALID.
   */
  readonly code: ConfigErrorName;
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map((p) => `${p.field}: ${p.message}`).join('; '));
    this.name = 'VmConfigError';
    const onlyPositions = problems.length > 0 && problems.every((p) => p.error !== 'VM_E_CONFIG_INVALID');
    this.code = onlyPositions ? problems[0].error : 'VM_E_CONFIG_INVALID';
  }
}

const KNOWN_KEYS = new Set(['version', 'id', 'name', 'processors', 'memoryMB', 'ide', 'scsi', 'networkAdapters',
  'com2', 'lpt1', 'floppy', 'usb', 'bootOrder', 'engine', 'savedState']);
const MAC = /^00[:-]03[:-]FF(?:[:-][0-9A-F]{2}){3}$/i;

/** Whether `mac` is under Virtual Server's prefix 00:03:FF ("-" separators allowed). */
export function isVirtualServerMac(mac: string): boolean {
  return MAC.test(mac);
}
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Validates a configuration document. Relative paths are taken from baseDir (the document's
 * folder). Throws VmConfigError listing every problem; returns a complete, typed configuration.
 */
export function parseVmConfig(document: unknown, baseDir: string): VmConfig {
  const problems: ConfigProblem[] = [];
  const fail: Fail = (field, message, error = 'VM_E_CONFIG_INVALID') => void problems.push({ field, message, error });
  if (!isObject(document)) throw new VmConfigError([{ field: '(document)', message: 'a VM configuration is a JSON object', error: 'VM_E_CONFIG_INVALID' }]);
  const doc = document;
  for (const key of Object.keys(doc)) if (!KNOWN_KEYS.has(key)) fail(key, `unknown setting "${key}"`);
  if (doc.version !== undefined && doc.version !== 1) fail('version', `format version ${String(doc.version)} is not supported (this is version 1)`);

  const name = typeof doc.name === 'string' ? doc.name.trim() : '';
  if (!name) fail('name', 'a VM needs a name');
  else if (!isFileName(name)) fail('name', FILE_NAME_RULE);
  const id = doc.id === undefined ? globalThis.crypto.randomUUID() : String(doc.id);
  if (!UUID.test(id)) fail('id', `"${id}" is not a UUID`);

  if (doc.processors !== undefined && doc.processors !== PROFILE.processors) {
    fail('processors', `a VM has exactly ${PROFILE.processors} processor (Virtual Server's limit); ${String(doc.processors)} is refused`);
  }
  const memoryMB = doc.memoryMB === undefined ? PROFILE.memoryMB.default : doc.memoryMB;
  const { min, max } = PROFILE.memoryMB;
  if (!Number.isInteger(memoryMB)) fail('memoryMB', 'memory is a whole number of MB');
  else if ((memoryMB as number) < min || (memoryMB as number) > max) {
    fail('memoryMB', `${String(memoryMB)} MB is outside the limits of ${min} to ${max} MB per VM`);
  }

  const resolve = (p: string): string => path.resolve(baseDir, p);
  const vmName = name || 'the VM';
  const ide = parseIde(doc.ide, vmName, resolve, fail);
  const scsi = parseScsi(doc.scsi, vmName, resolve, fail);
  const networkAdapters = parseNetworkAdapters(doc.networkAdapters, fail);
  const com2 = parseFilePort(doc.com2, 'com2', resolve, fail);
  const lpt1 = parseFilePort(doc.lpt1, 'lpt1', resolve, fail);
  const floppy = parseFloppy(doc.floppy, resolve, fail);
  const usb = parseList(doc.usb, 'usb', USB_DEVICES, fail, (v) => `"${v}" is not a USB device the profile allows (only ${USB_DEVICES.join(', ')})`);
  if (new Set(usb).size !== usb.length) fail('usb', 'each USB device may be listed once');
  const bootOrder = doc.bootOrder === undefined ? ['dvd', 'disk', 'floppy'] as BootDevice[]
    : parseList(doc.bootOrder, 'bootOrder', BOOT_DEVICES, fail, (v) => `"${v}" is not a boot device (${BOOT_DEVICES.join(', ')})`);
  if (new Set(bootOrder).size !== bootOrder.length) fail('bootOrder', 'each boot device may be listed once');
  const engine = doc.engine === undefined ? 'auto' : doc.engine;
  if (!ENGINES.includes(engine as EngineChoice)) fail('engine', `"${String(engine)}" is not an engine choice (${ENGINES.join(', ')})`);
  const savedState = typeof doc.savedState === 'string' ? resolve(doc.savedState) : resolve(`${name || 'vm'}.vsv`);

  const disks = [...ide.flatMap((d) => (d.type === 'HardDisk' ? [d.path] : [])), ...scsi.flatMap((a) => a.disks.map((d) => d.path))];
  const twice = disks.filter((p, i) => disks.indexOf(p) !== i);
  if (twice.length) fail('(disks)', `${twice[0]} is attached more than once`);

  if (problems.length) throw new VmConfigError(problems);
  return {
    id, name, processors: 1, memoryMB: memoryMB as number, ide, scsi, networkAdapters, com2, lpt1, floppy, usb,
    bootOrder, engine: engine as EngineChoice, savedState,
  };
}

/**
 * SCSI adapter `index` of a document being changed, to attach a disk to. The document cannot
 * hold a disk on an adapter it lacks, so asking for one is refused here, by the same rule:
 * a position that does not exist.
 */
export function scsiAdapterOf(config: VmConfig, index: number): ScsiAdapter {
  const adapter = config.scsi[index];
  if (adapter) return adapter;
  const count = config.scsi.length;
  throw new VmConfigError([{
    field: `scsi[${index}]`, error: 'VM_E_DRIVE_INVALID',
    message: `${config.name} has ${count} SCSI adapter${count === 1 ? '' : 's'}${count ? ` (0-${count - 1})` : ''}; add one with AddSCSIController first (at most ${PROFILE.scsi.adapters})`,
  }]);
}

type Fail = (field: string, message: string, error?: ConfigErrorName) => void;

function parseIde(value: unknown, vmName: string, resolve: (p: string) => string, fail: Fail): IdeDevice[] {
  const { channels, devicesPerChannel } = PROFILE.ide;
  const devices: IdeDevice[] = [];
  /** What holds each position taken so far ("channel:device"), as the refusal of a second one names it. */
  const taken = new Map<string, string>();
  for (const [i, item] of arrayOf(value, 'ide', fail).entries()) {
    const field = `ide[${i}]`;
    if (!isObject(item)) { fail(field, 'an IDE device is an object'); continue; }
    const { channel, device } = item;
    if (!isIndex(channel, channels) || !isIndex(device, devicesPerChannel)) {
      fail(field, `IDE has ${channels} channels (0-${channels - 1}) of ${devicesPerChannel} devices (0-${devicesPerChannel - 1}); channel ${String(channel)} device ${String(device)} does not exist`, 'VM_E_DRIVE_INVALID');
      continue;
    }
    const holder = taken.get(`${channel}:${device}`);
    if (holder) { fail(field, `IDE channel ${channel} device ${device} is already used: IDE ${channel}:${device} of ${vmName} holds ${holder}`, 'VM_E_DRIVE_IN_USE'); continue; }
    taken.set(`${channel}:${device}`, item.type === 'DVD' ? 'a CD/DVD drive' : typeof item.path === 'string' && item.path ? resolve(item.path) : 'a device');
    if (item.type === 'HardDisk' && typeof item.path === 'string' && item.path) {
      devices.push({ channel, device, type: 'HardDisk', path: resolve(item.path) });
    } else if (item.type === 'DVD' && (item.image === undefined || item.image === null || typeof item.image === 'string')) {
      devices.push({ channel, device, type: 'DVD', image: item.image ? resolve(item.image) : null });
    } else {
      fail(field, 'an IDE device is {"type": "HardDisk", "path": FILE} or {"type": "DVD", "image": ISO or null}');
    }
  }
  return devices;
}

function parseScsi(value: unknown, vmName: string, resolve: (p: string) => string, fail: Fail): ScsiAdapter[] {
  const { adapters, disksPerAdapter } = PROFILE.scsi;
  const list = arrayOf(value, 'scsi', fail);
  if (list.length > adapters) fail('scsi', `a VM has at most ${adapters} SCSI adapters; ${list.length} were given`);
  return list.slice(0, adapters).flatMap((item, a): ScsiAdapter[] => {
    const field = `scsi[${a}]`;
    if (!isObject(item)) { fail(field, 'a SCSI adapter is an object'); return []; }
    const model = item.model === undefined ? PROFILE.scsi.defaultModel : item.model;
    if (!SCSI_MODELS.includes(model as ScsiModel)) fail(`${field}.model`, `"${String(model)}" is not a SCSI adapter model (${SCSI_MODELS.join(', ')})`);
    const disks = arrayOf(item.disks, `${field}.disks`, fail);
    /** The file at each target taken so far, as the refusal of a second disk there names it. */
    const targets = new Map<number, string>();
    // Every disk is placed, the ones past the limit too: the one that does not fit is named with where it wanted to go.
    const parsed = disks.flatMap((disk, d): ScsiDisk[] => {
      const diskField = `${field}.disks[${d}]`;
      if (!isObject(disk) || typeof disk.path !== 'string' || !disk.path) { fail(diskField, `a SCSI disk is {"target": 0-${disksPerAdapter - 1}, "path": FILE}`); return []; }
      const target = disk.target === undefined ? d : disk.target;
      if (!isIndex(target, disksPerAdapter)) {
        fail(diskField, `SCSI targets are 0 to ${disksPerAdapter - 1} (a SCSI adapter holds ${disksPerAdapter} disks, 0-${disksPerAdapter - 1}); ${String(target)} is not`, 'VM_E_DRIVE_INVALID');
        return [];
      }
      const holder = targets.get(target);
      if (holder) { fail(diskField, `SCSI target ${target} is already used on this adapter: SCSI ${a}:${target} of ${vmName} holds ${holder}`, 'VM_E_DRIVE_IN_USE'); return []; }
      targets.set(target, resolve(disk.path));
      return [{ target, path: resolve(disk.path) }];
    });
    if (disks.length > disksPerAdapter) {
      fail(`${field}.disks`, `a SCSI adapter holds at most ${disksPerAdapter} disks (targets 0-${disksPerAdapter - 1}); ${disks.length} were given`, 'VM_E_DRIVE_INVALID');
    }
    return [{ model: model as ScsiModel, disks: parsed }];
  });
}

function parseNetworkAdapters(value: unknown, fail: Fail): NetworkAdapter[] {
  const { max, defaultModel } = PROFILE.networkAdapters;
  const list = arrayOf(value, 'networkAdapters', fail);
  if (list.length > max) fail('networkAdapters', `a VM has at most ${max} network adapters; ${list.length} were given`);
  const macs = new Set<string>();
  return list.slice(0, max).flatMap((item, i): NetworkAdapter[] => {
    const field = `networkAdapters[${i}]`;
    if (!isObject(item)) { fail(field, 'a network adapter is an object'); return []; }
    const model = item.model === undefined ? defaultModel : item.model;
    if (!NIC_MODELS.includes(model as NicModel)) fail(`${field}.model`, `"${String(model)}" is not a network adapter model (${NIC_MODELS.join(', ')})`);
    const network = item.network === undefined || item.network === null || UNPLUGGED_NAMES.includes(item.network as string) ? null : item.network;
    if (network !== null && (typeof network !== 'string' || !UUID.test(network))) {
      fail(`${field}.network`, `"${String(network)}" is not a virtual network's id (or null: not connected)`);
    }
    // Absent in .vmc files written before names were kept: vserverd fills it from the id.
    const networkName = item.networkName ?? null;
    if (networkName !== null && (typeof networkName !== 'string' || !isFileName(networkName))) {
      fail(`${field}.networkName`, `"${String(networkName)}" is not a virtual network's name (or null): ${FILE_NAME_RULE}`);
    }
    if (item.dynamicMac !== undefined && typeof item.dynamicMac !== 'boolean') fail(`${field}.dynamicMac`, 'dynamicMac is true or false');
    let mac = item.mac === undefined ? randomMac(macs) : String(item.mac);
    if (!MAC.test(mac)) {
      fail(`${field}.mac`, `"${mac}" is not a MAC address under ${PROFILE.networkAdapters.macPrefix} (00:03:FF:xx:xx:xx)`);
      return [];
    }
    mac = normalizeMac(mac);
    if (macs.has(mac)) fail(`${field}.mac`, `${mac} is already used by another adapter of this VM`);
    macs.add(mac);
    return [{ model: model as NicModel, mac, network: network as string | null, networkName: networkName as string | null, dynamicMac: item.dynamicMac !== false }];
  });
}

function parseFilePort(value: unknown, field: string, resolve: (p: string) => string, fail: Fail): { file: string } | null {
  if (value === undefined || value === null) return null;
  if (isObject(value) && typeof value.file === 'string' && value.file) return { file: resolve(value.file) };
  fail(field, `${field} is null (not connected) or {"file": PATH}`);
  return null;
}

function parseFloppy(value: unknown, resolve: (p: string) => string, fail: Fail): { image: string | null } | null {
  if (value === undefined || value === null) return null;
  if (isObject(value) && (value.image === undefined || value.image === null || typeof value.image === 'string')) {
    return { image: value.image ? resolve(value.image) : null };
  }
  fail('floppy', 'floppy is null (no drive) or {"image": .vfd file or null}');
  return null;
}

function parseList<T extends string>(value: unknown, field: string, allowed: readonly T[], fail: Fail, refuse: (v: unknown) => string): T[] {
  return arrayOf(value, field, fail).flatMap((v, i): T[] => {
    if (allowed.includes(v as T)) return [v as T];
    fail(`${field}[${i}]`, refuse(v));
    return [];
  });
}

function arrayOf(value: unknown, field: string, fail: Fail): unknown[] {
  if (value === undefined || value === null) return [];
  if (Array.isArray(value)) return value;
  fail(field, 'must be a list');
  return [];
}

export function hasControlCharacter(text: string): boolean {
  return [...text].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isIndex(v: unknown, count: number): v is number {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) < count;
}

export function normalizeMac(mac: string): string {
  return mac.replaceAll('-', ':').toUpperCase();
}

/** A MAC address under Virtual Server's prefix 00:03:FF that is not in `taken`. */
export function randomMac(taken: Set<string> = new Set()): string {
  for (;;) {
    const tail = [...globalThis.crypto.getRandomValues(new Uint8Array(3))].map((b) => b.toString(16).padStart(2, '0').toUpperCase());
    const mac = [PROFILE.networkAdapters.macPrefix, ...tail].join(':');
    if (!taken.has(mac)) return mac;
  }
}

/** Every VHD the VM uses, with the slot that names it (ide0-1, scsi2-5). */
export function hardDisks(config: VmConfig): { slot: string; path: string }[] {
  return [
    ...config.ide.flatMap((d) => (d.type === 'HardDisk' ? [{ slot: `ide${d.channel}-${d.device}`, path: d.path }] : [])),
    ...config.scsi.flatMap((a, i) => a.disks.map((d) => ({ slot: `scsi${i}-${d.target}`, path: d.path }))),
  ];
}
