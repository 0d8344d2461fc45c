// The shape of a member's implementation, and small helpers the handlers share.

import type { Call } from '../dispatch.js';
import { ApiError } from '../errors.js';

export type Handler = (call: Call) => unknown;
export type Handlers = Record<string, Handler>;

/** The user named, when the caller is that user or an administrator. */
export function selfOrAdministrator(call: Call, name: string, what: string): void {
  if (call.principal.user !== name && call.principal.role !== 'Administrator') {
    throw new ApiError('VM_E_ACCESS_DENIED', `only administrators may ${what} of another user (${name})`);
  }
}
