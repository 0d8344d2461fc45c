// A real etcd for tests (Debian's /usr/bin/etcd, 3.4): one member or three, on free loopback
// ports or inside network namespaces, in a temporary data folder; started, killed and restarted
// member by member. Never on the default ports 2379/2380, so a system etcd is never touched.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

export const ETCD = '/usr/bin/etcd';
export const ETCDCTL = '/usr/bin/etcdctl';
const READY_MS = 20_000;
const STOP_MS = 5_000;

export interface EtcdMemberPlace {
  /** The address the member listens on (127.0.0.1, or an address inside `netns`). */
  address: string;
  clientPort: number;
  peerPort: number;
  /** A network namespace the member runs in (`ip netns exec NS etcd ...`). */
  netns?: string;
}

export interface EtcdOptions {
  /** 1 or 3 members on free loopback ports, when `places` is not given. */
  members?: 1 | 3;
  /** Where each member listens (namespaces); the test chooses the ports there. */
  places?: EtcdMemberPlace[];
  /** Passed to every member (say `--heartbeat-interval`). */
  extraArgs?: string[];
}

export interface EtcdMember extends EtcdMemberPlace {
  name: string;
  dataDir: string;
  clientUrl: string;
  process: ChildProcess | null;
  log: string;
}

/** A port nobody listens on now, on 127.0.0.1 (never 2379/2380). */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port: chosen } = server.address() as net.AddressInfo;
        server.close(() => resolve(chosen));
      });
    });
    if (port !== 2379 && port !== 2380) return port;
  }
}

export class EtcdCluster {
  private constructor(readonly root: string, readonly members: EtcdMember[], private readonly extraArgs: string[]) {}

  /** Starts the members and resolves once every one answers as healthy (bounded). */
  static async start(options: EtcdOptions = {}): Promise<EtcdCluster> {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vs-etcd-'));
    const places = options.places ?? await loopbackPlaces(options.members ?? 1);
    const token = path.basename(root);
    const members = places.map((place, i): EtcdMember => ({
      ...place, name: `m${i}`, dataDir: path.join(root, `m${i}`), clientUrl: `http://${place.address}:${place.clientPort}`,
      process: null, log: path.join(root, `m${i}.log`),
    }));
    const cluster = new EtcdCluster(root, members, [
      '--initial-cluster', members.map((m) => `${m.name}=http://${m.address}:${m.peerPort}`).join(','),
      '--initial-cluster-token', token, '--initial-cluster-state', 'new', ...(options.extraArgs ?? []),
    ]);
    try {
      for (const member of members) cluster.spawnMember(member);
      await Promise.all(members.map((m) => cluster.waitHealthy(m)));
    } catch (e) {
      await cluster.stop();
      throw e;
    }
    return cluster;
  }

  /** The client URLs of every member. */
  get endpoints(): string[] {
    return this.members.map((m) => m.clientUrl);
  }

  /** kill -9 of one member. */
  kill(index: number): void {
    const member = this.members[index];
    member.process?.kill('SIGKILL');
  }

  /** Sends a signal to one member (SIGSTOP, SIGCONT). */
  signal(index: number, signal: NodeJS.Signals): void {
    this.members[index].process?.kill(signal);
  }

  /** Starts a member again on its data folder (killed or stopped before); resolves once it answers. */
  async restart(index: number): Promise<void> {
    const member = this.members[index];
    await this.stopMember(member);
    this.spawnMember(member);
    await this.waitHealthy(member);
  }

  /** Stops every member and removes the data folders. */
  async stop(): Promise<void> {
    await Promise.all(this.members.map((m) => this.stopMember(m)));
    fs.rmSync(this.root, { recursive: true, force: true });
  }

  /** The end of a member's log, for a failure's message. */
  logTail(index: number, lines = 10): string {
    try {
      return fs.readFileSync(this.members[index].log, 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Runs etcdctl (API v3) against the cluster, or one endpoint; throws with its stderr when it fails. */
  etcdctl(args: string[], endpoint?: string): string {
    const member = endpoint ? this.members.find((m) => m.clientUrl === endpoint) : this.members[0];
    const command = [ETCDCTL, `--endpoints=${endpoint ?? this.endpoints.join(',')}`, '--command-timeout=3s', ...args];
    const full = member?.netns ? ['ip', 'netns', 'exec', member.netns, ...command] : command;
    const result = spawnSync(full[0], full.slice(1), { encoding: 'utf8', timeout: 10_000, env: { ...process.env, ETCDCTL_API: '3' } });
    if (result.status !== 0) throw new Error(`etcdctl ${args.join(' ')} failed (${result.status ?? result.signal}): ${result.stderr || result.error?.message}`);
    return result.stdout;
  }

  private spawnMember(member: EtcdMember): void {
    const args = [
      '--name', member.name, '--data-dir', member.dataDir,
      '--listen-client-urls', member.clientUrl, '--advertise-client-urls', member.clientUrl,
      '--listen-peer-urls', `http://${member.address}:${member.peerPort}`,
      '--initial-advertise-peer-urls', `http://${member.address}:${member.peerPort}`,
      ...this.extraArgs,
    ];
    const command = member.netns ? ['ip', 'netns', 'exec', member.netns, ETCD, ...args] : [ETCD, ...args];
    const log = fs.openSync(member.log, 'a');
    // `ip netns exec` execs etcd in place: the pid is etcd's.
    member.process = spawn(command[0], command.slice(1), { stdio: ['ignore', log, log] });
    fs.closeSync(log);
  }

  private async stopMember(member: EtcdMember): Promise<void> {
    const child = member.process;
    member.process = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGCONT');
    child.kill('SIGTERM');
    if (await Promise.race([exited.then(() => true), delay(STOP_MS).then(() => false)])) return;
    child.kill('SIGKILL');
    await Promise.race([exited, delay(STOP_MS)]);
  }

  /** Polls the member until it says it is healthy; fails with its log after READY_MS. */
  private async waitHealthy(member: EtcdMember): Promise<void> {
    const deadline = Date.now() + READY_MS;
    for (;;) {
      if (member.process && (member.process.exitCode !== null || member.process.signalCode !== null)) {
        throw new Error(`etcd ${member.name} exited at start: ${this.logTail(this.members.indexOf(member))}`);
      }
      if (await this.healthy(member)) return;
      if (Date.now() > deadline) throw new Error(`etcd ${member.name} did not become healthy within ${READY_MS} ms: ${this.logTail(this.members.indexOf(member))}`);
      await delay(100);
    }
  }

  private async healthy(member: EtcdMember): Promise<boolean> {
    if (member.netns) {
      const r = spawnSync('ip', ['netns', 'exec', member.netns, ETCDCTL, `--endpoints=${member.clientUrl}`, '--command-timeout=1s', 'endpoint', 'health'],
        { encoding: 'utf8', timeout: 5_000, env: { ...process.env, ETCDCTL_API: '3' } });
      return r.status === 0;
    }
    try {
      const answer = await fetch(`${member.clientUrl}/health`, { signal: AbortSignal.timeout(1_000) });
      const body = await answer.json() as { health?: string };
      return answer.ok && body.health === 'true';
    } catch {
      return false;
    }
  }
}

async function loopbackPlaces(count: number): Promise<EtcdMemberPlace[]> {
  const places: EtcdMemberPlace[] = [];
  const taken = new Set<number>();
  const port = async (): Promise<number> => {
    for (;;) {
      const p = await freePort();
      if (!taken.has(p)) { taken.add(p); return p; }
    }
  };
  for (let i = 0; i < count; i++) places.push({ address: '127.0.0.1', clientPort: await port(), peerPort: await port() });
  return places;
}

/** etcd's JSON gateway: a POST to /v3/..., its JSON answer (throws on an HTTP error). */
export async function etcdPost<T = Record<string, unknown>>(endpoint: string, route: string, body: unknown): Promise<T> {
  const answer = await fetch(`${endpoint}${route}`, { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(3_000) });
  const text = await answer.text();
  if (!answer.ok) throw new Error(`etcd ${route}: HTTP ${answer.status}: ${text}`);
  return JSON.parse(text) as T;
}

/** Grants a lease of `ttlSeconds`; its id as etcd writes it (a decimal string). */
export async function grantLease(endpoint: string, ttlSeconds: number): Promise<string> {
  const answer = await etcdPost<{ ID: string }>(endpoint, '/v3/lease/grant', { TTL: ttlSeconds });
  return answer.ID;
}

/** A lease's remaining TTL in seconds, -1 once it is gone. */
export async function leaseTtl(endpoint: string, leaseId: string): Promise<number> {
  const answer = await etcdPost<{ TTL?: string }>(endpoint, '/v3/lease/timetolive', { ID: leaseId });
  return Number(answer.TTL ?? -1);
}

/** Puts a key attached to a lease (keys and values in base64, as the gateway wants them). */
export async function putWithLease(endpoint: string, key: string, value: string, leaseId: string): Promise<void> {
  await etcdPost(endpoint, '/v3/kv/put', { key: Buffer.from(key).toString('base64'), value: Buffer.from(value).toString('base64'), lease: leaseId });
}

export async function revokeLease(endpoint: string, leaseId: string): Promise<void> {
  await etcdPost(endpoint, '/v3/lease/revoke', { ID: leaseId });
}
