// The consoles' scripts and styles, served by vserverd from the installed npm packages: the site
// loads nothing from another host. Only the folders a browser needs are exposed.

import path from 'node:path';
import express, { type Router } from 'express';

const PACKAGES: { url: string; dir: string; folders: string[] }[] = [
  { url: '/assets/novnc', dir: '@novnc/novnc', folders: ['core', 'vendor'] },
  { url: '/assets/xterm', dir: '@xterm/xterm', folders: ['lib', 'css'] },
  { url: '/assets/xterm-addon-fit', dir: '@xterm/addon-fit', folders: ['lib'] },
];

export function assetRoutes(router: Router, projectRoot: string): void {
  for (const pkg of PACKAGES) {
    for (const folder of pkg.folders) {
      // Versions change only with an install: a day's caching saves the console's many module requests.
      router.use(`${pkg.url}/${folder}`, express.static(path.join(projectRoot, 'node_modules', pkg.dir, folder), {
        fallthrough: false, maxAge: '1d', setHeaders: (res) => res.set('Cache-Control', 'private, max-age=86400'),
      }));
    }
  }
}
