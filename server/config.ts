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
  /** This host's place in a cluster (docs/cluster.md), or null: a single host, as before. */
  cluster: ClusterConfig | null;
}

/** The cluster settings: flags, VSERVER_* variables, or the config file's "cluster" object. */
export interface ClusterConfig {
  /** The cluster's name: its keys live under /vserver/<name>/ in etcd. */
  name: string;
  /** etcd client URLs (http(s)://HOST:PORT). */
  etcd: string[];
  /** This host's name in the cluster, unique among live hosts. */
  hostName: string;
  /** Where the other hosts reach this host's API (HOST:PORT). */
  hostAddress: string;
  /** Folders mounted at the same path on every host (NFS, a cluster file system, CephFS): HA VMs live there. */
  sharedStorage: string[];
  /** Whether vserverd refuses to start without etcd (true) or starts as a single host with a warning (false). */
  required: boolean;
  /**
   * The secret every host of the cluster shares, read from a file (never a flag: the command line
   * is visible to every user of the host). It signs calls one host forwards to another
   * (server/auth/host-signatures.ts); null: this host neither forwards nor accepts forwarded calls.
   */
  secret: string | null;
}

/** The shortest cluster secret accepted, in characters (`openssl rand -hex 32` gives 64). */
export const CLUSTER_SECRET_MIN = 32;

export class ConfigError extends Error {}

const FILE_KEYS = ['host', 'port', 'dataDir', 'storageRoots', 'allowedOrigins', 'allowedHosts', 'sessionTimeoutMinutes', 'thumbnailSeconds', 'adminUser', 'hostNetworks', 'cluster'] as const;
const CLUSTER_KEYS = ['name', 'etcd', 'hostName', 'hostAddress', 'sharedStorage', 'required', 'secretFile'] as const;

export const USAGE = `usage: node dist/server/main.js [--config FILE] [--host ADDRESS] [--port N] [--data FOLDER] [--storage-root FOLDER ...] [--allowed-host NAME ...] [--no-host-networks]
       [--cluster NAME --etcd URL[,URL] --host-name NAME --host-address HOST:PORT [--shared-storage DIR ...] [--cluster-optional] [--cluster-secret-file FILE]]
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
  --cluster NAME        join the cluster NAME (letters a-z, digits, -); its keys are /vserver/NAME/ in etcd
                                                                      (VSERVER_CLUSTER, "cluster": {"name"})
  --etcd URL[,URL]      etcd's client URLs, http(s)://HOST:PORT         (VSERVER_ETCD, comma-separated, "cluster": {"etcd"})
  --host-name NAME      this host's name in the cluster (a-z, 0-9, -); the machine's name unless set
                                                                      (VSERVER_HOST_NAME, "cluster": {"hostName"})
  --host-address HOST:PORT  where the other hosts reach this host's API; HOST:the port unless set
                                                                      (VSERVER_HOST_ADDRESS, "cluster": {"hostAddress"})
  --shared-storage DIR  a folder at the same path on every host (NFS, cluster FS, CephFS); HA VMs live there
                        (repeat for more)                             (VSERVER_SHARED_STORAGE, colon-separated, "cluster": {"sharedStorage"})
  --cluster-optional    start as a single host, with a warning, when etcd cannot be reached (else vserverd stops)
                                                                      (VSERVER_CLUSTER_OPTIONAL=1, "cluster": {"required": false})
  --cluster-secret-file FILE  a file holding the secret every host of the cluster shares (at least ${CLUSTER_SECRET_MIN} characters);
                        it signs the API calls one host forwards to another; without it none is forwarded
                                                                      (VSERVER_CLUSTER_SECRET_FILE, "cluster": {"secretFile"})
  VSERVER_ADMIN_PASSWORD sets the first administrator's password (else one is generated and shown once).`;

export function loadConfig(argv: string[], env: NodeJS.ProcessEnv, projectRoot: string): ServerConfig {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, data: { type: 'string' },
        'storage-root': { type: 'string', multiple: true }, 'allowed-host': { type: 'string', multiple: true }, 'no-host-networks': { type: 'boolean' },
        cluster: { type: 'string' }, etcd: { type: 'string' }, 'host-name': { type: 'string' }, 'host-address': { type: 'string' },
        'shared-storage': { type: 'string', multiple: true }, 'cluster-optional': { type: 'boolean' }, 'cluster-secret-file': { type: 'string' }, help: { type: 'boolean', short: 'h' },
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
  const cluster = clusterSettings(values, env, file.cluster, fromFile, host, port);
  // The other hosts of the cluster call this one by its cluster address.
  const allowedHosts = [...new Set([...defaultHosts(host), ...extraHosts, ...(cluster ? [cluster.hostAddress] : [])].map((h) => h.toLowerCase()))];
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
  return { host, port, dataDir, storageRoots: roots, allowedOrigins, allowedHosts, sessionTimeoutMinutes, thumbnailSeconds, adminUser, hostNetworks, cluster };
}

/** A cluster's or a host's name (put_HighAvailability's preferredHosts are checked against it too). */
export const CLUSTER_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
const ETCD_URL = /^https?:\/\/(?:[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]):\d{1,5}\/?$/i;
const HOST_PORT = /^(?:[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]):(\d{1,5})$/i;

interface ClusterFlags { cluster?: string; etcd?: string; 'host-name'?: string; 'host-address'?: string; 'shared-storage'?: string[]; 'cluster-optional'?: boolean; 'cluster-secret-file'?: string }

/** The cluster settings, or null when none is given; a partial or malformed set is a ConfigError. */
function clusterSettings(values: ClusterFlags, env: NodeJS.ProcessEnv, fileValue: unknown, fromFile: (p: unknown) => string, listenHost: string, port: number): ClusterConfig | null {
  if (fileValue !== undefined && (typeof fileValue !== 'object' || fileValue === null || Array.isArray(fileValue))) throw new ConfigError('"cluster" in the config file must be an object with name, etcd, hostName, hostAddress, sharedStorage, required');
  const file = (fileValue ?? {}) as Record<string, unknown>;
  const unknown = Object.keys(file).filter((k) => !(CLUSTER_KEYS as readonly string[]).includes(k));
  if (unknown.length) throw new ConfigError(`"cluster" in the config file: unknown setting${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => `"${k}"`).join(', ')} (known: ${CLUSTER_KEYS.join(', ')})`);
  const name = values.cluster ?? env.VSERVER_CLUSTER ?? stringSetting(file.name, 'cluster.name');
  const etcdText = values.etcd ?? env.VSERVER_ETCD;
  const etcd = etcdText !== undefined ? etcdText.split(',').map((u) => u.trim()).filter(Boolean) : file.etcd !== undefined ? listSetting(file.etcd, 'cluster.etcd') : undefined;
  const secretFile = values['cluster-secret-file'] ?? env.VSERVER_CLUSTER_SECRET_FILE ?? (file.secretFile !== undefined ? fromFile(stringSetting(file.secretFile, 'cluster.secretFile')) : undefined);
  const given = [values['host-name'] ?? env.VSERVER_HOST_NAME ?? file.hostName, values['host-address'] ?? env.VSERVER_HOST_ADDRESS ?? file.hostAddress, values['shared-storage'] ?? env.VSERVER_SHARED_STORAGE ?? file.sharedStorage, secretFile];
  if (name === undefined && etcd === undefined) {
    if (given.some((v) => v !== undefined) || values['cluster-optional']) throw new ConfigError('--host-name, --host-address, --shared-storage, --cluster-secret-file and --cluster-optional need --cluster NAME and --etcd URL (or VSERVER_CLUSTER and VSERVER_ETCD, or "cluster" in the config file)');
    return null;
  }
  if (name === undefined) throw new ConfigError('--etcd needs --cluster NAME (VSERVER_CLUSTER or "cluster": {"name"}): the cluster\'s name');
  if (etcd === undefined || etcd.length === 0) throw new ConfigError(`the cluster "${name}" needs etcd's client URLs: --etcd URL[,URL] (VSERVER_ETCD or "cluster": {"etcd"})`);
  if (!CLUSTER_NAME.test(name)) throw new ConfigError(`the cluster name "${name}" may hold only a-z, 0-9 and - (not first or last) (--cluster, VSERVER_CLUSTER or "cluster": {"name"})`);
  const badUrl = etcd.find((u) => !ETCD_URL.test(u));
  if (badUrl !== undefined) throw new ConfigError(`"${badUrl}" is not an etcd client URL of the form http(s)://HOST:PORT (--etcd, VSERVER_ETCD or "cluster": {"etcd"})`);
  const hostName = values['host-name'] ?? env.VSERVER_HOST_NAME ?? stringSetting(file.hostName, 'cluster.hostName') ?? os.hostname().toLowerCase().split('.')[0]!;
  if (!CLUSTER_NAME.test(hostName)) throw new ConfigError(`the host name "${hostName}" may hold only a-z, 0-9 and - (not first or last) (--host-name, VSERVER_HOST_NAME or "cluster": {"hostName"})`);
  const shownHost = listenHost.includes(':') ? `[${listenHost}]` : listenHost;
  const hostAddress = values['host-address'] ?? env.VSERVER_HOST_ADDRESS ?? stringSetting(file.hostAddress, 'cluster.hostAddress') ?? `${shownHost}:${port}`;
  const addressMatch = HOST_PORT.exec(hostAddress);
  if (!addressMatch || Number(addressMatch[2]) > 65535) throw new ConfigError(`the host address "${hostAddress}" must be HOST:PORT (--host-address, VSERVER_HOST_ADDRESS or "cluster": {"hostAddress"})`);
  const sharedStorage = values['shared-storage']?.length ? values['shared-storage'].map((d) => path.resolve(d))
    : env.VSERVER_SHARED_STORAGE ? env.VSERVER_SHARED_STORAGE.split(':').filter(Boolean).map((d) => path.resolve(d))
      : file.sharedStorage !== undefined ? listSetting(file.sharedStorage, 'cluster.sharedStorage').map(fromFile) : [];
  if (file.required !== undefined && typeof file.required !== 'boolean') throw new ConfigError(`"cluster": {"required"} must be true or false, not ${JSON.stringify(file.required)}`);
  if (env.VSERVER_CLUSTER_OPTIONAL !== undefined && !['0', '1'].includes(env.VSERVER_CLUSTER_OPTIONAL)) throw new ConfigError(`VSERVER_CLUSTER_OPTIONAL must be 0 or 1, not "${env.VSERVER_CLUSTER_OPTIONAL}"`);
  const required = values['cluster-optional'] ? false : env.VSERVER_CLUSTER_OPTIONAL !== undefined ? env.VSERVER_CLUSTER_OPTIONAL !== '1' : file.required ?? true;
  return { name, etcd: etcd.map((u) => u.replace(/\/$/, '')), hostName, hostAddress, sharedStorage, required, secret: secretFile === undefined ? null : readSecret(secretFile) };
}

function readSecret(file: string): string {
  let secret: string;
  try {
    secret = fs.readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new ConfigError(`cannot read the cluster secret file ${file}: ${(e as Error).message} (--cluster-secret-file, VSERVER_CLUSTER_SECRET_FILE or "cluster": {"secretFile"})`, { cause: e });
  }
  if (secret.length < CLUSTER_SECRET_MIN) throw new ConfigError(`the cluster secret in ${file} has ${secret.length} characters; it needs at least ${CLUSTER_SECRET_MIN} (openssl rand -hex 32 makes one)`);
  return secret;
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
