// The API's one error type. Each error has a stable name from the catalogue (error-catalogue.ts;
// Virtual Server's HRESULT names where it had one) carried in JSON-RPC's error.data.name, and a
// message naming the limit, file or state at fault. Errors from the VMM, the VHD engine and the
// storage roots keep their codes.

import { VmConfigError } from '../vmm/config.js';
import { VmError } from '../vmm/state.js';
import { VhdError } from '../storage/vhd/index.js';
import { StoragePathError } from './storage-roots.js';
import type { ErrorName } from './error-catalogue.js';

export class ApiError extends Error {
  constructor(readonly errorName: ErrorName, message: string, readonly details: Record<string, unknown> = {}) {
    super(message);
    this.name = 'ApiError';
  }
}

export const unknownObject = (ref: string): ApiError => new ApiError('VM_E_OBJECT_UNKNOWN', `there is no object ${ref}`, { ref });
export const invalidParams = (message: string, details: Record<string, unknown> = {}): ApiError => new ApiError('VM_E_INVALID_PARAMS', message, details);

/**
 * Any error thrown under a call, as the API reports it. What no layer names (a Node errno error,
 * a bug) becomes VM_E_INTERNAL: its message goes to the caller, and its stack to vserverd's
 * standard error (the journal), where the caller's report can be matched with the cause.
 */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof VmConfigError) return new ApiError(error.code, error.message, { problems: error.problems });
  if (error instanceof VmError) return new ApiError(error.code, error.message);
  if (error instanceof VhdError) {
    if (error.code === 'VHD_E_NOT_FOUND') return new ApiError('VM_E_HD_IMAGE_NOT_FOUND', error.message, { file: error.file, vhdCode: error.code });
    return new ApiError(error.code, error.message, { file: error.file });
  }
  if (error instanceof StoragePathError) return new ApiError(error.code, error.message);
  console.error('vserverd: internal error:', error);
  const message = (error as Error)?.message ?? String(error);
  return new ApiError('VM_E_INTERNAL', `internal error: ${message}`);
}
