// Shared fixtures for the NBD tests: "vsctl vhd serve --json" started as a child process and
// awaited until it prints its ready line, stopped with SIGTERM and awaited until it exits;
// NBD URIs; commands run without blocking (so several clients can run at once). Requests real
// clients never send go through test/helpers/nbd-client.ts.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { VSCTL } from './vhd-fixtures.js';

// ---------------------------------------------------------------------------------------------
// URIs

/** The NBD URI of an export on a unix socket (the form qemu and libnbd both take). */
export function nbdUnixUri(socket: string, exportName = ''): string {
  return `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`;
}

/** The NBD URI of an export on TCP. */
export function nbdTcpUri(port: number, exportName = '', host = '127.0.0.1'): string {
  return `nbd://${host}:${port}/${encodeURIComponent(exportName)}`;
}

// ---------------------------------------------------------------------------------------------
// vsctl vhd serve

export interface ServeOptions {
  /** Listen on this unix socket ... */
  socket?: string;
  /** ... or on 127.0.0.1:tcp (0: any free port). */
  tcp?: number;
  readOnly?: boolean;
  exportName?: string;
  lockChain?: boolean;
  /** How long to wait for the ready line (ms). */
  timeoutMs?: number;
}

/** The line "vsctl vhd serve --json" prints once it accepts connections. */
export interface ReadyLine {
  file: string;
  export: string;
  uri: string;
  socket?: string;
  port?: number;
  readOnly: boolean;
  pid: number;
}

export interface ServerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ServedVhd {
  ready: ReadyLine;
  uri: string;
  pid: number;
  /** The server process itself, for tests that kill it or watch it exit. */
  child: ChildProcess;
  /** What the server printed to stderr so far (its log of closed connections and failed requests). */
  stderr(): string;
  /** SIGTERM, then waits for the process to exit; resolves with how it exited. */
  stop(): Promise<ServerExit>;
}

/** A serve that did not become ready: the process exited first. */
export class ServeFailed extends Error {
  constructor(readonly exit: ServerExit) {
    super(`vsctl vhd serve exited ${exit.code ?? exit.signal} before it was ready:\n${exit.stdout}${exit.stderr}`);
  }

  /** The {error: {code, message}} that vsctl --json prints for a failed command, if it printed one. */
  get jsonError(): { code: string; message: string; file?: string } | null {
    try {
      return (JSON.parse(this.exit.stdout) as { error: { code: string; message: string; file?: string } }).error ?? null;
    } catch {
      return null;
    }
  }
}

const running = new Set<ChildProcess>();

function serveArgs(file: string, options: ServeOptions): string[] {
  const args = ['vhd', 'serve', file, '--json'];
  if (options.socket !== undefined) args.push('--socket', options.socket);
  if (options.tcp !== undefined) args.push('--tcp', String(options.tcp));
  if (options.readOnly) args.push('--read-only');
  if (options.exportName !== undefined) args.push('--export', options.exportName);
  if (options.lockChain) args.push('--lock-chain');
  return args;
}

/**
 * Starts "vsctl vhd serve FILE ... --json" and resolves once its ready line is printed; rejects
 * with ServeFailed when it exits first (a lock held elsewhere, a bad file, a bad option).
 */
export function serveVhd(file: string, options: ServeOptions): Promise<ServedVhd> {
  const child = spawn(VSCTL, serveArgs(file, options), { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => { stderr += s; });
  child.once('exit', () => running.delete(child));
  // 'close' comes after 'exit', once stdout and stderr have been read to their end.
  const exited = new Promise<ServerExit>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return new Promise<ServedVhd>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`vsctl vhd serve printed no ready line within ${options.timeoutMs ?? 20_000} ms:\n${stdout}${stderr}`));
    }, options.timeoutMs ?? 20_000);
    child.stdout!.on('data', (s: string) => {
      stdout += s;
      if (settled) return;
      const newline = stdout.indexOf('\n');
      if (newline < 0) return;
      let ready: ReadyLine;
      try {
        ready = JSON.parse(stdout.slice(0, newline)) as ReadyLine;
      } catch {
        return; // not the one-line ready object: an error printed as indented JSON; wait for the exit
      }
      if (typeof ready.uri !== 'string') return;
      settled = true;
      clearTimeout(timer);
      resolve({
        ready,
        uri: ready.uri,
        pid: child.pid!,
        child,
        stderr: () => stderr,
        async stop() {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
          return exited;
        },
      });
    });
    exited.then((exit) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new ServeFailed(exit));
    }, (e: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(e as Error);
    });
  });
}

/** Serving that must fail: resolves with how the process exited. */
export async function serveVhdFailure(file: string, options: ServeOptions): Promise<ServeFailed> {
  let served: ServedVhd;
  try {
    served = await serveVhd(file, options);
  } catch (e) {
    if (e instanceof ServeFailed) return e;
    throw e;
  }
  await served.stop();
  assert.fail(`vsctl vhd serve ${file} was expected to fail but served ${served.uri}`);
}

/** Stops the server and asserts it exited 0 (it flushed and released the disk). Returns its stderr. */
export async function stopServer(served: ServedVhd): Promise<string> {
  const exit = await served.stop();
  assert.equal(exit.code, 0, `vsctl vhd serve exited ${exit.code ?? exit.signal}:\n${exit.stderr}`);
  return exit.stderr;
}

/** SIGTERMs every server these fixtures started that is still running, SIGKILL after `graceMs` (for an after() hook). */
export async function stopAllServers(graceMs = 10_000): Promise<void> {
  const waits = [...running].map((child) => new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve();
      return;
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  }));
  await Promise.all(waits);
}

// ---------------------------------------------------------------------------------------------
// Commands run without blocking the event loop (several clients at once)

export interface AsyncRunResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runAsync(command: string, args: string[], timeoutMs = 60_000): Promise<AsyncRunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}
