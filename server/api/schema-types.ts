// The shape of the object model's declaration (server/api/schema.ts): interfaces, their
// members, the parameters and results of each, and the access right each needs. Validation,
// GET /api/schema, docs/api.md and vsctl's help are all read from values of these types.

import type { ErrorName } from './error-catalogue.js';

/** Virtual Server's access rights (IVMAccessRights), checked on the object a call acts on. */
export const RIGHTS = ['read', 'change', 'control', 'delete', 'changePermissions'] as const;
export type Right = (typeof RIGHTS)[number];

export type TypeSpec =
  | { type: 'string'; maxLength?: number; pattern?: string }
  | { type: 'integer'; min?: number; max?: number }
  | { type: 'boolean' }
  | { type: 'enum'; values: readonly string[] }
  | { type: 'ref'; interface: string }
  | { type: 'array'; items: TypeSpec }
  /** A JSON object whose fields are described in prose (results only). */
  | { type: 'object'; fields?: Record<string, string> }
  | { type: 'null' };

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
