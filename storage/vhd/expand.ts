// Growing a fixed or dynamic disk. The new size is rounded as at creation; the footer with the
// new size (both copies) is the last thing written, so until then the disk is its old size and
// valid, and new space always reads as zeros.

import { type LongOperationOptions, step } from '../progress.js';
import { VhdError } from './errors.js';
import { DiskType, FOOTER_SIZE, SECTOR_SIZE, decodeFooter, encodeFooter, encodeHeader, roundUp } from './format.js';
import { sizeForRequest } from './geometry.js';
import { validateRequestedSize } from './create.js';
import { VhdDisk } from './disk.js';
import type { VhdFile } from './file.js';

export async function expandDisk(filePath: string, requested: number, options: LongOperationOptions = {}): Promise<{ size: number }> {
  validateRequestedSize(requested);
  const disk = VhdDisk.open(filePath, { writable: true, holder: 'vhd expand' });
  try {
    if (disk.type === DiskType.Differencing) {
      throw new VhdError('VHD_E_WRONG_TYPE', `${disk.path} is a differencing disk, whose size is its parent's; expand the parent chain's base instead`, disk.path);
    }
    const { size, geometry } = sizeForRequest(requested);
    if (size <= disk.size) {
      throw new VhdError('VHD_E_SIZE_LIMIT', `${disk.path} is already ${disk.size} bytes; the new size (${size}) must be larger`, disk.path);
    }
    const footer = decodeFooter(disk.file.layout.footerBytes);
    footer.currentSize = size;
    footer.geometry = geometry;
    const footerBytes = encodeFooter(footer);
    if (disk.type === DiskType.Fixed) await expandFixed(disk.file, size, footerBytes, options);
    else expandDynamic(disk.file, size, footerBytes);
    return { size };
  } finally {
    disk.close();
  }
}

/**
 * A fixed disk is the size its end footer says, so that footer changes last. First the old
 * footer is copied to the new end: the disk still reads at its old size, and the old footer's
 * place is now outside the guest's view. Then the whole new area (the old footer's 512 bytes
 * included) is zeroed and synced, and only then does the end footer get the new size. A kill
 * at any point leaves the old disk, or the new one reading zeros in all its new space. A file
 * left longer by an earlier interrupted expand is cut to the new end.
 */
async function expandFixed(file: VhdFile, size: number, footerBytes: Buffer, options: LongOperationOptions): Promise<void> {
  const oldDataEnd = file.layout.footer.currentSize;
  if (file.layout.footerOffset < size) {
    file.writeFully(file.layout.footerBytes, size);
    file.sync();
    file.layout.footerOffset = size;
    file.layout.fileSize = size + FOOTER_SIZE;
  }
  const zeros = Buffer.alloc(4 * 1024 * 1024);
  for (let at = oldDataEnd; at < size; at += zeros.length) {
    file.writeFully(zeros.subarray(0, Math.min(zeros.length, size - at)), at);
    await step(options, at - oldDataEnd, size - oldDataEnd);
  }
  file.sync();
  file.layout.footerBytes = footerBytes;
  file.moveFooter(size);
}

/** Makes room for a longer block table (moving blocks that sit where it must grow), then grows it. */
function expandDynamic(file: VhdFile, size: number, footerBytes: Buffer): void {
  const header = file.layout.header!;
  const entries = Math.ceil(size / header.blockSize);
  if (entries > header.maxTableEntries) {
    const oldTableEnd = header.tableOffset + roundUp(header.maxTableEntries * 4, SECTOR_SIZE);
    const tableEnd = header.tableOffset + roundUp(entries * 4, SECTOR_SIZE);
    for (const block of blocksBefore(file, tableEnd)) file.relocateBlock(block);
    if (file.layout.footerOffset < tableEnd) file.moveFooter(tableEnd);
    file.writeFully(Buffer.alloc(tableEnd - oldTableEnd, 0xff), oldTableEnd);
    if (oldTableEnd > header.tableOffset + header.maxTableEntries * 4) {
      const padStart = header.tableOffset + header.maxTableEntries * 4;
      file.writeFully(Buffer.alloc(oldTableEnd - padStart, 0xff), padStart);
    }
    file.sync();
    header.maxTableEntries = entries;
    file.writeFully(encodeHeader(header), file.layout.footer.dataOffset!);
    file.sync();
  }
  file.rewriteFooter(footerBytes);
}

function blocksBefore(file: VhdFile, end: number): number[] {
  const blocks: number[] = [];
  file.layout.bat!.forEach((_, block) => {
    const offset = file.blockOffset(block);
    if (offset !== null && offset < end) blocks.push(block);
  });
  return blocks;
}

