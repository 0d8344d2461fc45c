// Edges of a VM's life through the API of a real vserverd running the test guest: a
// differencing child of a disk that a VM is writing is refused, naming the VM, from the moment
// its Startup is called; the uptime counts from the restore, not from QEMU's start; a turn off
// that interrupts a turn on is announced TurnedOff once and fails the Startup with
// VM_E_TURNED_OFF; names of only dots are refused.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { CLOCK_TICKS_PER_SECOND, commandLine, isAlive, processStartTicks, processesMentioning } from '../host/process.js';
import { acquireWriteLock, releaseWriteLock } from '../storage/vhd/lock.js';
import { VmPaths } from '../vmm/paths.js';
import { GUEST_PROMPT, GUEST_READY_MARKER, testGuest } from './helpers/guest.js';
import { rejectsWith, TestServer } from './helpers/server.js';
import { SerialReader } from './helpers/vm.js';
import { delay } from './helpers/wait.js';

const BOOT_MS = 120_000;
/** How long the uptime test holds a restore after its QEMU has started: the gap the old uptime counted. */
const RESTORE_HOLD_MS = 2500;

interface Ref { $ref: string }
interface Vm { name: string; ref: string; id: string }
interface StateNote { vm: string; state: string }

let server: TestServer;
let disks: string;
let ws: WebSocket;
const notes: StateNote[] = [];
const consoles: SerialReader[] = [];
const vms: Vm[] = [];

/** Waits for a task; returns its error (null when it succeeded). */
async function settle(task: Ref, timeoutMs = BOOT_MS): Promise<unknown> {
  assert.equal(await server.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs }), true, `${task.$ref} did not finish within ${timeoutMs} ms`);
  return server.call('Task.get_Error', { this: task.$ref });
}

async function finish(task: Ref, timeoutMs = BOOT_MS): Promise<void> {
  const error = await settle(task, timeoutMs);
  assert.equal(error, null, `${task.$ref} failed: ${JSON.stringify(error)}`);
}

async function state(vm: Vm): Promise<string> {
  return server.call<string>('VirtualMachine.get_State', { this: vm.ref });
}

async function uptime(vm: Vm): Promise<number | null> {
  return server.call<number | null>('VirtualMachine.get_Uptime', { this: vm.ref });
}

/** A VM on its own differencing child of the guest's disk (disks/NAME.vhd). */
async function createGuestVm(name: string, memoryMB = 128): Promise<Vm> {
  const made = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name });
  const vm = { name, ref: made.$ref, id: made.$ref.slice('VirtualMachine/'.length) };
  vms.push(vm);
  await server.call('VirtualMachine.put_Memory', { this: vm.ref, value: memoryMB });
  await server.call<Ref>('VirtualMachine.AddSCSIController', { this: vm.ref });
  await finish(await server.call<Ref>('VirtualServer.CreateDifferencingVirtualHardDisk', { path: `disks/${name}.vhd`, parentPath: 'disks/template.vhd' }));
  await server.call<Ref>('VirtualMachine.AddHardDiskConnection', { this: vm.ref, path: `disks/${name}.vhd`, busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
  return vm;
}

async function differencing(child: string, parent: string): Promise<Ref> {
  return server.call<Ref>('VirtualServer.CreateDifferencingVirtualHardDisk', { path: `disks/${child}`, parentPath: `disks/${parent}` });
}

async function events(since = 0): Promise<Array<{ id: number; message: string; object: string | null }>> {
  return server.call('VirtualServer.GetEvents', { since, limit: 1000 });
}

/** How long a process has run, from its start time in /proc. */
/**
 * Makes a restore slow on purpose: once the restore's QEMU runs, its worker (which streams the
 * saved state into it) is stopped for RESTORE_HOLD_MS, so QEMU starts well before the VM runs.
 */
async function holdRestore(vm: Vm): Promise<void> {
  const paths = VmPaths.of(vm.id, server.runDir);
  const deadline = Date.now() + BOOT_MS;
  let qemu: number | undefined;
  while (qemu === undefined) {
    assert.ok(Date.now() < deadline, `the restore of ${vm.name} started no QEMU`);
    qemu = processesMentioning(paths.dir).find((pid) => commandLine(pid)[0]?.includes('qemu-system'));
    if (qemu === undefined) await delay(10);
  }
  const worker = paths.readStatus()?.workerPid;
  assert.ok(worker, `the worker of ${vm.name} is named in its status`);
  process.kill(worker, 'SIGSTOP');
  try {
    await delay(RESTORE_HOLD_MS);
  } finally {
    process.kill(worker, 'SIGCONT');
  }
}

function processAgeSeconds(pid: number): number {
  const start = processStartTicks(pid);
  assert.ok(start, `process ${pid} is not running`);
  const sinceBoot = Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
  return sinceBoot - Number(start) / CLOCK_TICKS_PER_SECOND;
}

describe('a VM\'s edges through the API of a real vserverd', { timeout: 600_000 }, () => {
  before(async () => {
    server = await TestServer.start();
    disks = path.join(server.dataDir, 'disks');
    fs.mkdirSync(disks, { recursive: true });
    fs.copyFileSync(testGuest().bootVhd, path.join(disks, 'template.vhd'));
    ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/api/ws`, { headers: { authorization: `Bearer ${server.adminToken}` } });
    ws.on('message', (data) => {
      const message = JSON.parse(String(data)) as { method?: string; params?: StateNote };
      if (message.method === 'VirtualMachine.OnStateChange' && message.params) notes.push(message.params);
    });
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  });

  after(async () => {
    ws?.terminate();
    for (const reader of consoles) reader.close();
    if (server && server.process.exitCode === null && server.process.signalCode === null) {
      for (const vm of vms) {
        try {
          if (!['TurnedOff', 'Saved'].includes(await state(vm))) await settle(await server.call<Ref>('VirtualMachine.TurnOff', { this: vm.ref }), 30_000);
        } catch {
          // a VM that will not turn off is killed below
        }
      }
      await server.stop();
    }
    if (server) {
      for (const pid of processesMentioning(server.runDir).filter(isAlive)) process.kill(pid, 'SIGKILL');
      server.remove();
    }
  });

  it('refuses the names ".", ".." and other names of only dots, in CreateVirtualMachine and put_Name, and makes nothing', async () => {
    const before = fs.readdirSync(server.dataDir);
    for (const name of ['.', '..', '...']) {
      await rejectsWith(server.call('VirtualServer.CreateVirtualMachine', { name }), 'VM_E_CONFIG_INVALID', /name: .*not only dots/);
    }
    assert.deepEqual(fs.readdirSync(server.dataDir), before, 'no folder or .vmc was made');
    assert.deepEqual(await server.call('VirtualServer.get_VirtualMachines'), []);
    const made = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'dots' });
    vms.push({ name: 'dots', ref: made.$ref, id: made.$ref.slice('VirtualMachine/'.length) });
    await rejectsWith(server.call('VirtualMachine.put_Name', { this: made.$ref, value: '..' }), 'VM_E_CONFIG_INVALID', /not only dots/);
    assert.equal(await server.call('VirtualMachine.get_Name', { this: made.$ref }), 'dots');
  });

  it('refuses a differencing child of a disk open for writing by a tool, naming the tool; nothing is created', async () => {
    await finish(await server.call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: 'disks/tool.vhd', sizeMB: 16 }));
    const file = path.join(disks, 'tool.vhd');
    acquireWriteLock(file, 'the test\'s disk tool');
    try {
      await rejectsWith(differencing('tool-child.vhd', 'tool.vhd'), 'VM_E_DRIVE_IN_USE', /in use by the test's disk tool/);
    } finally {
      releaseWriteLock(file);
    }
    assert.equal(fs.existsSync(path.join(disks, 'tool-child.vhd')), false);
    await finish(await differencing('tool-child.vhd', 'tool.vhd'));
  });

  it('a running VM\'s disk: no differencing child (VM_E_DRIVE_IN_USE naming the VM), nothing created; its read-only parent may have one', async () => {
    const writer = await createGuestVm('writer');
    await finish(await server.call<Ref>('VirtualMachine.Startup', { this: writer.ref }));
    const serial = await SerialReader.attach(VmPaths.of(writer.id, server.runDir).console);
    consoles.push(serial);
    await serial.waitFor(GUEST_READY_MARKER, BOOT_MS);
    await rejectsWith(differencing('branch.vhd', 'writer.vhd'), 'VM_E_DRIVE_IN_USE', /VM writer, which is Running/);
    assert.equal(fs.existsSync(path.join(disks, 'branch.vhd')), false, 'no file was created');
    // The lock itself names the VM by its name too (Compact asks only the lock).
    await rejectsWith(server.call('HardDisk.Compact', { this: `HardDisk/${path.join(disks, 'writer.vhd')}` }), 'VM_E_DRIVE_IN_USE', /in use by the VM writer;/);
    // The template under the VM's own child is only read: a second child of it is sound.
    await finish(await differencing('template-child.vhd', 'template.vhd'));
  });

  it('a VM being turned on counts as active from its Startup call: no differencing child of its disk, no change of its configuration', async () => {
    const racer = await createGuestVm('racer');
    const startup = await server.call<Ref>('VirtualMachine.Startup', { this: racer.ref });
    // Right after the call, before its worker has announced TurningOn, the VM would still read TurnedOff.
    await rejectsWith(differencing('racer-child.vhd', 'racer.vhd'), 'VM_E_DRIVE_IN_USE', /VM racer, which is being turned on/);
    await rejectsWith(server.call('VirtualMachine.put_Memory', { this: racer.ref, value: 64 }), 'VM_E_VM_RUNNING', /racer is being turned on/);
    await finish(startup);
    assert.equal(fs.existsSync(path.join(disks, 'racer-child.vhd')), false, 'no file was created');
    assert.equal(await server.call('VirtualMachine.get_Memory', { this: racer.ref }), 128);
    await finish(await server.call<Ref>('VirtualMachine.TurnOff', { this: racer.ref }), 30_000);
  });

  it('the uptime counts from the restore, not from QEMU\'s start; a saved VM\'s disk may have a child; after a turn off too', async (t) => {
    const writer = vms.find((v) => v.name === 'writer')!;
    const serial = consoles[0];
    await serial.waitFor(GUEST_PROMPT, BOOT_MS);
    await delay(2100);
    const before = await uptime(writer);
    assert.ok(before !== null && before >= 2, `uptime while it ran: ${before}`);
    await finish(await server.call<Ref>('VirtualMachine.Save', { this: writer.ref }));
    assert.equal(await uptime(writer), null, 'no uptime while saved');
    await finish(await differencing('saved-child.vhd', 'writer.vhd'));

    const started = Date.now();
    const restore = await server.call<Ref>('VirtualMachine.Startup', { this: writer.ref });
    await holdRestore(writer);
    await finish(restore);
    const restored = Date.now();
    const after = await uptime(writer);
    const status = VmPaths.of(writer.id, server.runDir).readStatus();
    assert.ok(status?.qemuPid, 'the restored VM has a QEMU');
    const qemuAge = processAgeSeconds(status.qemuPid);
    const sinceRestored = (Date.now() - restored) / 1000;
    assert.ok(after !== null, 'a restored VM has an uptime');
    t.diagnostic(`restore ${((restored - started) / 1000).toFixed(1)} s; then QEMU had run ${qemuAge.toFixed(1)} s, uptime ${after} s`);
    assert.ok(after <= Math.ceil(sinceRestored), `uptime ${after} s right after the restore finished (${sinceRestored.toFixed(1)} s ago)`);
    assert.ok(qemuAge >= after + 1, `QEMU has run ${qemuAge.toFixed(1)} s (the restore took ${((restored - started) / 1000).toFixed(1)} s); the uptime (${after} s) counts from the restore`);
    await delay(2100);
    assert.ok((await uptime(writer))! >= after + 2, 'and goes on counting');

    await rejectsWith(differencing('late.vhd', 'writer.vhd'), 'VM_E_DRIVE_IN_USE', /VM writer, which is Running/);
    await finish(await server.call<Ref>('VirtualMachine.TurnOff', { this: writer.ref }), 30_000);
    await finish(await differencing('late.vhd', 'writer.vhd'));
    const parent = await server.call<Ref>('HardDisk.get_Parent', { this: `HardDisk/${path.join(disks, 'late.vhd')}` });
    assert.equal(parent.$ref, `HardDisk/${path.join(disks, 'writer.vhd')}`);
  });

  it('a turn off that interrupts a turn on is announced TurnedOff once, over the WebSocket and in the event log', async () => {
    const flicker = await createGuestVm('flicker');
    const qmpSocket = VmPaths.of(flicker.id, server.runDir).qmp;
    for (let attempt = 1; ; attempt++) {
      const from = notes.length;
      const sinceEvent = (await events()).at(-1)?.id ?? 0;
      const startup = await server.call<Ref>('VirtualMachine.Startup', { this: flicker.ref });
      const deadline = Date.now() + 60_000;
      while (!fs.existsSync(qmpSocket)) {
        assert.ok(Date.now() < deadline, 'QEMU\'s QMP socket did not appear within 60 s');
        await delay(5);
      }
      const turnOff = await server.call<Ref>('VirtualMachine.TurnOff', { this: flicker.ref });
      const startError = await settle(startup);
      await finish(turnOff, 30_000);
      await delay(1500); // time for any later announcement to arrive
      const states = notes.slice(from).filter((n) => n.vm === flicker.ref).map((n) => n.state);
      if (startError === null) {
        assert.ok(attempt < 5, `the turn off never reached the VM before it was Running in 5 tries: ${states.join(', ')}`);
        continue;
      }
      assert.deepEqual(states, ['TurningOn', 'TurningOff', 'TurnedOff']);
      assert.deepEqual(startError, { name: 'VM_E_TURNED_OFF', message: 'flicker was turned off while it was turning on' });
      const turnedOff = (await events(sinceEvent)).filter((e) => e.object === flicker.ref && /is TurnedOff/.test(e.message));
      assert.equal(turnedOff.length, 1, `one "is TurnedOff" event: ${JSON.stringify(turnedOff)}`);
      assert.equal(await state(flicker), 'TurnedOff');
      return;
    }
  });
});
