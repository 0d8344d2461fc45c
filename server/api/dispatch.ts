// JSON-RPC 2.0 over the object model: one request or a batch in, answers out. Every call is
// checked against its member's declaration (member, parameter names and types, "this"), its
// references are resolved, the caller's right on the object is checked, the member's handler
// runs, changes are written to the event log, and the result is checked against its declared type.

import type { Principal } from '../auth/users.js';
import type { Category } from '../event-log.js';
import { rpcErrorObject } from '../error-catalogue.js';
import { ApiError, invalidParams, toApiError } from '../errors.js';
import { describeRef, resolveRef } from './objects.js';
import { guardOf, SERVER_REF, vmIdOf } from '../references.js';
import type { TaskState } from '../tasks.js';
import { INTERFACES, SCHEMA } from './schema.js';
import type { MemberSpec } from './schema-types.js';
import { typeProblem } from './type-check.js';
import type { Services } from './services.js';

export interface RpcResponse { jsonrpc: '2.0'; id: unknown; result?: unknown; error?: ReturnType<typeof rpcErrorObject> }

export { typeProblem } from './type-check.js';

const SECRET_PARAMS = new Set(['password']);
/** Calls in one batch are run together; a bound keeps one request from holding the service. */
const MAX_BATCH = 1000;

/** Answers a request body (text): a single response, an array for a batch, or null when nothing is owed (notifications only). */
export async function handleRpcBody(body: string, principal: Principal, services: Services): Promise<RpcResponse | RpcResponse[] | null> {
  let message: unknown;
  try {
    message = JSON.parse(body);
  } catch (e) {
    return failure(null, new ApiError('VM_E_PARSE_ERROR', `the request is not JSON: ${(e as Error).message}`));
  }
  if (Array.isArray(message)) {
    if (message.length === 0) return failure(null, new ApiError('VM_E_INVALID_REQUEST', 'an empty batch'));
    if (message.length > MAX_BATCH) return failure(null, new ApiError('VM_E_INVALID_REQUEST', `a batch holds at most ${MAX_BATCH} calls; this one has ${message.length}`));
    const answers = await Promise.all(message.map((m) => handleRequest(m, principal, services)));
    const owed = answers.filter((a): a is RpcResponse => a !== null);
    return owed.length ? owed : null;
  }
  return handleRequest(message, principal, services);
}

export async function handleRequest(message: unknown, principal: Principal, services: Services): Promise<RpcResponse | null> {
  if (typeof message !== 'object' || message === null || (message as { jsonrpc?: unknown }).jsonrpc !== '2.0' || typeof (message as { method?: unknown }).method !== 'string') {
    return failure((message as { id?: unknown } | null)?.id ?? null, new ApiError('VM_E_INVALID_REQUEST', 'a request is {"jsonrpc": "2.0", "method": "Interface.Member", "params": {...}, "id": ...}'));
  }
  const { id, method, params } = message as { id?: unknown; method: string; params?: unknown };
  const isNotification = !('id' in message);
  try {
    const result = await call(method, params, principal, services);
    return isNotification ? null : { jsonrpc: '2.0', id, result };
  } catch (e) {
    return isNotification ? null : failure(id ?? null, toApiError(e));
  }
}

/** Performs one call; throws ApiError. */
export async function call(method: string, rawParams: unknown, principal: Principal, services: Services): Promise<unknown> {
  const [iface, member, extra] = method.split('.');
  // Own properties only: "constructor" or "__proto__" must not reach Object's members.
  const spec = extra === undefined && Object.hasOwn(SCHEMA, iface) && Object.hasOwn(SCHEMA[iface].members, member ?? '') ? SCHEMA[iface].members[member] : undefined;
  if (!spec) throw new ApiError('VM_E_METHOD_NOT_FOUND', `there is no method ${method}${suggestion(iface, member)}`);
  if (rawParams !== undefined && (typeof rawParams !== 'object' || rawParams === null || Array.isArray(rawParams))) {
    throw invalidParams(`${method} takes its parameters by name, as an object`);
  }
  const given = { ...(rawParams as Record<string, unknown> | undefined) };
  // A call about a VM or a task of another host is answered there (docs/cluster.md, "Forwarding").
  const forwarder = principal.answerHere ? null : services.forwarder;
  if (forwarder) {
    const host = iface === 'VirtualServer' ? await forwarder.hostForVms(method, vmParams(spec, given))
      : typeof given.this === 'string' ? await forwarder.hostFor(given.this, member) : null;
    if (host) return forwarder.send(host, method, given, principal);
  }

  const thisRef = takeThis(iface, method, given);
  const self = iface === 'VirtualServer' ? null : await resolveRef(services, iface, thisRef);
  const { params, refs } = await checkParams(method, spec, given, services);

  const guarded = spec.rightOn ? refs[spec.rightOn] : thisRef;
  // A task is guarded by the object it acts on (its VM), not by the server.
  const target = iface === 'Task' ? guardOf((self as TaskState).object ?? SERVER_REF) : guardOf(guarded);
  if (spec.administratorsOnly && principal.role !== 'Administrator') deny(principal, method, target, services, 'administrators only');
  if (!services.access.rightsOn(principal, target).has(spec.right)) deny(principal, method, target, services, `the "${spec.right}" right`);

  const change = isChange(member, spec);
  const label = change ? describeRef(services, guarded) : ''; // before the call: it may delete the object
  const result = (await INTERFACES[iface].members[member].handler({ principal, services, thisRef, self, params, refs })) ?? null;
  if (change) audit(services, principal, method, guarded, label, given);
  // A result that breaks its declaration is a bug here, not the caller's: it is logged and reported as internal.
  const problem = typeProblem(spec.returns, result, 'result');
  if (problem) {
    console.error(`vserverd: ${method} returned a result that does not fit its declaration: ${problem}`);
    throw new Error(`${method} returned a result that does not fit its declaration`);
  }
  return result;
}

/** The well-formed VM references among a call's parameters, as its declaration types them (checked later, with the rest). */
function vmParams(spec: MemberSpec, given: Record<string, unknown>): string[] {
  const refs: string[] = [];
  for (const [name, p] of Object.entries(spec.params ?? {})) {
    const value = given[name];
    if (p.type === 'ref' && p.interface === 'VirtualMachine' && typeof value === 'string') refs.push(value);
    if (p.type === 'array' && p.items.type === 'ref' && p.items.interface === 'VirtualMachine' && Array.isArray(value)) {
      refs.push(...value.filter((v): v is string => typeof v === 'string'));
    }
  }
  return refs.filter((r) => vmIdOf(r) !== null);
}

function takeThis(iface: string, method: string, given: Record<string, unknown>): string {
  const thisRef = given.this;
  delete given.this;
  if (iface === 'VirtualServer') {
    if (thisRef !== undefined && thisRef !== SERVER_REF) throw invalidParams(`${method} takes no "this": the server is implied`);
    return SERVER_REF;
  }
  if (typeof thisRef !== 'string' || !thisRef) throw invalidParams(`${method} needs "this": a reference such as ${SCHEMA[iface].ref}`);
  return thisRef;
}

async function checkParams(method: string, spec: MemberSpec, given: Record<string, unknown>, services: Services): Promise<{ params: Record<string, unknown>; refs: Record<string, string> }> {
  const declared = spec.params ?? {};
  const unknown = Object.keys(given).filter((k) => !Object.hasOwn(declared, k));
  if (unknown.length) {
    const takes = Object.keys(declared);
    const self = method.startsWith('VirtualServer.') ? '' : '"this"';
    const all = [...(self ? [self] : []), ...takes];
    throw invalidParams(`${method} has no parameter ${unknown.map((k) => `"${k}"`).join(', ')}; it takes ${all.length ? all.join(', ') : 'none'}`);
  }
  const params: Record<string, unknown> = {};
  const refs: Record<string, string> = {};
  for (const [name, p] of Object.entries(declared)) {
    const value = given[name];
    if (value === undefined || value === null) {
      if (!p.optional) throw invalidParams(`${method} needs "${name}": ${p.doc}`, { param: name });
      continue;
    }
    const problem = typeProblem(p, value);
    if (problem) throw invalidParams(`${method}: "${name}" ${problem}`, { param: name });
    if (p.type === 'ref') {
      refs[name] = value as string;
      params[name] = await resolveRef(services, p.interface, value as string);
    } else if (p.type === 'array' && p.items.type === 'ref') {
      // A list of references (BackupVirtualMachines' vms) reaches the handler resolved, each checked as one.
      const { interface: iface } = p.items;
      params[name] = await Promise.all((value as string[]).map((r) => resolveRef(services, iface, r)));
    } else {
      params[name] = value;
    }
  }
  return { params, refs };
}

function deny(principal: Principal, method: string, target: string, services: Services, needed: string): never {
  const on = describeRef(services, target);
  services.events.log('Security', 'Warning', `${principal.user} was refused ${method} on ${on}: it needs ${needed}`, principal.user, target);
  throw new ApiError('VM_E_ACCESS_DENIED', `${principal.user} (${principal.role}) may not call ${method} on ${on}: it needs ${needed}`);
}

/** Methods that change nothing; GetSerialOutput needs control (a console may show secrets) but a script polls it. */
const READ_ONLY_METHODS = new Set(['FindVirtualMachine', 'GetHardDisk', 'GetEvents', 'GetFiles', 'WaitForCompletion', 'GetSerialOutput']);
function isChange(member: string, spec: MemberSpec): boolean {
  return !READ_ONLY_METHODS.has(member) && (spec.right !== 'read' || !member.startsWith('get_'));
}

/** Every change goes to the event log: who did what to which object, with its parameters (never passwords). */
function audit(services: Services, principal: Principal, method: string, object: string, label: string, given: Record<string, unknown>): void {
  const shown = Object.entries(given).map(([k, v]) => `${k}=${SECRET_PARAMS.has(k) ? '(hidden)' : JSON.stringify(v)}`).join(' ');
  const [iface] = method.split('.');
  const category: Category = iface === 'HardDisk' || /VirtualHardDisk$/.test(method) ? 'Virtual Disk'
    : iface === 'Security' || /User|Token/.test(method) ? 'Security'
      : guardOf(object) === SERVER_REF ? 'Virtual Server' : 'Virtual Machine';
  // A VM's parts are logged under the VM, so that the VM's events include them.
  const logged = object === SERVER_REF ? null : vmIdOf(object) ? guardOf(object) : object;
  services.events.log(category, 'Information', `${method} on ${label}${shown ? ` (${shown})` : ''}`, principal.user, logged);
}

function failure(id: unknown, error: ApiError): RpcResponse {
  return { jsonrpc: '2.0', id, error: rpcErrorObject(error.errorName, error.message, error.details) };
}

function suggestion(iface: string | undefined, member: string | undefined): string {
  if (!iface || !Object.hasOwn(SCHEMA, iface)) return ` (interfaces: ${Object.keys(SCHEMA).join(', ')})`;
  const lower = (member ?? '').toLowerCase();
  const close = Object.keys(SCHEMA[iface].members).filter((m) => m.toLowerCase().includes(lower) || lower.includes(m.toLowerCase().replace(/^(get|put)_/, '')));
  return close.length ? `; did you mean ${close.slice(0, 5).map((m) => `${iface}.${m}`).join(', ')}?` : ` (GET /api/schema lists ${iface}'s members)`;
}
