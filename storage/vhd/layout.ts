// Reads one VHD file's structures (footer, footer copy, dynamic header, BAT, parent locator
// areas) and validates each against the specification and against the file's real size.
// It reports every fault as a Problem naming the structure and its byte offset; it never writes.

import fs from 'node:fs';
import os from 'node:os';
import { type Problem } from './errors.js';
import {
  DiskType, type DynamicHeader, type Footer, type ParentLocator, FOOTER_COOKIE, FOOTER_SIZE, HEADER_COOKIE,
  HEADER_SIZE, MAX_DISK_SIZE, SECTOR_SIZE, UNALLOCATED, FOOTER_CHECKSUM_OFFSET, HEADER_CHECKSUM_OFFSET,
  bitmapSize, computeChecksum, decodeFooter, decodeHeader, roundUp,
} from './format.js';
import { type SizeRule, geometrySectors, sizeRule } from './geometry.js';

export interface Layout {
  fileSize: number;
  footer: Footer;
  /** The footer's bytes as found at the end of the file, rewritten verbatim when the file grows. */
  footerBytes: Buffer;
  footerOffset: number;
  type: DiskType;
  sizeRule: SizeRule;
  /** The size a guest sees, from the footer by the size rule. */
  ownSize: number;
  header: DynamicHeader | null;
  bat: Uint32Array | null;
  blockSize: number;
  bitmapBytes: number;
  /** Where the metadata (footer copy, header, BAT, locator areas) ends and blocks may begin. */
  metadataEnd: number;
  /** Byte ranges [start, end) of metadata that blocks must not overlap. */
  metadataRanges: Array<[number, number, string]>;
}

export interface LayoutResult {
  layout: Layout | null;
  problems: Problem[];
}

/** The highest block size accepted: larger tables of bitmaps would be absurd and only come from damage. */
const MAX_BLOCK_SIZE = 256 * 1024 * 1024;

function readAt(fd: number, length: number, position: number): Buffer {
  return readAtInto(fd, Buffer.alloc(length), position);
}

/** Fills `target` from `position`; past the end of the file it stays as it was (zeros when fresh). */
function readAtInto(fd: number, target: Buffer, position: number): Buffer {
  let done = 0;
  while (done < target.length) {
    const n = fs.readSync(fd, target, done, target.length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return target;
}

export function readLayout(fd: number): LayoutResult {
  const problems: Problem[] = [];
  const fail = (code: Problem['code'], structure: string, offset: number | null, message: string): LayoutResult => {
    problems.push({ severity: 'error', code, structure, offset, message });
    return { layout: null, problems };
  };
  const warn = (code: Problem['code'], structure: string, offset: number | null, message: string): void => {
    problems.push({ severity: 'warning', code, structure, offset, message });
  };

  const fileSize = fs.fstatSync(fd).size;
  if (fileSize < FOOTER_SIZE) {
    return fail('VHD_E_BAD_FOOTER', 'footer', 0, `file is ${fileSize} bytes, too small to hold a VHD footer`);
  }
  const footerOffset = fileSize - FOOTER_SIZE;
  const footerBytes = readAt(fd, FOOTER_SIZE, footerOffset);
  const footer = decodeFooter(footerBytes);
  const at = `at offset ${footerOffset}`;
  if (footer.cookie !== FOOTER_COOKIE) {
    return fail('VHD_E_BAD_FOOTER', 'footer', footerOffset,
      `footer ${at}: cookie is ${JSON.stringify(footer.cookie)}, expected "conectix" (not a VHD file, or its footer is damaged)`);
  }
  const footerChecksum = computeChecksum(footerBytes, FOOTER_CHECKSUM_OFFSET);
  if (footer.checksum !== footerChecksum) {
    return fail('VHD_E_BAD_FOOTER', 'footer', footerOffset + FOOTER_CHECKSUM_OFFSET,
      `footer ${at}: checksum is 0x${hex(footer.checksum)}, the footer's bytes give 0x${hex(footerChecksum)}`);
  }
  if (footer.formatVersion >>> 16 !== 1) {
    return fail('VHD_E_BAD_FOOTER', 'footer', footerOffset + 12,
      `footer ${at}: file format version 0x${hex(footer.formatVersion)} is not 1.x`);
  }
  if (!(footer.features & 2)) warn('VHD_E_BAD_FOOTER', 'footer', footerOffset + 8, `footer ${at}: reserved feature bit 1 is not set`);
  const type = footer.diskType as DiskType;
  if (type !== DiskType.Fixed && type !== DiskType.Dynamic && type !== DiskType.Differencing) {
    return fail('VHD_E_BAD_FOOTER', 'footer', footerOffset + 60,
      `footer ${at}: disk type ${footer.diskType} is not fixed (2), dynamic (3) or differencing (4)`);
  }
  if (footer.currentSize === 0 || footer.currentSize % SECTOR_SIZE !== 0 || footer.currentSize > MAX_DISK_SIZE) {
    return fail('VHD_E_BAD_FOOTER', 'footer', footerOffset + 48,
      `footer ${at}: current size ${footer.currentSize} is not a whole number of sectors between 512 bytes and 2040 GiB`);
  }
  const rule = sizeRule(footer.creatorApplication, footer.geometry, footer.diskType === DiskType.Differencing);
  const chsBytes = geometrySectors(footer.geometry) * SECTOR_SIZE;
  if (rule === 'chs' && (chsBytes === 0 || chsBytes > footer.currentSize)) {
    return fail('VHD_E_BAD_FOOTER', 'footer', footerOffset + 56,
      `footer ${at}: geometry ${footer.geometry.cylinders}/${footer.geometry.heads}/${footer.geometry.sectorsPerTrack} ` +
      `addresses ${chsBytes} bytes, which does not fit the current size ${footer.currentSize}`);
  }
  const ownSize = rule === 'chs' ? chsBytes : footer.currentSize;

  const base = {
    fileSize, footer, footerBytes, footerOffset, type, sizeRule: rule, ownSize,
    header: null, bat: null, blockSize: 0, bitmapBytes: 0, metadataEnd: 0, metadataRanges: [],
  };
  if (type === DiskType.Fixed) {
    if (footerOffset < footer.currentSize) {
      return fail('VHD_E_BAD_FOOTER', 'footer', footerOffset + 48,
        `fixed disk holds ${footerOffset} bytes of data but its footer ${at} says ${footer.currentSize}`);
    }
    if (footerOffset > footer.currentSize) {
      warn('VHD_E_BAD_FOOTER', 'data', footer.currentSize,
        `fixed disk has ${footerOffset - footer.currentSize} bytes between its data and its footer`);
    }
    return { layout: { ...base, metadataEnd: 0 }, problems };
  }
  return readDynamicStructures(fd, base, problems, fail, warn);
}

type Fail = (code: Problem['code'], structure: string, offset: number | null, message: string) => LayoutResult;
type Warn = (code: Problem['code'], structure: string, offset: number | null, message: string) => void;

function readDynamicStructures(fd: number, base: Layout, problems: Problem[], fail: Fail, warn: Warn): LayoutResult {
  const { footer, footerOffset, footerBytes } = base;
  const copy = readAt(fd, FOOTER_SIZE, 0);
  if (!copy.equals(footerBytes)) {
    warn('VHD_E_BAD_FOOTER', 'footer copy', 0,
      `footer copy at offset 0 differs from the footer at offset ${footerOffset}; the footer at the end is used`);
  }
  const headerOffset = footer.dataOffset;
  if (headerOffset === null || headerOffset < FOOTER_SIZE || headerOffset + HEADER_SIZE > footerOffset) {
    return fail('VHD_E_BAD_FOOTER', 'footer', footerOffset + 16,
      `footer at offset ${footerOffset}: dynamic header offset ${headerOffset ?? 'none'} lies outside the file`);
  }
  const headerBytes = readAt(fd, HEADER_SIZE, headerOffset);
  const header = decodeHeader(headerBytes);
  const hat = `dynamic header at offset ${headerOffset}`;
  if (header.cookie !== HEADER_COOKIE) {
    return fail('VHD_E_BAD_HEADER', 'dynamic header', headerOffset,
      `${hat}: cookie is ${JSON.stringify(header.cookie)}, expected "cxsparse"`);
  }
  const headerChecksum = computeChecksum(headerBytes, HEADER_CHECKSUM_OFFSET);
  if (header.checksum !== headerChecksum) {
    return fail('VHD_E_BAD_HEADER', 'dynamic header', headerOffset + HEADER_CHECKSUM_OFFSET,
      `${hat}: checksum is 0x${hex(header.checksum)}, the header's bytes give 0x${hex(headerChecksum)}`);
  }
  if (header.headerVersion >>> 16 !== 1) {
    return fail('VHD_E_BAD_HEADER', 'dynamic header', headerOffset + 24, `${hat}: header version 0x${hex(header.headerVersion)} is not 1.x`);
  }
  const { blockSize } = header;
  if (blockSize < SECTOR_SIZE || blockSize > MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    return fail('VHD_E_BAD_HEADER', 'dynamic header', headerOffset + 32,
      `${hat}: block size ${blockSize} is not a power of two between 512 bytes and 256 MiB`);
  }
  const needed = Math.ceil(footer.currentSize / blockSize);
  if (header.maxTableEntries < needed) {
    return fail('VHD_E_BAD_HEADER', 'dynamic header', headerOffset + 28,
      `${hat}: the block table has ${header.maxTableEntries} entries, ${needed} are needed for ${footer.currentSize} bytes`);
  }
  const tableBytes = roundUp(header.maxTableEntries * 4, SECTOR_SIZE);
  const ranges: Array<[number, number, string]> = [
    [0, FOOTER_SIZE, 'footer copy'],
    [headerOffset, headerOffset + HEADER_SIZE, 'dynamic header'],
  ];
  if (header.tableOffset + header.maxTableEntries * 4 > footerOffset) {
    return fail('VHD_E_BAD_HEADER', 'dynamic header', headerOffset + 16,
      `${hat}: block table at offset ${header.tableOffset} (${header.maxTableEntries} entries) runs past the footer at ${footerOffset}`);
  }
  const tableRange: [number, number, string] = [header.tableOffset, header.tableOffset + tableBytes, 'block table'];
  const clash = ranges.find((r) => overlaps(r, tableRange));
  if (clash) {
    return fail('VHD_E_BAD_HEADER', 'dynamic header', headerOffset + 16,
      `${hat}: block table at offset ${header.tableOffset} overlaps the ${clash[2]}`);
  }
  ranges.push(tableRange);
  if (base.type === DiskType.Differencing) {
    const locatorProblem = addLocatorRanges(header.parentLocators, headerOffset, footerOffset, ranges);
    if (locatorProblem) return fail('VHD_E_BAD_LOCATOR', 'parent locator', locatorProblem.offset, `${hat}: ${locatorProblem.message}`);
  }
  if (header.dataOffset !== null) warn('VHD_E_BAD_HEADER', 'dynamic header', headerOffset + 8, `${hat}: data offset field is not all ones`);

  const bat = readBat(fd, header.tableOffset, header.maxTableEntries);
  const bitmapBytes = bitmapSize(blockSize);
  const metadataEnd = Math.max(...ranges.map((r) => r[1]));
  const batProblem = validateBat(bat, needed, blockSize + bitmapBytes, ranges, footerOffset, header.tableOffset);
  if (batProblem.error) return fail('VHD_E_BAD_BAT', 'block table', batProblem.error.offset, batProblem.error.message);
  for (const message of batProblem.warnings) warn('VHD_E_BAD_BAT', 'block table', header.tableOffset, message);
  const referencedEnd = Math.max(metadataEnd, batProblem.blocksEnd);
  if (footerOffset > referencedEnd) {
    warn('VHD_E_BAD_BAT', 'unreferenced space', referencedEnd,
      `${footerOffset - referencedEnd} bytes between the last block and the footer belong to no block (left by an interrupted allocation or by blocks a trim gave back; compact reclaims them)`);
  }
  return {
    layout: { ...base, header, bat, blockSize, bitmapBytes, metadataEnd, metadataRanges: ranges },
    problems,
  };
}

/** The block table as host-order numbers: read big-endian in one piece and byte-swapped in place. */
function readBat(fd: number, tableOffset: number, entries: number): Uint32Array {
  const bat = new Uint32Array(entries);
  const bytes = readAtInto(fd, Buffer.from(bat.buffer, bat.byteOffset, bat.byteLength), tableOffset);
  if (os.endianness() === 'LE') bytes.swap32();
  return bat;
}

/** Checks each used locator's data area lies inside the file and clear of other metadata, and records it. */
function addLocatorRanges(
  locators: ParentLocator[], headerOffset: number, footerOffset: number, ranges: Array<[number, number, string]>,
): { offset: number; message: string } | null {
  for (let i = 0; i < locators.length; i++) {
    const locator = locators[i];
    if (!locator.platformCode) continue;
    const entryOffset = headerOffset + 576 + i * 24;
    const space = locatorDataSpaceBytes(locator);
    const length = Math.max(space, locator.platformDataLength);
    const range: [number, number, string] = [locator.platformDataOffset, locator.platformDataOffset + length, `parent locator ${i} data`];
    if (locator.platformDataLength > 0 && (range[0] < FOOTER_SIZE || range[1] > footerOffset)) {
      return { offset: entryOffset, message: `parent locator ${i} (${locator.platformCode}) data at offset ${range[0]}, ${length} bytes, lies outside the file` };
    }
    const clash = ranges.find((r) => overlaps(r, range));
    if (locator.platformDataLength > 0 && clash) {
      return { offset: entryOffset, message: `parent locator ${i} (${locator.platformCode}) data at offset ${range[0]} overlaps the ${clash[2]}` };
    }
    if (locator.platformDataLength > 0) ranges.push(range);
  }
  return null;
}

/** The specification counts locator space in sectors; Virtual PC and Hyper-V write bytes. Accept both. */
export function locatorDataSpaceBytes(locator: ParentLocator): number {
  return locator.platformDataSpace < SECTOR_SIZE ? locator.platformDataSpace * SECTOR_SIZE : locator.platformDataSpace;
}

function validateBat(
  bat: Uint32Array, needed: number, span: number, ranges: Array<[number, number, string]>, footerOffset: number, tableOffset: number,
): { error: { offset: number; message: string } | null; warnings: string[]; blocksEnd: number } {
  const warnings: string[] = [];
  const allocated: Array<[number, number]> = [];
  let extra = 0;
  for (let block = 0; block < bat.length; block++) {
    const entry = bat[block];
    if (entry === UNALLOCATED) continue;
    const start = entry * SECTOR_SIZE;
    const end = start + span;
    const entryOffset = tableOffset + block * 4;
    if (end > footerOffset) {
      return { error: { offset: entryOffset, message: `block table entry ${block} at offset ${entryOffset} points at offset ${start}, past the data area that ends at the footer (offset ${footerOffset})` }, warnings, blocksEnd: 0 };
    }
    const clash = ranges.find((r) => overlaps(r, [start, end]));
    if (clash) {
      return { error: { offset: entryOffset, message: `block table entry ${block} at offset ${entryOffset} points at offset ${start}, inside the ${clash[2]}` }, warnings, blocksEnd: 0 };
    }
    if (block >= needed) extra++;
    allocated.push([start, block]);
  }
  allocated.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < allocated.length; i++) {
    if (allocated[i - 1][0] + span > allocated[i][0]) {
      const [a, b] = [allocated[i - 1][1], allocated[i][1]];
      const entryOffset = tableOffset + b * 4;
      return { error: { offset: entryOffset, message: `block table entries ${a} and ${b} point at overlapping blocks (offsets ${allocated[i - 1][0]} and ${allocated[i][0]})` }, warnings, blocksEnd: 0 };
    }
  }
  if (extra) warnings.push(`${extra} block table entries beyond the disk's size are allocated`);
  const blocksEnd = allocated.length ? allocated[allocated.length - 1][0] + span : 0;
  return { error: null, warnings, blocksEnd };
}

function overlaps(a: [number, number, ...unknown[]], b: [number, number, ...unknown[]]): boolean {
  return a[0] < b[1] && b[0] < a[1];
}

function hex(value: number): string {
  return value.toString(16).padStart(8, '0');
}

export { readAt };
