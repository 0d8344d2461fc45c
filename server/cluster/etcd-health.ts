// Why etcd does not answer, in words for an API error and the event log: a quorum lost (so many
// members refuse connections, their processes not running, that the rest are no majority: then
// the workers keep their VMs running and nothing can move), or members silent or leaderless.

import { memberStatus, quorumImpossible } from '../../vmm/etcd-members.js';

/** How long one member may take to answer the probe. */
const PROBE_MS = 1_000;

/** Asks every member (their client URLs) at once and says what is wrong with etcd. */
export async function diagnoseEtcd(members: readonly string[]): Promise<string> {
  const probes = await Promise.all(members.map(async (url) => ({ url, ...await memberStatus(url, PROBE_MS) })));
  const refused = probes.filter((p) => p.outcome === 'refused');
  if (quorumImpossible(refused.length, members.length)) {
    return `etcd has lost its quorum: ${refused.length} of ${members.length} members refuse connections (${refused.map((p) => p.url).join(', ')}); `
      + 'running VMs go on (no leader can take their leases away) and nothing moves until a majority of members is back';
  }
  return `etcd did not answer in time (${probes.map((p) => `${p.url}: ${p.detail}`).join('; ')})`;
}
