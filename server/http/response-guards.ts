// What every answer gets before anything else runs, /healthz and the sign-in page included: the
// Host header check (host-check.ts) and the security headers.

import type { RequestHandler } from 'express';
import { contentSecurityPolicy, styleHash } from './content-policy.js';
import { hostAllowed, hostRefusal } from './host-check.js';

/** The security headers, with the policy allowing the sign-in page's inline `loginStyles`. */
export function securityHeaders(loginStyles: string): RequestHandler {
  const policy = contentSecurityPolicy([styleHash(loginStyles)]);
  return (_req, res, next) => {
    res.set({
      'Content-Security-Policy': policy,
      'X-Content-Type-Options': 'nosniff', 'X-Frame-Options': 'DENY', 'Referrer-Policy': 'same-origin', 'Cache-Control': 'no-store',
    });
    next();
  };
}

/** Answers 421 to a request whose Host header does not name this server. */
export function hostGate(allowedHosts: string[]): RequestHandler {
  return (req, res, next) => {
    if (hostAllowed(req.headers, allowedHosts, req.socket.localPort)) return next();
    res.status(421).type('text/plain').send(hostRefusal(req.headers));
  };
}
