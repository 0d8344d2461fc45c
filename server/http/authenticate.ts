// Who a request comes from: a bearer token (scripts, vsctl) or a browser session cookie. Nothing
// but /login and /healthz is served to a request that is neither.

import type { IncomingHttpHeaders } from 'node:http';
import type { Principal, Users } from '../auth/users.js';
import type { Session, Sessions } from './sessions.js';

export interface Caller { principal: Principal; session: Session | null }

export function authenticate(headers: IncomingHttpHeaders, users: Users, sessions: Sessions): Caller | null {
  const authorization = headers.authorization;
  if (authorization) {
    const match = /^Bearer\s+(\S+)$/i.exec(authorization);
    const principal = match ? users.authenticate(match[1]) : null;
    // A wrong token is a failure even when a cookie is present too: scripts must hear about it.
    return principal ? { principal, session: null } : null;
  }
  const session = sessions.find(headers);
  if (!session) return null;
  const user = users.get(session.user);
  if (!user) return null;
  return { principal: { user: user.name, userRole: user.role, role: user.role, tokenId: null }, session };
}

/** Whether a browser's Origin header names this server (or an allowed origin); absent means not a browser. */
export function originAllowed(headers: IncomingHttpHeaders, allowed: readonly string[]): boolean {
  const origin = headers.origin;
  if (!origin) return true;
  if (allowed.includes(origin)) return true;
  try {
    return new URL(origin).host === headers.host;
  } catch {
    return false;
  }
}
