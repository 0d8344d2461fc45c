// kill -9 of a VM's worker inside the operations vserverd drives through it (docs/snapshots.md,
// "What a crash leaves behind"): snapshot create (after the switch), snapshot delete (an up-merge
// re-parented) and backup (the temporary layer copied back into the top). Each kill is a crash
// point in the worker (storage/crash-points.ts), proven by the line the worker wrote to its log.
// Afterwards: every VHD is valid, the VM boots, no record the guest saw acknowledged is lost, and
// the next backup holds what the disk holds.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { VmPaths } from '../vmm/paths.js';
import { type GuestConsole, type Ref, startApiGuest, turnOffApiGuest } from './helpers/api-guests.js';
import { checkVmFiles, createLayerGuest, DATA_SLOT, type LayerGuest, recordsReach, servedTop, startRecords, stateBecomes, taskResult } from './helpers/layer-guests.js';
import { countRecords, lastAcknowledged } from './helpers/records.js';
import { TestServer } from './helpers/server.js';

interface TreeEntry { snapshot: Ref; name: string; current: boolean }
interface Outcome { folder: string; kind: 'full' | 'incremental'; fullReason: string | null }

let server: TestServer | null = null;
let guest: GuestConsole | null = null;
let vm: LayerGuest;

after(async () => {
  guest?.close();
  if (server && vm) await turnOffApiGuest(server, vm).catch(() => {});
  await server?.stop();
  server?.remove();
});

/** vserverd again on the same folders, with `crashAt` in its environment (and so in its workers'). */
async function restartWith(crashAt: string | null): Promise<TestServer> {
  const { dataDir, runDir } = server!;
  await server!.stop();
  server = await TestServer.start({ dataDir, runDir, env: crashAt ? { VSERVER_CRASH_AT: crashAt } : {} });
  return server;
}

/** Starts the guest writing records from `first`; resolves once `count` more are acknowledged. */
async function writeRecords(s: TestServer, first: number, count: number): Promise<number> {
  guest = await startApiGuest(s, vm);
  await startRecords(guest, first);
  return recordsReach(guest, first + count - 1);
}

/** Runs `start` (which starts a task that makes the worker reach `point`); the VM stops, crashed at that point. Returns the records acknowledged. */
async function killedAt(s: TestServer, point: string, start: () => Promise<Ref>): Promise<number> {
  const log = VmPaths.of(vm.id, s.runDir).workerLog;
  const task = await start();
  await stateBecomes(s, vm, 'TurnedOff', 120_000);
  await s.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 120_000 });
  assert.match(fs.readFileSync(log, 'utf8'), new RegExp(`crash point ${point} reached`), 'the worker died at the crash point, inside the operation');
  const acknowledged = lastAcknowledged(guest!.serial.text);
  guest!.close();
  guest = null;
  return acknowledged;
}

/**
 * The files are valid, the VM boots, and its data disk (read through the chain of the top the
 * worker served, once the VM is off again) holds at least `acknowledged` records.
 */
async function survives(s: TestServer, acknowledged: number): Promise<{ held: number; top: string }> {
  checkVmFiles(vm);
  guest = await startApiGuest(s, vm);
  const top = servedTop(s, vm);
  guest.close();
  guest = null;
  await turnOffApiGuest(s, vm);
  const held = countRecords(top);
  assert.ok(held >= acknowledged, `the data disk (${top}) holds ${held} records; ${acknowledged} were acknowledged`);
  return { held, top };
}

describe('kill -9 of the worker inside snapshot create, snapshot delete and backup', () => {
  test('after each kill the files are valid, the VM boots, nothing acknowledged is lost, and the next backup is whole', { timeout: 900_000 }, async () => {
    server = await TestServer.start({ env: { VSERVER_CRASH_AT: 'snapshot-switched' } });
    vm = await createLayerGuest(server, 'wk');

    // Snapshot create: the worker dies once the disks are switched, before it answers.
    await writeRecords(server, 1, 20);
    const afterCreate = await killedAt(server, 'snapshot-switched', () => server!.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'one' }));
    const snapshots = await server.call<TreeEntry[]>('VirtualMachine.get_Snapshots', { this: vm.ref });
    assert.ok(snapshots.length <= 1, `at most the one snapshot: ${JSON.stringify(snapshots)}`);
    let { held } = await survives(server, afterCreate);

    // Snapshot delete: two snapshots, so that the newer one's layer is a file of its own, merged up into the top; the worker dies once the top is re-parented.
    server = await restartWith('merge-into-child-reparented');
    for (const name of ['two', 'three'].filter((n) => !snapshots.some((s) => s.name === n))) {
      await taskResult(server, await server.call<Ref>('VirtualMachine.CreateSnapshot', { this: vm.ref, name }));
    }
    const tree = await server.call<TreeEntry[]>('VirtualMachine.get_Snapshots', { this: vm.ref });
    const newest = tree.find((e) => e.current);
    assert.ok(newest && tree.length >= 2, JSON.stringify(tree));
    await writeRecords(server, held + 1, 20);
    const afterDelete = await killedAt(server, 'merge-into-child-reparented', () => server!.call<Ref>('Snapshot.Delete', { this: newest.snapshot.$ref }));
    const afterKill = await survives(server, afterDelete);
    held = afterKill.held;
    // The delete is finished by running it again (or was finished already); the chain holds the same records.
    const left = await server.call<TreeEntry[]>('VirtualMachine.get_Snapshots', { this: vm.ref });
    if (left.some((e) => e.snapshot.$ref === newest.snapshot.$ref)) await taskResult(server, await server.call<Ref>('Snapshot.Delete', { this: newest.snapshot.$ref }));
    assert.equal((await server.call<TreeEntry[]>('VirtualMachine.get_Snapshots', { this: vm.ref })).length, tree.length - 1);
    assert.equal(countRecords(afterKill.top), held, 'the delete changed no record');
    for (const e of await server.call<TreeEntry[]>('VirtualMachine.get_Snapshots', { this: vm.ref })) {
      await taskResult(server, await server.call<Ref>('Snapshot.Delete', { this: e.snapshot.$ref }));
    }
    assert.equal(countRecords(vm.dataDisk), held, 'with no snapshot left the guest\'s disk is its own file again');

    // Backup: the worker dies while it commits the temporary layer back into the top.
    server = await restartWith('commit-copied');
    await writeRecords(server, held + 1, 20);
    const afterBackup = await killedAt(server, 'commit-copied', () => server!.call<Ref>('VirtualServer.BackupVirtualMachines', { vms: [vm.ref], path: 'wk-backups' }));
    server = await restartWith(null);
    ({ held } = await survives(server, afterBackup));
    checkVmFiles(vm);

    // The next backup: whole (the worker's change map is unsure after the kill, so it is full) and holding what the disk holds.
    const [next] = (await taskResult<{ backups: Outcome[] }>(server, await server.call<Ref>('VirtualServer.BackupVirtualMachines', { vms: [vm.ref], path: 'wk-backups', incremental: true }))).backups;
    assert.equal(next.kind, 'full', 'after a killed worker the change map is unsure');
    assert.ok(next.fullReason, 'and the result says why');
    assert.equal(countRecords(path.join(next.folder, `${DATA_SLOT}.vhd`)), held);
  });
});
