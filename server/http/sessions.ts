// Browser sessions: a random id in an HttpOnly, SameSite=Strict cookie, kept in memory (a
// restart of vserverd signs browsers out), ended after the configured idle time. Each session
// has a CSRF token that state-changing requests made with the cookie must echo.

import crypto from 'node:crypto';
import type { Request, Response } from 'express';

export const SESSION_COOKIE = 'vserver_session';

export interface Session { id: string; user: string; csrf: string; expires: number }

export class Sessions {
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly idleMs: number) {}

  create(res: Response, user: string): Session {
    this.prune();
    const session: Session = { id: crypto.randomBytes(32).toString('base64url'), user, csrf: crypto.randomBytes(24).toString('base64url'), expires: Date.now() + this.idleMs };
    this.sessions.set(session.id, session);
    res.cookie(SESSION_COOKIE, session.id, { httpOnly: true, sameSite: 'strict', path: '/', maxAge: this.idleMs });
    return session;
  }

  /**
   * The request's live session, or null. Its idle time restarts unless the request says it is
   * the page's own background work (X-Vserver-Background: 1, sent by the site's scripts when they
   * refresh rows or progress): an open Master Status must not keep a session alive for ever.
   */
  find(headers: { cookie?: string; 'x-vserver-background'?: string | string[] }): Session | null {
    const id = readCookie(headers.cookie, SESSION_COOKIE);
    const session = id ? this.sessions.get(id) : undefined;
    if (!session) return null;
    if (session.expires < Date.now()) {
      this.sessions.delete(session.id);
      return null;
    }
    if (headers['x-vserver-background'] !== '1') session.expires = Date.now() + this.idleMs;
    return session;
  }

  end(req: Request, res: Response): void {
    const id = readCookie(req.headers.cookie, SESSION_COOKIE);
    if (id) this.sessions.delete(id);
    res.clearCookie(SESSION_COOKIE, { path: '/' });
  }

  /** Ends every session of a user (deleted, or their password changed). */
  endUser(user: string): void {
    for (const [id, s] of this.sessions) if (s.user === user) this.sessions.delete(id);
  }

  private prune(): void {
    const now = Date.now();
    for (const [id, s] of this.sessions) if (s.expires < now) this.sessions.delete(id);
  }
}

export function readCookie(header: string | undefined, name: string): string | null {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim());
  }
  return null;
}
