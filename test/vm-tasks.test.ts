// A VM's tasks tell the truth: a save and a restore of the real test guest announce real,
// bounded progress over the WebSocket and log their phases with a rate, not one line per chunk;
// a Startup cut by kill -9 of vserverd is settled from what the VM's worker reports afterwards.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { PROGRESS_INTERVAL_MS } from '../server/tasks.js';
import { isAlive, processesMentioning } from '../host/process.js';
import { VmPaths } from '../vmm/paths.js';
import { GUEST_PROMPT, GUEST_READY_MARKER, testGuest } from './helpers/guest.js';
import { TestServer } from './helpers/server.js';
import { SerialReader } from './helpers/vm.js';
import { delay } from './helpers/wait.js';

const BOOT_MS = 120_000;
/** At most 5 a second (one per PROGRESS_INTERVAL_MS), and one more for a second's edges. */
const MAX_PER_SECOND = 1000 / PROGRESS_INTERVAL_MS + 1;

interface Ref { $ref: string }
interface Vm { name: string; ref: string; id: string }
interface Announcement { at: number; percent: number; complete: boolean; error: unknown }

/** Every Task.OnProgress a WebSocket client receives, by task, with its arrival time. */
class ProgressWatch {
  readonly byTask = new Map<string, Announcement[]>();
  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const message = JSON.parse(String(data)) as { method?: string; params?: { task: string; percentCompleted: number; isComplete: boolean; error: unknown } };
      if (message.method !== 'Task.OnProgress' || !message.params) return;
      const { task, percentCompleted, isComplete, error } = message.params;
      const list = this.byTask.get(task) ?? [];
      list.push({ at: Date.now(), percent: percentCompleted, complete: isComplete, error });
      this.byTask.set(task, list);
    });
    ws.on('error', () => { /* vserverd killed under it */ });
  }

  static connect(server: TestServer): Promise<ProgressWatch> {
    const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/api/ws`, { headers: { authorization: `Bearer ${server.adminToken}` } });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new ProgressWatch(ws)));
      ws.once('error', reject);
    });
  }

  of(task: Ref): Announcement[] {
    return this.byTask.get(task.$ref) ?? [];
  }

  close(): void {
    this.ws.terminate();
  }
}

let server: TestServer;
let watch: ProgressWatch;
const folders: { dataDir: string; runDir: string }[] = [];
const consoles: SerialReader[] = [];

async function finished(task: Ref, timeoutMs = BOOT_MS): Promise<{ error: unknown; percent: number; log: string[] }> {
  assert.equal(await server.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs }), true, `${task.$ref} did not finish within ${timeoutMs} ms`);
  return {
    error: await server.call('Task.get_Error', { this: task.$ref }),
    percent: await server.call<number>('Task.get_PercentCompleted', { this: task.$ref }),
    log: await server.call<string[]>('Task.get_Log', { this: task.$ref }),
  };
}

async function state(vm: Vm): Promise<string> {
  return server.call<string>('VirtualMachine.get_State', { this: vm.ref });
}

/** A VM of `memoryMB` booting a differencing child of the test guest's disk. */
async function createGuestVm(name: string, memoryMB: number): Promise<Vm> {
  const made = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name });
  const vm = { name, ref: made.$ref, id: made.$ref.slice('VirtualMachine/'.length) };
  await server.call('VirtualMachine.put_Memory', { this: vm.ref, value: memoryMB });
  await server.call('VirtualMachine.AddSCSIController', { this: vm.ref });
  const child = await finished(await server.call<Ref>('VirtualServer.CreateDifferencingVirtualHardDisk', { path: `disks/${name}.vhd`, parentPath: 'disks/template.vhd' }));
  assert.equal(child.error, null);
  await server.call('VirtualMachine.AddHardDiskConnection', { this: vm.ref, path: `disks/${name}.vhd`, busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
  return vm;
}

async function waitForGuest(vm: Vm): Promise<SerialReader> {
  const serial = await SerialReader.attach(VmPaths.of(vm.id, server.runDir).console);
  consoles.push(serial);
  const ready = await serial.waitFor(GUEST_READY_MARKER, BOOT_MS);
  await serial.waitFor(GUEST_PROMPT, BOOT_MS, ready);
  return serial;
}

/** Announcements of a task, checked: bounded in number and rate, percents rising to 100, some between. */
function checkAnnouncements(what: string, list: Announcement[]): void {
  const shown = list.map((a) => `${a.at - list[0].at}ms ${a.percent}${a.complete ? ' done' : ''}`).join(', ');
  assert.ok(list.length > 0, `${what}: nothing was announced`);
  assert.ok(list.length <= 101, `${what}: ${list.length} announcements (at most 101): ${shown}`);
  const last = list.at(-1)!;
  assert.ok(last.complete && last.percent === 100 && last.error === null, `${what}: the last announcement is the completion at 100%: ${shown}`);
  const percents = list.map((a) => a.percent);
  for (let i = 1; i < percents.length; i++) assert.ok(percents[i] > percents[i - 1], `${what}: percents rise strictly: ${shown}`);
  // Not 0 then 100: as many percents between as the task's length allows at one per interval, up to 3.
  const between = percents.filter((p) => p > 0 && p < 100);
  const wanted = Math.max(1, Math.min(3, Math.floor((last.at - list[0].at) / PROGRESS_INTERVAL_MS) - 1));
  assert.ok(between.length >= wanted, `${what}: at least ${wanted} percents between 0 and 100: ${shown}`);
  for (const a of list) {
    const inSecond = list.filter((b) => b.at >= a.at && b.at < a.at + 1000).length;
    assert.ok(inSecond <= MAX_PER_SECOND, `${what}: ${inSecond} announcements within a second: ${shown}`);
  }
}

/** A log without two identical lines (after their time stamps), naming a rate in MB/s. */
function checkLog(what: string, log: string[]): void {
  const lines = log.map((l) => l.replace(/^\S+ /, ''));
  assert.equal(new Set(lines).size, lines.length, `${what}: the log repeats lines:\n${lines.join('\n')}`);
  assert.ok(lines.length < 20, `${what}: the log has phases, not chunks:\n${lines.join('\n')}`);
  assert.ok(lines.some((l) => /\d+(\.\d+)? MB in \d+(\.\d+)? s, \d+(\.\d+)? MB\/s/.test(l)), `${what}: the log gives a rate in MB/s:\n${lines.join('\n')}`);
}

async function newServer(): Promise<TestServer> {
  const made = { dataDir: fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-data-')), runDir: fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-run-')) };
  folders.push(made);
  const started = await TestServer.start(made);
  fs.mkdirSync(path.join(made.dataDir, 'disks'), { recursive: true });
  fs.copyFileSync(testGuest().bootVhd, path.join(made.dataDir, 'disks', 'template.vhd'));
  return started;
}

describe('VM tasks tell the truth', { timeout: 420_000 }, () => {
  before(async () => {
    server = await newServer();
    watch = await ProgressWatch.connect(server);
  });

  after(async () => {
    watch?.close();
    for (const reader of consoles) reader.close();
    if (server && server.process.exitCode === null && server.process.signalCode === null) await server.stop('SIGKILL');
    for (const { dataDir, runDir } of folders) {
      for (const pid of processesMentioning(runDir).filter(isAlive)) process.kill(pid, 'SIGKILL');
      fs.rmSync(dataDir, { recursive: true, force: true });
      fs.rmSync(runDir, { recursive: true, force: true });
    }
  });

  it('a save and a restore of a 256 MB guest announce a bounded, rising progress and log phases with MB/s', async () => {
    const vm = await createGuestVm('saver', 256);
    assert.equal((await finished(await server.call<Ref>('VirtualMachine.Startup', { this: vm.ref }))).error, null);
    const serial = await waitForGuest(vm);
    // Memory the guest has written (not zero pages), so that the state file has bulk to write.
    await serial.run('dd if=/dev/urandom of=/tmp/fill bs=1M count=150 2>/dev/null; echo filled', 120_000);

    const save = await server.call<Ref>('VirtualMachine.Save', { this: vm.ref });
    const saved = await finished(save);
    assert.equal(saved.error, null);
    assert.equal(saved.percent, 100);
    assert.equal(await state(vm), 'Saved');
    await delay(300); // the completion's notification may trail the answer to WaitForCompletion
    checkAnnouncements('Save', watch.of(save));
    checkLog('Save', saved.log);

    const restore = await server.call<Ref>('VirtualMachine.Startup', { this: vm.ref });
    const restored = await finished(restore);
    assert.equal(restored.error, null);
    assert.equal(await state(vm), 'Running');
    await delay(300);
    checkAnnouncements('Restore', watch.of(restore));
    checkLog('Restore', restored.log);

    assert.equal((await finished(await server.call<Ref>('VirtualMachine.TurnOff', { this: vm.ref }), 30_000)).error, null);
  });

  it('a Startup cut by kill -9 of vserverd after the worker launched is done once the next vserverd finds the VM running; deleted, it leaves no run folder', async () => {
    const vm = await createGuestVm('phoenix', 64);
    const task = await server.call<Ref>('VirtualMachine.Startup', { this: vm.ref });
    const status = VmPaths.of(vm.id, server.runDir);
    const deadline = Date.now() + 30_000;
    // Killed once the worker has been asked to turn the VM on (killed before, the VM stays off and the task fails).
    while (status.readStatus()?.state !== 'TurningOn') {
      assert.ok(Date.now() < deadline, 'the worker did not begin to turn the VM on within 30 s');
      await delay(20);
    }
    assert.equal(await server.call('Task.get_IsComplete', { this: task.$ref }), false, 'the task still runs when vserverd is killed');
    watch.close();
    await server.stop('SIGKILL');

    server = await TestServer.start({ dataDir: server.dataDir, runDir: server.runDir });
    watch = await ProgressWatch.connect(server);
    const settled = await finished(task, 150_000);
    assert.equal(settled.error, null, `the task failed: ${JSON.stringify(settled.error)}`);
    assert.equal(settled.percent, 100);
    assert.ok(settled.log.some((l) => l.endsWith('vserverd restarted while the task ran; the VM is running (reattached)')), `the log says why:\n${settled.log.join('\n')}`);
    assert.equal(await state(vm), 'Running');

    // Deleted once off, the VM leaves no run folder (its worker exits after QEMU; the delete waits for it).
    assert.equal((await finished(await server.call<Ref>('VirtualMachine.TurnOff', { this: vm.ref }), 30_000)).error, null);
    await server.call('VirtualServer.DeleteVirtualMachine', { vm: vm.ref });
    const gone = Date.now() + 10_000;
    while (fs.existsSync(status.dir)) {
      assert.ok(Date.now() < gone, `${status.dir} is still there 10 s after the delete`);
      await delay(50);
    }
  });
});
