// A cluster of N hosts on this machine (docs/cluster-test.md): a network namespace per host,
// joined by a bridge in a hub namespace of the harness's own, an etcd member in each of the
// first three hosts, one shared-storage folder, and a vserverd per host started inside its
// namespace with the cluster settings. Everything is made under one temp folder and removed by
// destroy(), which is safe to call at any point (also from a signal handler).

import type { ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { clientTarget, EtcdReader, type EtcdMemberSpec, startEtcdMember } from './etcd.js';
import { HarnessError, Namespace, vethPair } from './namespaces.js';
import { Relay } from './relay.js';

export const HUB_ADDRESS = '10.77.0.1';
export const SUBNET_PREFIX = 24;
export const API_PORT = 8900;
export const HOST_LINK = 'eth0';
const DHCP_FIRST = '10.77.0.100';
const DHCP_LAST = '10.77.0.200';
export const ADMIN_PASSWORD = 'cluster-test-admin';
const SERVER_MAIN = path.resolve(import.meta.dirname, '..', 'server', 'main.js');
const START_TIMEOUT_MS = 60_000;

export interface HostOptions {
  /** Pass the cluster settings (off only to check the topology against a vserverd without them). */
  clusterFlags: boolean;
}

export class Host {
  server: ChildProcess | null = null;
  etcd: ChildProcess | null = null;
  output = '';
  constructor(readonly name: string, readonly ns: Namespace, readonly address: string, readonly dir: string, readonly etcdMember: EtcdMemberSpec | null) {}
  get apiTarget(): string { return `${this.address}:${API_PORT}`; }
  get dataDir(): string { return path.join(this.dir, 'data'); }
  get runDir(): string { return path.join(this.dir, 'run'); }
  get serverLog(): string { return path.join(this.dir, 'vserverd.log'); }
}

export class Cluster {
  readonly hosts: Host[] = [];
  readonly sharedStorage: string;
  readonly name = `vsct${process.pid}`;
  relay: Relay | null = null;
  /** DHCP for the guests on the hub's bridge (their host networks bridge each host's link to it). */
  dnsmasq: ChildProcess | null = null;
  etcd: EtcdReader | null = null;
  private hub: Namespace | null = null;
  private destroyed = false;
  private readonly etcdMembers: EtcdMemberSpec[] = [];

  private constructor(readonly workDir: string, private readonly options: HostOptions) {
    this.sharedStorage = path.join(workDir, 'shared');
  }

  /** Builds the namespaces, the bridge and etcd; vserverds start with startServers(). */
  static async build(hostCount: number, options: HostOptions, log: (line: string) => void): Promise<Cluster> {
    if (!Number.isInteger(hostCount) || hostCount < 2 || hostCount > 9) throw new HarnessError(`a cluster test needs 2 to 9 hosts, not ${hostCount}`);
    const cluster = new Cluster(fs.mkdtempSync(path.join(os.tmpdir(), `vsct-${process.pid}-`)), options);
    try {
      fs.chmodSync(cluster.workDir, 0o711); // QEMU runs as another user and must reach the run folders under it
      fs.mkdirSync(cluster.sharedStorage, { recursive: true });
      cluster.hub = Namespace.create('hub');
      const hub = cluster.hub;
      hub.run('ip', ['link', 'add', 'vsctbr', 'type', 'bridge']);
      hub.run('ip', ['addr', 'add', `${HUB_ADDRESS}/${SUBNET_PREFIX}`, 'dev', 'vsctbr']);
      hub.run('ip', ['link', 'set', 'vsctbr', 'up']);
      for (let i = 1; i <= hostCount; i++) {
        const name = `h${i}`;
        const ns = Namespace.create(name);
        const address = `10.77.0.${10 + i}`;
        vethPair(ns, HOST_LINK, hub, `vsctp${i}`);
        hub.run('ip', ['link', 'set', `vsctp${i}`, 'master', 'vsctbr']);
        ns.run('ip', ['addr', 'add', `${address}/${SUBNET_PREFIX}`, 'dev', HOST_LINK]);
        const dir = path.join(cluster.workDir, name);
        fs.mkdirSync(dir, { recursive: true });
        const member = i <= 3 ? { name, ns, address, dataDir: path.join(dir, 'etcd'), logFile: path.join(dir, 'etcd.log') } : null;
        if (member) cluster.etcdMembers.push(member);
        cluster.hosts.push(new Host(name, ns, address, dir, member));
      }
      log(`namespaces: ${hub.name} (bridge vsctbr ${HUB_ADDRESS}) and ${cluster.hosts.map((h) => `${h.ns.name} ${h.address}`).join(', ')}`);
      cluster.dnsmasq = hub.spawn('dnsmasq', ['--keep-in-foreground', '--conf-file=/dev/null', '--interface=vsctbr', '--bind-interfaces',
        '--except-interface=lo', '--port=0', `--dhcp-range=${DHCP_FIRST},${DHCP_LAST},255.255.255.0,600`, `--dhcp-leasefile=${path.join(cluster.workDir, 'dnsmasq.leases')}`,
        `--pid-file=${path.join(cluster.workDir, 'dnsmasq.pid')}`, `--log-facility=${path.join(cluster.workDir, 'dnsmasq.log')}`, '--log-dhcp'], { stdio: 'ignore' });
      cluster.relay = await Relay.start(hub, path.join(cluster.workDir, 'relay'), [
        ...cluster.hosts.map((h) => h.apiTarget), ...cluster.etcdMembers.map((m) => clientTarget(m.address)),
      ]);
      cluster.etcd = new EtcdReader(cluster.relay, cluster.etcdEndpoints().map((e) => e.replace('http://', '')));
      for (const host of cluster.hosts) cluster.startEtcd(host);
      await cluster.etcd.waitHealthy(30_000);
      log(`etcd: ${cluster.etcdMembers.length} members healthy (${cluster.etcdEndpoints().join(', ')})`);
      return cluster;
    } catch (e) {
      cluster.destroy();
      throw e;
    }
  }

  get hubNamespace(): Namespace {
    if (!this.hub) throw new HarnessError('the cluster is gone');
    return this.hub;
  }

  etcdEndpoints(): string[] {
    return this.etcdMembers.map((m) => `http://${clientTarget(m.address)}`);
  }

  host(name: string): Host {
    const host = this.hosts.find((h) => h.name === name);
    if (!host) throw new HarnessError(`no host named ${name} (hosts: ${this.hosts.map((h) => h.name).join(', ')})`);
    return host;
  }

  startEtcd(host: Host): void {
    if (host.etcdMember) host.etcd = startEtcdMember(host.etcdMember, this.etcdMembers, this.name);
  }

  /** The secret the hosts share to forward calls to each other (made once per run). */
  private secretFile(): string {
    const file = path.join(this.workDir, 'cluster-secret');
    if (!fs.existsSync(file)) fs.writeFileSync(file, crypto.randomBytes(32).toString('hex'), { mode: 0o600 });
    return file;
  }

  /** Starts vserverd in the host's namespace and waits until it answers on its address. */
  async startServer(host: Host): Promise<void> {
    fs.mkdirSync(host.dataDir, { recursive: true });
    fs.mkdirSync(host.runDir, { recursive: true });
    const args = [SERVER_MAIN, '--host', host.address, '--port', String(API_PORT), '--data', host.dataDir,
      '--allowed-host', host.apiTarget, '--storage-root', this.sharedStorage,
      ...(this.options.clusterFlags ? ['--cluster', this.name, '--etcd', this.etcdEndpoints().join(','), '--host-name', host.name,
        '--host-address', host.apiTarget, '--shared-storage', this.sharedStorage, '--cluster-secret-file', this.secretFile()] : [])];
    const log = fs.openSync(host.serverLog, 'a');
    // Its own UTS namespace and host name: each host is a machine of its own to the disk locks
    // (vhd/lock.ts), which take over a fenced host's lock only when it is another machine's.
    host.server = host.ns.spawn('unshare', ['--uts', '--', 'sh', '-c', 'hostname "$0" && exec "$@"', `${this.name}-${host.name}`, process.execPath, ...args], {
      stdio: ['ignore', log, log],
      env: { ...process.env, VSERVER_ADMIN_PASSWORD: ADMIN_PASSWORD, VSERVER_RUN_DIR: host.runDir, VSERVER_HOST_NETWORKS: '1' },
    });
    fs.closeSync(log);
    const deadline = Date.now() + START_TIMEOUT_MS;
    const child = host.server;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new HarnessError(`vserverd on ${host.name} exited (${child.exitCode ?? child.signalCode}) before answering:\n${tail(host.serverLog)}`);
      }
      try {
        const r = await this.relay!.post(host.apiTarget, '/api/login', { user: 'admin', password: ADMIN_PASSWORD }, {}, 2_000);
        if (r.status === 200) return;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) throw new HarnessError(`vserverd on ${host.name} did not answer within ${START_TIMEOUT_MS / 1000} s:\n${tail(host.serverLog)}`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  async startServers(): Promise<void> {
    for (const host of this.hosts) await this.startServer(host);
  }

  /** Brings a host back after a fault: its link up, no filter, its etcd member and its vserverd running. */
  async restore(host: Host): Promise<void> {
    host.ns.signalAll('SIGCONT');
    host.ns.run('ip', ['link', 'set', HOST_LINK, 'up']);
    host.ns.run('nft', ['flush', 'ruleset']);
    if (host.etcdMember && !running(host.etcd)) this.startEtcd(host);
    if (!running(host.server)) await this.startServer(host);
    await this.etcd!.waitHealthy(30_000);
  }

  /** Whether `address` answers a ping from the hub (the guests' side of the bridge). */
  pingFromHub(address: string): boolean {
    try {
      this.hubNamespace.run('busybox', ['ping', '-c', '1', '-W', '1', address], 5_000);
      return true;
    } catch {
      return false;
    }
  }

  /** Kills every process of every namespace, deletes the namespaces and the work folder. */
  destroy(keepFiles = false): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.relay?.stop();
    for (const host of this.hosts) host.ns.remove();
    this.hub?.remove();
    if (!keepFiles) fs.rmSync(this.workDir, { recursive: true, force: true });
  }
}

export function running(child: ChildProcess | null): boolean {
  return child !== null && child.exitCode === null && child.signalCode === null;
}

function tail(file: string, bytes = 3000): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.slice(-bytes);
  } catch {
    return '(no log)';
  }
}
