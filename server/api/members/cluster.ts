// The host cluster in the object model: Cluster (`Cluster/<name>`), Host (`Host/<name>`), a
// VM's host and high availability, and VirtualServer.get_Cluster. Every answer comes from
// services.cluster (server/cluster/model.ts's ClusterService); on a host without cluster
// settings these members are VM_E_NOT_CLUSTERED, except the two that say "not clustered" by null.

import { HA_DEFAULTS, HOST_STATES, type FailoverRecord, type HaSettings, type HostView } from '../../cluster/model.js';
import { CLUSTER_NAME } from '../../config.js';
import { ApiError, invalidParams } from '../../errors.js';
import { boolean, type Call, field, integer, type InterfaceName, type InterfaceRecord, listOf, membersOf, nothing, object, oneOf, orNull, param, refOf, refsOf, string } from '../member-types.js';
import { clusterOf, hostObjectOf } from '../objects.js';
import { ref, type Reference } from '../../references.js';
import type { Services } from '../services.js';
import { VM_EXAMPLE } from './shared.js';

const CLUSTER_NAME_EXAMPLE = 'lab';
const HOST_NAME_EXAMPLE = 'vhost1';
export const CLUSTER_EXAMPLE = `Cluster/${CLUSTER_NAME_EXAMPLE}`;
export const HOST_EXAMPLE = `Host/${HOST_NAME_EXAMPLE}`;

const cluster = membersOf<'Cluster'>(CLUSTER_EXAMPLE);
const host = membersOf<'Host'>(HOST_EXAMPLE);
const vm = membersOf<'VirtualMachine'>(VM_EXAMPLE);
const server = membersOf<'VirtualServer'>(null);

const CLUSTER_ERRORS = ['VM_E_NOT_CLUSTERED', 'VM_E_CLUSTER_UNAVAILABLE'] as const;
const HOST_ERRORS = [...CLUSTER_ERRORS, 'VM_E_HOST_UNKNOWN'] as const;

type AnyCall = Call<InterfaceName, unknown>;

/** The VMs of a list of ids that the caller may read, as references. */
function readableVms(call: AnyCall, ids: readonly string[]): Reference[] {
  return ids.filter((id) => call.services.access.canRead(call.principal, `VirtualMachine/${id}`)).map((id) => ref('VirtualMachine', id));
}

/** The host as it is now (its state changes between calls): VM_E_HOST_UNKNOWN if it left the cluster's list since. */
async function hostNow(services: Services, name: string): Promise<HostView> {
  const view = await clusterOf(services).host(name);
  if (view) return view;
  await hostObjectOf(services, name); // VM_E_HOST_UNKNOWN, naming the cluster's hosts
  throw new ApiError('VM_E_HOST_UNKNOWN', `no host "${name}" is in the cluster`, { host: name });
}

const hostFields = {
  host: field(refOf('Host'), 'The host'),
  name: field(string, 'Its name in the cluster'),
  address: field(string, 'Where other hosts reach its API, HOST:PORT'),
  state: field(oneOf(HOST_STATES), 'Up, Down (its lease expired), Maintenance (takes no VMs) or Joining'),
  memoryAvailableMB: field(integer, 'Memory free for VMs, as it last reported it (0 for a Down host)'),
  virtualMachines: field(refsOf('VirtualMachine'), 'The clustered VMs it runs or last ran (those the caller may read)'),
  local: field(boolean, 'Whether it is the host that answered this call'),
};
const HOST_ROW_EXAMPLE = {
  host: { $ref: HOST_EXAMPLE }, name: HOST_NAME_EXAMPLE, address: '10.0.0.11:8080', state: 'Up', memoryAvailableMB: 20000,
  virtualMachines: [{ $ref: VM_EXAMPLE }], local: true,
};

const failoverFields = {
  id: field(string, 'The failover\'s id'),
  vm: field(refOf('VirtualMachine'), 'The VM moved'),
  vmName: field(string, 'Its name'),
  from: field(string, 'The host it ran on'),
  to: field(orNull(string), 'The host it was restarted on, or null until one was chosen'),
  reason: field(string, 'Why it moved (the host Down, its QEMU died, ...)'),
  detected: field(string, 'When the failure was seen, ISO 8601'),
  fenced: field(orNull(string), 'When its old owner\'s right to run was gone (lease expired or revoked), ISO 8601, or null'),
  started: field(orNull(string), 'When the new host started it, ISO 8601, or null'),
  running: field(orNull(string), 'When it was running again, ISO 8601, or null'),
  seconds: field(orNull(integer), 'Seconds from detection to running, rounded (the timeline has the exact times), or null until running'),
  error: field(orNull(string), 'Why it did not complete, or null'),
};
const FAILOVER_EXAMPLE = {
  id: '0b8f6a2e-4c1d-4e7a-9b3c-5d2e1f0a9c8b', vm: { $ref: VM_EXAMPLE }, vmName: 'web', from: 'vhost2', to: HOST_NAME_EXAMPLE, reason: 'host vhost2 is Down (its lease expired)',
  detected: '2026-12-06T02:10:00.000Z', fenced: '2026-12-06T02:10:00.400Z', started: '2026-12-06T02:10:01.200Z', running: '2026-12-06T02:10:09.800Z', seconds: 10, error: null,
};

/** A failover record as the API gives it. */
export function failoverView(record: FailoverRecord) {
  return {
    id: record.id, vm: ref('VirtualMachine', record.vm), vmName: record.vmName, from: record.from, to: record.to, reason: record.reason,
    detected: record.detected, fenced: record.fenced, started: record.started, running: record.running,
    seconds: record.seconds === null ? null : Math.round(record.seconds), error: record.error,
  };
}

export const clusterInterface: InterfaceRecord = {
  doc: 'The host cluster this vserverd belongs to (docs/cluster.md): its hosts, its leader, its failovers. Only on a vserverd started with cluster settings; elsewhere every member is VM_E_NOT_CLUSTERED. Rights are the server\'s.',
  ref: 'Cluster/<name>',
  members: {
    get_Name: cluster.get('The cluster\'s name.', string, CLUSTER_NAME_EXAMPLE, ({ services }) => clusterOf(services).name),
    get_Hosts: cluster.get('Every host that ever joined, with its state now, in name order.', listOf(object(hostFields)), [HOST_ROW_EXAMPLE],
      async (call) => {
        const service = clusterOf(call.services);
        const hosts = [...await service.hosts()].sort((a, b) => a.name.localeCompare(b.name));
        return hosts.map((h) => ({
          host: ref('Host', h.name), name: h.name, address: h.address, state: h.state, memoryAvailableMB: h.memoryAvailableMB,
          virtualMachines: readableVms(call, h.virtualMachines), local: h.name === service.hostName,
        }));
      }),
    get_Leader: cluster.get('The host elected to restart the VMs of failed hosts, or null while none is (no quorum, or an election under way).', orNull(refOf('Host')), { $ref: HOST_EXAMPLE },
      async ({ services }) => {
        const leader = await clusterOf(services).leader();
        return leader === null ? null : ref('Host', leader);
      }),
    get_FailoverHistory: cluster.method('The failovers (a VM restarted on another host, or on its own after its QEMU died), oldest first, each with its timeline; those of VMs the caller may read.', {
      params: { since: param(string, 'Only failovers detected at or after this time, ISO 8601 (all when left out).', true) },
      returns: listOf(object(failoverFields)), right: 'read', errors: CLUSTER_ERRORS,
      example: { params: { since: '2026-12-06T00:00:00.000Z' }, result: [FAILOVER_EXAMPLE] },
      handler: async (call) => {
        const since = call.params.since;
        if (since !== undefined && Number.isNaN(Date.parse(since))) throw invalidParams(`"since" must be an ISO 8601 time such as 2026-12-06T00:00:00Z, not "${since}"`, { param: 'since' });
        const records = await clusterOf(call.services).history(since === undefined ? undefined : new Date(since).toISOString());
        return records.filter((r) => call.services.access.canRead(call.principal, `VirtualMachine/${r.vm}`)).map(failoverView);
      },
    }),
  },
};

const maintenance = (enter: boolean) => host.method(enter
  ? 'Puts the host in Maintenance: it takes no VMs from the cluster (failovers and placements go elsewhere); its running VMs go on running. Its state is Maintenance until ExitMaintenance, also across restarts of its vserverd. Called through another host, it is sent to this one, which keeps its own state.'
  : 'Takes the host out of Maintenance: it is Up and may take VMs again.', {
  returns: nothing, right: 'change', errors: [...HOST_ERRORS, 'VM_E_HOST_UNREACHABLE'],
  example: { params: {}, result: null },
  handler: async ({ services, self }) => {
    const service = clusterOf(services);
    await hostNow(services, self.name);
    await (enter ? service.enterMaintenance(self.name) : service.exitMaintenance(self.name));
  },
});

export const hostInterface: InterfaceRecord = {
  doc: 'A host of the cluster (a vserverd with its lease in etcd), by its name in the cluster. Only on a vserverd started with cluster settings; elsewhere every member is VM_E_NOT_CLUSTERED. Rights are the server\'s.',
  ref: 'Host/<name>',
  members: {
    get_Name: host.get('The host\'s name in the cluster.', string, HOST_NAME_EXAMPLE, async ({ services, self }) => (await hostNow(services, self.name)).name),
    get_State: host.get('Up, Down (its lease expired), Maintenance (takes no VMs) or Joining.', oneOf(HOST_STATES), 'Up', async ({ services, self }) => (await hostNow(services, self.name)).state),
    get_Address: host.get('Where other hosts reach its API, HOST:PORT.', string, '10.0.0.11:8080', async ({ services, self }) => (await hostNow(services, self.name)).address),
    get_VirtualMachines: host.get('The clustered VMs it runs or last ran, those the caller may read.', refsOf('VirtualMachine'), [{ $ref: VM_EXAMPLE }],
      async (call) => readableVms(call, (await hostNow(call.services, call.self.name)).virtualMachines)),
    get_MemoryAvailable: host.get('Memory free for VMs in MB, as the host last reported it (0 for a Down host).', integer, 20000,
      async ({ services, self }) => (await hostNow(services, self.name)).memoryAvailableMB),
    EnterMaintenance: maintenance(true),
    ExitMaintenance: maintenance(false),
  },
};

const haResult = object({
  enabled: field(boolean, 'Whether the VM is restarted on another host when its host is Down'),
  priority: field(integer, 'Higher restarts first when several VMs fail over at once, 0 to 100'),
  preferredHosts: field(listOf(string), 'Hosts tried first, in order; empty for any'),
  maxRestarts: field(integer, 'Restarts on the same healthy host after its QEMU died, before the VM is marked Failed, 0 to 100'),
});
const haChange = object({
  enabled: field(boolean, 'Restart the VM on another host when its host is Down', true),
  priority: field({ type: 'integer', min: 0, max: 100 }, 'Higher restarts first when several VMs fail over at once (default 50)', true),
  preferredHosts: field({ type: 'array', items: { type: 'string', maxLength: 63, pattern: CLUSTER_NAME.source } }, 'Hosts of the cluster tried first, in order, each once; empty for any', true),
  maxRestarts: field({ type: 'integer', min: 0, max: 100 }, 'Restarts on the same healthy host after its QEMU died, before the VM is marked Failed (default 3)', true),
});

/** The settings asked for, on top of the current ones; preferred hosts must be hosts of the cluster, each named once. */
async function checkedHa(services: Services, current: HaSettings, change: Partial<HaSettings>): Promise<HaSettings> {
  const settings: HaSettings = { ...current, ...change, preferredHosts: [...(change.preferredHosts ?? current.preferredHosts)] };
  const twice = settings.preferredHosts.filter((h, i) => settings.preferredHosts.indexOf(h) !== i);
  if (twice.length) throw invalidParams(`"value".preferredHosts names ${twice.join(', ')} more than once`, { param: 'value' });
  for (const name of settings.preferredHosts) await hostObjectOf(services, name);
  return settings;
}

export const vmClusterMembers: InterfaceRecord['members'] = {
  get_Host: vm.get('The cluster host the VM runs on, or last ran on; null on a vserverd without cluster settings, or when the cluster does not know the VM (it has never run on a host of the cluster with HA).',
    orNull(refOf('Host')), { $ref: HOST_EXAMPLE },
    async ({ services, self }) => {
      if (!services.cluster) return null;
      const name = await services.cluster.vmHost(self.id);
      return name === null ? null : ref('Host', name);
    }),
  get_HighAvailability: vm.get(`The VM's high availability in the cluster (defaults: ${JSON.stringify(HA_DEFAULTS)}).`, haResult,
    { enabled: true, priority: 80, preferredHosts: [HOST_NAME_EXAMPLE], maxRestarts: 3 },
    async ({ services, self }) => {
      const settings = await clusterOf(services).haSettings(self.id);
      return { ...settings, preferredHosts: [...settings.preferredHosts] };
    }),
  put_HighAvailability: vm.put('Sets the VM\'s high availability; fields left out keep their value. Enabling it is refused (VM_E_NOT_SHARED_STORAGE, naming the file) unless every file of the VM (its .vmc, its disks and their chains, its saved state) lies on the cluster\'s shared storage, where another host can start it. Allowed while the VM runs.',
    haChange, { enabled: true, priority: 80, preferredHosts: [HOST_NAME_EXAMPLE] },
    async ({ services, self, params }) => {
      const service = clusterOf(services);
      const settings = await checkedHa(services, await service.haSettings(self.id), params.value);
      await service.setHaSettings(self.id, settings);
    }, [...HOST_ERRORS, 'VM_E_NOT_SHARED_STORAGE']),
};

export const serverClusterMembers: InterfaceRecord['members'] = {
  get_Cluster: server.get('The host cluster this vserverd belongs to, or null when it runs alone (no cluster settings).', orNull(refOf('Cluster')), { $ref: CLUSTER_EXAMPLE },
    ({ services }) => (services.cluster ? ref('Cluster', services.cluster.name) : null)),
};
