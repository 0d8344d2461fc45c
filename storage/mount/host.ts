// The host's side of mounting: mount table, loop devices, FUSE, the kernel NBD client (the
// processes vhdmount leaves running are host/process.ts's). Each function does one thing and
// says what failed.

import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import fs from 'node:fs';

export class HostError extends Error {}

export function runTool(command: string, args: string[]): string {
  let result: SpawnSyncReturns<string>;
  try {
    result = spawnSync(command, args, { encoding: 'utf8', timeout: 120_000 });
  } catch (e) {
    throw new HostError(`cannot run ${command}: ${(e as Error).message}`);
  }
  if (result.error) {
    const missing = (result.error as NodeJS.ErrnoException).code === 'ENOENT';
    throw new HostError(missing ? `${command} is not installed` : `${command} failed: ${result.error.message}`);
  }
  if (result.status !== 0) {
    const said = (result.stderr || result.stdout).trim();
    throw new HostError(`${command} ${args.join(' ')} failed (exit ${result.status})${said ? `: ${said}` : ''}`);
  }
  return result.stdout;
}

export function hasCommand(command: string): boolean {
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':');
  return dirs.some((d) => {
    try {
      fs.accessSync(`${d}/${command}`, fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export interface MountEntry {
  mountPoint: string;
  source: string;
  fsType: string;
}

/** The host's mounts, from /proc/self/mountinfo (paths there escape spaces and the like in octal). */
export function mounts(): MountEntry[] {
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean).map((line) => {
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    return { mountPoint: unescape(fields[4]), fsType: fields[dash + 1], source: unescape(fields[dash + 2]) };
  });
}

export function mountAt(mountPoint: string): MountEntry | undefined {
  return mounts().filter((m) => m.mountPoint === mountPoint).pop();
}

/** Attaches a loop device to a range of `file`; returns its path. */
export function attachLoop(file: string, offset: number, size: number, readOnly: boolean): string {
  const args = ['--find', '--show', '--offset', String(offset), '--sizelimit', String(size), ...(readOnly ? ['--read-only'] : []), file];
  return runTool('losetup', args).trim();
}

/** The file behind a loop device, or null when it is detached. */
export function loopBackingFile(device: string): string | null {
  try {
    return fs.readFileSync(`/sys/block/${device.replace('/dev/', '')}/loop/backing_file`, 'utf8').trim();
  } catch {
    return null;
  }
}

export function detachLoop(device: string): void {
  runTool('losetup', ['--detach', device]);
}

/** The filesystem type blkid finds on a device, or null. */
export function filesystemType(device: string): string | null {
  const result = spawnSync('blkid', ['-o', 'value', '-s', 'TYPE', device], { encoding: 'utf8' });
  return result.status === 0 && result.stdout.trim() ? result.stdout.trim() : null;
}

export async function waitFor(what: string, test: () => boolean, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!test()) {
    signal?.throwIfAborted();
    if (Date.now() > deadline) throw new HostError(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The kernel's NBD client can be used: the nbd driver is there (or loads) and nbd-client is installed. */
export function kernelNbdAvailable(): boolean {
  if (!hasCommand('nbd-client')) return false;
  if (!fs.existsSync('/dev/nbd0')) spawnSync('modprobe', ['nbd'], { encoding: 'utf8' });
  return fs.existsSync('/dev/nbd0');
}

/** A /dev/nbdN that no client is connected to. */
export function freeNbdDevice(): string {
  for (let n = 0; fs.existsSync(`/dev/nbd${n}`); n++) {
    const pid = `/sys/block/nbd${n}/pid`;
    if (!fs.existsSync(pid)) return `/dev/nbd${n}`;
  }
  throw new HostError('every /dev/nbd* device is in use');
}

export function fuseAvailable(): boolean {
  return fs.existsSync('/dev/fuse') && hasCommand('nbdfuse') && hasCommand('fusermount3');
}
