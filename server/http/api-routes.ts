// The API over HTTP: JSON-RPC at POST /api/rpc, and the schema at GET /api/schema. The callers
// are known (require-caller.ts); /api/ws is websocket.ts.

import express from 'express';
import { handleRpcBody } from '../api/dispatch.js';
import { EVENTS, SCHEMA } from '../api/schema.js';
import type { Services } from '../api/services.js';
import { originAllowed } from './authenticate.js';
import { sendRpcRefusal } from './error-responses.js';
import type { AuthedRequest } from './require-caller.js';

export const MAX_BODY = '1mb';

export function apiRoutes({ services, allowedOrigins }: { services: Services; allowedOrigins: string[] }): express.Router {
  const router = express.Router();
  router.get('/api/schema', (_req, res) => { res.json({ interfaces: SCHEMA, events: EVENTS }); });
  router.post('/api/rpc', express.text({ type: () => true, limit: MAX_BODY }), async (req: AuthedRequest, res) => {
    const caller = req.caller!;
    // With a cookie, a page of another site could make the browser call: it must echo the session's CSRF token.
    if (caller.session && (req.get('x-csrf-token') !== caller.session.csrf || !originAllowed(req.headers, allowedOrigins))) {
      return sendRpcRefusal(res, 'VM_E_CSRF', 'a call made with a session cookie needs its X-CSRF-Token header');
    }
    const answer = await handleRpcBody(typeof req.body === 'string' ? req.body : '', caller.principal, services);
    if (answer === null) return res.status(204).end();
    res.json(answer);
  });
  return router;
}
