// vserverd's HTTP side: /healthz and the sign-in page are open; everything else needs a bearer
// token or a session. The API is JSON-RPC at POST /api/rpc (and over /api/ws, see websocket.ts),
// the schema at GET /api/schema, and tokens come from POST /api/login.

import fs from 'node:fs';
import path from 'node:path';
import express, { type NextFunction, type Request, type Response } from 'express';
import { LoginRateLimiter } from '../auth/rate-limit.js';
import { handleRpcBody } from '../api/dispatch.js';
import { RPC_INVALID_REQUEST, RPC_SERVER_ERROR } from '../api/errors.js';
import { EVENTS, SCHEMA } from '../api/schema.js';
import type { Services } from '../api/services.js';
import { createSite } from '../site/index.js';
import { type Caller, authenticate, originAllowed } from './authenticate.js';
import { contentSecurityPolicy, styleHash } from './content-policy.js';
import { hostAllowed, hostRefusal } from './host-check.js';

const MAX_BODY = '1mb';
/** Tokens from POST /api/login last this long; scripts wanting longer ones use CreateToken. */
const LOGIN_TOKEN_DAYS = 30;

export interface AppOptions { services: Services; allowedOrigins: string[]; allowedHosts: string[]; projectRoot: string; sessionTimeoutMinutes: number; thumbnailSeconds: number }

type AuthedRequest = Request & { caller?: Caller };

export function createApp({ services, allowedOrigins, allowedHosts, projectRoot, sessionTimeoutMinutes, thumbnailSeconds }: AppOptions): express.Express {
  const app = express();
  const sessions = services.sessions;
  // Per user name, and more loosely per address: a few wrong guesses from one address (vsctl on
  // this host, say) must not lock every user out.
  const userLimiter = new LoginRateLimiter({ maxFailures: 5 });
  const addressLimiter = new LoginRateLimiter({ maxFailures: 20 });
  app.disable('x-powered-by');
  // Answers are never cached (Cache-Control: no-store), so hashing each for an ETag is wasted work.
  app.set('etag', false);
  app.set('view engine', 'ejs');
  app.set('views', path.join(projectRoot, 'views'));
  app.set('trust proxy', false);
  // The sign-in page carries its styles inline: /static, like everything else, needs a caller.
  const loginStyles = fs.readFileSync(path.join(projectRoot, 'static', 'site.css'), 'utf8');
  const policy = contentSecurityPolicy([styleHash(loginStyles)]);
  app.use((_req, res, next) => {
    res.set({
      'Content-Security-Policy': policy,
      'X-Content-Type-Options': 'nosniff', 'X-Frame-Options': 'DENY', 'Referrer-Policy': 'same-origin', 'Cache-Control': 'no-store',
    });
    next();
  });
  // Before anything answers, /healthz and the sign-in page included: see host-check.ts.
  app.use((req, res, next) => {
    if (hostAllowed(req.headers, allowedHosts, req.socket.localPort)) return next();
    res.status(421).type('text/plain').send(hostRefusal(req.headers));
  });

  app.get('/healthz', (_req, res) => { res.type('text/plain').send('ok\n'); });

  /** Checks the rate limit, then the password; answers the refusals itself and returns the user on success. */
  async function signIn(req: Request, res: Response, user: unknown, password: unknown, refuse: (status: number, message: string, name: string) => void): Promise<string | null> {
    if (typeof user !== 'string' || typeof password !== 'string' || !user || !password) {
      refuse(400, 'give "user" and "password"', 'VM_E_INVALID_PARAMS');
      return null;
    }
    const address = req.socket.remoteAddress ?? 'unknown';
    const userKey = [`user:${user}`];
    const addressKey = [`ip:${address}`];
    // The name is the caller's to choose: it goes into the log short and printable.
    const shown = user.replace(/[^\x20-\x7e]/g, '?').slice(0, 64);
    const verdict = [userLimiter.check(userKey), addressLimiter.check(addressKey)].find((v) => !v.allowed);
    if (verdict && !verdict.allowed) {
      res.set('Retry-After', String(verdict.retryAfterSeconds));
      services.events.log('Security', 'Warning', `sign-in as ${shown} from ${address} refused: too many failed attempts (retry in ${verdict.retryAfterSeconds} s)`, shown);
      refuse(429, `too many failed sign-in attempts; try again in ${verdict.retryAfterSeconds} s`, 'VM_E_TOO_MANY_ATTEMPTS');
      return null;
    }
    const found = await services.users.verify(user, password);
    if (!found) {
      userLimiter.recordFailure(userKey);
      addressLimiter.recordFailure(addressKey);
      services.events.log('Security', 'Warning', `failed sign-in as ${shown} from ${address}`, shown);
      refuse(401, 'the user name or password is wrong', 'VM_E_LOGIN_FAILED');
      return null;
    }
    // Only the user's count is cleared: signing in to one's own account must not reset an address's failures.
    userLimiter.recordSuccess(userKey);
    return found.name;
  }

  app.get('/login', (req, res) => {
    if (authenticate(req.headers, services.users, sessions)) return res.redirect(303, '/');
    res.render('login', { error: null, user: '', styles: loginStyles });
  });
  app.post('/login', express.urlencoded({ extended: false, limit: '16kb' }), async (req, res) => {
    if (!originAllowed(req.headers, allowedOrigins)) return res.status(403).type('text/plain').send('cross-site sign-in refused\n');
    const body = (req.body ?? {}) as Record<string, unknown>;
    const user = await signIn(req, res, body.user, body.password, (status, message) => { res.status(status).render('login', { error: message, user: typeof body.user === 'string' ? body.user : '', styles: loginStyles }); });
    if (!user) return;
    sessions.create(res, user);
    services.events.log('Security', 'Information', `${user} signed in to the website`, user);
    res.redirect(303, '/');
  });

  app.post('/api/login', express.json({ limit: '16kb' }), async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const user = await signIn(req, res, body.user, body.password, (status, message, name) => { res.status(status).json({ error: { name, message } }); });
    if (!user) return;
    const token = services.users.createToken(user, { description: 'POST /api/login', expiresInDays: LOGIN_TOKEN_DAYS });
    services.events.log('Security', 'Information', `${user} signed in to the API (token ${token.id})`, user);
    res.json({ token: token.token, id: token.id, user, role: token.role, expires: token.expires });
  });

  // Everything below needs a caller.
  app.use((req: AuthedRequest, res: Response, next: NextFunction) => {
    const caller = authenticate(req.headers, services.users, sessions);
    if (caller) {
      req.caller = caller;
      return next();
    }
    if (req.path.startsWith('/api/')) {
      return res.status(401).set('WWW-Authenticate', 'Bearer realm="vserver"').json({
        jsonrpc: '2.0', id: null, error: { code: RPC_SERVER_ERROR, message: 'sign in first: send "Authorization: Bearer TOKEN" (POST /api/login gives one)', data: { name: 'VM_E_NOT_AUTHENTICATED' } },
      });
    }
    res.redirect(303, '/login');
  });

  app.post('/logout', express.urlencoded({ extended: false, limit: '16kb' }), (req: AuthedRequest, res) => {
    if (!originAllowed(req.headers, allowedOrigins)) return res.status(403).type('text/plain').send('cross-site request refused\n');
    sessions.end(req, res);
    res.redirect(303, '/login');
  });

  app.use('/static', express.static(path.join(projectRoot, 'static')));
  app.get('/api/schema', (_req, res) => { res.json({ interfaces: SCHEMA, events: EVENTS }); });

  app.post('/api/rpc', express.text({ type: () => true, limit: MAX_BODY }), async (req: AuthedRequest, res) => {
    const caller = req.caller!;
    // With a cookie, a page of another site could make the browser call: it must echo the session's CSRF token.
    if (caller.session && (req.get('x-csrf-token') !== caller.session.csrf || !originAllowed(req.headers, allowedOrigins))) {
      return res.status(403).json({ jsonrpc: '2.0', id: null, error: { code: RPC_INVALID_REQUEST, message: 'a call made with a session cookie needs its X-CSRF-Token header', data: { name: 'VM_E_CSRF' } } });
    }
    const answer = await handleRpcBody(typeof req.body === 'string' ? req.body : '', caller.principal, services);
    if (answer === null) return res.status(204).end();
    res.json(answer);
  });

  app.use(createSite({ services, allowedOrigins, sessionTimeoutMinutes, thumbnailSeconds }, projectRoot));

  app.use((req, res) => { res.status(404).type('text/plain').send(`${req.path}: not found\n`); });
  // Express's last resort: a body too large or not parseable gets a JSON-RPC error, anything else a 500.
  app.use((error: Error & { status?: number; type?: string }, _req: Request, res: Response, _next: NextFunction) => {
    void _next;
    const status = error.status ?? 500;
    res.status(status).json({ jsonrpc: '2.0', id: null, error: { code: status === 413 ? RPC_INVALID_REQUEST : RPC_SERVER_ERROR, message: status === 500 ? 'internal error' : error.message, data: { name: status === 413 ? 'VM_E_REQUEST_TOO_LARGE' : 'VM_E_BAD_REQUEST' } } });
  });
  return app;
}
