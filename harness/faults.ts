// The faults a scenario injects (docs/cluster-test.md, "Faults"), each on the namespaces and
// processes the harness made, and how each is undone so that the next fault finds a whole
// cluster. Whether the VM is expected to move is part of the fault's definition.

import { clientTarget } from './etcd.js';
import { HarnessError } from './namespaces.js';
import type { FaultKind } from './scenario.js';
import { type Cluster, type Host, HOST_LINK, running } from './topology.js';

export interface Injected {
  /** The host the fault is reported against. */
  host: Host;
  /** Undoes what lasts (link, filter, freeze, stopped members); restore() still restarts what died. */
  undo(): Promise<void>;
}

/** Faults after which the VM must run on a survivor; after the others nothing may move. */
export const MOVING_FAULTS: ReadonlySet<FaultKind> = new Set(['host-kill', 'link-cut', 'one-way-partition', 'host-freeze']);

const nothingToUndo = async (): Promise<void> => {};

/** kill -9 of every process in the host's namespace: vserverd, its workers and QEMUs, its etcd member. */
export function killHost(host: Host): Injected {
  host.ns.signalAll('SIGKILL');
  return { host, undo: nothingToUndo };
}

/** The host's only link down: nothing in or out, both ways. */
export function cutLink(host: Host): Injected {
  host.ns.run('ip', ['link', 'set', HOST_LINK, 'down']);
  return { host, undo: async () => { host.ns.run('ip', ['link', 'set', HOST_LINK, 'up']); } };
}

/**
 * One-way partition: everything the host sends to the bridge is dropped (nftables in the host's
 * namespace); it still receives. Loopback stays open, so its own processes still talk.
 */
export function partitionOneWay(host: Host): Injected {
  host.ns.run('nft', ['add table inet vsct']);
  host.ns.run('nft', ['add chain inet vsct out { type filter hook output priority 0 ; policy accept ; }']);
  host.ns.run('nft', ['add rule inet vsct out oifname != "lo" drop']);
  return { host, undo: async () => { host.ns.run('nft', ['delete table inet vsct']); } };
}

/** SIGSTOP of every process of the host, SIGCONT at undo (the scenario holds it longer than the lease). */
export function freezeHost(host: Host): Injected {
  host.ns.signalAll('SIGSTOP');
  return { host, undo: async () => { host.ns.signalAll('SIGCONT'); } };
}

/** kill -9 of the vserverd of the host only: its workers (and so the VM) must go on untouched. */
export function killVserverd(host: Host): Injected {
  if (!host.server?.pid || !running(host.server)) throw new HarnessError(`vserverd on ${host.name} is not running`);
  process.kill(host.server.pid, 'SIGKILL');
  return { host, undo: nothingToUndo };
}

/** kill -9 of the etcd member that leads now (found by asking the members). */
export async function killEtcdLeader(cluster: Cluster): Promise<Injected> {
  const leader = await cluster.etcd!.leader();
  const host = cluster.hosts.find((h) => h.etcdMember && clientTarget(h.address) === leader);
  if (!host?.etcd?.pid) throw new HarnessError(`no etcd leader found (members: ${cluster.etcdEndpoints().join(', ')})`);
  process.kill(host.etcd.pid, 'SIGKILL');
  return { host, undo: async () => { cluster.startEtcd(host); } };
}

/** kill -9 of a majority of the etcd members (all but the first); reported against the first killed. */
export function loseQuorum(cluster: Cluster): Injected {
  const members = cluster.hosts.filter((h) => h.etcdMember);
  const victims = members.slice(1);
  for (const h of victims) if (h.etcd?.pid && running(h.etcd)) process.kill(h.etcd.pid, 'SIGKILL');
  return { host: victims[0], undo: async () => { for (const h of victims) cluster.startEtcd(h); } };
}

export async function inject(cluster: Cluster, fault: FaultKind, target: Host): Promise<Injected> {
  switch (fault) {
    case 'host-kill': return killHost(target);
    case 'link-cut': return cutLink(target);
    case 'one-way-partition': return partitionOneWay(target);
    case 'host-freeze': return freezeHost(target);
    case 'vserverd-kill': return killVserverd(target);
    case 'etcd-leader-kill': return killEtcdLeader(cluster);
    case 'etcd-quorum-loss': return loseQuorum(cluster);
  }
}
