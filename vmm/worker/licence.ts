// Keeping a clustered VM's run licence (vmm/run-licence.ts): the worker itself renews the VM's
// etcd lease through etcd's JSON gateway, so the VM's right to run survives vserverd, and says
// when that right ends: at the send time of the last acknowledged renewal + TTL − margin, which
// comes before etcd can expire the lease (etcd refreshes a lease when it receives the renewal,
// after we sent it). Once the right has ended it never comes back: a late answer, or one that
// arrives after a SIGSTOP, cannot revive it. One thing stands in for a renewal: proof that etcd
// has no quorum anywhere (QUORUM_PROOF_HOLD_MS), so a VM runs on through a quorum loss.

import { EventEmitter } from 'node:events';
import { FENCE_MARGIN_MS, LICENCE_RENEW_MS, MEMBER_LIST_REFRESH_MS, QUORUM_PROOF_HOLD_MS, type RunLicence } from '../run-licence.js';
import { causeOf, memberStatus, quorumImpossible } from '../etcd-members.js';
import { VmError } from '../state.js';

export interface LicenceTiming {
  renewMs: number;
  marginMs: number;
  quorumProofMs: number;
}

/** A renewal's outcome: acknowledged with a TTL, the lease gone, or no endpoint answered (those in `refused` refused the connection). */
type Renewal = { kind: 'renewed'; ttlSeconds: number } | { kind: 'gone'; why: string } | { kind: 'unanswered'; why: string; refused: string[] };

/** The last acknowledged renewal, for logs and tests: its send time (wall clock) and the TTL etcd gave. */
export interface RenewalRecord { sentAt: string; ttlSeconds: number; deadlineAt: string }

export class LicenceKeeper extends EventEmitter<{ fence: [string]; renewed: [RenewalRecord] }> {
  /** performance.now() after which the VM may not write; nothing may be written before the first renewal. */
  private deadline = -Infinity;
  private lostReason: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private deadlineTimer: NodeJS.Timeout | null = null;
  private running = false;
  last: RenewalRecord | null = null;
  /** One client URL per etcd member, as etcd lists them (null until read): the quorum proof counts these. */
  private members: string[] | null = null;
  private membersReadAt = -Infinity;
  /** Send time of the first round of the unbroken run of rounds proving etcd without quorum. */
  private provenSince: number | null = null;
  private runningOnProof = false;

  constructor(readonly licence: RunLicence, private readonly log: (line: string) => void,
    private readonly timing: LicenceTiming = { renewMs: LICENCE_RENEW_MS, marginMs: FENCE_MARGIN_MS, quorumProofMs: QUORUM_PROOF_HOLD_MS }) {
    super();
  }

  /** Whether the VM may write now: the lease is held and the deadline has not passed. */
  mayWrite(): boolean {
    if (this.lostReason) return false;
    if (performance.now() < this.deadline) return true;
    this.lose(this.deadlinePassed());
    return false;
  }

  /** Why the licence ended (null while it holds). */
  get fenceReason(): string | null {
    return this.lostReason;
  }

  /** The first renewal: the VM may start only once it is acknowledged. Throws VM_E_LICENCE_LOST. */
  async begin(): Promise<void> {
    if (this.running) return;
    const outcome = await this.renewOnce();
    if (!this.mayWrite()) {
      throw new VmError('VM_E_LICENCE_LOST', `the VM's run licence (lease ${this.licence.leaseId}) could not be renewed: ${outcome}`);
    }
    this.running = true;
    await this.readMembers();
    this.schedule();
  }

  /** Stops renewing (the VM has stopped); the lease runs out at etcd unless revoked. */
  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.timer = this.deadlineTimer = null;
  }

  /** Revokes the lease (a clean stop): the VM's ownership is freed at once. Bounded; says how it went. */
  async revoke(): Promise<string> {
    this.stop();
    this.lostReason ??= 'revoked: the VM stopped';
    const errors: string[] = [];
    for (const endpoint of this.licence.endpoints) {
      try {
        const answer = await fetch(`${endpoint}/v3/lease/revoke`, {
          method: 'POST', body: JSON.stringify({ ID: this.licence.leaseId }), signal: AbortSignal.timeout(this.timing.renewMs),
        });
        const text = await answer.text();
        if (answer.ok) return `lease ${this.licence.leaseId} revoked at ${endpoint}`;
        if (/lease not found/.test(text)) return `lease ${this.licence.leaseId} was gone already (${endpoint})`;
        errors.push(`${endpoint}: HTTP ${answer.status} ${text.trim()}`);
      } catch (e) {
        errors.push(`${endpoint}: ${causeOf(e)}`);
      }
    }
    return `lease ${this.licence.leaseId} not revoked (it runs out by its TTL): ${errors.join('; ')}`;
  }

  private schedule(): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      void this.renewOnce().finally(() => this.schedule());
    }, this.timing.renewMs);
  }

  /** One renewal (every endpoint asked at once); updates the deadline or loses the licence. Says what happened. */
  private async renewOnce(): Promise<string> {
    if (this.lostReason) return this.lostReason;
    const sentAt = performance.now();
    // A renewal sent after the deadline cannot make up for it: etcd may have expired the lease.
    if (this.last && sentAt >= this.deadline) {
      this.lose(this.deadlinePassed());
      return this.lostReason!;
    }
    const wallSent = new Date();
    const outcome = await this.send();
    if (this.lostReason) return this.lostReason;
    if (outcome.kind === 'gone') {
      this.lose(`the lease ${this.licence.leaseId} is gone at etcd: ${outcome.why}`);
      return this.lostReason!;
    }
    // The answer may come after the old deadline (a frozen worker, a slow etcd): then it is too late.
    if (this.last && performance.now() >= this.deadline) {
      this.lose(this.deadlinePassed());
      return this.lostReason!;
    }
    if (outcome.kind === 'unanswered') {
      this.log(`licence: renewal failed: ${outcome.why}`);
      return await this.noteQuorumProof(outcome.refused, sentAt, wallSent) ?? outcome.why;
    }
    if (this.runningOnProof) this.log('licence: etcd has a quorum again; renewals are acknowledged');
    this.provenSince = null;
    this.runningOnProof = false;
    if (performance.now() - this.membersReadAt >= MEMBER_LIST_REFRESH_MS) void this.readMembers();
    this.extend(sentAt, wallSent, outcome.ttlSeconds);
    return `renewed (TTL ${outcome.ttlSeconds} s)`;
  }

  /**
   * A round no endpoint answered: when so many of etcd's members refused it that the rest are no
   * majority, and either every other member says it has no leader or the refusals have lasted
   * QUORUM_PROOF_HOLD_MS, no leader exists that could expire the lease, and any later leader
   * gives it its full TTL again: the round counts as a renewal sent at its send time. Says so,
   * or returns null when the round proves nothing.
   */
  private async noteQuorumProof(refused: string[], sentAt: number, wallSent: Date): Promise<string | null> {
    const members = this.members;
    const down = this.majorityDown(refused);
    if (!members || !down.length) {
      this.provenSince = null;
      return null;
    }
    this.provenSince ??= sentAt;
    const held = sentAt - this.provenSince >= this.timing.quorumProofMs;
    if (!held && !await this.noneLed(members.filter((url) => !down.includes(url)))) return null;
    // The probe's answers may come after the deadline: then it is too late.
    if (performance.now() >= this.deadline) {
      this.lose(this.deadlinePassed());
      return this.lostReason;
    }
    if (!this.runningOnProof) {
      this.runningOnProof = true;
      this.log(`licence: etcd has lost quorum (${down.length} of ${members.length} members refuse connections: ${down.join(', ')}); no leader can expire the lease, the VM runs on`);
    }
    this.extend(sentAt, wallSent, this.licence.ttlSeconds);
    return `etcd without quorum (${down.join(', ')} refuse connections): the VM runs on`;
  }

  /** Whether every one of these members answers that it has no leader (a leader that lost its majority has stepped down). */
  private async noneLed(members: string[]): Promise<boolean> {
    const answers = await Promise.all(members.map((url) => memberStatus(url, this.timing.renewMs / 2)));
    return answers.every((a) => a.outcome === 'leaderless');
  }

  /** The members that refused, when they are too many for a quorum among the rest (else none). */
  private majorityDown(refused: string[]): string[] {
    const down = this.members?.filter((url) => url && refused.includes(url)) ?? [];
    return this.members && quorumImpossible(down.length, this.members.length) ? down : [];
  }

  /** Moves the deadline to (send time + TTL − margin) of a round that renewed (or proved no quorum). */
  private extend(sentAt: number, wallSent: Date, ttlSeconds: number): void {
    const deadline = sentAt + ttlSeconds * 1000 - this.timing.marginMs;
    if (deadline > this.deadline) this.deadline = deadline;
    this.last = {
      sentAt: wallSent.toISOString(), ttlSeconds,
      deadlineAt: new Date(wallSent.getTime() + ttlSeconds * 1000 - this.timing.marginMs).toISOString(),
    };
    this.armDeadline();
    this.emit('renewed', this.last);
  }

  /** Reads etcd's member list (one client URL each) from the first endpoint that answers; keeps the last one otherwise. */
  private async readMembers(): Promise<void> {
    this.membersReadAt = performance.now();
    for (const endpoint of this.licence.endpoints) {
      try {
        const answer = await fetch(`${endpoint}/v3/cluster/member/list`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(this.timing.renewMs) });
        const body = await answer.json() as { members?: Array<{ clientURLs?: string[] }> };
        if (!answer.ok || !body.members?.length) continue;
        // A member without a client URL yet (a learner) cannot be shown down: it counts as up.
        this.members = body.members.map((m) => m.clientURLs?.[0] ?? '');
        return;
      } catch { /* the next endpoint */ }
    }
  }

  /**
   * One renewal asked of every endpoint at once: the first definite answer (renewed, or the lease
   * gone) counts, and it is unanswered only when every endpoint failed. One at a time, a dead or
   * electing member would spend a time limit each, and an etcd leader election (1 to 2 s) could
   * eat the whole margin.
   */
  private send(): Promise<Renewal> {
    const errors: string[] = [];
    const refused: string[] = [];
    const endpoints = [...new Set([...this.licence.endpoints, ...(this.members ?? []).filter(Boolean)])];
    let pending = endpoints.length;
    return new Promise((resolve) => {
      for (const endpoint of endpoints) {
        void this.ask(endpoint).then((renewal) => {
          if (renewal.kind !== 'unanswered') return resolve(renewal);
          errors.push(renewal.why);
          refused.push(...renewal.refused);
          // A majority refusing settles the round (no quorum can answer), without waiting out a silent member's time limit.
          if (--pending === 0 || this.majorityDown(refused).length) resolve({ kind: 'unanswered', why: errors.join('; '), refused });
        });
      }
    });
  }

  private async ask(endpoint: string): Promise<Renewal> {
    try {
      const answer = await fetch(`${endpoint}/v3/lease/keepalive`, {
        method: 'POST', body: JSON.stringify({ ID: this.licence.leaseId }), signal: AbortSignal.timeout(this.timing.renewMs),
      });
      const text = await answer.text();
      if (!answer.ok) return { kind: 'unanswered', why: `${endpoint}: HTTP ${answer.status} ${text.trim().slice(0, 200)}`, refused: [] };
      // The gateway streams one JSON object per answer; a single request gets one.
      const body = JSON.parse(text.trim().split('\n')[0]) as { result?: { TTL?: string }; error?: { message?: string } };
      if (body.error) {
        if (/lease not found/.test(body.error.message ?? '')) return { kind: 'gone', why: body.error.message! };
        return { kind: 'unanswered', why: `${endpoint}: ${body.error.message}`, refused: [] };
      }
      const ttl = Number(body.result?.TTL ?? 0);
      // etcd answers a renewal of a lease it does not have with no TTL (0).
      if (!(ttl > 0)) return { kind: 'gone', why: `${endpoint} answered the renewal with TTL ${body.result?.TTL ?? '(none)'}` };
      return { kind: 'renewed', ttlSeconds: ttl };
    } catch (e) {
      const cause = causeOf(e);
      // A refused connection: the host answered that nothing listens there (the member's etcd is not running).
      return { kind: 'unanswered', why: `${endpoint}: ${cause}`, refused: cause === 'ECONNREFUSED' ? [endpoint] : [] };
    }
  }

  /** A timer at the deadline, so the fence comes on time even when no write asks. */
  private armDeadline(): void {
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = setTimeout(() => { this.mayWrite(); }, Math.max(0, this.deadline - performance.now()) + 1);
  }

  private deadlinePassed(): string {
    return this.last
      ? `no renewal acknowledged in time: the last was sent at ${this.last.sentAt} (TTL ${this.last.ttlSeconds} s), its deadline ${this.last.deadlineAt} has passed`
      : 'the licence was never renewed';
  }

  private lose(reason: string): void {
    if (this.lostReason) return;
    this.lostReason = reason;
    this.stop();
    this.emit('fence', reason);
  }
}

