// The leader: one host, elected on `leader` (etcd3 Election), decides where the HA VMs of a
// failed host run next. It acts only on a VM whose ownership key is gone (its lease ran out, so
// its worker has fenced itself), that is meant to run, and whose host is Down; it writes a
// placement for a surviving Up host and the failover's record.

import type { Campaign, Etcd3, Watcher } from 'etcd3';
import { HOST_LEASE_TTL_S } from '../../vmm/run-licence.js';
import type { ClusterConfig } from '../config.js';
import { readAll, watchPrefix } from './etcd-client.js';
import { type ClusterVmRecord, type FailoverRecord, type HostRecord, type OwnerRecord, type PlacementRecord, clusterKeys } from './model.js';
import type { ClusterVmRecords } from './vm-records.js';

/** A scan also runs this often while leading: a missed watch event delays a failover, never loses it. */
const RESCAN_MS = 2_000;

/** Where a VM goes: its preferred hosts first, in order, then the Up host with the most memory available. */
export function chooseHost(vm: ClusterVmRecord, up: Map<string, number>): string | null {
  const fits = (host: string): boolean => (up.get(host) ?? -1) >= vm.memoryMB && host !== vm.host;
  const preferred = vm.ha.preferredHosts.find(fits);
  if (preferred) return preferred;
  const rest = [...up.keys()].filter(fits).sort((a, b) => up.get(b)! - up.get(a)! || a.localeCompare(b));
  return rest[0] ?? null;
}

export class Leader {
  private campaign: Campaign | null = null;
  private leading = false;
  private closed = false;
  private watchers: Watcher[] = [];
  private timer: NodeJS.Timeout | null = null;
  private scanning: Promise<void> | null = null;
  private readonly keys;

  constructor(private readonly client: Etcd3, private readonly config: ClusterConfig, private readonly records: ClusterVmRecords,
    private readonly report: (record: FailoverRecord) => void, private readonly warn: (message: string) => void) {
    this.keys = clusterKeys(config.name);
  }

  get isLeader(): boolean { return this.leading; }

  /** Campaigns; a campaign that fails (etcd lost) is started again. */
  start(): void {
    if (this.closed) return;
    const campaign = this.client.election(this.keys.election, HOST_LEASE_TTL_S).campaign(this.config.hostName);
    this.campaign = campaign;
    // One new campaign per failed one: a campaign reports its end several times (each of its
    // calls fails), and only the current campaign's end counts.
    const again = (): void => {
      if (this.campaign !== campaign) return;
      this.campaign = null;
      if (!this.closed) setTimeout(() => this.start(), 1_000).unref();
    };
    campaign.on('elected', () => void this.lead().catch((e: Error) => {
      // Elected but unable to watch: resign, so that a host that can lead does.
      this.warn(`could not start leading (${e.message}); resigning`);
      void this.stopLeading().then(() => campaign.resign()).catch(() => undefined).finally(again);
    }));
    campaign.on('error', (e: Error) => {
      if (this.campaign !== campaign) return;
      this.warn(`the leader election failed (${e.message}); campaigning again`);
      void this.stopLeading();
      again();
    });
  }

  /** The elected host's name, or null while there is none. */
  async leader(): Promise<string | null> {
    return (await this.client.election(this.keys.election).leader()) ?? null;
  }

  private async lead(): Promise<void> {
    this.leading = true;
    const owners = await watchPrefix(this.client, this.keys.owners, this.warn);
    const hosts = await watchPrefix(this.client, this.keys.hosts, this.warn);
    this.watchers = [owners, hosts];
    for (const watcher of this.watchers) watcher.on('delete', () => this.scan());
    this.timer = setInterval(() => this.scan(), RESCAN_MS);
    this.scan();
  }

  private async stopLeading(): Promise<void> {
    this.leading = false;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const watchers = this.watchers;
    this.watchers = [];
    await Promise.all(watchers.map((w) => w.cancel().catch(() => undefined)));
  }

  /** One scan at a time; a request while one runs is served by the next timer tick or event. */
  scan(): void {
    if (!this.leading || this.scanning) return;
    this.scanning = this.place().catch((e: Error) => this.warn(`the leader's scan failed: ${e.message}`)).finally(() => { this.scanning = null; });
  }

  private async place(): Promise<void> {
    const [vms, owners, hosts, placements] = await Promise.all([
      this.records.list(), readAll<OwnerRecord>(this.client, this.keys.owners), readAll<HostRecord>(this.client, this.keys.hosts),
      readAll<PlacementRecord>(this.client, this.keys.placements),
    ]);
    const orphans = vms
      .filter((vm) => vm.desired === 'Running' && vm.ha.enabled && !vm.failed && !owners.has(vm.id) && !placements.has(vm.id) && !hosts.has(vm.host))
      .sort((a, b) => b.ha.priority - a.ha.priority || a.name.localeCompare(b.name));
    if (!orphans.length) return;
    // Memory is counted down as VMs are placed, so that one scan does not pile them on one host.
    const up = new Map([...hosts.values()].filter((h) => h.state === 'Up').map((h) => [h.name, h.memoryAvailableMB]));
    for (const vm of orphans) {
      const now = new Date().toISOString();
      const target = chooseHost(vm, up);
      const failover: FailoverRecord = {
        id: `${now.replace(/[-:.]/g, '')}-${vm.id.slice(0, 8)}`, vm: vm.id, vmName: vm.name, from: vm.host, to: target,
        reason: `host ${vm.host} is Down`, detected: now, fenced: now, started: null, running: null, seconds: null,
        error: target ? null : `no Up host has ${vm.memoryMB} MB available for it`,
      };
      if (!target) {
        await this.records.update(vm, (r) => { r.failed = failover.error; }, vm.host);
        await this.client.put(this.keys.failover(failover.id)).value(JSON.stringify(failover));
        this.report(failover);
        continue;
      }
      up.set(target, up.get(target)! - vm.memoryMB);
      const placement: PlacementRecord = { host: target, reason: failover.reason, failoverId: failover.id, decidedAt: now };
      const key = this.keys.placement(vm.id);
      const result = await this.client.if(key, 'Create', '==', 0).and(this.keys.owner(vm.id), 'Create', '==', 0)
        .then(this.client.put(key).value(JSON.stringify(placement)), this.client.put(this.keys.failover(failover.id)).value(JSON.stringify(failover)))
        .commit();
      if (result.succeeded) this.report(failover);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.stopLeading();
    await this.campaign?.resign().catch(() => undefined);
  }
}
