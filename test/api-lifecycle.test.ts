// A VM's life through the API, end to end: a real vserverd (JSON-RPC over HTTP, events over the
// WebSocket) runs the real test guest in its workers. Each step is checked three ways: the API's
// answers, the notifications a WebSocket client receives, and the guest's own serial console.
// vserverd is then stopped (SIGTERM, applying the actions on quit), restarted (auto-start), and
// killed (-9) under running VMs that the next vserverd takes over.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { isAlive, processesMentioning } from '../host/process.js';
import { probeEngine } from '../vmm/engine.js';
import { VmPaths } from '../vmm/paths.js';
import type { VmStatus } from '../vmm/state.js';
import { GUEST_POWER_BUTTON_MARKER, GUEST_PROMPT, GUEST_READY_MARKER, testGuest } from './helpers/guest.js';
import { login, rejectsWith, RpcError, TestServer } from './helpers/server.js';
import { SerialReader } from './helpers/vm.js';
import { delay } from './helpers/wait.js';

const BOOT_MS = 120_000;
const MiB = 1024 * 1024;

interface Ref { $ref: string }
interface Vm { name: string; ref: string; id: string }
interface Note { method: string; params: Record<string, unknown> }
interface StateNote { vm: string; name: string; state: string; previous: string | null; reason: string | null }
interface LoggedEvent { id: number; category: string; severity: string; message: string; who: string; object: string | null }

/** A WebSocket client of /api/ws that keeps every notification it receives. */
class Notifications {
  readonly notes: Note[] = [];
  private waiters: Array<() => void> = [];

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const message = JSON.parse(String(data)) as { method?: string; params?: Record<string, unknown> };
      if (!message.method) return;
      this.notes.push({ method: message.method, params: message.params ?? {} });
      const pending = this.waiters;
      this.waiters = [];
      for (const wake of pending) wake();
    });
    ws.on('error', () => { /* a server killed under it: the tests that follow use a new client */ });
  }

  static connect(server: TestServer, token = server.adminToken): Promise<Notifications> {
    const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/api/ws`, { headers: { authorization: `Bearer ${token}` } });
    const client = new Notifications(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(client));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`the WebSocket upgrade was refused (${res.statusCode})`)));
      ws.once('error', reject);
    });
  }

  /** The index of the next notification, to look from. */
  get mark(): number {
    return this.notes.length;
  }

  /** The states announced for `vm` by VirtualMachine.OnStateChange from `from` on. */
  states(vm: Vm, from: number): string[] {
    return this.stateNotes(vm, from).map((n) => n.state);
  }

  stateNotes(vm: Vm, from: number): StateNote[] {
    return this.notes.slice(from)
      .filter((n) => n.method === 'VirtualMachine.OnStateChange' && n.params.vm === vm.ref)
      .map((n) => n.params as unknown as StateNote);
  }

  /** The first notification at or after `from` that `match` accepts. */
  waitFor(what: string, match: (note: Note) => boolean, from: number, timeoutMs = 30_000): Promise<Note> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check);
        const seen = this.notes.slice(from).map((n) => `${n.method} ${JSON.stringify(n.params)}`).join('\n');
        reject(new Error(`${what} was not announced over the WebSocket within ${timeoutMs} ms; it announced:\n${seen}`));
      }, timeoutMs);
      const check = (): void => {
        const found = this.notes.slice(from).find(match);
        if (found) {
          clearTimeout(timer);
          resolve(found);
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }

  waitForState(vm: Vm, state: string, from: number, timeoutMs = 30_000): Promise<StateNote> {
    return this.waitFor(`${vm.name} ${state}`, (n) => n.method === 'VirtualMachine.OnStateChange' && n.params.vm === vm.ref && n.params.state === state, from, timeoutMs)
      .then((n) => n.params as unknown as StateNote);
  }

  /** Task.OnProgress with isComplete for `task`. */
  waitForTask(task: Ref, from: number, timeoutMs = BOOT_MS): Promise<Record<string, unknown>> {
    return this.waitFor(`the completion of ${task.$ref}`, (n) => n.method === 'Task.OnProgress' && n.params.task === task.$ref && n.params.isComplete === true, from, timeoutMs)
      .then((n) => n.params);
  }

  close(): void {
    this.ws.terminate();
  }
}

let guestVhd: string;
let server: TestServer;
let events: Notifications;
/** Every server started, so that after() can find what they left. */
const folders: { dataDir: string; runDir: string }[] = [];
const consoles: SerialReader[] = [];
let alpha: Vm;
let bravo: Vm;
let charlie: Vm;
let delta: Vm;
let opsToken: string;
let viewerToken: { id: string; token: string };
/** The descriptions of the tasks vserverd started at its last start (auto-start). */
let autoStarted: string[] = [];

/** A new vserverd on new folders, or (given the one before) a restart on the same folders. */
async function startServer(reuse?: TestServer): Promise<TestServer> {
  if (reuse) return TestServer.start({ dataDir: reuse.dataDir, runDir: reuse.runDir });
  // Made here, so that after() removes them even when vserverd fails to start.
  const made = { dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-data-')), runDir: fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-run-')) };
  folders.push(made);
  return TestServer.start(made);
}

/** Waits for a task to finish and asserts it succeeded. */
async function finish(task: Ref, timeoutMs = BOOT_MS): Promise<void> {
  assert.match(task.$ref, /^Task\//);
  assert.equal(await server.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs }), true, `${task.$ref} did not finish within ${timeoutMs} ms`);
  const error = await server.call('Task.get_Error', { this: task.$ref });
  assert.equal(error, null, `${task.$ref} failed: ${JSON.stringify(error)}`);
  assert.equal(await server.call('Task.get_PercentCompleted', { this: task.$ref }), 100);
}

async function state(vm: Vm, token?: string): Promise<string> {
  return server.call<string>('VirtualMachine.get_State', { this: vm.ref }, token);
}

async function waitForState(vm: Vm, wanted: string, timeoutMs = BOOT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let now = await state(vm);
  while (now !== wanted) {
    if (Date.now() > deadline) assert.fail(`${vm.name} is ${now}, not ${wanted}, after ${timeoutMs} ms`);
    await delay(100);
    now = await state(vm);
  }
}

/** Turns a VM on by the API and waits for its Startup task. */
async function startup(vm: Vm): Promise<Ref> {
  const task = await server.call<Ref>('VirtualMachine.Startup', { this: vm.ref });
  await finish(task);
  return task;
}

/** COM1 of a running VM, through its worker's console socket in the server's run folder. */
async function serialOf(vm: Vm): Promise<SerialReader> {
  const reader = await SerialReader.attach(VmPaths.of(vm.id, server.runDir).console);
  consoles.push(reader);
  return reader;
}

/** Waits for the guest's marker and then its shell prompt (from `from` on the console). */
async function waitForGuest(serial: SerialReader, from = 0): Promise<void> {
  const ready = await serial.waitFor(GUEST_READY_MARKER, BOOT_MS, from);
  await serial.waitFor(GUEST_PROMPT, BOOT_MS, ready);
}

function markers(text: string): number {
  return text.split(GUEST_READY_MARKER).length - 1;
}

function statusOf(vm: Vm): VmStatus | null {
  return VmPaths.of(vm.id, server.runDir).readStatus();
}

function pidsOf(vm: Vm): { worker: number; qemu: number } {
  const status = statusOf(vm);
  assert.ok(status?.workerPid && status.qemuPid, `${vm.name}'s status.json has no pids: ${JSON.stringify(status)}`);
  return { worker: status.workerPid, qemu: status.qemuPid };
}

async function waitGone(pid: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) assert.fail(`process ${pid} is still alive after ${timeoutMs} ms`);
    await delay(50);
  }
}

/** Live processes (workers, QEMU) whose command line mentions the VM's run folder. */
function processesOf(vm: Vm, runDir = server.runDir): number[] {
  return processesMentioning(VmPaths.of(vm.id, runDir).dir).filter(isAlive);
}

async function getEvents(query: Record<string, unknown>): Promise<LoggedEvent[]> {
  return server.call<LoggedEvent[]>('VirtualServer.GetEvents', { limit: 1000, ...query });
}

async function lastEventId(): Promise<number> {
  let since = 0;
  for (;;) {
    const page = await getEvents({ since });
    if (page.length < 1000) return page.at(-1)?.id ?? since;
    since = page.at(-1)!.id;
  }
}

/**
 * Creates a VM by the API as the brief of a guest VM: 256 MB, a SCSI adapter holding a
 * differencing child of the guest's disk (made by the API inside the storage root), one NIC.
 */
async function createGuestVm(name: string): Promise<Vm> {
  const vm = await createVm(name);
  await server.call('VirtualMachine.put_Memory', { this: vm.ref, value: 256 });
  const adapter = await server.call<Ref>('VirtualMachine.AddSCSIController', { this: vm.ref });
  assert.equal(adapter.$ref, `SCSIController/${vm.id}/0`);
  await finish(await server.call<Ref>('VirtualServer.CreateDifferencingVirtualHardDisk', { path: `disks/${name}.vhd`, parentPath: 'disks/template.vhd' }));
  const connection = await server.call<Ref>('VirtualMachine.AddHardDiskConnection', { this: vm.ref, path: `disks/${name}.vhd`, busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
  assert.equal(connection.$ref, `HardDiskConnection/${vm.id}/scsi0-0`);
  await server.call('VirtualMachine.AddNetworkAdapter', { this: vm.ref });
  return vm;
}

async function createVm(name: string): Promise<Vm> {
  const made = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name });
  assert.match(made.$ref, /^VirtualMachine\/[0-9a-f-]{36}$/);
  return { name, ref: made.$ref, id: made.$ref.slice('VirtualMachine/'.length) };
}

describe('a VM\'s life cycle through the API of a real vserverd', { timeout: 600_000 }, () => {
  before(async () => {
    guestVhd = testGuest().bootVhd;
    server = await startServer();
    events = await Notifications.connect(server);
    // The guest's disk, copied inside the data folder (the only storage root) as a template.
    fs.mkdirSync(path.join(server.dataDir, 'disks'), { recursive: true });
    fs.copyFileSync(guestVhd, path.join(server.dataDir, 'disks', 'template.vhd'));
  });

  after(async () => {
    events?.close();
    for (const reader of consoles) reader.close();
    if (server && server.process.exitCode === null && server.process.signalCode === null) {
      for (const vm of [alpha, bravo, charlie, delta]) {
        if (!vm) continue;
        try {
          if (['Running', 'Paused', 'TurningOn', 'Restoring'].includes(await state(vm))) {
            await finish(await server.call<Ref>('VirtualMachine.TurnOff', { this: vm.ref }), 30_000);
          }
        } catch {
          // a VM that will not turn off is killed below
        }
      }
      await server.stop();
    }
    for (const { dataDir, runDir } of folders) {
      for (const pid of processesMentioning(runDir).filter(isAlive)) process.kill(pid, 'SIGKILL');
      fs.rmSync(dataDir, { recursive: true, force: true });
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  });

  // --- 1. created and turned on by the API ---------------------------------------------------------

  it('creates a VM by the API: 256 MB, a SCSI adapter with a differencing child of the guest\'s disk, a network adapter', async () => {
    alpha = await createGuestVm('alpha');
    assert.equal(await server.call('VirtualMachine.get_Memory', { this: alpha.ref }), 256);
    assert.equal(await state(alpha), 'TurnedOff');
    const config = await server.call<{ scsi: { disks: { path: string }[] }[]; networkAdapters: unknown[] }>('VirtualMachine.get_Configuration', { this: alpha.ref });
    assert.equal(config.scsi[0].disks[0].path, path.join(server.dataDir, 'disks', 'alpha.vhd'));
    assert.equal(config.networkAdapters.length, 1);
    const parent = await server.call<Ref>('HardDisk.get_Parent', { this: `HardDisk/${path.join(server.dataDir, 'disks', 'alpha.vhd')}` });
    assert.equal(parent.$ref, `HardDisk/${path.join(server.dataDir, 'disks', 'template.vhd')}`);
    assert.equal(await server.call('VirtualMachine.get_Uptime', { this: alpha.ref }), null, 'no uptime while it is off');
    assert.equal(await server.call('Display.get_Thumbnail', { this: `Display/${alpha.id}` }), null, 'no screen while it is off');
  });

  it('Startup returns a task; the WebSocket announces TurningOn, Running and the task\'s completion; the guest boots', async () => {
    const from = events.mark;
    const task = await server.call<Ref>('VirtualMachine.Startup', { this: alpha.ref });
    assert.match(task.$ref, /^Task\/[0-9a-f-]{36}$/);
    const done = await events.waitForTask(task, from);
    assert.equal(done.error, null);
    assert.equal(done.percentCompleted, 100);
    assert.equal(done.description, 'Startup of alpha');
    await events.waitForState(alpha, 'Running', from);
    assert.deepEqual(events.states(alpha, from), ['TurningOn', 'Running']);
    assert.deepEqual(events.stateNotes(alpha, from).map((n) => n.previous), ['TurnedOff', 'TurningOn']);
    assert.ok(events.stateNotes(alpha, from).every((n) => n.name === 'alpha'));
    const serial = await serialOf(alpha);
    await waitForGuest(serial);
    assert.equal(await state(alpha), 'Running');
  });

  it('reports the engine (the one this host\'s probe chooses, with its reason), the uptime and a PNG thumbnail of the screen', async () => {
    const engine = await server.call<{ engine: string; reason: string }>('VirtualMachine.get_Engine', { this: alpha.ref });
    assert.deepEqual(engine, await probeEngine());
    const host = await server.call<{ engine: string }>('VirtualServer.get_HostInfo');
    assert.equal(host.engine, engine.engine);
    const uptime = await server.call<number>('VirtualMachine.get_Uptime', { this: alpha.ref });
    assert.ok(Number.isInteger(uptime) && uptime >= 0 && uptime < 600, `uptime ${uptime}`);
    const thumbnail = await server.call<{ mimeType: string; width: number; height: number; data: string }>('Display.get_Thumbnail', { this: `Display/${alpha.id}` });
    assert.equal(thumbnail.mimeType, 'image/png');
    const png = Buffer.from(thumbnail.data, 'base64');
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'the PNG signature');
    assert.equal(png.subarray(12, 16).toString('latin1'), 'IHDR');
    assert.ok(png.readUInt32BE(16) > 0 && png.readUInt32BE(20) > 0);
    assert.deepEqual([thumbnail.width, thumbnail.height], [png.readUInt32BE(16), png.readUInt32BE(20)]);
  });

  it('refuses a second Startup of the running VM with VM_E_VM_RUNNING', async () => {
    await rejectsWith(server.call('VirtualMachine.Startup', { this: alpha.ref }), 'VM_E_VM_RUNNING', /alpha.*Running/);
    assert.equal(await state(alpha), 'Running');
  });

  it('refuses configuration changes while the VM runs (nothing changes) but accepts its notes', async () => {
    const before = await server.call('VirtualMachine.get_Configuration', { this: alpha.ref });
    const vmcPath = await server.call<string>('VirtualMachine.get_File', { this: alpha.ref });
    const vmc = fs.readFileSync(vmcPath, 'utf8');
    await rejectsWith(server.call('VirtualMachine.put_Memory', { this: alpha.ref, value: 512 }), 'VM_E_VM_RUNNING', /alpha is Running/);
    await rejectsWith(server.call('VirtualMachine.AddNetworkAdapter', { this: alpha.ref }), 'VM_E_VM_RUNNING', /alpha is Running/);
    assert.equal(await server.call('VirtualMachine.get_Memory', { this: alpha.ref }), 256);
    assert.equal((await server.call<Ref[]>('VirtualMachine.get_NetworkAdapters', { this: alpha.ref })).length, 1);
    assert.deepEqual(await server.call('VirtualMachine.get_Configuration', { this: alpha.ref }), before);
    assert.equal(fs.readFileSync(vmcPath, 'utf8'), vmc, 'the .vmc is untouched');
    await server.call('VirtualMachine.put_Notes', { this: alpha.ref, value: 'the web front end' });
    assert.equal(await server.call('VirtualMachine.get_Notes', { this: alpha.ref }), 'the web front end');
    assert.equal(await state(alpha), 'Running');
  });

  // --- 2. two clients racing -----------------------------------------------------------------------

  it('of two clients racing to start a turned-off VM, one gets a task that completes and the other VM_E_VM_RUNNING', async () => {
    bravo = await createGuestVm('bravo');
    await server.call('VirtualServer.CreateUser', { name: 'ops', password: 'ops-password-1', role: 'Operator' });
    opsToken = await login(server.url, 'ops', 'ops-password-1');
    const from = events.mark;
    const results = await Promise.allSettled([
      server.call<Ref>('VirtualMachine.Startup', { this: bravo.ref }),
      server.call<Ref>('VirtualMachine.Startup', { this: bravo.ref }, opsToken),
    ]);
    const won = results.filter((r): r is PromiseFulfilledResult<Ref> => r.status === 'fulfilled');
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    assert.equal(won.length, 1, `exactly one Startup gets a task: ${JSON.stringify(results.map((r) => r.status))}`);
    assert.equal(lost.length, 1);
    const refusal = lost[0].reason as RpcError;
    assert.ok(refusal instanceof RpcError, String(refusal));
    assert.equal(refusal.data.name, 'VM_E_VM_RUNNING');
    assert.match(refusal.message, /bravo is already (being turned on|TurningOn|Running)/);
    await finish(won[0].value);
    assert.equal(await state(bravo), 'Running');
    await events.waitForState(bravo, 'Running', from);
    assert.deepEqual(events.states(bravo, from), ['TurningOn', 'Running'], 'one turn on, not two');
  });

  // --- 3. pause, save, restore, reset, shut down, turn off, discard --------------------------------

  it('pauses (Paused, announced) and resumes (Running, announced)', async () => {
    const from = events.mark;
    assert.equal(await server.call('VirtualMachine.Pause', { this: alpha.ref }), null);
    assert.equal(await state(alpha), 'Paused');
    assert.deepEqual(await events.waitForState(alpha, 'Paused', from), { vm: alpha.ref, name: 'alpha', state: 'Paused', previous: 'Running', reason: null });
    await rejectsWith(server.call('VirtualMachine.Pause', { this: alpha.ref }), 'VM_E_VM_NOT_RUNNING');
    await server.call('VirtualMachine.Resume', { this: alpha.ref });
    assert.equal(await state(alpha), 'Running');
    await events.waitForState(alpha, 'Running', from);
    assert.deepEqual(events.states(alpha, from), ['Paused', 'Running']);
  });

  it('saves (a task; Saving, TurningOff, TurnedOff, Saved): the .vsv holds the memory and the worker and QEMU go away', async () => {
    const serial = consoles[0];
    assert.equal((await serial.run('echo "kept-$((6*7))" > /tmp/api-lifecycle; cat /tmp/api-lifecycle')).trim(), 'kept-42');
    const { worker, qemu } = pidsOf(alpha);
    const from = events.mark;
    const task = await server.call<Ref>('VirtualMachine.Save', { this: alpha.ref });
    await finish(task);
    assert.equal(await server.call('Task.get_Description', { this: task.$ref }), 'Save state of alpha');
    await events.waitForState(alpha, 'Saved', from);
    assert.deepEqual(events.states(alpha, from), ['Saving', 'TurningOff', 'TurnedOff', 'Saved']);
    assert.equal(await state(alpha), 'Saved');
    const vsv = await server.call<string>('VirtualMachine.get_SavedStateFilePath', { this: alpha.ref });
    assert.equal(path.dirname(vsv), path.join(server.dataDir, 'alpha'));
    assert.ok(fs.statSync(vsv).size > 1 * MiB, 'the .vsv holds the memory');
    await waitGone(qemu);
    await waitGone(worker);
    assert.equal(await server.call('VirtualMachine.get_Uptime', { this: alpha.ref }), null);
    await rejectsWith(server.call('VirtualMachine.put_Memory', { this: alpha.ref, value: 512 }), 'VM_E_VM_SAVED');
  });

  it('Startup of the saved VM restores it (TurningOn, Restoring, Running): the guest did not boot again', async () => {
    const from = events.mark;
    const task = await startup(alpha);
    assert.equal(await server.call('Task.get_Description', { this: task.$ref }), 'Restore of alpha');
    await events.waitForState(alpha, 'Running', from);
    assert.deepEqual(events.states(alpha, from), ['TurningOn', 'Restoring', 'Running']);
    assert.equal(await state(alpha), 'Running');
    assert.ok(!fs.existsSync(await server.call<string>('VirtualMachine.get_SavedStateFilePath', { this: alpha.ref })), 'the saved state is used up');
    const serial = await serialOf(alpha);
    assert.equal((await serial.run('cat /tmp/api-lifecycle')).trim(), 'kept-42', 'what the guest had in /tmp is still there');
    assert.equal(markers(serial.text), 0, 'the guest did not boot again');
  });

  it('resets (a task; TurningOff, TurningOn, Running): the guest boots again', async () => {
    const serial = consoles.at(-1)!;
    const at = serial.text.length;
    const from = events.mark;
    await finish(await server.call<Ref>('VirtualMachine.Reset', { this: alpha.ref }));
    await events.waitForState(alpha, 'Running', from);
    assert.deepEqual(events.states(alpha, from), ['TurningOff', 'TurningOn', 'Running']);
    await waitForGuest(serial, at);
    assert.equal((await serial.run('cat /tmp/api-lifecycle 2>&1 || echo gone')).trim().split('\n').at(-1), 'gone', 'a fresh boot has an empty /tmp');
  });

  it('GuestOS.Shutdown presses the power button: the task completes once the guest has powered itself off', async () => {
    const serial = consoles.at(-1)!;
    const { worker, qemu } = pidsOf(alpha);
    const from = events.mark;
    const task = await server.call<Ref>('GuestOS.Shutdown', { this: `GuestOS/${alpha.id}` });
    await finish(task, 60_000);
    assert.equal(await state(alpha), 'TurnedOff');
    assert.ok(serial.text.includes(GUEST_POWER_BUTTON_MARKER), 'the guest saw the power button');
    await events.waitForState(alpha, 'TurnedOff', from);
    assert.deepEqual(events.states(alpha, from), ['TurningOff', 'TurnedOff']);
    assert.equal(events.stateNotes(alpha, from).at(-1)!.reason, 'the guest shut down');
    await waitGone(qemu);
    await waitGone(worker);
  });

  it('TurnOff (a task) cuts the power: TurningOff, TurnedOff, "turned off"', async () => {
    await startup(alpha);
    const { qemu } = pidsOf(alpha);
    const from = events.mark;
    await finish(await server.call<Ref>('VirtualMachine.TurnOff', { this: alpha.ref }), 30_000);
    assert.equal(await state(alpha), 'TurnedOff');
    await events.waitForState(alpha, 'TurnedOff', from);
    assert.deepEqual(events.states(alpha, from), ['TurningOff', 'TurnedOff']);
    assert.equal(events.stateNotes(alpha, from).at(-1)!.reason, 'turned off');
    await waitGone(qemu);
    await rejectsWith(server.call('VirtualMachine.TurnOff', { this: alpha.ref }), 'VM_E_VM_NOT_RUNNING');
  });

  it('DiscardSavedState of a saved VM deletes its .vsv: it is TurnedOff, and that is announced', async () => {
    const { worker } = pidsOf(bravo);
    await finish(await server.call<Ref>('VirtualMachine.Save', { this: bravo.ref }));
    assert.equal(await state(bravo), 'Saved');
    await waitGone(worker); // settled: no worker is left to announce anything
    const vsv = await server.call<string>('VirtualMachine.get_SavedStateFilePath', { this: bravo.ref });
    assert.ok(fs.existsSync(vsv));
    const from = events.mark;
    await server.call('VirtualMachine.DiscardSavedState', { this: bravo.ref });
    assert.equal(await state(bravo), 'TurnedOff');
    assert.ok(!fs.existsSync(vsv));
    await rejectsWith(server.call('VirtualMachine.DiscardSavedState', { this: bravo.ref }), 'VM_E_NO_SAVED_STATE');
    const announced = await events.waitForState(bravo, 'TurnedOff', from, 3_000);
    assert.equal(announced.previous, 'Saved');
  });

  // --- 4. persistence across a restart -------------------------------------------------------------

  it('settings, users, tokens and the event log survive a restart of vserverd; the old tokens still work', async () => {
    await server.call('VirtualMachine.put_Notes', { this: alpha.ref, value: 'kept across restarts' });
    await server.call('VirtualMachine.put_Memory', { this: alpha.ref, value: 320 });
    await server.call('VirtualMachine.put_AutoStartAtLaunch', { this: alpha.ref, value: 'Never' });
    await server.call('VirtualMachine.put_AutoStartAtLaunchDelay', { this: alpha.ref, value: 7 });
    await server.call('VirtualMachine.put_ShutdownActionOnQuit', { this: alpha.ref, value: 'Shutdown' });
    viewerToken = await server.call<{ id: string; token: string }>('VirtualServer.CreateToken', { description: 'kept across restarts', role: 'Viewer' });
    const alphaEvents = await getEvents({ object: alpha.ref });
    assert.ok(alphaEvents.some((e) => e.message.startsWith('VirtualMachine.put_Notes on alpha')), 'the change is in the log');
    const oldAdminToken = server.adminToken;

    events.close();
    assert.equal(await server.stop('SIGTERM'), 0);
    server = await startServer(server);
    events = await Notifications.connect(server);

    const get = (member: string): Promise<unknown> => server.call(`VirtualMachine.get_${member}`, { this: alpha.ref }, oldAdminToken);
    assert.equal(await get('Notes'), 'kept across restarts');
    assert.equal(await get('Memory'), 320);
    assert.equal(await get('AutoStartAtLaunch'), 'Never');
    assert.equal(await get('AutoStartAtLaunchDelay'), 7);
    assert.equal(await get('ShutdownActionOnQuit'), 'Shutdown');
    assert.equal(await get('State'), 'TurnedOff');
    assert.equal(await server.call('VirtualMachine.get_Notes', { this: bravo.ref }), '');
    const users = await server.call<{ name: string; role: string }[]>('VirtualServer.get_Users', {}, oldAdminToken);
    assert.deepEqual(users.map((u) => [u.name, u.role]).sort(), [['admin', 'Administrator'], ['ops', 'Operator']]);
    const tokens = await server.call<{ id: string; description: string; role: string }[]>('VirtualServer.get_Tokens', {}, oldAdminToken);
    assert.deepEqual(tokens.filter((t) => t.id === viewerToken.id).map((t) => [t.description, t.role]), [['kept across restarts', 'Viewer']]);
    assert.equal(await server.call('VirtualMachine.get_Name', { this: alpha.ref }, viewerToken.token), 'alpha', 'the API token still works');
    await rejectsWith(server.call('VirtualMachine.put_Notes', { this: alpha.ref, value: 'x' }, viewerToken.token), 'VM_E_ACCESS_DENIED');
    assert.equal(await server.call('VirtualMachine.get_State', { this: bravo.ref }, opsToken), 'TurnedOff', 'the Operator\'s sign-in token still works');
    const after = await getEvents({ object: alpha.ref });
    assert.deepEqual(after.slice(0, alphaEvents.length), alphaEvents, 'the log kept every entry');
    const serverEvents = await getEvents({ category: 'Virtual Server' });
    const stopped = serverEvents.findLastIndex((e) => e.message === 'vserverd stopped (SIGTERM)');
    assert.ok(stopped >= 0, 'the stop is logged');
    assert.ok(serverEvents.slice(stopped + 1).some((e) => /^vserverd \S+ started/.test(e.message)), 'and so is the start after it');
  });

  // --- 5. SIGTERM applies the actions on quit; the next start turns VMs back on --------------------

  it('SIGTERM applies each running VM\'s action on quit (Save, TurnOff, Shutdown) and vserverd exits 0', async () => {
    charlie = await createGuestVm('charlie');
    delta = await createVm('delta'); // no disk: SeaBIOS waits for a boot device, cheaply
    const set = async (vm: Vm, settings: Record<string, unknown>): Promise<void> => {
      for (const [member, value] of Object.entries(settings)) await server.call(`VirtualMachine.put_${member}`, { this: vm.ref, value });
    };
    await set(alpha, { ShutdownActionOnQuit: 'Save', AutoStartAtLaunch: 'IfRunningAtQuit', AutoStartAtLaunchDelay: 0 });
    await set(bravo, { ShutdownActionOnQuit: 'TurnOff' });
    await set(charlie, { ShutdownActionOnQuit: 'Shutdown', AutoStartAtLaunch: 'Never' });
    await set(delta, { AutoStartAtLaunch: 'Always', AutoStartAtLaunchDelay: 2 });
    assert.equal(await server.call('VirtualMachine.get_AutoStartAtLaunch', { this: bravo.ref }), 'IfRunningAtQuit', 'the default');
    assert.equal(await server.call('VirtualMachine.get_AutoStartAtLaunchDelay', { this: bravo.ref }), 0, 'the default');

    const running = [alpha, bravo, charlie];
    await Promise.all(running.map((vm) => startup(vm)));
    const serials = await Promise.all(running.map((vm) => serialOf(vm)));
    await Promise.all(serials.map((s) => waitForGuest(s)));
    assert.equal((await serials[0].run('echo "saved-$((6*7))" > /tmp/api-lifecycle; cat /tmp/api-lifecycle')).trim(), 'saved-42');
    const pids = running.map((vm) => pidsOf(vm));
    const vsv = await server.call<string>('VirtualMachine.get_SavedStateFilePath', { this: alpha.ref });
    const since = await lastEventId();

    events.close();
    const started = Date.now();
    assert.equal(await server.stop('SIGTERM'), 0, `vserverd's exit status; it said:\n${server.output}`);
    assert.ok(Date.now() - started < 60_000);
    for (const { worker, qemu } of pids) {
      await waitGone(qemu);
      await waitGone(worker);
    }
    for (const vm of running) assert.deepEqual(processesOf(vm), [], `no process is left for ${vm.name}`);
    assert.ok(fs.statSync(vsv).size > 1 * MiB, 'alpha was saved');
    assert.equal(statusOf(alpha)?.state, 'Saved');
    assert.equal(statusOf(bravo)?.state, 'TurnedOff');
    assert.equal(statusOf(bravo)?.stopReason, 'turned off');
    assert.equal(statusOf(charlie)?.state, 'TurnedOff');
    assert.equal(statusOf(charlie)?.stopReason, 'the guest shut down');
    assert.ok(serials[2].text.includes(GUEST_POWER_BUTTON_MARKER), 'charlie\'s guest saw the power button');
    assert.match(server.output, /alpha: Save done/);
    assert.match(server.output, /bravo: TurnOff done/);
    assert.match(server.output, /charlie: Shutdown done/);

    // The next start: alpha and bravo ran at quit and come back at once; charlie (Never) stays off;
    // delta (Always, 2 s) was off at quit and comes on after its delay.
    const restarted = new Date().toISOString();
    server = await startServer(server);
    const up = Date.now();
    await delay(Math.max(0, 500 - (Date.now() - up)));
    assert.equal(await state(delta), 'TurnedOff', 'delta waits for its delay of 2 s');
    events = await Notifications.connect(server);
    const logged = await getEvents({ since });
    for (const [vm, action] of [[alpha, 'Save'], [bravo, 'TurnOff'], [charlie, 'Shutdown']] as const) {
      assert.ok(logged.some((e) => e.message === `${vm.name}: action on quit applied (${action})` && e.object === vm.ref && e.severity === 'Information'),
        `the log records ${vm.name}'s action on quit: ${logged.map((e) => e.message).join(' | ')}`);
    }
    assert.ok(logged.some((e) => e.message === 'vserverd stopped (SIGTERM)'));
    await waitForState(alpha, 'Running', 60_000);
    await waitForState(bravo, 'Running', 60_000);
    await waitForState(delta, 'Running', 60_000);
    assert.ok(Date.now() - up >= 1_500, 'delta came on after about its delay');
    assert.equal(await state(charlie), 'TurnedOff', 'charlie (Never) stays off');
    autoStarted = [];
    for (const task of await server.call<Ref[]>('VirtualServer.get_Tasks')) {
      if (await server.call<string>('Task.get_Started', { this: task.$ref }) < restarted) continue;
      autoStarted.push(await server.call<string>('Task.get_Description', { this: task.$ref }));
      await finish(task);
    }
  });

  it('auto-start restored the saved VM (no reboot, its .vsv used up) and booted the turned-off one', async () => {
    assert.deepEqual(autoStarted.sort(), ['Restore of alpha', 'Startup of bravo', 'Startup of delta'], 'the tasks since the restart');
    assert.ok(!fs.existsSync(await server.call<string>('VirtualMachine.get_SavedStateFilePath', { this: alpha.ref })));
    const alphaSerial = await serialOf(alpha);
    assert.equal((await alphaSerial.run('cat /tmp/api-lifecycle')).trim(), 'saved-42');
    assert.equal(markers(alphaSerial.text), 0, 'alpha did not boot again');
    const logged = await getEvents({ category: 'Virtual Machine' });
    for (const vm of [alpha, bravo, delta]) {
      assert.ok(logged.some((e) => e.message.startsWith(`VirtualMachine.Startup on ${vm.name}`) && e.who === 'vserverd'), `the log says vserverd turned ${vm.name} on`);
    }
  });

  // --- 6. kill -9: the VMs run on, and the next vserverd takes them over ---------------------------

  it('after kill -9 of vserverd the VMs run on; the next vserverd reattaches without a reboot and can turn them off', async () => {
    const serial = await serialOf(bravo);
    await waitForGuest(serial);
    assert.equal((await serial.run('echo "alive-$((6*7))" > /tmp/api-lifecycle; cat /tmp/api-lifecycle')).trim(), 'alive-42');
    const { worker, qemu } = pidsOf(bravo);
    const alphaPids = pidsOf(alpha);
    const uptime = await server.call<number>('VirtualMachine.get_Uptime', { this: bravo.ref });

    events.close();
    await server.stop('SIGKILL');
    await delay(1_000);
    for (const pid of [worker, qemu, alphaPids.worker, alphaPids.qemu]) assert.ok(isAlive(pid), `process ${pid} still runs`);
    assert.equal(statusOf(bravo)?.state, 'Running');

    server = await startServer(server);
    events = await Notifications.connect(server);
    assert.equal(await state(bravo), 'Running');
    assert.equal(await state(alpha), 'Running');
    assert.equal(await state(charlie), 'TurnedOff');
    assert.deepEqual(pidsOf(bravo), { worker, qemu }, 'the same worker and QEMU');
    const started = await getEvents({ category: 'Virtual Server' });
    assert.match(started.at(-1)!.message, /reattached to .*alpha.*bravo|reattached to .*bravo.*alpha/);
    const again = await serialOf(bravo);
    assert.equal((await again.run('cat /tmp/api-lifecycle')).trim(), 'alive-42');
    assert.equal(markers(again.text), 1, 'the guest booted once, before the kill');
    assert.equal((await server.call<{ engine: string }>('VirtualMachine.get_Engine', { this: bravo.ref })).engine, (await probeEngine()).engine);
    assert.ok(await server.call<number>('VirtualMachine.get_Uptime', { this: bravo.ref }) >= uptime + 1, 'the uptime runs on from before the kill');

    const from = events.mark;
    await finish(await server.call<Ref>('VirtualMachine.TurnOff', { this: bravo.ref }), 30_000);
    const off = await events.waitForState(bravo, 'TurnedOff', from);
    assert.equal(off.reason, 'turned off');
    assert.deepEqual(events.states(bravo, from), ['TurningOff', 'TurnedOff']);
    assert.equal(await state(bravo), 'TurnedOff');
    await waitGone(qemu);
    await waitGone(worker);
  });

  it('turning every VM off leaves no worker or QEMU process behind', async () => {
    for (const vm of [alpha, bravo, charlie, delta]) {
      if (await state(vm) !== 'TurnedOff') await finish(await server.call<Ref>('VirtualMachine.TurnOff', { this: vm.ref }), 30_000);
    }
    for (const vm of [alpha, bravo, charlie, delta]) assert.equal(await state(vm), 'TurnedOff');
    const deadline = Date.now() + 15_000;
    while (processesMentioning(server.runDir).filter(isAlive).length && Date.now() < deadline) await delay(100);
    assert.deepEqual(processesMentioning(server.runDir).filter(isAlive), []);
    assert.equal(await server.stop('SIGTERM'), 0);
  });
});
