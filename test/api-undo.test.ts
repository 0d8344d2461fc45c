// Undo disks through a real vserverd and a real guest: the guest writes to its data disk, and
// the VM is turned off with Discard (its disks bit for bit as before), with Commit (the writes
// in the disk), or shuts itself down with UndoAction Keep (the next boot sees the writes, the
// disk is still untouched); MergeUndoDisks and DiscardUndoDisks; and the refusals.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { VhdDisk } from '../storage/vhd/index.js';
import { type ApiGuest, createApiGuest, finishTask, type GuestConsole, type Ref, startApiGuest } from './helpers/api-guests.js';
import { rejectsWith, TestServer } from './helpers/server.js';
import { delay } from './helpers/wait.js';

let server: TestServer;
let vm: ApiGuest;
let bootDisk: string;
let dataDisk: string;

/** The first 4 KiB the guest wrote: "X\n" 2048 times. */
const written = (letter: string): Buffer => Buffer.from(`${letter}\n`.repeat(2048));

function readStart(file: string): Buffer {
  const disk = VhdDisk.open(file);
  try {
    return disk.read(0, 4096);
  } finally {
    disk.close();
  }
}

/** Writes 4 KiB of "letter\n" at the start of the data disk (sdb) and waits until it is on the disk. */
async function guestWrites(guest: GuestConsole, letter: string): Promise<void> {
  const out = await guest.run(`yes ${letter} | head -c 4096 > /tmp/p && dd if=/tmp/p of=/dev/sdb bs=4096 count=1 conv=fsync 2>/dev/null && sync && echo WROTE-${letter}`);
  assert.match(out, new RegExp(`WROTE-${letter}`));
}

async function guestReads(guest: GuestConsole): Promise<string> {
  return (await guest.run('dd if=/dev/sdb bs=4096 count=1 2>/dev/null | head -c 6 | tr "\\n" .')).trim();
}

/** Polls the VM's state until it is `state`; fails after timeoutMs. */
async function stateBecomes(state: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await server.call<string>('VirtualMachine.get_State', { this: vm.ref })) !== state) {
    assert.ok(Date.now() < deadline, `the VM did not become ${state} within ${timeoutMs} ms`);
    await delay(250);
  }
}

async function turnOff(undoAction?: string): Promise<unknown> {
  const task = await server.call<Ref>('VirtualMachine.TurnOff', { this: vm.ref, ...(undoAction ? { undoAction } : {}) });
  await finishTask(server, task, 60_000);
  return server.call('Task.get_Result', { this: task.$ref });
}

before(async () => {
  server = await TestServer.start();
  vm = await createApiGuest(server, 'undo', 128);
  await finishTask(server, await server.call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: 'undo/data.vhd', sizeMB: 16 }));
  await server.call('VirtualMachine.AddHardDiskConnection', { this: vm.ref, path: 'undo/data.vhd', busType: 'SCSI', busNumber: 0, deviceNumber: 1 });
  const root = fs.realpathSync(server.dataDir);
  dataDisk = path.join(root, 'undo', 'data.vhd');
  bootDisk = (await server.call<{ $ref: string }>('HardDiskConnection.get_HardDisk', { this: `HardDiskConnection/${vm.id}/scsi0-0` })).$ref.slice('HardDisk/'.length);
});

after(async () => {
  const state = await server?.call<string>('VirtualMachine.get_State', { this: vm?.ref }).catch(() => 'TurnedOff');
  if (state && !['TurnedOff', 'Saved'].includes(state)) await turnOff('Discard').catch(() => {});
  await server?.stop();
  server?.remove();
});

test('undo disks: discard leaves the disks bit for bit, commit puts the writes in them, keep survives a guest shutdown and a reboot', { timeout: 600_000 }, async () => {
  const vud = (slot: string): string => path.join(path.dirname(dataDisk), `undo_${slot}.vud`);
  assert.equal(await server.call('VirtualMachine.get_Undoable', { this: vm.ref }), false);
  assert.equal(await server.call('VirtualMachine.get_UndoAction', { this: vm.ref }), 'Discard');
  await server.call('VirtualMachine.put_Undoable', { this: vm.ref, value: true });
  assert.equal(await server.call('VirtualMachine.get_Undoable', { this: vm.ref }), true);
  await rejectsWith(server.call('VirtualMachine.CreateSnapshot', { this: vm.ref, name: 'mixed' }), 'VM_E_UNDO_AND_SNAPSHOTS');
  await rejectsWith(server.call('VirtualMachine.DiscardUndoDisks', { this: vm.ref }), 'VM_E_NO_UNDO_DISKS');
  const bootBefore = fs.readFileSync(bootDisk);
  const dataBefore = fs.readFileSync(dataDisk);

  // Discard: the writes go, the disks are as they were, byte for byte.
  let guest = await startApiGuest(server, vm);
  assert.equal(await server.call('HardDiskConnection.get_UndoHardDisk', { this: `HardDiskConnection/${vm.id}/scsi0-1` }), vud('scsi0-1'));
  assert.ok(fs.existsSync(vud('scsi0-0')) && fs.existsSync(vud('scsi0-1')), 'an undo disk per disk');
  await rejectsWith(server.call('VirtualMachine.put_Undoable', { this: vm.ref, value: false }), 'VM_E_VM_RUNNING');
  await rejectsWith(server.call('VirtualMachine.MergeUndoDisks', { this: vm.ref }), 'VM_E_VM_RUNNING');
  await guestWrites(guest, 'A');
  guest.close();
  const discarded = await turnOff('Discard') as { undoDisks: string };
  assert.match(discarded.undoDisks, /discarded/);
  assert.ok(!fs.existsSync(vud('scsi0-0')) && !fs.existsSync(vud('scsi0-1')), 'the undo disks are gone');
  assert.ok(fs.readFileSync(dataDisk).equals(dataBefore), 'the data disk is bit for bit as before');
  assert.ok(fs.readFileSync(bootDisk).equals(bootBefore), 'the boot disk is bit for bit as before');
  assert.equal(await server.call('HardDiskConnection.get_UndoHardDisk', { this: `HardDiskConnection/${vm.id}/scsi0-1` }), null);

  // Commit: the writes land in the disk.
  guest = await startApiGuest(server, vm);
  assert.notEqual(await guestReads(guest), 'A.A.A.', 'the discarded write is not seen');
  await guestWrites(guest, 'B');
  guest.close();
  assert.match((await turnOff('Commit') as { undoDisks: string }).undoDisks, /committed/);
  assert.ok(!fs.existsSync(vud('scsi0-1')), 'a committed undo disk is gone');
  assert.ok(readStart(dataDisk).equals(written('B')), 'the committed write is in the data disk');
  const dataCommitted = fs.readFileSync(dataDisk);

  // Keep, applied by the guest's own shutdown: the next boot sees the write; the disk stays untouched.
  await server.call('VirtualMachine.put_UndoAction', { this: vm.ref, value: 'Keep' });
  guest = await startApiGuest(server, vm);
  await guestWrites(guest, 'C');
  await guest.run('poweroff -f', 5_000).catch(() => {}); // the console goes with the guest
  guest.close();
  await stateBecomes('TurnedOff', 60_000);
  assert.ok(fs.existsSync(vud('scsi0-1')), 'the kept undo disk is there');
  assert.ok(fs.readFileSync(dataDisk).equals(dataCommitted), 'the data disk is untouched');
  guest = await startApiGuest(server, vm);
  assert.equal(await guestReads(guest), 'C.C.C.', 'the next boot sees the kept write');
  guest.close();
  await turnOff('Keep');
  assert.ok(fs.readFileSync(dataDisk).equals(dataCommitted), 'still untouched after Keep');

  // MergeUndoDisks commits what was kept; DiscardUndoDisks then has nothing to discard.
  await finishTask(server, await server.call<Ref>('VirtualMachine.MergeUndoDisks', { this: vm.ref }), 60_000);
  assert.ok(readStart(dataDisk).equals(written('C')), 'the merged write is in the data disk');
  await rejectsWith(server.call('VirtualMachine.DiscardUndoDisks', { this: vm.ref }), 'VM_E_NO_UNDO_DISKS');
  await server.call('VirtualMachine.put_Undoable', { this: vm.ref, value: false });
});
