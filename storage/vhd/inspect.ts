// Virtual Server's "Inspect Disk": what a disk is, how big it is in the guest and on the host,
// its parent chain, who created it and when, and how much of it is allocated.

import fs from 'node:fs';
import { DiskType, SECTOR_SIZE, diskTypeName, fromVhdTime } from './format.js';
import { geometrySectors } from './geometry.js';
import { type DiskOpenOptions, VhdDisk, formatUuid } from './disk.js';

export interface DiskInfo {
  file: string;
  type: 'fixed' | 'dynamic' | 'differencing';
  /** Bytes the guest sees. */
  sizeInGuest: number;
  /** Bytes the file takes on the host (allocated, not apparent). */
  sizeOnHost: number;
  fileSize: number;
  /** The footer's original size: the size at creation (older versions of this engine wrote the size asked for). */
  originalSize: number;
  currentSize: number;
  geometry: { cylinders: number; heads: number; sectorsPerTrack: number };
  /** C*H*S*512: what a CHS reader (Virtual PC, Virtual Server, QEMU by default) can address. */
  addressableSize: number;
  sizeRule: 'chs' | 'current-size';
  creator: { application: string; version: string; hostOs: string };
  uniqueId: string;
  created: string;
  modified: string;
  savedState: boolean;
  blockSize: number | null;
  blocks: { allocated: number; total: number } | null;
  parent: { file: string; uniqueId: string; timestamp: string; name: string } | null;
  /** This disk, then each parent down to the base. */
  chain: Array<{ file: string; type: string }>;
  warnings: string[];
}

export function inspectDisk(filePath: string, options: DiskOpenOptions = {}): DiskInfo {
  const disk = VhdDisk.open(filePath, options);
  try {
    return describe(disk);
  } finally {
    disk.close();
  }
}

export function describe(disk: VhdDisk): DiskInfo {
  const { layout } = disk.file;
  const { footer, header } = layout;
  const stat = fs.fstatSync(disk.file.fd);
  const version = footer.creatorVersion;
  return {
    file: disk.path,
    type: diskTypeName(disk.type),
    sizeInGuest: disk.size,
    sizeOnHost: stat.blocks * 512,
    fileSize: stat.size,
    originalSize: footer.originalSize,
    currentSize: footer.currentSize,
    geometry: { ...footer.geometry },
    addressableSize: geometrySectors(footer.geometry) * SECTOR_SIZE,
    sizeRule: layout.sizeRule,
    creator: {
      application: footer.creatorApplication.replace(/\0/g, '').trimEnd(),
      version: `${version >>> 16}.${version & 0xffff}`,
      hostOs: footer.creatorHostOs.replace(/\0/g, '').trimEnd(),
    },
    uniqueId: formatUuid(footer.uniqueId),
    created: fromVhdTime(footer.timestamp).toISOString(),
    modified: stat.mtime.toISOString(),
    savedState: footer.savedState,
    blockSize: header ? layout.blockSize : null,
    blocks: header ? { allocated: disk.file.allocatedBlocks(), total: Math.ceil(footer.currentSize / layout.blockSize) } : null,
    parent: disk.type === DiskType.Differencing && disk.parent ? {
      file: disk.parent.path,
      uniqueId: formatUuid(header!.parentUniqueId),
      timestamp: fromVhdTime(header!.parentTimestamp).toISOString(),
      name: header!.parentName,
    } : null,
    chain: disk.chain().map((d) => ({ file: d.path, type: diskTypeName(d.type) })),
    warnings: disk.chain().flatMap((d) => [
      ...d.file.warnings.map((w) => `${d.path}: ${w.message}`),
      ...d.chainWarnings.map((w) => `${d.path}: ${w}`),
    ]),
  };
}
