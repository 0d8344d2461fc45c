// Copying byte ranges from one open disk to another at the same offsets, a piece at a time: the
// loop under a commit into the parent (offline and in a running worker) and an incremental
// backup's copy of the changed blocks.

import { type LongOperationOptions, step } from '../progress.js';
import type { VhdDisk } from './disk.js';

export interface ByteRange { offset: number; length: number }

export const COPY_CHUNK = 2 * 1024 * 1024;

/** Copies one range synchronously through `buffer` (its length is the piece size); returns the bytes copied. */
export function copyRangeNow(source: VhdDisk, target: VhdDisk, range: ByteRange, buffer: Buffer): number {
  for (let at = 0; at < range.length; at += buffer.length) {
    const piece = buffer.subarray(0, Math.min(buffer.length, range.length - at));
    source.readInto(piece, range.offset + at);
    target.write(piece, range.offset + at);
  }
  return range.length;
}

/**
 * Copies the ranges piece by piece, reporting `done` of `total` (and yielding, and honouring a
 * cancel) after each piece; returns the bytes copied. Each piece is read and written in one
 * synchronous stretch, so in a worker no guest request runs in the middle of one.
 */
export async function copyRanges(
  source: VhdDisk, target: VhdDisk, ranges: Iterable<ByteRange>, total: number, options: LongOperationOptions = {}, chunk = COPY_CHUNK,
): Promise<number> {
  const buffer = Buffer.alloc(chunk);
  let done = 0;
  for (const range of ranges) {
    for (let at = 0; at < range.length; at += chunk) {
      done += copyRangeNow(source, target, { offset: range.offset + at, length: Math.min(chunk, range.length - at) }, buffer);
      await step(options, done, total);
    }
  }
  return done;
}
