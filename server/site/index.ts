// The administration website: server-rendered pages (views/, EJS) for browser sessions, made
// live by static/site.js over the API's WebSocket. Every page acts through the API as the
// signed-in user, so the site can do no more than that user's rights allow.
// Forms that change anything carry the session's CSRF token in "_csrf"; requests without it,
// or from another site's page, are refused before any handler runs.

import express, { type NextFunction, type Response, Router } from 'express';
import { SERVER_REF } from '../api/objects.js';
import { originAllowed } from '../http/authenticate.js';
import type { TaskState } from '../tasks.js';
import { type SiteContext, type SiteRequest, refusePage } from './context.js';
import { assetRoutes } from './assets.js';
import { masterStatusRoutes } from './master-status.js';
import { vmRoutes } from './vms.js';
import { snapshotRoutes } from './snapshots.js';
import { undoDiskRoutes } from './undo-disks.js';
import { diskRoutes } from './disks.js';
import { networkRoutes } from './networks.js';
import { serverRoutes } from './server-pages.js';
import { fileRoutes } from './files.js';
import { consoleRoutes } from './consoles.js';
import { clusterRoutes } from './cluster.js';

/** The left-hand navigation, as Virtual Server's site had it. */
export const NAVIGATION = [
  { section: 'Navigation', links: [{ href: '/', label: 'Master Status' }] },
  { section: 'Virtual Machines', links: [{ href: '/vms/create', label: 'Create' }, { href: '/vms/add', label: 'Add' }, { href: '/vms', label: 'Configure' }] },
  { section: 'Virtual Disks', links: [{ href: '/disks/create', label: 'Create' }, { href: '/disks/inspect', label: 'Inspect' }] },
  { section: 'Virtual Networks', links: [{ href: '/networks/create', label: 'Create' }, { href: '/networks/add', label: 'Add' }, { href: '/networks', label: 'Configure' }] },
  {
    section: 'Virtual Server',
    links: [{ href: '/server', label: 'Server Properties' }, { href: '/events', label: 'Event Viewer' }, { href: '/website', label: 'Website Properties' },
      { href: '/users', label: 'Users and Permissions', administrators: true }],
  },
] as const;

/** Shown only on a vserverd with cluster settings. */
const CLUSTER_NAVIGATION = { section: 'Cluster', links: [{ href: '/cluster', label: 'Hosts and Failovers' }] } as const;

/** Tasks still running, or finished in the last ten minutes, that the caller may see: the navigation shows their progress. */
function recentTasks(ctx: SiteContext, req: SiteRequest): TaskState[] {
  const since = Date.now() - 10 * 60_000;
  return ctx.services.tasks.list(20)
    .filter((t) => !t.finished || Date.parse(t.finished) > since)
    .filter((t) => ctx.services.access.canRead(req.caller!.principal, t.object ?? SERVER_REF))
    .slice(0, 8);
}

export function createSite(ctx: SiteContext, projectRoot: string): Router {
  const router = Router();
  assetRoutes(router, projectRoot);

  // Pages are for browsers: a bearer-token caller (a script) uses the API instead.
  router.use((req: SiteRequest, res: Response, next: NextFunction) => {
    const caller = req.caller!;
    if (!caller.session) return refusePage(req, res, 403, 'the website needs a browser session: sign in at /login (scripts use /api/rpc)');
    res.locals.user = caller.principal.user;
    res.locals.role = caller.principal.role;
    res.locals.csrf = caller.session.csrf;
    res.locals.path = req.path;
    res.locals.navigation = [...NAVIGATION, ...(ctx.services.cluster ? [CLUSTER_NAVIGATION] : [])]
      .map((group) => ({ ...group, links: group.links.filter((l) => !('administrators' in l) || caller.principal.role === 'Administrator') }));
    res.locals.title = 'vserver';
    // Read only by the pages' frame: row refreshes, thumbnails and JSON answers do not query the tasks.
    res.locals.recentTasks = () => recentTasks(ctx, req);
    next();
  });

  router.use(express.urlencoded({ extended: false, limit: '64kb' }));
  router.use((req: SiteRequest, res: Response, next: NextFunction) => {
    if (req.method === 'GET' || req.method === 'HEAD') return next();
    const body = (req.body ?? {}) as Record<string, unknown>;
    const token = body._csrf ?? req.get('x-csrf-token');
    if (token !== req.caller!.session!.csrf) return refusePage(req, res, 403, 'the form has no valid CSRF token (it may come from an old page): reload the page and try again');
    if (!originAllowed(req.headers, ctx.allowedOrigins)) return refusePage(req, res, 403, 'a form sent from another site is refused');
    next();
  });

  masterStatusRoutes(router, ctx);
  clusterRoutes(router, ctx);
  undoDiskRoutes(router, ctx);
  snapshotRoutes(router, ctx);
  vmRoutes(router, ctx);
  diskRoutes(router, ctx);
  networkRoutes(router, ctx);
  serverRoutes(router, ctx);
  fileRoutes(router, ctx);
  consoleRoutes(router, ctx);
  return router;
}
