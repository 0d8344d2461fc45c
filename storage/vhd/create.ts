// Creating disks: dynamic (the default, 127 GiB, 2 MiB blocks), fixed (zero-filled, with
// progress) and differencing children of any disk. Each new file is built under a temporary
// name and linked into place whole, so an existing file is never overwritten and an
// interrupted create leaves nothing behind under the final name.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fsyncFolder } from '../../host/files.js';
import { draftOf } from '../drafts.js';
import { type LongOperationOptions, step } from '../progress.js';
import { VhdError, ioError } from './errors.js';
import {
  DEFAULT_BLOCK_SIZE, DEFAULT_DISK_SIZE, DiskType, type DynamicHeader, FEATURES_RESERVED, FOOTER_SIZE, FORMAT_VERSION,
  type Footer, type Geometry, HEADER_SIZE, MAX_DISK_SIZE, SECTOR_SIZE, emptyLocators, encodeFooter, encodeHeader, roundUp,
  toVhdTime,
} from './format.js';
import { geometryForSectors, geometrySectors, sizeForRequest } from './geometry.js';
import { VhdDisk } from './disk.js';
import { planLocators } from './locators.js';
import { lockHolder } from './lock.js';

/** The creator this engine writes: Virtual Server's code, so CHS readers and size readers agree. */
export const CREATOR_APPLICATION = 'vs  ';
export const CREATOR_VERSION = 0x00010000;
const CREATOR_HOST_OS = 'Wi2k';
const TABLE_OFFSET = FOOTER_SIZE + HEADER_SIZE;

export interface CreateOptions {
  /** Requested size in bytes; rounded up to a size CHS geometry expresses exactly. */
  size?: number;
  blockSize?: number;
}

export function validateRequestedSize(size: number): void {
  if (!Number.isSafeInteger(size) || size <= 0) {
    throw new VhdError('VHD_E_SIZE_LIMIT', `disk size must be a positive whole number of bytes, not ${size}`);
  }
  if (size > MAX_DISK_SIZE) {
    throw new VhdError('VHD_E_SIZE_LIMIT', `disk size ${size} bytes exceeds the VHD maximum of 2040 GiB (${MAX_DISK_SIZE} bytes)`);
  }
}

/**
 * A new disk's footer. Original and current size are the same (the specification's rule at
 * creation, and what qemu-img writes): readers that take the original size as the disk's
 * size (libvhdi and the tools built on it) then see the disk that QEMU and this engine see.
 */
export function newFooter(type: DiskType, size: number, geometry: Geometry): Footer {
  return {
    cookie: 'conectix',
    features: FEATURES_RESERVED,
    formatVersion: FORMAT_VERSION,
    dataOffset: type === DiskType.Fixed ? null : FOOTER_SIZE,
    timestamp: toVhdTime(new Date()),
    creatorApplication: CREATOR_APPLICATION,
    creatorVersion: CREATOR_VERSION,
    creatorHostOs: CREATOR_HOST_OS,
    originalSize: size,
    currentSize: size,
    geometry,
    diskType: type,
    checksum: 0,
    uniqueId: Buffer.from(crypto.randomUUID().replace(/-/g, ''), 'hex'),
    savedState: false,
  };
}

function newHeader(size: number, blockSize: number): DynamicHeader {
  return {
    cookie: 'cxsparse',
    dataOffset: null,
    tableOffset: TABLE_OFFSET,
    headerVersion: FORMAT_VERSION,
    maxTableEntries: Math.ceil(size / blockSize),
    blockSize,
    checksum: 0,
    parentUniqueId: Buffer.alloc(16),
    parentTimestamp: 0,
    parentName: '',
    parentLocators: emptyLocators(),
  };
}

function checkBlockSize(blockSize: number): void {
  if (!Number.isInteger(blockSize) || blockSize < SECTOR_SIZE || blockSize > 256 * 1024 * 1024 || (blockSize & (blockSize - 1)) !== 0) {
    throw new VhdError('VHD_E_BAD_ARGUMENT', `block size ${blockSize} is not a power of two between 512 bytes and 256 MiB`);
  }
}

/** Writes a new file under a temporary name, then links it into place (never over an existing file). */
export async function buildFile(target: string, build: (fd: number, draft: string) => Promise<void> | void): Promise<void> {
  if (fs.existsSync(target)) throw new VhdError('VHD_E_EXISTS', `${target} already exists`, target);
  if (!fs.existsSync(path.dirname(target))) {
    throw new VhdError('VHD_E_NOT_FOUND', `cannot create ${target}: folder ${path.dirname(target)} does not exist`, target);
  }
  const draft = draftOf(target);
  let fd: number;
  try {
    fd = fs.openSync(draft, 'wx', 0o644);
  } catch (e) {
    throw ioError(target, 'creating', e);
  }
  try {
    await build(fd, draft);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.linkSync(draft, target);
    fsyncFolder(path.dirname(target));
  } catch (e) {
    try { fs.closeSync(fd); } catch { /* already closed */ }
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new VhdError('VHD_E_EXISTS', `${target} already exists`, target);
    throw e instanceof VhdError || (e as Error).name === 'AbortError' ? e : ioError(target, 'creating', e);
  } finally {
    fs.rmSync(draft, { force: true });
  }
}

export function writeAll(fd: number, buf: Buffer, position: number): void {
  let done = 0;
  while (done < buf.length) done += fs.writeSync(fd, buf, done, buf.length - done, position + done);
}

/** Writes footer copy, header, an empty block table and the footer: a complete dynamic or differencing disk. */
function writeSparseDisk(fd: number, footer: Footer, header: DynamicHeader, extra: Array<[number, Buffer]> = [], dataStart?: number): void {
  const footerBytes = encodeFooter(footer);
  const headerBytes = encodeHeader(header);
  const tableBytes = roundUp(header.maxTableEntries * 4, SECTOR_SIZE);
  const table = Buffer.alloc(tableBytes, 0xff);
  writeAll(fd, footerBytes, 0);
  writeAll(fd, headerBytes, FOOTER_SIZE);
  writeAll(fd, table, TABLE_OFFSET);
  for (const [offset, data] of extra) writeAll(fd, data, offset);
  writeAll(fd, footerBytes, dataStart ?? TABLE_OFFSET + tableBytes);
}

export async function createDynamic(target: string, options: CreateOptions = {}): Promise<void> {
  await buildFile(target, (fd) => writeDynamicDisk(fd, options));
}

/** Writes an empty dynamic disk into an open, empty file. */
export function writeDynamicDisk(fd: number, options: CreateOptions = {}): void {
  const requested = options.size ?? DEFAULT_DISK_SIZE;
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  validateRequestedSize(requested);
  checkBlockSize(blockSize);
  const { size, geometry } = sizeForRequest(requested);
  writeSparseDisk(fd, newFooter(DiskType.Dynamic, size, geometry), newHeader(size, blockSize));
}

const FILL_CHUNK = 4 * 1024 * 1024;

export async function createFixed(target: string, requested: number, options: LongOperationOptions = {}): Promise<void> {
  validateRequestedSize(requested);
  const { size, geometry } = sizeForRequest(requested);
  const zeros = Buffer.alloc(FILL_CHUNK);
  await buildFile(target, async (fd) => {
    for (let done = 0; done < size; done += FILL_CHUNK) {
      writeAll(fd, zeros.subarray(0, Math.min(FILL_CHUNK, size - done)), done);
      await step(options, Math.min(done + FILL_CHUNK, size), size);
    }
    writeAll(fd, encodeFooter(newFooter(DiskType.Fixed, size, geometry)), size);
  });
}

/**
 * A differencing child of any disk; the whole parent chain is validated first. A parent that
 * is open for writing is refused: the child would be stale from birth.
 */
export interface DifferencingOptions {
  blockSize?: number;
  /**
   * The parent is the running top of a chain that this process writes and will stop writing
   * before the child is used (a snapshot made ahead of its pause): its lock is not refused, and
   * the parent time stamp is the parent's footer time stamp, which its writes do not move.
   */
  parentStillWritten?: boolean;
}

export async function createDifferencing(target: string, parentPath: string, options: DifferencingOptions = {}): Promise<void> {
  const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
  checkBlockSize(blockSize);
  const writer = options.parentStillWritten ? null : lockHolder(parentPath);
  if (writer) {
    throw new VhdError('VHD_E_LOCKED',
      `${parentPath} is open for writing by ${writer.holder} (pid ${writer.pid} on ${writer.host}); a child of a disk that is still being written would be stale from birth`, parentPath);
  }
  const parent = VhdDisk.open(parentPath);
  try {
    const parentFooter = parent.file.layout.footer;
    // The parent's geometry where it fits the size, so CHS readers of the child see what they see of the parent.
    const geometry = geometrySectors(parentFooter.geometry) * SECTOR_SIZE <= parent.size
      ? parentFooter.geometry : geometryForSectors(parent.size / SECTOR_SIZE);
    const footer = newFooter(DiskType.Differencing, parent.size, geometry);
    const header = newHeader(parent.size, blockSize);
    header.parentUniqueId = Buffer.from(parentFooter.uniqueId);
    header.parentTimestamp = options.parentStillWritten ? parentFooter.timestamp : toVhdTime(fs.statSync(parent.path).mtime);
    header.parentName = path.basename(parent.path);
    const plan = planLocators(target, parent.path, TABLE_OFFSET + roundUp(header.maxTableEntries * 4, SECTOR_SIZE));
    header.parentLocators = plan.locators;
    await buildFile(target, (fd) => writeSparseDisk(fd, footer, header, plan.areas, plan.end));
  } finally {
    parent.close();
  }
}
