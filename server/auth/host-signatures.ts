// The trust between the hosts of a cluster: a call one host forwards to another carries the
// caller's user name and role, signed with the secret every host shares (HMAC-SHA256 over the
// HTTP method and path, both hosts' names, the user, the role, the time, a nonce and a digest of
// the body). The receiving host accepts it only within FORWARD_WINDOW_MS of its time, only once
// (its nonce is remembered for twice the window), and only when addressed to itself, and then
// acts as that user of its own catalog (server/http/forwarded-caller.ts).

import crypto from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { ROLES, type Role } from './rights.js';

/** How far a forwarded call's time may be from the receiver's: the hosts' clocks are kept by NTP. */
export const FORWARD_WINDOW_MS = 30_000;
/** The headers of a forwarded call; the presence of any makes a request a forwarded one. */
export const FORWARD_HEADERS = {
  from: 'x-vserver-forwarded-by',
  to: 'x-vserver-forwarded-to',
  user: 'x-vserver-forwarded-user',
  role: 'x-vserver-forwarded-role',
  time: 'x-vserver-forwarded-time',
  nonce: 'x-vserver-forwarded-nonce',
  signature: 'x-vserver-forwarded-signature',
} as const;

/** What a verified forwarded call says: who forwarded it, and for whom. */
export interface ForwardedCaller { from: string; user: string; role: Role }

export function isForwarded(headers: IncomingHttpHeaders): boolean {
  return Object.values(FORWARD_HEADERS).some((h) => headers[h] !== undefined);
}

export class HostSignatures {
  /** Nonces seen, with when they may be forgotten (past the window, a replay fails on its time). */
  private readonly seen = new Map<string, number>();

  constructor(private readonly secret: string, private readonly hostName: string) {}

  /** The headers that let host `to` run a POST of `body` to `path` as `user` with at most `role`. */
  sign(to: string, path: string, body: string, user: string, role: Role, now = Date.now()): Record<string, string> {
    const fields = { from: this.hostName, to, user, role, time: String(now), nonce: crypto.randomBytes(16).toString('hex') };
    const signature = this.mac('POST', path, fields, body);
    return Object.fromEntries(Object.entries({ ...fields, signature }).map(([k, v]) => [FORWARD_HEADERS[k as keyof typeof FORWARD_HEADERS], v]));
  }

  /** The caller a forwarded request carries, or why it is refused. */
  verify(method: string, path: string, headers: IncomingHttpHeaders, body: string, now = Date.now()): ForwardedCaller | { refused: string } {
    const get = (name: keyof typeof FORWARD_HEADERS): string => { const v = headers[FORWARD_HEADERS[name]]; return typeof v === 'string' ? v : ''; };
    const fields = { from: get('from'), to: get('to'), user: get('user'), role: get('role'), time: get('time'), nonce: get('nonce') };
    const given = Buffer.from(get('signature'), 'hex');
    const expected = Buffer.from(this.mac(method, path, fields, body), 'hex');
    if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
      return { refused: `its signature does not match (is the cluster secret of ${fields.from || 'the forwarding host'} the same as this host's?)` };
    }
    if (fields.to !== this.hostName) return { refused: `it was signed for host ${fields.to}, not ${this.hostName}` };
    const time = Number(fields.time);
    if (!Number.isSafeInteger(time) || Math.abs(now - time) > FORWARD_WINDOW_MS) {
      return { refused: `its time is more than ${FORWARD_WINDOW_MS / 1000} s from this host's (are the hosts' clocks set?)` };
    }
    if (!/^[0-9a-f]{32}$/.test(fields.nonce) || this.seen.has(fields.nonce)) return { refused: 'it was received before (a replay)' };
    if (!(ROLES as readonly string[]).includes(fields.role) || !fields.user) return { refused: 'it names no user or no known role' };
    this.forgetOld(now);
    this.seen.set(fields.nonce, now + 2 * FORWARD_WINDOW_MS);
    return { from: fields.from, user: fields.user, role: fields.role as Role };
  }

  private mac(method: string, path: string, fields: Record<'from' | 'to' | 'user' | 'role' | 'time' | 'nonce', string>, body: string): string {
    const digest = crypto.createHash('sha256').update(body, 'utf8').digest('hex');
    const text = [method, path, fields.from, fields.to, fields.user, fields.role, fields.time, fields.nonce, digest].join('\n');
    return crypto.createHmac('sha256', this.secret).update(text, 'utf8').digest('hex');
  }

  private forgetOld(now: number): void {
    // Kept in the order received, so the oldest come first.
    for (const [nonce, until] of this.seen) {
      if (until >= now) return;
      this.seen.delete(nonce);
    }
  }
}
