// A test guest for the snapshot and backup tests: an API guest (test/helpers/api-guests.ts) with
// a data disk on SCSI 0:1 that /bin/records writes numbered records to (test/helpers/records.ts
// reads them back), and the files vserverd keeps for it.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { VmPaths } from '../../vmm/paths.js';
import { type ApiGuest, createApiGuest, finishTask, type GuestConsole, type Ref } from './api-guests.js';
import { lastAcknowledged } from './records.js';
import type { TestServer } from './server.js';
import { vsctl } from './vhd-fixtures.js';
import { delay } from './wait.js';

export const DATA_SLOT = 'scsi0-1';

export interface LayerGuest extends ApiGuest { dataDisk: string; folder: string }

/** An API guest of 128 MB with a dynamic data disk of `dataMB` on SCSI 0:1 (/dev/sdb in the guest). */
export async function createLayerGuest(server: TestServer, name: string, dataMB = 32): Promise<LayerGuest> {
  const vm = await createApiGuest(server, name, 128);
  await finishTask(server, await server.call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: `${name}/data.vhd`, sizeMB: dataMB }));
  await server.call('VirtualMachine.AddHardDiskConnection', { this: vm.ref, path: `${name}/data.vhd`, busType: 'SCSI', busNumber: 0, deviceNumber: 1 });
  const folder = path.join(fs.realpathSync(server.dataDir), name);
  return { ...vm, folder, dataDisk: path.join(folder, 'data.vhd') };
}

/** Starts /bin/records on the data disk in the background; its "VSREC n" lines come on the console. */
export async function startRecords(guest: GuestConsole, first = 1): Promise<void> {
  await guest.run(`(records /dev/sdb ${first} &)`);
}

/** Waits until the guest has acknowledged at least `count` records; returns the last acknowledged. */
export async function recordsReach(guest: GuestConsole, count: number, timeoutMs = 60_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = lastAcknowledged(guest.serial.text);
    if (last >= count) return last;
    assert.ok(Date.now() < deadline, `the guest acknowledged ${last} records, not ${count}, within ${timeoutMs} ms`);
    await delay(100);
  }
}

/** The file the worker serves for a slot, from its status.json (docs/vmm.md: `disks`). */
export function servedTop(server: TestServer, vm: ApiGuest, slot = DATA_SLOT): string {
  const status = VmPaths.of(vm.id, server.runDir).readStatus() as ({ disks?: Array<{ slot: string; file: string }> } | null);
  const top = status?.disks?.find((d) => d.slot === slot)?.file;
  assert.ok(top, `status.json names the top of ${slot}: ${JSON.stringify(status?.disks)}`);
  return top;
}

/** Every VHD in the VM's folder and its Snapshots folder passes `vsctl vhd check`. */
export function checkVmFiles(vm: LayerGuest): string[] {
  const files = [vm.folder, path.join(vm.folder, 'Snapshots')].flatMap((dir) => (fs.existsSync(dir) ? fs.readdirSync(dir) : [])
    .filter((n) => /\.(vhd|vud)$/.test(n)).map((n) => path.join(dir, n)));
  for (const file of files) {
    const r = vsctl(['vhd', 'check', file, '--json']);
    assert.equal(r.status, 0, `vsctl vhd check ${file}: ${r.stdout}${r.stderr}`);
  }
  return files;
}

/** Polls the VM's state until it is `state`. */
export async function stateBecomes(server: TestServer, vm: ApiGuest, state: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await server.call<string>('VirtualMachine.get_State', { this: vm.ref })) !== state) {
    assert.ok(Date.now() < deadline, `${vm.name} did not become ${state} within ${timeoutMs} ms`);
    await delay(250);
  }
}

/** Runs a task to its end; returns its result. */
export async function taskResult<T = unknown>(server: TestServer, task: Ref, timeoutMs = 120_000): Promise<T> {
  await finishTask(server, task, timeoutMs);
  return server.call<T>('Task.get_Result', { this: task.$ref });
}
