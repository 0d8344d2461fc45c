// Test guests run by a real vserverd through its API, for the network tests and bench/net.ts:
// a VM with a differencing child of the guest's boot VHD on SCSI and one network adapter, turned
// on by the API, its COM1 read and typed into through the worker's console socket.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { VmPaths } from '../../vmm/paths.js';
import { GUEST_PROMPT, GUEST_READY_MARKER, leasePattern, parseGuestLeases, type GuestLease, testGuest } from './guest.js';
import type { TestServer } from './server.js';
import { SerialReader } from './vm.js';

export interface Ref { $ref: string }

export interface ApiGuest {
  name: string;
  ref: string;
  id: string;
  /** Its only network adapter's reference. */
  adapter: string;
}

export const GUEST_BOOT_MS = 120_000;
const TEMPLATE = 'disks/net-template.vhd';

/** Waits for a task and asserts it succeeded. */
export async function finishTask(server: TestServer, task: Ref, timeoutMs = GUEST_BOOT_MS): Promise<void> {
  assert.match(task.$ref, /^Task\//);
  assert.equal(await server.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs }), true, `${task.$ref} did not finish within ${timeoutMs} ms`);
  const error = await server.call('Task.get_Error', { this: task.$ref });
  assert.equal(error, null, `${task.$ref} failed: ${JSON.stringify(error)}`);
}

/**
 * A VM of `memoryMB` whose disk is a differencing child (made by the API) of the test guest's
 * boot VHD, copied once into the server's data folder, with one network adapter (default model).
 */
export async function createApiGuest(server: TestServer, name: string, memoryMB = 128): Promise<ApiGuest> {
  const template = path.join(server.dataDir, TEMPLATE);
  if (!fs.existsSync(template)) {
    fs.mkdirSync(path.dirname(template), { recursive: true });
    fs.copyFileSync(testGuest().bootVhd, template);
  }
  const made = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name });
  const id = made.$ref.slice('VirtualMachine/'.length);
  await server.call('VirtualMachine.put_Memory', { this: made.$ref, value: memoryMB });
  await server.call<Ref>('VirtualMachine.AddSCSIController', { this: made.$ref });
  const disk = `disks/${name}-${id.slice(0, 8)}.vhd`;
  await finishTask(server, await server.call<Ref>('VirtualServer.CreateDifferencingVirtualHardDisk', { path: disk, parentPath: TEMPLATE }));
  await server.call('VirtualMachine.AddHardDiskConnection', { this: made.$ref, path: disk, busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
  const adapter = await server.call<Ref>('VirtualMachine.AddNetworkAdapter', { this: made.$ref });
  return { name, ref: made.$ref, id, adapter: adapter.$ref };
}

/** A running guest's serial console with the network helpers the tests need. */
export class GuestConsole {
  constructor(readonly vm: ApiGuest, readonly serial: SerialReader) {}

  /** Runs a shell command in the guest; returns what it printed. */
  run(command: string, timeoutMs = 60_000): Promise<string> {
    return this.serial.run(command, timeoutMs);
  }

  /** The next VSERVER-LEASE line at or after `from` (a console offset). */
  async lease(from = 0, timeoutMs = 60_000): Promise<GuestLease> {
    const end = await this.serial.waitFor(leasePattern(), timeoutMs, from);
    const leases = parseGuestLeases(this.serial.text.slice(from, end));
    assert.ok(leases.length > 0, 'a lease line');
    return leases.at(-1)!;
  }

  /** The last lease the guest printed, or null. */
  lastLease(): GuestLease | null {
    return parseGuestLeases(this.serial.text).at(-1) ?? null;
  }

  /** busybox ping: the number of replies to `count` echo requests 0.2 s apart. */
  async pingReplies(address: string, count = 3): Promise<number> {
    const out = await this.run(`ping -c ${count} -i 0.2 -W 2 ${address} 2>&1 | grep -c 'bytes from'`, 30_000 + count * 1000);
    return Number(out.trim().split('\n').at(-1));
  }

  /** sha256 of a file in the guest. */
  async sha256(file: string): Promise<string> {
    const out = await this.run(`sha256sum ${file}`);
    const match = /^([0-9a-f]{64}) /m.exec(out);
    assert.ok(match, `sha256sum printed: ${out}`);
    return match[1];
  }

  close(): void {
    this.serial.close();
  }
}

/** Turns the VM on by the API and waits for its guest's shell (the DHCP client runs after it). */
export async function startApiGuest(server: TestServer, vm: ApiGuest): Promise<GuestConsole> {
  await finishTask(server, await server.call<Ref>('VirtualMachine.Startup', { this: vm.ref }));
  const serial = await SerialReader.attach(VmPaths.of(vm.id, server.runDir).console);
  try {
    const ready = await serial.waitFor(GUEST_READY_MARKER, GUEST_BOOT_MS);
    await serial.waitFor(GUEST_PROMPT, GUEST_BOOT_MS, ready);
  } catch (e) {
    serial.close();
    throw e;
  }
  return new GuestConsole(vm, serial);
}

/** Turns the VM off by the API if it runs. */
export async function turnOffApiGuest(server: TestServer, vm: ApiGuest): Promise<void> {
  const state = await server.call<string>('VirtualMachine.get_State', { this: vm.ref });
  if (['Running', 'Paused', 'TurningOn', 'Restoring'].includes(state)) {
    await finishTask(server, await server.call<Ref>('VirtualMachine.TurnOff', { this: vm.ref }), 30_000);
  }
}
