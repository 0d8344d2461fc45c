// Why etcd does not answer, in words for an API error and the event log: a quorum lost (so many
// members refuse connections, their processes not running, that the rest are no majority: then
// the workers keep their VMs running and nothing can move), no leader, or members silent.

/** How long one member may take to answer the probe. */
const PROBE_MS = 1_000;

type Probe = { url: string; outcome: 'refused' | 'silent' | 'leaderless' | 'led'; detail: string };

async function probe(url: string): Promise<Probe> {
  try {
    const answer = await fetch(`${url}/v3/maintenance/status`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(PROBE_MS) });
    const body = await answer.json() as { leader?: string };
    if (!answer.ok) return { url, outcome: 'silent', detail: `HTTP ${answer.status}` };
    return Number(body.leader ?? 0) > 0 ? { url, outcome: 'led', detail: 'has a leader' } : { url, outcome: 'leaderless', detail: 'has no leader' };
  } catch (e) {
    const cause = (e as Error & { cause?: { code?: string } }).cause?.code ?? (e as Error).name;
    return { url, outcome: cause === 'ECONNREFUSED' ? 'refused' : 'silent', detail: cause };
  }
}

/** Asks every member (their client URLs) at once and says what is wrong with etcd. */
export async function diagnoseEtcd(members: readonly string[]): Promise<string> {
  const probes = await Promise.all(members.map(probe));
  const refused = probes.filter((p) => p.outcome === 'refused');
  if (refused.length >= Math.ceil(members.length / 2)) {
    return `etcd has lost its quorum: ${refused.length} of ${members.length} members refuse connections (${refused.map((p) => p.url).join(', ')}); `
      + 'running VMs go on (no leader can take their leases away) and nothing moves until a majority of members is back';
  }
  return `etcd did not answer in time (${probes.map((p) => `${p.url}: ${p.detail}`).join('; ')})`;
}
