// A serial port's output read by position (VirtualMachine.GetSerialOutput). A position is a byte
// offset into everything the port has written since the VM was turned on; what is kept is only
// the last scrollback's worth, so a position older than that reports the bytes skipped.

import { VmError } from './state.js';

/** What COM1's scrollback keeps, and the most one read of COM2's file returns. */
export const DEFAULT_SCROLLBACK_BYTES = 256 * 1024;
const MIN_SCROLLBACK_BYTES = 1024;

/** The scrollback size: $VSERVER_SERIAL_SCROLLBACK_BYTES when it is a whole number of at least 1024, else 256 KiB. */
export function scrollbackBytes(env: NodeJS.ProcessEnv = process.env): number {
  const value = Number(env.VSERVER_SERIAL_SCROLLBACK_BYTES);
  return Number.isSafeInteger(value) && value >= MIN_SCROLLBACK_BYTES ? value : DEFAULT_SCROLLBACK_BYTES;
}

export interface SerialOutput {
  /** The output from the asked position (or the oldest kept) on, UTF-8 decoded; it ends on a whole character. */
  text: string;
  /** The position to ask from next time. */
  next: number;
  /** Bytes between the asked position and the oldest one kept, which are lost; 0 when none. */
  skipped: number;
}

/**
 * The part of `held` (the kept output, which starts at position `start`) from `since` on.
 * `since` omitted reads all that is kept; beyond the end it is refused (VM_E_INVALID_PARAMS),
 * since positions start again at 0 when the VM is turned on again.
 */
export function readFrom(held: Buffer, start: number, since?: number): SerialOutput {
  const end = start + held.length;
  if (since !== undefined && since > end) {
    throw new VmError('VM_E_INVALID_PARAMS', `since ${since} is past the end of the output (${end} bytes so far); positions count from the VM's turn-on and start again at 0 when it is turned on again`);
  }
  const from = Math.max(start, since ?? start);
  const bytes = held.subarray(from - start);
  const whole = bytes.length - incompleteTail(bytes);
  return { text: bytes.subarray(0, whole).toString('utf8'), next: from + whole, skipped: from - (since ?? from) };
}

/** How many bytes at the end of `bytes` begin a UTF-8 character that has not fully arrived (0 to 3). */
function incompleteTail(bytes: Buffer): number {
  for (let back = 1; back <= Math.min(3, bytes.length); back++) {
    const byte = bytes[bytes.length - back];
    if ((byte & 0xc0) === 0x80) continue; // a continuation byte: the character began earlier
    const length = byte >= 0xf0 && byte <= 0xf4 ? 4 : byte >= 0xe0 && byte < 0xf0 ? 3 : byte >= 0xc2 && byte < 0xe0 ? 2 : 1;
    return length > back ? back : 0;
  }
  return 0;
}
