// Snapshots through a real vserverd: of a turned-off VM (disk jobs make the layers), checked
// byte for byte with qemu-io and qemu-img; of a running guest writing numbered records (the
// worker switches its disks), reverted and deleted while it writes; bad input refused by name;
// and kill -9 of vserverd inside create and delete, after which the catalog and the files agree.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { rejectsWith, TestServer } from './helpers/server.js';
import { finishTask, GuestConsole, type Ref, startApiGuest, turnOffApiGuest } from './helpers/api-guests.js';
import { checkVmFiles, createLayerGuest, type LayerGuest, recordsReach, servedTop, startRecords, taskResult } from './helpers/layer-guests.js';
import { countRecords, lastAcknowledged } from './helpers/records.js';
import { SerialReader } from './helpers/vm.js';
import { VmPaths } from '../vmm/paths.js';
import { VhdDisk } from '../storage/vhd/index.js';
import { constBytes, MiB, qemuIoVerify, qemuIoWrite, run, vsctl } from './helpers/vhd-fixtures.js';

interface TreeEntry { snapshot: Ref; name: string; parent: Ref | null; depth: number; current: boolean }

let server: TestServer;


/** A VM with one 64 MiB dynamic disk on SCSI 0:0, turned off. */
async function offVm(name: string): Promise<{ ref: string; id: string; folder: string; disk: string }> {
  const made = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name });
  const disk = `${name}/${name}.vhd`;
  await finishTask(server, await server.call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: disk, sizeMB: 64 }));
  await server.call('VirtualMachine.AddSCSIController', { this: made.$ref });
  await server.call('VirtualMachine.AddHardDiskConnection', { this: made.$ref, path: disk, busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
  const vmc = await server.call<string>('VirtualMachine.get_File', { this: made.$ref });
  return { ref: made.$ref, id: made.$ref.split('/')[1], folder: path.dirname(vmc), disk: path.join(fs.realpathSync(server.dataDir), disk) };
}

/** The layer files in the VM's Snapshots folder, full paths. */
function snapshotFiles(folder: string): string[] {
  const dir = path.join(folder, 'Snapshots');
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.endsWith('.vhd')).sort().map((n) => path.join(dir, n)) : [];
}

/** Writes `value` over a range of a disk through its chain with our engine (QEMU's vpc driver reads no differencing VHD). */
function writeChain(file: string, value: number, offset: number, length: number): void {
  const disk = VhdDisk.open(file, { writable: true, holder: 'api-snapshots test' });
  try {
    disk.write(constBytes(value, length), offset);
    disk.flush();
  } finally {
    disk.close();
  }
}

/** Reads a range of a disk through its chain and asserts every byte is `value`; returns the chain's files. */
function verifyChain(file: string, value: number, offset: number, length: number): string[] {
  const disk = VhdDisk.open(file);
  try {
    assert.ok(disk.read(offset, length).equals(constBytes(value, length)), `${file} does not read 0x${value.toString(16)} at ${offset}`);
    return disk.chain().map((d) => d.path);
  } finally {
    disk.close();
  }
}

/** `vsctl vhd check` finds nothing wrong with the disk and its chain; qemu-img reads a dynamic one whole. */
function checkDisk(file: string): void {
  const r = vsctl(['vhd', 'check', file, '--json']);
  assert.equal(r.status, 0, `vsctl vhd check ${file}: ${r.stdout}${r.stderr}`);
  if (!VhdDisk.open(file).chain().slice(1).length) {
    const info = run('qemu-img', ['compare', '-f', 'vpc', '-F', 'vpc', file, file]);
    assert.equal(info.status, 0, `qemu-img reads ${file}: ${info.stdout}${info.stderr}`);
  }
}

before(async () => {
  server = await TestServer.start();
});

after(async () => {
  await server?.stop();
  server?.remove();
});

describe('snapshots of a turned-off VM', () => {
  test('create, write, revert, delete: the disk holds what each point in time held; names clash, revert needs confirm, undo disks do not mix', { timeout: 120_000 }, async () => {
    const vm = await offVm('snap-off');
    qemuIoWrite(vm.disk, [{ pattern: 0x11, offset: 0, length: MiB }]);

    const first = await taskResult<Ref>(server, await server.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'one', description: 'before' }));
    assert.match(first.$ref, new RegExp(`^Snapshot/${vm.id}/`));
    assert.equal(await server.call('Snapshot.get_Name', { this: first.$ref }), 'one');
    assert.equal(await server.call('Snapshot.get_Description', { this: first.$ref }), 'before');
    assert.equal(await server.call('Snapshot.get_Consistency', { this: first.$ref }), 'CrashConsistent');
    assert.equal(await server.call('Snapshot.get_IncludesMemory', { this: first.$ref }), false);
    assert.deepEqual(await server.call('VirtualMachine.get_CurrentSnapshot', { this: vm.ref }), first);
    const [top1] = snapshotFiles(vm.folder);
    assert.ok(top1, 'a new layer in Snapshots/');
    assert.deepEqual(verifyChain(top1, 0x11, 0, MiB), [top1, vm.disk], 'the new layer is a child of the disk');

    // Writes now go to the new top; the configured disk is read-only.
    const before1 = fs.readFileSync(vm.disk);
    writeChain(top1, 0x22, 0, MiB);
    const second = await taskResult<Ref>(server, await server.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'two' }));
    assert.deepEqual(await server.call('Snapshot.get_Parent', { this: second.$ref }), first);
    assert.deepEqual(await server.call('Snapshot.get_Children', { this: first.$ref }), [second]);
    const top2 = snapshotFiles(vm.folder).find((f) => f !== top1)!;
    writeChain(top2, 0x33, 0, MiB);

    // Bad input: a clashing name (any case), a revert without confirm, undo disks on a VM with snapshots.
    await rejectsWith(server.call('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'ONE' }), 'VM_E_SNAPSHOT_NAME_TAKEN');
    await rejectsWith(server.call('Snapshot.Revert', { this: first.$ref, confirm: false }), 'VM_E_CONFIRM_REQUIRED');
    await rejectsWith(server.call('VirtualMachine.put_Undoable', { this: vm.ref, value: true }), 'VM_E_UNDO_AND_SNAPSHOTS');
    assert.deepEqual(fs.readFileSync(vm.disk), before1, 'refusals changed nothing');

    // Revert to "one": the disk reads as it did then (0x22 was written after "one").
    await taskResult(server, await server.call<Ref>('Snapshot.Revert', { this: first.$ref, confirm: true }));
    assert.deepEqual(await server.call('VirtualMachine.get_CurrentSnapshot', { this: vm.ref }), first);
    const tops = snapshotFiles(vm.folder);
    const reverted = tops.filter((f) => f !== top1 && f !== top2);
    assert.ok(!fs.existsSync(top2), 'the state left at the revert (the top after "two") is gone');
    assert.equal(reverted.length, 1, `one new top after the revert (have ${tops.join(', ')})`);
    assert.deepEqual(verifyChain(reverted[0], 0x11, 0, MiB), [reverted[0], vm.disk], 'the new top is a child of the layer of "one"');
    const tree = await server.call<TreeEntry[]>('VirtualMachine.get_Snapshots', { this: vm.ref });
    assert.deepEqual(tree.map((e) => [e.name, e.depth, e.current]), [['one', 0, true], ['two', 1, false]]);

    // The disk cannot be detached from under its layers.
    await rejectsWith(server.call('VirtualMachine.RemoveHardDiskConnection', { this: vm.ref, connection: `HardDiskConnection/${vm.id}/scsi0-0` }), 'VM_E_DRIVE_IN_USE', /snapshot layers/);

    // Delete "two" (a leaf whose layer only it holds): its layer goes; "one" is intact.
    await taskResult(server, await server.call<Ref>('Snapshot.Delete', { this: second.$ref }));
    await rejectsWith(server.call('Snapshot.get_Name', { this: second.$ref }), 'VM_E_SNAPSHOT_UNKNOWN');
    // Delete "one": the configured disk is its layer, the current top its one child: committed into the disk.
    await taskResult(server, await server.call<Ref>('Snapshot.Delete', { this: first.$ref }));
    assert.deepEqual(await server.call('VirtualMachine.get_Snapshots', { this: vm.ref }), []);
    assert.equal(await server.call('VirtualMachine.get_CurrentSnapshot', { this: vm.ref }), null);
    assert.deepEqual(snapshotFiles(vm.folder), [], 'no layer left');
    checkDisk(vm.disk);
    qemuIoVerify(vm.disk, [{ pattern: 0x11, offset: 0, length: MiB }]);
  });
});

describe('deleting snapshots root first (turned off)', () => {
  test('the root\'s record goes and the disk stays the base; the next layer is merged up into the top; when the last goes, the top is committed into the disk', { timeout: 120_000 }, async () => {
    const vm = await offVm('snap-order');
    qemuIoWrite(vm.disk, [{ pattern: 0x11, offset: 0, length: MiB }]);
    const s1 = await taskResult<Ref>(server, await server.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 's1' }));
    const [t1] = snapshotFiles(vm.folder);
    writeChain(t1, 0x22, MiB, MiB);
    const s2 = await taskResult<Ref>(server, await server.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 's2' }));
    const t2 = snapshotFiles(vm.folder).find((f) => f !== t1)!;
    writeChain(t2, 0x33, 2 * MiB, MiB);

    await taskResult(server, await server.call<Ref>('Snapshot.Delete', { this: s1.$ref }));
    assert.equal(await server.call('Snapshot.get_Parent', { this: s2.$ref }), null, '"s2" is a root now');
    assert.deepEqual(verifyChain(t2, 0x22, MiB, MiB), [t2, t1, vm.disk], 'the files are untouched');
    await taskResult(server, await server.call<Ref>('Snapshot.Delete', { this: s2.$ref }));
    assert.deepEqual(snapshotFiles(vm.folder), [], 'the layer was merged up, and the top committed into the disk');
    assert.equal(await server.call('VirtualMachine.get_CurrentSnapshot', { this: vm.ref }), null);
    checkDisk(vm.disk);
    qemuIoVerify(vm.disk, [{ pattern: 0x11, offset: 0, length: MiB }, { pattern: 0x22, offset: MiB, length: MiB }, { pattern: 0x33, offset: 2 * MiB, length: MiB }]);
    await server.call('VirtualMachine.put_Undoable', { this: vm.ref, value: true });
  });
});

describe('snapshots of a running guest writing records', () => {
  let vm: LayerGuest;
  let guest: GuestConsole | null = null;
  after(async () => {
    guest?.close();
    if (vm) await turnOffApiGuest(server, vm).catch(() => {});
  });

  test('a snapshot mid-stream holds a valid prefix; delete merges its layer while the guest writes, losing nothing; revert returns to the prefix and boots; a memory snapshot reverts running', { timeout: 600_000 }, async () => {
    vm = await createLayerGuest(server, 'snap-run');
    guest = await startApiGuest(server, vm);
    await startRecords(guest);
    const before = await recordsReach(guest, 20);

    // "a": the data disk itself becomes its layer, read-only; the records acknowledged before it are in it.
    const a = await taskResult<Ref>(server, await server.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'a' }));
    const inA = countRecords(vm.dataDisk);
    assert.ok(inA >= before, `the layer of "a" holds ${inA} records; ${before} were acknowledged before it`);
    const topA = servedTop(server, vm);
    assert.match(topA, /Snapshots\/scsi0-1-[0-9a-f]{8}\.vhd$/);

    // "b" on top of it, then "b" deleted while the guest writes: its layer merged into the top online.
    await recordsReach(guest, lastAcknowledged(guest.serial.text) + 20);
    const b = await taskResult<Ref>(server, await server.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'b' }));
    const topB = servedTop(server, vm);
    assert.notEqual(topB, topA);
    await recordsReach(guest, lastAcknowledged(guest.serial.text) + 20);
    await taskResult(server, await server.call<Ref>('Snapshot.Delete', { this: b.$ref }));
    assert.ok(!fs.existsSync(topA), 'the layer of "b" is gone');
    assert.equal(servedTop(server, vm), topB, 'the guest writes the same top');
    assert.deepEqual(VhdDisk.open(topB).chain().map((d) => d.path), [topB, vm.dataDisk], 'the chain is one shorter');
    const acknowledged = await recordsReach(guest, lastAcknowledged(guest.serial.text) + 20);

    // Pull the plug: every acknowledged record is in the chain, none torn.
    guest.close();
    guest = null;
    await finishTask(server, await server.call<Ref>('VirtualMachine.TurnOff', { this: vm.ref }), 60_000);
    assert.ok(countRecords(topB) >= acknowledged, 'no acknowledged record lost');
    checkVmFiles(vm);

    // Revert to "a": the disk reads the prefix "a" held, and the guest boots.
    await rejectsWith(server.call('Snapshot.Revert', { this: a.$ref }), 'VM_E_INVALID_PARAMS');
    await taskResult(server, await server.call<Ref>('Snapshot.Revert', { this: a.$ref, confirm: true }));
    assert.ok(!fs.existsSync(topB), 'the state left at the revert is gone');
    assert.equal(await server.call('VirtualMachine.get_State', { this: vm.ref }), 'TurnedOff');
    guest = await startApiGuest(server, vm);
    const revertedTop = servedTop(server, vm);
    assert.deepEqual(VhdDisk.open(revertedTop).chain().map((d) => d.path), [revertedTop, vm.dataDisk]);
    assert.equal(countRecords(revertedTop), inA, 'the reverted disk holds the prefix of "a"');

    // With memory: reverting resumes the guest as it was (a file in its RAM says which moment).
    await guest.run('echo moment-one > /tmp/moment');
    const mem = await taskResult<Ref>(server, await server.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'mem', includeMemory: true }));
    assert.equal(await server.call('Snapshot.get_IncludesMemory', { this: mem.$ref }), true);
    assert.ok(['background-snapshot', 'live-save'].includes(await server.call<string>('Snapshot.get_MemoryMethod', { this: mem.$ref })));
    await guest.run('echo moment-two > /tmp/moment');
    guest.close();
    guest = null;
    await taskResult(server, await server.call<Ref>('Snapshot.Revert', { this: mem.$ref, confirm: true }), 180_000);
    assert.equal(await server.call('VirtualMachine.get_State', { this: vm.ref }), 'Running');
    const serial = await SerialReader.attach(VmPaths.of(vm.id, server.runDir).console);
    guest = new GuestConsole(vm, serial);
    assert.match(await guest.run('cat /tmp/moment', 60_000), /moment-one/);
    const tree = await server.call<TreeEntry[]>('VirtualMachine.get_Snapshots', { this: vm.ref });
    assert.deepEqual(tree.map((e) => [e.name, e.depth, e.current]), [['a', 0, false], ['mem', 1, true]]);
  });
});

describe('kill -9 of vserverd inside snapshot create and delete', () => {
  let crashing: TestServer | null = null;
  let restarted: TestServer | null = null;
  let vm: LayerGuest;
  let guest: GuestConsole | null = null;
  after(async () => {
    guest?.close();
    if (restarted && vm) await turnOffApiGuest(restarted, vm).catch(() => {});
    await restarted?.stop();
    await crashing?.stop();
    restarted?.remove();
  });

  /** Starts vserverd again on the same folders, without the crash point; the guest ran on meanwhile. */
  async function restart(from: TestServer): Promise<TestServer> {
    assert.equal(await waitForExit(from), 'SIGKILL', 'vserverd was killed at its crash point');
    return TestServer.start({ dataDir: from.dataDir, runDir: from.runDir });
  }

  async function waitForExit(s: TestServer): Promise<string | null> {
    if (s.process.exitCode === null && s.process.signalCode === null) await new Promise((r) => s.process.once('exit', r));
    return s.process.signalCode;
  }

  test('killed after the worker switched the disks: the next start finishes the snapshot; killed after a delete merged: the next start finishes the delete; nothing acknowledged is lost and the VM boots', { timeout: 600_000 }, async () => {
    crashing = await TestServer.start({ env: { VSERVER_CRASH_AT: 'vserverd-snapshot-switched' } });
    vm = await createLayerGuest(crashing, 'snap-kill');
    guest = await startApiGuest(crashing, vm);
    await startRecords(guest);
    await recordsReach(guest, 20);
    await crashing.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'cut' });
    restarted = await restart(crashing);
    const tree = await restarted.call<TreeEntry[]>('VirtualMachine.get_Snapshots', { this: vm.ref });
    assert.deepEqual(tree.map((e) => [e.name, e.current]), [['cut', true]], 'the snapshot the worker made is finished');
    assert.equal(await restarted.call('VirtualMachine.get_State', { this: vm.ref }), 'Running');
    const top = servedTop(restarted, vm);
    assert.ok(fs.existsSync(top) && top !== vm.dataDisk);
    await recordsReach(guest, lastAcknowledged(guest.serial.text) + 10);

    // The delete of "cut" (the data disk is its layer, the top its one child: committed into the disk) cut after the merge.
    await restarted.stop('SIGKILL');
    crashing = await TestServer.start({ dataDir: restarted.dataDir, runDir: restarted.runDir, env: { VSERVER_CRASH_AT: 'vserverd-snapshot-merged' } });
    const cut = tree[0].snapshot;
    await crashing.call<Ref>('Snapshot.Delete', { this: cut.$ref });
    restarted = await restart(crashing);
    assert.deepEqual(await restarted.call('VirtualMachine.get_Snapshots', { this: vm.ref }), [], 'the delete was finished');
    assert.equal(servedTop(restarted, vm), vm.dataDisk, 'the guest writes its disk again');
    assert.ok(!fs.existsSync(top), 'the committed top is gone');
    const acknowledged = await recordsReach(guest, lastAcknowledged(guest.serial.text) + 10);
    guest.close();
    guest = null;
    await finishTask(restarted, await restarted.call<Ref>('VirtualMachine.TurnOff', { this: vm.ref }), 60_000);
    assert.ok(countRecords(vm.dataDisk) >= acknowledged, 'no acknowledged record lost');
    checkVmFiles(vm);
    guest = await startApiGuest(restarted, vm);
  });
});
