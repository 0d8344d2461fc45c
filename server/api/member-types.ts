// How a member of the object model is declared beside its handler (server/api/members/*), and
// the types that make the handler's call typed by the declaration: the parameters' TypeSpecs
// give the types of call.params (a ref parameter its resolved object), the interface gives
// call.self, and `returns` gives the type the handler must return. No casts in the handlers.

import type { Principal } from '../auth/users.js';
import type { Right } from '../auth/rights.js';
import type { VmRecord } from '../vm-record.js';
import type { NetworkRecord } from '../network-record.js';
import type { TaskState } from '../tasks.js';
import type { ErrorName } from '../error-catalogue.js';
import type { ClusterObject, ConnectionObject, DriveObject, HostObject, IndexedObject, SecurityObject, SnapshotObject, VmPartObject } from './objects.js';
import type { Reference } from '../references.js';
import type { FieldSpec, MemberSpec, ParamSpec, TypeSpec } from './schema-types.js';
import type { Services } from './services.js';

/** What "this", or a ref parameter, of each interface resolves to (server/api/objects.ts). */
export interface ObjectOf {
  VirtualServer: null;
  VirtualMachine: VmRecord;
  HardDiskConnection: ConnectionObject;
  DVDROMDrive: DriveObject;
  SCSIController: IndexedObject;
  NetworkAdapter: IndexedObject;
  GuestOS: VmPartObject;
  Display: VmPartObject;
  Task: TaskState;
  /** The disk's real path. */
  HardDisk: string;
  Security: SecurityObject;
  Snapshot: SnapshotObject;
  VirtualNetwork: NetworkRecord;
  DHCPVirtualNetworkServer: NetworkRecord;
  Cluster: ClusterObject;
  Host: HostObject;
}
export type InterfaceName = keyof ObjectOf;

/** A parameter's value reaches the handler resolved; a result's reference goes out in {"$ref"}. */
type Side = 'param' | 'result';
type Plain<T, S extends Side> =
  T extends { type: 'string' } ? string
    : T extends { type: 'integer' } ? number
      : T extends { type: 'boolean' } ? boolean
        : T extends { type: 'enum'; values: readonly (infer V)[] } ? V
          : T extends { type: 'ref'; interface: infer I extends InterfaceName } ? (S extends 'param' ? ObjectOf[I] : Reference)
            : T extends { type: 'array'; items: infer E } ? (S extends 'param' ? ValueOf<E, S>[] : readonly ValueOf<E, S>[])
              : T extends { type: 'object'; fields: infer F } ? FieldsOf<F, S>
                : T extends { type: 'object' } ? object
                  : T extends { type: 'null' } ? null : never;
/** The value a TypeSpec describes. */
export type ValueOf<T, S extends Side = 'param'> = T extends { nullable: true } ? Plain<T, S> | null : Plain<T, S>;
type IsOptional<T> = T extends { optional: true } ? true : false;
/** An object of named values, those declared optional with "?". */
type OptionalKeys<F> = { [K in keyof F]: IsOptional<F[K]> extends true ? K : never }[keyof F];
export type FieldsOf<F, S extends Side = 'param'> =
  { [K in Exclude<keyof F, OptionalKeys<F>>]: ValueOf<F[K], S> }
  & { [K in OptionalKeys<F>]?: ValueOf<F[K], S> };
export type ParamsOf<P> = FieldsOf<P, 'param'>;
/** What a handler returns: nothing (null) for a null result. */
export type ResultOf<R> = R extends { type: 'null' } ? null | void : ValueOf<R, 'result'>;

/** What the handler of a member of interface I with parameters P receives. */
export interface Call<I extends InterfaceName, P = NoParams> {
  principal: Principal;
  services: Services;
  /** The reference given for "this" ("VirtualServer" for the server's members). */
  thisRef: string;
  self: ObjectOf[I];
  params: ParamsOf<P>;
  /** The references given for ref-typed parameters, unresolved. */
  refs: Record<string, string>;
}
export type NoParams = Record<never, never>;
export type Handler<I extends InterfaceName, P, R> = (call: Call<I, P>) => ResultOf<R> | Promise<ResultOf<R>>;

/** The call the dispatcher builds, before it knows the member. */
export interface AnyCall { principal: Principal; services: Services; thisRef: string; self: unknown; params: Record<string, unknown>; refs: Record<string, string> }
/** A member's declaration with its handler. */
export interface MemberRecord extends MemberSpec {
  // A method, so that each member's typed handler fits the one shape the dispatcher calls.
  handler(call: AnyCall): unknown;
}
export interface InterfaceRecord { doc: string; ref: string; members: Record<string, MemberRecord> }

/* TypeSpec builders that keep their literal types, so that ValueOf can read them. */
export const string: { type: 'string' } = { type: 'string' };
export const integer: { type: 'integer' } = { type: 'integer' };
export const boolean: { type: 'boolean' } = { type: 'boolean' };
export const nothing: { type: 'null' } = { type: 'null' };
export const refOf = <const I extends InterfaceName>(iface: I): { type: 'ref'; interface: I } => ({ type: 'ref', interface: iface });
export const refsOf = <const I extends InterfaceName>(iface: I): { type: 'array'; items: { type: 'ref'; interface: I } } => ({ type: 'array', items: refOf(iface) });
export const oneOf = <const V extends readonly string[]>(values: V): { type: 'enum'; values: V } => ({ type: 'enum', values });
export const listOf = <const T extends TypeSpec>(items: T): { type: 'array'; items: T } => ({ type: 'array', items });
export const orNull = <const T extends TypeSpec>(type: T): T & { nullable: true } => ({ ...type, nullable: true });
export const object = <const F extends Record<string, FieldSpec>>(fields: F): { type: 'object'; fields: F } => ({ type: 'object', fields });
/** Any JSON object (a document whose shape is described elsewhere). */
export const anyObject: { type: 'object' } = { type: 'object' };

/** A parameter, or a field of an object result, with its doc; optional ones may be left out. */
export function param<const T extends TypeSpec>(type: T, doc: string): T & { doc: string };
export function param<const T extends TypeSpec>(type: T, doc: string, optional: true): T & { doc: string; optional: true };
export function param(type: TypeSpec, doc: string, optional?: true): ParamSpec {
  return { ...type, doc, ...(optional ? { optional } : {}) };
}
export const field = param;
const valueParam = (type: TypeSpec): ParamSpec => ({ ...type, doc: 'The new value.' });

interface MethodSpec<I extends InterfaceName, P, R> {
  params?: P;
  returns: R;
  right: Right;
  rightOn?: string;
  administratorsOnly?: boolean;
  errors?: readonly ErrorName[];
  example: { params: Record<string, unknown>; result: unknown };
  handler: Handler<I, P, R>;
}

/**
 * The declaration helpers of interface I, whose examples act on `self` (null for the server):
 * get (a property read), put (a property write), method, and task (a method that returns a Task).
 */
export function membersOf<I extends InterfaceName>(self: string | null) {
  const withThis = (params: Record<string, unknown>): Record<string, unknown> => (self ? { this: self, ...params } : params);
  return {
    /** A property read: needs "read" on the object unless `right` says otherwise. */
    get<const R extends TypeSpec>(doc: string, returns: R, result: unknown, handler: Handler<I, NoParams, R>, options: { right?: Right; administratorsOnly?: boolean } = {}): MemberRecord {
      return { doc, returns, right: options.right ?? 'read', ...(options.administratorsOnly ? { administratorsOnly: true } : {}), example: { params: withThis({}), result }, handler };
    },
    /** A property write: "value" is checked against `type`; needs "change" on the object. */
    put<const T extends TypeSpec>(doc: string, type: T, value: unknown, handler: Handler<I, { value: T & { doc: string } }, typeof nothing>, errors?: readonly ErrorName[]): MemberRecord {
      return { doc, params: { value: valueParam(type) }, returns: nothing, right: 'change', errors, example: { params: withThis({ value }), result: null }, handler };
    },
    method<const P extends Record<string, ParamSpec> = NoParams, const R extends TypeSpec = typeof nothing>(doc: string, spec: MethodSpec<I, P, R>): MemberRecord {
      return { doc, ...spec, example: { params: withThis(spec.example.params), result: spec.example.result } };
    },
    /** A member that starts a long operation and returns its Task at once. */
    task<const P extends Record<string, ParamSpec>>(doc: string, right: Right, params: P, exampleParams: Record<string, unknown>, handler: Handler<I, P, { type: 'ref'; interface: 'Task' }>, errors?: readonly ErrorName[]): MemberRecord {
      return { doc, params, returns: refOf('Task'), right, task: true, errors, example: { params: withThis(exampleParams), result: { $ref: TASK_EXAMPLE } }, handler };
    },
  };
}

/** The examples' task. */
export const TASK_EXAMPLE = 'Task/4f1c2b3a-9e8d-4c7b-b6a5-0e1d2c3b4a59';
