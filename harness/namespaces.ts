// The harness's network namespaces: one per simulated host and one "hub" holding the bridge
// that joins them, so nothing touches the machine's own interfaces. Names are
// vsct-<harness pid>-<label>: a later run removes the leftovers of a killed one (whose pid is
// gone) and leaves runs going on at the same time alone.

import { execFileSync, spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';

export const HARNESS_NETNS_PREFIX = 'vsct-';

export class HarnessError extends Error {
  override readonly name = 'HarnessError';
}

export class Namespace {
  private constructor(readonly name: string) {}

  static create(label: string): Namespace {
    const name = `${HARNESS_NETNS_PREFIX}${process.pid}-${label}`;
    execFileSync('ip', ['netns', 'add', name], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
    const ns = new Namespace(name);
    ns.run('ip', ['link', 'set', 'lo', 'up']);
    return ns;
  }

  /** A namespace made earlier, by its name. */
  static existing(name: string): Namespace {
    return new Namespace(name);
  }

  /** Runs a command in the namespace; throws a HarnessError with its stderr when it fails. */
  run(command: string, args: string[], timeoutMs = 10_000): string {
    const r = spawnSync('ip', ['netns', 'exec', this.name, command, ...args], { encoding: 'utf8', timeout: timeoutMs });
    if (r.status !== 0) throw new HarnessError(`in ${this.name}: ${command} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr || r.error?.message || ''}`);
    return r.stdout;
  }

  /** A long-running process in the namespace (ip execs it, so the child's pid is the program's). */
  spawn(command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.name, command, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  }

  /** Every process running in the namespace (vserverd, workers, QEMUs, etcd, relays). */
  pids(): number[] {
    return spawnSync('ip', ['netns', 'pids', this.name], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
  }

  /** Sends `signal` to every process of the namespace; returns how many it reached. */
  signalAll(signal: NodeJS.Signals): number {
    let reached = 0;
    for (const pid of this.pids()) {
      try {
        process.kill(pid, signal);
        reached += 1;
      } catch { /* gone already */ }
    }
    return reached;
  }

  remove(): void {
    this.signalAll('SIGCONT'); // a frozen process cannot die of SIGKILL until it runs again
    this.signalAll('SIGKILL');
    spawnSync('ip', ['netns', 'delete', this.name]);
  }
}

/** A veth pair: `a` in `left`, `b` in `right`, both up (names at most 15 characters). */
export function vethPair(left: Namespace, a: string, right: Namespace, b: string): void {
  const temp = `vsctv${process.pid % 100000}${Math.floor(Math.random() * 1000)}`.slice(0, 15);
  left.run('ip', ['link', 'add', a, 'type', 'veth', 'peer', 'name', temp]);
  left.run('ip', ['link', 'set', temp, 'netns', right.name]);
  right.run('ip', ['link', 'set', temp, 'name', b]);
  left.run('ip', ['link', 'set', a, 'up']);
  right.run('ip', ['link', 'set', b, 'up']);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes namespaces of earlier harness runs whose process is gone. */
export function removeLeftoverNamespaces(): string[] {
  const removed: string[] = [];
  const names = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]);
  for (const name of names) {
    const m = /^vsct-(\d+)-/.exec(name ?? '');
    if (m && !alive(Number(m[1]))) {
      Namespace.existing(name).remove();
      removed.push(name);
    }
  }
  return removed;
}
