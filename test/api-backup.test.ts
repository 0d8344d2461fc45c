// Backups through a real vserverd: of a turned-off VM (its disk copied whole, SHA-256 in the
// manifest), listed, restored as a new VM whose disk reads as the original did; an incremental
// request whose change map cannot be trusted falls back to full and says why; a damaged set is
// refused at restore; a path outside the storage roots and a full file system (a small
// loop-mounted one) are refused by name, leaving nothing behind.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { finishTask, type Ref } from './helpers/api-guests.js';
import { rejectsWith, TestServer } from './helpers/server.js';
import { MiB, mustRun, qemuCompare, qemuIoVerify, qemuIoWrite, run, sha256File } from './helpers/vhd-fixtures.js';

interface Outcome { vm: string; folder: string; kind: 'full' | 'incremental'; fullReason: string | null; bytes: number }
interface ManifestFile { name: string; role: string; slot?: string; bytes: number; sha256: string }
interface Manifest { id: string; kind: string; vm: { id: string; name: string }; consistency: string; running: boolean; files: ManifestFile[]; parent: unknown }

let server: TestServer;
let root: string;
let mountPoint: string | null = null;

async function taskOutcome(task: Ref, timeoutMs = 120_000): Promise<{ result: unknown; error: { name: string; message: string } | null }> {
  assert.equal(await server.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs }), true);
  return { result: await server.call('Task.get_Result', { this: task.$ref }), error: await server.call('Task.get_Error', { this: task.$ref }) };
}

async function offVm(name: string, sizeMB = 64): Promise<{ ref: string; disk: string }> {
  const made = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name });
  await finishTask(server, await server.call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: `${name}/${name}.vhd`, sizeMB }));
  await server.call('VirtualMachine.AddSCSIController', { this: made.$ref });
  await server.call('VirtualMachine.AddHardDiskConnection', { this: made.$ref, path: `${name}/${name}.vhd`, busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
  return { ref: made.$ref, disk: path.join(root, name, `${name}.vhd`) };
}

before(async () => {
  server = await TestServer.start();
  root = fs.realpathSync(server.dataDir);
});

after(async () => {
  if (mountPoint) run('umount', ['-l', mountPoint]);
  await server?.stop();
  server?.remove();
});

describe('backups of a turned-off VM', () => {
  test('a full backup with its manifest, listed, restored as a new VM that reads the same; an unsure incremental is full and says why; a damaged set is refused', { timeout: 180_000 }, async () => {
    const vm = await offVm('bk-off');
    qemuIoWrite(vm.disk, [{ pattern: 0x5a, offset: 0, length: 2 * MiB }, { pattern: 0xa5, offset: 40 * MiB, length: MiB }]);
    const original = sha256File(vm.disk);

    const { result, error } = await taskOutcome(await server.call<Ref>('VirtualServer.BackupVirtualMachines', { vms: [vm.ref], path: 'backups' }));
    assert.equal(error, null);
    const [full] = (result as { backups: Outcome[] }).backups;
    assert.equal(full.kind, 'full');
    assert.ok(full.folder.startsWith(path.join(root, 'backups', 'bk-off') + path.sep), full.folder);
    const manifest = JSON.parse(fs.readFileSync(path.join(full.folder, 'manifest.json'), 'utf8')) as Manifest;
    assert.deepEqual([manifest.kind, manifest.vm.name, manifest.consistency, manifest.running, manifest.parent], ['full', 'bk-off', 'CrashConsistent', false, null]);
    for (const f of manifest.files) {
      assert.equal(sha256File(path.join(full.folder, f.name)), f.sha256, `${f.name}'s SHA-256`);
      assert.equal(fs.statSync(path.join(full.folder, f.name)).size, f.bytes);
    }
    const disk = manifest.files.find((f) => f.role === 'disk')!;
    assert.equal(disk.slot, 'scsi0-0');
    assert.equal(qemuCompare(vm.disk, 'vpc', path.join(full.folder, disk.name), 'vpc').status, 0, 'the backup reads as the disk');
    assert.equal(sha256File(vm.disk), original, 'the disk is untouched');

    const listed = await server.call<Array<{ folder: string; kind: string; vm: { name: string } }>>('VirtualServer.ListBackups', { path: 'backups' });
    assert.deepEqual(listed.map((b) => [b.folder, b.kind, b.vm.name]), [[full.folder, 'full', 'bk-off']]);

    // The disk changed behind vserverd's back (qemu-io): its change map is unsure, so the incremental asked for is full.
    qemuIoWrite(vm.disk, [{ pattern: 0x77, offset: 8 * MiB, length: MiB }]);
    const second = ((await taskOutcome(await server.call<Ref>('VirtualServer.BackupVirtualMachines', { vms: [vm.ref], path: 'backups', incremental: true }))).result as { backups: Outcome[] }).backups[0];
    assert.equal(second.kind, 'full');
    assert.match(second.fullReason ?? '', /change map/);

    // Restored as a new VM: its own folder, a new id, the disk as in the first set.
    const restoredTask = await server.call<Ref>('VirtualServer.RestoreVirtualMachine', { path: full.folder, name: 'bk-restored' });
    const restored = (await taskOutcome(restoredTask)).result as Ref;
    assert.match(restored.$ref, /^VirtualMachine\//);
    assert.notEqual(restored.$ref, vm.ref);
    const connection = (await server.call<Ref[]>('VirtualMachine.get_HardDiskConnections', { this: restored.$ref }))[0];
    const restoredDisk = (await server.call<Ref>('HardDiskConnection.get_HardDisk', { this: connection.$ref })).$ref.slice('HardDisk/'.length);
    assert.ok(restoredDisk.startsWith(path.join(root, 'bk-restored') + path.sep), restoredDisk);
    qemuIoVerify(restoredDisk, [{ pattern: 0x5a, offset: 0, length: 2 * MiB }, { pattern: 0xa5, offset: 40 * MiB, length: MiB }, { pattern: 0, offset: 8 * MiB, length: MiB }]);
    await rejectsWith(server.call('VirtualServer.RestoreVirtualMachine', { path: full.folder, name: 'bk-restored' }), 'VM_E_NAME_IN_USE');

    // A set whose disk was changed after the backup is refused at restore, naming the file; nothing is registered.
    const damaged = path.join(second.folder, 'scsi0-0.vhd');
    const fd = fs.openSync(damaged, 'r+');
    fs.writeSync(fd, Buffer.from('damage'), 0, 6, 4096);
    fs.closeSync(fd);
    const before = (await server.call<Ref[]>('VirtualServer.get_VirtualMachines')).length;
    const refused = await taskOutcome(await server.call<Ref>('VirtualServer.RestoreVirtualMachine', { path: second.folder, name: 'bk-damaged' }));
    assert.equal(refused.error?.name, 'VM_E_BACKUP_INVALID');
    assert.match(refused.error?.message ?? '', /scsi0-0\.vhd/);
    assert.equal((await server.call<Ref[]>('VirtualServer.get_VirtualMachines')).length, before);
    await rejectsWith(server.call('VirtualServer.RestoreVirtualMachine', { path: path.join(root, 'backups') }), 'VM_E_BACKUP_INVALID');
  });

  test('a backup outside the storage roots and one onto a full file system are refused by name; nothing is left behind', { timeout: 120_000 }, async () => {
    const vm = await offVm('bk-full', 64);
    qemuIoWrite(vm.disk, [{ pattern: 0x3c, offset: 0, length: 24 * MiB }]);
    const original = sha256File(vm.disk);
    await rejectsWith(server.call('VirtualServer.BackupVirtualMachines', { vms: [vm.ref], path: '/tmp/vserver-backups-outside' }), 'VM_E_PATH_OUTSIDE_ROOTS');
    assert.ok(!fs.existsSync('/tmp/vserver-backups-outside'));

    // An 8 MiB file system inside the storage root: the 24 MiB disk cannot fit.
    const image = path.join(root, 'small.img');
    mountPoint = path.join(root, 'small');
    fs.mkdirSync(mountPoint);
    mustRun('truncate', ['-s', '8M', image]);
    mustRun('mkfs.ext4', ['-q', '-F', image]);
    mustRun('mount', ['-o', 'loop', image, mountPoint]);
    const { error } = await taskOutcome(await server.call<Ref>('VirtualServer.BackupVirtualMachines', { vms: [vm.ref], path: 'small/backups' }));
    assert.equal(error?.name, 'VM_E_NO_SPACE', JSON.stringify(error));
    const left = fs.readdirSync(path.join(mountPoint, 'backups', 'bk-full'));
    assert.deepEqual(left, [], 'the unfinished set is removed');
    assert.equal(sha256File(vm.disk), original, 'the disk is untouched');
    assert.deepEqual(await server.call('VirtualServer.ListBackups', { path: 'small' }), []);
    mustRun('umount', [mountPoint]);
    mountPoint = null;
  });
});
