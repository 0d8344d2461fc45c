// The vsctl vm verbs that talk to vserverd: list, show, create, the power verbs (start, stop, save,
// pause, resume, reset, shutdown) and delete. A list asks for every VM's properties in one JSON-RPC batch.

import { fieldOf } from '../../server/api/fields.js';
import { SCHEMA } from '../../server/api/schema.js';
import { typeProblem } from '../../server/api/type-check.js';
import { ApiCallError, type ApiClient, followTask, isRef } from './api-client.js';
import { clientFor, CONNECTION_OPTIONS, oneLine } from './api-call.js';
import { idOf, parseMegabytes, print, printTable, refOf } from './api-output.js';
import type { Command } from './command.js';
import { printRows, UsageError } from './terminal.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const VM_PREFIX = 'VirtualMachine/';
/** What put_Memory takes: --memory is checked against it before the VM is created. */
const MEMORY = fieldOf('VirtualMachine.put_Memory', 'value');

/** A VM named on the command line: a reference, an id (a UUID), or a name found with FindVirtualMachine. */
export async function resolveVm(client: ApiClient, text: string): Promise<string> {
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
  // The adapters' networks by name: one more batch, for those connected to one.
  const networks = nics.map((_, i) => results[results.length - 3 * nics.length + 3 * i + 2]).map((n) => (isRef(n) ? n.$ref : null));
  const connected = networks.filter((n): n is string => n !== null);
  const names = await client.batch(connected.map((n): [string, Record<string, unknown>] => ['VirtualNetwork.get_Name', { this: n }]));
  const nameOf = new Map(connected.map((n, i) => {
    const outcome = names[i];
    return [n, outcome.ok ? String(outcome.result) : null];
  }));
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
      const network = isRef(virtualNetwork) ? virtualNetwork.$ref : null;
      return { adapter, ethernetAddress, model, virtualNetwork: network, networkName: network ? nameOf.get(network) ?? null : null };
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
  type Nic = { ethernetAddress: string; model: string; virtualNetwork: string | null; networkName: string | null };
  list('Network adapters', vm.networkAdapters as Nic[], (n) => `${n.ethernetAddress}  ${n.model}, ${n.virtualNetwork === null ? 'not connected' : `network ${n.networkName ?? n.virtualNetwork}`}`);
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
    options: {
      ...(isTask ? NO_WAIT : {}),
      ...(member === 'TurnOff' ? { undo: { type: 'string' as const, valueName: 'ACTION', description: 'an undoable VM\'s undo disks once it is off: Discard, Keep or Commit (its UndoAction when omitted)' } } : {}),
      ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const client = clientFor(args.values);
      const [text] = args.positionals;
      const vm = await resolveVm(client, text);
      const target = viaGuest ? refOf(await client.call('VirtualMachine.get_GuestOS', { this: vm }), 'get_GuestOS') : vm;
      const undo = args.values.undo as string | undefined;
      if (undo !== undefined && !['Discard', 'Keep', 'Commit'].includes(undo)) throw new UsageError('--undo is one of Discard, Keep, Commit');
      const returned = await client.call(`${iface}.${member}`, { this: target, ...(undo !== undefined ? { undoAction: undo } : {}) });
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
      memory: { type: 'string', valueName: 'MB', description: `memory in MB (default 128; ${String(MEMORY.min)} to ${String(MEMORY.max)})` },
      disk: { type: 'string', valueName: 'PATH', description: 'attach this existing VHD on SCSI 0:0' },
      'new-disk': { type: 'string', valueName: 'SIZE_MB', description: 'create NAME/NAME.vhd, dynamic, of this size and attach it on SCSI 0:0' },
      nic: { type: 'boolean', description: 'add a network adapter (with a new MAC address)' },
      ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const [name] = args.positionals;
      if (args.values.disk !== undefined && args.values['new-disk'] !== undefined) throw new UsageError('--disk and --new-disk both go on SCSI 0:0; give one');
      const memoryMB = args.values.memory === undefined ? undefined : parseMegabytes(args.values.memory, '--memory');
      const memoryProblem = memoryMB === undefined ? null : typeProblem(MEMORY.type, memoryMB);
      if (memoryProblem) throw new UsageError(`--memory ${memoryProblem}`);
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
