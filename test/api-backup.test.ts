// Backups through a real vserverd: of a turned-off VM (its disk copied whole, SHA-256 in the
// manifest), listed, restored as a new VM whose disk reads as the original did; an incremental
// request whose change map cannot be trusted falls back to full and says why; a damaged set is
// refused at restore; a path outside the storage roots and a full file system (a small
// loop-mounted one) are refused by name, leaving nothing behind.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type ApiGuest, finishTask, type GuestConsole, type Ref, startApiGuest, turnOffApiGuest } from './helpers/api-guests.js';
import { createLayerGuest, type LayerGuest, recordsReach, servedTop, startRecords, taskResult } from './helpers/layer-guests.js';
import { countRecords, lastAcknowledged } from './helpers/records.js';
import { VhdDisk } from '../storage/vhd/index.js';
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

describe('backups of a running guest writing records', () => {
  let vm: LayerGuest;
  let guest: GuestConsole | null = null;
  let restored: ApiGuest | null = null;
  let crashing: TestServer | null = null;
  after(async () => {
    guest?.close();
    for (const v of [vm, restored]) if (v) await turnOffApiGuest(server, v).catch(() => {});
    await crashing?.stop();
  });

  test('full then incremental while the guest writes: each holds a valid prefix of the records, the VM goes on from its own disk, the incremental restored as a new VM boots and reads the same; kill -9 of vserverd after the copy: the next start merges the temporary layers back', { timeout: 900_000 }, async () => {
    vm = await createLayerGuest(server, 'bk-run');
    guest = await startApiGuest(server, vm);
    await startRecords(guest);
    const beforeFull = await recordsReach(guest, 20);
    // With a turned-off VM in the same call: one set each.
    const second = await offVm('bk-second', 8);
    const [full, secondSet] = (await taskResult<{ backups: Outcome[] }>(server, await server.call<Ref>('VirtualServer.BackupVirtualMachines', { vms: [vm.ref, second.ref], path: 'run-backups' }))).backups
      .sort((x, y) => (x.vm === vm.id ? -1 : y.vm === vm.id ? 1 : 0));
    assert.equal(full.kind, 'full');
    assert.equal(secondSet.vm, second.ref.split('/')[1]);
    assert.equal(qemuCompare(second.disk, 'vpc', path.join(secondSet.folder, 'scsi0-0.vhd'), 'vpc').status, 0);
    const inFull = countRecords(path.join(full.folder, 'scsi0-1.vhd'));
    assert.ok(inFull >= beforeFull, `the full backup holds ${inFull} records; ${beforeFull} were acknowledged before it`);
    assert.equal(servedTop(server, vm), vm.dataDisk, 'the temporary layer is merged back: the guest writes its own disk');
    assert.deepEqual(fs.readdirSync(vm.folder).filter((n) => n.startsWith('.backup-')), [], 'no temporary layer left');

    const beforeIncremental = await recordsReach(guest, lastAcknowledged(guest.serial.text) + 30);
    const [incremental] = (await taskResult<{ backups: Outcome[] }>(server, await server.call<Ref>('VirtualServer.BackupVirtualMachines', { vms: [vm.ref], path: 'run-backups', incremental: true, includeMemory: true }))).backups;
    assert.equal(incremental.kind, 'incremental', `full because: ${incremental.fullReason}`);
    const memory = (JSON.parse(fs.readFileSync(path.join(incremental.folder, 'manifest.json'), 'utf8')) as Manifest).files.find((f) => f.role === 'memory');
    assert.ok(memory && memory.bytes > 0, 'the memory is in the set');
    assert.equal(sha256File(path.join(incremental.folder, memory.name)), memory.sha256);
    const incrementalDisk = path.join(incremental.folder, 'scsi0-1.vhd');
    assert.deepEqual(VhdDisk.open(incrementalDisk).chain().map((d) => d.path), [incrementalDisk, path.join(full.folder, 'scsi0-1.vhd')], 'a child of the full backup');
    assert.ok(fs.statSync(incrementalDisk).size < fs.statSync(path.join(full.folder, 'scsi0-0.vhd')).size, 'smaller than a full copy of the boot disk');
    const inIncremental = countRecords(incrementalDisk);
    assert.ok(inIncremental >= beforeIncremental && inIncremental >= inFull, `the incremental holds ${inIncremental} records`);
    guest.close();
    guest = null;
    await turnOffApiGuest(server, vm);

    // Restored from the incremental (checked, flattened): a new VM whose data disk holds that prefix, and which boots.
    const restoredRef = await taskResult<Ref>(server, await server.call<Ref>('VirtualServer.RestoreVirtualMachine', { path: incremental.folder, name: 'bk-run-restored' }), 300_000);
    const id = restoredRef.$ref.split('/')[1];
    restored = { name: 'bk-run-restored', ref: restoredRef.$ref, id, adapter: `NetworkAdapter/${id}/0` };
    const restoredData = (await server.call<Ref>('HardDiskConnection.get_HardDisk', { this: `HardDiskConnection/${id}/scsi0-1` })).$ref.slice('HardDisk/'.length);
    assert.equal(countRecords(restoredData), inIncremental);
    const restoredGuest = await startApiGuest(server, restored);
    restoredGuest.close();
    await turnOffApiGuest(server, restored);

    // kill -9 after the copy, before the temporary layers are merged back.
    const dataDir = server.dataDir;
    const runDir = server.runDir;
    guest = await startApiGuest(server, vm);
    // Rewritten from record 1: the same bytes, so the disk's prefix stays valid while it is written.
    await startRecords(guest);
    await server.stop('SIGKILL');
    crashing = await TestServer.start({ dataDir, runDir, env: { VSERVER_CRASH_AT: 'vserverd-backup-copied' } });
    await crashing.call<Ref>('VirtualServer.BackupVirtualMachines', { vms: [vm.ref], path: 'run-backups' });
    if (crashing.process.exitCode === null && crashing.process.signalCode === null) await new Promise((r) => crashing!.process.once('exit', r));
    assert.equal(crashing.process.signalCode, 'SIGKILL');
    assert.notEqual(servedTop(crashing, vm), vm.dataDisk, 'the worker still writes the temporary layer');
    server = await TestServer.start({ dataDir, runDir });
    crashing = null;
    assert.equal(servedTop(server, vm), vm.dataDisk, 'the next start merged the temporary layer back');
    assert.deepEqual(fs.readdirSync(vm.folder).filter((n) => n.startsWith('.backup-')), []);
    assert.equal(await server.call('VirtualMachine.get_State', { this: vm.ref }), 'Running');
    const rows = await server.call<Array<{ message: string }>>('VirtualServer.GetEvents', { newestFirst: true, limit: 50 });
    assert.ok(rows.some((e) => /cut short by a stop of vserverd/.test(e.message)), 'the repair is in the event log');

    // The next backup is whole and correct.
    const [next] = (await taskResult<{ backups: Outcome[] }>(server, await server.call<Ref>('VirtualServer.BackupVirtualMachines', { vms: [vm.ref], path: 'run-backups' }))).backups;
    assert.ok(countRecords(path.join(next.folder, 'scsi0-1.vhd')) >= inIncremental);
    assert.equal(servedTop(server, vm), vm.dataDisk);
  });
});
