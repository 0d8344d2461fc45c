// The shape of a member's implementation, and small helpers the handlers share.

import os from 'node:os';
import { lockHolder } from '../../../storage/vhd/index.js';
import { hardDisks } from '../../../vmm/config.js';
import { type DiskJobArgs, type DiskJobResult, type DiskOperation, runDiskJob } from '../../disk-jobs.js';
import type { VmRecord } from '../../machines.js';
import type { Call } from '../dispatch.js';
import { ApiError } from '../errors.js';
import { ref, type Reference } from '../objects.js';

export type Handler = (call: Call) => unknown;
export type Handlers = Record<string, Handler>;

/** The user named, when the caller is that user or an administrator. */
export function selfOrAdministrator(call: Call, name: string, what: string): void {
  if (call.principal.user !== name && call.principal.role !== 'Administrator') {
    throw new ApiError('VM_E_ACCESS_DENIED', `only administrators may ${what} of another user (${name})`);
  }
}

/** A disk file to be written inside the storage roots; one that exists already is refused (VHD_E_EXISTS). */
export function newDiskFile(call: Call, input: unknown): Promise<string> {
  return call.services.files.run({ op: 'new-file', input: input as string, kind: 'new disk' });
}

/**
 * Starts a cancelable disk operation on `object` as a task with its progress, in a disk job
 * process of its own; the task's result is what the engine returns, or what `result` makes of it.
 */
export function diskTask<Op extends DiskOperation>(call: Call, object: string, description: string, op: Op, args: DiskJobArgs<Op>,
  result: (value: DiskJobResult<Op>) => unknown = (value) => value): Reference {
  const task = call.services.tasks.start(description, object, call.principal.user, { cancelable: true }, async (handle) =>
    result(await runDiskJob(op, args, {
      signal: handle.signal,
      onProgress: (done, total) => handle.progress(total ? (done / total) * 100 : 0, undefined, done),
    })));
  return ref('Task', task.id);
}

/** The VMs that have `file` attached as a hard disk, whatever their state. */
export function vmsWithDisk(call: Call, file: string): VmRecord[] {
  return call.services.machines.list().filter((vm) => hardDisks(vm.config).some((d) => d.path === file));
}

/** Who holds `file` open for writing, for a message: a VM by its name, a tool as it names itself; null when nobody does. */
function writerOf(call: Call, file: string): string | null {
  const owner = lockHolder(file);
  if (!owner) return null;
  const { machines } = call.services;
  const vm = owner.host === os.hostname() ? machines.list().find((v) => machines.status(v.id)?.workerPid === owner.pid) : undefined;
  return vm ? `the VM ${vm.name}` : owner.holder;
}

/** The disk must not be open for writing by a VM or another tool while it is changed. */
export function refuseInUse(call: Call, file: string): void {
  const writer = writerOf(call, file);
  if (writer) throw new ApiError('VM_E_DRIVE_IN_USE', `${file} is in use by ${writer}; turn that VM off (or stop that tool) first`);
}
