// Network namespaces for tests and benchmarks: every bridge, TAP, veth, dnsmasq and test host of
// a network test lives in a namespace made here, so nothing touches the machine's own interfaces.
// Names are NETNS_PREFIX, a label, the creating process's pid and a random tail: leftovers of a
// killed run (whose creator is gone) are removed by removeLeftoverNamespaces, while namespaces of
// test runs going on at the same time (other pids) are left alone.

import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';

export const NETNS_PREFIX = 'vsT-';

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
}

export class Netns {
  private constructor(readonly name: string) {}

  /** A new namespace with its loopback up; `label` is part of its name (keep it short). */
  static create(label: string): Netns {
    const name = `${NETNS_PREFIX}${label}-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
    ip(['netns', 'add', name]);
    const ns = new Netns(name);
    ns.run('ip', ['link', 'set', 'lo', 'up']);
    return ns;
  }

  /** A namespace made earlier, by its name. */
  static existing(name: string): Netns {
    return new Netns(name);
  }

  /** The argument prefix that runs a command inside the namespace. */
  prefix(): string[] {
    return ['ip', 'netns', 'exec', this.name];
  }

  /** Runs a command in the namespace; throws with its stderr when it fails. */
  run(command: string, args: string[], timeoutMs = 10_000): string {
    const result = spawnSync('ip', ['netns', 'exec', this.name, command, ...args], { encoding: 'utf8', timeout: timeoutMs });
    if (result.status !== 0) {
      throw new Error(`in ${this.name}: ${command} ${args.join(' ')} failed (${result.status ?? result.signal}): ${result.stderr || result.error?.message || ''}`);
    }
    return result.stdout;
  }

  /**
   * A Node.js program run in the namespace, with an IPC channel (process.send in the program): the
   * program sees the namespace's interfaces, /sys/class/net and /proc/sys/net as its host's.
   */
  fork(modulePath: string, args: string[] = []): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.name, process.execPath, modulePath, ...args], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  }

  /** A long-running command in the namespace (a server, a capture), its output piped. */
  spawn(command: string, args: string[]): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.name, command, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** Runs a command in the namespace and says how it ended, without throwing (for what must fail). */
  attempt(command: string, args: string[], timeoutMs = 10_000): { status: number | null; stdout: string; stderr: string } {
    const result = spawnSync('ip', ['netns', 'exec', this.name, command, ...args], { encoding: 'utf8', timeout: timeoutMs });
    return { status: result.status, stdout: result.stdout ?? '', stderr: result.stderr ?? '' };
  }

  /** The processes running in the namespace. */
  pids(): number[] {
    return spawnSync('ip', ['netns', 'pids', this.name], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
  }

  /** Kills every process left in the namespace, then deletes it. */
  remove(): void {
    this.pids().forEach((pid) => { try { process.kill(pid, 'SIGKILL'); } catch { /* gone already */ } });
    spawnSync('ip', ['netns', 'delete', this.name]);
  }
}

/**
 * A veth pair with one end in each namespace (`a` in `left`, `b` in `right`), both up. Names are
 * at most 15 characters.
 */
export function vethPair(left: Netns, a: string, right: Netns, b: string): void {
  const temp = `vsTv${crypto.randomBytes(4).toString('hex')}`;
  left.run('ip', ['link', 'add', a, 'type', 'veth', 'peer', 'name', temp]);
  left.run('ip', ['link', 'set', temp, 'netns', right.name]);
  right.run('ip', ['link', 'set', temp, 'name', b]);
  left.run('ip', ['link', 'set', a, 'up']);
  right.run('ip', ['link', 'set', b, 'up']);
}

/** Whether a process runs (a zombie counts: its parent may still clean up). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Deletes the namespaces an earlier, killed run left behind: those named by Netns.create whose
 * creating process is gone (and, given `label`, only that label's). Namespaces of runs still going
 * on, and any not named by Netns.create, are left alone.
 */
export function removeLeftoverNamespaces(label?: string): void {
  const names = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((line) => line.split(' ')[0]);
  for (const name of names) {
    const match = /^(.+)-(\d+)-[0-9a-f]{6}$/.exec(name?.startsWith(NETNS_PREFIX) ? name.slice(NETNS_PREFIX.length) : '');
    if (match && (label === undefined || match[1] === label) && !processExists(Number(match[2]))) Netns.existing(name).remove();
  }
}
