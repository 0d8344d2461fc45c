// The host's links through iproute2 (ip -json where there is output to read) and sysfs: bridges,
// persistent TAPs, ports, addresses and counters.

import fs from 'node:fs';
import { mustRun, runCommand } from './command.js';
import { isOurs } from './names.js';

/** What `ip -json -details link show` says of one link (the fields used here). */
export interface LinkInfo {
  ifname: string;
  address?: string;
  flags: string[];
  master?: string;
  linkinfo?: { info_kind?: string; info_data?: { type?: string } };
}

export interface AddressInfo { family: 'inet' | 'inet6'; local: string; prefixlen: number; scope: string }

export interface HostInterface { name: string; mac: string; up: boolean; addresses: string[] }

export interface InterfaceCounters {
  rxBytes: number; txBytes: number; rxPackets: number; txPackets: number; rxDropped: number; txDropped: number;
}

export function linkExists(name: string): boolean {
  return fs.existsSync(`/sys/class/net/${name}`);
}

export async function listLinks(): Promise<LinkInfo[]> {
  return JSON.parse(await mustRun('ip', ['-json', '-details', 'link', 'show'])) as LinkInfo[];
}

export async function link(name: string): Promise<LinkInfo | null> {
  const result = await runCommand('ip', ['-json', '-details', 'link', 'show', 'dev', name]);
  return result.status === 0 ? (JSON.parse(result.stdout) as LinkInfo[])[0] ?? null : null;
}

export function isUp(info: LinkInfo): boolean {
  return info.flags.includes('UP');
}

/** A bridge without spanning tree or forwarding delay, so a guest's first DHCP request gets through. */
export async function createBridge(name: string): Promise<void> {
  await mustRun('ip', ['link', 'add', 'name', name, 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
  await setUp(name, true);
}

/** Whether IPv6 is on for an interface (its own switch under /proc/sys/net/ipv6/conf). */
export function ipv6Enabled(name: string): boolean {
  try {
    return fs.readFileSync(`/proc/sys/net/ipv6/conf/${name}/disable_ipv6`, 'utf8').trim() === '0';
  } catch {
    return false; // no IPv6 on this host
  }
}

export async function disableIpv6(name: string): Promise<void> {
  await fs.promises.writeFile(`/proc/sys/net/ipv6/conf/${name}/disable_ipv6`, '1\n');
}

export async function deleteLink(name: string): Promise<void> {
  await mustRun('ip', ['link', 'delete', 'dev', name]);
}

/** A persistent TAP (it outlives the QEMU that opens it), owned by `user` so an unprivileged QEMU may open it. */
export async function createTap(name: string, user: string | null): Promise<void> {
  await mustRun('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap', ...(user ? ['user', user] : [])]);
}

/** The owner's uid of a TAP, or null when it has none (or is no TAP). */
export function tapOwner(name: string): number | null {
  try {
    const owner = Number(fs.readFileSync(`/sys/class/net/${name}/owner`, 'utf8'));
    return owner >= 0 ? owner : null;
  } catch {
    return null;
  }
}

export async function setMaster(name: string, bridge: string | null): Promise<void> {
  await mustRun('ip', ['link', 'set', 'dev', name, ...(bridge ? ['master', bridge] : ['nomaster'])]);
}

export async function setUp(name: string, up: boolean): Promise<void> {
  await mustRun('ip', ['link', 'set', 'dev', name, up ? 'up' : 'down']);
}

export async function addresses(name: string): Promise<AddressInfo[]> {
  const [entry] = JSON.parse(await mustRun('ip', ['-json', 'address', 'show', 'dev', name])) as { addr_info?: AddressInfo[] }[];
  return entry?.addr_info ?? [];
}

export async function addAddress(name: string, cidr: string): Promise<void> {
  await mustRun('ip', ['address', 'add', cidr, 'dev', name]);
}

export async function deleteAddress(name: string, cidr: string): Promise<void> {
  await mustRun('ip', ['address', 'delete', cidr, 'dev', name]);
}

/** The host's interfaces, leaving out loopback and vserver's own bridges and TAPs. */
export async function hostInterfaces(): Promise<HostInterface[]> {
  const links = await listLinks();
  const all = JSON.parse(await mustRun('ip', ['-json', 'address', 'show'])) as { ifname: string; addr_info?: AddressInfo[] }[];
  return links
    .filter((info) => !isOurs(info.ifname) && !info.flags.includes('LOOPBACK'))
    .map((info) => ({
      name: info.ifname,
      mac: info.address ?? '',
      up: isUp(info),
      addresses: (all.find((entry) => entry.ifname === info.ifname)?.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`),
    }));
}

/** An interface's own counters now (as the host sees them: rx is what came in on it), or null when it is gone. */
export function readCounters(name: string): InterfaceCounters | null {
  const read = (counter: string): number => Number(fs.readFileSync(`/sys/class/net/${name}/statistics/${counter}`, 'utf8'));
  try {
    return {
      rxBytes: read('rx_bytes'), txBytes: read('tx_bytes'), rxPackets: read('rx_packets'), txPackets: read('tx_packets'),
      rxDropped: read('rx_dropped'), txDropped: read('tx_dropped'),
    };
  } catch {
    return null;
  }
}
