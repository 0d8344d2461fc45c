// Signing in: the website's form (GET and POST /login, then POST /logout), and POST /api/login,
// which gives scripts a token. Both count failures per user name and, more loosely, per address.

import express, { type Request, type Response } from 'express';
import { LoginRateLimiter } from '../auth/rate-limit.js';
import { ERRORS, type ErrorName } from '../error-catalogue.js';
import type { Services } from '../api/services.js';
import { authenticate, originAllowed } from './authenticate.js';

/** Tokens from POST /api/login last this long; scripts wanting longer ones use CreateToken. */
const LOGIN_TOKEN_DAYS = 30;
const FORM_LIMIT = '16kb';

export interface SignInOptions { services: Services; allowedOrigins: string[]; loginStyles: string }

/** Answers a refused sign-in, in the form the route speaks (a page or JSON), with `name`'s status. */
type Refuse = (name: ErrorName, message: string) => void;

/** Checks the rate limit, then the password; refuses through `refuse` and returns the user on success. */
function passwordCheck(services: Services): (req: Request, res: Response, user: unknown, password: unknown, refuse: Refuse) => Promise<string | null> {
  // Per user name, and more loosely per address: a few wrong guesses from one address (vsctl on
  // this host, say) must not lock every user out.
  const userLimiter = new LoginRateLimiter({ maxFailures: 5 });
  const addressLimiter = new LoginRateLimiter({ maxFailures: 20 });
  return async (req, res, user, password, refuse) => {
    if (typeof user !== 'string' || typeof password !== 'string' || !user || !password) {
      refuse('VM_E_INVALID_PARAMS', 'give "user" and "password"');
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
      refuse('VM_E_TOO_MANY_ATTEMPTS', `too many failed sign-in attempts; try again in ${verdict.retryAfterSeconds} s`);
      return null;
    }
    const found = await services.users.verify(user, password);
    if (!found) {
      userLimiter.recordFailure(userKey);
      addressLimiter.recordFailure(addressKey);
      services.events.log('Security', 'Warning', `failed sign-in as ${shown} from ${address}`, shown);
      refuse('VM_E_LOGIN_FAILED', 'the user name or password is wrong');
      return null;
    }
    // Only the user's count is cleared: signing in to one's own account must not reset an address's failures.
    userLimiter.recordSuccess(userKey);
    return found.name;
  };
}

/** GET and POST /login (the website) and POST /api/login (scripts): open to anyone. */
export function signInRoutes({ services, allowedOrigins, loginStyles }: SignInOptions): express.Router {
  const router = express.Router();
  const signIn = passwordCheck(services);
  router.get('/login', (req, res) => {
    if (authenticate(req.headers, services.users, services.sessions)) return res.redirect(303, '/');
    res.render('login', { error: null, user: '', styles: loginStyles });
  });
  router.post('/login', express.urlencoded({ extended: false, limit: FORM_LIMIT }), async (req, res) => {
    if (!originAllowed(req.headers, allowedOrigins)) return res.status(403).type('text/plain').send('cross-site sign-in refused\n');
    const body = (req.body ?? {}) as Record<string, unknown>;
    const user = await signIn(req, res, body.user, body.password, (name, message) => {
      res.status(ERRORS[name].http).render('login', { error: message, user: typeof body.user === 'string' ? body.user : '', styles: loginStyles });
    });
    if (!user) return;
    services.sessions.create(res, user);
    services.events.log('Security', 'Information', `${user} signed in to the website`, user);
    res.redirect(303, '/');
  });
  router.post('/api/login', express.json({ limit: FORM_LIMIT }), async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const user = await signIn(req, res, body.user, body.password, (name, message) => { res.status(ERRORS[name].http).json({ error: { name, message } }); });
    if (!user) return;
    const token = services.users.createToken(user, { description: 'POST /api/login', expiresInDays: LOGIN_TOKEN_DAYS });
    services.events.log('Security', 'Information', `${user} signed in to the API (token ${token.id})`, user);
    res.json({ token: token.token, id: token.id, user, role: token.role, expires: token.expires });
  });
  return router;
}

/** POST /logout: ends the caller's session; only from this site's own pages. */
export function signOutRoute({ services, allowedOrigins }: Omit<SignInOptions, 'loginStyles'>): express.Router {
  const router = express.Router();
  router.post('/logout', express.urlencoded({ extended: false, limit: FORM_LIMIT }), (req, res) => {
    if (!originAllowed(req.headers, allowedOrigins)) return res.status(403).type('text/plain').send('cross-site request refused\n');
    services.sessions.end(req, res);
    res.redirect(303, '/login');
  });
  return router;
}
