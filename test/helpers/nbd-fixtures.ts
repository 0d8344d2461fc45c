// Shared fixtures for the NBD tests: "vsctl vhd serve --json" started as a child process and
// awaited until it prints its ready line, stopped with SIGTERM and awaited until it exits;
// NBD URIs; commands run without blocking (so several clients can run at once); and a minimal
// raw NBD client for requests real clients never send.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
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

// ---------------------------------------------------------------------------------------------
// A minimal raw NBD client: fixed newstyle, NBD_OPT_GO, simple replies only. For requests that
// well-behaved clients never send (a write to a read-only export, say), to see the server's answer.

const NBD_MAGIC = 0x4e42444d41474943n;
const IHAVEOPT = 0x49484156454f5054n;
const OPT_GO = 7;
const REPLY_ACK = 1;
const REPLY_INFO = 3;
const REQUEST_MAGIC = 0x25609513;
const SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, WRITE_ZEROES: 6 } as const;

export interface RawNbdClient {
  size: number;
  transmissionFlags: number;
  /** Sends one request and resolves with the reply's error number (0: success) and any read data. */
  request(type: number, offset: number, length: number, payload?: Buffer, flags?: number): Promise<{ errno: number; data: Buffer }>;
  /** NBD_CMD_DISC, then closes. */
  close(): Promise<void>;
}

/** Connects to a unix socket, or a {host, port}, and selects the export with NBD_OPT_GO. */
export async function rawNbdConnect(target: string | { host: string; port: number }, exportName: string): Promise<RawNbdClient> {
  const socket = typeof target === 'string' ? net.connect(target) : net.connect(target.port, target.host);
  let buffered = Buffer.alloc(0);
  let ended = false;
  let wake: (() => void) | null = null;
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    wake?.();
  });
  socket.on('close', () => {
    ended = true;
    wake?.();
  });
  socket.on('error', () => { /* seen as the close */ });
  const read = async (n: number): Promise<Buffer> => {
    while (buffered.length < n) {
      if (ended) throw new Error(`NBD server closed the connection (wanted ${n} bytes, have ${buffered.length})`);
      await new Promise<void>((resolve) => { wake = resolve; });
      wake = null;
    }
    const out = buffered.subarray(0, n);
    buffered = buffered.subarray(n);
    return out;
  };

  const hello = await read(18);
  assert.equal(hello.readBigUInt64BE(0), NBD_MAGIC, 'NBDMAGIC');
  assert.equal(hello.readBigUInt64BE(8), IHAVEOPT, 'IHAVEOPT');
  const clientFlags = Buffer.alloc(4);
  clientFlags.writeUInt32BE(hello.readUInt16BE(16) & 0b11); // fixed newstyle, no zeroes: as offered
  socket.write(clientFlags);
  const name = Buffer.from(exportName);
  const go = Buffer.alloc(16 + 4 + name.length + 2);
  go.writeBigUInt64BE(IHAVEOPT, 0);
  go.writeUInt32BE(OPT_GO, 8);
  go.writeUInt32BE(4 + name.length + 2, 12);
  go.writeUInt32BE(name.length, 16);
  name.copy(go, 20);
  go.writeUInt16BE(0, 20 + name.length);
  socket.write(go);
  let size = -1;
  let transmissionFlags = 0;
  for (;;) {
    const head = await read(20);
    const type = head.readUInt32BE(12);
    const data = await read(head.readUInt32BE(16));
    if (type === REPLY_INFO && data.readUInt16BE(0) === 0) {
      size = Number(data.readBigUInt64BE(2));
      transmissionFlags = data.readUInt16BE(10);
    } else if (type === REPLY_ACK) {
      break;
    } else if (type >= 2 ** 31) {
      socket.destroy();
      throw new Error(`NBD_OPT_GO refused (reply type ${type}): ${data.toString()}`);
    }
  }
  let handle = 0n;
  return {
    size,
    transmissionFlags,
    async request(type, offset, length, payload, flags = 0) {
      const header = Buffer.alloc(28);
      header.writeUInt32BE(REQUEST_MAGIC, 0);
      header.writeUInt16BE(flags, 4);
      header.writeUInt16BE(type, 6);
      header.writeBigUInt64BE(++handle, 8);
      header.writeBigUInt64BE(BigInt(offset), 16);
      header.writeUInt32BE(length, 24);
      socket.write(payload ? Buffer.concat([header, payload]) : header);
      const reply = await read(16);
      assert.equal(reply.readUInt32BE(0), SIMPLE_REPLY_MAGIC, 'simple reply magic');
      assert.equal(reply.readBigUInt64BE(8), handle, 'reply handle');
      const errno = reply.readUInt32BE(4);
      const data = type === NBD_CMD.READ && errno === 0 ? Buffer.from(await read(length)) : Buffer.alloc(0);
      return { errno, data };
    },
    async close() {
      const header = Buffer.alloc(28);
      header.writeUInt32BE(REQUEST_MAGIC, 0);
      header.writeUInt16BE(NBD_CMD.DISC, 6);
      socket.end(header);
      if (!ended) await new Promise<void>((resolve) => socket.once('close', () => resolve()));
    },
  };
}
