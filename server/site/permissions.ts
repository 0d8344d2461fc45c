// The access entries (Virtual Server's IVMSecurity) of the server and of each VM, for the Users
// and Permissions page: the entries of one object, adding (or replacing) the entry of a user or
// of everyone with a role, and removing one, all through the API's Security interface.

import { ApiError, toApiError } from '../errors.js';
import type { Right } from '../api/schema-types.js';
import { ROLES } from '../api/schema.js';
import type { AccessEntry } from '../auth/access.js';
import type { UserInfo } from '../auth/users.js';
import { type SiteContext, type SiteRequest, api } from './context.js';
import { visibleVms } from './events-page.js';

/** What each right allows, for the form's checkboxes. */
export const RIGHT_MEANINGS: Record<Right, string> = {
  read: 'see it, its state and its events',
  change: 'change its configuration (on the server: create VMs and disks)',
  control: 'turn it on and off, save, pause, reset; use its consoles',
  delete: 'remove it',
  changePermissions: 'change these access entries',
};

export interface PermissionsView {
  /** The objects that have entries: the server and every VM. */
  objects: { ref: string; label: string }[];
  object: string;
  label: string;
  /** Null when the object's entries could not be read, and why. */
  entries: AccessEntry[] | null;
  problem: string | null;
  /** Whom an entry may name: each user, and everyone with a role. */
  principals: { value: string; label: string }[];
}

/** The fields of the entry forms, keyed by the API's parameters and error names. */
export const ENTRY_FIELDS = { this: 'object', name: 'who', type: 'type', rights: 'rights', VM_E_USER_UNKNOWN: 'who', VM_E_OBJECT_UNKNOWN: 'object', VM_E_VM_UNKNOWN: 'object' };

export async function readPermissions(ctx: SiteContext, req: SiteRequest, object: string, users: UserInfo[]): Promise<PermissionsView> {
  const vms = await visibleVms(ctx, req);
  const objects = [{ ref: 'VirtualServer', label: 'The server (Virtual Server)' }, ...vms.map((vm) => ({ ref: `VirtualMachine/${vm.id}`, label: vm.name }))];
  const principals = [...users.map((u) => ({ value: u.name, label: `${u.name} (${u.role})` })), ...ROLES.map((role) => ({ value: `role:${role}`, label: `Everyone with the role ${role}` }))];
  const label = objects.find((o) => o.ref === object)?.label ?? object;
  try {
    return { objects, object, label, principals, entries: await api<AccessEntry[]>(ctx, req, 'Security.get_AccessRights', { this: await securityOf(ctx, req, object) }), problem: null };
  } catch (error) {
    return { objects, object, label, principals, entries: null, problem: toApiError(error).message };
  }
}

/** Adds (or replaces) the entry a posted form describes. */
export async function addEntry(ctx: SiteContext, req: SiteRequest, form: { object: string; who: string; type: string; rights: string[] }): Promise<void> {
  if (form.rights.length === 0) throw new ApiError('VM_E_INVALID_PARAMS', 'choose at least one right', { param: 'rights' });
  await api(ctx, req, 'Security.AddEntry', { this: await securityOf(ctx, req, form.object), name: form.who, type: form.type, rights: form.rights });
}

export async function removeEntry(ctx: SiteContext, req: SiteRequest, form: { object: string; who: string }): Promise<void> {
  await api(ctx, req, 'Security.RemoveEntry', { this: await securityOf(ctx, req, form.object), name: form.who });
}

/** The Security reference of the server or a VM, as the API names it. */
async function securityOf(ctx: SiteContext, req: SiteRequest, object: string): Promise<string> {
  if (object === 'VirtualServer') return (await api<{ $ref: string }>(ctx, req, 'VirtualServer.get_Security')).$ref;
  if (object.startsWith('VirtualMachine/')) return (await api<{ $ref: string }>(ctx, req, 'VirtualMachine.get_Security', { this: object })).$ref;
  throw new ApiError('VM_E_INVALID_PARAMS', `"${object}" is neither the server nor a virtual machine`, { param: 'this' });
}
