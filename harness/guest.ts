// The HA VMs the harness watches: each runs the test guest (test/guest), whose /bin/records
// writes numbered, fsynced, checksummed 4 KiB records to its data disk and prints "VSREC n" on
// COM1 once record n is durable. Their files live on the shared storage, so whichever host runs
// the VM serves the same disks; the harness reads COM1 through the console socket of the host
// that runs it now, and after every (re)boot checks that the last acknowledged record is on the
// disk before the guest writes on from there.

import fs from 'node:fs';
import path from 'node:path';
import { GUEST_PROMPT, parseGuestLeases, testGuest } from '../test/helpers/guest.js';
import { lastAcknowledged } from '../test/helpers/records.js';
import { SerialReader } from '../test/helpers/vm.js';
import { VmPaths } from '../vmm/paths.js';
import type { HostApi, Ref } from './api.js';
import { HarnessError } from './namespaces.js';
import type { Cluster, Host } from './topology.js';

export const NETWORK_NAME = 'vsct-lan';

export interface GuestSpec { name: string; memoryMB: number; dataDiskMB: number }

export class HaGuest {
  /** The highest record the guest ever acknowledged (every boot, every host). */
  acknowledged = 0;
  /** Acknowledged records found missing from the disk after a restart. */
  lost = 0;
  boots = 0;
  serial: SerialReader | null = null;
  servedBy: Host | null = null;
  /** The QEMU whose console is read: a new QEMU on the same host (a restart there) is a new boot to resume. */
  servedPid: number | null = null;
  /** The guest's address from its last DHCP lease (its MAC moves with it, so the address does too). */
  address: string | null = null;
  constructor(readonly name: string, readonly id: string, readonly ref: string, readonly folder: string, readonly networked: boolean) {}

  get dataDisk(): string { return path.join(this.folder, 'data.vhd'); }

  /** Folds in what the current console showed; returns the highest acknowledged record. */
  refresh(): number {
    if (this.serial) {
      this.acknowledged = Math.max(this.acknowledged, lastAcknowledged(this.serial.text));
      this.address = parseGuestLeases(this.serial.text).at(-1)?.address ?? this.address;
    }
    return this.acknowledged;
  }

  detach(): void {
    this.refresh();
    this.serial?.close();
    this.serial = null;
    this.servedBy = null;
  }
}

/**
 * The host network on every host, bridged to the host's link, so guests reach the hub (and its
 * DHCP). Each host makes its own (its own id): a VM that moves is attached to its new host's
 * network of the same name, as in a real cluster.
 */
export async function createHostNetworks(apis: HostApi[]): Promise<void> {
  for (const api of apis) await api.call<Ref>('VirtualServer.CreateVirtualNetwork', { name: NETWORK_NAME, kind: 'host', hostAdapter: 'eth0' });
}

/** Makes an HA VM on the shared storage through `api` (one host's API) and turns it on. */
export async function createHaGuest(cluster: Cluster, api: HostApi, spec: GuestSpec, withNetwork: boolean, highlyAvailable: boolean): Promise<HaGuest> {
  const template = path.join(cluster.sharedStorage, 'test-guest-boot.vhd');
  if (!fs.existsSync(template)) fs.copyFileSync(testGuest().bootVhd, template);
  const folder = path.join(cluster.sharedStorage, spec.name);
  const made = await api.call<Ref>('VirtualServer.CreateVirtualMachine', { name: spec.name, path: folder });
  const id = made.$ref.slice('VirtualMachine/'.length);
  await api.call('VirtualMachine.put_Memory', { this: made.$ref, value: spec.memoryMB });
  await api.call('VirtualMachine.AddSCSIController', { this: made.$ref });
  await api.task('VirtualServer.CreateDifferencingVirtualHardDisk', { path: path.join(folder, 'boot.vhd'), parentPath: template });
  await api.call('VirtualMachine.AddHardDiskConnection', { this: made.$ref, path: path.join(folder, 'boot.vhd'), busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
  await api.task('VirtualServer.CreateDynamicVirtualHardDisk', { path: path.join(folder, 'data.vhd'), sizeMB: spec.dataDiskMB });
  await api.call('VirtualMachine.AddHardDiskConnection', { this: made.$ref, path: path.join(folder, 'data.vhd'), busType: 'SCSI', busNumber: 0, deviceNumber: 1 });
  if (withNetwork) {
    const adapter = await api.call<Ref>('VirtualMachine.AddNetworkAdapter', { this: made.$ref });
    const networks = await api.call<Ref[]>('VirtualServer.get_VirtualNetworks');
    for (const network of networks) {
      if (await api.call<string>('VirtualNetwork.get_Name', { this: network.$ref }) === NETWORK_NAME) {
        await api.call('NetworkAdapter.AttachToVirtualNetwork', { this: adapter.$ref, network: network.$ref });
      }
    }
  }
  if (highlyAvailable) await api.call('VirtualMachine.put_HighAvailability', { this: made.$ref, value: { enabled: true, priority: 50, preferredHosts: [], maxRestarts: 3 } });
  await api.task('VirtualMachine.Startup', { this: made.$ref });
  return new HaGuest(spec.name, id, made.$ref, folder, withNetwork);
}

/** The running QEMU processes (not stopped ones) of `vmId` on each host, from the hosts' own process lists. */
export function qemusOf(cluster: Cluster, vmId: string): Array<{ host: Host; pid: number }> {
  const found: Array<{ host: Host; pid: number }> = [];
  for (const host of cluster.hosts) {
    for (const pid of host.ns.pids()) {
      try {
        const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        if (!cmdline.startsWith('qemu-system') && !cmdline.includes('/qemu-system')) continue;
        if (!cmdline.includes(vmId)) continue;
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
        if (state === 'T' || state === 't' || state === 'Z') continue; // frozen or dead: it cannot write
        found.push({ host, pid });
      } catch { /* gone meanwhile */ }
    }
  }
  return found;
}

/**
 * Attaches to the console of the host now running the guest, waits for its shell, checks that
 * the last acknowledged record is on the disk (counting what is missing as lost) and starts the
 * record writer after it. Resolves once the guest has acknowledged one more record.
 */
export async function resumeRecords(cluster: Cluster, guest: HaGuest, host: Host, timeoutMs: number): Promise<void> {
  guest.detach();
  const deadline = Date.now() + timeoutMs;
  const socket = VmPaths.of(guest.id, host.runDir).console;
  for (;;) {
    try {
      guest.serial = await SerialReader.attach(socket);
      break;
    } catch {
      if (Date.now() > deadline) throw new HarnessError(`no console for ${guest.name} on ${host.name} (${socket}) within ${timeoutMs / 1000} s`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  guest.servedBy = host;
  guest.servedPid = qemusOf(cluster, guest.id).find((q) => q.host === host)?.pid ?? null;
  const serial = guest.serial;
  serial.type('\n');
  await serial.waitFor(GUEST_PROMPT, Math.max(1_000, deadline - Date.now()));
  guest.boots += 1;
  const last = guest.acknowledged;
  if (last > 0 && !(await recordPresent(serial, last, deadline))) {
    // Find how many of the acknowledged records are missing (they form a prefix when whole).
    let lo = 0;
    let hi = last;
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (await recordPresent(serial, mid, deadline)) lo = mid;
      else hi = mid;
    }
    guest.lost += last - lo;
  }
  // A record rewritten is byte for byte the same, so writing on from last + 1 is safe.
  await serial.run(`(records /dev/sdb ${last + 1} &)`, Math.max(1_000, deadline - Date.now()));
  while (lastAcknowledged(serial.text) <= last) {
    if (Date.now() > deadline) throw new HarnessError(`${guest.name} on ${host.name} acknowledged no record after ${last} within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
  guest.refresh();
  if (!guest.networked) return;
  // Its service answers: a ping from the hub to the address its DHCP lease gave it.
  for (;;) {
    guest.refresh();
    if (guest.address && cluster.pingFromHub(guest.address)) return;
    if (Date.now() > deadline) throw new HarnessError(`${guest.name} on ${host.name} did not answer a ping (${guest.address ?? 'no lease seen'}) within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function recordPresent(serial: SerialReader, n: number, deadline: number): Promise<boolean> {
  const out = await serial.run(`dd if=/dev/sdb bs=4096 skip=${n - 1} count=1 iflag=direct 2>/dev/null | head -c 16`, Math.max(1_000, deadline - Date.now()));
  return out.includes(`VSREC ${String(n).padStart(10, '0')}`);
}
