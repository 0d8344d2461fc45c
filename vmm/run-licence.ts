// A clustered VM's right to run: an etcd lease that its worker keeps alive itself, so that the
// right outlives vserverd and dies with the worker's host. The worker fences (stops QEMU's
// writes, then kills QEMU) before the lease can expire at etcd. The margins are here, once;
// docs/cluster.md explains them.

/** What vserverd hands a worker it starts in a cluster (written as RUN_DIR/licence.json). */
export interface RunLicence {
  /** etcd client URLs (http://ADDRESS:PORT), each asked at every renewal. */
  endpoints: string[];
  /** The lease the VM's ownership key is attached to, as etcd writes it (a decimal string). */
  leaseId: string;
  /** The lease's TTL at etcd, in seconds. */
  ttlSeconds: number;
  /** The cluster host the VM runs on (for logs and status). */
  host: string;
}

/**
 * TTL of a VM's lease at etcd. The failover of a killed host waits for it to run out. With the
 * margin below, a worker rides out 5 s without an acknowledged renewal: an etcd leader election
 * (the old leader's loss noticed after 1 to 2 s, then the vote) fits; at 5 s it did not always
 * (the harness's etcd-leader-kill fenced a VM on a host whose member was not even the leader).
 */
export const VM_LEASE_TTL_S = 7;
/** How often the worker renews the lease (and each renewal's time limit). */
export const LICENCE_RENEW_MS = 1_000;
/**
 * The worker stops writing and kills QEMU at (send time of its last acknowledged renewal) +
 * TTL − this margin: etcd cannot expire the lease before that send time + TTL, so QEMU is
 * dead at least this long before anyone else may be given the VM.
 */
export const FENCE_MARGIN_MS = 2_000;
/** TTL of a host's membership lease (held by vserverd): a host whose lease runs out is Down. */
export const HOST_LEASE_TTL_S = 5;
/**
 * A worker whose renewals fail keeps its VM running while it can prove that etcd has no quorum
 * anywhere: so many of the cluster's members refuse connections (their etcd processes are not
 * running) that the rest are no majority, and either every other member answers that it has no
 * leader, or the refusals have lasted this long. An etcd leader steps down within two election
 * timeouts without a majority (CheckQuorum; 1 s each by default, hence 2 s and slack), so then
 * no leader is left that could expire a lease, and a leader elected later gives every lease its
 * full TTL again (etcd without lease checkpoints). Each round that proves it counts as a
 * renewal sent at its own send time.
 */
export const QUORUM_PROOF_HOLD_MS = 2_500;
/** How often a worker reads etcd's member list again while its renewals succeed. */
export const MEMBER_LIST_REFRESH_MS = 30_000;
