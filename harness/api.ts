// The harness speaks to each host's vserverd as a user would: JSON-RPC over HTTP (docs/api-guide.md),
// logged in as the administrator, through the relay into the host's namespace.

import type { Relay } from './relay.js';
import { HarnessError } from './namespaces.js';
import { ADMIN_PASSWORD } from './topology.js';

export interface Ref { $ref: string }

export class ApiCallError extends HarnessError {
  constructor(readonly method: string, message: string, readonly errorName: string) {
    super(`${method}: ${errorName}: ${message}`);
  }
}

let nextId = 1;

export class HostApi {
  private token: string | null = null;
  constructor(private readonly relay: Relay, readonly target: string) {}

  private async login(): Promise<string> {
    const r = await this.relay.post<{ token?: string; error?: { message: string } }>(this.target, '/api/login', { user: 'admin', password: ADMIN_PASSWORD });
    if (r.status !== 200 || !r.body.token) throw new HarnessError(`login at ${this.target} failed (${r.status}): ${r.body.error?.message ?? ''}`);
    this.token = r.body.token;
    return this.token;
  }

  async call<T = unknown>(method: string, params: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<T> {
    const token = this.token ?? await this.login();
    const r = await this.relay.post<{ result?: T; error?: { message: string; data?: { name?: string } } }>(this.target, '/api/rpc',
      { jsonrpc: '2.0', id: nextId++, method, params }, { authorization: `Bearer ${token}` }, timeoutMs);
    if (r.status === 401) { // a restarted vserverd forgot the session
      this.token = null;
      return this.call(method, params, timeoutMs);
    }
    if (r.body.error) throw new ApiCallError(method, r.body.error.message, r.body.error.data?.name ?? 'unknown');
    return r.body.result as T;
  }

  /** Runs a method that answers a Task and waits for it; throws with the task's error. */
  async task<T = unknown>(method: string, params: Record<string, unknown>, timeoutMs = 120_000): Promise<T> {
    const task = await this.call<Ref>(method, params);
    const done = await this.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs }, timeoutMs + 5_000);
    if (!done) throw new HarnessError(`${method} (${task.$ref}) did not finish within ${timeoutMs} ms`);
    const error = await this.call('Task.get_Error', { this: task.$ref });
    if (error) throw new HarnessError(`${method} (${task.$ref}) failed: ${JSON.stringify(error)}`);
    return this.call<T>('Task.get_Result', { this: task.$ref });
  }
}
