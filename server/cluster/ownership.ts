// A clustered VM's right to run: owners/<vmId>, created only while absent, attached to a lease
// of the VM's own (VM_LEASE_TTL_S). vserverd grants it before the worker starts and hands it to
// the worker (RunLicence), which renews it itself so that the right outlives vserverd.

import type { Etcd3, Lease } from 'etcd3';
import { type RunLicence, VM_LEASE_TTL_S } from '../../vmm/run-licence.js';
import type { ClusterConfig } from '../config.js';
import { ApiError } from '../errors.js';
import { readJson } from './etcd-client.js';
import { clusterKeys, type OwnerRecord, type PlacementRecord } from './model.js';

export class Ownership {
  /** The leases this vserverd granted and renews until their workers report their VMs running. */
  private readonly leases = new Map<string, Lease>();
  private readonly keys;

  constructor(private readonly client: Etcd3, private readonly config: ClusterConfig) {
    this.keys = clusterKeys(config.name);
  }

  /**
   * Takes owners/<vmId> for this host; VM_E_OWNED_ELSEWHERE when any host (this one's earlier run
   * too) holds it, or when the leader has placed the VM on another host (a host that comes back
   * from a freeze must not race the failover the leader already decided). The placement read is
   * checked again in the transaction, so a placement made meanwhile also refuses it.
   */
  async acquire(vmId: string, vmName: string): Promise<RunLicence> {
    const key = this.keys.owner(vmId);
    const placementKey = this.keys.placement(vmId);
    const placed = (await this.client.get(placementKey).exec()).kvs[0];
    const placedHost = placed ? (JSON.parse(placed.value.toString()) as PlacementRecord).host : null;
    if (placedHost !== null && placedHost !== this.config.hostName) {
      throw new ApiError('VM_E_OWNED_ELSEWHERE', `VM ${vmName} is being failed over to host ${placedHost}`, { host: placedHost });
    }
    const lease = this.client.lease(VM_LEASE_TTL_S);
    const leaseId = await lease.grant();
    const record: OwnerRecord = { host: this.config.hostName, leaseId, since: new Date().toISOString() };
    const unplaced = placed ? this.client.if(placementKey, 'Mod', '==', placed.mod_revision) : this.client.if(placementKey, 'Create', '==', 0);
    const result = await unplaced.and(key, 'Create', '==', 0).then(lease.put(key).value(JSON.stringify(record))).commit();
    if (!result.succeeded) {
      await lease.revoke().catch(() => undefined);
      const holder = await readJson<OwnerRecord>(this.client, key);
      const placedNow = await readJson<PlacementRecord>(this.client, placementKey);
      const host = holder?.host ?? placedNow?.host ?? null;
      throw new ApiError('VM_E_OWNED_ELSEWHERE', `VM ${vmName} is running on host ${host ?? '(one that just let it go; try again)'}`, { host });
    }
    this.leases.set(vmId, lease);
    lease.on('lost', () => { if (this.leases.get(vmId) === lease) this.leases.delete(vmId); });
    return { endpoints: this.config.etcd, leaseId, ttlSeconds: VM_LEASE_TTL_S, host: this.config.hostName };
  }

  /** The worker reported the VM running: it renews the lease alone from now on, so that only its own renewals keep QEMU's right alive. */
  handOver(vmId: string): void {
    this.leases.get(vmId)?.release();
    this.leases.delete(vmId);
  }

  /** The VM stopped (or its start failed): its lease is revoked, and owners/<vmId> goes with it. */
  async release(vmId: string): Promise<void> {
    const lease = this.leases.get(vmId);
    this.leases.delete(vmId);
    if (lease) {
      await lease.revoke().catch(() => undefined);
      return;
    }
    // A lease granted by an earlier run of vserverd (its worker renewed it): revoked by its id, if it is this host's.
    const owner = await readJson<OwnerRecord>(this.client, this.keys.owner(vmId)).catch(() => null);
    if (owner?.host === this.config.hostName) {
      await this.client.leaseClient.leaseRevoke({ ID: owner.leaseId }).catch(() => undefined);
    }
  }

  async owner(vmId: string): Promise<OwnerRecord | null> {
    return readJson<OwnerRecord>(this.client, this.keys.owner(vmId));
  }

  /** vserverd stops: it no longer renews; the workers go on renewing their VMs' leases. */
  detach(): void {
    for (const lease of this.leases.values()) lease.release();
    this.leases.clear();
  }
}
