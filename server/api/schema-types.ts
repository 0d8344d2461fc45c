// The shape of the object model's declaration (the member records under server/api/members,
// viewed without their handlers as SCHEMA in server/api/schema.ts): interfaces, their members,
// the parameters and results of each, and the access right each needs. Validation of calls and
// of results, GET /api/schema, docs/api.md and vsctl's help are all read from values of these types.

import type { Right } from '../auth/rights.js';
import type { ErrorName } from '../error-catalogue.js';

export { RIGHTS, type Right } from '../auth/rights.js';

export type TypeSpec = (
  | { type: 'string'; maxLength?: number; pattern?: string }
  | { type: 'integer'; min?: number; max?: number }
  | { type: 'boolean' }
  | { type: 'enum'; values: readonly string[] }
  | { type: 'ref'; interface: string }
  | { type: 'array'; items: TypeSpec }
  /** A JSON object: with `fields`, exactly those (a result, or a parameter such as put_HighAvailability's value); without, any object. */
  | { type: 'object'; fields?: Record<string, FieldSpec> }
  | { type: 'null' }
) & {
  /** null is a value too ("or null" in the reference). */
  nullable?: boolean;
};

/** A field of an object result. */
export type FieldSpec = TypeSpec & { doc: string; optional?: boolean };

export type ParamSpec = TypeSpec & { doc: string; optional?: boolean };

export interface MemberSpec {
  /** get_X reads a property, put_X writes it (param "value"), anything else is a method. */
  doc: string;
  params?: Record<string, ParamSpec>;
  returns: TypeSpec;
  /** The right the caller needs on the object the call acts on ("this", or the server). */
  right: Right;
  /** Check the right on the object this parameter names instead (VirtualServer.DeleteVirtualMachine's "vm"). */
  rightOn?: string;
  /** Only administrators may call it, whatever the access entries say. */
  administratorsOnly?: boolean;
  /** The call returns a Task reference at once; the work goes on in the task. */
  task?: boolean;
  /** Error names this member may return besides the common ones. */
  errors?: readonly ErrorName[];
  example: { params: Record<string, unknown>; result: unknown };
}

export interface InterfaceSpec {
  doc: string;
  /** How a reference to one of these objects is built: "VirtualMachine/<id>". */
  ref: string;
  members: Record<string, MemberSpec>;
}

export type Schema = Record<string, InterfaceSpec>;
