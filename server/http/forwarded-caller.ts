// Calls another host of the cluster forwarded here (server/cluster/forward.ts): a request with
// the forwarding headers is taken only at POST /api/rpc, only with a valid signature of the
// cluster secret (server/auth/host-signatures.ts), and runs as the named user of this host's own
// catalog, with that user's rights here, capped by the role the caller had on the first host.
// Any other HTTP request with those headers is VM_E_NOT_AUTHENTICATED: never a fallback to a token.

import express, { type NextFunction, type Response } from 'express';
import { isForwarded } from '../auth/host-signatures.js';
import { narrower } from '../auth/users.js';
import type { Services } from '../api/services.js';
import { MAX_BODY } from './api-routes.js';
import { sendRpcRefusal } from './error-responses.js';
import type { AuthedRequest } from './require-caller.js';

export function forwardedCaller(services: Services): (req: AuthedRequest, res: Response, next: NextFunction) => void {
  const readBody = express.text({ type: () => true, limit: MAX_BODY });
  const refuse = (res: Response, why: string): void => {
    services.events.log('Security', 'Warning', `a forwarded call was refused: ${why}`);
    sendRpcRefusal(res, 'VM_E_NOT_AUTHENTICATED', `a call forwarded by another host is refused: ${why}`);
  };
  return (req, res, next) => {
    if (!isForwarded(req.headers)) return next();
    if (req.method !== 'POST' || req.path !== '/api/rpc') return refuse(res, `forwarded calls are taken at POST /api/rpc only, not ${req.method} ${req.path}`);
    const signatures = services.forwarder?.signatures;
    if (!signatures) return refuse(res, `this host (${services.cluster?.hostName ?? services.hostName}) has no cluster secret (--cluster-secret-file)`);
    readBody(req, res, (error?: unknown) => {
      if (error) return next(error);
      const body = typeof req.body === 'string' ? req.body : '';
      const verified = signatures.verify(req.method, req.path, req.headers, body);
      if ('refused' in verified) return refuse(res, verified.refused);
      const user = services.users.get(verified.user);
      if (!user) return refuse(res, `${verified.from} forwarded it for ${verified.user}, who is not a user of this host`);
      req.caller = { principal: { user: user.name, userRole: user.role, role: narrower(user.role, verified.role), tokenId: null, answerHere: true }, session: null };
      next();
    });
  };
}
