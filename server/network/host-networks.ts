// The host parts of vserver's virtual networks, as vserverd makes and keeps them: per network a
// bridge, its addresses, the host adapter (kind host), nftables rules (kinds nat and internal) and
// a dnsmasq (DHCP on). Every step is idempotent and says what it did, so vserverd's start
// (reconcile) adopts what is there as it should be and mends the rest.

import fs from 'node:fs';
import path from 'node:path';
import { ApiError } from '../errors.js';
import { findCommand } from './command.js';
import { assertDhcp, gatewayOf, withPrefix, type DhcpSettings, type NetworkKind } from './dhcp-settings.js';
import { dnsmasqConf, dnsmasqFiles, dnsmasqsUnder, killDnsmasq, readLeases, runningPid, startDnsmasq, stopDnsmasq, type Lease } from './dnsmasq.js';
import { joinBridge, leaveBridge } from './host-adapter.js';
import {
  addAddress, addresses, createBridge, disableIpv6, ipv6Enabled, createTap, deleteAddress, deleteLink, hostInterfaces, isUp, link, linkExists, listLinks,
  readCounters, setMaster, setUp, type HostInterface, type InterfaceCounters,
} from './links.js';
import { applyRules, bridgesWithRules, removeRules } from './nat.js';
import { bridgeName, isOurBridge, isOurTap, isOurs } from './names.js';

export type { Lease } from './dnsmasq.js';
export type { HostInterface } from './links.js';

export interface NetworkSpec { id: string; name: string; kind: NetworkKind; hostAdapter: string | null; dhcp: DhcpSettings }

export interface PartReport {
  part: string;
  /** 'failed': reconcile could not make a network's parts (the message says why) and went on with the others. */
  action: 'created' | 'adopted' | 'recreated' | 'restarted' | 'removed' | 'updated' | 'failed';
  network?: string;
  message: string;
}

export interface HostNetworksOptions {
  /** <dataDir>/networks: one folder per network id. */
  stateDir: string;
  /** The user QEMU runs as, who must be able to open the TAPs; null: TAPs owned by nobody in particular (root's QEMU). */
  qemuUser: string | null;
  report: (report: PartReport) => void;
}

/** CAP_NET_ADMIN's bit in /proc/self/status's CapEff. */
const CAP_NET_ADMIN = 12;
const WATCH_INTERVAL_MS = 1_000;
/** A state folder's marker that the network's parts were made once (a missing bridge is then "recreated"). */
const APPLIED_FILE = 'applied.json';
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The host's own addresses on a network's bridge: the DHCP server's while DHCP is on; a nat network's gateway. */
function hostAddresses(spec: NetworkSpec): string[] {
  return [
    ...(spec.dhcp.enabled ? [withPrefix(spec.dhcp.serverAddress, spec.dhcp.networkMask)] : []),
    ...(spec.kind === 'nat' ? [withPrefix(gatewayOf(spec.dhcp), spec.dhcp.networkMask)] : []),
  ];
}

export class HostNetworks {
  private readonly applied = new Map<string, NetworkSpec>();
  private timer: NodeJS.Timeout | null = null;
  private watching = false;
  /** Networks whose dnsmasq would not start again: reported once, not every second. */
  private readonly failingDhcp = new Set<string>();
  /** Each network's last change, so changes of one network run one after another. */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(private readonly options: HostNetworksOptions) {}

  static async permission(): Promise<{ ok: boolean; reason: string }> {
    const missing: string[] = [];
    const status = await fs.promises.readFile('/proc/self/status', 'utf8');
    const capEff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)/m.exec(status)?.[1] ?? '0'}`);
    if (((capEff >> BigInt(CAP_NET_ADMIN)) & 1n) === 0n) missing.push('the capability CAP_NET_ADMIN (run vserverd as root)');
    for (const [command, pkg] of [['ip', 'iproute2'], ['dnsmasq', 'dnsmasq-base'], ['nft', 'nftables']]) {
      if (!findCommand(command)) missing.push(`the command ${command} (Debian package ${pkg})`);
    }
    return missing.length === 0
      ? { ok: true, reason: 'vserverd may make bridges, TAPs, NAT rules and DHCP servers' }
      : { ok: false, reason: `vserverd cannot make host parts of virtual networks: it lacks ${missing.join(', ')}` };
  }

  private folder(id: string): string {
    if (!UUID_PATTERN.test(id)) throw new ApiError('VM_E_NETWORK_UNKNOWN', `not a network id: ${id}`);
    return path.join(this.options.stateDir, id);
  }

  private say(reports: PartReport[], report: PartReport): void {
    reports.push(report);
    this.options.report(report);
  }

  /** Runs `change` after the network's earlier changes have ended. */
  private serialized<T>(id: string, change: () => Promise<T>): Promise<T> {
    const result = (this.queues.get(id) ?? Promise.resolve()).then(change, change);
    const settled = result.catch(() => undefined);
    this.queues.set(id, settled);
    void settled.then(() => { if (this.queues.get(id) === settled) this.queues.delete(id); });
    return result;
  }

  apply(spec: NetworkSpec): Promise<PartReport[]> {
    return this.serialized(spec.id, () => this.applyNow(spec));
  }

  private async applyNow(spec: NetworkSpec): Promise<PartReport[]> {
    assertDhcp(spec.dhcp);
    const reports: PartReport[] = [];
    const say = (part: string, action: PartReport['action'], message: string): void => this.say(reports, { part, action, network: spec.id, message });
    const bridge = bridgeName(spec.id);
    const folder = this.folder(spec.id);
    const adapter = spec.kind === 'host' ? spec.hostAdapter : null;
    if (spec.kind === 'host') await this.checkHostAdapter(adapter, bridge);
    const previous = await this.appliedSpec(folder);
    const madeBefore = previous !== null;
    await fs.promises.mkdir(folder, { recursive: true });

    // The bridge, up.
    const info = await link(bridge);
    if (!info) {
      await createBridge(bridge);
      say('bridge', madeBefore ? 'recreated' : 'created', `bridge ${bridge} ${madeBefore ? 'was missing and is made again' : 'made'}`);
    } else if (!isUp(info)) {
      await setUp(bridge, true);
      say('bridge', 'updated', `bridge ${bridge} was down and is up`);
    } else {
      say('bridge', 'adopted', `bridge ${bridge} is there`);
    }

    // No IPv6 on the bridges of nat and internal networks: the rules are IPv4's, and a link-local
    // address would let guests reach the host around them. A host-connected bridge is the LAN's.
    if (spec.kind !== 'host' && ipv6Enabled(bridge)) await disableIpv6(bridge);

    // Ports: TAPs stay; the host adapter joins (kind host); any other host interface leaves.
    const ports = (await listLinks()).filter((l) => l.master === bridge && !isOurTap(l.ifname));
    for (const port of ports.filter((p) => p.ifname !== adapter)) {
      await leaveBridge(port.ifname, bridge, folder);
      say('host adapter', 'removed', `${port.ifname} left bridge ${bridge}`);
    }
    if (adapter) {
      const joined = await joinBridge(adapter, bridge, folder);
      say('host adapter', joined ? 'created' : 'adopted', joined ? `${adapter} joined bridge ${bridge}, its addresses moved to the bridge` : `${adapter} is in bridge ${bridge}`);
    }

    // The host's addresses on the bridge: the DHCP server's while DHCP is on; a nat network's gateway.
    const wanted = new Set(hostAddresses(spec));
    const held = (await addresses(bridge)).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
    // A host-connected bridge also holds the host's LAN addresses (moved from its adapter): only
    // the addresses this network put there before are taken away.
    const ours = spec.kind === 'host' ? new Set(previous ? hostAddresses(previous) : []) : new Set(held);
    const extra = held.filter((a) => !wanted.has(a) && ours.has(a));
    const absent = [...wanted].filter((a) => !held.includes(a));
    for (const cidr of extra) await deleteAddress(bridge, cidr);
    for (const cidr of absent) await addAddress(bridge, cidr);
    if (extra.length || absent.length) say('address', held.length ? 'updated' : 'created', `bridge ${bridge} holds ${[...wanted].join(', ') || 'no address'}`);
    else if (wanted.size) say('address', 'adopted', `bridge ${bridge} holds ${[...wanted].join(', ')}`);

    // Rules.
    const rules = await applyRules(bridge, spec.kind, spec.dhcp);
    if (rules) say('rules', rules === 'created' && madeBefore ? 'recreated' : rules, `nftables table for ${bridge} (${spec.kind}): ${rules}`);

    // DHCP.
    await this.applyDhcp(spec, bridge, (action, message) => say('dhcp', action, message), madeBefore);

    await fs.promises.writeFile(path.join(folder, APPLIED_FILE), JSON.stringify(spec, null, 2));
    this.applied.set(spec.id, spec);
    return reports;
  }

  /** The spec the network's parts were last made from, or null when they never were. */
  private async appliedSpec(folder: string): Promise<NetworkSpec | null> {
    try {
      return JSON.parse(await fs.promises.readFile(path.join(folder, APPLIED_FILE), 'utf8')) as NetworkSpec;
    } catch {
      return null;
    }
  }

  private async checkHostAdapter(adapter: string | null, bridge: string): Promise<void> {
    if (!adapter) throw new ApiError('VM_E_HOST_ADAPTER_UNKNOWN', 'a host-connected network needs a host adapter');
    const info = adapter && !isOurs(adapter) ? await link(adapter) : null;
    if (!info || info.flags.includes('LOOPBACK')) {
      throw new ApiError('VM_E_HOST_ADAPTER_UNKNOWN', `the host has no network interface ${adapter} to connect a network to`, { hostAdapter: adapter });
    }
    if (info.master && info.master !== bridge) {
      throw new ApiError('VM_E_NETWORK_FAILED', `${adapter} is a port of ${info.master} already; a host adapter can serve one host-connected network`, { hostAdapter: adapter });
    }
  }

  private async applyDhcp(spec: NetworkSpec, bridge: string, say: (action: PartReport['action'], message: string) => void, madeBefore: boolean): Promise<void> {
    const files = dnsmasqFiles(this.folder(spec.id));
    if (!spec.dhcp.enabled) {
      if (await stopDnsmasq(files)) say('removed', `DHCP server of ${bridge} stopped (DHCP is off)`);
      return;
    }
    const conf = dnsmasqConf(bridge, spec.kind, spec.dhcp, files);
    let before: string | null = null;
    try {
      before = await fs.promises.readFile(files.conf, 'utf8');
    } catch { /* first time */ }
    const pid = runningPid(files);
    if (pid !== null && before === conf) {
      say('adopted', `DHCP server of ${bridge} runs (pid ${pid})`);
      return;
    }
    await fs.promises.writeFile(files.conf, conf);
    if (pid !== null) await stopDnsmasq(files);
    const started = await startDnsmasq(files);
    if (pid !== null) say('updated', `DHCP server of ${bridge} restarted with new settings (pid ${started})`);
    else if (madeBefore) say('restarted', `DHCP server of ${bridge} was not running and is started (pid ${started})`);
    else say('created', `DHCP server of ${bridge} started (pid ${started})`);
  }

  remove(id: string): Promise<void> {
    return this.serialized(id, () => this.removeNow(id));
  }

  private async removeNow(id: string): Promise<void> {
    const bridge = bridgeName(id);
    const folder = this.folder(id);
    this.applied.delete(id);
    await stopDnsmasq(dnsmasqFiles(folder));
    for (const port of (await listLinks()).filter((l) => l.master === bridge && !isOurTap(l.ifname))) await leaveBridge(port.ifname, bridge, folder);
    if (linkExists(bridge)) await deleteLink(bridge);
    await removeRules(bridge);
    await fs.promises.rm(folder, { recursive: true, force: true });
  }

  async ensureTap(tap: string, networkId: string | null): Promise<void> {
    await this.ensureTapReporting(tap, networkId, []);
  }

  private async ensureTapReporting(tap: string, networkId: string | null, reports: PartReport[]): Promise<void> {
    if (!isOurTap(tap)) throw new ApiError('VM_E_NETWORK_FAILED', `${tap} is not a name of vserver's TAPs`);
    const master = networkId ? bridgeName(networkId) : null;
    let info = await link(tap);
    const made = !info;
    if (!info) {
      await createTap(tap, this.options.qemuUser);
      info = await link(tap);
    }
    let changed = false;
    if ((info?.master ?? null) !== master) {
      if (master && !linkExists(master)) throw new ApiError('VM_E_NETWORK_FAILED', `the bridge ${master} of network ${networkId} does not exist (apply the network first)`);
      await setMaster(tap, master);
      changed = true;
    }
    if (!info || !isUp(info)) {
      await setUp(tap, true);
      changed = changed || !made;
    }
    const where = master ? `in bridge ${master}` : 'in no network';
    this.say(reports, { part: 'tap', action: made ? 'created' : changed ? 'updated' : 'adopted', ...(networkId ? { network: networkId } : {}), message: `TAP ${tap} ${where}` });
  }

  async removeTap(tap: string): Promise<void> {
    if (!isOurTap(tap)) throw new ApiError('VM_E_NETWORK_FAILED', `${tap} is not a name of vserver's TAPs`);
    if (linkExists(tap)) await deleteLink(tap);
  }

  async reconcile(specs: NetworkSpec[], taps: { name: string; network: string | null }[]): Promise<PartReport[]> {
    const reports: PartReport[] = [];
    const good = new Set<string>();
    for (const spec of specs) {
      try {
        reports.push(...await this.apply(spec));
        good.add(spec.id);
      } catch (error) {
        this.say(reports, { part: 'network', action: 'failed', network: spec.id, message: (error as Error).message });
      }
    }
    for (const tap of taps) {
      try {
        await this.ensureTapReporting(tap.name, tap.network !== null && good.has(tap.network) ? tap.network : null, reports);
      } catch (error) {
        this.say(reports, { part: 'tap', action: 'failed', ...(tap.network ? { network: tap.network } : {}), message: `TAP ${tap.name}: ${(error as Error).message}` });
      }
    }

    // What no spec or TAP names: our bridges, TAPs, tables, dnsmasqs and state folders.
    const bridges = new Set(specs.map((s) => bridgeName(s.id)));
    const tapNames = new Set(taps.map((t) => t.name));
    const ids = new Set(specs.map((s) => s.id));
    for (const info of await listLinks()) {
      if ((isOurBridge(info.ifname) && !bridges.has(info.ifname)) || (isOurTap(info.ifname) && !tapNames.has(info.ifname))) {
        await deleteLink(info.ifname);
        this.say(reports, { part: isOurTap(info.ifname) ? 'tap' : 'bridge', action: 'removed', message: `${info.ifname} belongs to no network or adapter: deleted` });
      }
    }
    for (const bridge of await bridgesWithRules()) {
      if (!bridges.has(bridge)) {
        await removeRules(bridge);
        this.say(reports, { part: 'rules', action: 'removed', message: `nftables table of ${bridge} deleted (no such network)` });
      }
    }
    for (const { pid, folder } of dnsmasqsUnder(this.options.stateDir)) {
      const id = path.basename(folder);
      const spec = specs.find((s) => s.id === id);
      if (!spec?.dhcp.enabled || runningPid(dnsmasqFiles(folder)) !== pid) {
        await killDnsmasq(pid);
        this.say(reports, { part: 'dhcp', action: 'removed', message: `dnsmasq ${pid} (${folder}) serves no network: stopped` });
      }
    }
    const folders = await fs.promises.readdir(this.options.stateDir, { withFileTypes: true }).catch(() => []);
    for (const entry of folders) {
      if (entry.isDirectory() && UUID_PATTERN.test(entry.name) && !ids.has(entry.name)) {
        await fs.promises.rm(path.join(this.options.stateDir, entry.name), { recursive: true, force: true });
        this.say(reports, { part: 'state', action: 'removed', message: `state folder of network ${entry.name} removed (no such network)` });
      }
    }
    return reports;
  }

  watch(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.mendDhcp(), WATCH_INTERVAL_MS);
    this.timer.unref();
  }

  /** Starts each applied network's dnsmasq that died (between the network's changes, never during one). */
  private async mendDhcp(): Promise<void> {
    if (this.watching) return;
    this.watching = true;
    try {
      for (const id of [...this.applied.keys()]) await this.serialized(id, () => this.mendDhcpOf(id));
    } finally {
      this.watching = false;
    }
  }

  private async mendDhcpOf(id: string): Promise<void> {
    const spec = this.applied.get(id);
    const files = dnsmasqFiles(this.folder(id));
    if (!spec?.dhcp.enabled || runningPid(files) !== null) return;
    const bridge = bridgeName(id);
    try {
      const pid = await startDnsmasq(files);
      this.failingDhcp.delete(id);
      this.options.report({ part: 'dhcp', action: 'restarted', network: id, message: `DHCP server of ${bridge} had stopped and is started again (pid ${pid})` });
    } catch (error) {
      if (this.failingDhcp.has(id)) return;
      this.failingDhcp.add(id);
      this.options.report({ part: 'dhcp', action: 'failed', network: id, message: `DHCP server of ${bridge} had stopped and does not start: ${(error as Error).message}` });
    }
  }

  async leases(id: string): Promise<Lease[]> {
    return readLeases(dnsmasqFiles(this.folder(id)));
  }

  counters(ifname: string): InterfaceCounters | null {
    return readCounters(ifname);
  }

  hostInterfaces(): Promise<HostInterface[]> {
    return hostInterfaces();
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
