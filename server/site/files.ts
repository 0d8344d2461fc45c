// The file picker's listing (GET /files?path=&kind=): one folder inside the storage roots, as
// VirtualServer.GetFiles gives it, narrowed to what the field asks for (folders, then .vhd
// files, say), with the roots to switch between. static/file-picker.js shows it in a dialog.
// Paths outside the roots are the API's to refuse; its message is passed on.

import path from 'node:path';
import type { Response, Router } from 'express';
import { type SiteContext, type SiteRequest, api, refusalMessage, refusalStatus } from './context.js';

interface Entry { name: string; path: string; type: 'file' | 'folder'; size: number }
interface Listing { root: string; folder: string; entries: Entry[] }

/** The file name endings each kind of path field takes; null takes every file, [] none (folders only). */
export const KINDS: Record<string, string[] | null> = {
  vhd: ['.vhd'],
  iso: ['.iso'],
  vmc: ['.vmc'],
  vnc: ['.vnc'],
  vfd: ['.vfd', '.flp'],
  folder: [],
  any: null,
};

function offered(entry: Entry, endings: string[] | null): boolean {
  if (entry.type === 'folder') return true;
  return endings === null || endings.some((ending) => entry.name.toLowerCase().endsWith(ending));
}

export function fileRoutes(router: Router, ctx: SiteContext): void {
  router.get('/files', async (req: SiteRequest, res: Response) => {
    const kind = typeof req.query.kind === 'string' && req.query.kind ? req.query.kind : 'any';
    if (!Object.hasOwn(KINDS, kind)) {
      return res.status(400).json({ error: { message: `unknown kind "${kind}"; one of ${Object.keys(KINDS).join(', ')}` } });
    }
    const folder = typeof req.query.path === 'string' && req.query.path ? req.query.path : undefined;
    try {
      const listing = await api<Listing>(ctx, req, 'VirtualServer.GetFiles', folder === undefined ? {} : { path: folder });
      const roots = await api<string[]>(ctx, req, 'VirtualServer.get_StorageRoots');
      res.json({
        kind,
        root: listing.root,
        folder: listing.folder,
        // Up stops at the root: above it the API would refuse.
        parent: listing.folder === listing.root ? null : path.dirname(listing.folder),
        roots,
        entries: listing.entries.filter((e) => offered(e, KINDS[kind])),
      });
    } catch (error) {
      res.status(refusalStatus(error)).json({ error: { message: refusalMessage(error) } });
    }
  });
}
