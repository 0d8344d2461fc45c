// The API's one error type. Each error has a stable name (Virtual Server's HRESULT names where it
// had one) carried in JSON-RPC's error.data.name, and a message naming the limit, file or state
// at fault. Errors from the VMM, the VHD engine and the storage roots keep their codes.

import { VmConfigError } from '../../vmm/config.js';
import { VmError } from '../../vmm/state.js';
import { VhdError } from '../../storage/vhd/index.js';
import { StoragePathError } from '../storage-roots.js';

/** JSON-RPC 2.0's own codes, and the one code (-32000) under which every named error travels. */
export const RPC_PARSE_ERROR = -32700;
export const RPC_INVALID_REQUEST = -32600;
export const RPC_METHOD_NOT_FOUND = -32601;
export const RPC_INVALID_PARAMS = -32602;
export const RPC_INTERNAL_ERROR = -32603;
export const RPC_SERVER_ERROR = -32000;

export class ApiError extends Error {
  constructor(readonly errorName: string, message: string, readonly details: Record<string, unknown> = {}, readonly rpcCode = RPC_SERVER_ERROR) {
    super(message);
    this.name = 'ApiError';
  }
}

export const unknownObject = (ref: string): ApiError => new ApiError('VM_E_OBJECT_UNKNOWN', `there is no object ${ref}`, { ref });
export const invalidParams = (message: string, details: Record<string, unknown> = {}): ApiError =>
  new ApiError('VM_E_INVALID_PARAMS', message, details, RPC_INVALID_PARAMS);

/** Any error thrown under a call, as the API reports it. */
export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof VmConfigError) return new ApiError(error.code, error.message, { problems: error.problems });
  if (error instanceof VmError) return new ApiError(error.code, error.message);
  if (error instanceof VhdError) {
    if (error.code === 'VHD_E_NOT_FOUND') return new ApiError('VM_E_HD_IMAGE_NOT_FOUND', error.message, { file: error.file, vhdCode: error.code });
    return new ApiError(error.code, error.message, { file: error.file });
  }
  if (error instanceof StoragePathError) return new ApiError(error.code, error.message);
  const message = (error as Error)?.message ?? String(error);
  return new ApiError('VM_E_INTERNAL', `internal error: ${message}`, {}, RPC_INTERNAL_ERROR);
}

export function rpcErrorObject(error: ApiError): { code: number; message: string; data: Record<string, unknown> } {
  return { code: error.rpcCode, message: error.message, data: { name: error.errorName, ...error.details } };
}
