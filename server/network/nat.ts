// nftables rules of a network, one table per network (`ip vserver_<bridge>`), so each is replaced
// and removed on its own, atomically (nft -f runs a script as one transaction). The table's comment
// holds a digest of what it was made from, so an unchanged table is left alone (adopted).
//   nat:      masquerade the subnet leaving by any other interface; forward it out, and only the
//             answers back in (the guests sit behind the host).
//   internal: the host's address on the bridge answers DHCP only; nothing is routed in or out.
//   host:     no table (the bridge is the LAN's).

import crypto from 'node:crypto';
import fs from 'node:fs';
import { mustRun, runCommand } from './command.js';
import { subnet, type DhcpSettings, type NetworkKind } from './dhcp-settings.js';
import { BRIDGE_PREFIX } from './names.js';

const TABLE_PREFIX = 'vserver_';
const DHCP_SERVER_PORT = 67;
/** Per network namespace: on a real host this is a host-wide switch, which a nat network turns on. */
const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

export function tableName(bridge: string): string {
  return `${TABLE_PREFIX}${bridge}`;
}

/** The rules of a network, or null when its kind has none. */
function rules(bridge: string, kind: NetworkKind, dhcp: DhcpSettings): string[] | null {
  const b = JSON.stringify(bridge);
  if (kind === 'nat') {
    const net = subnet(dhcp);
    return [
      'chain postrouting { type nat hook postrouting priority srcnat; policy accept;',
      `  ip saddr ${net} oifname != ${b} masquerade`,
      '}',
      'chain forward { type filter hook forward priority filter; policy accept;',
      `  iifname ${b} ip saddr ${net} oifname != ${b} accept`,
      `  oifname ${b} iifname != ${b} ct state established,related accept`,
      `  oifname ${b} iifname != ${b} drop`,
      '}',
    ];
  }
  if (kind === 'internal') {
    return [
      'chain input { type filter hook input priority filter; policy accept;',
      `  iifname ${b} udp dport ${DHCP_SERVER_PORT} accept`,
      `  iifname ${b} drop`,
      '}',
      // Only what is routed: with br_netfilter loaded, guest-to-guest frames pass this hook too (in and out the bridge).
      'chain forward { type filter hook forward priority filter; policy accept;',
      `  iifname ${b} oifname != ${b} drop`,
      `  oifname ${b} iifname != ${b} drop`,
      '}',
    ];
  }
  return null;
}

function digest(lines: string[]): string {
  return crypto.createHash('sha256').update(lines.join('\n')).digest('hex').slice(0, 16);
}

/**
 * What an existing table was made from: the digest in its comment and its number of rules ('' and 0
 * when it has none), or null when there is no such table. (nft 1.0's JSON leaves comments out.)
 */
async function tableState(bridge: string): Promise<{ digest: string; rules: number } | null> {
  const result = await runCommand('nft', ['list', 'table', 'ip', tableName(bridge)]);
  if (result.status !== 0) return null;
  const listing = JSON.parse(await mustRun('nft', ['-j', 'list', 'table', 'ip', tableName(bridge)])) as { nftables: { rule?: unknown }[] };
  return { digest: /^\s*comment "([0-9a-f]+)"/m.exec(result.stdout)?.[1] ?? '', rules: listing.nftables.filter((entry) => entry.rule).length };
}

/**
 * Makes the network's table hold exactly its rules. 'adopted' when it did already, 'created' or
 * 'updated' when written, 'removed' when its kind has none and one was there, null when nothing
 * was there nor needed.
 */
export async function applyRules(bridge: string, kind: NetworkKind, dhcp: DhcpSettings): Promise<'adopted' | 'created' | 'updated' | 'removed' | null> {
  const lines = rules(bridge, kind, dhcp);
  const existing = await tableState(bridge);
  if (!lines) {
    if (existing === null) return null;
    await removeRules(bridge);
    return 'removed';
  }
  const hash = digest(lines);
  if (kind === 'nat') await enableForwarding();
  const ruleCount = lines.filter((line) => line.startsWith('  ')).length;
  if (existing?.digest === hash && existing.rules === ruleCount) return 'adopted';
  const table = `ip ${tableName(bridge)}`;
  // "add" then "delete" makes the delete safe when the table is missing; all in one transaction.
  await mustRun('nft', ['-f', '-'], [`add table ${table}`, `delete table ${table}`, `table ${table} {`, `  comment "${hash}"`, ...lines.map((l) => `  ${l}`), '}', ''].join('\n'));
  return existing === null ? 'created' : 'updated';
}

export async function removeRules(bridge: string): Promise<void> {
  const table = `ip ${tableName(bridge)}`;
  await mustRun('nft', ['-f', '-'], `add table ${table}\ndelete table ${table}\n`);
}

/** The bridges that have a table of ours. */
export async function bridgesWithRules(): Promise<string[]> {
  const { nftables } = JSON.parse(await mustRun('nft', ['-j', 'list', 'tables', 'ip'])) as { nftables: { table?: { name: string } }[] };
  return nftables.map((entry) => entry.table?.name ?? '')
    .filter((name) => name.startsWith(`${TABLE_PREFIX}${BRIDGE_PREFIX}`))
    .map((name) => name.slice(TABLE_PREFIX.length));
}

async function enableForwarding(): Promise<void> {
  if ((await fs.promises.readFile(IP_FORWARD, 'utf8')).trim() !== '1') await fs.promises.writeFile(IP_FORWARD, '1\n');
}
