// Reading back what the test guest's /bin/records wrote (test/guest/init.sh): record n, 4 KiB at
// byte (n-1)*4096, is "VSREC <n as 10 digits> <sha256 of the rest>\n" followed by 4014 bytes of
// "<n>." repeated. countRecords reads a disk (through its VHD chain, with this project's engine)
// and returns how many records form the valid prefix 1..N; a torn record, a record out of its
// place, or any data after the prefix (a lost record) throws, naming the record and the offset.

import crypto from 'node:crypto';
import { VhdDisk } from '../../storage/vhd/disk.js';

export const RECORD_SIZE = 4096;
const HEADER = 82;
const BODY = RECORD_SIZE - HEADER;

/** The record the guest writes as number n, byte for byte. */
export function recordBytes(n: number): Buffer {
  let text = '';
  while (text.length < BODY) text += `${n}.`;
  const body = Buffer.from(text.slice(0, BODY), 'latin1');
  const sum = crypto.createHash('sha256').update(body).digest('hex');
  return Buffer.concat([Buffer.from(`VSREC ${String(n).padStart(10, '0')} ${sum}\n`, 'latin1'), body]);
}

export class RecordError extends Error {
  override readonly name = 'RecordError';
}

export interface CountOptions {
  /** Bytes of the disk to look at (the whole disk by default): after the prefix they must all be zeros. */
  scanBytes?: number;
}

/** The number of valid records from record 1 on, in the chain whose top is `vhdPath`. */
export function countRecords(vhdPath: string, options: CountOptions = {}): number {
  const disk = VhdDisk.open(vhdPath);
  try {
    return countInDisk(disk, options);
  } finally {
    disk.close();
  }
}

/** The same for a disk already open. */
export function countInDisk(disk: VhdDisk, options: CountOptions = {}): number {
  const limit = Math.min(disk.size, options.scanBytes ?? disk.size);
  const chunk = Buffer.alloc(256 * RECORD_SIZE);
  let count = 0;
  let ended = false;
  for (let offset = 0; offset + RECORD_SIZE <= limit; offset += chunk.length) {
    const piece = chunk.subarray(0, Math.min(chunk.length, Math.floor((limit - offset) / RECORD_SIZE) * RECORD_SIZE));
    if (!disk.isAllocated(offset, piece.length)) {
      ended = true; // reads as zeros: the prefix ended (or had ended) before it
      continue;
    }
    disk.readInto(piece, offset);
    for (let at = 0; at < piece.length; at += RECORD_SIZE) {
      const record = piece.subarray(at, at + RECORD_SIZE);
      const position = offset + at;
      const n = position / RECORD_SIZE + 1;
      const empty = record.every((b) => b === 0);
      if (ended) {
        if (!empty) throw new RecordError(`${disk.path}: data at offset ${position} (record ${n}) after the last record, ${count}: a record is missing before it`);
        continue;
      }
      if (empty) {
        ended = true;
        continue;
      }
      if (!record.equals(recordBytes(n))) {
        const head = record.subarray(0, HEADER).toString('latin1');
        const found = /^VSREC (\d{10}) /.exec(head);
        const what = found ? (Number(found[1]) === n ? 'torn (its checksum or body is wrong)' : `record ${Number(found[1])}, out of its place`) : 'not a record';
        throw new RecordError(`${disk.path}: record ${n} at offset ${position} is ${what}; the ${count} before it are valid`);
      }
      count = n;
    }
  }
  return count;
}

/** The highest "VSREC n" the guest printed, 0 when none: every record up to it is durable. */
export function lastAcknowledged(serialText: string): number {
  let last = 0;
  for (const m of serialText.matchAll(/^VSREC (\d+)\s*$/gm)) last = Math.max(last, Number(m[1]));
  return last;
}
