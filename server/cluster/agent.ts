// vserverd's cluster agent (docs/cluster.md): membership, the ownership of every VM turned on
// here, the records other hosts read, restarts after a crash, the target side of failovers, and
// the leader's campaign. It is services.cluster; the API, the CLI and the website see only
// ClusterService. Stopping it leaves the VMs running: their workers keep their own leases.

import { EventEmitter } from 'node:events';
import os from 'node:os';
import type { Etcd3, Watcher } from 'etcd3';
import type { ClusterConfig } from '../config.js';
import { ApiError } from '../errors.js';
import type { Machines } from '../machines.js';
import type { StateChange, VmRecord } from '../vm-record.js';
import { checkReachable, memberUrls, openEtcd, readAll, readJson, watchPrefix } from './etcd-client.js';
import { diagnoseEtcd } from './etcd-health.js';
import { FailoverTarget, type LocalVms } from './failover.js';
import { Leader } from './leader.js';
import { Membership } from './membership.js';
import {
  type ClusterEventMap, type ClusterService, type FailoverRecord, HA_DEFAULTS, type HaSettings, type HostRecord, type HostState,
  type HostView, type MemberRecord, clusterKeys,
} from './model.js';
import { Ownership } from './ownership.js';
import { refuseUnlessShared } from './shared-storage.js';
import { ClusterVmRecords } from './vm-records.js';

/** A fenced HA VM is started again here every 2 s, for up to 2 minutes (etcd may be electing or without quorum). */
const FENCE_RETRY_MS = 2_000;
const FENCE_RETRY_LIMIT = 60;
/** An API call's whole time limit on etcd (its calls retried included): then it is VM_E_CLUSTER_UNAVAILABLE, saying why. */
const ANSWER_LIMIT_MS = 8_000;

/** How the agent reaches the rest of vserverd. */
export interface AgentHost {
  machines: Machines;
  /** Registers a VM from its .vmc as RegisterVirtualMachine does (MAC addresses, networks by name). */
  registerVm(vmcPath: string): Promise<VmRecord>;
  /** Turns a VM on as a Startup call does, resolving when it runs. */
  startVm(vm: VmRecord): Promise<void>;
  /** A line for the event log (category Cluster). */
  log(severity: 'Information' | 'Warning' | 'Error', message: string, object?: string | null): void;
}

const MB = 1024 * 1024;

/** A record from a watch event; a value that is not JSON (written by hand) is passed over, not thrown into vserverd. */
function parsed<T>(text: string): T | null {
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

export class ClusterAgent implements ClusterService {
  readonly events = new EventEmitter<ClusterEventMap>();
  private readonly keys;
  private readonly membership: Membership;
  private readonly ownership: Ownership;
  private readonly records: ClusterVmRecords;
  private readonly leaderRole: Leader;
  private readonly target: FailoverTarget;
  private watchers: Watcher[] = [];
  private readonly warn = (message: string): void => this.vserverd.log('Warning', message);
  /** The last state seen of each host, for hostState's `previous`. */
  private readonly hostStates = new Map<string, HostState>();
  /** Set by stop(): retries end. */
  private stopped = false;
  /** Every etcd member's client URL (read at join), for saying why etcd does not answer. */
  private members: string[];

  private constructor(private readonly client: Etcd3, private readonly config: ClusterConfig, private readonly vserverd: AgentHost) {
    this.keys = clusterKeys(config.name);
    this.members = config.etcd;
    this.membership = new Membership(client, config, () => Math.floor(os.freemem() / MB));
    this.ownership = new Ownership(client, config);
    this.records = new ClusterVmRecords(client, config.name);
    const warn = (message: string): void => vserverd.log('Warning', message);
    this.leaderRole = new Leader(client, config, this.records, (r) => this.announceFailover(r, true), warn);
    const local: LocalVms = {
      get: (id) => vserverd.machines.get(id), register: (vmcPath) => vserverd.registerVm(vmcPath), start: (vm) => vserverd.startVm(vm),
      running: (vm) => vserverd.machines.state(vm) === 'Running',
    };
    this.target = new FailoverTarget(client, config, this.records, local, (r) => this.announceFailover(r, false), warn);
  }

  /**
   * Connects, joins (refusing a host name held by another live host), takes hold of every turn
   * on, and goes Up. EtcdUnreachableError or HostNameInUseError when it cannot.
   */
  static async start(config: ClusterConfig, host: AgentHost): Promise<ClusterAgent> {
    const client = openEtcd(config);
    try {
      await checkReachable(client, config);
      const agent = new ClusterAgent(client, config, host);
      await agent.join();
      return agent;
    } catch (e) {
      client.close();
      throw e;
    }
  }

  get name(): string { return this.config.name; }
  get hostName(): string { return this.config.hostName; }

  private async join(): Promise<void> {
    this.members = await memberUrls(this.client).catch(() => this.config.etcd);
    await this.membership.join();
    const machines = this.vserverd.machines;
    machines.startGate = {
      acquire: async (vm) => {
        const licence = await this.ownership.acquire(vm.id, vm.name);
        await this.records.update(vm, (r) => {
          Object.assign(r, { name: vm.name, vmcPath: vm.vmcPath, host: this.hostName, desired: 'Running', memoryMB: vm.config.memoryMB, failed: null });
        }, this.hostName);
        return licence;
      },
      started: (vm) => this.ownership.handOver(vm.id),
      startFailed: async (vm) => { await this.ownership.release(vm.id); },
    };
    machines.on('state', (change) => void this.onState(change).catch((e: Error) => this.vserverd.log('Warning', `${change.vm.name}: ${e.message}`, `VirtualMachine/${change.vm.id}`)));
    // VMs reattached after a restart of vserverd keep their owners (their workers renew them); their records say they run here.
    for (const vm of machines.list()) {
      const state = machines.state(vm);
      if (state === 'Running' || state === 'Paused') await this.records.update(vm, (r) => { r.host = this.hostName; r.desired = 'Running'; }, this.hostName);
    }
    await this.watchHosts();
    await this.watchHistory();
    await this.target.start();
    this.leaderRole.start();
    await this.membership.setState(this.membership.joinedState);
    this.vserverd.log('Information', `joined the cluster ${this.name} as ${this.hostName} (${this.config.hostAddress}); etcd at ${this.config.etcd.join(', ')}${this.membership.joinedState === 'Maintenance' ? '; in Maintenance, as it left (ExitMaintenance to take VMs again)' : ''}`);
  }

  /** A VM here stopped: its ownership goes; a crash of an HA VM meant to run restarts it here, up to its limit. */
  private async onState({ vm, state, previous, status }: StateChange): Promise<void> {
    if (state !== 'TurnedOff' && state !== 'Saved') return;
    if (previous === null || previous === 'TurnedOff' || previous === 'Saved') return;
    await this.ownership.release(vm.id);
    void this.membership.write().catch(() => undefined);
    // A failed attempt of a failover to here: the failover tries again itself (two starts would race).
    if (this.target.taking(vm.id)) return;
    // A fence is the cluster's doing, not the VM's: it is meant to run on, here or elsewhere.
    if (status?.fenced) return this.restartAfterFence(vm, status.fenced.reason);
    const record = await this.records.get(vm.id);
    if (!record || record.host !== this.hostName) return;
    const crash = status?.crashed?.reason;
    if (!crash) {
      await this.records.update(vm, (r) => { r.desired = 'Off'; r.restarts = 0; }, this.hostName);
      return;
    }
    if (record.desired !== 'Running' || !record.ha.enabled || record.failed) {
      await this.records.update(vm, (r) => { r.desired = 'Off'; }, this.hostName);
      return;
    }
    if (record.restarts >= record.ha.maxRestarts) {
      const reason = `its QEMU died ${record.restarts + 1} times on ${this.hostName} (restarts allowed: ${record.ha.maxRestarts}); last: ${crash}`;
      await this.records.update(vm, (r) => { r.failed = reason; }, this.hostName);
      this.vserverd.log('Error', `${vm.name} is Failed: ${reason}`, `VirtualMachine/${vm.id}`);
      return;
    }
    await this.records.update(vm, (r) => { r.restarts += 1; }, this.hostName);
    const now = new Date().toISOString();
    const failover: FailoverRecord = {
      id: `${now.replace(/[-:.]/g, '')}-${vm.id.slice(0, 8)}`, vm: vm.id, vmName: vm.name, from: this.hostName, to: this.hostName,
      reason: `its QEMU died: ${crash}`, detected: now, fenced: now, started: now, running: null, seconds: null, error: null,
    };
    try {
      await this.vserverd.startVm(vm);
      failover.running = new Date().toISOString();
      failover.seconds = (Date.parse(failover.running) - Date.parse(now)) / 1000;
    } catch (e) {
      failover.error = (e as Error).message;
      // Owned elsewhere: the worker fenced itself and the leader gave the VM to another host; not a failure of the VM.
      if (!(e instanceof ApiError && e.errorName === 'VM_E_OWNED_ELSEWHERE')) {
        await this.records.update(vm, (r) => { r.failed = `restart after a crash failed: ${failover.error}`; }, this.hostName);
      }
    }
    await this.client.put(this.keys.failover(failover.id)).value(JSON.stringify(failover));
  }

  /**
   * The worker fenced an HA VM here (its lease could not be renewed in time, e.g. while etcd
   * elected a new leader). Its record stays desired Running, and this host takes it again once
   * its old owner key is gone, unless another host took it first (VM_E_OWNED_ELSEWHERE, which
   * the ownership transaction decides). etcd may be unavailable meanwhile: each step is retried
   * every FENCE_RETRY_MS, for FENCE_RETRY_LIMIT tries. Fences count against no restart limit.
   */
  private async restartAfterFence(vm: VmRecord, reason: string): Promise<void> {
    const detected = new Date().toISOString();
    let lastError = '';
    for (let attempt = 0; attempt < FENCE_RETRY_LIMIT && !this.stopped; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, FENCE_RETRY_MS));
      try {
        const record = await this.records.get(vm.id);
        if (!record || !record.ha.enabled || record.desired !== 'Running' || record.failed) return;
        if (record.host !== this.hostName) return;
        await this.vserverd.startVm(vm);
        const running = new Date().toISOString();
        const failover: FailoverRecord = {
          id: `${detected.replace(/[-:.]/g, '')}-${vm.id.slice(0, 8)}`, vm: vm.id, vmName: vm.name, from: this.hostName, to: this.hostName,
          reason: `fenced: ${reason}`, detected, fenced: detected, started: running, running, seconds: (Date.parse(running) - Date.parse(detected)) / 1000, error: null,
        };
        // The history watch announces it, as it does every failover.
        await this.client.put(this.keys.failover(failover.id)).value(JSON.stringify(failover));
        return;
      } catch (e) {
        if (e instanceof ApiError && (e.errorName === 'VM_E_OWNED_ELSEWHERE' || e.errorName === 'VM_E_VM_RUNNING')) return;
        lastError = (e as Error).message;
      }
    }
    if (lastError) this.vserverd.log('Error', `${vm.name} was fenced and could not be started again here after ${FENCE_RETRY_LIMIT} tries: ${lastError}`, `VirtualMachine/${vm.id}`);
  }

  private async watchHosts(): Promise<void> {
    for (const [name, record] of await readAll<HostRecord>(this.client, this.keys.hosts)) this.hostStates.set(name, record.state);
    const watcher = await watchPrefix(this.client, this.keys.hosts, this.warn);
    watcher.on('put', (kv) => {
      const record = parsed<HostRecord>(kv.value.toString());
      if (record) this.noteHostState(record.name, record.state);
    });
    watcher.on('delete', (kv) => this.noteHostState(kv.key.toString().slice(this.keys.hosts.length), 'Down'));
    this.watchers.push(watcher);
  }

  private noteHostState(host: string, state: HostState): void {
    const previous = this.hostStates.get(host) ?? null;
    if (previous === state) return;
    this.hostStates.set(host, state);
    this.events.emit('hostState', { host, state, previous });
    this.vserverd.log(state === 'Down' ? 'Warning' : 'Information', `host ${host} is ${state}${previous ? ` (was ${previous})` : ''}`, null);
  }

  /** Every host announces every failover record it sees written (the API of any host reports them). */
  private async watchHistory(): Promise<void> {
    const watcher = await watchPrefix(this.client, this.keys.history, this.warn);
    watcher.on('put', (kv) => {
      const record = parsed<FailoverRecord>(kv.value.toString());
      if (!record) return;
      this.events.emit('failover', record);
      const what = record.error ? `failed: ${record.error}` : record.running ? `running on ${record.to} after ${record.seconds} s` : record.started ? `starting on ${record.to}` : `placed on ${record.to}`;
      this.vserverd.log(record.error ? 'Error' : 'Information', `failover of ${record.vmName} from ${record.from} (${record.reason}): ${what}`, `VirtualMachine/${record.vm}`);
    });
    this.watchers.push(watcher);
  }

  /** The watch on history/ announces every write; nothing more to do here but keep the hook for the roles. */
  private announceFailover(_record: FailoverRecord, _byLeader: boolean): void {}

  /**
   * An answer that needs etcd: a failure that is not the caller's (etcd silent, without a leader
   * or without quorum), or no answer within ANSWER_LIMIT_MS, is VM_E_CLUSTER_UNAVAILABLE saying why.
   */
  private async fromEtcd<T>(work: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ANSWER_LIMIT_MS / 1000} s`)), ANSWER_LIMIT_MS);
    });
    try {
      return await Promise.race([work(), limit]);
    } catch (e) {
      if (e instanceof ApiError) throw e;
      throw new ApiError('VM_E_CLUSTER_UNAVAILABLE', `${await diagnoseEtcd(this.members)} (${(e as Error).message})`);
    } finally {
      clearTimeout(timer);
    }
  }

  hosts(): Promise<HostView[]> { return this.fromEtcd(() => this.readHosts()); }

  private async readHosts(): Promise<HostView[]> {
    const [members, live, vms] = await Promise.all([
      readAll<MemberRecord>(this.client, this.keys.members), readAll<HostRecord>(this.client, this.keys.hosts), this.records.list(),
    ]);
    return [...members.values()].sort((a, b) => a.name.localeCompare(b.name)).map((m) => {
      const record = live.get(m.name);
      return {
        name: m.name, address: record?.address ?? m.address, state: record?.state ?? 'Down', memoryAvailableMB: record?.memoryAvailableMB ?? 0,
        virtualMachines: vms.filter((vm) => vm.host === m.name).map((vm) => vm.id),
      };
    });
  }

  async host(name: string): Promise<HostView | null> {
    return (await this.hosts()).find((h) => h.name === name) ?? null;
  }

  leader(): Promise<string | null> { return this.fromEtcd(() => this.leaderRole.leader()); }

  history(since?: string): Promise<FailoverRecord[]> {
    return this.fromEtcd(async () => {
      const all = [...(await readAll<FailoverRecord>(this.client, this.keys.history)).values()];
      return all.filter((r) => since === undefined || r.detected >= since).sort((a, b) => a.detected.localeCompare(b.detected));
    });
  }

  vmHost(vmId: string): Promise<string | null> {
    return this.fromEtcd(async () => (await this.records.get(vmId))?.host ?? null);
  }

  async vmPlace(vmId: string): Promise<{ owner: string | null; lastHost: string | null }> {
    const [owner, record] = await Promise.all([this.ownership.owner(vmId), this.records.get(vmId)]);
    return { owner: owner?.host ?? null, lastHost: record?.host ?? null };
  }

  async liveAddress(host: string): Promise<string | null> {
    return (await readJson<HostRecord>(this.client, this.keys.host(host)))?.address ?? null;
  }

  async knownVms(): Promise<{ id: string; name: string }[]> {
    return (await this.records.list()).map(({ id, name }) => ({ id, name }));
  }

  haSettings(vmId: string): Promise<HaSettings> {
    return this.fromEtcd(async () => (await this.records.get(vmId))?.ha ?? { ...HA_DEFAULTS });
  }

  async setHaSettings(vmId: string, settings: HaSettings): Promise<void> {
    const vm = this.vserverd.machines.require(vmId);
    if (settings.enabled) refuseUnlessShared(vm, this.config.sharedStorage);
    await this.fromEtcd(() => this.records.update(vm, (r) => {
      r.ha = { ...settings, preferredHosts: [...settings.preferredHosts] };
      // A VM made HA again gets its restarts back.
      if (settings.enabled) r.failed = null;
      r.name = vm.name;
      r.vmcPath = vm.vmcPath;
      r.memoryMB = vm.config.memoryMB;
    }, this.hostName));
  }

  enterMaintenance(host: string): Promise<void> { return this.fromEtcd(() => this.setHostState(host, 'Maintenance')); }
  exitMaintenance(host: string): Promise<void> { return this.fromEtcd(() => this.setHostState(host, 'Up')); }

  /** A host's state is written by its own membership: a call about another live host is forwarded there (forward.ts). */
  private async setHostState(host: string, state: 'Up' | 'Maintenance'): Promise<void> {
    if (host === this.hostName) {
      await this.membership.setState(state);
      return;
    }
    const live = await this.client.get(this.keys.host(host)).exec();
    if (!live.kvs.length) throw new ApiError('VM_E_HOST_UNKNOWN', `host ${host} is not Up in the cluster ${this.name}`);
    throw new ApiError('VM_E_HOST_UNREACHABLE', `host ${host} sets its own state, and the call could not be sent to it`, { host });
  }

  /** vserverd's orderly stop: leaves the cluster; the VMs run on, their workers renewing their leases. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.vserverd.machines.startGate = null;
    await Promise.all(this.watchers.map((w) => w.cancel().catch(() => undefined)));
    await this.target.close();
    await this.leaderRole.close();
    this.ownership.detach();
    await this.membership.leave();
    this.client.close();
  }
}
