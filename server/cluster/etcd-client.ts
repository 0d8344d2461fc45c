// The etcd connection of vserverd's cluster agent (the npm etcd3 client over gRPC), and the
// check at start that etcd answers, so that an unreachable etcd is one clear error naming it.

import { Etcd3, type Watcher } from 'etcd3';
import type { ClusterConfig } from '../config.js';

/** How long the first request to etcd may take before vserverd calls etcd unreachable. */
const REACH_TIMEOUT_MS = 5_000;

export class EtcdUnreachableError extends Error {}

/** A time limit on each unary call (streams, as lease keep-alives and watches, have none): no request waits on etcd for long. */
const CALL_TIMEOUT_MS = 3_000;

/**
 * HTTP/2 pings on each connection: a member that stops answering (frozen, cut off) while its TCP
 * connection looks alive ends its streams (watches, the election's) within ping + timeout, and
 * they resume on another member. etcd refuses pings more often than every 5 s (its
 * --grpc-keepalive-min-time), hence 6 s.
 */
const GRPC_KEEPALIVE = { 'grpc.keepalive_time_ms': 6_000, 'grpc.keepalive_timeout_ms': 2_000 };

export function openEtcd(config: ClusterConfig): Etcd3 {
  return new Etcd3({
    hosts: config.etcd, dialTimeout: REACH_TIMEOUT_MS, grpcOptions: GRPC_KEEPALIVE,
    defaultCallOptions: (context) => context.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS },
  });
}

/** One client URL per etcd member, as etcd lists them (the configured endpoints may be fewer). */
export async function memberUrls(client: Etcd3): Promise<string[]> {
  const { members } = await client.cluster.memberList({});
  return members.map((m) => m.clientURLs[0]).filter(Boolean);
}

/** Resolves once etcd answers a read; EtcdUnreachableError (naming the endpoints) when it does not in time. */
export async function checkReachable(client: Etcd3, config: ClusterConfig): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${REACH_TIMEOUT_MS / 1000} s`)), REACH_TIMEOUT_MS);
  });
  try {
    await Promise.race([client.get(`/vserver/${config.name}/reach-check`).string(), timeout]);
  } catch (e) {
    throw new EtcdUnreachableError(`cannot reach etcd at ${config.etcd.join(', ')} for the cluster "${config.name}": ${(e as Error).message}`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
}

/** A JSON record read from etcd, or null when the key is absent. */
export async function readJson<T>(client: Etcd3, key: string): Promise<T | null> {
  const text = await client.get(key).string();
  return text === null ? null : JSON.parse(text) as T;
}

/** Every JSON record under a prefix, by the rest of its key. */
export async function readAll<T>(client: Etcd3, prefix: string): Promise<Map<string, T>> {
  const all = await client.getAll().prefix(prefix).strings();
  return new Map(Object.entries(all).map(([key, text]) => [key.slice(prefix.length), JSON.parse(text) as T]));
}

/** A watch on a prefix; its errors (a watch etcd cancelled) are reported, never thrown into vserverd. */
export async function watchPrefix(client: Etcd3, prefix: string, warn: (message: string) => void): Promise<Watcher> {
  const watcher = await client.watch().prefix(prefix).create();
  watcher.on('error', (e: Error) => warn(`the watch on ${prefix} failed: ${e.message}`));
  return watcher;
}
