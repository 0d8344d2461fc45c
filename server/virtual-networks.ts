// The virtual networks as vserverd runs them (services.networks): the catalog's networks
// (network-repository.ts) and their host parts (network/host-networks.ts: a bridge each, a TAP
// per adapter, dnsmasq, nftables), kept in step. The host parts are not vserverd's children: they
// go on carrying frames while vserverd restarts, and each start adopts them (or makes again what
// is missing) and logs what it did. Without CAP_NET_ADMIN, or with host networks turned off in the
// configuration, the catalog's networks still exist; what needs a host part is refused with
// VM_E_NETWORK_NOT_PERMITTED, saying why.

import { EventEmitter } from 'node:events';
import path from 'node:path';
import { type NetworkAdapter, randomMac, tapName } from '../vmm/config.js';
import { isActive } from '../vmm/state.js';
import { QEMU_USER } from '../vmm/worker/user.js';
import type { Catalog } from './catalog/database.js';
import { ApiError, invalidParams } from './errors.js';
import type { Severity } from './event-log.js';
import type { Machines, VmRecord } from './machines.js';
import { adapterCounters, NetworkCounters } from './network/counters.js';
import { assertDhcp, defaultDhcp, type DhcpSettings, overlapping } from './network/dhcp-settings.js';
import { HostNetworks, type Lease, type NetworkSpec, type PartReport } from './network/host-networks.js';
import { type HostInterface, hostInterfaces } from './network/links.js';
import { type CounterName, type Counters, FIRST_NETWORK, type NetworkKind, type NetworkRecord } from './network-record.js';
import { NetworkRepository } from './network-repository.js';

export interface AdapterOf { vm: VmRecord; index: number }
export interface NetworkChangeEvent { network: NetworkRecord; change: 'created' | 'changed' | 'removed' }
export type NetworkLog = (severity: Severity, message: string, object: string | null) => void;

/** How often the counters are sampled; the histories hold one value per interval. */
const SAMPLE_MS = 5_000;
const FIRST_START_SETTING = 'firstNetworkCreated';

export class VirtualNetworks extends EventEmitter<{ change: [NetworkChangeEvent] }> {
  private readonly repository: NetworkRepository;
  private sampler: NodeJS.Timeout | null = null;

  private constructor(
    db: Catalog, folder: string, private readonly machines: Machines, private readonly host: HostNetworks | null,
    private readonly counters: NetworkCounters, private readonly hostRefusal: string, private readonly hostName: string, private readonly log: NetworkLog,
  ) {
    super();
    this.repository = new NetworkRepository(db, folder);
  }

  /**
   * `enabled`: the configuration's hostNetworks; even then, host parts need CAP_NET_ADMIN and ip,
   * dnsmasq and nft. `hostName`: this host's, as the event log names it to a cluster's users.
   */
  static async open(db: Catalog, dataDir: string, machines: Machines, enabled: boolean, hostName: string, log: NetworkLog): Promise<VirtualNetworks> {
    const folder = path.join(dataDir, 'networks');
    const permission = enabled ? await HostNetworks.permission()
      : { ok: false, reason: 'host networks are turned off in vserverd\'s configuration (--no-host-networks)' };
    const severity = (r: PartReport): Severity => (r.action === 'failed' ? 'Error' : r.action === 'restarted' || r.action === 'recreated' ? 'Warning' : 'Information');
    const report = (r: PartReport): void => log(severity(r), r.message, r.network ? `VirtualNetwork/${r.network}` : null);
    const host = permission.ok ? new HostNetworks({ stateDir: folder, qemuUser: process.geteuid?.() === 0 ? QEMU_USER : null, report }) : null;
    return new VirtualNetworks(db, folder, machines, host, new NetworkCounters(folder), permission.reason, hostName, log);
  }

  /** At vserverd's start: the first network, the .vnc files, then the host parts adopted or made again. */
  async start(): Promise<void> {
    if (this.repository.setting(FIRST_START_SETTING) === null) {
      if (!this.findByName(FIRST_NETWORK.name)) await this.create(FIRST_NETWORK.name, FIRST_NETWORK.kind, null);
      this.repository.setSetting(FIRST_START_SETTING, new Date().toISOString());
    }
    for (const file of await this.repository.repairVncFiles()) this.log('Information', `rewrote ${file} from the catalog: it did not hold its network`, null);
    // .vmc files from before adapters kept their network's name get it, so that another host can find the network.
    for (const vm of this.machines.list()) await this.bindAdapters(vm, false).catch((e: Error) => this.bindFailed(vm, e));
    if (!this.host) {
      this.log('Warning', `virtual networks have no host parts: ${this.hostRefusal}`, null);
      return;
    }
    try {
      await this.host.reconcile(this.list().map(specOf), this.allTaps());
    } catch (e) {
      this.log('Error', `could not bring every network's host parts back: ${(e as Error).message}`, null);
    }
    this.host.watch();
    this.sampler = setInterval(() => this.sample(), SAMPLE_MS).unref();
  }

  /** Stops watching and sampling; every host part stays as it is, carrying frames. */
  close(): void {
    if (this.sampler) clearInterval(this.sampler);
    this.host?.close();
  }

  get hostPartsEnabled(): boolean { return this.host !== null; }

  list(): NetworkRecord[] { return this.repository.list(); }
  get(id: string): NetworkRecord | null { return this.repository.get(id); }
  require(id: string): NetworkRecord { return this.repository.require(id); }
  findByName(name: string): NetworkRecord | null { return this.repository.findByName(name); }

  async create(name: string, kind: NetworkKind, hostAdapter: string | null): Promise<NetworkRecord> {
    const adapter = await this.checkHostAdapter(kind, hostAdapter, null);
    const dhcp = defaultDhcp(kind, this.list().map((n) => n.dhcp));
    const network = await this.repository.create({ name, kind, hostAdapter: adapter, notes: '', dhcp });
    await this.applyOrUndo(network, () => this.repository.remove(network.id, true));
    this.announce(network, 'created', `created the virtual network ${network.name} (${kind}${adapter ? ` on ${adapter}` : ''})`);
    return network;
  }

  /** Adds a network from its .vnc (written here or on another host); the file is left as it is. */
  async register(file: string): Promise<NetworkRecord> {
    const network = await this.repository.register(file);
    try {
      this.refuseOverlap(network.id, network.dhcp);
      if (network.hostAdapter) await this.checkHostAdapter(network.kind, network.hostAdapter, network.id);
    } catch (e) {
      await this.repository.remove(network.id, false);
      throw e;
    }
    await this.applyOrUndo(network, () => this.repository.remove(network.id, false));
    this.announce(network, 'created', `registered the virtual network ${network.name} from ${file}`);
    return network;
  }

  /** Unregisters (the .vnc stays) or deletes (the .vnc goes too); refused while adapters are attached. */
  async remove(id: string, deleteFile: boolean): Promise<void> {
    const network = this.require(id);
    const attached = this.adaptersOf(id);
    if (attached.length) {
      const names = attached.map(({ vm, index }) => `adapter ${index} of ${vm.name}`);
      throw new ApiError('VM_E_NETWORK_IN_USE', `${network.name} has adapters attached: ${names.join(', ')}; detach them first`,
        { adapters: attached.map(({ vm, index }) => `NetworkAdapter/${vm.id}/${index}`) });
    }
    await this.host?.remove(id);
    this.counters.forget(id);
    await this.repository.remove(id, deleteFile);
    this.announce(network, 'removed', `${deleteFile ? 'deleted' : 'unregistered'} the virtual network ${network.name}`);
  }

  /** Renames; the attached adapters' .vmc files take the new name (the name is what other hosts match). */
  async rename(id: string, name: string): Promise<void> {
    const before = this.require(id);
    const network = await this.repository.change(id, { name });
    this.announce(network, 'changed', `renamed the virtual network ${before.name} to ${network.name}`);
    const vms = new Set(this.adaptersOf(id).map(({ vm }) => vm));
    for (const vm of vms) await this.bindAdapters(vm, false).catch((e: Error) => this.bindFailed(vm, e));
  }

  async setNotes(id: string, notes: string): Promise<void> {
    const network = await this.repository.change(id, { notes });
    this.announce(network, 'changed', `changed the notes of ${network.name}`);
  }

  async setHostAdapter(id: string, hostAdapter: string | null): Promise<void> {
    const before = this.require(id);
    const adapter = await this.checkHostAdapter(before.kind, hostAdapter, id);
    const network = await this.repository.change(id, { hostAdapter: adapter });
    await this.applyOrUndo(network, async () => { await this.repository.change(id, { hostAdapter: before.hostAdapter }); });
    this.announce(network, 'changed', `${network.name} is bridged to ${adapter ?? 'no host interface'}`);
  }

  /** Changes the DHCP server's settings; checked whole, refused whole, then applied to dnsmasq. */
  async configureDhcp(id: string, change: Partial<DhcpSettings>): Promise<void> {
    const before = this.require(id);
    const dhcp: DhcpSettings = { ...before.dhcp, ...change };
    assertDhcp(dhcp);
    this.refuseOverlap(id, dhcp);
    const network = await this.repository.change(id, { dhcp });
    await this.applyOrUndo(network, async () => { await this.repository.change(id, { dhcp: before.dhcp }); });
    this.announce(network, 'changed', `changed the DHCP server of ${network.name}${'enabled' in change ? ` (${dhcp.enabled ? 'on' : 'off'})` : ''}`);
  }

  async leases(id: string): Promise<Lease[]> {
    this.require(id);
    return this.host ? this.host.leases(id) : [];
  }

  /** The adapters attached to a network (of VMs on or off). */
  adaptersOf(id: string): AdapterOf[] {
    return this.adapters().filter(({ vm, index }) => vm.config.networkAdapters[index].network === id);
  }

  unconnectedAdapters(): AdapterOf[] {
    return this.adapters().filter(({ vm, index }) => vm.config.networkAdapters[index].network === null);
  }

  /**
   * Attaches an adapter to a network, or detaches it (null). On a running VM the TAP moves to the
   * new bridge and the guest sees its link go down or up, nothing else; the .vmc says so too.
   */
  async attach(vm: VmRecord, index: number, networkId: string | null): Promise<void> {
    const network = networkId === null ? null : this.require(networkId);
    const state = this.machines.state(vm);
    const live = state === 'Running' || state === 'Paused';
    if (!live && isActive(state)) throw new ApiError('VM_E_BUSY', `${vm.name} is ${state}; attach or detach its adapters when it is running or off`);
    if (live) {
      const host = this.requireHost(`attach or detach an adapter of the running VM ${vm.name}`);
      await host.ensureTap(tapName(vm.id, index), networkId);
      await this.machines.operate(vm, 'setLink', { index, up: networkId !== null });
    }
    await this.machines.reconfigure(vm.id, (doc) => {
      Object.assign(doc.networkAdapters[index], { network: networkId, networkName: network?.name ?? null });
    }, { whileRunning: true });
    // A sample now: the TAP's traffic counts for its new network from here on.
    if (live) this.sample();
    const what = network ? `attached to ${network.name}` : 'detached from its network';
    this.log('Information', `${vm.name}: network adapter ${index} ${what}${live ? ' while running' : ''}`, `VirtualMachine/${vm.id}`);
    if (network) this.emit('change', { network, change: 'changed' });
  }

  /**
   * Before a VM turns on: its adapters bound to this host's networks (by name), then each
   * adapter's TAP, joined to its network's bridge, so that QEMU finds them. An adapter whose
   * network this host lacks starts unplugged, with a warning: a failed-over VM must still run.
   */
  async prepareStartup(record: VmRecord): Promise<void> {
    const vm = await this.bindAdapters(record, true);
    const adapters = vm.config.networkAdapters;
    if (!this.host) {
      if (adapters.some((n) => n.network !== null)) this.requireHost(`turn on ${vm.name}, whose adapters are attached to networks`);
      return;
    }
    for (const [index, nic] of adapters.entries()) await this.host.ensureTap(tapName(vm.id, index), nic.network);
  }

  /**
   * Binds each adapter to this host's network of the name its .vmc holds, as the same network:
   * a VM registered from another host's .vmc, or failed over, names networks of that host. A
   * registered id keeps its network (its name is filled in or brought up to date); another id is
   * replaced by the id of this host's network of that name (names compared as they are kept
   * unique: whatever their case). Without one the adapter is unplugged and keeps the name, so
   * that a later start, here or on a host that has it, connects it. `starting`: the VM is about
   * to turn on, and each adapter left unplugged so is a Warning in the event log.
   */
  async bindAdapters(vm: VmRecord, starting: boolean): Promise<VmRecord> {
    const before = vm.config.networkAdapters;
    const after = before.map((nic) => this.bindingOf(nic));
    const changed = after.some((b, i) => b.network !== before[i].network || b.networkName !== before[i].networkName);
    const bound = changed
      ? await this.machines.reconfigure(vm.id, (doc) => { for (const nic of doc.networkAdapters) Object.assign(nic, this.bindingOf(nic)); }, { whileRunning: true })
      : vm;
    for (const [index, nic] of before.entries()) {
      const { network, networkName } = after[index];
      const object = `VirtualMachine/${vm.id}`;
      if (network !== null && nic.network !== null && network !== nic.network) {
        this.log('Information', `${vm.name}: network adapter ${index} attached to ${networkName ?? ''}, this host's network of that name (its .vmc named the network ${nic.network}, which is not registered here)`, object);
      } else if (network === null && (nic.network !== null || (starting && networkName !== null))) {
        const what = networkName === null ? `the network ${nic.network ?? ''}, which is not registered here and whose name its .vmc does not hold` : `the virtual network ${networkName}, and host ${this.hostName} has no network of that name`;
        this.log('Warning', `${vm.name}: network adapter ${index} is ${starting ? 'turned on' : 'left'} not connected: it was attached to ${what}`, object);
      }
    }
    return bound;
  }

  /** After adapters went (removed, or the VM unregistered): their TAPs go too. */
  async adaptersRemoved(vmId: string, from: number, to: number): Promise<void> {
    for (let index = from; index < to; index++) await this.host?.removeTap(tapName(vmId, index));
  }

  /** The VM (other than `except`) holding a MAC address, if any. */
  macHolder(mac: string, except: string | null): VmRecord | null {
    return this.machines.list().find((vm) => vm.id !== except && vm.config.networkAdapters.some((n) => n.mac === mac)) ?? null;
  }

  /**
   * After a VM was registered: a dynamic MAC address another VM holds is drawn anew, as Virtual
   * Server did; a static one refuses the VM, which is unregistered again (its files untouched).
   */
  async settleMacClashes(vm: VmRecord): Promise<void> {
    const clashes = vm.config.networkAdapters.flatMap((nic, index) => {
      const holder = this.macHolder(nic.mac, vm.id);
      return holder ? [{ index, nic, holder }] : [];
    });
    const fixed = clashes.find((c) => !c.nic.dynamicMac);
    if (fixed) {
      await this.machines.remove(vm.id, false);
      throw new ApiError('VM_E_MAC_IN_USE', `adapter ${fixed.index} of ${vm.name} has the static MAC address ${fixed.nic.mac}, which the VM ${fixed.holder.name} holds; change one of them`);
    }
    if (!clashes.length) return;
    const taken = this.macsInUse();
    await this.machines.reconfigure(vm.id, (doc) => {
      for (const { index } of clashes) {
        const mac = randomMac(taken);
        taken.add(mac);
        doc.networkAdapters[index].mac = mac;
      }
    });
    this.log('Information', `${vm.name}: ${clashes.length} dynamic MAC address${clashes.length === 1 ? '' : 'es'} held by other VMs drawn anew`, `VirtualMachine/${vm.id}`);
  }

  /**
   * After a VM was registered from a .vmc (by a user, or by a failover from another host): its
   * MAC addresses settled, then its adapters bound to this host's networks by name.
   */
  async adoptRegistered(vm: VmRecord): Promise<VmRecord> {
    await this.settleMacClashes(vm);
    return this.bindAdapters(this.machines.require(vm.id), false);
  }

  /** Every MAC address this host's VMs hold. */
  macsInUse(): Set<string> {
    return new Set(this.machines.list().flatMap((vm) => vm.config.networkAdapters.map((n) => n.mac)));
  }

  networkCounters(id: string): Counters {
    this.require(id);
    return this.counters.network(id);
  }

  history(id: string, name: CounterName): { time: string; value: number }[] {
    this.require(id);
    return this.counters.history(id, name);
  }

  /** An adapter's counters, as its guest sees them (sent = what the guest sent). */
  adapterCounters(vm: VmRecord, index: number): Counters {
    return adapterCounters(tapName(vm.id, index));
  }

  /** The host's interfaces a host-connected network may be bridged to (vserver's own left out). */
  hostInterfaces(): Promise<HostInterface[]> {
    return hostInterfaces();
  }

  /** An adapter's network on this host: by id, else by name; none: unplugged, the name kept. */
  private bindingOf(nic: NetworkAdapter): Pick<NetworkAdapter, 'network' | 'networkName'> {
    const network = (nic.network === null ? null : this.get(nic.network)) ?? (nic.networkName === null ? null : this.findByName(nic.networkName));
    return network ? { network: network.id, networkName: network.name } : { network: null, networkName: nic.networkName };
  }

  private bindFailed(vm: VmRecord, e: Error): void {
    this.log('Warning', `${vm.name}: could not bring its adapters' network names up to date: ${e.message}`, `VirtualMachine/${vm.id}`);
  }

  private sample(): void {
    const attachments = this.adapters().flatMap(({ vm, index }) => {
      const network = vm.config.networkAdapters[index].network;
      return network ? [{ tap: tapName(vm.id, index), network }] : [];
    });
    this.counters.sample(attachments, this.list().map((n) => n.id)).catch((e: Error) => {
      this.log('Warning', `could not sample the network counters: ${e.message}`, null);
    });
  }

  private adapters(): AdapterOf[] {
    return this.machines.list().flatMap((vm) => vm.config.networkAdapters.map((_, index) => ({ vm, index })));
  }

  private allTaps(): { name: string; network: string | null }[] {
    return this.adapters().map(({ vm, index }) => ({ name: tapName(vm.id, index), network: vm.config.networkAdapters[index].network }));
  }

  private requireHost(what: string): HostNetworks {
    if (!this.host) throw new ApiError('VM_E_NETWORK_NOT_PERMITTED', `cannot ${what}: ${this.hostRefusal}`);
    return this.host;
  }

  /** Makes the network's host parts match its record; a refusal undoes the catalog's change. */
  private async applyOrUndo(network: NetworkRecord, undo: () => Promise<unknown>): Promise<void> {
    if (!this.host) return;
    try {
      await this.host.apply(specOf(network));
    } catch (e) {
      await undo();
      // Put the host back as the record now says (a half-made bridge, an old dnsmasq).
      const restored = this.get(network.id);
      await (restored ? this.host.apply(specOf(restored)) : this.host.remove(network.id)).catch(() => {});
      throw e;
    }
  }

  private async checkHostAdapter(kind: NetworkKind, name: string | null, self: string | null): Promise<string | null> {
    if (kind !== 'host') {
      if (name) throw invalidParams(`only a host-connected network (kind "host") is bridged to a host interface; this one is ${kind}`, { param: 'hostAdapter' });
      return null;
    }
    if (!name) throw invalidParams('a host-connected network needs the host interface it is bridged to (hostAdapter)', { param: 'hostAdapter' });
    const known = await this.hostInterfaces();
    if (!known.some((i) => i.name === name)) {
      throw new ApiError('VM_E_HOST_ADAPTER_UNKNOWN', `the host has no interface ${name} that can be bridged (${known.map((i) => i.name).join(', ') || 'none'})`);
    }
    const other = this.list().find((n) => n.id !== self && n.hostAdapter === name);
    if (other) throw new ApiError('VM_E_HOST_ADAPTER_UNKNOWN', `${name} is already bridged to the virtual network ${other.name}`);
    return name;
  }

  private refuseOverlap(id: string, dhcp: DhcpSettings): void {
    const other = this.list().find((n) => n.id !== id && overlapping(n.dhcp, dhcp));
    if (other) {
      throw new ApiError('VM_E_DHCP_OVERLAP', `${dhcp.networkAddress}/${dhcp.networkMask} overlaps ${other.dhcp.networkAddress}/${other.dhcp.networkMask} of the virtual network ${other.name}`);
    }
  }

  private announce(network: NetworkRecord, change: NetworkChangeEvent['change'], message: string): void {
    this.log('Information', message, `VirtualNetwork/${network.id}`);
    this.emit('change', { network, change });
  }
}

function specOf(network: NetworkRecord): NetworkSpec {
  return { id: network.id, name: network.name, kind: network.kind, hostAdapter: network.hostAdapter, dhcp: network.dhcp };
}
