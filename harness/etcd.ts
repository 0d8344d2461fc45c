// The cluster's etcd: one member per host namespace (at most 3), the real /usr/bin/etcd, on the
// host's bridge address and ports of the harness's own; and the few reads the harness makes
// through etcd's JSON gateway (via the relay) to time detection and find the leader.

import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { HarnessError, type Namespace } from './namespaces.js';
import type { Relay } from './relay.js';

export const ETCD_BINARY = '/usr/bin/etcd';
export const ETCD_CLIENT_PORT = 12379;
export const ETCD_PEER_PORT = 12380;

export interface EtcdMemberSpec { name: string; ns: Namespace; address: string; dataDir: string; logFile: string }

export function clientTarget(address: string): string {
  return `${address}:${ETCD_CLIENT_PORT}`;
}

/** Starts (or restarts, on the same data folder) one member of the cluster `members`. */
export function startEtcdMember(member: EtcdMemberSpec, members: EtcdMemberSpec[], token: string): ChildProcess {
  const existing = fs.existsSync(path.join(member.dataDir, 'member'));
  fs.mkdirSync(member.dataDir, { recursive: true });
  const args = [
    '--name', member.name, '--data-dir', member.dataDir,
    '--listen-client-urls', `http://${member.address}:${ETCD_CLIENT_PORT}`, '--advertise-client-urls', `http://${member.address}:${ETCD_CLIENT_PORT}`,
    '--listen-peer-urls', `http://${member.address}:${ETCD_PEER_PORT}`, '--initial-advertise-peer-urls', `http://${member.address}:${ETCD_PEER_PORT}`,
    '--initial-cluster', members.map((m) => `${m.name}=http://${m.address}:${ETCD_PEER_PORT}`).join(','),
    '--initial-cluster-token', token, '--initial-cluster-state', existing ? 'existing' : 'new',
    // Short heartbeats so that a lost leader is replaced within about a second.
    '--heartbeat-interval', '100', '--election-timeout', '1000',
  ];
  const log = fs.openSync(member.logFile, 'a');
  const child = member.ns.spawn(ETCD_BINARY, args, { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  return child;
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');

/** The range end that makes `prefix` a prefix query. */
function prefixEnd(prefix: string): string {
  const bytes = Buffer.from(prefix);
  bytes[bytes.length - 1] += 1;
  return bytes.toString('base64');
}

export class EtcdReader {
  constructor(private readonly relay: Relay, private readonly targets: string[]) {}

  /** The keys and JSON values under `prefix`, from the first member that answers; null when none does. */
  async prefix<T>(prefix: string): Promise<Map<string, T> | null> {
    for (const target of this.targets) {
      try {
        const r = await this.relay.post<{ kvs?: Array<{ key: string; value: string }> }>(target, '/v3/kv/range', { key: b64(prefix), range_end: prefixEnd(prefix) }, {}, 1_500);
        if (r.status !== 200) continue;
        const out = new Map<string, T>();
        for (const kv of r.body.kvs ?? []) {
          const key = Buffer.from(kv.key, 'base64').toString();
          try {
            out.set(key, JSON.parse(Buffer.from(kv.value, 'base64').toString()) as T);
          } catch { /* not JSON: not one of ours */ }
        }
        return out;
      } catch { /* try the next member */ }
    }
    return null;
  }

  /** The client target of the member that is leader now, or null when none is known. */
  async leader(): Promise<string | null> {
    const ids = new Map<string, string>();
    let leader: string | null = null;
    for (const target of this.targets) {
      try {
        const r = await this.relay.post<{ header?: { member_id?: string }; leader?: string }>(target, '/v3/maintenance/status', {}, {}, 1_500);
        if (r.body.header?.member_id) ids.set(r.body.header.member_id, target);
        if (r.body.leader) leader = r.body.leader;
      } catch { /* down */ }
    }
    return leader ? ids.get(leader) ?? null : null;
  }

  /** Waits until a write-capable quorum answers (a put and a range succeed). */
  async waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const target of this.targets) {
        try {
          const r = await this.relay.post(target, '/v3/kv/put', { key: b64('/vsct/health'), value: b64('ok') }, {}, 1_500);
          if (r.status === 200) return;
        } catch { /* not yet */ }
      }
      if (Date.now() > deadline) throw new HarnessError(`etcd (${this.targets.join(', ')}) had no quorum within ${timeoutMs / 1000} s`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}
