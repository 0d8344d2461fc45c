// The VHD engine's error catalogue: one class, a stable code per failure, and a message
// that names the file, the structure and the byte offset at fault.

export const VHD_ERROR_CODES = [
  'VHD_E_NOT_FOUND', 'VHD_E_NOT_A_FILE', 'VHD_E_EXISTS', 'VHD_E_BAD_FOOTER', 'VHD_E_BAD_HEADER',
  'VHD_E_BAD_BAT', 'VHD_E_BAD_LOCATOR', 'VHD_E_PARENT_NOT_FOUND', 'VHD_E_PARENT_MISMATCH',
  'VHD_E_CHAIN_TOO_DEEP', 'VHD_E_SIZE_LIMIT', 'VHD_E_OUT_OF_RANGE', 'VHD_E_UNALIGNED', 'VHD_E_READ_ONLY',
  'VHD_E_LOCKED', 'VHD_E_WRONG_TYPE', 'VHD_E_BAD_ARGUMENT', 'VHD_E_CLOSED', 'VHD_E_IO',
] as const;
export type VhdErrorCode = (typeof VHD_ERROR_CODES)[number];

export class VhdError extends Error {
  override readonly name = 'VhdError';
  constructor(
    readonly code: VhdErrorCode,
    message: string,
    readonly file?: string,
    readonly offset?: number,
  ) {
    super(message);
  }
}

/** A structural fault found while validating: open() throws the first error, check() lists them all. */
export interface Problem {
  severity: 'error' | 'warning';
  code: VhdErrorCode;
  structure: string;
  offset: number | null;
  message: string;
}

export function problemToError(file: string, problem: Problem): VhdError {
  return new VhdError(problem.code, `${file}: ${problem.message}`, file, problem.offset ?? undefined);
}

/** Wraps an fs error so callers see which file and what the engine was doing. */
export function ioError(file: string, doing: string, cause: unknown): VhdError {
  const e = cause as NodeJS.ErrnoException;
  if (e?.code === 'ENOENT' || e?.code === 'ENOTDIR') return new VhdError('VHD_E_NOT_FOUND', `${file}: no such file`, file);
  if (e?.code === 'EISDIR') return new VhdError('VHD_E_NOT_A_FILE', `${file} is a folder; a disk or image must be a regular file`, file);
  // What open() says of a socket, or of a device with no driver behind it.
  if (e?.code === 'ENXIO') return new VhdError('VHD_E_NOT_A_FILE', `${file} is not a regular file (a socket or an absent device); a disk or image must be a regular file`, file);
  if (e?.code === 'EACCES' || e?.code === 'EPERM') return new VhdError('VHD_E_IO', `${file}: permission denied ${doing} it`, file);
  return new VhdError('VHD_E_IO', `${file}: ${doing} failed: ${e?.message ?? String(cause)}`, file);
}
