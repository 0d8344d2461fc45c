// One dnsmasq per network with DHCP on, DHCP only (port=0: no DNS), bound to the network's bridge.
// It daemonizes itself, so it is no child of vserverd and outlives it; a new vserverd adopts it by
// its pid file and command line. Its lease file lives in the network's state folder, so leases
// survive restarts of either.

import fs from 'node:fs';
import path from 'node:path';
import { commandLine, isAlive, processesMentioning } from '../../host/process.js';
import { mustRun } from './command.js';
import { gatewayOf, type DhcpSettings, type NetworkKind } from './dhcp-settings.js';

export const STOP_TIME_LIMIT_MS = 3_000;

export interface DnsmasqFiles { conf: string; pid: string; leases: string }

export interface Lease { mac: string; address: string; hostname: string; /** ISO time; null for an infinite lease. */ expires: string | null }

export function dnsmasqFiles(folder: string): DnsmasqFiles {
  return { conf: path.join(folder, 'dnsmasq.conf'), pid: path.join(folder, 'dnsmasq.pid'), leases: path.join(folder, 'leases') };
}

/** The argument that names a network's dnsmasq (and finds it among the host's processes). */
function confArgument(files: DnsmasqFiles): string {
  return `--conf-file=${files.conf}`;
}

/** dnsmasq's configuration for a network's DHCP server. */
export function dnsmasqConf(bridge: string, kind: NetworkKind, dhcp: DhcpSettings, files: DnsmasqFiles): string {
  const router = kind === 'nat' ? gatewayOf(dhcp) : dhcp.defaultGateway;
  return [
    '# Written by vserver; rewritten whenever the network\'s DHCP settings change.',
    `interface=${bridge}`,
    'bind-interfaces',
    'port=0',
    'no-hosts',
    'no-resolv',
    'no-poll',
    'dhcp-authoritative',
    `dhcp-range=${dhcp.startingAddress},${dhcp.endingAddress},${dhcp.networkMask},${dhcp.leaseTime}`,
    // An option with no value is sent as none: dnsmasq would otherwise name itself the router.
    `dhcp-option=option:router${router ? `,${router}` : ''}`,
    ...(dhcp.dnsServers.length ? [`dhcp-option=option:dns-server,${dhcp.dnsServers.join(',')}`] : []),
    ...(dhcp.winsServers.length ? [`dhcp-option=option:netbios-ns,${dhcp.winsServers.join(',')}`] : []),
    `dhcp-option=option:T1,${dhcp.renewalTime}`,
    `dhcp-option=option:T2,${dhcp.rebindingTime}`,
    `dhcp-leasefile=${files.leases}`,
    `pid-file=${files.pid}`,
    '',
  ].join('\n');
}

/** The pid of the network's running dnsmasq, or null: the pid file's process, if its command line is ours. */
export function runningPid(files: DnsmasqFiles): number | null {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(files.pid, 'utf8').trim());
  } catch {
    return null;
  }
  return Number.isInteger(pid) && pid > 0 && isAlive(pid) && commandLine(pid).includes(confArgument(files)) ? pid : null;
}

/** Starts dnsmasq, which forks and returns once its daemon is ready (or fails with its message). */
export async function startDnsmasq(files: DnsmasqFiles): Promise<number> {
  await mustRun('dnsmasq', [confArgument(files)]);
  const pid = runningPid(files);
  if (pid === null) throw new Error(`dnsmasq started with ${files.conf} but left no running process in ${files.pid}`);
  return pid;
}

async function killAndWait(pid: number): Promise<void> {
  const deadline = Date.now() + STOP_TIME_LIMIT_MS;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  while (isAlive(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  if (isAlive(pid)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone meanwhile */ }
  }
}

/** Stops the network's dnsmasq; whether one was running. */
export async function stopDnsmasq(files: DnsmasqFiles): Promise<boolean> {
  const pid = runningPid(files);
  if (pid !== null) await killAndWait(pid);
  await fs.promises.rm(files.pid, { force: true });
  return pid !== null;
}

/** The dnsmasqs started for some state folder under `stateDir` (by command line), with that folder. */
export function dnsmasqsUnder(stateDir: string): { pid: number; folder: string }[] {
  const prefix = `--conf-file=${stateDir}${path.sep}`;
  return processesMentioning(prefix).map((pid) => {
    const argument = commandLine(pid).find((arg) => arg.startsWith(prefix)) ?? '';
    return { pid, folder: path.dirname(argument.slice('--conf-file='.length)) };
  });
}

export async function killDnsmasq(pid: number): Promise<void> {
  await killAndWait(pid);
}

/** The lease file as [{mac, address, hostname, expires}] (dnsmasq's format: expiry mac address hostname client-id). */
export function readLeases(files: DnsmasqFiles): Lease[] {
  let text: string;
  try {
    text = fs.readFileSync(files.leases, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').map((line) => line.trim().split(/\s+/)).filter((fields) => fields.length >= 4 && /^\d+$/.test(fields[0]))
    .map(([expiry, mac, address, hostname]) => ({
      mac: mac.toUpperCase(),
      address,
      hostname: hostname === '*' ? '' : hostname,
      expires: expiry === '0' ? null : new Date(Number(expiry) * 1000).toISOString(),
    }));
}
