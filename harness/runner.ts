// Runs a scenario: builds the cluster, makes its HA VMs, then injects each fault in turn and
// measures it (docs/cluster-test.md, "What is measured"): detection (from etcd), failover (fault
// until the guest runs on a survivor and acknowledges a new record), double starts (two running
// QEMUs of one VM in the hosts' process lists, sampled every 100 ms), records lost (acknowledged
// records missing from the disk at the next boot, and the disk read back at the end).

import { countRecords, RecordError } from '../test/helpers/records.js';
import { HostApi } from './api.js';
import { inject, MOVING_FAULTS } from './faults.js';
import { createHaGuest, createHostNetworks, type HaGuest, qemusOf, resumeRecords } from './guest.js';
import { HarnessError } from './namespaces.js';
import { expandFaults, type FaultKind, type Scenario } from './scenario.js';
import { type Cluster, type Host } from './topology.js';
import type { HostRecord, OwnerRecord } from '../server/cluster/model.js';
import { clusterKeys } from '../server/cluster/model.js';

export interface FaultResult {
  fault: FaultKind;
  host: string;
  detectionSeconds: number | null;
  failoverSeconds: number | null;
  doubleStarts: number;
  recordsLost: number;
  ok: boolean;
}

export interface Report {
  scenario: string;
  hosts: number;
  faults: FaultResult[];
  invariantsHeld: boolean;
}

export interface RunOptions {
  log: (line: string) => void;
  network: boolean;
  /** false: vserverds without cluster settings (a check of the harness itself): no etcd keys are read, no VM is made HA. */
  clustered: boolean;
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const seconds = (from: number): number => Math.round((Date.now() - from) / 100) / 10;

/** Samples every VM's running QEMUs; counts the moments two run at once (each overlap once). */
class DoubleStartWatch {
  private timer: NodeJS.Timeout | null = null;
  private overlapping = new Set<string>();
  count = 0;
  notes: string[] = [];
  constructor(private readonly cluster: Cluster, private readonly guests: HaGuest[]) {}
  start(): void {
    this.timer = setInterval(() => {
      for (const g of this.guests) {
        const qemus = qemusOf(this.cluster, g.id);
        if (qemus.length > 1 && !this.overlapping.has(g.id)) {
          this.count += 1;
          this.notes.push(`${g.name}: ${qemus.map((q) => `pid ${q.pid} on ${q.host.name}`).join(' and ')} at ${new Date().toISOString()}`);
          this.overlapping.add(g.id);
        } else if (qemus.length <= 1) this.overlapping.delete(g.id);
      }
    }, 100);
  }
  stop(): void { if (this.timer) clearInterval(this.timer); }
}

async function waitUntil<T>(what: string, timeoutMs: number, probe: () => Promise<T | null | undefined | false> | T | null | undefined | false): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new HarnessError(`${what}: not within ${timeoutMs / 1000} s`);
    await delay(200);
  }
}

/** Every host has its membership key and is Up. */
async function allHostsUp(cluster: Cluster, timeoutMs: number): Promise<void> {
  const keys = clusterKeys(cluster.name);
  await waitUntil('every host Up in etcd', timeoutMs, async () => {
    const hosts = await cluster.etcd!.prefix<HostRecord>(keys.hosts);
    return hosts !== null && cluster.hosts.every((h) => hosts.get(keys.host(h.name))?.state === 'Up');
  });
}

/** The one host running the guest's QEMU now (or null when none or several do). */
function runningOn(cluster: Cluster, guest: HaGuest): Host | null {
  const qemus = qemusOf(cluster, guest.id);
  return qemus.length === 1 ? qemus[0].host : null;
}

export async function runScenario(cluster: Cluster, scenario: Scenario, options: RunOptions): Promise<Report> {
  const { log } = options;
  const apis = new Map(cluster.hosts.map((h) => [h.name, new HostApi(cluster.relay!, h.apiTarget)]));
  const keys = clusterKeys(cluster.name);
  if (options.clustered) {
    await allHostsUp(cluster, 60_000);
    log(`cluster ${cluster.name}: ${cluster.hosts.length} hosts Up`);
  }
  let network = options.network;
  if (network) {
    try {
      await createHostNetworks([...apis.values()]);
    } catch (e) {
      network = false;
      log(`host networks not made (${(e as Error).message}); liveness is the guest's records on its serial port`);
    }
  }
  const first = apis.get(cluster.hosts[0].name)!;
  const guests: HaGuest[] = [];
  for (const spec of scenario.vms) {
    const guest = await createHaGuest(cluster, first, spec, network, options.clustered);
    guests.push(guest);
    const host = await waitUntil(`${guest.name} running on one host`, 60_000, () => runningOn(cluster, guest));
    await resumeRecords(cluster, guest, host, 180_000);
    log(`${guest.name} (${guest.id}) runs on ${host.name}, ${guest.acknowledged} records acknowledged`);
  }
  const watch = new DoubleStartWatch(cluster, guests);
  watch.start();
  const results: FaultResult[] = [];
  let incomplete = false;
  try {
    for (const [index, step] of expandFaults(scenario).entries()) {
      const guest = guests[0];
      await delay(scenario.settleSeconds * 1000);
      guest.refresh();
      const before = runningOn(cluster, guest);
      if (!before) {
        // The last fault left the VM down (or doubled): the run stops here and the report says it broke.
        log(`${guest.name} is not running on exactly one host before fault ${index + 1}: the run stops`);
        incomplete = true;
        break;
      }
      const beforePid = qemusOf(cluster, guest.id)[0].pid;
      const target = step.target === 'vm-host' ? before : cluster.host(step.target);
      const doubleBefore = watch.count;
      const lostBefore = guests.reduce((n, g) => n + g.lost, 0);
      const ackBefore = guest.acknowledged;
      const t0 = Date.now();
      const injected = await inject(cluster, step.fault, target);
      log(`fault ${index + 1}: ${step.fault} on ${injected.host.name} (${guest.name} on ${before.name}, ${ackBefore} records acknowledged)`);
      const moving = MOVING_FAULTS.has(step.fault);
      let detectionSeconds: number | null = null;
      let failoverSeconds: number | null = null;
      let ok = true;
      let undone = false;
      const undo = async (): Promise<void> => { if (!undone) { undone = true; await injected.undo(); } };
      // A moving fault lasts until the VM runs on a survivor (or its time is up), and at least
      // holdSeconds: undone sooner, the host could take its own VM back, which is no failover.
      const holdTimer = moving ? null : setTimeout(() => { void undo().catch((e: Error) => log(`undo failed: ${e.message}`)); }, step.holdSeconds * 1000);
      const detection = (async () => {
        const deadline = t0 + step.timeoutSeconds * 1000;
        while (options.clustered && Date.now() < deadline && detectionSeconds === null) {
          const hosts = await cluster.etcd!.prefix<HostRecord>(keys.hosts);
          const owners = await cluster.etcd!.prefix<OwnerRecord>(keys.owners);
          if (hosts && owners && (!hosts.has(keys.host(injected.host.name)) || owners.get(keys.owner(guest.id))?.host !== before.name)) detectionSeconds = seconds(t0);
          await delay(200);
        }
      })();
      try {
        if (moving) {
          const survivor = await waitUntil(`${guest.name} running on a survivor`, step.timeoutSeconds * 1000, () => {
            const on = runningOn(cluster, guest);
            return on && on !== injected.host ? on : null;
          });
          await resumeRecords(cluster, guest, survivor, Math.max(5_000, t0 + step.timeoutSeconds * 1000 - Date.now()));
          failoverSeconds = seconds(t0);
          log(`  ${guest.name} runs on ${survivor.name} after ${failoverSeconds} s`);
        } else {
          // Nothing may move: the same QEMU runs through the hold and the guest keeps acknowledging records.
          if (step.fault === 'etcd-quorum-loss' || step.fault === 'etcd-leader-kill') {
            // What the cluster tells a user meanwhile (for a quorum loss: why nothing moves).
            await delay(Math.min(step.holdSeconds * 1000 / 2, 8_000));
            const says = await apis.get(before.name)!.call('Cluster.get_Hosts', { this: `Cluster/${cluster.name}` })
              .then(() => 'the cluster answers', (e: Error) => e.message);
            log(`  the cluster says: ${says}`);
          }
          await delay(Math.max(0, t0 + step.holdSeconds * 1000 - Date.now()));
          const now = qemusOf(cluster, guest.id);
          guest.refresh();
          if (now.length !== 1 || now[0].pid !== beforePid) {
            ok = false;
            log(`  the VM was disturbed: QEMUs now ${JSON.stringify(now.map((q) => ({ host: q.host.name, pid: q.pid })))}, before pid ${beforePid} on ${before.name}`);
          }
          if (guest.acknowledged <= ackBefore) {
            ok = false;
            log(`  the guest acknowledged no record during the fault (${guest.acknowledged})`);
          }
        }
      } catch (e) {
        ok = false;
        log(`  ${(e as Error).message}`);
      }
      if (holdTimer) clearTimeout(holdTimer);
      else await delay(Math.max(0, t0 + step.holdSeconds * 1000 - Date.now()));
      await undo();
      await detection;
      for (const h of cluster.hosts) await cluster.restore(h);
      if (options.clustered) await allHostsUp(cluster, 60_000).catch((e: Error) => { ok = false; log(`  after restore: ${e.message}`); });
      // A guest whose console closed (its QEMU died) is found again wherever it runs now.
      for (const g of guests) {
        const now = qemusOf(cluster, g.id);
        if (g.serial && now.length === 1 && now[0].host === g.servedBy && now[0].pid === g.servedPid) continue;
        const host = await waitUntil(`${g.name} running after the restore`, 120_000, () => runningOn(cluster, g)).catch(() => null);
        if (host) await resumeRecords(cluster, g, host, 180_000).catch((e: Error) => { ok = false; log(`  ${e.message}`); });
        else ok = false;
      }
      const doubleStarts = watch.count - doubleBefore;
      const recordsLost = guests.reduce((n, g) => n + g.lost, 0) - lostBefore;
      if (doubleStarts > 0) log(`  double start: ${watch.notes.slice(doubleBefore).join('; ')}`);
      ok = ok && doubleStarts === 0 && recordsLost === 0;
      results.push({ fault: step.fault, host: injected.host.name, detectionSeconds, failoverSeconds, doubleStarts, recordsLost, ok });
    }
  } finally {
    watch.stop();
  }
  // The disks read back whole: every record acknowledged, none torn or out of place (two writers leave those).
  let disksHeld = true;
  for (const g of guests) {
    g.refresh();
    const host = runningOn(cluster, g);
    g.detach();
    if (host) await apis.get(host.name)!.task('VirtualMachine.TurnOff', { this: g.ref }, 60_000).catch((e: Error) => log(`turning ${g.name} off: ${e.message}`));
    try {
      const held = countRecords(g.dataDisk);
      if (held < g.acknowledged) {
        disksHeld = false;
        log(`${g.name}: the disk holds ${held} records, ${g.acknowledged} were acknowledged`);
      } else log(`${g.name}: the disk holds ${held} records, ${g.acknowledged} acknowledged, ${g.boots} boots`);
    } catch (e) {
      disksHeld = false;
      log(`${g.name}: ${e instanceof RecordError ? e.message : `cannot read the disk: ${(e as Error).message}`}`);
    }
  }
  return { scenario: scenario.name, hosts: cluster.hosts.length, faults: results, invariantsHeld: !incomplete && disksHeld && results.every((r) => r.ok) };
}
