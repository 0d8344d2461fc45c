// How vsctl talks to vserverd: which server (--url, $VSERVER_URL, the credentials file, the
// built-in default) and which token (--token, $VSERVER_TOKEN, the credentials file's entry for
// that server), JSON-RPC calls and batches over HTTP, tasks followed to their end, and the
// WebSocket's notifications.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { writeFileDurably } from '../../host/files.js';
import { progressBar, UsageError } from './terminal.js';

export const DEFAULT_URL = 'http://127.0.0.1:8080';

/**
 * A failed call: the server's error (name VM_E_..., VHD_E_...), or vsctl's own when the server
 * could not be asked (VSCTL_E_...). Exit status 1; --json prints {"error": {name, message, data}}.
 */
export class ApiCallError extends Error {
  constructor(name: string, message: string, readonly data: Record<string, unknown> = {}) {
    super(message);
    this.name = name;
  }
}

// ---------------------------------------------------------------------------------------------
// The credentials file

export interface ServerCredentials {
  token: string;
  user?: string;
}

export interface Credentials {
  servers: Record<string, ServerCredentials>;
  /** The server vsctl talks to when neither --url nor $VSERVER_URL says. */
  default?: string;
}

/** $VSERVER_CREDENTIALS, else ${XDG_CONFIG_HOME:-~/.config}/vserver/credentials.json. */
export function credentialsFile(env: NodeJS.ProcessEnv = process.env): string {
  if (env.VSERVER_CREDENTIALS) return path.resolve(env.VSERVER_CREDENTIALS);
  const config = env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : path.join(os.homedir(), '.config');
  return path.join(config, 'vserver', 'credentials.json');
}

/** The file's contents; a file that does not exist yet holds no servers. */
export function readCredentials(file: string): Credentials {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { servers: {} };
    throw new ApiCallError('VSCTL_E_CREDENTIALS', `cannot read the credentials file ${file}: ${(e as Error).message}`);
  }
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (e) {
    throw new ApiCallError('VSCTL_E_CREDENTIALS', `the credentials file ${file} is not JSON (${(e as Error).message}); fix it or remove it and run vsctl login`);
  }
  const d = document as Partial<Credentials> | null;
  if (typeof d !== 'object' || d === null || (d.servers !== undefined && (typeof d.servers !== 'object' || d.servers === null))) {
    throw new ApiCallError('VSCTL_E_CREDENTIALS', `the credentials file ${file} is not shaped as {"servers": {...}, "default": URL}`);
  }
  const servers: Record<string, ServerCredentials> = {};
  for (const [url, entry] of Object.entries(d.servers ?? {})) {
    if (entry && typeof entry.token === 'string') servers[url] = { token: entry.token, ...(typeof entry.user === 'string' ? { user: entry.user } : {}) };
  }
  return { servers, ...(typeof d.default === 'string' ? { default: d.default } : {}) };
}

/** Writes the file readable by its owner only (folder 0700, file 0600), all at once: a temporary file renamed over it. */
export async function writeCredentials(file: string, credentials: Credentials): Promise<void> {
  const folder = path.dirname(file);
  fs.mkdirSync(folder, { recursive: true, mode: 0o700 });
  const draft = path.join(folder, `.${path.basename(file)}.${process.pid}.tmp`);
  await writeFileDurably(file, `${JSON.stringify(credentials, null, 2)}\n`, { draft, mode: 0o600 });
}

/** "http://host:port" without a trailing slash; anything but http(s) is a usage error. */
export function normalizeUrl(text: string, from: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`${from}: "${text}" is not a URL (for example http://127.0.0.1:8080)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError(`${from}: "${text}" is not an http:// or https:// URL`);
  return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
}

export interface Connection {
  url: string;
  token: string | null;
  /** Where the URL and the token came from, to name them in messages. */
  urlFrom: string;
  tokenFrom: string | null;
}

/** The server and token a command uses: flags first, then the environment, then the credentials file. */
export function resolveConnection(flags: { url?: unknown; token?: unknown }, env: NodeJS.ProcessEnv = process.env): Connection {
  const file = credentialsFile(env);
  let credentials: Credentials | null = null;
  const stored = (): Credentials => (credentials ??= readCredentials(file));
  let url: string;
  let urlFrom: string;
  if (typeof flags.url === 'string') [url, urlFrom] = [normalizeUrl(flags.url, '--url'), '--url'];
  else if (env.VSERVER_URL) [url, urlFrom] = [normalizeUrl(env.VSERVER_URL, 'VSERVER_URL'), 'VSERVER_URL'];
  else if (stored().default) [url, urlFrom] = [normalizeUrl(stored().default!, file), file];
  else [url, urlFrom] = [DEFAULT_URL, 'the default'];
  let token: string | null = null;
  let tokenFrom: string | null = null;
  if (typeof flags.token === 'string') [token, tokenFrom] = [flags.token, '--token'];
  else if (env.VSERVER_TOKEN) [token, tokenFrom] = [env.VSERVER_TOKEN, 'VSERVER_TOKEN'];
  else if (stored().servers[url]) [token, tokenFrom] = [stored().servers[url].token, file];
  return { url, token, urlFrom, tokenFrom };
}

// ---------------------------------------------------------------------------------------------
// Calls

export type Params = Record<string, unknown>;
export type Outcome = { ok: true; result: unknown } | { ok: false; error: ApiCallError };

interface RpcError { code?: number; message?: string; data?: { name?: string; [key: string]: unknown } }
interface RpcResponse { jsonrpc?: string; id?: number | string | null; result?: unknown; error?: RpcError }

export function isRef(value: unknown): value is { $ref: string } {
  return typeof value === 'object' && value !== null && typeof (value as { $ref?: unknown }).$ref === 'string';
}

function rpcError(error: RpcError): ApiCallError {
  const { name, ...data } = error.data ?? {};
  return new ApiCallError(typeof name === 'string' ? name : `JSON-RPC ${error.code ?? 'error'}`, error.message ?? 'the call failed', data);
}

/** Why fetch failed, in words: "connection refused", "host not found", ... */
function networkReason(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  const code = cause?.code;
  if (code === 'ECONNREFUSED') return 'connection refused';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'host not found';
  if (code === 'ECONNRESET') return 'connection reset';
  if (code === 'ETIMEDOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') return 'connection timed out';
  return cause?.message ?? (error as Error).message;
}

export class ApiClient {
  private nextId = 1;

  constructor(readonly connection: Connection) {}

  get url(): string {
    return this.connection.url;
  }

  static fromFlags(flags: { url?: unknown; token?: unknown }): ApiClient {
    return new ApiClient(resolveConnection(flags));
  }

  unreachable(error: unknown): ApiCallError {
    return new ApiCallError('VSCTL_E_UNREACHABLE', `cannot reach vserverd at ${this.url}: ${networkReason(error)} (is it running? npm start)`, { url: this.url });
  }

  notLoggedIn(serverMessage?: string): ApiCallError {
    const { token, tokenFrom } = this.connection;
    const why = token ? ` the token from ${tokenFrom} was refused${serverMessage ? ` (${serverMessage})` : ''};` : '';
    return new ApiCallError('VM_E_NOT_AUTHENTICATED', `not logged in to ${this.url}:${why} run vsctl login, or set VSERVER_TOKEN`, { url: this.url });
  }

  /** POSTs JSON; returns the HTTP status, headers and parsed body. */
  async post(pathname: string, body: unknown, authenticated = true): Promise<{ status: number; headers: Headers; body: unknown }> {
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
    if (authenticated && this.connection.token) headers.authorization = `Bearer ${this.connection.token}`;
    let response: Response;
    try {
      response = await fetch(`${this.url}${pathname}`, { method: 'POST', headers, body: JSON.stringify(body) });
    } catch (e) {
      throw this.unreachable(e);
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new ApiCallError('VSCTL_E_BAD_RESPONSE', `vserverd at ${this.url} answered ${pathname} with HTTP ${response.status} and no JSON: ${text.slice(0, 200) || '(nothing)'}`, { status: response.status });
    }
    return { status: response.status, headers: response.headers, body: parsed };
  }

  private async rpc(body: unknown): Promise<unknown> {
    const response = await this.post('/api/rpc', body);
    if (response.status === 401) {
      const error = (response.body as RpcResponse | null)?.error;
      throw this.notLoggedIn(error?.message);
    }
    return response.body;
  }

  /** Calls Interface.Member; its result, or an ApiCallError carrying the server's error. */
  async call<T = unknown>(method: string, params: Params = {}): Promise<T> {
    const body = await this.rpc({ jsonrpc: '2.0', id: this.nextId++, method, params }) as RpcResponse;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ApiCallError('VSCTL_E_BAD_RESPONSE', `vserverd at ${this.url} answered ${method} with something that is not a JSON-RPC response`);
    if (body.error) throw rpcError(body.error);
    return body.result as T;
  }

  /** Several calls in one request (a JSON-RPC batch); one outcome per call, in the order asked. */
  async batch(calls: Array<[method: string, params: Params]>): Promise<Outcome[]> {
    if (calls.length === 0) return [];
    const first = this.nextId;
    this.nextId += calls.length;
    const body = await this.rpc(calls.map(([method, params], i) => ({ jsonrpc: '2.0', id: first + i, method, params })));
    if (!Array.isArray(body)) {
      const error = (body as RpcResponse | null)?.error;
      if (error) throw rpcError(error);
      throw new ApiCallError('VSCTL_E_BAD_RESPONSE', `vserverd at ${this.url} answered a batch with something that is not a list of responses`);
    }
    const byId = new Map((body as RpcResponse[]).map((r) => [r.id, r]));
    return calls.map(([method], i) => {
      const response = byId.get(first + i);
      if (!response) return { ok: false, error: new ApiCallError('VSCTL_E_BAD_RESPONSE', `vserverd at ${this.url} did not answer ${method} in a batch`) };
      return response.error ? { ok: false, error: rpcError(response.error) } : { ok: true, result: response.result };
    });
  }

  /** A batch whose every call must succeed: the results, or the first error. */
  async batchAll(calls: Array<[method: string, params: Params]>): Promise<unknown[]> {
    return (await this.batch(calls)).map((outcome) => {
      if (!outcome.ok) throw outcome.error;
      return outcome.result;
    });
  }

  /** Several properties of one object in one request: {get_Name: ..., get_State: ...}. */
  async properties(ref: string, iface: string, members: readonly string[]): Promise<Record<string, unknown>> {
    const results = await this.batchAll(members.map((m) => [`${iface}.${m}`, { this: ref }]));
    return Object.fromEntries(members.map((m, i) => [m, results[i]]));
  }
}

// ---------------------------------------------------------------------------------------------
// Login

export interface LoginResult {
  token: string;
  user: string;
  role?: string;
  expires?: string | null;
}

/** POST /api/login: a token for the user, or an ApiCallError (VM_E_LOGIN_FAILED, VM_E_TOO_MANY_ATTEMPTS). */
export async function login(url: string, user: string, password: string): Promise<LoginResult> {
  const client = new ApiClient({ url, token: null, urlFrom: '--url', tokenFrom: null });
  const response = await client.post('/api/login', { user, password }, false);
  const body = response.body as Partial<LoginResult> & { error?: { name?: string; message?: string } };
  if (response.status === 200 && typeof body.token === 'string') {
    return { token: body.token, user: typeof body.user === 'string' ? body.user : user, role: body.role, expires: body.expires ?? null };
  }
  const name = body.error?.name ?? (response.status === 429 ? 'VM_E_TOO_MANY_ATTEMPTS' : 'VM_E_LOGIN_FAILED');
  const retry = response.headers.get('retry-after');
  const message = `login to ${url} as ${user} failed: ${body.error?.message ?? `HTTP ${response.status}`}${response.status === 429 && retry ? ` (try again in ${retry} s)` : ''}`;
  throw new ApiCallError(name, message, { status: response.status, ...(retry ? { retryAfter: Number(retry) } : {}) });
}

/** The id part of a token "vst_<id>_<secret>", or null. */
export function tokenId(token: string): string | null {
  return /^vst_([0-9a-f]+)_/.exec(token)?.[1] ?? null;
}

// ---------------------------------------------------------------------------------------------
// Tasks

export interface TaskOutcome {
  task: string;
  description: string | null;
  isComplete: boolean;
  percentCompleted: number;
  result: unknown;
  error: { name: string; message: string } | null;
}

export interface FollowOptions {
  /** Draw a progress bar on stderr (when it is a terminal). */
  progress: boolean;
  /** Give up waiting after this long; wait as long as it takes when omitted. */
  timeoutMs?: number;
}

const SLICE_MS = 1000;

/** "Task/<id>" from a reference, or from the id alone. */
export function taskRef(text: string): string {
  return text.startsWith('Task/') ? text : `Task/${text}`;
}

/**
 * Waits for a task in slices of a second (WaitForCompletion), drawing its progress, and returns
 * how it ended. Ctrl-C stops the waiting, not the task, and says how to come back to it.
 */
export async function waitForTask(client: ApiClient, task: string, options: FollowOptions): Promise<TaskOutcome> {
  const active = options.progress && process.stderr.isTTY === true;
  const description = active ? await client.call<string>('Task.get_Description', { this: task }) : null;
  const bar = progressBar(description ?? task, active, () => '');
  const onInterrupt = (): void => {
    bar.end();
    process.stderr.write(`\nvsctl: stopped waiting; ${task} goes on in vserverd (vsctl task wait ${task})\n`);
    process.exit(130);
  };
  process.once('SIGINT', onInterrupt);
  const deadline = options.timeoutMs === undefined ? Infinity : Date.now() + options.timeoutMs;
  let percent = 0;
  try {
    for (;;) {
      const slice = Math.max(0, Math.min(SLICE_MS, deadline - Date.now()));
      const complete = await client.call<boolean>('Task.WaitForCompletion', { this: task, timeoutMs: Math.round(slice) });
      if (complete || Date.now() >= deadline) break;
      if (active) {
        percent = await client.call<number>('Task.get_PercentCompleted', { this: task });
        bar.update(percent, 100);
      }
    }
    const [isComplete, percentCompleted, error, result] = await client.batchAll([
      ['Task.get_IsComplete', { this: task }], ['Task.get_PercentCompleted', { this: task }],
      ['Task.get_Error', { this: task }], ['Task.get_Result', { this: task }],
    ]);
    if (isComplete && !error) bar.update(100, 100);
    return {
      task, description, isComplete: isComplete === true, percentCompleted: Number(percentCompleted ?? percent),
      result: result ?? null, error: (error as TaskOutcome['error']) ?? null,
    };
  } finally {
    process.off('SIGINT', onInterrupt);
    bar.end();
  }
}

/** Waits for a task; its result, or its error thrown (the task's own name: VM_E_..., VHD_E_...). */
export async function followTask(client: ApiClient, task: string, options: FollowOptions): Promise<unknown> {
  const outcome = await waitForTask(client, task, options);
  if (outcome.error) throw new ApiCallError(outcome.error.name, outcome.error.message, { task });
  if (!outcome.isComplete) {
    throw new ApiCallError('VSCTL_E_TIMEOUT', `${task} is still running (${outcome.percentCompleted}% done); vsctl task wait ${task} waits for it again`, { task, percentCompleted: outcome.percentCompleted });
  }
  return outcome.result;
}

// ---------------------------------------------------------------------------------------------
// Notifications over the WebSocket

export interface Notifications {
  close(): void;
  /** Settles when the connection ends: null when close() ended it, else why it ended. */
  closed: Promise<string | null>;
}

/** Opens GET /api/ws and hands every notification ({method, params} without an id) to onNotification. */
export function openNotifications(client: ApiClient, onNotification: (method: string, params: Record<string, unknown>) => void): Promise<Notifications> {
  const wsUrl = `${client.url.replace(/^http/, 'ws')}/api/ws`;
  const headers = client.connection.token ? { authorization: `Bearer ${client.connection.token}` } : undefined;
  const socket = new WebSocket(wsUrl, { headers });
  let closing = false;
  return new Promise((resolve, reject) => {
    socket.once('unexpected-response', (_request, response) => {
      let text = '';
      response.on('data', (chunk: Buffer) => { text += chunk.toString(); });
      response.on('end', () => {
        socket.terminate();
        if (response.statusCode === 401) {
          let message: string | undefined;
          try {
            message = (JSON.parse(text) as RpcResponse).error?.message;
          } catch { /* not JSON */ }
          reject(client.notLoggedIn(message));
        } else {
          reject(new ApiCallError('VSCTL_E_BAD_RESPONSE', `vserverd at ${client.url} refused the WebSocket /api/ws: HTTP ${response.statusCode}`));
        }
      });
    });
    socket.once('error', (error) => reject(client.unreachable({ cause: error })));
    socket.once('open', () => {
      socket.removeAllListeners('error');
      const closed = new Promise<string | null>((settle) => {
        socket.on('error', (error) => settle(`the connection to vserverd at ${client.url} failed: ${error.message}`));
        socket.on('close', (code, reason) => settle(closing ? null : `vserverd at ${client.url} closed the connection (${code}${reason.length ? ` ${reason.toString()}` : ''})`));
      });
      socket.on('message', (data) => {
        let message: { method?: unknown; params?: unknown; id?: unknown };
        try {
          message = JSON.parse(data.toString()) as typeof message;
        } catch {
          return;
        }
        if (typeof message.method === 'string' && message.id === undefined) onNotification(message.method, (message.params ?? {}) as Record<string, unknown>);
      });
      resolve({
        close() {
          closing = true;
          socket.close();
        },
        closed,
      });
    });
  });
}
