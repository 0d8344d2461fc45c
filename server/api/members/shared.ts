// What the member files share: the examples' objects, the path parameter, and the checks and
// disk tasks several handlers make.

import os from 'node:os';
import { lockHolder } from '../../../storage/vhd/index.js';
import { hardDisks } from '../../../vmm/config.js';
import { type DiskJobArgs, type DiskJobResult, type DiskOperation, runDiskJob } from '../../disk-jobs.js';
import type { VmRecord } from '../../machines.js';
import { ApiError } from '../../errors.js';
import { type InterfaceName, param, type Call } from '../member-types.js';
import { ref, type Reference } from '../../references.js';
import type { ParamSpec } from '../schema-types.js';
import type { ErrorName } from '../../error-catalogue.js';

type AnyInterfaceCall = Call<InterfaceName, unknown>;

/** The examples' objects. */
export const VM_EXAMPLE = 'VirtualMachine/7d8e5c1a-3b9f-4e2d-a6c0-1f2e3d4c5b6a';
export const VM_ID_EXAMPLE = VM_EXAMPLE.slice('VirtualMachine/'.length);
export const NETWORK_ID_EXAMPLE = '5c2d9e4a-1b7f-4a3e-8d6c-2e1f0a9b8c7d';
export const NETWORK_EXAMPLE = `VirtualNetwork/${NETWORK_ID_EXAMPLE}`;
export const DISK_EXAMPLE = 'HardDisk//var/lib/vserver/disks/web.vhd';

export const CONFIG_ERRORS: readonly ErrorName[] = ['VM_E_VM_RUNNING', 'VM_E_VM_SAVED', 'VM_E_CONFIG_INVALID'];

/** A file path parameter, checked against the storage roots by the handler. */
export function path(doc: string): ParamSpec & { type: 'string' };
export function path(doc: string, optional: true): ParamSpec & { type: 'string'; optional: true };
export function path(doc: string, optional?: true): ParamSpec & { type: 'string' } {
  const full = `${doc} Relative paths are taken from the first storage root; paths outside the storage roots are refused.`;
  return optional ? param({ type: 'string', maxLength: 4096 }, full, optional) : param({ type: 'string', maxLength: 4096 }, full);
}

/** The user named, when the caller is that user or an administrator. */
export function selfOrAdministrator(call: AnyInterfaceCall, name: string, what: string): void {
  if (call.principal.user !== name && call.principal.role !== 'Administrator') {
    throw new ApiError('VM_E_ACCESS_DENIED', `only administrators may ${what} of another user (${name})`);
  }
}

/** A disk file to be written inside the storage roots; one that exists already is refused (VHD_E_EXISTS). */
export function newDiskFile(call: AnyInterfaceCall, input: string): Promise<string> {
  return call.services.files.run({ op: 'new-file', input, kind: 'new disk' });
}

/**
 * Starts a cancelable disk operation on `object` in a task with its progress, in a disk job
 * process of its own; the task's result is what the engine returns, or what `result` makes of it.
 */
export function diskTask<Op extends DiskOperation>(call: AnyInterfaceCall, object: string, description: string, op: Op, args: DiskJobArgs<Op>,
  result: (value: DiskJobResult<Op>) => object | void = (value) => value): Reference {
  const task = call.services.tasks.start(description, object, call.principal.user, { cancelable: true }, async (handle) =>
    result(await runDiskJob(op, args, {
      signal: handle.signal,
      onProgress: (done, total) => handle.progress(total ? (done / total) * 100 : 0, undefined, done),
    })));
  return ref('Task', task.id);
}

/** The VMs that have `file` attached for a hard disk, whatever their state. */
export function vmsWithDisk(call: AnyInterfaceCall, file: string): VmRecord[] {
  return call.services.machines.list().filter((vm) => hardDisks(vm.config).some((d) => d.path === file));
}

/** Who holds `file` open for writing, for a message: a VM by its name, a tool by the name it gives; null when nobody does. */
function writerOf(call: AnyInterfaceCall, file: string): string | null {
  const owner = lockHolder(file);
  if (!owner) return null;
  const { machines } = call.services;
  const vm = owner.host === os.hostname() ? machines.list().find((v) => machines.status(v.id)?.workerPid === owner.pid) : undefined;
  return vm ? `the VM ${vm.name}` : owner.holder;
}

/** The disk must not be open for writing by a VM or another tool while it is changed. */
export function refuseInUse(call: AnyInterfaceCall, file: string): void {
  const writer = writerOf(call, file);
  if (writer) throw new ApiError('VM_E_DRIVE_IN_USE', `${file} is in use by ${writer}; turn that VM off (or stop that tool) first`);
}
