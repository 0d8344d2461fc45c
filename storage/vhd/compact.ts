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
    await step(options, (block + 1) * file.blockSize, blocks * file.blockSize); // progress counts bytes
  }
  file.flush();
  return dropped;
}

/**
 * Moves the highest block into the lowest hole that holds it, until no hole lies below the
 * highest block; then cuts the file after the last block. One pass up from the bottom (holes
 * only ever fill) and down from the top.
 */
function packBlocks(disk: VhdDisk): number {
  const file = disk.file;
  const span = file.layout.bitmapBytes + file.blockSize;
  const placed: Array<[number, number]> = [];
  file.layout.bat!.forEach((entry, block) => { if (entry !== UNALLOCATED) placed.push([entry * SECTOR_SIZE, block]); });
  placed.sort((a, b) => a[0] - b[0]);
  let cursor = Math.ceil(file.layout.metadataEnd / SECTOR_SIZE) * SECTOR_SIZE;
  let lowest = 0;
  let highest = placed.length - 1;
  let moved = 0;
  while (lowest <= highest) {
    const [offset] = placed[lowest];
    if (offset - cursor < span) {
      cursor = Math.max(cursor, offset + span);
      lowest++;
      continue;
    }
    file.relocateBlock(placed[highest][1], cursor);
    cursor += span;
    highest--;
    moved++;
  }
  if (cursor < file.layout.footerOffset) file.moveFooter(cursor);
  return moved;
}
