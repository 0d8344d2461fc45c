// What the worker's licence keeper and vserverd's etcd diagnosis both ask of etcd's members over
// its JSON gateway, and the one rule they both judge by: when so many members are down that the
// rest are no majority, no quorum (and so no leader) can exist anywhere.

/** How one member answered: its etcd refused the connection (not running), said nothing in time, or has or lacks a leader. */
export type MemberStatus = { outcome: 'refused' | 'silent' | 'leaderless' | 'led'; detail: string };

/** The code (ECONNREFUSED, UND_ERR_SOCKET) or message behind a failed fetch. */
export function causeOf(e: unknown): string {
  const error = e as Error & { cause?: { code?: string; message?: string } };
  return error.cause?.code ?? error.cause?.message ?? error.message;
}

/** Asks one member (its client URL) whether it has a leader. */
export async function memberStatus(url: string, timeoutMs: number): Promise<MemberStatus> {
  try {
    const answer = await fetch(`${url}/v3/maintenance/status`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(timeoutMs) });
    const body = await answer.json() as { leader?: string };
    if (!answer.ok) return { outcome: 'silent', detail: `HTTP ${answer.status}` };
    return Number(body.leader ?? 0) > 0 ? { outcome: 'led', detail: 'has a leader' } : { outcome: 'leaderless', detail: 'has no leader' };
  } catch (e) {
    const cause = causeOf(e);
    return { outcome: cause === 'ECONNREFUSED' ? 'refused' : 'silent', detail: cause };
  }
}

/** Whether `down` members of `members` are too many for a majority among the rest. */
export function quorumImpossible(down: number, members: number): boolean {
  return members > 0 && down >= Math.ceil(members / 2);
}
