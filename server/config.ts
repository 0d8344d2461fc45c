// vserverd's settings: built-in defaults, overridden by environment variables, then by flags.
// The defaults are the embedded ones: loopback only, a data folder beside the checkout.

import path from 'node:path';
import { parseArgs } from 'node:util';

export interface ServerConfig {
  host: string;
  port: number;
  dataDir: string;
}

export function loadConfig(argv: string[], env: NodeJS.ProcessEnv, projectRoot: string): ServerConfig {
  const { values } = parseArgs({
    args: argv,
    options: { host: { type: 'string' }, port: { type: 'string' }, data: { type: 'string' } },
    strict: true,
  });
  const host = values.host ?? env.VSERVER_HOST ?? '127.0.0.1';
  const portText = values.port ?? env.VSERVER_PORT ?? '8080';
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`port must be a whole number from 0 to 65535, not "${portText}" (--port or VSERVER_PORT)`);
  }
  const dataDir = path.resolve(values.data ?? env.VSERVER_DATA ?? path.join(projectRoot, 'data'));
  return { host, port, dataDir };
}
