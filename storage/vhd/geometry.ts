// CHS geometry and the rule that decides a disk's size in the guest.
// Virtual PC and Virtual Server address a disk by its CHS geometry, Hyper-V and VirtualBox
// by the footer's current size; QEMU picks per creator. Disks made here are sized so that
// both readings agree (C*H*S*512 == current size, or the saturated geometry above 127.5 GiB).

import { type Geometry, SECTOR_SIZE } from './format.js';

export const MAX_CHS_SECTORS = 65535 * 16 * 255;

/** The specification's CHS algorithm (appendix): rounds down. */
export function geometryForSectors(totalSectors: number): Geometry {
  let sectorsPerTrack: number;
  let heads: number;
  let cylinderTimesHeads: number;
  const total = Math.min(totalSectors, MAX_CHS_SECTORS);
  if (total >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(total / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylinderTimesHeads = Math.floor(total / sectorsPerTrack);
    heads = Math.max(4, Math.floor((cylinderTimesHeads + 1023) / 1024));
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(total / sectorsPerTrack);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(total / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack };
}

export function geometrySectors(g: Geometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack;
}

export function isSaturatedGeometry(g: Geometry): boolean {
  return g.cylinders === 65535 && g.heads === 16 && g.sectorsPerTrack === 255;
}

/**
 * The size a new disk gets for a requested size: rounded up to whole sectors, then up to the
 * next size its CHS geometry expresses exactly (as QEMU does), so that CHS readers and
 * current-size readers see the same disk. Above the CHS range the geometry saturates and
 * every reader uses the current size.
 */
export function sizeForRequest(requestedBytes: number): { size: number; geometry: Geometry } {
  const sectors = Math.ceil(requestedBytes / SECTOR_SIZE);
  if (sectors > MAX_CHS_SECTORS) {
    return { size: sectors * SECTOR_SIZE, geometry: geometryForSectors(MAX_CHS_SECTORS) };
  }
  for (let candidate = sectors; ; candidate++) {
    const geometry = geometryForSectors(candidate);
    if (geometrySectors(geometry) < sectors) continue;
    // Rounding that reaches the saturated geometry keeps the exact size: readers then use the current size.
    const size = isSaturatedGeometry(geometry) ? sectors : geometrySectors(geometry);
    return { size: size * SECTOR_SIZE, geometry };
  }
}

/** Creators whose own product sizes the disk by CHS; every other reader uses the current size. */
const CHS_CREATORS = new Set(['vpc ', 'vs  ', 'qemu']);

export type SizeRule = 'chs' | 'current-size';

/**
 * Which field gives the size in the guest. Files follow the reading of the product that wrote
 * them: Virtual PC, Virtual Server and QEMU's default writer by CHS (QEMU reads them that way
 * too), Hyper-V ("win "), VirtualBox ("vbox"), Disk2vhd, XenServer, "qem2" by current size; a
 * saturated geometry always means current size. A differencing disk always by current size,
 * which its creator copies from the parent's size (QEMU does not read differencing disks).
 */
export function sizeRule(creatorApplication: string, geometry: Geometry, differencing: boolean): SizeRule {
  if (differencing || isSaturatedGeometry(geometry)) return 'current-size';
  return CHS_CREATORS.has(creatorApplication) ? 'chs' : 'current-size';
}
