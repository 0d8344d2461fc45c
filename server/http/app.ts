// vserverd's HTTP side, assembled: /healthz and signing in are open (sign-in.ts); everything
// else needs a bearer token or a session (require-caller.ts), or, for a call another host of the
// cluster forwarded, that host's signature (forwarded-caller.ts). The API is JSON-RPC at POST
// /api/rpc (and over /api/ws, see websocket.ts) with the schema at GET /api/schema
// (api-routes.ts); the website is site/. Refusals at this level are error-responses.ts's.

import fs from 'node:fs';
import path from 'node:path';
import express from 'express';
import type { Services } from '../api/services.js';
import { createSite } from '../site/index.js';
import { apiRoutes } from './api-routes.js';
import { lastResort, notFound } from './error-responses.js';
import { forwardedCaller } from './forwarded-caller.js';
import { requireCaller } from './require-caller.js';
import { hostGate, securityHeaders } from './response-guards.js';
import { signInRoutes, signOutRoute } from './sign-in.js';

export interface AppOptions { services: Services; allowedOrigins: string[]; allowedHosts: string[]; projectRoot: string; sessionTimeoutMinutes: number; thumbnailSeconds: number }

export function createApp({ services, allowedOrigins, allowedHosts, projectRoot, sessionTimeoutMinutes, thumbnailSeconds }: AppOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  // Answers are never cached (Cache-Control: no-store), so hashing each for an ETag is wasted work.
  app.set('etag', false);
  app.set('view engine', 'ejs');
  app.set('views', path.join(projectRoot, 'views'));
  app.set('trust proxy', false);
  // The sign-in page carries its styles inline: /static, like everything else, needs a caller.
  const loginStyles = fs.readFileSync(path.join(projectRoot, 'static', 'site.css'), 'utf8');
  app.use(securityHeaders(loginStyles));
  app.use(hostGate(allowedHosts));

  app.get('/healthz', (_req, res) => { res.type('text/plain').send('ok\n'); });
  app.use(signInRoutes({ services, allowedOrigins, loginStyles }));

  // Everything below needs a caller.
  app.use(forwardedCaller(services));
  app.use(requireCaller(services));
  app.use(signOutRoute({ services, allowedOrigins }));
  app.use('/static', express.static(path.join(projectRoot, 'static')));
  app.use(apiRoutes({ services, allowedOrigins }));
  app.use(createSite({ services, allowedOrigins, sessionTimeoutMinutes, thumbnailSeconds }, projectRoot));

  app.use(notFound);
  app.use(lastResort);
  return app;
}
