// A real vserverd for tests: its own data folder, run folder and port, an administrator whose
// password the test knows, and a JSON-RPC client that speaks to it over HTTP.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Netns } from './netns.js';
import { NetnsForwarder } from './netns-server.js';
import { PROJECT_ROOT, run } from './vhd-fixtures.js';

export const SERVER_MAIN = path.join(PROJECT_ROOT, 'dist', 'server', 'main.js');
export const ADMIN_PASSWORD = 'test-admin-password';
const START_TIMEOUT_MS = 30_000;

export class RpcError extends Error {
  constructor(readonly code: number, message: string, readonly data: { name: string; [key: string]: unknown }) {
    super(message);
  }
}

/** The API error `promise` fails with; the test fails when it succeeds or fails any other way. */
export async function refusal(promise: Promise<unknown>): Promise<RpcError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof RpcError) return e;
    throw e;
  }
  assert.fail('the call succeeded');
}

/** Asserts that `promise` fails with the API error `name` (and a message matching `message`). */
export async function rejectsWith(promise: Promise<unknown>, name: string, message?: RegExp): Promise<RpcError> {
  const error = await refusal(promise);
  assert.equal(error.data.name, name, `expected ${name}, got ${error.data.name}: ${error.message}`);
  if (message) assert.match(error.message, message);
  return error;
}

export interface ServerOptions {
  /** Reuse a data folder (and run folder) of an earlier server: a restart. */
  dataDir?: string;
  runDir?: string;
  env?: Record<string, string>;
  args?: string[];
  /**
   * Run vserverd in this network namespace (it makes its bridges, TAPs and dnsmasq there);
   * `url` reaches it through a NetnsForwarder. Without it vserverd makes no host network parts.
   */
  netns?: Netns;
}



export class TestServer {
  output = '';
  private forwarder: NetnsForwarder | null = null;
  private constructor(readonly process: ChildProcess, readonly url: string, readonly dataDir: string, readonly runDir: string, readonly adminToken: string) {}

  static async start(options: ServerOptions = {}): Promise<TestServer> {
    const dataDir = options.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-data-'));
    const runDir = options.runDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-run-'));
    const forwarder = options.netns ? await NetnsForwarder.listen() : null;
    // Host network parts (bridges, TAPs, dnsmasq, nft) only inside a namespace of the test's own.
    const args = [SERVER_MAIN, '--port', '0', '--data', dataDir,
      ...(forwarder ? ['--allowed-host', `127.0.0.1:${forwarder.port}`, '--allowed-host', `localhost:${forwarder.port}`] : ['--no-host-networks']),
      ...(options.args ?? [])];
    const env: NodeJS.ProcessEnv = { ...process.env, VSERVER_ADMIN_PASSWORD: ADMIN_PASSWORD, VSERVER_RUN_DIR: runDir, ...options.env };
    if (options.netns) env.VSERVER_HOST_NETWORKS = '1';
    // ip execs the command, so the child's pid is vserverd's.
    const child = options.netns
      ? spawn('ip', ['netns', 'exec', options.netns.name, process.execPath, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const served = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`vserverd did not say it was listening within ${START_TIMEOUT_MS / 1000} s:\n${output}`));
      }, START_TIMEOUT_MS);
      child.once('exit', () => clearTimeout(timer));
      const onData = (chunk: Buffer): void => {
        output += chunk.toString();
        const match = /listening on (http:\/\/\S+?)\/? /.exec(output);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code, signal) => reject(new Error(`vserverd exited (${code ?? signal}) before listening:\n${output}`)));
    });
    let url = served;
    if (forwarder) {
      try {
        await forwarder.connect(options.netns!, runDir, Number(new URL(served).port));
      } catch (e) {
        forwarder.close();
        child.kill('SIGKILL');
        throw e;
      }
      url = forwarder.url;
    }
    let token: string;
    try {
      token = await login(url, 'admin', ADMIN_PASSWORD);
    } catch (e) {
      forwarder?.close();
      throw e;
    }
    const server = new TestServer(child, url, dataDir, runDir, token);
    server.forwarder = forwarder;
    server.output = output;
    const keep = (chunk: Buffer): void => { server.output += chunk.toString(); };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    return server;
  }

  /** Calls Interface.Member as the administrator (or with `token`); throws RpcError on a JSON-RPC error. */
  async call<T = unknown>(method: string, params: Record<string, unknown> = {}, token = this.adminToken): Promise<T> {
    return rpc<T>(this.url, method, params, token);
  }

  /** Stops vserverd with a signal and waits for it to exit; returns its exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) {
      this.forwarder?.close();
      return this.process.exitCode;
    }
    const exited = new Promise<number | null>((resolve) => this.process.once('exit', (code) => resolve(code)));
    this.process.kill(signal);
    const code = await exited;
    this.forwarder?.close();
    return code;
  }

  /** The pids of vserverd's child processes running `script` ('disk-job.js', 'file-worker.js'). */
  children(script: string): number[] {
    return run('pgrep', ['-P', String(this.process.pid), '-f', script]).stdout.split('\n').filter(Boolean).map(Number);
  }

  /** Removes the data and run folders; call after stop (and after the VMs are off). */
  remove(): void {
    fs.rmSync(this.dataDir, { recursive: true, force: true });
    fs.rmSync(this.runDir, { recursive: true, force: true });
  }
}

export async function login(url: string, user: string, password: string): Promise<string> {
  const response = await fetch(`${url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user, password }) });
  const body = await response.json() as { token?: string; error?: { message: string } };
  if (!response.ok || !body.token) throw new Error(`login as ${user} failed (${response.status}): ${body.error?.message ?? JSON.stringify(body)}`);
  return body.token;
}

let nextId = 1;
let lastRpcAt = 0;
const KEEP_ALIVE_SAFE_MS = 4_000;
export async function rpc<T = unknown>(url: string, method: string, params: Record<string, unknown>, token?: string): Promise<T> {
  // After an idle while (often a synchronous vsctl step that blocked this process), a kept-alive
  // socket may have been closed by vserverd (its keep-alive timeout is 5 s) without this process
  // having seen it yet: a short wait lets it see that, instead of sending on it ("other side closed").
  if (Date.now() - lastRpcAt > KEEP_ALIVE_SAFE_MS) await new Promise((resolve) => setTimeout(resolve, 20));
  const response = await fetch(`${url}/api/rpc`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params }),
  });
  const body = await response.json() as { result?: T; error?: { code: number; message: string; data: { name: string } } };
  lastRpcAt = Date.now();
  if (body.error) throw new RpcError(body.error.code, body.error.message, body.error.data);
  return body.result as T;
}
