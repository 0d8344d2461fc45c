// The tiny Linux test guest built by test/guest/build.sh (a Debian kernel, a busybox initramfs
// and a bootable VHD holding both), its serial-console protocol, and a bare QEMU runner whose
// serial port is the child's stdin/stdout, for tests that boot it.
//
// Serial protocol of the guest's /init (test/guest/init.sh), printed once per boot on COM1:
//   VSERVER-DISKS sda sr0 ...            block devices matching sd* sr* fd* vd*
//   VSERVER-NICS eth0=52:54:00:..:../e1000 ...   every interface but lo: name=mac/driver
//   VSERVER-GUEST-READY                  the marker: devices settled, shell about to start
// then an interactive shell ("guest# ", job control, respawned) on the same port; /bin/ticker
// prints "tick N" once a second; an ACPI power-button press prints VSERVER-POWER-BUTTON and
// powers off. After the marker every ethernet interface runs busybox udhcpc in the background
// (retrying forever), whose script configures it and prints, at any time later:
//   VSERVER-LEASE eth0 10.237.0.16 00:03:ff:..:..   each lease obtained or renewed
//   VSERVER-LEASE-LOST eth0                         a lease's address gone (lost or released)
// A guest that gets no lease prints neither, so its console holds only what the shell prints.
// Busybox applets for network tests: ping, nc (-l, -e), wget, httpd, sha256sum, md5sum, dd.
// A file transfer that ends cleanly: the receiver runs `nc -l -p PORT -e sh -c 'cat >FILE'`
// (a plain `nc -l >FILE` stops early when its own stdin ends), the sender `nc ADDRESS PORT <FILE`.
// This busybox's wget crashes with -T: bound it with `timeout N wget ...` instead.

import { type ChildProcess, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Netns } from './netns.js';
import { type Match, TextWatch } from './text-watch.js';
import { PROJECT_ROOT } from './vhd-fixtures.js';
const BUILDER_FILES = ['build.sh', 'init.sh'].map((f) => path.join(PROJECT_ROOT, 'test', 'guest', f));

export const GUEST_BUILD_COMMAND = 'bash test/guest/build.sh';
export const GUEST_READY_MARKER = 'VSERVER-GUEST-READY';
export const GUEST_DISKS_PREFIX = 'VSERVER-DISKS';
export const GUEST_NICS_PREFIX = 'VSERVER-NICS';
export const GUEST_POWER_BUTTON_MARKER = 'VSERVER-POWER-BUTTON';
export const GUEST_LEASE_PREFIX = 'VSERVER-LEASE';
export const GUEST_LEASE_LOST_PREFIX = 'VSERVER-LEASE-LOST';
export const GUEST_PROMPT = 'guest# ';
/** Kernel command line for a direct (-kernel/-initrd) boot; the VHD's syslinux.cfg uses the same. */
export const GUEST_APPEND = 'console=ttyS0,115200 loglevel=3';

/** guest.json, written by test/guest/build.sh into the cache. */
export interface Guest {
  /** Absolute paths into the cache. */
  kernel: string;
  initrd: string;
  /** Dynamic VHD: MBR, one bootable FAT partition with SYSLINUX, the kernel and the initrd. */
  bootVhd: string;
  /** e.g. "6.1.0-56-amd64". */
  kernelVersion: string;
  append: string;
  marker: string;
  /** sha256 of test/guest/build.sh + init.sh as they were when built. */
  builderHash: string;
}

/** Where build.sh caches the guest: $VSERVER_GUEST_CACHE, else a root or per-user default. */
export function guestCacheDir(): string {
  const fromEnv = process.env.VSERVER_GUEST_CACHE;
  if (fromEnv) return path.resolve(fromEnv);
  if (process.geteuid?.() === 0) return '/var/cache/vserver/test-guest';
  return path.join(os.homedir(), '.cache', 'vserver', 'test-guest');
}

/**
 * The built test guest. Throws, saying how to build it, when it is missing or incomplete, or
 * older than test/guest/build.sh and init.sh in this checkout.
 */
export function testGuest(): Guest {
  const file = path.join(guestCacheDir(), 'guest.json');
  const build = `build it with: ${GUEST_BUILD_COMMAND} (from the checkout; about 10 s, needs the Debian mirror)`;
  let guest: Guest;
  try {
    guest = JSON.parse(fs.readFileSync(file, 'utf8')) as Guest;
  } catch (e) {
    const reason = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'is missing' : `is unreadable (${(e as Error).message})`;
    throw new Error(`The test guest is not built: ${file} ${reason}; ${build}`, { cause: e });
  }
  for (const key of ['kernel', 'initrd', 'bootVhd'] as const) {
    if (typeof guest[key] !== 'string' || !fs.existsSync(guest[key])) {
      throw new Error(`The test guest in ${guestCacheDir()} is incomplete (${key}: ${guest[key]}); ${build}`);
    }
  }
  if (BUILDER_FILES.every((f) => fs.existsSync(f))) {
    const hash = crypto.createHash('sha256');
    for (const f of BUILDER_FILES) hash.update(fs.readFileSync(f));
    if (hash.digest('hex') !== guest.builderHash) {
      throw new Error(`The test guest in ${guestCacheDir()} is out of date (test/guest/ changed since it was built); ${build}`);
    }
  }
  return guest;
}

// ---------------------------------------------------------------------------------------------
// The serial protocol

export interface GuestNic {
  name: string;
  mac: string;
  driver: string;
}

export interface GuestReport {
  disks: string[];
  nics: GuestNic[];
}

/** Serial output with the CRs of the tty's CR-LF line ends removed. */
export function serialLines(output: string): string[] {
  return output.replace(/\r/g, '').split('\n');
}

/** The VSERVER-DISKS and VSERVER-NICS lines of the last boot in `output` that reached the marker. */
export function parseGuestReport(output: string): GuestReport | null {
  const lines = serialLines(output);
  const ready = lines.lastIndexOf(GUEST_READY_MARKER);
  if (ready < 0) return null;
  const last = (prefix: string): string[] | null => {
    for (let i = ready - 1; i >= 0; i--) {
      const words = lines[i].trim().split(/\s+/);
      if (words[0] === prefix) return words.slice(1);
    }
    return null;
  };
  const disks = last(GUEST_DISKS_PREFIX);
  const nics = last(GUEST_NICS_PREFIX);
  if (disks === null || nics === null) return null;
  return {
    disks,
    nics: nics.map((word) => {
      const match = /^([^=]+)=([^/]*)\/(.*)$/.exec(word);
      if (!match) throw new Error(`bad ${GUEST_NICS_PREFIX} entry "${word}"`);
      return { name: match[1], mac: match[2], driver: match[3] };
    }),
  };
}

export interface GuestLease {
  /** The guest's interface name, e.g. eth0. */
  ifname: string;
  address: string;
  /** Lower case, colon-separated, as the guest's sysfs shows it. */
  mac: string;
}

/** Every VSERVER-LEASE line in `output`, oldest first. */
export function parseGuestLeases(output: string): GuestLease[] {
  const leases: GuestLease[] = [];
  for (const line of serialLines(output)) {
    const at = line.indexOf(`${GUEST_LEASE_PREFIX} `);
    if (at < 0) continue; // the line may start with the shell's prompt
    const [ifname, address, mac] = line.slice(at + GUEST_LEASE_PREFIX.length + 1).trim().split(/\s+/);
    if (ifname && address && mac) leases.push({ ifname, address, mac });
  }
  return leases;
}

/** A pattern matching the next lease line of `ifname` (e.g. for SerialReader.waitFor). */
export function leasePattern(ifname = 'eth\\d+'): RegExp {
  return new RegExp(`${GUEST_LEASE_PREFIX} ${ifname} \\S+ \\S+\\r?\\n`);
}

// ---------------------------------------------------------------------------------------------
// Bare QEMU with the serial port on stdio

/** QEMU options every boot of the guest shares: no defaults, TCG (see docs: nested KVM hangs), COM1 on stdio. */
export const QEMU_BASE_ARGS: readonly string[] = [
  '-nodefaults', '-no-user-config', '-display', 'none', '-accel', 'tcg', '-M', 'pc', '-m', '256',
  '-serial', 'stdio', '-no-reboot',
];

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SerialQemu {
  child: ChildProcess;
  /** Everything the guest wrote to COM1 so far. */
  output(): string;
  /** What QEMU wrote to stderr so far. */
  stderr(): string;
  /**
   * Resolves with the first match of `pattern` in the serial output at or after `from`; rejects
   * when `timeoutMs` passes or QEMU exits first.
   */
  waitFor(pattern: string | RegExp, timeoutMs: number, from?: number): Promise<Match>;
  /** Types into COM1. */
  type(text: string): void;
  /** Resolves once QEMU has exited. */
  exited: Promise<QemuExit>;
  /** SIGKILLs QEMU if it is still running and waits for it. */
  kill(): Promise<QemuExit>;
}

const running = new Set<ChildProcess>();

/**
 * Spawns qemu-system-x86_64 with QEMU_BASE_ARGS + `args`. QEMU is SIGKILLed after
 * `lifetimeMs` whatever happens; call kill() (or killAllQemu() in an after() hook) when done.
 */
export function startQemu(args: string[], lifetimeMs = 120_000, netns?: Netns): SerialQemu {
  return runQemu([...QEMU_BASE_ARGS, ...args], lifetimeMs, netns);
}

/**
 * Spawns qemu-system-x86_64 with exactly `args` (COM1 must be on stdio to be read), inside
 * `netns` when given (ip execs QEMU, so the child is QEMU); as startQemu otherwise.
 */
export function runQemu(args: string[], lifetimeMs = 120_000, netns?: Netns): SerialQemu {
  const [command, ...prefixArgs] = [...(netns?.prefix() ?? []), 'qemu-system-x86_64'];
  const child = spawn(command, [...prefixArgs, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  running.add(child);
  let stderr = '';
  const tail = (): string => `--- serial (last 2000 chars) ---\n${serial.text.slice(-2000)}\n--- qemu stderr ---\n${stderr}`;
  const serial = new TextWatch('the serial console', tail);
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (s: string) => serial.append(s));
  child.stderr!.on('data', (s: string) => { stderr += s; });
  child.stdin!.on('error', () => { /* QEMU gone: typing is moot */ });
  const lifetime = setTimeout(() => child.kill('SIGKILL'), lifetimeMs);
  const exited = new Promise<QemuExit>((resolve) => {
    const done = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(lifetime);
      running.delete(child);
      resolve({ code, signal });
      serial.end('QEMU exited');
    };
    child.once('error', (e) => {
      stderr += `spawn qemu-system-x86_64: ${e.message}\n`;
      done(null, null);
    });
    child.once('close', done);
  });
  return {
    child,
    output: () => serial.text,
    stderr: () => stderr,
    exited,
    type(text: string) {
      child.stdin!.write(text);
    },
    waitFor: (pattern, timeoutMs, from = 0) => serial.waitFor(pattern, timeoutMs, from),
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      return exited;
    },
  };
}

/** SIGKILLs every QEMU startQemu() or runQemu() started that still runs (for an after() hook). */
export async function killAllQemu(): Promise<void> {
  await Promise.all([...running].map((child) => new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve();
      return;
    }
    child.once('close', () => resolve());
    child.kill('SIGKILL');
  })));
}
