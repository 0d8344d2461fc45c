// The Host header check, for every request and WebSocket upgrade, before anything else: a web
// page whose name an attacker rebinds to this host's address (DNS rebinding) reaches vserverd
// as the same origin, so a request is answered only when it names this server as configured
// (config.ts, allowedHosts).

import type { IncomingHttpHeaders } from 'node:http';

/** The ports a browser leaves out of the Host header. */
const DEFAULT_PORTS = ['80', '443'];

function split(host: string): { name: string; port: string | null } {
  const match = /^(.*?)(?::(\d+))?$/.exec(host.toLowerCase())!;
  return { name: match[1], port: match[2] ?? null };
}

/**
 * Whether the Host header names one of `allowed`: an entry without a port matches on the port
 * the request came in on (`localPort`), one with a port (a proxy's) on that port; a header without
 * a port is port 80 or 443.
 */
export function hostAllowed(headers: IncomingHttpHeaders, allowed: readonly string[], localPort: number | undefined): boolean {
  const header = headers.host;
  if (!header) return false;
  const { name, port } = split(header);
  return allowed.some((entry) => {
    const wanted = split(entry);
    if (wanted.name !== name) return false;
    const ports = wanted.port ? [wanted.port] : [String(localPort)];
    return port === null ? ports.some((p) => DEFAULT_PORTS.includes(p)) : ports.includes(port);
  });
}

/** The refusal's text: short, plain, and saying what to change. */
export function hostRefusal(headers: IncomingHttpHeaders): string {
  const shown = (headers.host ?? '').replace(/[^\x20-\x7e]/g, '?').slice(0, 100);
  return `this server does not answer to the name "${shown}"; add it to allowedHosts (--allowed-host, VSERVER_ALLOWED_HOSTS) if it is one of its names\n`;
}
