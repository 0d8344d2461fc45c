// The grammar of object references ("VirtualMachine/<id>", "HardDiskConnection/<vm id>/scsi0-1",
// "Task/<uuid>@<host>", ...): how one is built and split, and which object's access entries guard it. Devices of a
// VM are guarded by the VM; disks, tasks without a VM, the cluster ("Cluster/<name>") and its
// hosts ("Host/<name>") and the server by the server. A leaf
// module: the access checks read it without loading the API.

import { randomUUID } from 'node:crypto';

export const SERVER_REF = 'VirtualServer';

/** An object in a result: {"$ref": "Interface/<id>"}. */
export interface Reference { $ref: string }
export const ref = (iface: string, id: string): Reference => ({ $ref: `${iface}/${id}` });

/** The interfaces whose objects are parts of one VM, named by "<Interface>/<vm id>...". */
const VM_PARTS = new Set(['HardDiskConnection', 'DVDROMDrive', 'SCSIController', 'NetworkAdapter', 'GuestOS', 'Display', 'Snapshot']);

/** The object whose access entries decide what may be done to `reference`. */
export function guardOf(reference: string): string {
  const [iface, ...rest] = reference.split('/');
  if (iface === 'VirtualMachine') return reference;
  if (VM_PARTS.has(iface)) return `VirtualMachine/${rest[0]}`;
  if (iface === 'Security') return guardOf(rest.join('/'));
  return SERVER_REF;
}

/** The VM a reference belongs to, if any (for tasks and events). */
export function vmIdOf(reference: string): string | null {
  const guard = guardOf(reference);
  return guard.startsWith('VirtualMachine/') ? guard.slice('VirtualMachine/'.length) : null;
}

export function splitRef(reference: string): { iface: string; rest: string } {
  const slash = reference.indexOf('/');
  return slash < 0 ? { iface: reference, rest: '' } : { iface: reference.slice(0, slash), rest: reference.slice(slash + 1) };
}

/**
 * A task's id: a UUID, and on a host of a cluster "@" and the host's name, so that any host can
 * tell where a task lives and forward calls about it there (server/cluster/forward.ts).
 */
export function newTaskId(host: string | null): string {
  return host ? `${randomUUID()}@${host}` : randomUUID();
}

/** The host a task's id names, or null for a task of a host without a cluster. */
export function hostOfTask(id: string): string | null {
  const at = id.lastIndexOf('@');
  return at < 0 ? null : id.slice(at + 1);
}
