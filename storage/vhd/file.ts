// One VHD file open for reading or writing: its validated structures, block lookup, sector
// bitmaps, and crash-safe block allocation. The guest's view through a differencing chain is
// disk.ts; this module only knows one file.
//
// Crash safety. A new block goes where the footer is: the footer is first rewritten past the
// new block and synced (the file grows and always ends in a valid footer), then the block's
// bitmap overwrites the old footer. The block table entry that makes the block reachable is
// written only at the next flush, after a sync of the data, along with bitmap bits set since.
// So at any instant the table points only at durable blocks, and a flush returns only once
// everything written before it is reachable and durable.

import fs from 'node:fs';
import { type Problem, VhdError, ioError, problemToError } from './errors.js';
import { DiskType, FOOTER_SIZE, SECTOR_SIZE, UNALLOCATED } from './format.js';
import { type Layout, readAt, readLayout } from './layout.js';
import { abandonWriteLock, acquireWriteLock, releaseWriteLock } from './lock.js';
import { openRegularFile } from './regular-file.js';

export interface FileOpenOptions {
  writable?: boolean;
  /** Who holds the write lock, named in the error a second writer gets. */
  holder?: string;
  /**
   * Skip the sync at each block allocation. Only for files this process is building from
   * scratch (convert, merge into a new file), which are renamed into place after a final flush.
   */
  fastAllocation?: boolean;
}

export class VhdFile {
  private readonly bitmaps = new Map<number, Buffer>();
  private readonly dirtyBitmaps = new Set<number>();
  /** Blocks whose every bitmap bit is set, so writes need not look at the bitmap again. */
  private readonly fullBlocks = new Set<number>();
  private readonly pendingEntries = new Set<number>();
  /** Whether anything was written since the last sync, so an idle flush costs no fsync. */
  private unsynced = false;
  private closed = false;

  private constructor(
    readonly path: string,
    readonly fd: number,
    readonly layout: Layout,
    readonly warnings: Problem[],
    readonly writable: boolean,
    private readonly fastAllocation: boolean,
  ) {}

  static open(path: string, options: FileOpenOptions = {}): VhdFile {
    const writable = options.writable ?? false;
    const fd = openRegularFile(path, writable);
    try {
      if (writable) acquireWriteLock(path, options.holder ?? `vserver (pid ${process.pid})`);
      const { layout, problems } = readLayout(fd);
      const error = problems.find((p) => p.severity === 'error');
      if (!layout || error) throw problemToError(path, error!);
      const file = new VhdFile(path, fd, layout, problems, writable, options.fastAllocation ?? false);
      if (writable) file.repairFooterCopy();
      return file;
    } catch (e) {
      if (writable) releaseWriteLock(path);
      fs.closeSync(fd);
      throw e instanceof VhdError ? e : ioError(path, 'reading', e);
    }
  }

  get type(): DiskType {
    return this.layout.type;
  }

  get blockSize(): number {
    return this.layout.blockSize;
  }

  get sectorsPerBlock(): number {
    return this.layout.blockSize / SECTOR_SIZE;
  }

  /** Byte offset where a block's bitmap starts, or null when the block is not allocated. */
  blockOffset(block: number): number | null {
    const entry = this.layout.bat![block];
    return entry === UNALLOCATED || entry === undefined ? null : entry * SECTOR_SIZE;
  }

  /** Byte offset in the file of a byte inside an allocated block's data. */
  dataOffset(blockOffset: number, withinBlock: number): number {
    return blockOffset + this.layout.bitmapBytes + withinBlock;
  }

  readBitmap(block: number, blockOffset: number): Buffer {
    let bitmap = this.bitmaps.get(block);
    if (!bitmap) {
      bitmap = readAt(this.fd, this.layout.bitmapBytes, blockOffset);
      this.bitmaps.set(block, bitmap);
    }
    return bitmap;
  }

  allocatedBlocks(): number {
    const bat = this.layout.bat;
    let count = 0;
    if (bat) for (let i = 0; i < bat.length; i++) if (bat[i] !== UNALLOCATED) count++;
    return count;
  }

  readFully(buf: Buffer, position: number): void {
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = fs.readSync(this.fd, buf, done, buf.length - done, position + done);
      } catch (e) {
        throw ioError(this.path, `reading ${buf.length} bytes at offset ${position}`, e);
      }
      if (n === 0) throw new VhdError('VHD_E_IO', `${this.path}: unexpected end of file at offset ${position + done}`, this.path, position + done);
      done += n;
    }
  }

  async readFullyAsync(buf: Buffer, position: number): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        n = await new Promise<number>((resolve, reject) => {
          fs.read(this.fd, buf, done, buf.length - done, position + done, (e, bytes) => (e ? reject(e) : resolve(bytes)));
        });
      } catch (e) {
        throw ioError(this.path, `reading ${buf.length} bytes at offset ${position}`, e);
      }
      if (n === 0) throw new VhdError('VHD_E_IO', `${this.path}: unexpected end of file at offset ${position + done}`, this.path, position + done);
      done += n;
    }
  }

  writeFully(buf: Buffer, position: number): void {
    this.assertWritable();
    let done = 0;
    try {
      while (done < buf.length) done += fs.writeSync(this.fd, buf, done, buf.length - done, position + done);
    } catch (e) {
      throw ioError(this.path, `writing ${buf.length} bytes at offset ${position}`, e);
    }
    this.unsynced = true;
  }

  sync(): void {
    try {
      fs.fsyncSync(this.fd);
    } catch (e) {
      throw ioError(this.path, 'syncing to disk', e);
    }
    this.unsynced = false;
  }

  /**
   * Appends a block where the footer stands and returns its offset; see the file comment for
   * the order. A dynamic disk's new block is all present (zeros); a differencing disk's block
   * starts with no sector present, so every sector still reads from the parent.
   */
  allocateBlock(block: number): number {
    this.assertWritable();
    const layout = this.layout;
    const offset = layout.footerOffset;
    const newFooterOffset = offset + layout.bitmapBytes + layout.blockSize;
    this.writeFully(layout.footerBytes, newFooterOffset);
    // The new footer must be durable before the old one is overwritten, or a power cut could
    // leave a file ending in no footer. The bitmap need not be: flush syncs before the table
    // entry that makes it reachable is written.
    if (!this.fastAllocation) this.sync();
    const full = layout.type === DiskType.Dynamic;
    const bitmap = Buffer.alloc(layout.bitmapBytes, full ? 0xff : 0);
    this.writeFully(bitmap, offset);
    layout.footerOffset = newFooterOffset;
    layout.fileSize = newFooterOffset + FOOTER_SIZE;
    layout.bat![block] = offset / SECTOR_SIZE;
    this.pendingEntries.add(block);
    this.bitmaps.set(block, bitmap);
    if (full) this.fullBlocks.add(block);
    return offset;
  }

  /** Marks sectors of an allocated block as held by this file; written out at the next flush. */
  markPresent(block: number, blockOffset: number, firstSector: number, count: number): void {
    if (this.fullBlocks.has(block)) return;
    const bitmap = this.readBitmap(block, blockOffset);
    let changed = false;
    for (let s = firstSector; s < firstSector + count; s++) {
      const mask = 0x80 >> (s & 7);
      if (!(bitmap[s >> 3] & mask)) {
        bitmap[s >> 3] |= mask;
        changed = true;
      }
    }
    if (changed) this.dirtyBitmaps.add(block);
    else if (count === this.sectorsPerBlock) this.fullBlocks.add(block);
  }

  /** Points a block table entry elsewhere (or at nothing); written at the next flush. */
  setBlockEntry(block: number, entry: number): void {
    this.assertWritable();
    this.layout.bat![block] = entry;
    this.pendingEntries.add(block);
    this.bitmaps.delete(block);
    this.dirtyBitmaps.delete(block);
    this.fullBlocks.delete(block);
  }

  /** Makes every write so far durable and reachable. */
  flush(): void {
    if (!this.writable || this.closed) return;
    if (this.unsynced) this.sync();
    if (this.pendingEntries.size === 0 && this.dirtyBitmaps.size === 0) return;
    for (const block of this.dirtyBitmaps) {
      const offset = this.blockOffset(block);
      if (offset !== null) this.writeFully(this.bitmaps.get(block)!, offset);
    }
    this.writePendingEntries();
    this.sync();
    this.dirtyBitmaps.clear();
    this.pendingEntries.clear();
  }

  private writePendingEntries(): void {
    const { bat, header } = this.layout;
    const sectors = new Set<number>();
    for (const block of this.pendingEntries) sectors.add(Math.floor((block * 4) / SECTOR_SIZE));
    for (const sector of sectors) {
      const first = (sector * SECTOR_SIZE) / 4;
      const last = Math.min(bat!.length, first + SECTOR_SIZE / 4);
      const buf = Buffer.alloc((last - first) * 4);
      for (let i = first; i < last; i++) buf.writeUInt32BE(bat![i], (i - first) * 4);
      this.writeFully(buf, header!.tableOffset + first * 4);
    }
  }

  /**
   * Copies a block (bitmap and data) to `target`, or to the end of the file, and repoints its
   * entry. The copy is durable before the entry changes, so a crash leaves one of the two
   * places referenced and the other merely unused. Used by compact and expand.
   */
  relocateBlock(block: number, target?: number): void {
    const from = this.blockOffset(block);
    if (from === null) return;
    this.flush(); // the copy must carry the block's current bitmap
    const span = this.layout.bitmapBytes + this.layout.blockSize;
    let to = target;
    if (to === undefined) {
      to = this.layout.footerOffset;
      this.writeFully(this.layout.footerBytes, to + span);
      this.layout.footerOffset = to + span;
      this.layout.fileSize = to + span + FOOTER_SIZE;
    }
    const chunk = Buffer.alloc(Math.min(span, 1024 * 1024));
    for (let done = 0; done < span; done += chunk.length) {
      const piece = chunk.subarray(0, Math.min(chunk.length, span - done));
      this.readFully(piece, from + done);
      this.writeFully(piece, to + done);
    }
    this.sync();
    this.setBlockEntry(block, to / SECTOR_SIZE);
    this.flush();
  }

  /**
   * Moves the footer to `offset`, which must lie past every referenced byte: the new footer is
   * written and synced before the file is cut, so the file always ends in a valid footer.
   */
  moveFooter(offset: number): void {
    this.assertWritable();
    this.writeFully(this.layout.footerBytes, offset);
    this.sync();
    if (offset + FOOTER_SIZE < this.layout.fileSize) {
      fs.ftruncateSync(this.fd, offset + FOOTER_SIZE);
      this.sync();
    }
    this.layout.footerOffset = offset;
    this.layout.fileSize = offset + FOOTER_SIZE;
  }

  /** Rewrites the footer (both copies for dynamic disks) with new fields, each write synced. */
  rewriteFooter(footerBytes: Buffer): void {
    this.assertWritable();
    this.writeFully(footerBytes, this.layout.footerOffset);
    this.sync();
    if (this.layout.type !== DiskType.Fixed) {
      this.writeFully(footerBytes, 0);
      this.sync();
    }
    this.layout.footerBytes = footerBytes;
  }

  /** The end footer validated; a stale copy at offset 0 (an interrupted footer update) is restored. */
  private repairFooterCopy(): void {
    if (this.layout.type === DiskType.Fixed) return;
    if (readAt(this.fd, FOOTER_SIZE, 0).equals(this.layout.footerBytes)) return;
    this.writeFully(this.layout.footerBytes, 0);
    this.sync();
  }

  close(): void {
    if (this.closed) return;
    try {
      this.flush();
    } finally {
      this.closed = true;
      fs.closeSync(this.fd);
      if (this.writable) releaseWriteLock(this.path);
    }
  }

  /** Closes without writing anything (no flush, the lock file left): see abandonWriteLock. */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
    if (this.writable) abandonWriteLock(this.path);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  private assertWritable(): void {
    if (this.closed) throw new VhdError('VHD_E_CLOSED', `${this.path} is closed`, this.path);
    if (!this.writable) throw new VhdError('VHD_E_READ_ONLY', `${this.path} is open read-only`, this.path);
  }
}
