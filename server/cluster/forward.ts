// API forwarding (docs/cluster.md, "Forwarding"): a call about a VM, a part of one, or a task
// that lives on another host of the cluster is sent to that host's API, signed as the caller
// (server/auth/host-signatures.ts), and its answer comes back as it was given: the result, or
// the same named error. So are VirtualServer calls whose VM parameters are all on one other host,
// and a host's actions (maintenance). Calls about VMs running here, or off and registered here
// while the host they last ran on is Down, are answered here; a host that is Down or does not
// answer in time is VM_E_HOST_UNREACHABLE.

import type { HostSignatures } from '../auth/host-signatures.js';
import type { Principal } from '../auth/users.js';
import { knownErrorName } from '../error-catalogue.js';
import { ApiError, invalidParams } from '../errors.js';
import type { Machines } from '../machines.js';
import { hostOfTask, splitRef, vmIdOf } from '../references.js';
import { isActive } from '../../vmm/state.js';
import { within } from '../../host/time.js';
import type { ClusterService } from './model.js';

/** How long a forwarded call may take, on top of the wait it asks for itself (Task.WaitForCompletion's timeoutMs). */
export const FORWARD_TIMEOUT_MS = 15_000;
/** How long a read of where VMs are may take: while etcd does not answer, calls are answered from this host's own view. */
export const LOOKUP_MS = 2_000;
const RPC_PATH = '/api/rpc';

interface RpcAnswer { result?: unknown; error?: { message?: string; data?: Record<string, unknown> } }

export class CallForwarder {
  /** `signatures`: null when this host has no cluster secret; it then forwards nothing (VM_E_CLUSTER_NO_SECRET). */
  constructor(private readonly cluster: ClusterService, private readonly machines: Machines, readonly signatures: HostSignatures | null) {}

  /**
   * The host that answers `member` of `reference` when it is another one; null: this host answers.
   * A host's properties are read from etcd here; its actions (maintenance) are that host's own.
   */
  async hostFor(reference: string, member: string): Promise<string | null> {
    const me = this.cluster.hostName;
    const { iface, rest } = splitRef(reference);
    if (iface === 'Task') {
      const host = hostOfTask(rest);
      return host && host !== me ? host : null;
    }
    if (iface === 'Host') {
      if (rest === me || member.startsWith('get_')) return null;
      // A host that is Down or unknown is answered here (VM_E_HOST_UNKNOWN).
      return await within(this.cluster.liveAddress(rest), LOOKUP_MS, 'etcd').catch(() => null) ? rest : null;
    }
    const vmId = vmIdOf(reference);
    return vmId ? this.hostForVm(vmId, false) : null;
  }

  /**
   * The host that answers about VM `vmId` when it is another one: its owner while it runs, else
   * (unless `registeredHereAnswers` and it is registered here) the live host it last ran on.
   */
  private async hostForVm(vmId: string, registeredHereAnswers: boolean): Promise<string | null> {
    const me = this.cluster.hostName;
    const local = this.machines.get(vmId);
    // A VM running here is answered here without asking etcd, which may be unavailable.
    if (local && isActive(this.machines.state(local))) return null;
    const place = await within(this.cluster.vmPlace(vmId), LOOKUP_MS, 'etcd').catch(() => null);
    if (!place) return null;
    if (place.owner) return place.owner === me ? null : place.owner;
    if (!place.lastHost || place.lastHost === me || (local && registeredHereAnswers)) return null;
    // Off everywhere: the host it last ran on knows it best (a saved state made there, say), while
    // that host lives; once it is Down, a VM registered here is answered here.
    if (!local) return place.lastHost;
    return await within(this.cluster.liveAddress(place.lastHost), LOOKUP_MS, 'etcd').catch(() => null) ? place.lastHost : null;
  }

  /**
   * The one host that answers a `VirtualServer` call about `vms` (the VM references among its
   * parameters); null: this host answers. A VM registered here and running nowhere else is this
   * host's (its catalog is what Unregister changes). VMs on several hosts are refused: a caller
   * splits the call.
   */
  async hostForVms(method: string, vms: string[]): Promise<string | null> {
    const hosts = new Map<string, string[]>();
    for (const vm of vms) {
      const vmId = vmIdOf(vm);
      const host = (vmId ? await this.hostForVm(vmId, true) : null) ?? this.cluster.hostName;
      hosts.set(host, [...hosts.get(host) ?? [], vm]);
    }
    if (hosts.size > 1) {
      const where = [...hosts].map(([host, refs]) => `${refs.join(', ')} on ${host}`).join('; ');
      throw invalidParams(`${method} names VMs of several hosts (${where}): call it once per host`, { hosts: [...hosts.keys()] });
    }
    const [host] = hosts.keys();
    return host === undefined || host === this.cluster.hostName ? null : host;
  }

  /** Sends the call to `host` as `principal` and returns its result, or throws its error. */
  async send(host: string, method: string, params: unknown, principal: Principal): Promise<unknown> {
    const me = this.cluster.hostName;
    if (!this.signatures) {
      throw new ApiError('VM_E_CLUSTER_NO_SECRET', `${method} is about an object on host ${host}, and this host (${me}) has no cluster secret to forward the call with (--cluster-secret-file); call ${host} itself, or give every host the secret`, { host });
    }
    const address = await within(this.cluster.liveAddress(host), LOOKUP_MS, 'etcd').catch((e: Error) => {
      throw unreachable(host, method, `its address cannot be read: ${e.message}`);
    });
    if (!address) throw unreachable(host, method, 'it is Down (its lease in etcd has expired)');
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method, params });
    const headers = { 'content-type': 'application/json', ...this.signatures.sign(host, RPC_PATH, body, principal.user, principal.role) };
    const waits = typeof (params as { timeoutMs?: unknown } | undefined)?.timeoutMs === 'number' ? (params as { timeoutMs: number }).timeoutMs : 0;
    let status: number;
    let text: string;
    try {
      const response = await fetch(`http://${address}${RPC_PATH}`, { method: 'POST', headers, body, signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS + waits) });
      status = response.status;
      text = await response.text();
    } catch (e) {
      const reason = (e as Error).name === 'TimeoutError' ? `no answer within ${(FORWARD_TIMEOUT_MS + waits) / 1000} s` : ((e as Error & { cause?: Error }).cause ?? (e as Error)).message;
      throw unreachable(host, method, `${address}: ${reason}`);
    }
    let answer: RpcAnswer;
    try {
      answer = JSON.parse(text) as RpcAnswer;
    } catch {
      throw unreachable(host, method, `${address} answered HTTP ${status} without JSON: ${text.slice(0, 200)}`);
    }
    if (answer.error) {
      const { name, ...details } = answer.error.data ?? {};
      throw new ApiError(knownErrorName(name), answer.error.message ?? '', details);
    }
    return answer.result ?? null;
  }
}

function unreachable(host: string, method: string, why: string): ApiError {
  return new ApiError('VM_E_HOST_UNREACHABLE', `${method} is about an object on host ${host}, which cannot take the call: ${why}`, { host });
}
