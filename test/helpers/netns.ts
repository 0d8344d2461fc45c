// Network namespaces for tests and benchmarks: every bridge, TAP, veth, dnsmasq and test host of
// a network test lives in a namespace made here, so nothing touches the machine's own interfaces.
// Names start with NETNS_PREFIX; leftovers of a killed run are removed by removeLeftoverNamespaces.

import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';

export const NETNS_PREFIX = 'vsT-';

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
}

export class Netns {
  private constructor(readonly name: string) {}

  /** A new namespace with its loopback up; `label` is part of its name (keep it short). */
  static create(label: string): Netns {
    const name = `${NETNS_PREFIX}${label}-${crypto.randomBytes(3).toString('hex')}`;
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

  /** Kills every process left in the namespace, then deletes it. */
  remove(): void {
    spawnSync('ip', ['netns', 'pids', this.name], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean)
      .forEach((pid) => { try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone already */ } });
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

/**
 * Deletes namespaces a killed earlier run left behind: those whose names start with
 * NETNS_PREFIX + `label` (give the label your namespaces use, so another run's live ones stay).
 */
export function removeLeftoverNamespaces(label = ''): void {
  const names = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n')
    .map((line) => line.split(' ')[0]).filter((name) => name?.startsWith(`${NETNS_PREFIX}${label}`));
  for (const name of names) Netns.existing(name).remove();
}
