// vserverd's entry point. For now the service is a placeholder page: the catalog, the API and
// the administration site come with their own issues. It listens on loopback by default.

import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import express from 'express';
import { loadConfig } from './config.js';

const projectRoot = path.resolve(import.meta.dirname, '..', '..');

function main(): void {
  const config = loadConfig(process.argv.slice(2), process.env, projectRoot);
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o750 });
  const app = express();
  app.disable('x-powered-by');
  app.set('view engine', 'ejs');
  app.set('views', path.join(projectRoot, 'views'));
  app.use('/static', express.static(path.join(projectRoot, 'static')));
  app.get('/healthz', (_req, res) => { res.type('text/plain').send('ok\n'); });
  app.get('/', (_req, res) => { res.render('placeholder', { dataDir: config.dataDir }); });
  const server = app.listen(config.port, config.host, () => {
    const { port } = server.address() as AddressInfo;
    console.log(`vserverd: placeholder page on http://${config.host}:${port}/ (data folder ${config.dataDir}).`);
    console.log('vserverd: the API and the administration site are not built yet; the VHD engine is available as "bin/vsctl vhd".');
  });
  server.on('error', (error) => {
    console.error(`vserverd: cannot listen on ${config.host}:${config.port}: ${error.message}`);
    process.exit(1);
  });
  const stop = (): void => { server.close(() => process.exit(0)); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

try {
  main();
} catch (error) {
  console.error(`vserverd: ${(error as Error).message}`);
  process.exit(2);
}
