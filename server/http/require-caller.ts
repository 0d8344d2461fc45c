// Everything but /healthz and signing in needs a caller: a script without one hears
// VM_E_NOT_AUTHENTICATED, a browser is sent to the sign-in page.

import type { NextFunction, Request, Response } from 'express';
import type { Services } from '../api/services.js';
import { type Caller, authenticate } from './authenticate.js';
import { sendRpcRefusal } from './error-responses.js';

/** A request past requireCaller: its caller is known. */
export type AuthedRequest = Request & { caller?: Caller };

export function requireCaller(services: Services): (req: AuthedRequest, res: Response, next: NextFunction) => void {
  return (req, res, next) => {
    // A call another host forwarded here was verified already (forwarded-caller.ts).
    if (req.caller) return next();
    const caller = authenticate(req.headers, services.users, services.sessions);
    if (caller) {
      req.caller = caller;
      return next();
    }
    if (req.path.startsWith('/api/')) {
      res.set('WWW-Authenticate', 'Bearer realm="vserver"');
      return sendRpcRefusal(res, 'VM_E_NOT_AUTHENTICATED', 'sign in first: send "Authorization: Bearer TOKEN" (POST /api/login gives one)');
    }
    res.redirect(303, '/login');
  };
}
