// Compacting a dynamic disk in place: blocks that read as all zeros are dropped, the remaining
// blocks are moved down into the holes (last block first), and the file is cut after the last
// one. Each step is durable before the next, so an interrupted compact loses no data and
// leaves a valid file; running it again finishes the job.

import { type LongOperationOptions, step } from '../progress.js';
import { VhdError } from './errors.js';
import { DiskType, SECTOR_SIZE, UNALLOCATED, diskTypeName } from './format.js';
import { VhdDisk } from './disk.js';
import { isZero } from './convert.js';

export interface CompactResult {
  blocksDropped: number;
  blocksMoved: number;
  bytesBefore: number;
  bytesAfter: number;
}

export async function compactDisk(filePath: string, options: LongOperationOptions = {}): Promise<CompactResult> {
  const disk = VhdDisk.open(filePath, { writable: true, holder: 'vhd compact' });
  try {
    if (disk.type !== DiskType.Dynamic) {
      const advice = disk.type === DiskType.Fixed ? 'convert it to a dynamic disk first' : 'merge it into its parent first';
      throw new VhdError('VHD_E_WRONG_TYPE', `${disk.path} is a ${diskTypeName(disk.type)} disk; only dynamic disks compact (${advice})`, disk.path);
    }
    const file = disk.file;
    const bytesBefore = file.layout.fileSize;
    const blocksDropped = await dropZeroBlocks(disk, options);
    const blocksMoved = packBlocks(disk);
    return { blocksDropped, blocksMoved, bytesBefore, bytesAfter: file.layout.fileSize };
  } finally {
    disk.close();
  }
}

async function dropZeroBlocks(disk: VhdDisk, options: LongOperationOptions): Promise<number> {
  const file = disk.file;
  const blocks = Math.ceil(file.layout.footer.currentSize / file.blockSize);
  const data = Buffer.alloc(file.blockSize);
  let dropped = 0;
  for (let block = 0; block < blocks; block++) {
    const offset = file.blockOffset(block);
    if (offset !== null) {
      file.readFully(data, file.dataOffset(offset, 0));
      if (isZero(data)) {
        file.setBlockEntry(block, UNALLOCATED);
        dropped++;
      }
    }
    await step(options, block + 1, blocks);
  }
  file.flush();
  return dropped;
}

/** Moves the highest block into the lowest hole that holds it, until none does; then cuts the file. */
function packBlocks(disk: VhdDisk): number {
  const file = disk.file;
  const span = file.layout.bitmapBytes + file.blockSize;
  const dataStart = Math.ceil(file.layout.metadataEnd / SECTOR_SIZE) * SECTOR_SIZE;
  const byOffset = (): Array<[number, number]> => {
    const placed: Array<[number, number]> = [];
    file.layout.bat!.forEach((entry, block) => { if (entry !== UNALLOCATED) placed.push([entry * SECTOR_SIZE, block]); });
    return placed.sort((a, b) => a[0] - b[0]);
  };
  let moved = 0;
  for (;;) {
    const placed = byOffset();
    if (!placed.length) break;
    const [lastOffset, lastBlock] = placed[placed.length - 1];
    let hole = -1;
    let cursor = dataStart;
    for (const [offset] of placed) {
      if (offset - cursor >= span) { hole = cursor; break; }
      cursor = offset + span;
    }
    if (hole < 0 || hole >= lastOffset) break;
    file.relocateBlock(lastBlock, hole);
    moved++;
  }
  const placed = byOffset();
  const end = placed.length ? placed[placed.length - 1][0] + span : dataStart;
  if (end < file.layout.footerOffset) file.moveFooter(end);
  return moved;
}
