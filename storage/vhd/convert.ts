// Conversion between dynamic, fixed and raw images in any direction. A differencing disk is
// read through its chain, so converting it flattens the chain into one standalone disk.
// The output is built under a temporary name and linked into place when complete.

import fs from 'node:fs';
import { type LongOperationOptions, step } from '../progress.js';
import { VhdError } from './errors.js';
import { DiskType, FOOTER_COOKIE, FOOTER_SIZE, SECTOR_SIZE, encodeFooter } from './format.js';
import { sizeForRequest } from './geometry.js';
import { buildFile, newFooter, writeAll, writeDynamicDisk } from './create.js';
import { VhdDisk } from './disk.js';
import { openRegularFile } from './regular-file.js';

export type ImageType = 'dynamic' | 'fixed' | 'raw';
export const IMAGE_TYPES: readonly ImageType[] = ['dynamic', 'fixed', 'raw'];

/** What conversion reads from: a VHD (any type, through its chain) or a raw image. */
export interface SourceImage {
  size: number;
  readInto(target: Buffer, offset: number): void;
  /** False when the range certainly reads as zeros, so it need not be read. */
  isAllocated(offset: number, length: number): boolean;
  close(): void;
}

export function isVhdFile(filePath: string): boolean {
  const fd = openRegularFile(filePath, false);
  try {
    const size = fs.fstatSync(fd).size;
    if (size < FOOTER_SIZE) return false;
    const cookie = Buffer.alloc(8);
    fs.readSync(fd, cookie, 0, 8, size - FOOTER_SIZE);
    const head = Buffer.alloc(8);
    fs.readSync(fd, head, 0, 8, 0);
    return cookie.toString('latin1') === FOOTER_COOKIE || head.toString('latin1') === FOOTER_COOKIE;
  } finally {
    fs.closeSync(fd);
  }
}

export function openSource(filePath: string): SourceImage {
  if (isVhdFile(filePath)) return VhdDisk.open(filePath);
  const fd = openRegularFile(filePath, false);
  const size = fs.fstatSync(fd).size;
  if (size === 0 || size % SECTOR_SIZE !== 0) {
    fs.closeSync(fd);
    throw new VhdError('VHD_E_BAD_ARGUMENT', `${filePath}: raw image is ${size} bytes, not a whole number of 512-byte sectors`, filePath);
  }
  return {
    size,
    readInto(target, offset) {
      let done = 0;
      while (done < target.length) {
        const n = fs.readSync(fd, target, done, target.length - done, offset + done);
        if (n === 0) throw new VhdError('VHD_E_IO', `${filePath}: unexpected end of file at ${offset + done}`, filePath);
        done += n;
      }
    },
    isAllocated: () => true,
    close: () => fs.closeSync(fd),
  };
}

const CHUNK = 2 * 1024 * 1024;

export interface ConvertOptions extends LongOperationOptions {
  type?: ImageType;
}

export async function convertDisk(sourcePath: string, targetPath: string, options: ConvertOptions = {}): Promise<void> {
  const type = options.type ?? 'dynamic';
  if (!IMAGE_TYPES.includes(type)) throw new VhdError('VHD_E_BAD_ARGUMENT', `unknown image type "${type}"; use dynamic, fixed or raw`);
  const source = openSource(sourcePath);
  try {
    if (type === 'dynamic') await toDynamic(source, targetPath, options);
    else await toFlat(source, targetPath, type, options);
  } finally {
    source.close();
  }
}

/** Copies every chunk that holds data; chunks of zeros stay unallocated. */
async function toDynamic(source: SourceImage, targetPath: string, options: LongOperationOptions): Promise<void> {
  await buildFile(targetPath, async (fd, draft) => {
    writeDynamicDisk(fd, { size: source.size });
    const target = VhdDisk.open(draft, { writable: true, fastAllocation: true, holder: 'vhd convert' });
    const writeback = new Writeback(fd);
    try {
      const chunk = Buffer.alloc(CHUNK);
      for (let offset = 0; offset < source.size; offset += CHUNK) {
        const piece = chunk.subarray(0, Math.min(CHUNK, source.size - offset));
        if (source.isAllocated(offset, piece.length)) {
          source.readInto(piece, offset);
          for (const run of dataRuns(piece)) target.write(piece.subarray(run.start, run.end), offset + run.start);
          await writeback.wrote(piece.length);
        }
        await step(options, offset + piece.length, source.size);
      }
      await writeback.finished();
      target.flush();
    } finally {
      target.close();
    }
  });
}

/** Fixed VHD or raw: the data in order (zeros written for a fixed disk, left as holes for raw), then the footer. */
async function toFlat(source: SourceImage, targetPath: string, type: 'fixed' | 'raw', options: LongOperationOptions): Promise<void> {
  const { size, geometry } = type === 'fixed' ? sizeForRequest(source.size) : { size: source.size, geometry: null };
  await buildFile(targetPath, async (fd) => {
    fs.ftruncateSync(fd, size);
    const writeback = new Writeback(fd);
    const chunk = Buffer.alloc(CHUNK);
    for (let offset = 0; offset < size; offset += CHUNK) {
      const piece = chunk.subarray(0, Math.min(CHUNK, size - offset));
      const inSource = Math.max(0, Math.min(piece.length, source.size - offset));
      piece.fill(0);
      if (inSource && source.isAllocated(offset, inSource)) source.readInto(piece.subarray(0, inSource), offset);
      if (type === 'fixed') writeAll(fd, piece, offset);
      else for (const run of dataRuns(piece)) writeAll(fd, piece.subarray(run.start, run.end), offset + run.start);
      await writeback.wrote(piece.length);
      await step(options, offset + piece.length, size);
    }
    await writeback.finished();
    if (geometry) writeAll(fd, encodeFooter(newFooter(DiskType.Fixed, size, geometry)), size);
  });
}

/**
 * Starts writing the new file's dirty pages back to disk in the background every so often,
 * so that the sync that makes the finished file durable has little left to do and the disk
 * works while the copy goes on.
 */
export class Writeback {
  private pending: Promise<void> | null = null;
  private sinceLast = 0;

  constructor(private readonly fd: number, private readonly every = 64 * 1024 * 1024) {}

  async wrote(bytes: number): Promise<void> {
    this.sinceLast += bytes;
    if (this.sinceLast < this.every) return;
    this.sinceLast = 0;
    await this.pending;
    this.pending = new Promise((resolve, reject) => fs.fdatasync(this.fd, (e) => (e ? reject(e) : resolve())));
  }

  async finished(): Promise<void> {
    await this.pending;
  }
}

const ZEROS = Buffer.alloc(CHUNK);
const PAGE = 4096;

/**
 * The runs of a chunk that are not all zeros, at 4 KiB granularity: only those are written,
 * so zeros stay holes in the new file (which reads them as zeros) as qemu-img leaves them.
 */
export function* dataRuns(chunk: Buffer): Generator<{ start: number; end: number }> {
  if (isZero(chunk)) return;
  let start = -1;
  for (let at = 0; at < chunk.length; at += PAGE) {
    const end = Math.min(chunk.length, at + PAGE);
    const zero = chunk.subarray(at, end).equals(ZEROS.subarray(0, end - at));
    if (!zero && start < 0) start = at;
    if (zero && start >= 0) {
      yield { start, end: at };
      start = -1;
    }
  }
  if (start >= 0) yield { start, end: chunk.length };
}

export function isZero(buf: Buffer): boolean {
  for (let at = 0; at < buf.length; at += ZEROS.length) {
    const piece = buf.subarray(at, Math.min(buf.length, at + ZEROS.length));
    if (!piece.equals(ZEROS.subarray(0, piece.length))) return false;
  }
  return true;
}
