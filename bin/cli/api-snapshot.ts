// The vsctl verbs for a VM's layers, through vserverd: "snapshot list|create|revert|delete",
// "backup create|list|restore" and "vm undo". Tasks are waited for (a progress bar on a
// terminal) unless --no-wait. docs/snapshots.md says what each does.

import { ApiCallError, type ApiClient, followTask } from './api-client.js';
import { clientFor, CONNECTION_OPTIONS } from './api-call.js';
import { print, printTable, refOf } from './api-output.js';
import type { Command, ParsedArgs } from './command.js';
import { resolveVm } from './api-vm.js';
import { printRows, UsageError } from './terminal.js';

interface TreeEntry { snapshot: { $ref: string }; name: string; parent: { $ref: string } | null; depth: number; current: boolean; created: string }
interface ListedBackup { folder: string; id: string; vm: { id: string; name: string }; created: string; kind: string; parent: string | null; running: boolean; includesMemory: boolean; bytes: number }

const NO_WAIT = { 'no-wait': { type: 'boolean' as const, description: 'print the Task reference and return at once instead of waiting for it' } };
const UNDO_ACTIONS = ['Discard', 'Keep', 'Commit'];

/** Waits for a task (unless --no-wait) and returns its result; with --no-wait, the task's reference. */
async function runTask(client: ApiClient, args: ParsedArgs, returned: unknown, what: string): Promise<{ task: string; result: unknown; waited: boolean }> {
  const task = refOf(returned, what);
  if (args.values['no-wait']) return { task, result: null, waited: false };
  return { task, result: await followTask(client, task, { progress: !args.json }), waited: true };
}

/** A snapshot named on the command line: a Snapshot reference, an id, or a name in the VM's tree. */
async function resolveSnapshot(client: ApiClient, vm: string, text: string): Promise<string> {
  if (text.startsWith('Snapshot/')) return text;
  const tree = await client.call<TreeEntry[]>('VirtualMachine.get_Snapshots', { this: vm });
  const found = tree.find((e) => e.snapshot.$ref.endsWith(`/${text}`)) ?? tree.find((e) => e.name.toLowerCase() === text.toLowerCase());
  if (!found) throw new ApiCallError('VM_E_SNAPSHOT_UNKNOWN', `the VM has no snapshot named or numbered "${text}"`, { name: text });
  return found.snapshot.$ref;
}

export const snapshotCommands: Command[] = [
  {
    name: 'list',
    usage: 'list VM',
    summary: 'The VM\'s snapshot tree: each snapshot under its parent, the current one marked with *.',
    positionals: { min: 1, max: 1 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const vm = await resolveVm(client, args.positionals[0]);
      const tree = await client.call<TreeEntry[]>('VirtualMachine.get_Snapshots', { this: vm });
      print(args, tree, () => {
        if (!tree.length) console.log('no snapshots');
        else printTable(['NAME', 'CREATED', 'ID'], tree.map((e) => [`${'  '.repeat(e.depth)}${e.current ? '* ' : ''}${e.name}`, e.created, e.snapshot.$ref.split('/').at(-1)!]));
      });
      return 0;
    },
  },
  {
    name: 'create',
    usage: 'create VM NAME [--description TEXT] [--memory] [--no-wait]',
    summary: 'Take a snapshot of the VM, running or off; --memory saves a running VM\'s memory too.',
    positionals: { min: 2, max: 2 },
    options: {
      description: { type: 'string', valueName: 'TEXT', description: 'free text kept with the snapshot' },
      memory: { type: 'boolean', description: 'save the running VM\'s memory too (revert then resumes it running)' },
      ...NO_WAIT, ...CONNECTION_OPTIONS,
    },
    async run(args) {
      const client = clientFor(args.values);
      const [text, name] = args.positionals;
      const vm = await resolveVm(client, text);
      const params = { this: vm, name, ...(args.values.description !== undefined ? { description: args.values.description } : {}), ...(args.values.memory ? { includeMemory: true } : {}) };
      const { task, result, waited } = await runTask(client, args, await client.call('VirtualMachine.CreateSnapshot', params), 'CreateSnapshot');
      const snapshot = waited ? refOf(result, 'CreateSnapshot') : null;
      print(args, { vm, task, snapshot }, () => console.log(snapshot ? `took snapshot ${name} of ${text} (${snapshot})` : task));
      return 0;
    },
  },
  {
    name: 'revert',
    usage: 'revert VM SNAPSHOT --yes [--no-wait]',
    summary: 'Return the VM to a snapshot; its current state is lost (snapshot it first to keep it), so --yes is required.',
    positionals: { min: 2, max: 2 },
    options: { yes: { type: 'boolean', description: 'confirm that the VM\'s current state may be lost' }, ...NO_WAIT, ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const [text, snapshotText] = args.positionals;
      const vm = await resolveVm(client, text);
      const snapshot = await resolveSnapshot(client, vm, snapshotText);
      const { task } = await runTask(client, args, await client.call('Snapshot.Revert', { this: snapshot, confirm: args.values.yes === true }), 'Revert');
      const state = await client.call('VirtualMachine.get_State', { this: vm });
      print(args, { vm, snapshot, task, state }, () => console.log(`${text} reverted to ${snapshotText}; it is ${String(state)}`));
      return 0;
    },
  },
  {
    name: 'delete',
    usage: 'delete VM SNAPSHOT [--no-wait]',
    summary: 'Delete a snapshot: its layer is merged into the ones after it (a running guest sees nothing); the VM\'s state is kept.',
    positionals: { min: 2, max: 2 },
    options: { ...NO_WAIT, ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const [text, snapshotText] = args.positionals;
      const vm = await resolveVm(client, text);
      const snapshot = await resolveSnapshot(client, vm, snapshotText);
      const { task } = await runTask(client, args, await client.call('Snapshot.Delete', { this: snapshot }), 'Delete');
      print(args, { vm, snapshot, task }, () => console.log(`deleted snapshot ${snapshotText} of ${text}`));
      return 0;
    },
  },
];

export const backupCommands: Command[] = [
  {
    name: 'create',
    usage: 'create VM... --path FOLDER [--incremental] [--memory] [--no-wait]',
    summary: 'Back the VMs up into FOLDER, running ones at one instant together, while they run on.',
    details: 'Each VM gets a set FOLDER/NAME/TIME-ID/ with its disks as VHDs, its .vmc and manifest.json (sizes, SHA-256). --incremental copies only what changed since the VM\'s newest set in FOLDER (or says why it could not).',
    positionals: { min: 1, max: 64 },
    options: {
      path: { type: 'string', valueName: 'FOLDER', description: 'the backup folder (inside vserverd\'s storage roots; relative to the first)' },
      incremental: { type: 'boolean', description: 'copy only the blocks written since the newest set in FOLDER' },
      memory: { type: 'boolean', description: 'save each running VM\'s memory too' },
      ...NO_WAIT, ...CONNECTION_OPTIONS,
    },
    async run(args) {
      if (typeof args.values.path !== 'string') throw new UsageError('--path FOLDER is required');
      const client = clientFor(args.values);
      const vms = await Promise.all(args.positionals.map((t) => resolveVm(client, t)));
      const returned = await client.call('VirtualServer.BackupVirtualMachines', { vms, path: args.values.path, ...(args.values.incremental ? { incremental: true } : {}), ...(args.values.memory ? { includeMemory: true } : {}) });
      const { task, result } = await runTask(client, args, returned, 'BackupVirtualMachines');
      const backups = (result as { backups?: Array<{ folder: string; kind: string; fullReason: string | null; bytes: number }> } | null)?.backups ?? [];
      print(args, { task, backups }, () => {
        if (!backups.length) console.log(task);
        for (const b of backups) console.log(`${b.kind} backup: ${b.folder} (${b.bytes} bytes)${b.fullReason ? ` - full because ${b.fullReason}` : ''}`);
      });
      return 0;
    },
  },
  {
    name: 'list',
    usage: 'list FOLDER',
    summary: 'The backup sets in FOLDER, newest first.',
    positionals: { min: 1, max: 1 },
    options: { ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const sets = await client.call<ListedBackup[]>('VirtualServer.ListBackups', { path: args.positionals[0] });
      print(args, sets, () => {
        if (!sets.length) console.log('no backups');
        else printTable(['VM', 'CREATED', 'KIND', 'BYTES', 'FOLDER'], sets.map((s) => [s.vm.name, s.created, s.kind, String(s.bytes), s.folder]));
      });
      return 0;
    },
  },
  {
    name: 'restore',
    usage: 'restore SET_FOLDER [--name NAME] [--no-wait]',
    summary: 'Register a new VM from a backup set, after checking the SHA-256 of every file; it gets a new id and MAC addresses.',
    positionals: { min: 1, max: 1 },
    options: { name: { type: 'string', valueName: 'NAME', description: 'the new VM\'s name (the backed-up VM\'s when omitted)' }, ...NO_WAIT, ...CONNECTION_OPTIONS },
    async run(args) {
      const client = clientFor(args.values);
      const returned = await client.call('VirtualServer.RestoreVirtualMachine', { path: args.positionals[0], ...(typeof args.values.name === 'string' ? { name: args.values.name } : {}) });
      const { task, result, waited } = await runTask(client, args, returned, 'RestoreVirtualMachine');
      const vm = waited ? refOf(result, 'RestoreVirtualMachine') : null;
      print(args, { task, vm }, () => console.log(vm ? `restored as ${vm}` : task));
      return 0;
    },
  },
];

export const undoCommand: Command = {
  name: 'undo',
  usage: 'undo VM [on|off|merge|discard] [--action Discard|Keep|Commit]',
  summary: 'Show or change the VM\'s undo disks: on/off (while off; off discards them), merge or discard them, --action sets what the guest\'s own shutdown does.',
  positionals: { min: 1, max: 2 },
  options: { action: { type: 'string', valueName: 'ACTION', description: 'the undo action: Discard, Keep or Commit' }, ...CONNECTION_OPTIONS },
  async run(args) {
    const client = clientFor(args.values);
    const [text, verb] = args.positionals;
    const vm = await resolveVm(client, text);
    const action = args.values.action as string | undefined;
    if (action !== undefined && !UNDO_ACTIONS.includes(action)) throw new UsageError(`--action is one of ${UNDO_ACTIONS.join(', ')}`);
    if (action !== undefined) await client.call('VirtualMachine.put_UndoAction', { this: vm, value: action });
    if (verb === 'on' || verb === 'off') await client.call('VirtualMachine.put_Undoable', { this: vm, value: verb === 'on' });
    else if (verb === 'merge') await followTask(client, refOf(await client.call('VirtualMachine.MergeUndoDisks', { this: vm }), 'MergeUndoDisks'), { progress: !args.json });
    else if (verb === 'discard') await client.call('VirtualMachine.DiscardUndoDisks', { this: vm });
    else if (verb !== undefined) throw new UsageError('the verb is on, off, merge or discard');
    const connections = (await client.call<unknown[]>('VirtualMachine.get_HardDiskConnections', { this: vm })).map((c) => refOf(c, 'get_HardDiskConnections'));
    const undoDisks = (await Promise.all(connections.map((c) => client.call<string | null>('HardDiskConnection.get_UndoHardDisk', { this: c })))).filter((f): f is string => f !== null);
    const shown = { vm, undoable: await client.call('VirtualMachine.get_Undoable', { this: vm }), undoAction: await client.call('VirtualMachine.get_UndoAction', { this: vm }), undoDisks };
    print(args, shown, () => printRows([['Undo disks', shown.undoable ? 'on' : 'off'], ['Undo action', String(shown.undoAction)], ['Files', undoDisks.join(', ') || 'none']]));
    return 0;
  },
};
