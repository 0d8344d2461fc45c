// The object model over real HTTP, member by member: every member of every interface in SCHEMA
// is called on a real vserverd and its effect checked where it shows (the .vmc on disk, qemu-img
// and qemu-io, the event log, another user's rights, a revoked token's 401), and every member is
// fed bad inputs (missing, mistyped and unknown parameters, a wrong or unknown "this", paths
// outside the storage roots) that must be refused with the error and the limit named. VMs are
// turned on here only to see what Startup of a diskless VM reports; the power members' work on
// a running guest is the lifecycle test's.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SCHEMA } from '../server/api/schema.js';
import type { ParamSpec } from '../server/api/schema-types.js';
import { RpcError, TestServer, login } from './helpers/server.js';
import { BLOCK, MiB, PROJECT_ROOT, constBytes, qemuCompare, qemuImg, qemuInfo, qemuIoVerify, vsctl, writeVhd } from './helpers/vhd-fixtures.js';

interface Ref { $ref: string }
interface TaskError { name: string; message: string }
interface LoggedEvent { id: number; time: string; category: string; severity: string; message: string; who: string; object: string | null }
interface VmConfiguration { id: string; name: string; memoryMB: number; ide: Array<Record<string, unknown>>; scsi: Array<{ model: string; disks: Array<{ target: number; path: string }> }>; networkAdapters: Array<{ model: string; mac: string; network: string }>; usb: string[]; savedState: string; [key: string]: unknown }

/** No VM has this id. */
const UNKNOWN_ID = '00000000-0000-4000-8000-000000000000';
const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const RIGHTS = ['read', 'change', 'control', 'delete', 'changePermissions'];

let server: TestServer;
/** The storage root (the data folder, as a real path): where relative API paths start. */
let root: string;
let startedAt: number;
/** A real object of each interface, all on the VM "fixture": the "this" of the checks that walk SCHEMA. */
const fixture: Record<string, string> = {};
let fixtureVm: string;
let fixtureId: string;
let fixtureDisk: string;

function call<T = unknown>(method: string, params: Record<string, unknown> = {}, token?: string): Promise<T> {
  return server.call<T>(method, params, token);
}

/** The call must fail; returns its error. */
async function refusal(method: string, params: Record<string, unknown>, token?: string): Promise<RpcError> {
  let result: unknown;
  try {
    result = await server.call(method, params, token);
  } catch (e) {
    if (e instanceof RpcError) return e;
    throw e;
  }
  assert.fail(`${method} ${JSON.stringify(params)} was accepted and returned ${JSON.stringify(result)}`);
}

/** The call fails with the error `name`, and its message contains each of `mentions`. */
async function refused(method: string, params: Record<string, unknown>, name: string, mentions: Array<string | RegExp> = [], token?: string): Promise<RpcError> {
  const error = await refusal(method, params, token);
  assert.equal(error.data.name, name, `${method} ${JSON.stringify(params)}: expected ${name}, got ${error.data.name}: ${error.message}`);
  for (const m of mentions) {
    if (typeof m === 'string') assert.ok(error.message.includes(m), `${method}: "${error.message}" does not mention ${m}`);
    else assert.match(error.message, m, `${method}: the message`);
  }
  return error;
}

const idOf = (vm: Ref | string): string => (typeof vm === 'string' ? vm : vm.$ref).replace(/^VirtualMachine\//, '');

/** Waits for a task; returns how it ended. */
async function finish(task: Ref, timeoutMs = 60_000): Promise<{ error: TaskError | null; result: unknown }> {
  assert.match(task.$ref, /^Task\/[0-9a-f-]{36}$/, 'a long operation answers with a Task reference');
  assert.equal(await call('Task.WaitForCompletion', { this: task.$ref, timeoutMs }), true, `${task.$ref} did not finish within ${timeoutMs} ms`);
  return { error: await call<TaskError | null>('Task.get_Error', { this: task.$ref }), result: await call('Task.get_Result', { this: task.$ref }) };
}

/** Waits for a task that must succeed; returns its result. */
async function succeed(task: Ref): Promise<unknown> {
  const { error, result } = await finish(task);
  assert.equal(error, null, `${task.$ref} failed: ${JSON.stringify(error)}`);
  return result;
}

/** The error name a member reports, whether it refuses at once or its task fails; null when it succeeds. */
async function outcome(method: string, params: Record<string, unknown>): Promise<string | null> {
  let task: Ref;
  try {
    task = await call<Ref>(method, params);
  } catch (e) {
    if (e instanceof RpcError) return e.data.name;
    throw e;
  }
  return (await finish(task)).error?.name ?? null;
}

async function createDisk(relative: string, sizeMB = 1): Promise<string> {
  await succeed(await call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: relative, sizeMB }));
  return path.join(root, relative);
}

async function createVm(name: string): Promise<string> {
  return (await call<Ref>('VirtualServer.CreateVirtualMachine', { name })).$ref;
}

function configOf(vm: string): Promise<VmConfiguration> {
  return call<VmConfiguration>('VirtualMachine.get_Configuration', { this: vm });
}

function vmcOf(file: string): VmConfiguration {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as VmConfiguration;
}

/** `refuse` must leave the VM's configuration, and its .vmc file, exactly as they were. */
async function unchanged(vm: string, refuse: () => Promise<unknown>): Promise<void> {
  const before = await configOf(vm);
  const file = await call<string>('VirtualMachine.get_File', { this: vm });
  const onDisk = fs.readFileSync(file, 'utf8');
  await refuse();
  assert.deepEqual(await configOf(vm), before, 'the refused change left nothing half-applied in the configuration');
  assert.equal(fs.readFileSync(file, 'utf8'), onDisk, 'the refused change left the .vmc as it was');
}

/** `qemu-img info` letting QEMU probe the format. */
function qemuProbe(file: string): Record<string, unknown> {
  return JSON.parse(qemuImg('info', '--output=json', file)) as Record<string, unknown>;
}

/** vsctl vhd check finds nothing wrong with the file (qemu-img check does not check vpc images). */
function assertValidVhd(file: string): void {
  const r = vsctl(['vhd', 'check', file, '--json']);
  assert.equal(r.status, 0, `vsctl vhd check ${file}: ${r.stdout}${r.stderr}`);
  const report = JSON.parse(r.stdout) as { valid: boolean; errors: unknown[] };
  assert.deepEqual([report.valid, report.errors], [true, []], r.stdout);
}

async function lastEventId(): Promise<number> {
  for (let since = 0; ;) {
    const page = await call<LoggedEvent[]>('VirtualServer.GetEvents', { since, limit: 1000 });
    if (page.length) since = page[page.length - 1].id;
    if (page.length < 1000) return since;
  }
}

/** POSTs a raw body to /api/rpc. */
async function post(body: string, token: string | null = server.adminToken): Promise<{ status: number; text: string; json: unknown; headers: Headers }> {
  const response = await fetch(`${server.url}/api/rpc`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body,
  });
  const text = await response.text();
  return { status: response.status, text, json: text ? JSON.parse(text) as unknown : null, headers: response.headers };
}

interface RpcAnswer { jsonrpc: string; id: unknown; result?: unknown; error?: { code: number; message: string; data: { name: string; [key: string]: unknown } } }

before(async () => {
  startedAt = Date.now();
  server = await TestServer.start();
  root = fs.realpathSync(server.dataDir);
  const diskTask = await call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: 'fixture-disks/boot.vhd', sizeMB: 16 });
  await succeed(diskTask);
  fixtureDisk = path.join(root, 'fixture-disks', 'boot.vhd');
  fixtureVm = await createVm('fixture');
  fixtureId = idOf(fixtureVm);
  await call('VirtualMachine.AddSCSIController', { this: fixtureVm });
  await call('VirtualMachine.AddHardDiskConnection', { this: fixtureVm, path: fixtureDisk, busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
  await call('VirtualMachine.AddDVDROMDrive', { this: fixtureVm, busNumber: 1, deviceNumber: 0 });
  await call('VirtualMachine.AddNetworkAdapter', { this: fixtureVm });
  const fixtureNetwork = await call<Ref>('VirtualServer.CreateVirtualNetwork', { name: 'fixture-net', kind: 'internal' });
  // A snapshot of a VM of its own: the fixture VM's disk stays a plain disk for the disk members.
  const snapshotVm = await createVm('fixture-snapshots');
  await call('VirtualMachine.AddSCSIController', { this: snapshotVm });
  await call('VirtualMachine.AddHardDiskConnection', { this: snapshotVm, path: await createDisk('fixture-snapshots/disk.vhd', 4), busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
  const fixtureSnapshot = (await succeed(await call<Ref>('VirtualMachine.CreateSnapshot', { this: snapshotVm, name: 'fixture' }))) as Ref;
  Object.assign(fixture, {
    VirtualServer: 'VirtualServer',
    VirtualMachine: fixtureVm,
    HardDiskConnection: `HardDiskConnection/${fixtureId}/scsi0-0`,
    DVDROMDrive: `DVDROMDrive/${fixtureId}/ide1-0`,
    SCSIController: `SCSIController/${fixtureId}/0`,
    NetworkAdapter: `NetworkAdapter/${fixtureId}/0`,
    GuestOS: `GuestOS/${fixtureId}`,
    Display: `Display/${fixtureId}`,
    Task: diskTask.$ref,
    HardDisk: `HardDisk/${fixtureDisk}`,
    Security: `Security/${fixtureVm}`,
    VirtualNetwork: fixtureNetwork.$ref,
    DHCPVirtualNetworkServer: fixtureNetwork.$ref.replace('VirtualNetwork/', 'DHCPVirtualNetworkServer/'),
    Snapshot: fixtureSnapshot.$ref,
    // This server has no cluster settings: these name nothing, and their members say so (VM_E_NOT_CLUSTERED).
    Cluster: 'Cluster/lab',
    Host: 'Host/vhost1',
  });
});

after(async () => {
  if (!server) return;
  try {
    // A VM left running by a failed test is turned off, so that stopping vserverd does not save it.
    for (const vm of await call<Ref[]>('VirtualServer.get_VirtualMachines')) {
      const state = await call<string>('VirtualMachine.get_State', { this: vm.$ref });
      if (state !== 'TurnedOff' && state !== 'Saved') await finish(await call<Ref>('VirtualMachine.TurnOff', { this: vm.$ref }));
    }
  } finally {
    await server.stop();
    server.remove();
  }
});

// ---------------------------------------------------------------------------------------------

describe('the object model is tested whole', () => {
  test('every member of every interface in SCHEMA is called by its full name in this file', () => {
    const source = fs.readFileSync(path.join(PROJECT_ROOT, 'test', 'api-members.test.ts'), 'utf8');
    const untested = Object.entries(SCHEMA).flatMap(([iface, spec]) => Object.keys(spec.members).map((m) => `${iface}.${m}`))
      .filter((method) => !source.includes(`'${method}'`));
    assert.deepEqual(untested, [], `members without a test here: ${untested.join(', ')}`);
  });
});

describe('the cluster members on a vserverd without cluster settings (api-cluster tests them in a cluster)', () => {
  test('VirtualServer.get_Cluster and VirtualMachine.get_Host are null; every Cluster and Host member and the VM\'s high availability are VM_E_NOT_CLUSTERED, and nothing is logged as changed', async () => {
    assert.equal(await call('VirtualServer.get_Cluster'), null);
    assert.equal(await call('VirtualMachine.get_Host', { this: fixtureVm }), null);
    const since = (await call<{ id: number }[]>('VirtualServer.GetEvents', { newestFirst: true, limit: 1 }))[0]?.id ?? 0;
    const calls: Array<[string, Record<string, unknown>]> = [
      ['Cluster.get_Name', { this: 'Cluster/lab' }], ['Cluster.get_Hosts', { this: 'Cluster/lab' }], ['Cluster.get_Leader', { this: 'Cluster/lab' }],
      ['Cluster.get_FailoverHistory', { this: 'Cluster/lab' }], ['Cluster.get_FailoverHistory', { this: 'Cluster/lab', since: '2026-01-01T00:00:00Z' }],
      ['Host.get_Name', { this: 'Host/vhost1' }], ['Host.get_State', { this: 'Host/vhost1' }], ['Host.get_Address', { this: 'Host/vhost1' }],
      ['Host.get_VirtualMachines', { this: 'Host/vhost1' }], ['Host.get_MemoryAvailable', { this: 'Host/vhost1' }],
      ['Host.EnterMaintenance', { this: 'Host/vhost1' }], ['Host.ExitMaintenance', { this: 'Host/vhost1' }],
      ['VirtualMachine.get_HighAvailability', { this: fixtureVm }], ['VirtualMachine.put_HighAvailability', { this: fixtureVm, value: { enabled: true } }],
    ];
    for (const [method, params] of calls) await refused(method, params, 'VM_E_NOT_CLUSTERED', ['not in a cluster', '--cluster']);
    const logged = await call<{ message: string }[]>('VirtualServer.GetEvents', { since });
    assert.deepEqual(logged.filter((e) => /Maintenance|HighAvailability/.test(e.message)), [], 'a refused change is not logged as made');
  });

  test('put_HighAvailability checks its value before the cluster is asked: priority and maxRestarts 0 to 100, host names, no other fields', async () => {
    const self = { this: fixtureVm };
    const cases: Array<[unknown, string[]]> = [
      [{ priority: 101 }, ['priority', '100']], [{ priority: -1 }, ['priority', '0']], [{ maxRestarts: 101 }, ['maxRestarts', '100']],
      [{ preferredHosts: ['Bad Name!'] }, ['preferredHosts']], [{ preferredHosts: 'vhost1' }, ['preferredHosts', 'list']],
      [{ enabled: 'yes' }, ['enabled']], [{ everywhere: true }, ['everywhere']], ['on', ['object']],
    ];
    for (const [value, mentions] of cases) await refused('VirtualMachine.put_HighAvailability', { ...self, value }, 'VM_E_INVALID_PARAMS', ['"value"', ...mentions]);
    await refused('Cluster.get_FailoverHistory', { this: 'Cluster/lab', since: 42 }, 'VM_E_INVALID_PARAMS', ['"since"']);
  });
});

describe('undo disks, snapshots and backups (the guest\'s side is api-undo, api-snapshots and api-backup)', () => {
  test('VirtualMachine.get_Undoable, put_Undoable, get_UndoAction, put_UndoAction, MergeUndoDisks, DiscardUndoDisks and HardDiskConnection.get_UndoHardDisk of a turned-off VM', async () => {
    const vm = await createVm('undo-members');
    await call('VirtualMachine.AddSCSIController', { this: vm });
    await call('VirtualMachine.AddHardDiskConnection', { this: vm, path: await createDisk('undo-members/disk.vhd'), busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
    assert.equal(await call('VirtualMachine.get_Undoable', { this: vm }), false);
    await call('VirtualMachine.put_Undoable', { this: vm, value: true });
    assert.equal(await call('VirtualMachine.get_Undoable', { this: vm }), true);
    assert.equal(await call('VirtualMachine.get_UndoAction', { this: vm }), 'Discard');
    await call('VirtualMachine.put_UndoAction', { this: vm, value: 'Commit' });
    assert.equal(await call('VirtualMachine.get_UndoAction', { this: vm }), 'Commit');
    await refused('VirtualMachine.put_UndoAction', { this: vm, value: 'Later' }, 'VM_E_INVALID_PARAMS', ['Discard', 'Keep', 'Commit']);
    assert.equal(await call('HardDiskConnection.get_UndoHardDisk', { this: `HardDiskConnection/${idOf(vm)}/scsi0-0` }), null, 'made at turn on, not before');
    await refused('VirtualMachine.MergeUndoDisks', { this: vm }, 'VM_E_NO_UNDO_DISKS');
    await refused('VirtualMachine.DiscardUndoDisks', { this: vm }, 'VM_E_NO_UNDO_DISKS');
    await refused('VirtualMachine.CreateSnapshot', { this: vm, name: 'x' }, 'VM_E_UNDO_AND_SNAPSHOTS');
  });

  test('VirtualMachine.CreateSnapshot, get_Snapshots, get_CurrentSnapshot and every Snapshot member, Revert and Delete included', async () => {
    const vm = await createVm('snapshot-members');
    await call('VirtualMachine.AddSCSIController', { this: vm });
    await call('VirtualMachine.AddHardDiskConnection', { this: vm, path: await createDisk('snapshot-members/disk.vhd'), busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
    assert.equal(await call('VirtualMachine.get_CurrentSnapshot', { this: vm }), null);
    const first = (await succeed(await call<Ref>('VirtualMachine.CreateSnapshot', { this: vm, name: 'first', description: 'one' }))) as Ref;
    const second = (await succeed(await call<Ref>('VirtualMachine.CreateSnapshot', { this: vm, name: 'second' }))) as Ref;
    await refused('VirtualMachine.CreateSnapshot', { this: vm, name: 'First' }, 'VM_E_SNAPSHOT_NAME_TAKEN', ['first']);
    await refused('VirtualMachine.CreateSnapshot', { this: vm, name: '  ' }, 'VM_E_INVALID_PARAMS', ['name']);
    const tree = await call<Array<{ snapshot: Ref; name: string; depth: number; current: boolean }>>('VirtualMachine.get_Snapshots', { this: vm });
    assert.deepEqual(tree.map((e) => [e.snapshot.$ref, e.name, e.depth, e.current]), [[first.$ref, 'first', 0, false], [second.$ref, 'second', 1, true]]);
    assert.deepEqual(await call('VirtualMachine.get_CurrentSnapshot', { this: vm }), second);
    assert.equal(await call('Snapshot.get_Name', { this: first.$ref }), 'first');
    assert.equal(await call('Snapshot.get_Description', { this: first.$ref }), 'one');
    await call('Snapshot.put_Description', { this: first.$ref, value: 'the first' });
    assert.equal(await call('Snapshot.get_Description', { this: first.$ref }), 'the first');
    assert.match(await call<string>('Snapshot.get_CreationTime', { this: first.$ref }), ISO_TIME);
    assert.equal(await call('Snapshot.get_Parent', { this: first.$ref }), null);
    assert.deepEqual(await call('Snapshot.get_Parent', { this: second.$ref }), first);
    assert.deepEqual(await call('Snapshot.get_Children', { this: first.$ref }), [second]);
    assert.equal(await call('Snapshot.get_IncludesMemory', { this: first.$ref }), false);
    assert.equal(await call('Snapshot.get_Consistency', { this: first.$ref }), 'CrashConsistent');
    assert.equal(await call('Snapshot.get_MemoryMethod', { this: first.$ref }), null);
    await refused('Snapshot.Revert', { this: first.$ref, confirm: false }, 'VM_E_CONFIRM_REQUIRED', ['confirm=true']);
    await succeed(await call<Ref>('Snapshot.Revert', { this: first.$ref, confirm: true }));
    assert.deepEqual(await call('VirtualMachine.get_CurrentSnapshot', { this: vm }), first);
    await succeed(await call<Ref>('Snapshot.Delete', { this: second.$ref }));
    await refused('Snapshot.get_Name', { this: second.$ref }, 'VM_E_SNAPSHOT_UNKNOWN');
    await succeed(await call<Ref>('Snapshot.Delete', { this: first.$ref }));
    assert.deepEqual(await call('VirtualMachine.get_Snapshots', { this: vm }), []);
    await refused('VirtualMachine.put_Undoable', { this: fixture.Snapshot.split('/').slice(0, 2).join('/').replace('Snapshot/', 'VirtualMachine/'), value: true }, 'VM_E_UNDO_AND_SNAPSHOTS');
  });

  test('VirtualServer.BackupVirtualMachines, ListBackups and RestoreVirtualMachine of a turned-off VM', async () => {
    const vm = await createVm('backup-members');
    await call('VirtualMachine.AddSCSIController', { this: vm });
    await call('VirtualMachine.AddHardDiskConnection', { this: vm, path: await createDisk('backup-members/disk.vhd'), busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
    await refused('VirtualServer.BackupVirtualMachines', { vms: [], path: 'member-backups' }, 'VM_E_INVALID_PARAMS', ['vms']);
    const { backups } = (await succeed(await call<Ref>('VirtualServer.BackupVirtualMachines', { vms: [vm], path: 'member-backups' }))) as { backups: Array<{ folder: string; kind: string }> };
    assert.equal(backups[0].kind, 'full');
    const listed = await call<Array<{ folder: string }>>('VirtualServer.ListBackups', { path: 'member-backups' });
    assert.deepEqual(listed.map((b) => b.folder), [backups[0].folder]);
    const restored = (await succeed(await call<Ref>('VirtualServer.RestoreVirtualMachine', { path: backups[0].folder, name: 'backup-members-restored' }))) as Ref;
    assert.equal(await call('VirtualMachine.get_Name', { this: restored.$ref }), 'backup-members-restored');
    await refused('VirtualServer.RestoreVirtualMachine', { path: 'member-backups' }, 'VM_E_BACKUP_INVALID', ['manifest.json']);
  });
});

describe('JSON-RPC 2.0 at POST /api/rpc', () => {
  test('an unknown method is -32601 VM_E_METHOD_NOT_FOUND, naming the interfaces or the members it resembles', async () => {
    for (const method of ['VirtualMachine.Frobnicate', 'Nope.get_Name', 'get_Name', 'VirtualServer.get_Name.extra']) {
      const error = await refused(method, {}, 'VM_E_METHOD_NOT_FOUND', [`there is no method ${method}`]);
      assert.equal(error.code, -32601, method);
    }
    await refused('Nope.get_Name', {}, 'VM_E_METHOD_NOT_FOUND', [Object.keys(SCHEMA).join(', ')]);
    await refused('VirtualMachine.Memory', {}, 'VM_E_METHOD_NOT_FOUND', ['VirtualMachine.get_Memory', 'VirtualMachine.put_Memory']);
  });

  test('a batch of more than 1000 calls is refused whole, saying the bound', async () => {
    const batch = Array.from({ length: 1001 }, (_, i) => ({ jsonrpc: '2.0', id: i, method: 'VirtualServer.get_Name' }));
    const answer = await post(JSON.stringify(batch));
    const { error } = answer.json as RpcAnswer;
    assert.equal(error?.code, -32600);
    assert.match(error?.message ?? '', /at most 1000 calls; this one has 1001/);
  });

  test('names that JavaScript objects inherit are neither methods nor parameters: constructor, __proto__, toString', async () => {
    for (const method of ['VirtualServer.constructor', 'constructor.name', '__proto__.get_Name', 'VirtualMachine.toString', 'VirtualServer.hasOwnProperty']) {
      const error = await refused(method, {}, 'VM_E_METHOD_NOT_FOUND', [`there is no method ${method}`]);
      assert.equal(error.code, -32601, method);
    }
    for (const name of ['constructor', 'toString', '__proto__']) {
      const answer = await post(`{"jsonrpc": "2.0", "id": 9, "method": "VirtualServer.get_Name", "params": {"${name}": 1}}`);
      const { error } = answer.json as RpcAnswer;
      assert.equal(error?.data.name, 'VM_E_INVALID_PARAMS', `${name}: ${JSON.stringify(answer.json)}`);
      assert.match(error?.message ?? '', new RegExp(`no parameter "${name}"`));
    }
  });

  test('params given as an array (or as a string) are -32602 VM_E_INVALID_PARAMS: parameters go by name', async () => {
    for (const params of [[], ['x'], 'x']) {
      const answer = await post(JSON.stringify({ jsonrpc: '2.0', id: 5, method: 'VirtualServer.get_Name', params }));
      assert.equal(answer.status, 200);
      const { id, error } = answer.json as RpcAnswer;
      assert.equal(id, 5);
      assert.equal(error?.code, -32602, JSON.stringify(answer.json));
      assert.equal(error?.data.name, 'VM_E_INVALID_PARAMS');
      assert.match(error?.message ?? '', /by name, as an object/);
    }
  });

  test('a request without params is a call with none', async () => {
    const answer = await post(JSON.stringify({ jsonrpc: '2.0', id: 'a', method: 'VirtualServer.get_MaximumMemoryPerVM' }));
    assert.deepEqual(answer.json, { jsonrpc: '2.0', id: 'a', result: 3686 });
  });

  test('a body that is not JSON is -32700 VM_E_PARSE_ERROR with id null', async () => {
    const answer = await post('{"jsonrpc": "2.0", "id": 1, "method": ');
    assert.equal(answer.status, 200);
    const { id, error } = answer.json as RpcAnswer;
    assert.equal(id, null);
    assert.equal(error?.code, -32700);
    assert.equal(error?.data.name, 'VM_E_PARSE_ERROR');
  });

  test('a message that is not a request (wrong jsonrpc, no method) is -32600 VM_E_INVALID_REQUEST with its id', async () => {
    for (const [message, id] of [[{ jsonrpc: '1.0', id: 7, method: 'VirtualServer.get_Name' }, 7], [{ jsonrpc: '2.0', id: 8 }, 8], [{ jsonrpc: '2.0', id: 9, method: 42 }, 9]] as const) {
      const answer = await post(JSON.stringify(message));
      const { error, id: answeredId } = answer.json as RpcAnswer;
      assert.equal(answeredId, id);
      assert.equal(error?.code, -32600, JSON.stringify(answer.json));
      assert.equal(error?.data.name, 'VM_E_INVALID_REQUEST');
    }
  });

  test('an empty batch is one -32600 error, not an empty array', async () => {
    const answer = await post('[]');
    assert.equal(answer.status, 200);
    const { id, error } = answer.json as RpcAnswer;
    assert.equal(id, null);
    assert.equal(error?.code, -32600);
    assert.equal(error?.data.name, 'VM_E_INVALID_REQUEST');
  });

  test('a batch mixing good calls, bad calls, a notification and a non-request answers each call by id, and the notification is done but not answered', async () => {
    const note = 'set by a notification in a batch';
    const answer = await post(JSON.stringify([
      { jsonrpc: '2.0', id: 1, method: 'VirtualServer.get_MaximumNetworkAdaptersPerVM' },
      { jsonrpc: '2.0', id: 2, method: 'VirtualServer.NoSuchMember' },
      { jsonrpc: '2.0', method: 'VirtualMachine.put_Notes', params: { this: fixtureVm, value: note } },
      { jsonrpc: '2.0', id: 3, method: 'VirtualMachine.get_Memory', params: {} },
      { jsonrpc: '2.0', id: 4, method: 'VirtualMachine.get_Memory', params: { this: fixtureVm } },
      42,
    ]));
    assert.equal(answer.status, 200);
    const answers = answer.json as RpcAnswer[];
    assert.ok(Array.isArray(answers), 'a batch is answered with an array');
    assert.deepEqual(answers.map((a) => a.id).sort(), [1, 2, 3, 4, null].sort(), 'one answer per call, none for the notification');
    const byId = new Map(answers.map((a) => [a.id, a]));
    assert.equal(byId.get(1)?.result, 4);
    assert.equal(byId.get(2)?.error?.code, -32601);
    assert.equal(byId.get(3)?.error?.data.name, 'VM_E_INVALID_PARAMS');
    assert.equal(byId.get(4)?.result, 128);
    assert.equal(byId.get(null)?.error?.code, -32600);
    assert.equal(await call('VirtualMachine.get_Notes', { this: fixtureVm }), note);
  });

  test('a notification (no id) is answered with HTTP 204 and no body, whether it succeeds or fails; a batch of notifications too', async () => {
    const note = 'set by a notification';
    const ok = await post(JSON.stringify({ jsonrpc: '2.0', method: 'VirtualMachine.put_Notes', params: { this: fixtureVm, value: note } }));
    assert.equal(ok.status, 204);
    assert.equal(ok.text, '');
    assert.equal(await call('VirtualMachine.get_Notes', { this: fixtureVm }), note, 'the notification was carried out');
    const bad = await post(JSON.stringify({ jsonrpc: '2.0', method: 'VirtualMachine.put_Memory', params: { this: fixtureVm, value: 'lots' } }));
    assert.equal(bad.status, 204);
    assert.equal(bad.text, '');
    const batch = await post(JSON.stringify([{ jsonrpc: '2.0', method: 'VirtualServer.get_Name' }, { jsonrpc: '2.0', method: 'VirtualServer.get_Version' }]));
    assert.equal(batch.status, 204);
  });

  test('a call without a token is HTTP 401 VM_E_NOT_AUTHENTICATED, and so is one with a made-up token', async () => {
    for (const token of [null, 'vst_000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', 'not-a-token']) {
      const answer = await post(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'VirtualServer.get_Name' }), token);
      assert.equal(answer.status, 401, String(token));
      assert.equal((answer.json as RpcAnswer).error?.data.name, 'VM_E_NOT_AUTHENTICATED');
      assert.match(answer.headers.get('www-authenticate') ?? '', /^Bearer/);
    }
  });

  test('GET /api/schema, signed in, returns every interface of SCHEMA with its members, and the events; without a token it is 401', async () => {
    const response = await fetch(`${server.url}/api/schema`, { headers: { authorization: `Bearer ${server.adminToken}` } });
    assert.equal(response.status, 200);
    const body = await response.json() as { interfaces: Record<string, { ref: string; members: Record<string, unknown> }>; events: Record<string, unknown> };
    assert.deepEqual(Object.keys(body.interfaces), Object.keys(SCHEMA));
    assert.deepEqual(body.interfaces, JSON.parse(JSON.stringify(SCHEMA)));
    assert.ok('VirtualMachine.OnStateChange' in body.events && 'Task.OnProgress' in body.events);
    assert.equal((await fetch(`${server.url}/api/schema`)).status, 401);
  });
});

describe('VirtualServer: the host and the limits of Virtual Server 2005 R2', () => {
  test('get_Name is the host name; get_Version is package.json\'s version; get_UpTime counts seconds since vserverd started', async () => {
    assert.equal(await call('VirtualServer.get_Name'), os.hostname());
    assert.equal(await call('VirtualServer.get_Name', { this: 'VirtualServer' }), os.hostname(), '"this": "VirtualServer" is accepted');
    const pkg = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(await call('VirtualServer.get_Version'), pkg.version);
    const upTime = await call<number>('VirtualServer.get_UpTime');
    assert.ok(Number.isInteger(upTime) && upTime >= 0 && upTime <= Math.ceil((Date.now() - startedAt) / 1000), `get_UpTime ${upTime}`);
  });

  test('get_HostInfo describes this host: processors, memory, operating system, QEMU\'s version and the engine with its reason', async () => {
    const info = await call<Record<string, unknown>>('VirtualServer.get_HostInfo');
    assert.equal(info.hostName, os.hostname());
    assert.equal(info.logicalProcessors, os.availableParallelism());
    assert.equal(info.memoryMB, Math.round(os.totalmem() / MiB));
    assert.ok(typeof info.memoryAvailableMB === 'number' && info.memoryAvailableMB > 0 && info.memoryAvailableMB <= (info.memoryMB as number));
    assert.equal(info.operatingSystem, `${os.type()} ${os.release()}`);
    assert.ok(info.engine === 'kvm' || info.engine === 'tcg', String(info.engine));
    assert.ok(typeof info.engineReason === 'string' && info.engineReason.length > 0);
    const qemu = /version (\S+)/.exec(spawnSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).stdout ?? '')?.[1];
    assert.equal(info.qemuVersion, qemu ?? 'not installed');
  });

  test('the Maximum*/Minimum* properties are Virtual Server\'s: 3686 MB to 4 MB, 1 processor, 4 NICs, 2 IDE buses, 4 SCSI adapters, 2 serial, 1 parallel, 1 floppy', async () => {
    const expected: Record<string, number> = {
      'VirtualServer.get_MaximumMemoryPerVM': 3686,
      'VirtualServer.get_MinimumMemoryPerVM': 4,
      'VirtualServer.get_MaximumNumberOfProcessorsPerVM': 1,
      'VirtualServer.get_MaximumNetworkAdaptersPerVM': 4,
      'VirtualServer.get_MaximumNumberOfIDEBuses': 2,
      'VirtualServer.get_MaximumNumberOfSCSIControllers': 4,
      'VirtualServer.get_MaximumSerialPortsPerVM': 2,
      'VirtualServer.get_MaximumParallelPortsPerVM': 1,
      'VirtualServer.get_MaximumFloppyDrivesPerVM': 1,
    };
    for (const [method, value] of Object.entries(expected)) assert.equal(await call(method), value, method);
  });

  test('get_StorageRoots is the data folder (the only root here), as a real path', async () => {
    assert.deepEqual(await call('VirtualServer.get_StorageRoots'), [root]);
  });

  test('get_Security is the server\'s own Security object', async () => {
    assert.deepEqual(await call('VirtualServer.get_Security'), { $ref: 'Security/VirtualServer' });
  });
});

describe('VirtualServer: the catalog of VMs and their .vmc files', () => {
  let vm: string;
  let vmc: string;

  test('CreateVirtualMachine makes a turned-off VM (1 processor, 128 MB, no devices) and writes NAME/NAME.vmc under the first root: JSON equal to get_Configuration', async () => {
    vm = await createVm('catalog-a');
    assert.match(vm, /^VirtualMachine\/[0-9a-f-]{36}$/);
    vmc = await call<string>('VirtualMachine.get_File', { this: vm });
    assert.equal(vmc, path.join(root, 'catalog-a', 'catalog-a.vmc'));
    assert.ok(fs.statSync(vmc).isFile(), 'the .vmc exists on disk');
    const config = await configOf(vm);
    assert.deepEqual(vmcOf(vmc), config, 'the .vmc is the configuration document');
    assert.equal(config.id, idOf(vm));
    assert.equal(config.processors, 1);
    assert.equal(config.memoryMB, 128);
    assert.deepEqual([config.ide, config.scsi, config.networkAdapters, config.usb], [[], [], [], []]);
    assert.equal(path.dirname(config.savedState), path.dirname(vmc), 'the saved state goes beside the .vmc');
    assert.equal(await call('VirtualMachine.get_State', { this: vm }), 'TurnedOff');
  });

  test('CreateVirtualMachine with a path puts the VM\'s folder there', async () => {
    const placed = (await call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'placed', path: 'elsewhere/placed-vm' })).$ref;
    assert.equal(await call('VirtualMachine.get_File', { this: placed }), path.join(root, 'elsewhere', 'placed-vm', 'placed.vmc'));
    assert.ok(fs.existsSync(path.join(root, 'elsewhere', 'placed-vm', 'placed.vmc')));
  });

  test('a second VM of the same name, in any letter case, is VM_E_NAME_IN_USE and nothing is created; put_Name to a taken name too', async () => {
    const before = await call<Ref[]>('VirtualServer.get_VirtualMachines');
    await refused('VirtualServer.CreateVirtualMachine', { name: 'catalog-a' }, 'VM_E_NAME_IN_USE', ['catalog-a']);
    await refused('VirtualServer.CreateVirtualMachine', { name: 'CATALOG-A', path: 'other-folder' }, 'VM_E_NAME_IN_USE', ['catalog-a']);
    assert.deepEqual(await call('VirtualServer.get_VirtualMachines'), before);
    assert.equal(fs.existsSync(path.join(root, 'other-folder')), false);
    await unchanged(fixtureVm, () => refused('VirtualMachine.put_Name', { this: fixtureVm, value: 'Catalog-A' }, 'VM_E_NAME_IN_USE'));
  });

  test('get_VirtualMachines lists every VM; FindVirtualMachine finds one by name and answers null for an unknown name', async () => {
    const all = (await call<Ref[]>('VirtualServer.get_VirtualMachines')).map((r) => r.$ref);
    assert.ok(all.includes(vm) && all.includes(fixtureVm), JSON.stringify(all));
    assert.deepEqual(await call('VirtualServer.FindVirtualMachine', { name: 'catalog-a' }), { $ref: vm });
    assert.equal(await call('VirtualServer.FindVirtualMachine', { name: 'no-such-vm' }), null);
  });

  test('UnregisterVirtualMachine keeps the .vmc; the VM is then unknown; RegisterVirtualMachine of the .vmc brings back the same id and configuration', async () => {
    const config = await configOf(vm);
    assert.equal(await call('VirtualServer.UnregisterVirtualMachine', { vm }), null);
    assert.ok(fs.existsSync(vmc), 'the .vmc is kept');
    assert.equal(await call('VirtualServer.FindVirtualMachine', { name: 'catalog-a' }), null);
    assert.ok(!(await call<Ref[]>('VirtualServer.get_VirtualMachines')).some((r) => r.$ref === vm));
    await refused('VirtualMachine.get_Name', { this: vm }, 'VM_E_VM_UNKNOWN');
    // The folder still holds its .vmc: a new VM of that name there would overwrite it.
    await refused('VirtualServer.CreateVirtualMachine', { name: 'catalog-a' }, 'VM_E_FILE_EXISTS', [vmc]);
    assert.deepEqual(await call('VirtualServer.RegisterVirtualMachine', { path: 'catalog-a/catalog-a.vmc' }), { $ref: vm });
    assert.deepEqual(await configOf(vm), config);
    await refused('VirtualServer.RegisterVirtualMachine', { path: vmc }, 'VM_E_VM_REGISTERED', ['catalog-a']);
  });

  test('RegisterVirtualMachine refuses a file that is not a configuration (VM_E_CONFIG_INVALID) and a missing one (VM_E_FILE_NOT_FOUND)', async () => {
    fs.writeFileSync(path.join(root, 'not-a-vm.vmc'), 'this is not JSON\n');
    await refused('VirtualServer.RegisterVirtualMachine', { path: 'not-a-vm.vmc' }, 'VM_E_CONFIG_INVALID', ['not-a-vm.vmc']);
    fs.writeFileSync(path.join(root, 'bad-memory.vmc'), JSON.stringify({ name: 'bad-memory', memoryMB: 9999 }));
    const error = await refused('VirtualServer.RegisterVirtualMachine', { path: 'bad-memory.vmc' }, 'VM_E_CONFIG_INVALID', ['3686']);
    assert.deepEqual((error.data.problems as Array<{ field: string }>).map((p) => p.field), ['memoryMB']);
    await refused('VirtualServer.RegisterVirtualMachine', { path: 'missing.vmc' }, 'VM_E_FILE_NOT_FOUND', ['missing.vmc']);
    assert.equal(await call('VirtualServer.FindVirtualMachine', { name: 'bad-memory' }), null);
  });

  test('DeleteVirtualMachine removes the VM and its .vmc but keeps its disks (and the folder holding them); an emptied folder goes', async () => {
    const disk = await createDisk('catalog-a/data.vhd');
    await call('VirtualMachine.AddHardDiskConnection', { this: vm, path: disk, busType: 'IDE', busNumber: 0, deviceNumber: 0 });
    assert.equal(await call('VirtualServer.DeleteVirtualMachine', { vm }), null);
    assert.equal(fs.existsSync(vmc), false, 'the .vmc is deleted');
    assert.ok(fs.existsSync(disk), 'the disk is kept');
    await refused('VirtualMachine.get_Name', { this: vm }, 'VM_E_VM_UNKNOWN');
    await refused('VirtualServer.DeleteVirtualMachine', { vm }, 'VM_E_VM_UNKNOWN');
    assert.equal(await call('VirtualServer.FindVirtualMachine', { name: 'catalog-a' }), null);

    const placed = await call<Ref>('VirtualServer.FindVirtualMachine', { name: 'placed' });
    await call('VirtualServer.DeleteVirtualMachine', { vm: placed.$ref });
    assert.equal(fs.existsSync(path.join(root, 'elsewhere', 'placed-vm')), false, 'a folder left empty is removed');
  });
});

describe('VirtualMachine: settings', () => {
  let vm: string;
  before(async () => { vm = await createVm('settings'); });

  test('a new VM is TurnedOff, has no engine yet (get_Engine null), no uptime, no last crash', async () => {
    assert.equal(await call('VirtualMachine.get_Name', { this: vm }), 'settings');
    assert.equal(await call('VirtualMachine.get_State', { this: vm }), 'TurnedOff');
    assert.equal(await call('VirtualMachine.get_Engine', { this: vm }), null);
    assert.equal(await call('VirtualMachine.get_Uptime', { this: vm }), null);
    assert.equal(await call('VirtualMachine.get_LastCrash', { this: vm }), null);
  });

  test('get_File and get_SavedStateFilePath are NAME.vmc and NAME.vsv in its folder; get_Configuration is what the .vmc holds', async () => {
    const file = await call<string>('VirtualMachine.get_File', { this: vm });
    assert.equal(file, path.join(root, 'settings', 'settings.vmc'));
    assert.equal(await call('VirtualMachine.get_SavedStateFilePath', { this: vm }), path.join(root, 'settings', 'settings.vsv'));
    const config = await call<VmConfiguration>('VirtualMachine.get_Configuration', { this: vm });
    assert.deepEqual(vmcOf(file), config);
    assert.equal(config.version, 1);
  });

  test('put_Memory sets the memory, in the .vmc too; 4 and 3686 MB, the limits, are accepted', async () => {
    for (const value of [512, 4, 3686]) {
      assert.equal(await call('VirtualMachine.put_Memory', { this: vm, value }), null);
      assert.equal(await call('VirtualMachine.get_Memory', { this: vm }), value);
      assert.equal(vmcOf(await call<string>('VirtualMachine.get_File', { this: vm })).memoryMB, value);
    }
  });

  test('put_Notes, put_AutoStartAtLaunch, put_AutoStartAtLaunchDelay and put_ShutdownActionOnQuit change vserverd\'s settings, not the .vmc', async () => {
    assert.equal(await call('VirtualMachine.get_Notes', { this: vm }), '');
    assert.equal(await call('VirtualMachine.get_AutoStartAtLaunch', { this: vm }), 'IfRunningAtQuit');
    assert.equal(await call('VirtualMachine.get_AutoStartAtLaunchDelay', { this: vm }), 0);
    assert.equal(await call('VirtualMachine.get_ShutdownActionOnQuit', { this: vm }), 'Save');
    const file = await call<string>('VirtualMachine.get_File', { this: vm });
    const before = fs.readFileSync(file, 'utf8');
    await call('VirtualMachine.put_Notes', { this: vm, value: 'IIS front end' });
    await call('VirtualMachine.put_AutoStartAtLaunch', { this: vm, value: 'Never' });
    await call('VirtualMachine.put_AutoStartAtLaunchDelay', { this: vm, value: 3600 });
    await call('VirtualMachine.put_ShutdownActionOnQuit', { this: vm, value: 'TurnOff' });
    assert.equal(await call('VirtualMachine.get_Notes', { this: vm }), 'IIS front end');
    assert.equal(await call('VirtualMachine.get_AutoStartAtLaunch', { this: vm }), 'Never');
    assert.equal(await call('VirtualMachine.get_AutoStartAtLaunchDelay', { this: vm }), 3600);
    assert.equal(await call('VirtualMachine.get_ShutdownActionOnQuit', { this: vm }), 'TurnOff');
    assert.equal(fs.readFileSync(file, 'utf8'), before, 'the .vmc holds the machine, not these settings');
  });

  test('put_Name renames the VM: FindVirtualMachine follows, the .vmc keeps its file name and holds the new name', async () => {
    const file = await call<string>('VirtualMachine.get_File', { this: vm });
    assert.equal(await call('VirtualMachine.put_Name', { this: vm, value: 'settings-renamed' }), null);
    assert.equal(await call('VirtualMachine.get_Name', { this: vm }), 'settings-renamed');
    assert.deepEqual(await call('VirtualServer.FindVirtualMachine', { name: 'settings-renamed' }), { $ref: vm });
    assert.equal(await call('VirtualServer.FindVirtualMachine', { name: 'settings' }), null);
    assert.equal(await call('VirtualMachine.get_File', { this: vm }), file);
    assert.equal(vmcOf(file).name, 'settings-renamed');
  });

  test('get_GuestOS, get_Display and get_Security are the VM\'s GuestOS, Display and Security objects', async () => {
    const id = idOf(vm);
    assert.deepEqual(await call('VirtualMachine.get_GuestOS', { this: vm }), { $ref: `GuestOS/${id}` });
    assert.deepEqual(await call('VirtualMachine.get_Display', { this: vm }), { $ref: `Display/${id}` });
    assert.deepEqual(await call('VirtualMachine.get_Security', { this: vm }), { $ref: `Security/${vm}` });
  });
});

describe('VirtualMachine: devices and their objects', () => {
  let vm: string;
  let id: string;
  before(async () => {
    vm = await createVm('devices');
    id = idOf(vm);
  });

  test('AddSCSIController adds lsi53c895a by default or the model asked; SCSIController.get_ID and get_Model; RemoveSCSIController moves later adapters up', async () => {
    assert.deepEqual(await call('VirtualMachine.get_SCSIControllers', { this: vm }), []);
    assert.deepEqual(await call('VirtualMachine.AddSCSIController', { this: vm }), { $ref: `SCSIController/${id}/0` });
    assert.deepEqual(await call('VirtualMachine.AddSCSIController', { this: vm, model: 'virtio-scsi' }), { $ref: `SCSIController/${id}/1` });
    assert.deepEqual(await call('VirtualMachine.get_SCSIControllers', { this: vm }), [{ $ref: `SCSIController/${id}/0` }, { $ref: `SCSIController/${id}/1` }]);
    assert.equal(await call('SCSIController.get_ID', { this: `SCSIController/${id}/1` }), 1);
    assert.equal(await call('SCSIController.get_Model', { this: `SCSIController/${id}/0` }), 'lsi53c895a');
    assert.equal(await call('SCSIController.get_Model', { this: `SCSIController/${id}/1` }), 'virtio-scsi');
    assert.equal(await call('VirtualMachine.RemoveSCSIController', { this: vm, controller: `SCSIController/${id}/0` }), null);
    assert.equal(await call('SCSIController.get_Model', { this: `SCSIController/${id}/0` }), 'virtio-scsi', 'the second adapter is now the first');
    await refused('SCSIController.get_ID', { this: `SCSIController/${id}/1` }, 'VM_E_OBJECT_UNKNOWN');
    assert.deepEqual((await configOf(vm)).scsi, [{ model: 'virtio-scsi', disks: [] }]);
  });

  test('AddHardDiskConnection attaches a VHD at SCSI and IDE positions; HardDiskConnection members say where; RemoveHardDiskConnection detaches and keeps the file', async () => {
    const scsiDisk = await createDisk('devices-disks/scsi.vhd');
    const ideDisk = await createDisk('devices-disks/ide.vhd');
    assert.deepEqual(await call('VirtualMachine.AddHardDiskConnection', { this: vm, path: 'devices-disks/scsi.vhd', busType: 'SCSI', busNumber: 0, deviceNumber: 3 }), { $ref: `HardDiskConnection/${id}/scsi0-3` });
    assert.deepEqual(await call('VirtualMachine.AddHardDiskConnection', { this: vm, path: ideDisk, busType: 'IDE', busNumber: 0, deviceNumber: 1 }), { $ref: `HardDiskConnection/${id}/ide0-1` });
    assert.deepEqual(await call('VirtualMachine.get_HardDiskConnections', { this: vm }), [{ $ref: `HardDiskConnection/${id}/ide0-1` }, { $ref: `HardDiskConnection/${id}/scsi0-3` }], 'IDE first');
    const scsi = `HardDiskConnection/${id}/scsi0-3`;
    assert.deepEqual(await call('HardDiskConnection.get_HardDisk', { this: scsi }), { $ref: `HardDisk/${scsiDisk}` });
    assert.equal(await call('HardDiskConnection.get_BusType', { this: scsi }), 'SCSI');
    assert.equal(await call('HardDiskConnection.get_BusNumber', { this: scsi }), 0);
    assert.equal(await call('HardDiskConnection.get_DeviceNumber', { this: scsi }), 3);
    const ide = `HardDiskConnection/${id}/ide0-1`;
    assert.equal(await call('HardDiskConnection.get_BusType', { this: ide }), 'IDE');
    assert.equal(await call('HardDiskConnection.get_DeviceNumber', { this: ide }), 1);
    const config = await configOf(vm);
    assert.deepEqual(config.scsi[0].disks, [{ target: 3, path: scsiDisk }], 'the path is stored absolute');
    assert.deepEqual(config.ide, [{ channel: 0, device: 1, type: 'HardDisk', path: ideDisk }]);
    assert.deepEqual(vmcOf(await call<string>('VirtualMachine.get_File', { this: vm })).ide, config.ide);

    assert.equal(await call('VirtualMachine.RemoveHardDiskConnection', { this: vm, connection: ide }), null);
    assert.deepEqual(await call('VirtualMachine.get_HardDiskConnections', { this: vm }), [{ $ref: scsi }]);
    assert.ok(fs.existsSync(ideDisk), 'the file is kept');
    await refused('HardDiskConnection.get_BusType', { this: ide }, 'VM_E_OBJECT_UNKNOWN');
  });

  test('AddDVDROMDrive adds an empty drive; AttachImage puts an ISO in and ReleaseImage takes it out; RemoveDVDROMDrive removes the drive', async () => {
    const iso = path.join(root, 'isos', 'tiny.iso');
    fs.mkdirSync(path.dirname(iso), { recursive: true });
    fs.writeFileSync(iso, Buffer.alloc(64 * 1024));
    const drive = `DVDROMDrive/${id}/ide1-0`;
    assert.deepEqual(await call('VirtualMachine.AddDVDROMDrive', { this: vm, busNumber: 1, deviceNumber: 0 }), { $ref: drive });
    assert.deepEqual(await call('VirtualMachine.get_DVDROMDrives', { this: vm }), [{ $ref: drive }]);
    assert.equal(await call('DVDROMDrive.get_BusNumber', { this: drive }), 1);
    assert.equal(await call('DVDROMDrive.get_DeviceNumber', { this: drive }), 0);
    assert.equal(await call('DVDROMDrive.get_ImageFile', { this: drive }), null);
    assert.equal(await call('DVDROMDrive.AttachImage', { this: drive, path: 'isos/tiny.iso' }), null);
    assert.equal(await call('DVDROMDrive.get_ImageFile', { this: drive }), iso);
    assert.ok((await configOf(vm)).ide.some((d) => d.type === 'DVD' && d.image === iso), 'the image is in the configuration');
    await unchanged(vm, () => refused('DVDROMDrive.AttachImage', { this: drive, path: 'isos/missing.iso' }, 'VM_E_FILE_NOT_FOUND', ['isos/missing.iso']));
    assert.equal(await call('DVDROMDrive.ReleaseImage', { this: drive }), null);
    assert.equal(await call('DVDROMDrive.get_ImageFile', { this: drive }), null);
    assert.equal(await call('VirtualMachine.RemoveDVDROMDrive', { this: vm, drive }), null);
    assert.deepEqual(await call('VirtualMachine.get_DVDROMDrives', { this: vm }), []);
  });

  test('AddNetworkAdapter adds a tulip with a new MAC under 00:03:FF, or the model and MAC given (normalized); NetworkAdapter members; RemoveNetworkAdapter moves later adapters up', async () => {
    assert.deepEqual(await call('VirtualMachine.AddNetworkAdapter', { this: vm }), { $ref: `NetworkAdapter/${id}/0` });
    assert.deepEqual(await call('VirtualMachine.AddNetworkAdapter', { this: vm, model: 'e1000', ethernetAddress: '00-03-ff-aa-bb-cc' }), { $ref: `NetworkAdapter/${id}/1` });
    assert.deepEqual(await call('VirtualMachine.get_NetworkAdapters', { this: vm }), [{ $ref: `NetworkAdapter/${id}/0` }, { $ref: `NetworkAdapter/${id}/1` }]);
    const first = `NetworkAdapter/${id}/0`;
    assert.match(await call<string>('NetworkAdapter.get_EthernetAddress', { this: first }), /^00:03:FF(?::[0-9A-F]{2}){3}$/);
    assert.equal(await call('NetworkAdapter.get_Model', { this: first }), 'tulip');
    assert.equal(await call('NetworkAdapter.get_VirtualNetwork', { this: first }), null);
    assert.equal(await call('NetworkAdapter.get_EthernetAddress', { this: `NetworkAdapter/${id}/1` }), '00:03:FF:AA:BB:CC');
    assert.equal(await call('VirtualMachine.RemoveNetworkAdapter', { this: vm, adapter: first }), null);
    assert.equal(await call('NetworkAdapter.get_Model', { this: first }), 'e1000', 'the second adapter is now the first');
    assert.equal(await call('NetworkAdapter.get_EthernetAddress', { this: first }), '00:03:FF:AA:BB:CC');
    assert.equal((await configOf(vm)).networkAdapters.length, 1);
  });

  test('AddUSBDevice and RemoveUSBDevice change get_USBDevices; removing a device the VM has not is VM_E_OBJECT_UNKNOWN', async () => {
    assert.deepEqual(await call('VirtualMachine.get_USBDevices', { this: vm }), []);
    assert.equal(await call('VirtualMachine.AddUSBDevice', { this: vm, type: 'Tablet' }), null);
    assert.equal(await call('VirtualMachine.AddUSBDevice', { this: vm, type: 'SmartCardReader' }), null);
    assert.deepEqual(await call('VirtualMachine.get_USBDevices', { this: vm }), ['Tablet', 'SmartCardReader']);
    assert.equal(await call('VirtualMachine.RemoveUSBDevice', { this: vm, type: 'Tablet' }), null);
    assert.deepEqual(await call('VirtualMachine.get_USBDevices', { this: vm }), ['SmartCardReader']);
    assert.deepEqual((await configOf(vm)).usb, ['SmartCardReader']);
    await unchanged(vm, () => refused('VirtualMachine.RemoveUSBDevice', { this: vm, type: 'Mouse' }, 'VM_E_OBJECT_UNKNOWN', ['Mouse']));
  });

  test('a part of another VM is refused by Remove* with VM_E_INVALID_PARAMS naming it, and neither VM changes', async () => {
    await unchanged(vm, () => unchanged(fixtureVm, async () => {
      await refused('VirtualMachine.RemoveHardDiskConnection', { this: vm, connection: fixture.HardDiskConnection }, 'VM_E_INVALID_PARAMS', [fixture.HardDiskConnection]);
      await refused('VirtualMachine.RemoveDVDROMDrive', { this: vm, drive: fixture.DVDROMDrive }, 'VM_E_INVALID_PARAMS', [fixture.DVDROMDrive]);
      await refused('VirtualMachine.RemoveSCSIController', { this: vm, controller: fixture.SCSIController }, 'VM_E_INVALID_PARAMS', [fixture.SCSIController]);
      await refused('VirtualMachine.RemoveNetworkAdapter', { this: vm, adapter: fixture.NetworkAdapter }, 'VM_E_INVALID_PARAMS', [fixture.NetworkAdapter]);
    }));
  });

  test('a reference to a part the VM does not have is VM_E_OBJECT_UNKNOWN', async () => {
    await refused('HardDiskConnection.get_BusType', { this: `HardDiskConnection/${fixtureId}/scsi3-6` }, 'VM_E_OBJECT_UNKNOWN');
    await refused('HardDiskConnection.get_BusType', { this: `HardDiskConnection/${fixtureId}/floppy` }, 'VM_E_OBJECT_UNKNOWN');
    await refused('DVDROMDrive.get_ImageFile', { this: `DVDROMDrive/${fixtureId}/ide0-0` }, 'VM_E_OBJECT_UNKNOWN');
    await refused('SCSIController.get_Model', { this: `SCSIController/${fixtureId}/3` }, 'VM_E_OBJECT_UNKNOWN');
    await refused('SCSIController.get_Model', { this: `SCSIController/${fixtureId}/first` }, 'VM_E_OBJECT_UNKNOWN');
    await refused('NetworkAdapter.get_Model', { this: `NetworkAdapter/${fixtureId}/9` }, 'VM_E_OBJECT_UNKNOWN');
  });
});

describe('VirtualMachine: COM2, LPT1 and the floppy drive', () => {
  let vm: string;
  let folder: string;
  before(async () => {
    vm = await createVm('ports');
    folder = path.dirname(await call<string>('VirtualMachine.get_File', { this: vm }));
  });

  test('ConfigureSerialPort2 and ConfigureParallelPort1 connect COM2 and LPT1 to text files inside the roots (get_SerialPort2, get_ParallelPort1, the .vmc); without a path they are disconnected', async () => {
    assert.equal(await call('VirtualMachine.get_SerialPort2', { this: vm }), null);
    assert.equal(await call('VirtualMachine.get_ParallelPort1', { this: vm }), null);
    assert.equal(await call('VirtualMachine.ConfigureSerialPort2', { this: vm, path: 'ports/com2.txt' }), null);
    assert.equal(await call('VirtualMachine.ConfigureParallelPort1', { this: vm, path: path.join(folder, 'lpt1.txt') }), null);
    assert.equal(await call('VirtualMachine.get_SerialPort2', { this: vm }), path.join(root, 'ports', 'com2.txt'), 'a relative path starts at the first root');
    assert.equal(await call('VirtualMachine.get_ParallelPort1', { this: vm }), path.join(folder, 'lpt1.txt'));
    const config = await configOf(vm);
    assert.deepEqual([config.com2, config.lpt1], [{ file: path.join(root, 'ports', 'com2.txt') }, { file: path.join(folder, 'lpt1.txt') }]);
    assert.deepEqual(vmcOf(await call<string>('VirtualMachine.get_File', { this: vm })).com2, config.com2, 'the .vmc holds it');
    assert.equal(fs.existsSync(path.join(root, 'ports', 'com2.txt')), false, 'the file is made by the VM when it runs, not now');

    assert.equal(await call('VirtualMachine.ConfigureSerialPort2', { this: vm }), null);
    assert.equal(await call('VirtualMachine.get_SerialPort2', { this: vm }), null);
    assert.equal((await configOf(vm)).com2, null);
    assert.equal(await call('VirtualMachine.get_ParallelPort1', { this: vm }), path.join(folder, 'lpt1.txt'), 'LPT1 is its own setting');
    await call('VirtualMachine.ConfigureParallelPort1', { this: vm });
    assert.equal((await configOf(vm)).lpt1, null);
  });

  test('a port file in a missing folder is VM_E_FILE_NOT_FOUND; a folder, or a file of a VM\'s own kind (.vhd, .vmc, ...), is VM_E_INVALID_PATH; nothing changes', async () => {
    await call('VirtualMachine.ConfigureSerialPort2', { this: vm, path: 'ports/kept.txt' });
    await unchanged(vm, async () => {
      await refused('VirtualMachine.ConfigureSerialPort2', { this: vm, path: 'no-such-folder/com2.txt' }, 'VM_E_FILE_NOT_FOUND', ['no-such-folder', 'COM2']);
      await refused('VirtualMachine.ConfigureParallelPort1', { this: vm, path: 'ports' }, 'VM_E_INVALID_PATH', ['not a file', 'LPT1']);
      await refused('VirtualMachine.ConfigureSerialPort2', { this: vm, path: fixtureDisk }, 'VM_E_INVALID_PATH', [fixtureDisk, '.vhd']);
      await refused('VirtualMachine.ConfigureParallelPort1', { this: vm, path: 'ports/ports.VMC' }, 'VM_E_INVALID_PATH', ['.vmc']);
    });
    assert.equal(fs.statSync(fixtureDisk).size > 0, true, 'the disk named is untouched');
  });

  test('AddFloppyDrive adds an empty drive (get_FloppyDrive); AttachFloppyImage puts a .vfd in, ReleaseFloppyImage takes it out; RemoveFloppyDrive removes the drive and keeps the file', async () => {
    const vfd = path.join(root, 'floppies', 'tools.vfd');
    fs.mkdirSync(path.dirname(vfd), { recursive: true });
    fs.writeFileSync(vfd, Buffer.alloc(1474560));
    assert.equal(await call('VirtualMachine.get_FloppyDrive', { this: vm }), null);
    assert.equal(await call('VirtualMachine.AddFloppyDrive', { this: vm }), null);
    assert.deepEqual(await call('VirtualMachine.get_FloppyDrive', { this: vm }), { image: null });
    assert.equal(await call('VirtualMachine.AttachFloppyImage', { this: vm, path: 'floppies/tools.vfd' }), null);
    assert.deepEqual(await call('VirtualMachine.get_FloppyDrive', { this: vm }), { image: vfd });
    assert.deepEqual((await configOf(vm)).floppy, { image: vfd });
    assert.deepEqual(vmcOf(await call<string>('VirtualMachine.get_File', { this: vm })).floppy, { image: vfd });
    assert.equal(await call('VirtualMachine.ReleaseFloppyImage', { this: vm }), null);
    assert.deepEqual((await configOf(vm)).floppy, { image: null });
    await call('VirtualMachine.AttachFloppyImage', { this: vm, path: vfd });
    assert.equal(await call('VirtualMachine.RemoveFloppyDrive', { this: vm }), null);
    assert.equal(await call('VirtualMachine.get_FloppyDrive', { this: vm }), null);
    assert.equal((await configOf(vm)).floppy, null);
    assert.ok(fs.existsSync(vfd), 'the image file is kept');
  });

  test('a second floppy drive is VM_E_DRIVE_IN_USE naming the limit 1; without a drive, an image or its removal is VM_E_DRIVE_INVALID pointing at AddFloppyDrive; a missing image or a folder is refused; nothing changes', async () => {
    await unchanged(vm, async () => {
      await refused('VirtualMachine.AttachFloppyImage', { this: vm, path: 'floppies/tools.vfd' }, 'VM_E_DRIVE_INVALID', ['AddFloppyDrive']);
      await refused('VirtualMachine.ReleaseFloppyImage', { this: vm }, 'VM_E_DRIVE_INVALID', ['no floppy drive']);
      await refused('VirtualMachine.RemoveFloppyDrive', { this: vm }, 'VM_E_DRIVE_INVALID', ['no floppy drive']);
    });
    await call('VirtualMachine.AddFloppyDrive', { this: vm });
    await unchanged(vm, async () => {
      await refused('VirtualMachine.AddFloppyDrive', { this: vm }, 'VM_E_DRIVE_IN_USE', ['at most 1']);
      await refused('VirtualMachine.AttachFloppyImage', { this: vm, path: 'floppies/missing.vfd' }, 'VM_E_FILE_NOT_FOUND', ['floppies/missing.vfd']);
      await refused('VirtualMachine.AttachFloppyImage', { this: vm, path: 'floppies' }, 'VM_E_INVALID_PATH', ['not a file']);
    });
  });
});

describe('VirtualMachine: the profile\'s limits, refused whole', () => {
  let vm: string;
  let id: string;
  before(async () => {
    vm = await createVm('limits');
    id = idOf(vm);
  });

  test('put_Memory 3687 is VM_E_INVALID_PARAMS naming 3686, with data.param "value"; put_Memory 3 names 4', async () => {
    await unchanged(vm, async () => {
      const over = await refused('VirtualMachine.put_Memory', { this: vm, value: 3687 }, 'VM_E_INVALID_PARAMS', ['3686']);
      assert.equal(over.data.param, 'value');
      const under = await refused('VirtualMachine.put_Memory', { this: vm, value: 3 }, 'VM_E_INVALID_PARAMS', [/\b4\b/]);
      assert.equal(under.data.param, 'value');
    });
  });

  test('a 5th network adapter is VM_E_CONFIG_INVALID naming the limit 4', async () => {
    for (let i = 0; i < 4; i++) await call('VirtualMachine.AddNetworkAdapter', { this: vm });
    await unchanged(vm, () => refused('VirtualMachine.AddNetworkAdapter', { this: vm }, 'VM_E_CONFIG_INVALID', ['at most 4 network adapters']));
  });

  test('a MAC address outside 00:03:FF is VM_E_MAC_INVALID; one the VM already uses is VM_E_MAC_IN_USE', async () => {
    const other = await createVm('limits-mac');
    await call('VirtualMachine.AddNetworkAdapter', { this: other, ethernetAddress: '00:03:FF:01:02:03' });
    await unchanged(other, async () => {
      await refused('VirtualMachine.AddNetworkAdapter', { this: other, ethernetAddress: '52:54:00:12:34:56' }, 'VM_E_MAC_INVALID', ['00:03:FF']);
      await refused('VirtualMachine.AddNetworkAdapter', { this: other, ethernetAddress: '00:03:ff:01:02:03' }, 'VM_E_MAC_IN_USE', ['00:03:FF:01:02:03', 'another adapter of this VM']);
    });
  });

  test('a 5th SCSI adapter is VM_E_CONFIG_INVALID naming the limit 4', async () => {
    for (let i = 0; i < 4; i++) await call('VirtualMachine.AddSCSIController', { this: vm });
    await unchanged(vm, () => refused('VirtualMachine.AddSCSIController', { this: vm }, 'VM_E_CONFIG_INVALID', ['at most 4 SCSI adapters']));
  });

  test('an 8th disk on one SCSI adapter (target 7) is VM_E_DRIVE_INVALID naming 7 disks, targets 0-6', async () => {
    for (let target = 0; target < 7; target++) {
      const disk = await createDisk(`limits-disks/d${target}.vhd`);
      await call('VirtualMachine.AddHardDiskConnection', { this: vm, path: disk, busType: 'SCSI', busNumber: 1, deviceNumber: target });
    }
    assert.equal((await configOf(vm)).scsi[1].disks.length, 7);
    const eighth = await createDisk('limits-disks/d7.vhd');
    await unchanged(vm, () => refused('VirtualMachine.AddHardDiskConnection', { this: vm, path: eighth, busType: 'SCSI', busNumber: 1, deviceNumber: 7 }, 'VM_E_DRIVE_INVALID', ['7 disks', '0-6']));
  });

  test('a position already taken is VM_E_DRIVE_IN_USE naming what holds it; RemoveSCSIController of an adapter with disks too', async () => {
    const disk = await createDisk('limits-disks/taken.vhd');
    await unchanged(vm, async () => {
      await refused('VirtualMachine.AddHardDiskConnection', { this: vm, path: disk, busType: 'SCSI', busNumber: 1, deviceNumber: 2 }, 'VM_E_DRIVE_IN_USE', [path.join(root, 'limits-disks/d2.vhd')]);
      await refused('VirtualMachine.RemoveSCSIController', { this: vm, controller: `SCSIController/${id}/1` }, 'VM_E_DRIVE_IN_USE', ['7 disks']);
    });
    await call('VirtualMachine.AddDVDROMDrive', { this: vm, busNumber: 1, deviceNumber: 1 });
    await unchanged(vm, async () => {
      await refused('VirtualMachine.AddHardDiskConnection', { this: vm, path: disk, busType: 'IDE', busNumber: 1, deviceNumber: 1 }, 'VM_E_DRIVE_IN_USE', ['CD/DVD']);
      await refused('VirtualMachine.AddDVDROMDrive', { this: vm, busNumber: 1, deviceNumber: 1 }, 'VM_E_DRIVE_IN_USE');
    });
  });

  test('a disk attached twice to one VM is VM_E_CONFIG_INVALID', async () => {
    await unchanged(vm, () => refused('VirtualMachine.AddHardDiskConnection', { this: vm, path: 'limits-disks/d0.vhd', busType: 'IDE', busNumber: 0, deviceNumber: 0 }, 'VM_E_CONFIG_INVALID', ['more than once']));
  });

  test('an IDE position beyond 2 channels of 2 devices is VM_E_DRIVE_INVALID; a SCSI disk on a VM without that adapter too, pointing at AddSCSIController', async () => {
    const disk = await createDisk('limits-disks/nowhere.vhd');
    const bare = await createVm('limits-bare');
    await unchanged(vm, async () => {
      await refused('VirtualMachine.AddHardDiskConnection', { this: vm, path: disk, busType: 'IDE', busNumber: 2, deviceNumber: 0 }, 'VM_E_DRIVE_INVALID', ['2 channels']);
      await refused('VirtualMachine.AddDVDROMDrive', { this: vm, busNumber: 0, deviceNumber: 2 }, 'VM_E_DRIVE_INVALID', ['2 devices']);
    });
    await unchanged(bare, () => refused('VirtualMachine.AddHardDiskConnection', { this: bare, path: disk, busType: 'SCSI', busNumber: 0, deviceNumber: 0 }, 'VM_E_DRIVE_INVALID', ['AddSCSIController']));
  });

  test('a drive refused for its position carries data.problems naming the field and the error, as parseVmConfig found it', async () => {
    const disk = await createDisk('limits-disks/placed.vhd');
    await unchanged(vm, async () => {
      const beyond = await refused('VirtualMachine.AddDVDROMDrive', { this: vm, busNumber: 0, deviceNumber: 2 }, 'VM_E_DRIVE_INVALID');
      const ide = (await configOf(vm)).ide.length;
      assert.deepEqual((beyond.data.problems as Array<{ field: string; error: string }>).map((p) => [p.field, p.error]), [[`ide[${ide}]`, 'VM_E_DRIVE_INVALID']]);
      const taken = await refused('VirtualMachine.AddHardDiskConnection', { this: vm, path: disk, busType: 'SCSI', busNumber: 1, deviceNumber: 4 }, 'VM_E_DRIVE_IN_USE');
      assert.deepEqual((taken.data.problems as Array<{ field: string; error: string }>).map((p) => [p.field, p.error]),
        [['scsi[1].disks[7]', 'VM_E_DRIVE_IN_USE'], ['scsi[1].disks', 'VM_E_DRIVE_INVALID']]);
    });
  });

  test('AddUSBDevice "Printer" is refused naming the devices the profile allows; a device added twice is refused', async () => {
    await unchanged(vm, () => refused('VirtualMachine.AddUSBDevice', { this: vm, type: 'Printer' }, 'VM_E_CONFIG_INVALID', ['Printer', 'Keyboard, Mouse, Tablet, SmartCardReader']));
    await call('VirtualMachine.AddUSBDevice', { this: vm, type: 'Keyboard' });
    await unchanged(vm, () => refused('VirtualMachine.AddUSBDevice', { this: vm, type: 'Keyboard' }, 'VM_E_CONFIG_INVALID', ['once']));
  });

  test('AddHardDiskConnection of a disk that does not exist is VM_E_HD_IMAGE_NOT_FOUND naming the file', async () => {
    await unchanged(vm, () => refused('VirtualMachine.AddHardDiskConnection', { this: vm, path: 'limits-disks/missing.vhd', busType: 'IDE', busNumber: 0, deviceNumber: 0 }, 'VM_E_HD_IMAGE_NOT_FOUND', ['missing.vhd']));
  });

  test('messages about a path say once what it is for ("the hard disk image …", never "the the")', async () => {
    const errors = [
      await refusal('VirtualMachine.AddHardDiskConnection', { this: vm, path: 'limits-disks/missing.vhd', busType: 'IDE', busNumber: 0, deviceNumber: 0 }),
      await refusal('VirtualServer.GetHardDisk', { path: 'limits-disks/missing.vhd' }),
      await refusal('HardDisk.get_Type', { this: 'HardDisk//etc/passwd' }),
      await refusal('VirtualServer.RegisterVirtualMachine', { path: 'missing.vmc' }),
      await refusal('VirtualServer.CreateDifferencingVirtualHardDisk', { path: 'x.vhd', parentPath: 'missing.vhd' }),
      await refusal('VirtualServer.CreateDynamicVirtualHardDisk', { path: '/etc/x.vhd' }),
    ];
    assert.deepEqual(errors.map((e) => e.message).filter((m) => /\bthe the\b/i.test(m)), []);
  });
});

describe('VirtualMachine: power, on a turned-off VM and on a diskless one', () => {
  let vm: string;
  let running = false;
  before(async () => {
    vm = await createVm('power');
    await call('VirtualMachine.put_ShutdownActionOnQuit', { this: vm, value: 'TurnOff' });
    await call('VirtualMachine.put_AutoStartAtLaunch', { this: vm, value: 'Never' });
  });

  test('TurnOff, Save, Reset, Pause, Resume, GuestOS.Shutdown, GetSerialOutput and CreateConsoleTicket of a turned-off VM are VM_E_VM_NOT_RUNNING; Display.get_Thumbnail is null; DiscardSavedState is VM_E_NO_SAVED_STATE', async () => {
    const id = idOf(vm);
    for (const method of ['VirtualMachine.TurnOff', 'VirtualMachine.Save', 'VirtualMachine.Reset', 'VirtualMachine.Pause', 'VirtualMachine.Resume']) {
      await refused(method, { this: vm }, 'VM_E_VM_NOT_RUNNING', ['power', 'TurnedOff']);
    }
    await refused('GuestOS.Shutdown', { this: `GuestOS/${id}` }, 'VM_E_VM_NOT_RUNNING', ['power']);
    assert.equal(await call('Display.get_Thumbnail', { this: `Display/${id}` }), null);
    await refused('VirtualMachine.DiscardSavedState', { this: vm }, 'VM_E_NO_SAVED_STATE', ['power']);
    await refused('VirtualMachine.GetSerialOutput', { this: vm, port: 1 }, 'VM_E_VM_NOT_RUNNING', ['power', 'TurnedOff']);
    await refused('VirtualMachine.GetSerialOutput', { this: vm, port: 2 }, 'VM_E_PORT_NOT_CONNECTED', ['COM2 of power']);
    await refused('VirtualMachine.CreateConsoleTicket', { this: vm, kind: 'serial' }, 'VM_E_VM_NOT_RUNNING', ['power', 'TurnedOff']);
    assert.equal(await call('VirtualMachine.get_State', { this: vm }), 'TurnedOff');
  });

  test('Startup of a VM without disks returns a Task that reports how it went; a running VM refuses configuration changes, a second Startup and deletion; TurnOff stops it', { timeout: 90_000 }, async () => {
    const task = await call<Ref>('VirtualMachine.Startup', { this: vm });
    const { error } = await finish(task);
    assert.equal(await call('Task.get_Object', { this: task.$ref }), vm);
    assert.equal(await call('Task.get_Description', { this: task.$ref }), 'Startup of power');
    // A diskless VM runs on every host (the BIOS finds nothing to boot): a failed Startup is a failure.
    assert.equal(error, null, `Startup of the diskless VM failed: ${JSON.stringify(error)}`);
    running = true;
    assert.equal(await call('Task.get_PercentCompleted', { this: task.$ref }), 100);
    assert.equal(await call('VirtualMachine.get_State', { this: vm }), 'Running', 'the BIOS finds nothing to boot, and the VM runs on');
    const uptime = await call<number>('VirtualMachine.get_Uptime', { this: vm });
    assert.ok(Number.isInteger(uptime) && uptime >= 0, `get_Uptime ${uptime}`);
    const engine = await call<{ engine: string; reason: string }>('VirtualMachine.get_Engine', { this: vm });
    assert.ok(['kvm', 'tcg'].includes(engine.engine) && engine.reason.length > 0, JSON.stringify(engine));
    await refused('VirtualMachine.Startup', { this: vm }, 'VM_E_VM_RUNNING');
    // COM1 by position (test/serial-output.test.ts reads a real guest's): what there is, from 0.
    const com1 = await call<{ text: string; next: number; skipped: number }>('VirtualMachine.GetSerialOutput', { this: vm, port: 1 });
    assert.deepEqual([typeof com1.text, com1.next, com1.skipped], ['string', Buffer.byteLength(com1.text), 0]);
    const consoleTicket = await call<{ ticket: string; url: string; expiresInSeconds: number }>('VirtualMachine.CreateConsoleTicket', { this: vm, kind: 'vnc' });
    assert.equal(consoleTicket.url, `/console/vnc?ticket=${consoleTicket.ticket}`);
    await unchanged(vm, async () => {
      await refused('VirtualMachine.put_Memory', { this: vm, value: 256 }, 'VM_E_VM_RUNNING', ['Running']);
      await refused('VirtualMachine.AddNetworkAdapter', { this: vm }, 'VM_E_VM_RUNNING');
      await refused('VirtualMachine.AddDVDROMDrive', { this: vm, busNumber: 1, deviceNumber: 0 }, 'VM_E_VM_RUNNING');
      await refused('VirtualMachine.ConfigureSerialPort2', { this: vm, path: 'power/com2.txt' }, 'VM_E_VM_RUNNING');
      await refused('VirtualMachine.AddFloppyDrive', { this: vm }, 'VM_E_VM_RUNNING');
    });
    await refused('VirtualServer.DeleteVirtualMachine', { vm }, 'VM_E_VM_RUNNING');
    await refused('VirtualServer.UnregisterVirtualMachine', { vm }, 'VM_E_VM_RUNNING');
    await refused('VirtualMachine.DiscardSavedState', { this: vm }, 'VM_E_VM_RUNNING');
    await call('VirtualMachine.put_Notes', { this: vm, value: 'notes change while it runs' });
    assert.equal(await call('VirtualMachine.get_Notes', { this: vm }), 'notes change while it runs');

    assert.equal((await finish(await call<Ref>('VirtualMachine.TurnOff', { this: vm }))).error, null);
    running = false;
    assert.equal(await call('VirtualMachine.get_State', { this: vm }), 'TurnedOff');
    assert.equal(await call('VirtualMachine.get_Uptime', { this: vm }), null);
    assert.deepEqual(await call('VirtualMachine.get_Engine', { this: vm }), engine, 'get_Engine tells the engine it last ran on');
    assert.equal(await call('VirtualMachine.get_LastCrash', { this: vm }), null, 'a TurnOff is no crash');
  });

  test('DiscardSavedState throws a real saved state away: the VM is TurnedOff and its .vsv gone (a Saved VM refuses configuration changes first)', { timeout: 90_000 }, async () => {
    const { error } = await finish(await call<Ref>('VirtualMachine.Startup', { this: vm }));
    assert.equal(error, null, `Startup of the diskless VM failed: ${JSON.stringify(error)}`);
    running = true;
    const saved = await finish(await call<Ref>('VirtualMachine.Save', { this: vm }));
    running = false;
    assert.equal(saved.error, null, JSON.stringify(saved.error));
    const vsv = await call<string>('VirtualMachine.get_SavedStateFilePath', { this: vm });
    assert.equal(await call('VirtualMachine.get_State', { this: vm }), 'Saved');
    assert.ok(fs.existsSync(vsv), 'the saved state is on disk');
    await unchanged(vm, () => refused('VirtualMachine.put_Memory', { this: vm, value: 256 }, 'VM_E_VM_SAVED', ['power']));
    assert.equal(await call('VirtualMachine.DiscardSavedState', { this: vm }), null);
    assert.equal(await call('VirtualMachine.get_State', { this: vm }), 'TurnedOff');
    assert.equal(fs.existsSync(vsv), false, 'the .vsv is deleted');
    await refused('VirtualMachine.DiscardSavedState', { this: vm }, 'VM_E_NO_SAVED_STATE');
  });

  after(async () => {
    if (running) await finish(await call<Ref>('VirtualMachine.TurnOff', { this: vm }));
  });
});

describe('hard disks: creation, HardDisk members, and paths', () => {
  let dynamic: string;
  let differencing: string;

  test('CreateDynamicVirtualHardDisk returns a Task whose result is the new HardDisk; qemu-img sees a vpc image of the size asked (and 127 GB when none is)', async () => {
    const task = await call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: 'disks/dynamic.vhd', sizeMB: 100 });
    dynamic = path.join(root, 'disks', 'dynamic.vhd');
    assert.deepEqual(await succeed(task), { $ref: `HardDisk/${dynamic}` });
    const info = qemuProbe(dynamic);
    assert.equal(info.format, 'vpc');
    const size = info['virtual-size'] as number;
    assert.ok(size >= 100 * MiB && size < 101 * MiB, `virtual size ${size} for 100 MB`);
    assert.equal(await call('HardDisk.get_SizeInGuest', { this: `HardDisk/${dynamic}` }), size, 'the guest sees what QEMU sees');
    assert.ok(fs.statSync(dynamic).size < MiB, 'a dynamic disk starts small');

    const fallback = path.join(root, 'disks', 'default-size.vhd');
    await succeed(await call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: 'disks/default-size.vhd' }));
    const defaultSize = qemuProbe(fallback)['virtual-size'] as number;
    assert.ok(defaultSize >= 127 * 1024 * MiB && defaultSize < 127 * 1024 * MiB + MiB, `default size ${defaultSize}`);
  });

  test('CreateFixedVirtualHardDisk writes the whole disk: a vpc image (as qemu-img -f vpc reads it) of the size asked plus its 512-byte footer', async () => {
    const fixed = path.join(root, 'disks', 'fixed.vhd');
    assert.deepEqual(await succeed(await call<Ref>('VirtualServer.CreateFixedVirtualHardDisk', { path: 'disks/fixed.vhd', sizeMB: 8 })), { $ref: `HardDisk/${fixed}` });
    const info = qemuInfo(fixed, 'vpc');
    const size = info['virtual-size'] as number;
    assert.ok(size >= 8 * MiB && size < 9 * MiB, `virtual size ${size} for 8 MB`);
    assert.equal(fs.statSync(fixed).size, size + 512);
    assert.equal(await call('HardDisk.get_Type', { this: `HardDisk/${fixed}` }), 'Fixed');
    assertValidVhd(fixed);
  });

  test('CreateDifferencingVirtualHardDisk makes a child of the parent\'s size; get_Parent and get_Info name the parent', async () => {
    differencing = path.join(root, 'disks', 'child.vhd');
    assert.deepEqual(await succeed(await call<Ref>('VirtualServer.CreateDifferencingVirtualHardDisk', { path: 'disks/child.vhd', parentPath: 'disks/dynamic.vhd' })), { $ref: `HardDisk/${differencing}` });
    const info = qemuProbe(differencing);
    assert.equal(info.format, 'vpc');
    assert.equal(info['virtual-size'], qemuProbe(dynamic)['virtual-size']);
    const child = `HardDisk/${differencing}`;
    assert.equal(await call('HardDisk.get_Type', { this: child }), 'Differencing');
    assert.deepEqual(await call('HardDisk.get_Parent', { this: child }), { $ref: `HardDisk/${dynamic}` });
    const details = await call<{ parent: { file: string }; chain: Array<{ file: string; type: string }> }>('HardDisk.get_Info', { this: child });
    assert.equal(details.parent.file, dynamic);
    assert.deepEqual(details.chain, [{ file: differencing, type: 'differencing' }, { file: dynamic, type: 'dynamic' }]);
  });

  test('each create refuses an existing file with VHD_E_EXISTS at once, leaving it as it was', async () => {
    const before = fs.readFileSync(dynamic);
    await refused('VirtualServer.CreateDynamicVirtualHardDisk', { path: 'disks/dynamic.vhd', sizeMB: 1 }, 'VHD_E_EXISTS', [dynamic]);
    await refused('VirtualServer.CreateFixedVirtualHardDisk', { path: 'disks/dynamic.vhd', sizeMB: 1 }, 'VHD_E_EXISTS', [dynamic]);
    await refused('VirtualServer.CreateDifferencingVirtualHardDisk', { path: 'disks/dynamic.vhd', parentPath: 'disks/fixed.vhd' }, 'VHD_E_EXISTS', [dynamic]);
    assert.deepEqual(fs.readFileSync(dynamic), before);
  });

  test('a differencing disk over a missing parent is VM_E_HD_IMAGE_NOT_FOUND; over a file that is not a VHD it is refused at once with a VHD_E_ error; no file is made', async () => {
    fs.writeFileSync(path.join(root, 'disks', 'text.vhd'), 'not a disk\n'.repeat(100));
    const error = await refusal('VirtualServer.CreateDifferencingVirtualHardDisk', { path: 'disks/orphan.vhd', parentPath: 'disks/text.vhd' });
    assert.match(error.data.name, /^VHD_E_/, error.message);
    assert.equal(fs.existsSync(path.join(root, 'disks', 'orphan.vhd')), false);
    await refused('VirtualServer.CreateDifferencingVirtualHardDisk', { path: 'disks/orphan.vhd', parentPath: 'disks/missing.vhd' }, 'VM_E_HD_IMAGE_NOT_FOUND', ['missing.vhd']);
  });

  test('GetHardDisk opens a VHD by path; a missing one is VM_E_HD_IMAGE_NOT_FOUND; a file that is not a VHD is a VHD_E_ error', async () => {
    assert.deepEqual(await call('VirtualServer.GetHardDisk', { path: 'disks/dynamic.vhd' }), { $ref: `HardDisk/${dynamic}` });
    assert.deepEqual(await call('VirtualServer.GetHardDisk', { path: dynamic }), { $ref: `HardDisk/${dynamic}` });
    assert.match((await refusal('VirtualServer.GetHardDisk', { path: 'disks/text.vhd' })).data.name, /^VHD_E_/);
    await refused('VirtualServer.GetHardDisk', { path: 'disks/missing.vhd' }, 'VM_E_HD_IMAGE_NOT_FOUND', ['missing.vhd']);
  });

  test('a HardDisk reference to a missing file is VM_E_HD_IMAGE_NOT_FOUND for every HardDisk member', async () => {
    const wrong: string[] = [];
    for (const member of Object.keys(SCHEMA.HardDisk.members)) {
      const params = { this: 'HardDisk/disks/missing.vhd', ...validParams(SCHEMA.HardDisk.members[member].params ?? {}) };
      const error = await refusal(`HardDisk.${member}`, params);
      if (error.data.name !== 'VM_E_HD_IMAGE_NOT_FOUND') wrong.push(`HardDisk.${member}: ${error.data.name}`);
    }
    assert.deepEqual(wrong, []);
  });

  test('get_File, get_Type, get_SizeInGuest, get_SizeOnHost, get_HostFreeDiskSpace, get_Parent and get_Info describe a dynamic disk as the file system and qemu-img do', async () => {
    const disk = `HardDisk/${dynamic}`;
    assert.equal(await call('HardDisk.get_File', { this: disk }), dynamic);
    assert.equal(await call('HardDisk.get_File', { this: 'HardDisk/disks/../disks/dynamic.vhd' }), dynamic, 'a relative reference resolves to the real path');
    assert.equal(await call('HardDisk.get_Type', { this: disk }), 'Dynamic');
    assert.equal(await call('HardDisk.get_SizeInGuest', { this: disk }), qemuProbe(dynamic)['virtual-size']);
    assert.equal(await call('HardDisk.get_SizeOnHost', { this: disk }), fs.statSync(dynamic).blocks * 512);
    const free = (): number => { const s = fs.statfsSync(path.dirname(dynamic)); return s.bavail * s.bsize; };
    const low = free();
    const reported = await call<number>('HardDisk.get_HostFreeDiskSpace', { this: disk });
    const high = free();
    assert.ok(reported >= Math.min(low, high) - 1024 * MiB && reported <= Math.max(low, high) + 1024 * MiB, `free ${reported}, the file system says ${low}..${high}`);
    assert.equal(await call('HardDisk.get_Parent', { this: disk }), null);
    const info = await call<{ file: string; type: string; sizeInGuest: number; blocks: { allocated: number; total: number }; chain: unknown[] }>('HardDisk.get_Info', { this: disk });
    assert.equal(info.file, dynamic);
    assert.equal(info.type, 'dynamic');
    assert.equal(info.sizeInGuest, qemuProbe(dynamic)['virtual-size']);
    assert.deepEqual(info.blocks, { allocated: 0, total: Math.ceil(info.sizeInGuest / BLOCK) });
    assert.deepEqual(info.chain, [{ file: dynamic, type: 'dynamic' }]);
  });

  test('Compact drops a block of zeros from a dynamic disk and keeps the data; a fixed disk is VHD_E_WRONG_TYPE', async () => {
    const file = await createDisk('disks/compact.vhd', 16);
    writeVhd(file, constBytes(0x5a, 64 * 1024), 0);
    writeVhd(file, Buffer.alloc(64 * 1024), 2 * BLOCK);
    const disk = `HardDisk/${file}`;
    assert.equal((await call<{ blocks: { allocated: number } }>('HardDisk.get_Info', { this: disk })).blocks.allocated, 2);
    const sizeBefore = fs.statSync(file).size;
    const result = await succeed(await call<Ref>('HardDisk.Compact', { this: disk })) as { blocksDropped: number };
    assert.equal(result.blocksDropped, 1);
    assert.equal((await call<{ blocks: { allocated: number } }>('HardDisk.get_Info', { this: disk })).blocks.allocated, 1);
    assert.ok(fs.statSync(file).size < sizeBefore, 'the file shrank');
    qemuIoVerify(file, [{ pattern: 0x5a, offset: 0, length: 64 * 1024 }, { pattern: 0, offset: 2 * BLOCK, length: 64 * 1024 }]);
    assertValidVhd(file);
    assert.equal(await outcome('HardDisk.Compact', { this: `HardDisk/${path.join(root, 'disks', 'fixed.vhd')}` }), 'VHD_E_WRONG_TYPE');
  });

  test('Convert writes a copy of another type: Fixed, then back to Dynamic, each read by qemu-img as the same disk; an existing target is VHD_E_EXISTS', async () => {
    const source = path.join(root, 'disks', 'compact.vhd');
    const fixed = path.join(root, 'disks', 'converted-fixed.vhd');
    assert.deepEqual(await succeed(await call<Ref>('HardDisk.Convert', { this: `HardDisk/${source}`, path: 'disks/converted-fixed.vhd', type: 'Fixed' })), { $ref: `HardDisk/${fixed}` });
    assert.equal(await call('HardDisk.get_Type', { this: `HardDisk/${fixed}` }), 'Fixed');
    assert.equal(fs.statSync(fixed).size, (qemuInfo(fixed)['virtual-size'] as number) + 512);
    assert.equal(qemuCompare(source, 'vpc', fixed, 'vpc').status, 0, 'the copy holds the same data');
    const back = path.join(root, 'disks', 'converted-dynamic.vhd');
    await succeed(await call<Ref>('HardDisk.Convert', { this: `HardDisk/${fixed}`, path: back, type: 'Dynamic' }));
    assert.equal(await call('HardDisk.get_Type', { this: `HardDisk/${back}` }), 'Dynamic');
    assert.equal(qemuProbe(back).format, 'vpc');
    assert.equal(qemuCompare(source, 'vpc', back, 'vpc').status, 0);
    await refused('HardDisk.Convert', { this: `HardDisk/${source}`, path: back, type: 'Fixed' }, 'VHD_E_EXISTS', [back]);
  });

  test('MergeTo flattens a differencing disk and its parent into a new dynamic disk and keeps the child; Merge writes the child into its parent and deletes it', async () => {
    const base = await createDisk('merge/base.vhd', 16);
    writeVhd(base, constBytes(0x11, 64 * 1024), 0);
    const child = path.join(root, 'merge', 'child.vhd');
    await succeed(await call<Ref>('VirtualServer.CreateDifferencingVirtualHardDisk', { path: 'merge/child.vhd', parentPath: base }));
    writeVhd(child, constBytes(0x22, 64 * 1024), BLOCK);
    const expected = [{ pattern: 0x11, offset: 0, length: 64 * 1024 }, { pattern: 0x22, offset: BLOCK, length: 64 * 1024 }];

    const flat = path.join(root, 'merge', 'flat.vhd');
    assert.deepEqual(await succeed(await call<Ref>('HardDisk.MergeTo', { this: `HardDisk/${child}`, path: 'merge/flat.vhd' })), { $ref: `HardDisk/${flat}` });
    assert.equal(await call('HardDisk.get_Type', { this: `HardDisk/${flat}` }), 'Dynamic');
    assert.equal(await call('HardDisk.get_Parent', { this: `HardDisk/${flat}` }), null);
    qemuIoVerify(flat, expected);
    assert.ok(fs.existsSync(child), 'MergeTo keeps the child');
    await refused('HardDisk.MergeTo', { this: `HardDisk/${child}`, path: flat }, 'VHD_E_EXISTS');

    assert.deepEqual(await succeed(await call<Ref>('HardDisk.Merge', { this: `HardDisk/${child}` })), { $ref: `HardDisk/${base}` });
    assert.equal(fs.existsSync(child), false, 'Merge deletes the child once the parent holds its data');
    qemuIoVerify(base, expected);
    assertValidVhd(base);
    await refused('HardDisk.Merge', { this: `HardDisk/${base}` }, 'VHD_E_WRONG_TYPE', ['differencing']);
  });

  test('Expand grows a disk to the size asked and keeps its data; a smaller size is VHD_E_SIZE_LIMIT', async () => {
    const file = path.join(root, 'merge', 'base.vhd');
    const disk = `HardDisk/${file}`;
    await succeed(await call<Ref>('HardDisk.Expand', { this: disk, sizeMB: 32 }));
    const size = qemuProbe(file)['virtual-size'] as number;
    assert.ok(size >= 32 * MiB && size < 33 * MiB, `virtual size ${size} after Expand to 32 MB`);
    assert.equal(await call('HardDisk.get_SizeInGuest', { this: disk }), size);
    qemuIoVerify(file, [{ pattern: 0x11, offset: 0, length: 64 * 1024 }, { pattern: 0x22, offset: BLOCK, length: 64 * 1024 }]);
    assert.equal(await outcome('HardDisk.Expand', { this: disk, sizeMB: 8 }), 'VHD_E_SIZE_LIMIT');
    assert.equal(qemuProbe(file)['virtual-size'], size, 'the refused Expand changed nothing');
  });
});

describe('tasks', () => {
  test('a finished task reports its description, 100 %, completion, no cancel, its result, no error, a timed log, its object and start; WaitForCompletion answers true at once', async () => {
    const t0 = new Date();
    const task = await call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: 'tasks/one.vhd', sizeMB: 1 });
    const file = path.join(root, 'tasks', 'one.vhd');
    assert.equal(await call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 60_000 }), true);
    const t = task.$ref;
    assert.equal(await call('Task.get_Description', { this: t }), `Create dynamic disk ${file}`);
    assert.equal(await call('Task.get_PercentCompleted', { this: t }), 100);
    assert.equal(await call('Task.get_IsComplete', { this: t }), true);
    assert.equal(await call('Task.get_IsCancelable', { this: t }), false);
    assert.deepEqual(await call('Task.get_Result', { this: t }), { $ref: `HardDisk/${file}` });
    assert.equal(await call('Task.get_Error', { this: t }), null);
    const log = await call<string[]>('Task.get_Log', { this: t });
    assert.ok(log.length >= 2);
    for (const line of log) assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S/);
    assert.ok(log[0].endsWith(` Create dynamic disk ${file}`), log[0]);
    assert.ok(log[log.length - 1].endsWith(' completed'), log[log.length - 1]);
    assert.equal(await call('Task.get_Object', { this: t }), `HardDisk/${file}`);
    const started = await call<string>('Task.get_Started', { this: t });
    assert.match(started, ISO_TIME);
    assert.ok(Date.parse(started) >= t0.getTime() - 1000 && Date.parse(started) <= Date.now());
    assert.equal(await call('Task.WaitForCompletion', { this: t, timeoutMs: 0 }), true);
    await refused('Task.Cancel', { this: t }, 'VM_E_TASK_NOT_CANCELABLE', ['finished']);
    assert.deepEqual((await call<Ref[]>('VirtualServer.get_Tasks'))[0], task, 'get_Tasks lists the newest first');
  });

  test('a failed task reports its error by name, a log ending in the failure, no result, less than 100 %', async () => {
    const task = await call<Ref>('HardDisk.Expand', { this: fixture.HardDisk, sizeMB: 1 });
    const { error, result } = await finish(task);
    assert.equal(error?.name, 'VHD_E_SIZE_LIMIT');
    assert.match(error?.message ?? '', /larger/);
    assert.equal(result, null);
    assert.equal(await call('Task.get_IsComplete', { this: task.$ref }), true);
    assert.ok((await call<number>('Task.get_PercentCompleted', { this: task.$ref })) < 100);
    const log = await call<string[]>('Task.get_Log', { this: task.$ref });
    assert.match(log[log.length - 1], / failed: /);
  });

  test('Cancel of an 8000 MB CreateFixedVirtualHardDisk in flight ends it with VM_E_TASK_CANCELLED, and neither the disk nor a partial file is left', async () => {
    const folder = path.join(root, 'tasks-cancel');
    const task = await call<Ref>('VirtualServer.CreateFixedVirtualHardDisk', { path: 'tasks-cancel/big.vhd', sizeMB: 8000 });
    const t = task.$ref;
    assert.equal(await call('Task.get_IsComplete', { this: t }), false);
    assert.equal(await call('Task.get_IsCancelable', { this: t }), true);
    assert.equal(await call('Task.WaitForCompletion', { this: t, timeoutMs: 50 }), false, 'WaitForCompletion answers false when the time runs out');
    const percent = await call<number>('Task.get_PercentCompleted', { this: t });
    assert.ok(percent >= 0 && percent < 100, `${percent} %`);
    assert.deepEqual((await call<Ref[]>('VirtualServer.get_Tasks'))[0], task, 'get_Tasks lists tasks in flight first');
    assert.equal(await call('Task.Cancel', { this: t }), null);
    const { error, result } = await finish(task);
    assert.equal(error?.name, 'VM_E_TASK_CANCELLED');
    assert.equal(result, null);
    assert.equal(await call('Task.get_IsCancelable', { this: t }), false);
    assert.ok((await call<number>('Task.get_PercentCompleted', { this: t })) < 100);
    assert.ok((await call<string[]>('Task.get_Log', { this: t })).some((l) => l.endsWith(' cancel requested')));
    assert.equal(fs.existsSync(path.join(folder, 'big.vhd')), false, 'no disk is left');
    assert.deepEqual(fs.readdirSync(folder), [], 'no partial file is left');
    await refused('Task.Cancel', { this: t }, 'VM_E_TASK_NOT_CANCELABLE');
  });

  test('an unknown task is VM_E_TASK_UNKNOWN', async () => {
    await refused('Task.get_IsComplete', { this: `Task/${UNKNOWN_ID}` }, 'VM_E_TASK_UNKNOWN', [UNKNOWN_ID]);
    await refused('Task.Cancel', { this: 'Task/nonsense' }, 'VM_E_TASK_UNKNOWN');
  });
});

describe('users, tokens and access entries, as the administrator', () => {
  test('CreateUser adds a user get_Users lists, who can sign in; SetUserRole changes what their token may do; SetUserPassword changes their password', async () => {
    assert.equal(await call('VirtualServer.CreateUser', { name: 'ops', password: 'correct horse', role: 'Operator' }), null);
    const ops = (await call<Array<{ name: string; role: string; created: string }>>('VirtualServer.get_Users')).find((u) => u.name === 'ops');
    assert.equal(ops?.role, 'Operator');
    assert.match(ops?.created ?? '', ISO_TIME);
    const token = await login(server.url, 'ops', 'correct horse');
    assert.deepEqual(await call('Security.get_CurrentUserAccessRights', { this: 'Security/VirtualServer' }, token), ['read', 'control']);
    assert.equal(await call('VirtualServer.SetUserRole', { name: 'ops', role: 'Viewer' }), null);
    assert.equal((await call<Array<{ name: string; role: string }>>('VirtualServer.get_Users')).find((u) => u.name === 'ops')?.role, 'Viewer');
    assert.deepEqual(await call('Security.get_CurrentUserAccessRights', { this: 'Security/VirtualServer' }, token), ['read'], 'the new role applies to the user\'s token at once');
    assert.equal(await call('VirtualServer.SetUserPassword', { name: 'ops', password: 'battery staple' }), null);
    await login(server.url, 'ops', 'battery staple');
    await assert.rejects(login(server.url, 'ops', 'correct horse'), /401/);
  });

  test('DeleteUser removes the user and ends their tokens (401); the last administrator cannot be deleted or demoted (VM_E_LAST_ADMINISTRATOR)', async () => {
    await call('VirtualServer.CreateUser', { name: 'leaving', password: 'long enough', role: 'Administrator' });
    const token = await login(server.url, 'leaving', 'long enough');
    assert.equal(await call('VirtualServer.get_Name', {}, token), os.hostname());
    assert.equal(await call('VirtualServer.DeleteUser', { name: 'leaving' }), null);
    assert.ok(!(await call<Array<{ name: string }>>('VirtualServer.get_Users')).some((u) => u.name === 'leaving'));
    const answer = await post(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'VirtualServer.get_Name' }), token);
    assert.equal(answer.status, 401);
    await refused('VirtualServer.DeleteUser', { name: 'admin' }, 'VM_E_LAST_ADMINISTRATOR', ['admin']);
    await refused('VirtualServer.SetUserRole', { name: 'admin', role: 'Operator' }, 'VM_E_LAST_ADMINISTRATOR', ['admin']);
    assert.equal((await call<Array<{ name: string; role: string }>>('VirtualServer.get_Users')).find((u) => u.name === 'admin')?.role, 'Administrator');
  });

  test('a password under 8 characters is VM_E_WEAK_PASSWORD naming 8, counted in characters (four emoji are four); a name taken or unknown is refused', async () => {
    await refused('VirtualServer.CreateUser', { name: 'weak', password: 'short', role: 'Viewer' }, 'VM_E_WEAK_PASSWORD', ['8']);
    await refused('VirtualServer.CreateUser', { name: 'weak', password: '\u{1F600}\u{1F600}\u{1F600}\u{1F600}', role: 'Viewer' }, 'VM_E_WEAK_PASSWORD', ['8']);
    assert.ok(!(await call<Array<{ name: string }>>('VirtualServer.get_Users')).some((u) => u.name === 'weak'));
    await refused('VirtualServer.SetUserPassword', { name: 'admin', password: '1234567' }, 'VM_E_WEAK_PASSWORD', ['8']);
    await refused('VirtualServer.CreateUser', { name: 'admin', password: 'long enough', role: 'Viewer' }, 'VM_E_USER_EXISTS', ['admin']);
    await refused('VirtualServer.CreateUser', { name: 'no spaces allowed', password: 'long enough', role: 'Viewer' }, 'VM_E_INVALID_PARAMS', ['"name"']);
    for (const [method, params] of [
      ['VirtualServer.DeleteUser', { name: 'nobody' }],
      ['VirtualServer.SetUserRole', { name: 'nobody', role: 'Viewer' }],
      ['VirtualServer.SetUserPassword', { name: 'nobody', password: 'long enough' }],
    ] as const) {
      await refused(method, params, 'VM_E_USER_UNKNOWN', ['nobody']);
    }
  });

  test('CreateToken makes a token shown once, narrowed to the role asked; get_Tokens lists it without its secret; RevokeToken ends it: HTTP 401 VM_E_NOT_AUTHENTICATED', async () => {
    const created = await call<{ id: string; token: string; user: string; role: string; expires: string | null }>('VirtualServer.CreateToken', { description: 'backup script', role: 'Viewer', expiresInDays: 2 });
    assert.match(created.token, new RegExp(`^vst_${created.id}_[A-Za-z0-9_-]{43}$`));
    assert.equal(created.user, 'admin');
    assert.equal(created.role, 'Viewer');
    const expires = Date.parse(created.expires ?? '');
    assert.ok(Math.abs(expires - (Date.now() + 2 * 86_400_000)) < 60_000, `expires ${created.expires}`);
    assert.equal(await call('VirtualServer.get_Name', {}, created.token), os.hostname(), 'the token works');
    await refused('VirtualMachine.put_Notes', { this: fixtureVm, value: 'x' }, 'VM_E_ACCESS_DENIED', [], created.token);

    const listed = (await call<Array<Record<string, unknown>>>('VirtualServer.get_Tokens')).find((t) => t.id === created.id);
    assert.ok(listed, 'get_Tokens lists the new token');
    assert.deepEqual({ user: listed.user, role: listed.role, description: listed.description, expires: listed.expires }, { user: 'admin', role: 'Viewer', description: 'backup script', expires: created.expires });
    assert.match(String(listed.lastUsed), ISO_TIME);
    assert.ok(!JSON.stringify(listed).includes(created.token.slice(`vst_${created.id}_`.length)), 'the secret is never shown again');

    const plain = await call<{ role: string; expires: string | null }>('VirtualServer.CreateToken');
    assert.deepEqual([plain.role, plain.expires], ['Administrator', null], 'without a role the caller\'s; without expiresInDays none');

    assert.equal(await call('VirtualServer.RevokeToken', { id: created.id }), null);
    assert.ok(!(await call<Array<{ id: string }>>('VirtualServer.get_Tokens')).some((t) => t.id === created.id));
    const answer = await post(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'VirtualServer.get_Name' }), created.token);
    assert.equal(answer.status, 401);
    assert.equal((answer.json as RpcAnswer).error?.data.name, 'VM_E_NOT_AUTHENTICATED');
    await refused('VirtualServer.RevokeToken', { id: created.id }, 'VM_E_TOKEN_UNKNOWN', [created.id]);
  });

  for (const [label, object] of [['the server', () => 'Security/VirtualServer'], ['a VM', () => `Security/${fixtureVm}`]] as const) {
    test(`Security of ${label}: AddEntry and RemoveEntry change get_AccessRights and the user's get_CurrentUserAccessRights; the administrator has every right`, async () => {
      const security = object();
      const user = `viewer-${label.replace(/\W/g, '')}`;
      await call('VirtualServer.CreateUser', { name: user, password: 'long enough', role: 'Viewer' });
      const token = await login(server.url, user, 'long enough');
      assert.deepEqual(await call('Security.get_AccessRights', { this: security }), []);
      assert.deepEqual(await call('Security.get_CurrentUserAccessRights', { this: security }), RIGHTS);
      assert.deepEqual(await call('Security.get_CurrentUserAccessRights', { this: security }, token), ['read']);

      assert.equal(await call('Security.AddEntry', { this: security, name: user, type: 'Allowed', rights: ['control', 'change'] }), null);
      assert.deepEqual(await call('Security.get_AccessRights', { this: security }), [{ name: user, type: 'Allowed', rights: ['control', 'change'] }]);
      assert.deepEqual((await call<string[]>('Security.get_CurrentUserAccessRights', { this: security }, token)).sort(), ['change', 'control', 'read']);
      await call('Security.AddEntry', { this: security, name: 'role:Viewer', type: 'Denied', rights: ['control'] });
      assert.deepEqual((await call<string[]>('Security.get_CurrentUserAccessRights', { this: security }, token)).sort(), ['change', 'read'], 'Denied wins over Allowed');

      assert.equal(await call('Security.RemoveEntry', { this: security, name: 'role:Viewer' }), null);
      assert.equal(await call('Security.RemoveEntry', { this: security, name: user }), null);
      assert.deepEqual(await call('Security.get_AccessRights', { this: security }), []);
      assert.deepEqual(await call('Security.get_CurrentUserAccessRights', { this: security }, token), ['read']);
      await refused('Security.RemoveEntry', { this: security, name: user }, 'VM_E_ENTRY_UNKNOWN', [user]);
      await refused('Security.AddEntry', { this: security, name: 'nobody', type: 'Allowed', rights: ['read'] }, 'VM_E_USER_UNKNOWN', ['nobody']);
      await refused('Security.AddEntry', { this: security, name: 'role:Janitor', type: 'Allowed', rights: ['read'] }, 'VM_E_USER_UNKNOWN', ['Janitor']);
    });
  }

  test('Security of anything but the server or a VM is VM_E_OBJECT_UNKNOWN', async () => {
    await refused('Security.get_AccessRights', { this: `Security/${fixture.HardDisk}` }, 'VM_E_OBJECT_UNKNOWN');
    await refused('Security.get_AccessRights', { this: 'Security/Nothing' }, 'VM_E_OBJECT_UNKNOWN');
  });
});

describe('the event log and the file picker', () => {
  test('GetEvents shows the changes made, by "admin", about their object, with passwords hidden; since, limit, category, severity and object filter', async () => {
    const since = await lastEventId();
    await call('VirtualMachine.put_Notes', { this: fixtureVm, value: 'logged' });
    await call('VirtualServer.CreateUser', { name: 'logged-user', password: 'secret-password-1', role: 'Viewer' });
    await assert.rejects(login(server.url, 'logged-user', 'wrong password'));
    const events = await call<LoggedEvent[]>('VirtualServer.GetEvents', { since });
    assert.ok(events.every((e) => e.id > since), 'since: only later events');
    assert.deepEqual(events.map((e) => e.id), [...events.map((e) => e.id)].sort((a, b) => a - b), 'oldest first');
    const notes = events.find((e) => e.message.includes('VirtualMachine.put_Notes'));
    assert.ok(notes, JSON.stringify(events));
    assert.deepEqual({ who: notes.who, object: notes.object, category: notes.category, severity: notes.severity }, { who: 'admin', object: fixtureVm, category: 'Virtual Machine', severity: 'Information' });
    assert.match(notes.message, /fixture/);
    assert.match(notes.time, ISO_TIME);
    const created = events.find((e) => e.message.includes('VirtualServer.CreateUser'));
    assert.ok(created && created.who === 'admin' && created.category === 'Security');
    assert.match(created.message, /password=\(hidden\)/);
    assert.ok(!events.some((e) => e.message.includes('secret-password-1')), 'no password in the log');

    const first = await call<LoggedEvent[]>('VirtualServer.GetEvents', { since, limit: 1 });
    assert.deepEqual(first, [events[0]], 'limit');
    const security = await call<LoggedEvent[]>('VirtualServer.GetEvents', { since, category: 'Security' });
    assert.ok(security.length >= 2 && security.every((e) => e.category === 'Security'), 'category');
    const warnings = await call<LoggedEvent[]>('VirtualServer.GetEvents', { since, severity: 'Warning' });
    assert.ok(warnings.some((e) => /failed sign-in as logged-user/.test(e.message)), JSON.stringify(warnings));
    assert.ok(warnings.every((e) => e.severity === 'Warning'), 'severity');
    const aboutVm = await call<LoggedEvent[]>('VirtualServer.GetEvents', { since, object: fixtureVm });
    assert.ok(aboutVm.some((e) => e.id === notes.id) && aboutVm.every((e) => e.object === fixtureVm), 'object');
    assert.equal((await call<LoggedEvent[]>('VirtualServer.GetEvents', { since: notes.id + 1e9 })).length, 0);
  });

  test('a refused call changes nothing and logs no change', async () => {
    const since = await lastEventId();
    await refused('VirtualMachine.put_Memory', { this: fixtureVm, value: 9999 }, 'VM_E_INVALID_PARAMS');
    assert.ok(!(await call<LoggedEvent[]>('VirtualServer.GetEvents', { since })).some((e) => e.message.includes('put_Memory')));
  });

  test('GetFiles lists the first root by default and a folder by path: folders first, files with their sizes', async () => {
    const top = await call<{ root: string; folder: string; entries: Array<{ name: string; path: string; type: string; size: number }> }>('VirtualServer.GetFiles');
    assert.equal(top.root, root);
    assert.equal(top.folder, root);
    assert.ok(top.entries.some((e) => e.name === 'fixture' && e.type === 'folder' && e.path === path.join(root, 'fixture') && e.size === 0));
    const types = top.entries.map((e) => e.type);
    assert.deepEqual(types, [...types].sort((a, b) => (a === b ? 0 : a === 'folder' ? -1 : 1)), 'folders first');
    const listing = await call<{ folder: string; entries: Array<{ name: string; path: string; type: string; size: number }> }>('VirtualServer.GetFiles', { path: 'fixture-disks' });
    assert.equal(listing.folder, path.join(root, 'fixture-disks'));
    assert.deepEqual(listing.entries, [{ name: 'boot.vhd', path: fixtureDisk, type: 'file', size: fs.statSync(fixtureDisk).size }]);
  });

  test('GetFiles refuses escapes: .., /etc and a symlink leading out are VM_E_PATH_OUTSIDE_ROOTS, and such a link is not listed; a file or a missing folder is refused', async () => {
    fs.symlinkSync('/etc', path.join(root, 'etc-link'));
    for (const escape of ['..', '../..', '/etc', '/', 'etc-link', 'fixture/../../']) {
      await refused('VirtualServer.GetFiles', { path: escape }, 'VM_E_PATH_OUTSIDE_ROOTS', [root]);
    }
    assert.ok(!(await call<{ entries: Array<{ name: string }> }>('VirtualServer.GetFiles')).entries.some((e) => e.name === 'etc-link'));
    await refused('VirtualServer.GetFiles', { path: 'fixture-disks/boot.vhd' }, 'VM_E_INVALID_PATH', ['not a folder']);
    await refused('VirtualServer.GetFiles', { path: 'no-such-folder' }, 'VM_E_FILE_NOT_FOUND', ['no-such-folder']);
  });
});

// ---------------------------------------------------------------------------------------------
// Bad inputs, for every member: the checks walk SCHEMA, so a new member is covered as it is declared.

/** A valid value of a parameter's type: enough to pass the dispatcher's checks. */
function validValue(p: ParamSpec): unknown {
  switch (p.type) {
    case 'string': return 'valid';
    case 'integer': return p.min ?? 1;
    case 'boolean': return true;
    case 'enum': return p.values[0];
    case 'ref': return fixture[p.interface];
    case 'array': return [];
    default: return null;
  }
}

function validParams(params: Record<string, ParamSpec>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(params).map(([name, p]) => [name, validValue(p)]));
}

/** Values of the wrong type for a parameter, with what they are. */
function wrongValues(p: ParamSpec): Array<[unknown, string]> {
  switch (p.type) {
    case 'string': return [[42, 'a number'], [['x'], 'a list'], [{}, 'an object']];
    case 'integer': return [['12', 'a string'], [1.5, 'a fraction'], [true, 'a boolean']];
    case 'boolean': return [['true', 'a string']];
    case 'enum': return [['NoSuchValue', 'a value not listed'], [1, 'a number']];
    case 'ref': return [[42, 'a number'], [`${p.interface === 'Task' ? 'VirtualMachine' : 'Task'}/${UNKNOWN_ID}`, 'a reference of another interface']];
    case 'array': return [['read', 'a string'], [[42], 'a list of numbers']];
    default: return [];
  }
}

/** Values of the right type outside its limits, with the limit the message must name. */
function outOfRange(p: ParamSpec): Array<[unknown, string]> {
  const cases: Array<[unknown, string]> = [];
  if (p.type === 'integer' && p.min !== undefined) cases.push([p.min - 1, String(p.min)]);
  if (p.type === 'integer' && p.max !== undefined) cases.push([p.max + 1, String(p.max)]);
  if (p.type === 'string' && p.maxLength !== undefined) cases.push(['x'.repeat(p.maxLength + 1), String(p.maxLength)]);
  if (p.type === 'string' && p.pattern !== undefined) cases.push(['not valid!', p.pattern]);
  if (p.type === 'string' && p.pattern === undefined) cases.push(['nul\u0000inside', 'NUL']);
  return cases;
}

const isPathParam = (p: ParamSpec): boolean => p.type === 'string' && p.doc.includes('storage roots');
const thisOf = (iface: string): Record<string, unknown> => (iface === 'VirtualServer' ? {} : { this: fixture[iface] });

const MEMBERS = Object.entries(SCHEMA).flatMap(([iface, spec]) => Object.entries(spec.members).map(([member, m]) => ({ iface, member, method: `${iface}.${member}`, spec: m })));

describe('virtual networks and their DHCP servers (catalog objects: this server makes no host parts)', () => {
  const dhcp = (network: Ref): string => network.$ref.replace('VirtualNetwork/', 'DHCPVirtualNetworkServer/');

  test('VirtualServer\'s network members: create, find, list, unregister and register the .vnc, delete', async () => {
    const made = await call<Ref>('VirtualServer.CreateVirtualNetwork', { name: 'members-net', kind: 'nat' });
    assert.deepEqual(await call('VirtualServer.FindVirtualNetwork', { name: 'MEMBERS-NET' }), made);
    assert.equal(await call('VirtualServer.FindVirtualNetwork', { name: 'no such network' }), null);
    assert.ok((await call<Ref[]>('VirtualServer.get_VirtualNetworks')).some((n) => n.$ref === made.$ref));
    const file = await call<string>('VirtualNetwork.get_File', { this: made.$ref });
    assert.equal(await call('VirtualServer.UnregisterVirtualNetwork', { network: made.$ref }), null);
    assert.ok(fs.existsSync(file), 'unregistering keeps the .vnc');
    assert.deepEqual(await call('VirtualServer.RegisterVirtualNetwork', { path: file }), made);
    assert.equal(await call('VirtualServer.DeleteVirtualNetwork', { network: made.$ref }), null);
    assert.equal(fs.existsSync(file), false, 'deleting removes the .vnc');
  });

  test('VirtualNetwork\'s members: settings, adapters, counters and their histories, security', async () => {
    const net = await call<Ref>('VirtualServer.CreateVirtualNetwork', { name: 'props-net', kind: 'internal' });
    const self = { this: net.$ref };
    assert.equal(await call('VirtualNetwork.put_Name', { ...self, value: 'props-net-2' }), null);
    assert.equal(await call('VirtualNetwork.get_Name', self), 'props-net-2');
    assert.equal(await call('VirtualNetwork.put_Notes', { ...self, value: 'notes' }), null);
    assert.equal(await call('VirtualNetwork.get_Notes', self), 'notes');
    assert.equal(await call('VirtualNetwork.get_Kind', self), 'internal');
    assert.equal(await call('VirtualNetwork.get_HostAdapter', self), null);
    await refused('VirtualNetwork.put_HostAdapter', { ...self, value: 'lo' }, 'VM_E_INVALID_PARAMS', ['host-connected']);
    assert.match(await call<string>('VirtualNetwork.get_File', self), /props-net\.vnc$/);
    assert.deepEqual(await call('VirtualNetwork.get_NetworkAdapters', self), []);
    assert.deepEqual(await call('VirtualNetwork.get_DHCPVirtualNetworkServer', self), { $ref: dhcp(net) });
    assert.deepEqual(await call('VirtualNetwork.get_Security', self), { $ref: 'Security/VirtualServer' });
    const counters = ['VirtualNetwork.get_BytesSent', 'VirtualNetwork.get_BytesReceived', 'VirtualNetwork.get_BytesDropped',
      'VirtualNetwork.get_PacketsSent', 'VirtualNetwork.get_PacketsReceived', 'VirtualNetwork.get_PacketsDropped'];
    for (const member of counters) assert.equal(await call(member, self), 0, member);
    const histories = ['VirtualNetwork.get_BytesSentHistory', 'VirtualNetwork.get_BytesReceivedHistory', 'VirtualNetwork.get_BytesDroppedHistory',
      'VirtualNetwork.get_PacketsSentHistory', 'VirtualNetwork.get_PacketsReceivedHistory', 'VirtualNetwork.get_PacketsDroppedHistory'];
    for (const member of histories) assert.deepEqual(await call(member, self), [], `${member}: no samples without host parts`);
    await call('VirtualServer.DeleteVirtualNetwork', { network: net.$ref });
  });

  test('DHCPVirtualNetworkServer\'s members: on and off, the server\'s settings, the lease times, the leases', async () => {
    const net = await call<Ref>('VirtualServer.CreateVirtualNetwork', { name: 'dhcp-net', kind: 'internal' });
    const self = { this: dhcp(net) };
    assert.equal(await call('DHCPVirtualNetworkServer.get_IsEnabled', self), false);
    assert.equal(await call('DHCPVirtualNetworkServer.put_IsEnabled', { ...self, value: true }), null);
    assert.equal(await call('DHCPVirtualNetworkServer.get_IsEnabled', self), true);
    assert.equal(await call('DHCPVirtualNetworkServer.ConfigureDHCPServer', {
      ...self, network: '172.16.8.0', networkMask: '255.255.252.0', startingIPAddress: '172.16.9.1', endingIPAddress: '172.16.10.254',
      serverIPAddress: '172.16.8.1', defaultGateway: '172.16.8.254', dnsServers: ['172.16.8.2'], winsServers: ['172.16.8.3'],
    }), null);
    assert.equal(await call('DHCPVirtualNetworkServer.ConfigureDHCPLeaseTimes', { ...self, leaseTime: 7200, renewalTime: 3600, rebindingTime: 6300 }), null);
    const read = async (member: string): Promise<unknown> => call(`DHCPVirtualNetworkServer.${member}`, self);
    assert.deepEqual(
      [await read('get_NetworkAddress'), await read('get_NetworkMask'), await read('get_StartingIPAddress'), await read('get_EndingIPAddress'),
        await read('get_ServerIPAddress'), await read('get_DefaultGatewayAddress'), await read('get_DNSServers'), await read('get_WINSServers'),
        await read('get_LeaseTime'), await read('get_RenewalTime'), await read('get_RebindingTime')],
      ['172.16.8.0', '255.255.252.0', '172.16.9.1', '172.16.10.254', '172.16.8.1', '172.16.8.254', ['172.16.8.2'], ['172.16.8.3'], 7200, 3600, 6300]);
    // The full names, for the check that every member is called here:
    for (const member of ['DHCPVirtualNetworkServer.get_NetworkAddress', 'DHCPVirtualNetworkServer.get_NetworkMask', 'DHCPVirtualNetworkServer.get_StartingIPAddress',
      'DHCPVirtualNetworkServer.get_EndingIPAddress', 'DHCPVirtualNetworkServer.get_ServerIPAddress', 'DHCPVirtualNetworkServer.get_DefaultGatewayAddress',
      'DHCPVirtualNetworkServer.get_DNSServers', 'DHCPVirtualNetworkServer.get_WINSServers', 'DHCPVirtualNetworkServer.get_LeaseTime',
      'DHCPVirtualNetworkServer.get_RenewalTime', 'DHCPVirtualNetworkServer.get_RebindingTime']) assert.notEqual(await call(member, self), undefined, member);
    assert.deepEqual(await call('DHCPVirtualNetworkServer.get_Leases', self), []);
    await call('VirtualServer.DeleteVirtualNetwork', { network: net.$ref });
  });

  test('NetworkAdapter\'s network members: attach and detach, static and dynamic MACs, counters; the unconnected adapters', async () => {
    const vm = await createVm('nic-members');
    const nic = await call<Ref>('VirtualMachine.AddNetworkAdapter', { this: vm });
    const self = { this: nic.$ref };
    assert.ok((await call<Ref[]>('VirtualServer.get_UnconnectedNetworkAdapters')).some((a) => a.$ref === nic.$ref));
    assert.equal(await call('NetworkAdapter.AttachToVirtualNetwork', { ...self, network: fixture.VirtualNetwork }), null);
    assert.deepEqual(await call('NetworkAdapter.get_VirtualNetwork', self), { $ref: fixture.VirtualNetwork });
    const networkName = await call<string>('VirtualNetwork.get_Name', { this: fixture.VirtualNetwork });
    assert.equal(await call('NetworkAdapter.get_VirtualNetworkName', self), networkName);
    assert.equal(await call('NetworkAdapter.DetachFromVirtualNetwork', self), null);
    assert.equal(await call('NetworkAdapter.get_VirtualNetwork', self), null);
    assert.equal(await call('NetworkAdapter.get_VirtualNetworkName', self), null, 'detached, it waits for no network');
    assert.equal(await call('NetworkAdapter.get_IsEthernetAddressDynamic', self), true);
    assert.equal(await call('NetworkAdapter.put_EthernetAddress', { ...self, value: '00:03:FF:77:66:55' }), null);
    assert.equal(await call('NetworkAdapter.get_IsEthernetAddressDynamic', self), false);
    assert.equal(await call('NetworkAdapter.put_IsEthernetAddressDynamic', { ...self, value: true }), null);
    assert.notEqual(await call('NetworkAdapter.get_EthernetAddress', self), '00:03:FF:77:66:55');
    for (const member of ['NetworkAdapter.get_BytesSent', 'NetworkAdapter.get_BytesReceived', 'NetworkAdapter.get_BytesDropped',
      'NetworkAdapter.get_PacketsSent', 'NetworkAdapter.get_PacketsReceived', 'NetworkAdapter.get_PacketsDropped']) {
      assert.equal(await call(member, self), 0, `${member}: no TAP without host parts`);
    }
  });
});

describe('bad inputs: parameters of every member', () => {
  for (const { iface, method, spec } of MEMBERS) {
    const params = spec.params ?? {};
    const names = Object.keys(params);
    test(`${method}: a missing, mistyped, out-of-range or unknown parameter is VM_E_INVALID_PARAMS naming it`, async () => {
      for (const [name, p] of Object.entries(params)) {
        if (!p.optional) {
          const given = { ...thisOf(iface), ...validParams(params) };
          delete given[name];
          const error = await refused(method, given, 'VM_E_INVALID_PARAMS', [`"${name}"`]);
          assert.equal(error.data.param, name, `${method} without ${name}: data.param`);
        }
        for (const [value, what] of wrongValues(p)) {
          const error = await refused(method, { ...thisOf(iface), ...validParams(params), [name]: value }, 'VM_E_INVALID_PARAMS', [`"${name}"`]);
          assert.equal(error.data.param, name, `${method} with ${what} as ${name}: data.param`);
        }
        for (const [value, limit] of outOfRange(p)) {
          const error = await refused(method, { ...thisOf(iface), ...validParams(params), [name]: value }, 'VM_E_INVALID_PARAMS', [`"${name}"`, limit]);
          assert.equal(error.data.param, name, `${method} with ${name} beyond ${limit}: data.param`);
        }
      }
      const error = await refused(method, { ...thisOf(iface), ...validParams(params), noSuchParam: 1 }, 'VM_E_INVALID_PARAMS', ['"noSuchParam"', ...names]);
      if (!names.length) assert.match(error.message, iface === 'VirtualServer' ? /takes none/ : /takes "this"$/);
    });
  }
});

describe('bad inputs: "this" of every member', () => {
  const VM_SCOPED: Record<string, string> = {
    VirtualMachine: `VirtualMachine/${UNKNOWN_ID}`,
    HardDiskConnection: `HardDiskConnection/${UNKNOWN_ID}/scsi0-0`,
    DVDROMDrive: `DVDROMDrive/${UNKNOWN_ID}/ide1-0`,
    SCSIController: `SCSIController/${UNKNOWN_ID}/0`,
    NetworkAdapter: `NetworkAdapter/${UNKNOWN_ID}/0`,
    GuestOS: `GuestOS/${UNKNOWN_ID}`,
    Display: `Display/${UNKNOWN_ID}`,
    Security: `Security/VirtualMachine/${UNKNOWN_ID}`,
  };
  for (const { iface, method, spec } of MEMBERS) {
    const params = spec.params ?? {};
    if (iface === 'VirtualServer') {
      test(`${method}: a "this" other than "VirtualServer" is VM_E_INVALID_PARAMS`, async () => {
        for (const self of [fixtureVm, 'Server', 42]) {
          await refused(method, { this: self, ...validParams(params) }, 'VM_E_INVALID_PARAMS', ['"this"']);
        }
      });
      continue;
    }
    test(`${method}: no "this", a "this" of another interface, or one naming no object is refused`, async () => {
      const given = validParams(params);
      await refused(method, given, 'VM_E_INVALID_PARAMS', ['"this"', SCHEMA[iface].ref]);
      await refused(method, { ...given, this: 42 }, 'VM_E_INVALID_PARAMS', ['"this"']);
      await refused(method, { ...given, this: '' }, 'VM_E_INVALID_PARAMS', ['"this"']);
      const other = iface === 'VirtualMachine' ? fixture.Task : fixtureVm;
      await refused(method, { ...given, this: other }, 'VM_E_INVALID_PARAMS', [other, iface]);
      if (VM_SCOPED[iface]) await refused(method, { ...given, this: VM_SCOPED[iface] }, 'VM_E_VM_UNKNOWN', [UNKNOWN_ID]);
      else if (iface === 'Task') await refused(method, { ...given, this: `Task/${UNKNOWN_ID}` }, 'VM_E_TASK_UNKNOWN', [UNKNOWN_ID]);
      else if (iface === 'VirtualNetwork' || iface === 'DHCPVirtualNetworkServer') await refused(method, { ...given, this: `${iface}/${UNKNOWN_ID}` }, 'VM_E_NETWORK_UNKNOWN', [UNKNOWN_ID]);
      else if (iface === 'HardDisk') {
        await refused(method, { ...given, this: 'HardDisk//etc/passwd' }, 'VM_E_PATH_OUTSIDE_ROOTS', ['/etc/passwd', root]);
        await refused(method, { ...given, this: 'HardDisk/../../x.vhd' }, 'VM_E_PATH_OUTSIDE_ROOTS', ['../../x.vhd']);
      }
    });
  }
});

describe('bad inputs: paths outside the storage roots', () => {
  for (const { iface, method, spec } of MEMBERS) {
    const pathParams = Object.entries(spec.params ?? {}).filter(([, p]) => isPathParam(p)).map(([name]) => name);
    if (!pathParams.length) continue;
    test(`${method}: ${pathParams.map((n) => `"${n}"`).join(' and ')} of /etc/passwd or ../../x.vhd is VM_E_PATH_OUTSIDE_ROOTS naming the roots, and nothing is made`, async () => {
      const before = await configOf(fixtureVm);
      for (const name of pathParams) {
        for (const outside of ['/etc/passwd', '../../x.vhd']) {
          // Every other path is a fresh name inside the root, so that only `name` is at fault.
          const fresh = Object.fromEntries(pathParams.map((n) => [n, `outside-check/${n}.vhd`]));
          const given = { ...thisOf(iface), ...validParams(spec.params ?? {}), ...fresh, ...(spec.params?.name ? { name: 'outside-check' } : {}), [name]: outside };
          await refused(method, given, 'VM_E_PATH_OUTSIDE_ROOTS', [outside, root]);
        }
      }
      assert.equal(fs.existsSync(path.join(root, 'outside-check')), false);
      assert.equal(await call('VirtualServer.FindVirtualMachine', { name: 'outside-check' }), null);
      assert.deepEqual(await configOf(fixtureVm), before);
    });
  }
});

describe('bad inputs: error codes', () => {
  test('VM_E_INVALID_PARAMS always travels as JSON-RPC code -32602, whatever found the fault', async () => {
    const codes: string[] = [];
    const check = async (label: string, method: string, params: Record<string, unknown>): Promise<void> => {
      const error = await refused(method, params, 'VM_E_INVALID_PARAMS');
      if (error.code !== -32602) codes.push(`${label}: ${error.code}`);
    };
    for (const iface of Object.keys(SCHEMA).filter((i) => i !== 'VirtualServer')) {
      const [member, spec] = Object.entries(SCHEMA[iface].members)[0];
      const other = iface === 'VirtualMachine' ? fixture.Task : fixtureVm;
      await check(`${iface}.${member} without "this"`, `${iface}.${member}`, validParams(spec.params ?? {}));
      await check(`${iface}.${member} with "this" of another interface`, `${iface}.${member}`, { this: other, ...validParams(spec.params ?? {}) });
    }
    await check('put_Memory with a string', 'VirtualMachine.put_Memory', { this: fixtureVm, value: 'lots' });
    await check('RemoveNetworkAdapter of another VM\'s adapter', 'VirtualMachine.RemoveNetworkAdapter', { this: await createVm('codes'), adapter: fixture.NetworkAdapter });
    assert.deepEqual(codes, []);
  });

  test('the unknown-parameter message of a member that takes "this" says it takes "this" too', async () => {
    const silent: string[] = [];
    for (const { iface, method, spec } of MEMBERS.filter((m) => m.iface !== 'VirtualServer')) {
      const error = await refused(method, { ...thisOf(iface), ...validParams(spec.params ?? {}), noSuchParam: 1 }, 'VM_E_INVALID_PARAMS');
      if (!error.message.includes('"this"')) silent.push(`${method}: ${error.message}`);
    }
    assert.deepEqual(silent, []);
  });
});
