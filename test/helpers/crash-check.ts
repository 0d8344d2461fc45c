// Shared by the engine's crash test (a writer process killed) and the NBD server's (a server
// killed): the parent disk of the differencing runs, and the check, after a kill, that every
// sector of a disk holds what the flushed writes put there.

import assert from 'node:assert/strict';
import { VhdDisk, createDynamic } from '../../storage/vhd/index.js';
import {
  type Found, PARENT_CHUNK_SECTORS, PARENT_SEED, type PlannedWrite, SECTOR, classifySector, describeFound, fillSector, parentHolds,
  planWrite,
} from '../fixtures/crash-workload.js';

export type CrashedKind = 'dynamic' | 'differencing';

/**
 * The differencing runs' parent: two of every three chunks of PARENT_CHUNK_SECTORS hold known
 * data (write index 0), the rest was never written, so a child reads both data and zeros through
 * it. It is read back and checked before any test relies on it.
 */
export async function createCrashParent(parentPath: string, size: number): Promise<void> {
  await createDynamic(parentPath, { size });
  const parent = VhdDisk.open(parentPath, { writable: true });
  try {
    const total = parent.size / SECTOR;
    const chunk = Buffer.alloc(PARENT_CHUNK_SECTORS * SECTOR);
    for (let lba = 0; lba < total; lba += PARENT_CHUNK_SECTORS) {
      if (!parentHolds(lba)) continue;
      const sectors = Math.min(PARENT_CHUNK_SECTORS, total - lba);
      for (let s = 0; s < sectors; s++) fillSector(chunk, s * SECTOR, PARENT_SEED, 0, lba + s);
      parent.write(chunk.subarray(0, sectors * SECTOR), lba * SECTOR);
    }
  } finally {
    parent.close();
  }
  const check = VhdDisk.open(parentPath);
  try {
    forEachSector(check, (lba, found) => {
      assert.ok(parentHolds(lba) ? found.kind === 'write' && found.index === 0 : found.kind === 'zero',
        `the parent disk built for the differencing runs reads back wrong at sector ${lba}: ${describeFound(found)}`);
    });
  } finally {
    check.close();
  }
}

/**
 * Each sector must hold its value as of the last flush (write `lastFlush`; the parent's
 * pattern or zeros before any write), or the data of a later write, up to `lastSent`, that
 * covers it: a write after the last flush may or may not have landed.
 */
export function assertFlushedWritesPresent(diskPath: string, kind: CrashedKind, seed: number, lastFlush: number, lastSent: number, context: string): void {
  const disk = VhdDisk.open(diskPath);
  try {
    const totalSectors = disk.size / SECTOR;
    const blockSize = disk.file.blockSize;
    // The value of each sector as of the last flush: the index of the last flushed write
    // covering it, 0 for "never written" (the parent's data, or zeros).
    const state = new Uint32Array(totalSectors);
    for (let i = 1; i <= lastFlush; i++) {
      const w = planWrite(seed, i, totalSectors, blockSize);
      state.fill(i, w.lba, w.lba + w.sectors);
    }
    const later = new Map<number, PlannedWrite>();
    const laterWrite = (index: number): PlannedWrite => {
      let w = later.get(index);
      if (!w) later.set(index, (w = planWrite(seed, index, totalSectors, blockSize)));
      return w;
    };
    const baseline = (lba: number): Found =>
      kind === 'differencing' && parentHolds(lba) ? { kind: 'write', seed: PARENT_SEED, index: 0 } : { kind: 'zero' };
    const problems: string[] = [];
    let bad = 0;
    forEachSector(disk, (lba, found) => {
      const expected: Found = state[lba] ? { kind: 'write', seed, index: state[lba] } : baseline(lba);
      if (sameFound(found, expected)) return;
      if (found.kind === 'write' && found.seed === seed && found.index > lastFlush && found.index <= lastSent) {
        const w = laterWrite(found.index);
        if (w.lba <= lba && lba < w.lba + w.sectors) return;
      }
      bad++;
      if (problems.length < 8) {
        const allowed: string[] = [];
        for (let i = lastFlush + 1; i <= lastSent && allowed.length < 6; i++) {
          const w = laterWrite(i);
          if (w.lba <= lba && lba < w.lba + w.sectors) allowed.push(`#${i}`);
        }
        problems.push(`sector ${lba} (byte offset ${lba * SECTOR}): expected ${describeFound(expected)}` +
          `${allowed.length ? ` or data of a later write (${allowed.join(', ')}${allowed.length === 6 ? ', ...' : ''})` : ''}` +
          `, found ${describeFound(found)}`);
      }
    });
    assert.equal(bad, 0, `${bad} sectors do not hold what the flushed writes put there:\n  ${context}\n  ${problems.join('\n  ')}`);
  } finally {
    disk.close();
  }
}

/** Reads the whole disk and tells `visit` what each sector holds. */
function forEachSector(disk: VhdDisk, visit: (lba: number, found: Found) => void): void {
  const chunk = Buffer.alloc(4 * 1024 * 1024);
  for (let offset = 0; offset < disk.size; offset += chunk.length) {
    const piece = chunk.subarray(0, Math.min(chunk.length, disk.size - offset));
    disk.readInto(piece, offset);
    for (let at = 0; at < piece.length; at += SECTOR) visit((offset + at) / SECTOR, classifySector(piece, at, (offset + at) / SECTOR));
  }
}

function sameFound(a: Found, b: Found): boolean {
  if (a.kind === 'zero' || b.kind === 'zero') return a.kind === b.kind;
  return a.kind === 'write' && b.kind === 'write' && a.seed === b.seed && a.index === b.index;
}
