import type { EventEmitter } from 'node:events';

// The cluster's shared vocabulary: what etcd holds under /vserver/<cluster>/, and what the API,
// the CLI and the harness read. Written once here; docs/cluster.md describes the same keys.

export const HOST_STATES = ['Up', 'Down', 'Maintenance', 'Joining'] as const;
export type HostState = (typeof HOST_STATES)[number];

/** The settings of a VM's high availability (get/put_HighAvailability). */
export interface HaSettings {
  enabled: boolean;
  /** Higher restarts first when several VMs fail over at once (0 to 100; default 50). */
  priority: number;
  /** Hosts tried first, in order; empty for any. */
  preferredHosts: string[];
  /** Restarts on the same healthy host after its QEMU died, before the VM is marked Failed (default 3). */
  maxRestarts: number;
}
export const HA_DEFAULTS: HaSettings = { enabled: false, priority: 50, preferredHosts: [], maxRestarts: 3 };

/** `hosts/<name>`, attached to the host's lease: present while the host is alive. */
export interface HostRecord {
  name: string;
  /** Where other hosts reach its API (HOST:PORT). */
  address: string;
  state: Exclude<HostState, 'Down'>;
  memoryAvailableMB: number;
  /** When this lease was taken (ISO time). */
  since: string;
}

/**
 * `members/<name>`, without a lease: every host that ever joined, so that Down hosts are listed;
 * `maintenance` outlives the host's restarts (it joins again in Maintenance).
 */
export interface MemberRecord { name: string; address: string; joined: string; maintenance?: boolean }

/** `vms/<id>`, without a lease: a clustered VM as every host sees it. */
export interface ClusterVmRecord {
  id: string;
  name: string;
  /** Its .vmc on shared storage, from which another host registers it. */
  vmcPath: string;
  /** The host it runs on, or last ran on. */
  host: string;
  /** What its owner wants: Running (restart it if it dies) or Off (a user turned it off). */
  desired: 'Running' | 'Off';
  memoryMB: number;
  ha: HaSettings;
  /** Restarts on one host since it last ran cleanly. */
  restarts: number;
  /** Why it is Failed (too many restarts, no host could take it), or null. */
  failed: string | null;
}

/** `owners/<id>`, attached to the VM's lease (kept alive by its worker): who may run it now. */
export interface OwnerRecord { host: string; leaseId: string; since: string }

/** `placements/<id>`: the leader's instruction to a host to start a VM that lost its host. */
export interface PlacementRecord { host: string; reason: string; failoverId: string; decidedAt: string }

/** One failover, `history/<failoverId>`: its timeline in ISO times (null until reached). */
export interface FailoverRecord {
  id: string;
  vm: string;
  vmName: string;
  from: string;
  to: string | null;
  reason: string;
  detected: string;
  fenced: string | null;
  started: string | null;
  running: string | null;
  /** Seconds from detection to running, once running. */
  seconds: number | null;
  /** Why it did not complete, or null. */
  error: string | null;
}

/** The etcd keys, from one prefix. */
export function clusterKeys(cluster: string) {
  const root = `/vserver/${cluster}/`;
  return {
    root,
    host: (name: string) => `${root}hosts/${name}`,
    hosts: `${root}hosts/`,
    member: (name: string) => `${root}members/${name}`,
    members: `${root}members/`,
    vm: (id: string) => `${root}vms/${id}`,
    vms: `${root}vms/`,
    owner: (id: string) => `${root}owners/${id}`,
    owners: `${root}owners/`,
    placement: (id: string) => `${root}placements/${id}`,
    placements: `${root}placements/`,
    failover: (id: string) => `${root}history/${id}`,
    history: `${root}history/`,
    election: `${root}leader`,
  };
}

/** A host as the API shows it. */
export interface HostView { name: string; address: string; state: HostState; memoryAvailableMB: number; virtualMachines: string[] }

/** What the agent announces; the API turns them into Cluster.OnHostStateChange and VirtualMachine.OnFailover. */
export type ClusterEventMap = {
  hostState: [{ host: string; state: HostState; previous: HostState | null }];
  failover: [FailoverRecord];
};

/**
 * What vserverd's cluster agent offers the rest of the service (services.cluster; null on a
 * host without cluster settings). The API members, the website and the supervisor use only this.
 */
export interface ClusterService {
  readonly name: string;
  readonly hostName: string;
  readonly events: EventEmitter<ClusterEventMap>;
  hosts(): Promise<HostView[]>;
  host(name: string): Promise<HostView | null>;
  leader(): Promise<string | null>;
  history(since?: string): Promise<FailoverRecord[]>;
  /** The host a VM runs on or last ran on, or null when the cluster does not know it. */
  vmHost(vmId: string): Promise<string | null>;
  /** Where a VM is: the host whose lease lets it run now (owners/), and the host it last ran on (vms/); each null when none. */
  vmPlace(vmId: string): Promise<{ owner: string | null; lastHost: string | null }>;
  /** Where a live host (Up, Maintenance or Joining) takes API calls, HOST:PORT; null when it is Down. */
  liveAddress(host: string): Promise<string | null>;
  /** Every VM the cluster knows (vms/), on any host: its id and name. */
  knownVms(): Promise<{ id: string; name: string }[]>;
  haSettings(vmId: string): Promise<HaSettings>;
  /** Checks (shared storage: VM_E_NOT_SHARED_STORAGE) and stores a VM's HA settings. */
  setHaSettings(vmId: string, settings: HaSettings): Promise<void>;
  enterMaintenance(host: string): Promise<void>;
  exitMaintenance(host: string): Promise<void>;
}
