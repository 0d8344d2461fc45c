// The on-disk structures of the Microsoft VHD format, specification 1.0: the 512-byte footer,
// the 1024-byte dynamic disk header with its parent locators, and their checksum.
// All integers are big-endian; decoding never throws, validation lives in layout.ts.

export const SECTOR_SIZE = 512;
export const FOOTER_SIZE = 512;
export const HEADER_SIZE = 1024;
export const FOOTER_COOKIE = 'conectix';
export const HEADER_COOKIE = 'cxsparse';
export const FORMAT_VERSION = 0x00010000;
export const FEATURES_RESERVED = 0x00000002;
export const UNALLOCATED = 0xffffffff;
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
/** The specification's limit, 2040 GiB (QEMU's VHD_MAX_SECTORS). */
export const MAX_DISK_SECTORS = 0xff000000;
export const MAX_DISK_SIZE = MAX_DISK_SECTORS * SECTOR_SIZE;
/** Virtual Server 2005 R2 SP1's default size for a new dynamic disk. */
export const DEFAULT_DISK_SIZE = 127 * 1024 ** 3;
/** Seconds from the Unix epoch to the VHD epoch, 2000-01-01T00:00:00Z. */
const VHD_EPOCH = 946684800;

export enum DiskType {
  Fixed = 2,
  Dynamic = 3,
  Differencing = 4,
}

export function diskTypeName(type: DiskType): 'fixed' | 'dynamic' | 'differencing' {
  return type === DiskType.Fixed ? 'fixed' : type === DiskType.Dynamic ? 'dynamic' : 'differencing';
}

export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

export interface Footer {
  cookie: string;
  features: number;
  formatVersion: number;
  /** Offset of the dynamic header; null for fixed disks (all ones on disk). */
  dataOffset: number | null;
  timestamp: number;
  creatorApplication: string;
  creatorVersion: number;
  creatorHostOs: string;
  originalSize: number;
  currentSize: number;
  geometry: Geometry;
  diskType: number;
  checksum: number;
  uniqueId: Buffer;
  savedState: boolean;
}

export interface ParentLocator {
  platformCode: string;
  /** As stored: the specification says sectors, Windows tools write bytes. */
  platformDataSpace: number;
  platformDataLength: number;
  platformDataOffset: number;
}

export interface DynamicHeader {
  cookie: string;
  dataOffset: number | null;
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUniqueId: Buffer;
  parentTimestamp: number;
  parentName: string;
  /** Always eight slots; unused ones have an empty platform code. */
  parentLocators: ParentLocator[];
}

/** One's complement of the byte sum, with the checksum field itself counted as zero. */
export function computeChecksum(structure: Buffer, checksumOffset: number): number {
  let sum = 0;
  for (let i = 0; i < structure.length; i++) {
    if (i >= checksumOffset && i < checksumOffset + 4) continue;
    sum = (sum + structure[i]) >>> 0;
  }
  return ~sum >>> 0;
}

export const FOOTER_CHECKSUM_OFFSET = 64;
export const HEADER_CHECKSUM_OFFSET = 36;

export function toVhdTime(date: Date): number {
  return Math.max(0, Math.floor(date.getTime() / 1000) - VHD_EPOCH) >>> 0;
}

export function fromVhdTime(seconds: number): Date {
  return new Date((seconds + VHD_EPOCH) * 1000);
}

function readOffset(buf: Buffer, at: number): number | null {
  const value = buf.readBigUInt64BE(at);
  if (value === 0xffffffffffffffffn) return null;
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
}

function writeOffset(buf: Buffer, at: number, value: number | null): void {
  buf.writeBigUInt64BE(value === null ? 0xffffffffffffffffn : BigInt(value), at);
}

function readSize(buf: Buffer, at: number): number {
  const value = buf.readBigUInt64BE(at);
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
}

export function decodeFooter(buf: Buffer): Footer {
  return {
    cookie: buf.toString('latin1', 0, 8),
    features: buf.readUInt32BE(8),
    formatVersion: buf.readUInt32BE(12),
    dataOffset: readOffset(buf, 16),
    timestamp: buf.readUInt32BE(24),
    creatorApplication: buf.toString('latin1', 28, 32),
    creatorVersion: buf.readUInt32BE(32),
    creatorHostOs: buf.toString('latin1', 36, 40),
    originalSize: readSize(buf, 40),
    currentSize: readSize(buf, 48),
    geometry: { cylinders: buf.readUInt16BE(56), heads: buf.readUInt8(58), sectorsPerTrack: buf.readUInt8(59) },
    diskType: buf.readUInt32BE(60),
    checksum: buf.readUInt32BE(64),
    uniqueId: Buffer.from(buf.subarray(68, 84)),
    savedState: buf.readUInt8(84) !== 0,
  };
}

/** Encodes a footer and stores its checksum (the footer's checksum field is updated too). */
export function encodeFooter(footer: Footer): Buffer {
  const buf = Buffer.alloc(FOOTER_SIZE);
  buf.write(FOOTER_COOKIE, 0, 'latin1');
  buf.writeUInt32BE(footer.features, 8);
  buf.writeUInt32BE(footer.formatVersion, 12);
  writeOffset(buf, 16, footer.dataOffset);
  buf.writeUInt32BE(footer.timestamp, 24);
  buf.write(footer.creatorApplication.padEnd(4, ' ').slice(0, 4), 28, 'latin1');
  buf.writeUInt32BE(footer.creatorVersion, 32);
  buf.write(footer.creatorHostOs.padEnd(4, ' ').slice(0, 4), 36, 'latin1');
  buf.writeBigUInt64BE(BigInt(footer.originalSize), 40);
  buf.writeBigUInt64BE(BigInt(footer.currentSize), 48);
  buf.writeUInt16BE(footer.geometry.cylinders, 56);
  buf.writeUInt8(footer.geometry.heads, 58);
  buf.writeUInt8(footer.geometry.sectorsPerTrack, 59);
  buf.writeUInt32BE(footer.diskType, 60);
  footer.uniqueId.copy(buf, 68, 0, 16);
  buf.writeUInt8(footer.savedState ? 1 : 0, 84);
  footer.checksum = computeChecksum(buf, FOOTER_CHECKSUM_OFFSET);
  buf.writeUInt32BE(footer.checksum, FOOTER_CHECKSUM_OFFSET);
  return buf;
}

const LOCATORS_OFFSET = 576;
const LOCATOR_SIZE = 24;

export function decodeHeader(buf: Buffer): DynamicHeader {
  const parentLocators: ParentLocator[] = [];
  for (let i = 0; i < 8; i++) {
    const at = LOCATORS_OFFSET + i * LOCATOR_SIZE;
    const code = buf.readUInt32BE(at);
    parentLocators.push({
      platformCode: code === 0 ? '' : buf.toString('latin1', at, at + 4),
      platformDataSpace: buf.readUInt32BE(at + 4),
      platformDataLength: buf.readUInt32BE(at + 8),
      platformDataOffset: readSize(buf, at + 16),
    });
  }
  return {
    cookie: buf.toString('latin1', 0, 8),
    dataOffset: readOffset(buf, 8),
    tableOffset: readSize(buf, 16),
    headerVersion: buf.readUInt32BE(24),
    maxTableEntries: buf.readUInt32BE(28),
    blockSize: buf.readUInt32BE(32),
    checksum: buf.readUInt32BE(36),
    parentUniqueId: Buffer.from(buf.subarray(40, 56)),
    parentTimestamp: buf.readUInt32BE(56),
    parentName: decodeUtf16(buf.subarray(64, 576), 'be'),
    parentLocators,
  };
}

export function encodeHeader(header: DynamicHeader): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE);
  buf.write(HEADER_COOKIE, 0, 'latin1');
  writeOffset(buf, 8, header.dataOffset);
  buf.writeBigUInt64BE(BigInt(header.tableOffset), 16);
  buf.writeUInt32BE(header.headerVersion, 24);
  buf.writeUInt32BE(header.maxTableEntries, 28);
  buf.writeUInt32BE(header.blockSize, 32);
  header.parentUniqueId.copy(buf, 40, 0, 16);
  buf.writeUInt32BE(header.parentTimestamp, 56);
  encodeUtf16(header.parentName, 'be').copy(buf, 64, 0, 512);
  header.parentLocators.forEach((locator, i) => {
    const at = LOCATORS_OFFSET + i * LOCATOR_SIZE;
    if (locator.platformCode) buf.write(locator.platformCode.padEnd(4, ' '), at, 'latin1');
    buf.writeUInt32BE(locator.platformDataSpace, at + 4);
    buf.writeUInt32BE(locator.platformDataLength, at + 8);
    buf.writeBigUInt64BE(BigInt(locator.platformDataOffset), at + 16);
  });
  header.checksum = computeChecksum(buf, HEADER_CHECKSUM_OFFSET);
  buf.writeUInt32BE(header.checksum, HEADER_CHECKSUM_OFFSET);
  return buf;
}

export function emptyLocators(): ParentLocator[] {
  return Array.from({ length: 8 }, () => ({
    platformCode: '',
    platformDataSpace: 0,
    platformDataLength: 0,
    platformDataOffset: 0,
  }));
}

/** UTF-16 without a byte-order mark, stopping at the first NUL. */
export function decodeUtf16(buf: Buffer, endian: 'be' | 'le'): string {
  const even = buf.subarray(0, buf.length - (buf.length % 2));
  const le = endian === 'le' ? Buffer.from(even) : Buffer.from(even).swap16();
  const text = le.toString('utf16le');
  const nul = text.indexOf('\0');
  return nul === -1 ? text : text.slice(0, nul);
}

export function encodeUtf16(text: string, endian: 'be' | 'le'): Buffer {
  const le = Buffer.from(text, 'utf16le');
  return endian === 'le' ? le : le.swap16();
}

/** Bytes taken by one block's sector bitmap: a bit per sector, padded to whole sectors. */
export function bitmapSize(blockSize: number): number {
  const bytes = Math.ceil(blockSize / SECTOR_SIZE / 8);
  return Math.ceil(bytes / SECTOR_SIZE) * SECTOR_SIZE;
}

export function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}
