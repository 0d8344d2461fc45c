// This host's membership: a lease of HOST_LEASE_TTL_S that vserverd keeps alive, with
// hosts/<name> attached to it (present while the host lives) and members/<name> without a lease
// (so that a Down host is still listed). A host name held by another live lease is refused.

import { EventEmitter } from 'node:events';
import type { Etcd3, Lease } from 'etcd3';
import { HOST_LEASE_TTL_S } from '../../vmm/run-licence.js';
import type { ClusterConfig } from '../config.js';
import { readJson } from './etcd-client.js';
import { clusterKeys, type HostRecord, type HostState, type MemberRecord } from './model.js';

export class HostNameInUseError extends Error {}

/** How often a name held by an earlier run of this host (killed) is looked at again before it is refused. */
const NAME_POLL_MS = 250;

export class Membership extends EventEmitter<{ state: [HostState, HostState | null]; rejoined: [] }> {
  private lease: Lease | null = null;
  private member: MemberRecord | null = null;
  private state: Exclude<HostState, 'Down'> = 'Joining';
  private since = new Date().toISOString();
  private closed = false;
  private readonly keys;

  constructor(private readonly client: Etcd3, private readonly config: ClusterConfig, private readonly memoryAvailableMB: () => number) {
    super();
    this.keys = clusterKeys(config.name);
  }

  get hostState(): Exclude<HostState, 'Down'> { return this.state; }

  /**
   * Takes the host name: waits out a lease left by an earlier, killed run of this host (it runs
   * out within its TTL), then refuses a name another live host keeps renewing.
   */
  async join(): Promise<void> {
    const key = this.keys.host(this.config.hostName);
    const deadline = Date.now() + (HOST_LEASE_TTL_S + 1) * 1000;
    const lease = this.client.lease(HOST_LEASE_TTL_S);
    await lease.grant();
    for (;;) {
      const record = this.record();
      const result = await this.client.if(key, 'Create', '==', 0).then(lease.put(key).value(JSON.stringify(record))).commit();
      if (result.succeeded) break;
      if (Date.now() > deadline) {
        await lease.revoke().catch(() => undefined);
        const holder = await readJson<HostRecord>(this.client, key);
        throw new HostNameInUseError(`host name ${this.config.hostName} is in use by a live host at ${holder?.address ?? '(unknown address)'}`);
      }
      await new Promise((r) => setTimeout(r, NAME_POLL_MS));
    }
    this.lease = lease;
    lease.on('lost', () => { if (!this.closed) void this.rejoin(); });
    const before = await readJson<MemberRecord>(this.client, this.keys.member(this.config.hostName));
    this.member = { name: this.config.hostName, address: this.config.hostAddress, joined: new Date().toISOString(), maintenance: before?.maintenance === true };
    await this.client.put(this.keys.member(this.config.hostName)).value(JSON.stringify(this.member));
    this.emit('state', this.state, null);
  }

  /** The state this host takes once it has joined and reconciled: Maintenance when it left in it. */
  get joinedState(): 'Up' | 'Maintenance' { return this.member?.maintenance ? 'Maintenance' : 'Up'; }

  /** Changes this host's state (Up once reconciled, Maintenance), written under its lease; maintenance is also kept in members/. */
  async setState(state: Exclude<HostState, 'Down'>): Promise<void> {
    const previous = this.state;
    this.state = state;
    await this.write();
    if (this.member && state !== 'Joining' && this.member.maintenance !== (state === 'Maintenance')) {
      this.member = { ...this.member, maintenance: state === 'Maintenance' };
      await this.client.put(this.keys.member(this.config.hostName)).value(JSON.stringify(this.member));
    }
    if (previous !== state) this.emit('state', state, previous);
  }

  /** Rewrites hosts/<name> (the memory available changes as VMs start and stop). */
  async write(): Promise<void> {
    if (!this.lease || this.closed) return;
    await this.lease.put(this.keys.host(this.config.hostName)).value(JSON.stringify(this.record()));
  }

  /** The lease was lost (etcd unreachable longer than its TTL): a new one, the same state. */
  private async rejoin(): Promise<void> {
    this.lease = null;
    for (let attempt = 0; !this.closed; attempt++) {
      try {
        const lease = this.client.lease(HOST_LEASE_TTL_S);
        await lease.grant();
        this.since = new Date().toISOString();
        await lease.put(this.keys.host(this.config.hostName)).value(JSON.stringify(this.record()));
        this.lease = lease;
        lease.on('lost', () => { if (!this.closed) void this.rejoin(); });
        this.emit('rejoined');
        return;
      } catch {
        await new Promise((r) => setTimeout(r, Math.min(5_000, 500 * (attempt + 1))));
      }
    }
  }

  private record(): HostRecord {
    return { name: this.config.hostName, address: this.config.hostAddress, state: this.state, memoryAvailableMB: this.memoryAvailableMB(), since: this.since };
  }

  /** An orderly stop: the host lease is revoked, so the others see this host Down at once. */
  async leave(): Promise<void> {
    this.closed = true;
    await this.lease?.revoke().catch(() => undefined);
  }
}
