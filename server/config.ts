// vserverd's settings: built-in defaults, then a JSON config file (--config or VSERVER_CONFIG),
// then environment variables, then flags. The defaults are the embedded ones: loopback only, a
// data folder beside the checkout, that folder as the only storage root.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

export interface ServerConfig {
  host: string;
  port: number;
  dataDir: string;
  /** Folders every path given to the API must lie in; the first is where relative paths start. */
  storageRoots: string[];
  /** Browser origins (besides the server's own) allowed to open the WebSocket. */
  allowedOrigins: string[];
  /**
   * The names and addresses requests may carry in their Host header (NAME, or NAME:PORT for a
   * proxy's port; without a port, the port listened on). Anything else is refused, so that a
   * web page whose name was rebound to this host's address (DNS rebinding) cannot reach it.
   */
  allowedHosts: string[];
  /** Idle minutes before a browser session ends. */
  sessionTimeoutMinutes: number;
  /** Seconds between refreshes of Master Status's thumbnails (Virtual Server's "refresh interval"). */
  thumbnailSeconds: number;
  adminUser: string;
  /** Whether virtual networks get their host parts (bridges, TAPs, dnsmasq, nftables); off, networks exist only in the catalog. */
  hostNetworks: boolean;
}

export class ConfigError extends Error {}

const FILE_KEYS = ['host', 'port', 'dataDir', 'storageRoots', 'allowedOrigins', 'allowedHosts', 'sessionTimeoutMinutes', 'thumbnailSeconds', 'adminUser', 'hostNetworks'] as const;

export const USAGE = `usage: node dist/server/main.js [--config FILE] [--host ADDRESS] [--port N] [--data FOLDER] [--storage-root FOLDER ...] [--allowed-host NAME ...] [--no-host-networks]
  --config FILE         a JSON file with any of: ${FILE_KEYS.join(', ')}   (VSERVER_CONFIG)
  --host ADDRESS        the address to listen on; 127.0.0.1 unless set          (VSERVER_HOST)
  --port N              the port; 8080 unless set, 0 for any free one          (VSERVER_PORT)
  --data FOLDER         catalog, VMs and disks; ./data in the checkout         (VSERVER_DATA)
  --storage-root DIR    a folder API paths may use (repeat for more); the data folder unless set
                                                                      (VSERVER_STORAGE_ROOTS, colon-separated)
  --allowed-host NAME   a further name (or NAME:PORT) browsers and clients may reach this server by
                        (repeat for more); this host's name and the listen address are always allowed,
                        and localhost, 127.0.0.1 and [::1] when listening on loopback or on every address
                                                                      (VSERVER_ALLOWED_HOSTS, comma-separated)
  --no-host-networks    virtual networks without host parts (no bridge, TAP, dnsmasq or NAT rule is made);
                        they are made when vserverd has CAP_NET_ADMIN unless this is set
                                                                      (VSERVER_HOST_NETWORKS=0, "hostNetworks": false)
  VSERVER_ADMIN_PASSWORD sets the first administrator's password (else one is generated and shown once).`;

export function loadConfig(argv: string[], env: NodeJS.ProcessEnv, projectRoot: string): ServerConfig {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, data: { type: 'string' },
        'storage-root': { type: 'string', multiple: true }, 'allowed-host': { type: 'string', multiple: true }, 'no-host-networks': { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (e) {
    throw new ConfigError(`${(e as Error).message}\n${USAGE}`, { cause: e });
  }
  if (values.help) throw new ConfigError(USAGE);
  const file = readConfigFile(values.config ?? env.VSERVER_CONFIG);
  const fileDir = values.config ?? env.VSERVER_CONFIG ? path.dirname(path.resolve(values.config ?? env.VSERVER_CONFIG!)) : process.cwd();
  const fromFile = (p: unknown): string => path.resolve(fileDir, String(p));

  const host = values.host ?? env.VSERVER_HOST ?? stringSetting(file.host, 'host') ?? '127.0.0.1';
  const portText = values.port ?? env.VSERVER_PORT ?? (file.port === undefined ? '8080' : String(file.port));
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65535) throw new ConfigError(`port must be a whole number from 0 to 65535, not "${portText}" (--port, VSERVER_PORT or "port")`);
  const dataDir = path.resolve(values.data ?? env.VSERVER_DATA ?? (file.dataDir !== undefined ? fromFile(stringSetting(file.dataDir, 'dataDir')) : path.join(projectRoot, 'data')));
  const roots = values['storage-root']?.length ? values['storage-root'].map((r) => path.resolve(r))
    : env.VSERVER_STORAGE_ROOTS ? env.VSERVER_STORAGE_ROOTS.split(':').filter(Boolean).map((r) => path.resolve(r))
      : file.storageRoots !== undefined ? listSetting(file.storageRoots, 'storageRoots').map(fromFile) : [dataDir];
  if (roots.length === 0) throw new ConfigError('at least one storage root is needed');
  const allowedOrigins = file.allowedOrigins !== undefined ? listSetting(file.allowedOrigins, 'allowedOrigins') : [];
  const extraHosts = values['allowed-host']?.length ? values['allowed-host']
    : env.VSERVER_ALLOWED_HOSTS ? env.VSERVER_ALLOWED_HOSTS.split(',').map((h) => h.trim()).filter(Boolean)
      : file.allowedHosts !== undefined ? listSetting(file.allowedHosts, 'allowedHosts') : [];
  const badHost = extraHosts.find((h) => !HOST_ENTRY.test(h));
  if (badHost !== undefined) throw new ConfigError(`"${badHost}" is not a host name or address, with an optional :PORT (--allowed-host, VSERVER_ALLOWED_HOSTS or "allowedHosts")`);
  const allowedHosts = [...new Set([...defaultHosts(host), ...extraHosts].map((h) => h.toLowerCase()))];
  const minutesText = env.VSERVER_SESSION_MINUTES ?? (file.sessionTimeoutMinutes === undefined ? '30' : String(file.sessionTimeoutMinutes));
  const sessionTimeoutMinutes = Number(minutesText);
  if (!Number.isInteger(sessionTimeoutMinutes) || sessionTimeoutMinutes < 1 || sessionTimeoutMinutes > 7 * 24 * 60) {
    throw new ConfigError(`sessionTimeoutMinutes must be a whole number of minutes from 1 to 10080, not "${minutesText}"`);
  }
  const thumbnailText = env.VSERVER_THUMBNAIL_SECONDS ?? (file.thumbnailSeconds === undefined ? '5' : String(file.thumbnailSeconds));
  const thumbnailSeconds = Number(thumbnailText);
  if (!Number.isInteger(thumbnailSeconds) || thumbnailSeconds < 1 || thumbnailSeconds > 3600) {
    throw new ConfigError(`thumbnailSeconds must be a whole number of seconds from 1 to 3600, not "${thumbnailText}"`);
  }
  const adminUser = env.VSERVER_ADMIN_USER ?? stringSetting(file.adminUser, 'adminUser') ?? 'admin';
  if (file.hostNetworks !== undefined && typeof file.hostNetworks !== 'boolean') throw new ConfigError(`hostNetworks must be true or false, not ${JSON.stringify(file.hostNetworks)}`);
  if (env.VSERVER_HOST_NETWORKS !== undefined && !['0', '1'].includes(env.VSERVER_HOST_NETWORKS)) throw new ConfigError(`VSERVER_HOST_NETWORKS must be 0 or 1, not "${env.VSERVER_HOST_NETWORKS}"`);
  const hostNetworks = values['no-host-networks'] ? false : env.VSERVER_HOST_NETWORKS !== undefined ? env.VSERVER_HOST_NETWORKS === '1' : file.hostNetworks ?? true;
  return { host, port, dataDir, storageRoots: roots, allowedOrigins, allowedHosts, sessionTimeoutMinutes, thumbnailSeconds, adminUser, hostNetworks };
}

/** A Host header's form: a name or IPv4 address, or an IPv6 address in brackets; then an optional port. */
const HOST_ENTRY = /^(?:[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i;
const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];
const WILDCARDS = ['0.0.0.0', '::'];

/** The names a client may use without configuration: the listen address, this host's name, and loopback's names where loopback reaches the server. */
function defaultHosts(host: string): string[] {
  const address = host.includes(':') ? `[${host}]` : host;
  const loopback = host === 'localhost' || host === '::1' || host.startsWith('127.') || WILDCARDS.includes(host);
  return [...(WILDCARDS.includes(host) ? [] : [address]), os.hostname(), ...(loopback ? LOOPBACK_NAMES : [])];
}

function readConfigFile(file: string | undefined): Record<string, unknown> {
  if (!file) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`cannot read the config file ${file}: ${(e as Error).message}`, { cause: e });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError(`${file} must hold a JSON object`);
  const unknown = Object.keys(parsed).filter((k) => !(FILE_KEYS as readonly string[]).includes(k));
  if (unknown.length) throw new ConfigError(`${file}: unknown setting${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `"${k}"`).join(', ')} (known: ${FILE_KEYS.join(', ')})`);
  return parsed as Record<string, unknown>;
}

function stringSetting(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !value) throw new ConfigError(`"${name}" in the config file must be a non-empty string`);
  return value;
}

function listSetting(value: unknown, name: string): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string' || !v)) throw new ConfigError(`"${name}" in the config file must be a list of strings`);
  return value as string[];
}
