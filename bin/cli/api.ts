// The vsctl commands that talk to vserverd: vm (list, show, create, the power verbs, delete),
// disk, task, events, token, login and logout. Each is a few calls of the API that
// "vsctl call" also reaches; lists ask for every object's properties in one JSON-RPC batch.

import { SCHEMA } from '../../server/api/schema.js';
import {
  ApiCallError, type ApiClient, credentialsFile, followTask, isRef, login, normalizeUrl, openNotifications,
  readCredentials, resolveConnection, taskRef, tokenId, waitForTask, writeCredentials,
} from './api-client.js';
import { clientFor, CONNECTION_OPTIONS, oneLine, printJson, printResult } from './api-call.js';
import type { DiskInfo } from '../../storage/vhd/index.js';
import type { Command, ParsedArgs } from './command.js';
import { formatSize, printRows, UsageError } from './terminal.js';
import { showInfo } from './vhd.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const VM_PREFIX = 'VirtualMachine/';

/** Prints the value as JSON with --json, else runs `text`. */
function print(args: ParsedArgs, json: unknown, text: () => void): void {
  if (args.json) printJson(json);
  else text();
}

/** Columns padded to their widest cell, under a header. */
function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd();
  console.log(line(header));
  for (const row of rows) console.log(line(row));
}

/** A whole number of MB: "512", "512M", "2G", "1T". */
function parseMegabytes(text: unknown, option: string): number {
  const match = /^(\d+)\s*([MGT]?)(?:i?B)?$/i.exec(String(text).trim());
  const value = match ? Number(match[1]) * { '': 1, M: 1, G: 1024, T: 1024 ** 2 }[match[2].toUpperCase() as '' | 'M' | 'G' | 'T'] : NaN;
  if (!Number.isSafeInteger(value) || value <= 0) throw new UsageError(`${option}: "${String(text)}" is not a size in MB (for example 512, or 2G)`);
  return value;
}

function parseCount(text: unknown, option: string, min = 0): number {
  const value = Number(text);
  if (!/^\d+$/.test(String(text)) || !Number.isSafeInteger(value) || value < min) throw new UsageError(`${option}: "${String(text)}" is not a whole number${min ? ` of at least ${min}` : ''}`);
  return value;
}

function refOf(value: unknown, what: string): string {
  if (!isRef(value)) throw new ApiCallError('VSCTL_E_BAD_RESPONSE', `vserverd answered ${what} with ${JSON.stringify(value)}, not an object reference`);
  return value.$ref;
}

const idOf = (ref: string): string => ref.slice(ref.indexOf('/') + 1);

// ---------------------------------------------------------------------------------------------
// vm

/** A VM named on the command line: a reference, an id (a UUID), or a name found with FindVirtualMachine. */
async function resolveVm(client: ApiClient, text: string): Promise<string> {
  if (text.startsWith(VM_PREFIX)) return text;
  if (UUID.test(text)) return `${VM_PREFIX}${text.toLowerCase()}`;
  const found = await client.call('VirtualServer.FindVirtualMachine', { name: text });
  if (found === null || found === undefined) throw new ApiCallError('VM_E_VM_UNKNOWN', `no VM is named "${text}" on ${client.url}`, { name: text });
  return refOf(found, 'FindVirtualMachine');
}

interface VmRow { id: string; ref: string; name: string; state: string; memoryMB: number }

async function listVms(client: ApiClient): Promise<VmRow[]> {
  const refs = (await client.call<unknown[]>('VirtualServer.get_VirtualMachines')).map((v) => refOf(v, 'get_VirtualMachines'));
  const members = ['get_Name', 'get_State', 'get_Memory'];
  const outcomes = await client.batch(refs.flatMap((ref) => members.map((m): [string, Record<string, unknown>] => [`VirtualMachine.${m}`, { this: ref }])));
  const rows: VmRow[] = [];
  refs.forEach((ref, i) => {
    const [name, state, memory] = outcomes.slice(i * 3, i * 3 + 3);
    for (const o of [name, state, memory]) {
      // A VM deleted between the two requests is simply not listed.
      if (!o.ok && (o.error.name === 'VM_E_OBJECT_UNKNOWN' || o.error.name === 'VM_E_VM_UNKNOWN')) return;
      if (!o.ok) throw o.error;
    }
    const value = (o: typeof name): unknown => (o.ok ? o.result : null);
    rows.push({ id: idOf(ref), ref, name: String(value(name)), state: String(value(state)), memoryMB: Number(value(memory)) });
  });
  return rows.sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
}

const SHOW_MEMBERS = [
  'get_Name', 'get_State', 'get_Engine', 'get_Memory', 'get_Notes', 'get_AutoStartAtLaunch', 'get_AutoStartAtLaunchDelay',
  'get_ShutdownActionOnQuit', 'get_File', 'get_HardDiskConnections', 'get_DVDROMDrives', 'get_SCSIControllers', 'get_NetworkAdapters', 'get_USBDevices',
] as const;

async function showVm(client: ApiClient, ref: string): Promise<Record<string, unknown>> {
  const p = await client.properties(ref, 'VirtualMachine', SHOW_MEMBERS);
  const refs = (key: string): string[] => ((p[key] ?? []) as unknown[]).map((v) => refOf(v, key));
  const disks = refs('get_HardDiskConnections');
  const dvds = refs('get_DVDROMDrives');
  const scsi = refs('get_SCSIControllers');
  const nics = refs('get_NetworkAdapters');
  const calls: Array<[string, Record<string, unknown>]> = [
    ...disks.flatMap((r) => ['get_HardDisk', 'get_BusType', 'get_BusNumber', 'get_DeviceNumber'].map((m): [string, Record<string, unknown>] => [`HardDiskConnection.${m}`, { this: r }])),
    ...dvds.flatMap((r) => ['get_BusNumber', 'get_DeviceNumber', 'get_ImageFile'].map((m): [string, Record<string, unknown>] => [`DVDROMDrive.${m}`, { this: r }])),
    ...scsi.flatMap((r) => ['get_ID', 'get_Model'].map((m): [string, Record<string, unknown>] => [`SCSIController.${m}`, { this: r }])),
    ...nics.flatMap((r) => ['get_EthernetAddress', 'get_Model', 'get_VirtualNetwork'].map((m): [string, Record<string, unknown>] => [`NetworkAdapter.${m}`, { this: r }])),
  ];
  const results = await client.batchAll(calls);
  let at = 0;
  const take = (n: number): unknown[] => results.slice(at, (at += n));
  const engine = p.get_Engine as { engine?: string; reason?: string } | null;
  return {
    id: idOf(ref),
    ref,
    name: p.get_Name,
    state: p.get_State,
    engine: engine ?? null,
    memoryMB: p.get_Memory,
    notes: p.get_Notes ?? '',
    autoStartAtLaunch: p.get_AutoStartAtLaunch,
    autoStartAtLaunchDelay: p.get_AutoStartAtLaunchDelay,
    shutdownActionOnQuit: p.get_ShutdownActionOnQuit,
    file: p.get_File,
    hardDisks: disks.map((connection) => {
      const [disk, busType, busNumber, deviceNumber] = take(4);
      const diskRef = isRef(disk) ? disk.$ref : null;
      return { connection, busType, busNumber, deviceNumber, file: diskRef?.startsWith('HardDisk/') ? diskRef.slice('HardDisk/'.length) : diskRef };
    }),
    dvdDrives: dvds.map((drive) => {
      const [busNumber, deviceNumber, imageFile] = take(3);
      return { drive, busNumber, deviceNumber, imageFile: imageFile ?? null };
    }),
    scsiControllers: scsi.map((controller) => {
      const [id, model] = take(2);
      return { controller, id, model };
    }),
    networkAdapters: nics.map((adapter) => {
      const [ethernetAddress, model, virtualNetwork] = take(3);
      return { adapter, ethernetAddress, model, virtualNetwork };
    }),
    usbDevices: p.get_USBDevices ?? [],
  };
}

function printVm(vm: Record<string, unknown>): void {
  const engine = vm.engine as { engine?: string; reason?: string } | null;
  const rows: Array<[string, string]> = [
    ['Name', String(vm.name)],
    ['Id', String(vm.id)],
    ['State', String(vm.state)],
    ['Engine', engine ? `${engine.engine}${engine.reason ? ` (${engine.reason})` : ''}` : '- (not started yet)'],
    ['Memory', `${String(vm.memoryMB)} MB`],
    ['Notes', String(vm.notes) || '-'],
    ['Auto start', `${String(vm.autoStartAtLaunch)}${vm.autoStartAtLaunchDelay ? ` after ${String(vm.autoStartAtLaunchDelay)} s` : ''}`],
    ['Action on quit', String(vm.shutdownActionOnQuit)],
    ['File', String(vm.file)],
  ];
  const list = <T>(label: string, items: T[], text: (item: T) => string): void => {
    if (items.length === 0) rows.push([label, 'none']);
    items.forEach((item, i) => rows.push([i === 0 ? label : '', text(item)]));
  };
  type Disk = { busType: string; busNumber: number; deviceNumber: number; file: string };
  list('Hard disks', vm.hardDisks as Disk[], (d) => `${d.busType} ${d.busNumber}:${d.deviceNumber}  ${d.file}`);
  type Dvd = { busNumber: number; deviceNumber: number; imageFile: string | null };
  list('DVD drives', vm.dvdDrives as Dvd[], (d) => `IDE ${d.busNumber}:${d.deviceNumber}  ${d.imageFile ?? '(empty)'}`);
  type Scsi = { id: number; model: string };
  list('SCSI adapters', vm.scsiControllers as Scsi[], (s) => `${s.id}  ${s.model}`);
  type Nic = { ethernetAddress: string; model: string; virtualNetwork: string };
  list('Network adapters', vm.networkAdapters as Nic[], (n) => `${n.ethernetAddress}  ${n.model}, network ${n.virtualNetwork}`);
  list('USB devices', vm.usbDevices as string[], (u) => u);
  printRows(rows);
}

const NO_WAIT = { 'no-wait': { type: 'boolean' as const, description: 'print the Task reference and return at once instead of waiting for it' } };

/** vm start|stop|save|pause|resume|reset|shutdown: one member of the VM (or its guest); tasks are waited for. */
function powerVerb(name: string, member: string, summary: string, viaGuest = false): Command {
  const iface = viaGuest ? 'GuestOS' : 'VirtualMachine';
  const isTask = SCHEMA[iface].members[member].task === true;
  return {
    name,
    usage: `${name} NAME|ID${isTask ? ' [--no-wait]' : ''}`,
    summary,
    ...(isTask ? { details: `Calls ${iface}.${member}, which returns a Task; vsctl waits for it (a progress bar on a terminal) unless --no-wait.` } : { details: `Calls ${iface}.${member}.` }),
    positionals: { min: 1, max: 1 },
    options: { ...(isTask ? NO_WAIT : {}), ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const [text] = args.positionals;
      const vm = await resolveVm(client, text);
      const target = viaGuest ? refOf(await client.call('VirtualMachine.get_GuestOS', { this: vm }), 'get_GuestOS') : vm;
      const returned = await client.call(`${iface}.${member}`, { this: target });
      if (isTask && args.values['no-wait']) {
        const task = refOf(returned, `${iface}.${member}`);
        print(args, { vm, task }, () => console.log(task));
        return 0;
      }
      if (isTask) await followTask(client, refOf(returned, `${iface}.${member}`), { progress: !args.json });
      const state = await client.call('VirtualMachine.get_State', { this: vm });
      print(args, { vm, state }, () => console.log(`${text} is ${String(state)}`));
      return 0;
    },
  };
}

export const vmApiCommands: Command[] = [
  {
    name: 'list',
    usage: 'list',
    summary: 'List the VMs registered with vserverd: name, state, memory and id.',
    positionals: { min: 0, max: 0 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const vms = await listVms(clientFor(args.values));
      print(args, vms, () => {
        if (vms.length === 0) console.log('no virtual machines');
        else printTable(['NAME', 'STATE', 'MEMORY (MB)', 'ID'], vms.map((v) => [v.name, v.state, String(v.memoryMB), v.id]));
      });
      return 0;
    },
  },
  {
    name: 'show',
    usage: 'show NAME|ID',
    summary: 'Show one VM: state, engine, memory, notes, auto start, action on quit, file, disks, DVD drives, network adapters, USB devices.',
    positionals: { min: 1, max: 1 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const vm = await showVm(client, await resolveVm(client, args.positionals[0]));
      print(args, vm, () => printVm(vm));
      return 0;
    },
  },
  {
    name: 'create',
    usage: 'create NAME [--memory MB] [--disk PATH | --new-disk SIZE_MB] [--nic]',
    summary: 'Create a VM (1 processor, 128 MB unless --memory), optionally with a disk on SCSI 0:0 and a network adapter.',
    details: [
      'The VM\'s files go in NAME/ under vserverd\'s first storage root. --disk attaches an existing VHD and --new-disk',
      'creates NAME/NAME.vhd (dynamic) and attaches it; either way a SCSI adapter is added for it. Relative paths are',
      'taken from the first storage root. If a step after the VM\'s creation fails, the VM is deleted again (a new disk',
      'file is kept).',
    ].join('\n'),
    positionals: { min: 1, max: 1 },
    options: {
      memory: { type: 'string', valueName: 'MB', description: 'memory in MB (default 128)' },
      disk: { type: 'string', valueName: 'PATH', description: 'attach this existing VHD on SCSI 0:0' },
      'new-disk': { type: 'string', valueName: 'SIZE_MB', description: 'create NAME/NAME.vhd, dynamic, of this size and attach it on SCSI 0:0' },
      nic: { type: 'boolean', description: 'add a network adapter (with a new MAC address)' },
      ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const [name] = args.positionals;
      if (args.values.disk !== undefined && args.values['new-disk'] !== undefined) throw new UsageError('--disk and --new-disk both go on SCSI 0:0; give one');
      const memoryMB = args.values.memory === undefined ? undefined : parseMegabytes(args.values.memory, '--memory');
      const newDiskMB = args.values['new-disk'] === undefined ? undefined : parseMegabytes(args.values['new-disk'], '--new-disk');
      const client = clientFor(args.values);
      const vm = refOf(await client.call('VirtualServer.CreateVirtualMachine', { name }), 'CreateVirtualMachine');
      const summary: Record<string, unknown> = { id: idOf(vm), ref: vm, name };
      try {
        if (memoryMB !== undefined) await client.call('VirtualMachine.put_Memory', { this: vm, value: memoryMB });
        summary.memoryMB = await client.call('VirtualMachine.get_Memory', { this: vm });
        let disk = args.values.disk as string | undefined;
        if (newDiskMB !== undefined) {
          disk = `${name}/${name}.vhd`;
          const task = await client.call('VirtualServer.CreateDynamicVirtualHardDisk', { path: disk, sizeMB: newDiskMB });
          const created = await followTask(client, refOf(task, 'CreateDynamicVirtualHardDisk'), { progress: !args.json });
          if (isRef(created) && created.$ref.startsWith('HardDisk/')) disk = created.$ref.slice('HardDisk/'.length);
          summary.newDisk = { file: disk, sizeMB: newDiskMB };
        }
        if (disk !== undefined) {
          const controller = await client.call('VirtualMachine.AddSCSIController', { this: vm });
          const connection = await client.call('VirtualMachine.AddHardDiskConnection', { this: vm, path: disk, busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
          summary.scsiController = oneLine(controller);
          summary.hardDisk = { connection: oneLine(connection), file: disk, busType: 'SCSI', busNumber: 0, deviceNumber: 0 };
        }
        if (args.values.nic) {
          const adapter = refOf(await client.call('VirtualMachine.AddNetworkAdapter', { this: vm }), 'AddNetworkAdapter');
          summary.networkAdapter = { adapter, ethernetAddress: await client.call('NetworkAdapter.get_EthernetAddress', { this: adapter }) };
        }
      } catch (e) {
        await client.call('VirtualServer.DeleteVirtualMachine', { vm }).catch(() => {});
        if (e instanceof ApiCallError) e.message = `${e.message} (the new VM ${name} was deleted again)`;
        throw e;
      }
      print(args, summary, () => {
        console.log(`created VM ${name} (${vm}), ${String(summary.memoryMB)} MB`);
        const disk = summary.hardDisk as { file: string } | undefined;
        if (disk) console.log(`  disk on SCSI 0:0: ${disk.file}${summary.newDisk ? ' (new, dynamic)' : ''}`);
        const nic = summary.networkAdapter as { ethernetAddress: string } | undefined;
        if (nic) console.log(`  network adapter: ${nic.ethernetAddress}`);
      });
      return 0;
    },
  },
  powerVerb('start', 'Startup', 'Turn the VM on, or restore it from its saved state; waits until it runs.'),
  powerVerb('stop', 'TurnOff', 'Turn the VM off at once, as pulling the plug (Virtual Server\'s "Turn Off").'),
  powerVerb('save', 'Save', 'Save the VM\'s state to its .vsv and stop it; start restores it.'),
  powerVerb('pause', 'Pause', 'Freeze the running VM in memory.'),
  powerVerb('resume', 'Resume', 'Continue a paused VM.'),
  powerVerb('reset', 'Reset', 'A hardware reset of the running VM.'),
  powerVerb('shutdown', 'Shutdown', 'Ask the guest to shut down (the ACPI power button); waits until the VM is off.', true),
  {
    name: 'delete',
    usage: 'delete NAME|ID [--keep-files]',
    summary: 'Delete a turned-off VM: its .vmc and saved state go, its disks stay. --keep-files only unregisters it.',
    positionals: { min: 1, max: 1 },
    options: {
      'keep-files': { type: 'boolean', description: 'unregister the VM and keep its .vmc (RegisterVirtualMachine adds it back)' },
      ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const client = clientFor(args.values);
      const [text] = args.positionals;
      const vm = await resolveVm(client, text);
      const keep = args.values['keep-files'] === true;
      const file = keep ? await client.call('VirtualMachine.get_File', { this: vm }) : null;
      await client.call(keep ? 'VirtualServer.UnregisterVirtualMachine' : 'VirtualServer.DeleteVirtualMachine', { vm });
      print(args, { vm, deleted: !keep, unregistered: true, ...(keep ? { file } : {}) },
        () => console.log(keep ? `unregistered ${text}; its files are kept (${String(file)})` : `deleted ${text}; its disks are kept`));
      return 0;
    },
  },
];

// ---------------------------------------------------------------------------------------------
// disk

const DISK_KINDS = ['dynamic', 'fixed', 'differencing'] as const;

/** get_Info's answer as `vhd info` prints it when it is the VHD engine's description, else as "key: value" rows. */
function printInfo(info: unknown): void {
  const d = info as Partial<DiskInfo> | null;
  if (d && typeof d === 'object' && d.geometry && d.creator && Array.isArray(d.chain) && Array.isArray(d.warnings)) {
    showInfo(d as DiskInfo);
  } else if (typeof info === 'object' && info !== null && !Array.isArray(info)) {
    printRows(Object.entries(info).map(([key, value]): [string, string] => [key, typeof value === 'number' && /size/i.test(key) ? formatSize(value) : oneLine(value)]));
  } else {
    printResult(info);
  }
}

export const diskCommands: Command[] = [
  {
    name: 'create',
    usage: 'create PATH [--size SIZE_MB] [--type dynamic|fixed|differencing] [--parent PATH]',
    summary: 'Create a VHD through vserverd: dynamic (the default, 127 GB), fixed (written in full), or differencing over --parent.',
    details: 'PATH is taken from vserverd\'s first storage root when relative, and must lie in a storage root. Sizes are MB (or 2G, 1T). vsctl waits for the task, with a progress bar on a terminal.',
    positionals: { min: 1, max: 1 },
    options: {
      size: { type: 'string', valueName: 'SIZE_MB', description: 'size in the guest, in MB (dynamic: 127 GB when omitted; fixed: needed)' },
      type: { type: 'string', valueName: 'dynamic|fixed|differencing', description: 'the disk type (default dynamic; differencing with --parent)' },
      parent: { type: 'string', valueName: 'PATH', description: 'the parent of a differencing disk' },
      ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const [file] = args.positionals;
      const typeText = args.values.type === undefined ? (args.values.parent === undefined ? 'dynamic' : 'differencing') : String(args.values.type).toLowerCase();
      const type = DISK_KINDS.find((k) => k === typeText);
      if (!type) throw new UsageError(`--type must be one of ${DISK_KINDS.join(', ')}, not "${String(args.values.type)}"`);
      const sizeMB = args.values.size === undefined ? undefined : parseMegabytes(args.values.size, '--size');
      let method: string;
      let params: Record<string, unknown>;
      if (type === 'differencing') {
        if (args.values.parent === undefined) throw new UsageError('a differencing disk needs --parent PATH');
        if (sizeMB !== undefined) throw new UsageError('a differencing disk has its parent\'s size; --size is not for it');
        [method, params] = ['CreateDifferencingVirtualHardDisk', { path: file, parentPath: args.values.parent }];
      } else {
        if (args.values.parent !== undefined) throw new UsageError(`--parent makes a differencing disk, not a ${type} one`);
        if (type === 'fixed' && sizeMB === undefined) throw new UsageError('a fixed disk needs --size SIZE_MB');
        [method, params] = [type === 'fixed' ? 'CreateFixedVirtualHardDisk' : 'CreateDynamicVirtualHardDisk', { path: file, ...(sizeMB === undefined ? {} : { sizeMB }) }];
      }
      const client = clientFor(args.values);
      const task = refOf(await client.call(`VirtualServer.${method}`, params), method);
      const result = await followTask(client, task, { progress: !args.json });
      const created = isRef(result) && result.$ref.startsWith('HardDisk/') ? result.$ref.slice('HardDisk/'.length) : file;
      print(args, { file: created, type, ...(sizeMB === undefined ? {} : { sizeMB }), task, result }, () => console.log(`created ${type} disk ${created}`));
      return 0;
    },
  },
  {
    name: 'inspect',
    usage: 'inspect PATH',
    summary: 'Describe a VHD as vserverd\'s VHD engine sees it: type, sizes, geometry, unique id, blocks, parent chain.',
    positionals: { min: 1, max: 1 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const disk = refOf(await client.call('VirtualServer.GetHardDisk', { path: args.positionals[0] }), 'GetHardDisk');
      const info = await client.call('HardDisk.get_Info', { this: disk });
      print(args, info, () => printInfo(info));
      return 0;
    },
  },
];

// ---------------------------------------------------------------------------------------------
// task

export const taskCommands: Command[] = [
  {
    name: 'list',
    usage: 'list',
    summary: 'List the tasks in flight and recently finished, newest first: id, status, percent done, description.',
    positionals: { min: 0, max: 0 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const refs = (await client.call<unknown[]>('VirtualServer.get_Tasks')).map((t) => refOf(t, 'get_Tasks'));
      const members = ['get_Description', 'get_PercentCompleted', 'get_IsComplete', 'get_Error'];
      const results = await client.batchAll(refs.flatMap((ref) => members.map((m): [string, Record<string, unknown>] => [`Task.${m}`, { this: ref }])));
      const tasks = refs.map((ref, i) => {
        const [description, percentCompleted, isComplete, error] = results.slice(i * 4, i * 4 + 4);
        return { id: idOf(ref), ref, description, percentCompleted, isComplete, error: error ?? null };
      });
      print(args, tasks, () => {
        if (tasks.length === 0) console.log('no tasks');
        const status = (t: (typeof tasks)[number]): string => (t.error ? `failed: ${(t.error as { name?: string }).name ?? ''}` : t.isComplete ? 'done' : 'running');
        if (tasks.length) printTable(['ID', 'STATUS', 'DONE', 'DESCRIPTION'], tasks.map((t) => [t.id, status(t), `${String(t.percentCompleted)}%`, String(t.description)]));
      });
      return 0;
    },
  },
  {
    name: 'wait',
    usage: 'wait TASK_ID_OR_REF [--timeout SECONDS]',
    summary: 'Wait for a task to finish (a progress bar on a terminal) and print its result. Exit status 1 if it failed or is still running at --timeout.',
    positionals: { min: 1, max: 1 },
    options: {
      timeout: { type: 'string', valueName: 'SECONDS', description: 'stop waiting after this long (default: as long as it takes)' },
      ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const timeoutMs = args.values.timeout === undefined ? undefined : parseCount(args.values.timeout, '--timeout') * 1000;
      const client = clientFor(args.values);
      const task = taskRef(args.positionals[0]);
      const outcome = await waitForTask(client, task, { progress: !args.json, timeoutMs });
      const ok = outcome.isComplete && !outcome.error;
      print(args, outcome, () => {
        if (outcome.error) console.error(`vsctl: ${task} failed: ${outcome.error.message} [${outcome.error.name}]`);
        else if (!outcome.isComplete) console.error(`vsctl: ${task} is still running (${outcome.percentCompleted}% done)`);
        else printResult(outcome.result);
      });
      return ok ? 0 : 1;
    },
  },
];

// ---------------------------------------------------------------------------------------------
// events

interface LoggedEvent { id: number; time: string; category: string; severity: string; message: string; who: string; object: string | null }

function printEvent(args: ParsedArgs, event: LoggedEvent, lines: boolean): void {
  if (args.json && lines) console.log(JSON.stringify(event));
  else console.log(`${String(event.id).padStart(6)}  ${event.time}  ${event.severity.padEnd(11)}  ${event.category.padEnd(15)}  ${event.who}: ${event.message}`);
}

/** The most events one GetEvents call returns. */
const EVENT_PAGE = 1000;

export const eventsCommand: Command = {
  name: 'events',
  usage: 'events [--since ID] [--limit N] [--category C] [--severity S] [--object REF] [--follow]',
  summary: 'Print vserverd\'s event log (Virtual Server\'s Event Viewer), oldest first; --follow keeps printing new events until Ctrl-C.',
  details: [
    'Each line: id, time, severity, category, who, message. Without --follow: the events after --since (the latest',
    'ones when omitted), at most --limit of them (vserverd\'s default is 100). With --follow: every event',
    'after --since, then each new one as it is logged (only new ones when --since is omitted), read from the WebSocket',
    '(/api/ws). With --json the events are a JSON array, or with --follow one JSON object per line.',
  ].join('\n'),
  positionals: { min: 0, max: 0 },
  options: {
    since: { type: 'string', valueName: 'ID', description: 'only events with an id above ID' },
    limit: { type: 'string', valueName: 'N', description: 'at most N events (1 to 1000; not with --follow)' },
    category: { type: 'string', valueName: 'C', description: '"Virtual Server", "Virtual Machine", "Virtual Disk", "Security" or "Task"' },
    severity: { type: 'string', valueName: 'S', description: 'Information, Warning or Error' },
    object: { type: 'string', valueName: 'REF', description: 'only events about this object reference' },
    follow: { type: 'boolean', short: 'f', description: 'keep printing new events as they are logged, until Ctrl-C' },
    ...CONNECTION_OPTIONS,
  },
  async run(args) {
    const v = args.values;
    const filter: Record<string, unknown> = {};
    if (v.since !== undefined) filter.since = parseCount(v.since, '--since');
    if (v.limit !== undefined) {
      if (v.follow) throw new UsageError('--limit does not go with --follow: --since says where to start');
      filter.limit = parseCount(v.limit, '--limit', 1);
      if (Number(filter.limit) > EVENT_PAGE) throw new UsageError(`--limit: at most ${EVENT_PAGE}`);
    }
    const spec = SCHEMA.VirtualServer.members.GetEvents.params!;
    for (const key of ['category', 'severity'] as const) {
      if (v[key] === undefined) continue;
      const values = (spec[key] as { values: readonly string[] }).values;
      const value = values.find((x) => x.toLowerCase() === String(v[key]).toLowerCase());
      if (!value) throw new UsageError(`--${key}: "${String(v[key])}" is not one of ${values.join(', ')}`);
      filter[key] = value;
    }
    if (v.object !== undefined) filter.object = v.object;
    const client = clientFor(v);
    if (!v.follow) {
      // Without --since, the latest events (as an event viewer opens), still printed oldest first.
      const events = filter.since === undefined
        ? (await client.call<LoggedEvent[]>('VirtualServer.GetEvents', { ...filter, newestFirst: true })).reverse()
        : await client.call<LoggedEvent[]>('VirtualServer.GetEvents', filter);
      if (args.json) printJson(events);
      else for (const e of events) printEvent(args, e, false);
      return 0;
    }
    // Listen first, so that nothing logged while the log is read is missed; ids say what was shown.
    const pending: LoggedEvent[] = [];
    let last = Number(filter.since ?? 0);
    let live = false;
    const matches = (e: LoggedEvent): boolean => e.id > last && (!filter.category || e.category === filter.category)
      && (!filter.severity || e.severity === filter.severity) && (!filter.object || e.object === filter.object);
    const show = (e: LoggedEvent): void => {
      if (!matches(e)) return;
      last = e.id;
      printEvent(args, e, true);
    };
    const notifications = await openNotifications(client, (method, params) => {
      if (method !== 'VirtualServer.OnEventLogged') return;
      if (live) show(params as unknown as LoggedEvent);
      else pending.push(params as unknown as LoggedEvent);
    });
    const stop = (): void => notifications.close();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    try {
      if (filter.since !== undefined) {
        for (;;) {
          const page = await client.call<LoggedEvent[]>('VirtualServer.GetEvents', { ...filter, since: last, limit: EVENT_PAGE });
          for (const e of page) show(e);
          if (page.length < EVENT_PAGE) break;
        }
      }
    } catch (e) {
      notifications.close();
      throw e;
    }
    live = true;
    for (const e of pending.splice(0)) show(e);
    const why = await notifications.closed;
    if (why) throw new ApiCallError('VSCTL_E_DISCONNECTED', why);
    return 0;
  },
};

// ---------------------------------------------------------------------------------------------
// token

export const tokenCommands: Command[] = [
  {
    name: 'create',
    usage: 'create [--description D] [--role R] [--expires-in-days N]',
    summary: 'Create an API token for scripts (VSERVER_TOKEN, --token); it is printed once and cannot be shown again.',
    details: 'A role narrows the token below your own (Administrator, Operator, Viewer); never above it.',
    positionals: { min: 0, max: 0 },
    options: {
      description: { type: 'string', valueName: 'D', description: 'what the token is for' },
      role: { type: 'string', valueName: 'R', description: 'Administrator, Operator or Viewer (default: your role)' },
      'expires-in-days': { type: 'string', valueName: 'N', description: 'days until it stops working (default: never)' },
      ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const v = args.values;
      const params: Record<string, unknown> = {};
      if (v.description !== undefined) params.description = v.description;
      if (v.role !== undefined) {
        const roles = (SCHEMA.VirtualServer.members.CreateToken.params!.role as { values: readonly string[] }).values;
        params.role = roles.find((r) => r.toLowerCase() === String(v.role).toLowerCase());
        if (!params.role) throw new UsageError(`--role: "${String(v.role)}" is not one of ${roles.join(', ')}`);
      }
      if (v['expires-in-days'] !== undefined) params.expiresInDays = parseCount(v['expires-in-days'], '--expires-in-days', 1);
      const created = await clientFor(v).call<{ id: string; token: string; user: string; role: string; expires: string | null }>('VirtualServer.CreateToken', params);
      print(args, created, () => {
        console.log(created.token);
        console.error(`token ${created.id} for ${created.user}, role ${created.role}, ${created.expires ? `expires ${created.expires}` : 'never expires'}.`);
        console.error('This is the only time the token is shown: it will not be shown again. Keep it somewhere safe.');
      });
      return 0;
    },
  },
  {
    name: 'list',
    usage: 'list',
    summary: 'List your API tokens (every user\'s for administrators), without their secrets.',
    positionals: { min: 0, max: 0 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      type Token = { id: string; user: string; role: string; description?: string; created?: string; expires?: string | null; lastUsed?: string | null };
      const tokens = await clientFor(args.values).call<Token[]>('VirtualServer.get_Tokens');
      print(args, tokens, () => {
        if (tokens.length === 0) console.log('no tokens');
        else printTable(['ID', 'USER', 'ROLE', 'CREATED', 'EXPIRES', 'LAST USED', 'DESCRIPTION'],
          tokens.map((t) => [t.id, t.user, t.role, t.created ?? '-', t.expires ?? 'never', t.lastUsed ?? 'never', t.description ?? '']));
      });
      return 0;
    },
  },
  {
    name: 'revoke',
    usage: 'revoke ID',
    summary: 'Revoke an API token (given by its id, or the whole token); it stops working at once.',
    positionals: { min: 1, max: 1 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const [text] = args.positionals;
      const id = tokenId(text) ?? text;
      await clientFor(args.values).call('VirtualServer.RevokeToken', { id });
      print(args, { revoked: id }, () => console.log(`revoked token ${id}`));
      return 0;
    },
  },
];

// ---------------------------------------------------------------------------------------------
// login, logout

/** A password typed on the terminal, not echoed. */
function promptPassword(prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const input = process.stdin;
    process.stderr.write(prompt);
    input.setRawMode(true);
    input.resume();
    let typed = '';
    const done = (error: Error | null): void => {
      input.off('data', onData);
      input.setRawMode(false);
      input.pause();
      process.stderr.write('\n');
      if (error) reject(error);
      else resolve(typed);
    };
    const onData = (chunk: Buffer): void => {
      for (const ch of chunk.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done(null);
        if (ch === '\u0003') return done(new UsageError('login cancelled'));
        if (ch === '\u0004') return typed ? done(null) : done(new UsageError('login cancelled: no password given'));
        if (ch === '\u007f' || ch === '\b') typed = [...typed].slice(0, -1).join('');
        else if (ch === '\u0015') typed = '';
        else if (ch >= ' ') typed += ch;
      }
    };
    input.on('data', onData);
  });
}

/** The first line of standard input. */
async function readLine(): Promise<string> {
  let text = '';
  for await (const chunk of process.stdin) {
    text += (chunk as Buffer).toString('utf8');
    if (text.includes('\n')) break;
  }
  return text.split(/\r?\n/)[0];
}

async function readPassword(user: string, url: string): Promise<string> {
  if (process.env.VSERVER_PASSWORD !== undefined) return process.env.VSERVER_PASSWORD;
  const password = process.stdin.isTTY ? await promptPassword(`password for ${user} at ${url}: `) : await readLine();
  if (!password) throw new UsageError('no password given (type it, pipe it on standard input, or set VSERVER_PASSWORD)');
  return password;
}

export const loginCommand: Command = {
  name: 'login',
  usage: 'login [--url URL] [--user NAME]',
  summary: 'Log in to vserverd and keep the token in the credentials file; later commands use it, and this server becomes the default.',
  details: [
    'The password is read from $VSERVER_PASSWORD, else from standard input when it is not a terminal (one line), else',
    'asked for on the terminal without echo. The token is kept in $VSERVER_CREDENTIALS, or',
    '${XDG_CONFIG_HOME:-~/.config}/vserver/credentials.json, readable by you only (mode 0600).',
  ].join('\n'),
  positionals: { min: 0, max: 0 },
  options: {
    url: CONNECTION_OPTIONS.url,
    user: { type: 'string', valueName: 'NAME', description: 'the user (default: the one last logged in to this URL, else admin)' },
  },
  async run(args) {
    const { url } = resolveConnection({ url: args.values.url });
    const file = credentialsFile();
    const user = (args.values.user as string | undefined) ?? readCredentials(file).servers[url]?.user ?? 'admin';
    const password = await readPassword(user, url);
    const session = await login(url, user, password);
    const credentials = readCredentials(file);
    credentials.servers[url] = { token: session.token, user: session.user };
    credentials.default = url;
    writeCredentials(file, credentials);
    print(args, { url, user: session.user, role: session.role ?? null, expires: session.expires ?? null, credentials: file },
      () => console.log(`logged in to ${url} as ${session.user}`));
    return 0;
  },
};

export const logoutCommand: Command = {
  name: 'logout',
  usage: 'logout [--url URL]',
  summary: 'Forget the token kept for the server (and revoke it in vserverd, when it can be reached).',
  positionals: { min: 0, max: 0 },
  options: { url: CONNECTION_OPTIONS.url },
  async run(args) {
    const url = typeof args.values.url === 'string' ? normalizeUrl(args.values.url, '--url') : resolveConnection({}).url;
    const file = credentialsFile();
    const credentials = readCredentials(file);
    const entry = credentials.servers[url];
    if (!entry) {
      print(args, { url, loggedOut: false }, () => console.log(`not logged in to ${url}`));
      return 0;
    }
    const id = tokenId(entry.token);
    let revoked = false;
    if (id) {
      const client = clientFor({ url, token: entry.token });
      revoked = await client.call('VirtualServer.RevokeToken', { id }).then(() => true, () => false);
    }
    delete credentials.servers[url];
    if (credentials.default === url) delete credentials.default;
    writeCredentials(file, credentials);
    print(args, { url, loggedOut: true, revoked }, () => console.log(`logged out of ${url}${revoked ? '' : ' (the token could not be revoked in vserverd)'}`));
    return 0;
  },
};
