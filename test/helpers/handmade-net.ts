// Networks made by hand inside a test's own namespace (never the root one): a Linux bridge with
// an address, TAPs on it, a dnsmasq serving DHCP on an interface, a busybox httpd. Used as the
// peer of vserver's networks (bench/net.ts), as a "LAN" a host-connected network bridges to, and
// to check the test guest's DHCP client with a bare QEMU.

import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Netns } from './netns.js';
import { waitFor } from './wait.js';

/** A bridge `name` in `ns`, up, holding `cidr` (e.g. "10.99.0.1/24") when given. */
export function makeBridge(ns: Netns, name: string, cidr?: string): void {
  ns.run('ip', ['link', 'add', name, 'type', 'bridge']);
  if (cidr) ns.run('ip', ['addr', 'add', cidr, 'dev', name]);
  ns.run('ip', ['link', 'set', name, 'up']);
}

/** A TAP `name` in `ns` (for a QEMU started in `ns`), enslaved to `bridge`, up. */
export function makeTap(ns: Netns, name: string, bridge: string): void {
  ns.run('ip', ['tuntap', 'add', name, 'mode', 'tap']);
  ns.run('ip', ['link', 'set', name, 'master', bridge]);
  ns.run('ip', ['link', 'set', name, 'up']);
}

export interface DhcpRange {
  start: string;
  end: string;
  mask: string;
  /** Lease time in seconds. */
  leaseSeconds: number;
  /** The default gateway offered; none when null. */
  router: string | null;
}

export interface Dnsmasq {
  process: ChildProcess;
  leaseFile: string;
  /** Lines of the lease file: "expiry mac address hostname client-id". */
  leases(): string[];
  stop(): void;
}

/**
 * A dnsmasq in `ns` serving DHCP (no DNS) on `iface` from `range`, its files in `dir`. It runs
 * in the foreground (--keep-in-foreground) as a child of the test, so it dies with `ns`.
 */
export async function startDnsmasq(ns: Netns, iface: string, range: DhcpRange, dir: string): Promise<Dnsmasq> {
  fs.mkdirSync(dir, { recursive: true });
  const leaseFile = path.join(dir, `${iface}.leases`);
  const log = path.join(dir, `${iface}.dnsmasq.log`);
  const args = [
    '--keep-in-foreground', '--conf-file=/dev/null', `--interface=${iface}`, '--bind-interfaces', '--except-interface=lo',
    '--port=0', `--dhcp-range=${range.start},${range.end},${range.mask},${range.leaseSeconds}`,
    `--dhcp-leasefile=${leaseFile}`, `--pid-file=${path.join(dir, `${iface}.dnsmasq.pid`)}`, `--log-facility=${log}`, '--log-dhcp',
    ...(range.router ? [`--dhcp-option=option:router,${range.router}`] : ['--dhcp-option=option:router']),
  ];
  const child = spawn('ip', ['netns', 'exec', ns.name, 'dnsmasq', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  await waitFor(`dnsmasq in ${ns.name} serving ${iface}`, () => {
    if (child.exitCode !== null) throw new Error(`dnsmasq in ${ns.name} exited (${child.exitCode}): ${stderr}`);
    return fs.existsSync(log) && fs.readFileSync(log, 'utf8').includes('DHCP, IP range');
  }, 10_000, 50);
  return {
    process: child,
    leaseFile,
    leases: () => (fs.existsSync(leaseFile) ? fs.readFileSync(leaseFile, 'utf8').split('\n').filter(Boolean) : []),
    stop: () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); },
  };
}

export interface Httpd {
  process: ChildProcess;
  /** What httpd logged (-vv: lines per request starting with the client's address and port). */
  log(): string;
  stop(): void;
}

/** A busybox httpd in `ns` on `address`:`port`, serving `dir` (foreground, a child of the test). */
export async function startHttpd(ns: Netns, address: string, port: number, dir: string): Promise<Httpd> {
  const child = spawn('ip', ['netns', 'exec', ns.name, 'busybox', 'httpd', '-f', '-vv', '-p', `${address}:${port}`, '-h', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => { log += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
  await waitFor(`busybox httpd in ${ns.name} listening on ${address}:${port}`, () => {
    if (child.exitCode !== null) throw new Error(`busybox httpd in ${ns.name} exited (${child.exitCode}): ${log}`);
    return ns.run('ss', ['-Hltn', `sport = :${port}`]).trim() !== '';
  }, 10_000, 100);
  return {
    process: child,
    log: () => log,
    stop: () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); },
  };
}
