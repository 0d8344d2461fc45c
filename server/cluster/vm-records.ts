// vms/<id>: a clustered VM as every host sees it (where it runs, what its owner wants, its HA
// settings, its restarts and why it failed). Written by the host that runs it; the leader reads it.

import type { Etcd3 } from 'etcd3';
import { readAll, readJson } from './etcd-client.js';
import { type ClusterVmRecord, HA_DEFAULTS, clusterKeys } from './model.js';
import type { VmRecord } from '../vm-record.js';

export class ClusterVmRecords {
  private readonly keys;

  constructor(private readonly client: Etcd3, cluster: string) {
    this.keys = clusterKeys(cluster);
  }

  get(id: string): Promise<ClusterVmRecord | null> {
    return readJson<ClusterVmRecord>(this.client, this.keys.vm(id));
  }

  async list(): Promise<ClusterVmRecord[]> {
    return [...(await readAll<ClusterVmRecord>(this.client, this.keys.vms)).values()];
  }

  /** Reads, changes and writes the record; a VM without one starts from its catalog row. */
  async update(vm: VmRecord | { id: string }, change: (record: ClusterVmRecord) => void, host: string): Promise<ClusterVmRecord> {
    const record = (await this.get(vm.id)) ?? fresh(vm, host);
    change(record);
    await this.client.put(this.keys.vm(vm.id)).value(JSON.stringify(record));
    return record;
  }
}

function fresh(vm: VmRecord | { id: string }, host: string): ClusterVmRecord {
  const full = 'config' in vm ? vm : null;
  return {
    id: vm.id, name: full?.name ?? vm.id, vmcPath: full?.vmcPath ?? '', host, desired: 'Off',
    memoryMB: full?.config.memoryMB ?? 0, ha: { ...HA_DEFAULTS }, restarts: 0, failed: null,
  };
}
