// Runs server/network's HostNetworks and NetworkCounters in the process's network namespace
// (started by Netns.fork), driven over IPC by HostNetworksClient: a test's host parts are made
// by the library itself, as vserverd would, but inside a namespace of the test's own.
//   argv: STATE_DIR QEMU_USER|-

import type { ChildProcess } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { HostNetworks } from '../../server/network/host-networks.js';
import { NetworkCounters } from '../../server/network/counters.js';
import type { Netns } from './netns.js';

export interface CallMessage { id: number; target: 'networks' | 'counters' | 'static'; method: string; args: unknown[] }
export type ReplyMessage = { id: number; result: unknown } | { id: number; error: { errorName?: string; message: string; details?: unknown } };

const CALL_TIME_LIMIT_MS = 60_000;

// The program's part runs only when this file is the program (not when a test imports the client).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [stateDir, qemuUser] = process.argv.slice(2);
  const send = (message: unknown): void => { process.send?.(message); };
  const networks = new HostNetworks({ stateDir, qemuUser: qemuUser === '-' ? null : qemuUser, report: (report) => send({ report }) });
  const counters = new NetworkCounters(stateDir);
  const targets: Record<CallMessage['target'], object> = { networks, counters, static: HostNetworks };
  process.on('message', (message: CallMessage) => {
    void (async () => {
      try {
        const target = targets[message.target] as Record<string, (...args: unknown[]) => unknown>;
        const result = await target[message.method](...message.args);
        send({ id: message.id, result: result ?? null });
      } catch (error) {
        const e = error as { errorName?: string; message: string; details?: unknown };
        send({ id: message.id, error: { errorName: e.errorName, message: e.message, details: e.details } });
      }
    })();
  });
  process.on('disconnect', () => { networks.close(); process.exit(0); });
}

/** A HostNetworks (and its NetworkCounters) living in a namespace; each call time-bounded. */
export class HostNetworksClient {
  readonly reports: { part: string; action: string; network?: string; message: string }[] = [];
  private readonly child: ChildProcess;
  private next = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  constructor(ns: Netns, stateDir: string, qemuUser: string | null) {
    this.child = ns.fork(new URL(import.meta.url).pathname, [stateDir, qemuUser ?? '-']);
    this.child.on('message', (message: ReplyMessage | { report: HostNetworksClient['reports'][number] }) => {
      if ('report' in message) { this.reports.push(message.report); return; }
      const waiter = this.waiting.get(message.id);
      this.waiting.delete(message.id);
      if ('error' in message) waiter?.reject(Object.assign(new Error(message.error.message), message.error));
      else waiter?.resolve(message.result);
    });
    this.child.on('exit', () => { for (const w of this.waiting.values()) w.reject(new Error('the HostNetworks process ended')); this.waiting.clear(); });
  }

  call<T>(target: CallMessage['target'], method: string, ...args: unknown[]): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => { this.waiting.delete(id); reject(new Error(`${method} took more than ${CALL_TIME_LIMIT_MS} ms`)); }, CALL_TIME_LIMIT_MS);
      this.waiting.set(id, {
        resolve: (value) => { clearTimeout(timer); resolve(value as T); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      });
      this.child.send({ id, target, method, args } satisfies CallMessage);
    });
  }

  /** Ends the process (its host parts stay, as vserverd's do). */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  }
}
