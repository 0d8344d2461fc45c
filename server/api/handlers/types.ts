// The shape of a member's implementation, and small helpers the handlers share.

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

/** Starts a cancelable disk operation on `object` as a task with its progress; what the work returns is the task's result. */
export function diskTask(call: Call, object: string, description: string, work: (signal: AbortSignal, onProgress: (done: number, total: number) => void) => Promise<unknown>): Reference {
  const task = call.services.tasks.start(description, object, call.principal.user, { cancelable: true }, (handle) =>
    work(handle.signal, (done, total) => handle.progress(total ? (done / total) * 100 : 0)));
  return ref('Task', task.id);
}
