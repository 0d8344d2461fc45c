// The target side of a failover: every host watches placements/ for itself, registers the VM
// from its .vmc on shared storage when its catalog lacks it (the .vmc's id is kept), turns it on
// (which takes its ownership), and writes the failover's timeline. A failure (a disk lock not yet
// let go) is tried again a few times, then recorded as the failover's error.

import type { Etcd3, Watcher } from 'etcd3';
import type { ClusterConfig } from '../config.js';
import type { VmRecord } from '../vm-record.js';
import { readAll, readJson, watchPrefix } from './etcd-client.js';
import { type FailoverRecord, type PlacementRecord, clusterKeys } from './model.js';
import type { ClusterVmRecords } from './vm-records.js';

const ATTEMPTS = 4;
const RETRY_MS = 2_000;
/** Placements are also read this often: a watch stuck on a silent member delays a failover, never loses it. */
const RESCAN_MS = 2_000;

/** How this host's VMs are found, registered and turned on (vserverd's catalog and Startup). */
export interface LocalVms {
  get(id: string): VmRecord | null;
  register(vmcPath: string): Promise<VmRecord>;
  /** Turns the VM on and resolves when it runs. */
  start(vm: VmRecord): Promise<void>;
  running(vm: VmRecord): boolean;
}

export class FailoverTarget {
  private watcher: Watcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly busy = new Set<string>();
  private readonly keys;

  constructor(private readonly client: Etcd3, private readonly config: ClusterConfig, private readonly records: ClusterVmRecords,
    private readonly vms: LocalVms, private readonly report: (record: FailoverRecord) => void, private readonly warn: (message: string) => void) {
    this.keys = clusterKeys(config.name);
  }

  /** Watches for placements, and takes those made while this host was away. */
  async start(): Promise<void> {
    this.watcher = await watchPrefix(this.client, this.keys.placements, this.warn);
    this.watcher.on('put', (kv) => {
      let placement: PlacementRecord;
      try {
        placement = JSON.parse(kv.value.toString()) as PlacementRecord;
      } catch {
        return;
      }
      if (placement.host === this.config.hostName) void this.take(kv.key.toString().slice(this.keys.placements.length), placement);
    });
    await this.scan();
    this.timer = setInterval(() => void this.scan().catch(() => undefined), RESCAN_MS);
  }

  /** Takes every placement made for this host (those made while it was away, or whose watch event was missed). */
  private async scan(): Promise<void> {
    for (const [vmId, placement] of await readAll<PlacementRecord>(this.client, this.keys.placements)) {
      if (placement.host === this.config.hostName) void this.take(vmId, placement);
    }
  }

  private async take(vmId: string, placement: PlacementRecord): Promise<void> {
    if (this.busy.has(vmId)) return;
    this.busy.add(vmId);
    const historyKey = this.keys.failover(placement.failoverId);
    const update = async (change: (r: FailoverRecord) => void): Promise<void> => {
      const record = await readJson<FailoverRecord>(this.client, historyKey);
      if (!record) return;
      change(record);
      await this.client.put(historyKey).value(JSON.stringify(record));
      this.report(record);
    };
    // A scan may have read a placement that a take just finished and deleted.
    const current = await readJson<PlacementRecord>(this.client, this.keys.placement(vmId)).catch(() => null);
    if (current?.failoverId !== placement.failoverId) {
      this.busy.delete(vmId);
      return;
    }
    let lastError: Error | null = null;
    try {
      const clustered = await this.records.get(vmId);
      if (!clustered) throw new Error(`the cluster has no record of VM ${vmId}`);
      for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
        try {
          const vm = this.vms.get(vmId) ?? await this.vms.register(clustered.vmcPath);
          await update((r) => { r.started ??= new Date().toISOString(); });
          // Turned on here meanwhile (by a user, between two attempts): the failover's aim is met.
          if (!this.vms.running(vm)) await this.vms.start(vm);
          lastError = null;
          break;
        } catch (e) {
          lastError = e as Error;
          this.warn(`failover of ${clustered.name} to ${this.config.hostName}, attempt ${attempt} of ${ATTEMPTS}: ${lastError.message}`);
          if (attempt < ATTEMPTS) await new Promise((r) => setTimeout(r, RETRY_MS));
        }
      }
      if (lastError) {
        const reason = `failover to ${this.config.hostName} failed: ${lastError.message}`;
        await this.records.update({ id: vmId }, (r) => { r.failed = reason; }, this.config.hostName);
        await update((r) => { r.error = reason; });
      } else {
        await this.records.update({ id: vmId }, (r) => { r.host = this.config.hostName; r.desired = 'Running'; r.restarts = 0; r.failed = null; }, this.config.hostName);
        await update((r) => {
          r.running = new Date().toISOString();
          r.seconds = (Date.parse(r.running) - Date.parse(r.detected)) / 1000;
        });
      }
    } catch (e) {
      this.warn(`failover of VM ${vmId}: ${(e as Error).message}`);
      await update((r) => { r.error = (e as Error).message; }).catch(() => undefined);
    } finally {
      await this.client.delete().key(this.keys.placement(vmId)).catch(() => undefined);
      this.busy.delete(vmId);
    }
  }

  /** Whether a failover is turning this VM on here: its attempts are then the only starts. */
  taking(vmId: string): boolean {
    return this.busy.has(vmId);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.watcher?.cancel().catch(() => undefined);
  }
}
