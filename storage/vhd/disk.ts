// A virtual hard disk as a guest sees it: one VHD file and, for a differencing disk, its chain
// of read-only parents. Reads and writes take any 512-byte-aligned offset and length; a
// differencing disk copies on write at sector granularity (the bitmap says which sectors it
// holds). All I/O is synchronous: the engine runs in its own process per disk user, and
// page-cache I/O costs less than a hop through libuv's thread pool.

import fs from 'node:fs';
import path from 'node:path';
import { VhdError } from './errors.js';
import { DiskType, SECTOR_SIZE, UNALLOCATED, toVhdTime } from './format.js';
import { type FileOpenOptions, VhdFile } from './file.js';
import { parentCandidates } from './locators.js';
import { finishInterruptedReparent } from './reparent-journal.js';

export interface DiskOpenOptions extends FileOpenOptions {
  /**
   * Asked before each parent candidate is looked at (vserverd: is it inside the storage roots?).
   * Throwing refuses the candidate unseen; when no other candidate is the parent, the first
   * refusal is what open() throws.
   */
  admitParent?: (candidate: string, child: string) => void;
  /**
   * Complete a re-parenting that a crash interrupted (a journal "<file>.reparent" beside a file
   * of the chain) before opening that file: what a VM worker does before serving a chain.
   */
  finishReparents?: boolean;
}

/** A run of bytes that the chain either holds or reads as zeros. */
export interface AllocationRun {
  offset: number;
  length: number;
  allocated: boolean;
}

/** Deeper chains are refused: they only arise from a loop or from damage. */
export const MAX_CHAIN_DEPTH = 1000;

export class VhdDisk {
  private closed = false;

  private constructor(
    readonly file: VhdFile,
    private parentDisk: VhdDisk | null,
    /** Bytes the guest sees. */
    readonly size: number,
    /** Non-fatal findings about the chain (a parent timestamp that moved, a size that differs). */
    readonly chainWarnings: string[],
  ) {}

  static open(filePath: string, options: DiskOpenOptions = {}): VhdDisk {
    return VhdDisk.openLevel(path.resolve(filePath), options, new Set());
  }

  private static openLevel(filePath: string, options: DiskOpenOptions, seen: Set<string>): VhdDisk {
    if (seen.size >= MAX_CHAIN_DEPTH) {
      throw new VhdError('VHD_E_CHAIN_TOO_DEEP', `${filePath}: differencing chain is deeper than ${MAX_CHAIN_DEPTH} disks`, filePath);
    }
    if (options.finishReparents) finishInterruptedReparent(filePath);
    const file = VhdFile.open(filePath, options);
    if (file.type !== DiskType.Differencing) return new VhdDisk(file, null, file.layout.ownSize, []);
    try {
      seen.add(realPath(filePath));
      const { parent, warnings } = VhdDisk.openParent(file, seen, options.admitParent, options.finishReparents);
      if (parent.size !== file.layout.ownSize) {
        warnings.push(`its size (${file.layout.ownSize} bytes) differs from its parent's (${parent.size}); past the parent's end it reads zeros`);
      }
      return new VhdDisk(file, parent, file.layout.ownSize, warnings);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Tries each candidate location; the first whose unique id matches the child's record wins. */
  private static openParent(child: VhdFile, seen: Set<string>, admitParent?: DiskOpenOptions['admitParent'], finishReparents?: boolean): { parent: VhdDisk; warnings: string[] } {
    const header = child.layout.header!;
    const candidates = parentCandidates(child.fd, child.path, header);
    const mismatched: string[] = [];
    const inChain: string[] = [];
    let unopenable: VhdError | null = null;
    let refused: unknown = null;
    for (const candidate of candidates) {
      if (admitParent) {
        try {
          admitParent(candidate.path, child.path);
        } catch (e) {
          refused ??= e;
          continue;
        }
      }
      // The child itself (a same-named parent looked for beside it) or a disk below it: never its parent.
      if (seen.has(realPath(candidate.path))) {
        inChain.push(candidate.path);
        continue;
      }
      let parent: VhdDisk;
      try {
        // A copy: a candidate that turns out wrong must not leave its chain marked as seen.
        parent = VhdDisk.openLevel(candidate.path, { writable: false, admitParent, finishReparents }, new Set(seen));
      } catch (e) {
        if (!(e instanceof VhdError)) throw e;
        // A candidate that does not exist is simply not the parent (no existsSync first: one open, which cannot block).
        if (!(e.code === 'VHD_E_NOT_FOUND' && e.file === candidate.path)) unopenable ??= e;
        continue;
      }
      if (parent.file.layout.footer.uniqueId.equals(header.parentUniqueId)) {
        const warnings: string[] = [];
        const mtime = toVhdTime(fs.fstatSync(parent.file.fd).mtime);
        if (header.parentTimestamp !== mtime && header.parentTimestamp !== parent.file.layout.footer.timestamp) {
          warnings.push(`its parent ${candidate.path} was modified after this disk was created (the parent timestamp differs)`);
        }
        return { parent, warnings };
      }
      mismatched.push(`${candidate.path} (${candidate.source}) has unique id ${formatUuid(parent.file.layout.footer.uniqueId)}`);
      parent.close();
    }
    // A refused candidate (outside the storage roots) was never opened: nothing is known of it.
    if (refused) throw refused;
    // The parent's own fault (damage, a missing grandparent) says more than "not found".
    if (unopenable) throw unopenable;
    const expected = formatUuid(header.parentUniqueId);
    if (mismatched.length) {
      throw new VhdError('VHD_E_PARENT_MISMATCH',
        `${child.path}: parent must have unique id ${expected}, but ${mismatched.join('; ')}`, child.path);
    }
    const skipped = inChain.length ? `; ${inChain.join(', ')} is this disk itself or below it in the chain` : '';
    const tried = (candidates.map((c) => `${c.path} (${c.source})`).join(', ') || 'none recorded') + skipped;
    throw new VhdError('VHD_E_PARENT_NOT_FOUND',
      `${child.path}: parent disk ${header.parentName || ''} (unique id ${expected}) not found; looked at ${tried}`, child.path);
  }

  /** The disk below this one in the chain (null for a dynamic or fixed disk). */
  get parent(): VhdDisk | null {
    return this.parentDisk;
  }

  /**
   * Opens a differencing disk onto a parent that is already open (the running top of a chain,
   * say), instead of opening the parent's chain again. The parent's unique id must match.
   */
  static openOnto(filePath: string, parent: VhdDisk, options: FileOpenOptions = {}): VhdDisk {
    const file = VhdFile.open(path.resolve(filePath), options);
    if (file.type !== DiskType.Differencing || !file.layout.header!.parentUniqueId.equals(parent.file.layout.footer.uniqueId)) {
      file.close();
      throw new VhdError('VHD_E_PARENT_MISMATCH', `${filePath} is not a differencing child of ${parent.path}`, filePath);
    }
    return new VhdDisk(file, parent, file.layout.ownSize, []);
  }

  /**
   * Points this disk at another parent chain (after its file's header was re-parented, or when
   * the chain below was reopened). The old chain is the caller's to close.
   */
  relink(parent: VhdDisk | null): void {
    if (parent && parent.size < this.size && this.type === DiskType.Differencing) {
      this.chainWarnings.push(`its parent ${parent.path} is smaller; past its end it reads zeros`);
    }
    this.parentDisk = parent;
  }

  /** Closes this level only, leaving its parents open (they belong to another chain now). */
  closeOwn(): void {
    if (this.closed) return;
    this.closed = true;
    this.file.close();
  }

  get path(): string {
    return this.file.path;
  }

  get type(): DiskType {
    return this.file.type;
  }

  get writable(): boolean {
    return this.file.writable;
  }

  /** The chain from this disk down to its base, this disk first. */
  chain(): VhdDisk[] {
    return this.parent ? [this, ...this.parent.chain()] : [this];
  }

  read(offset: number, length: number): Buffer {
    this.checkRange(offset, length, 'read');
    const buf = Buffer.allocUnsafe(length);
    this.readRange(buf, offset);
    return buf;
  }

  readInto(target: Buffer, offset: number): void {
    this.checkRange(offset, target.length, 'read');
    this.readRange(target, offset);
  }

  /**
   * Like readInto, but the file reads run in libuv's thread pool, so a large read overlaps
   * other work (sending the previous reply, say). The mapping is decided at the call; a write
   * that lands on the same range before the reads finish may or may not be seen.
   */
  async readIntoAsync(target: Buffer, offset: number): Promise<void> {
    this.checkRange(offset, target.length, 'read');
    const reads: Array<Promise<void>> = [];
    this.readRange(target, offset, (file, piece, position) => { reads.push(file.readFullyAsync(piece, position)); });
    await Promise.all(reads);
  }

  write(data: Buffer, offset: number): void {
    this.checkRange(offset, data.length, 'write');
    if (!this.file.writable) throw new VhdError('VHD_E_READ_ONLY', `${this.path} is open read-only`, this.path);
    if (this.type === DiskType.Fixed) {
      this.file.writeFully(data, offset);
      return;
    }
    const blockSize = this.file.blockSize;
    let done = 0;
    while (done < data.length) {
      const position = offset + done;
      const block = Math.floor(position / blockSize);
      const within = position - block * blockSize;
      const n = Math.min(blockSize - within, data.length - done);
      const blockOffset = this.file.blockOffset(block) ?? this.file.allocateBlock(block);
      this.file.writeFully(data.subarray(done, done + n), this.file.dataOffset(blockOffset, within));
      this.file.markPresent(block, blockOffset, within / SECTOR_SIZE, n / SECTOR_SIZE);
      done += n;
    }
  }

  /** Durable and reachable: every write before this call survives a crash after it returns. */
  flush(): void {
    this.file.flush();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.file.close();
    } finally {
      this.parent?.close();
    }
  }

  /** Closes the chain without writing anything (a fenced VM's disk): see VhdFile.abandon. */
  abandon(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.file.abandon();
    } finally {
      this.parent?.abandon();
    }
  }

  /** True when some level of the chain holds data in the range; false means it reads as zeros. */
  isAllocated(offset: number, length: number): boolean {
    if (this.type === DiskType.Fixed) return true;
    const blockSize = this.file.blockSize;
    const first = Math.floor(offset / blockSize);
    const last = Math.floor((offset + length - 1) / blockSize);
    for (let block = first; block <= last; block++) {
      if (this.file.blockOffset(block) !== null) return true;
    }
    return this.parent ? this.parent.isAllocated(offset, length) : false;
  }

  /**
   * Which parts of [offset, offset + length) some level of the chain holds (allocated) and which
   * read as zeros because no level does, as contiguous runs in order, stopping after
   * `maxRuns` runs. Differencing disks answer per sector from their bitmaps.
   */
  allocationMap(offset: number, length: number, maxRuns = Infinity): AllocationRun[] {
    this.checkRange(offset, length, 'map');
    const runs: AllocationRun[] = [];
    this.mapRange(offset, length, runs, maxRuns);
    return runs;
  }

  private mapRange(offset: number, length: number, runs: AllocationRun[], maxRuns: number): void {
    const add = (start: number, n: number, allocated: boolean): void => {
      const last = runs[runs.length - 1];
      if (last && last.allocated === allocated && last.offset + last.length === start) last.length += n;
      else runs.push({ offset: start, length: n, allocated });
    };
    const below = (start: number, n: number): void => {
      const inParent = this.parent ? Math.max(0, Math.min(n, this.parent.size - start)) : 0;
      if (inParent > 0) this.parent!.mapRange(start, inParent, runs, maxRuns);
      if (n > inParent) add(start + inParent, n - inParent, false);
    };
    if (this.type === DiskType.Fixed) {
      add(offset, length, true);
      return;
    }
    const blockSize = this.file.blockSize;
    let done = 0;
    while (done < length && runs.length <= maxRuns) {
      const position = offset + done;
      const block = Math.floor(position / blockSize);
      const within = position - block * blockSize;
      const n = Math.min(blockSize - within, length - done);
      const blockOffset = this.file.blockOffset(block);
      if (blockOffset === null) {
        below(position, n);
      } else if (this.type === DiskType.Dynamic) {
        add(position, n, true);
      } else {
        for (const run of bitmapRuns(this.file.readBitmap(block, blockOffset), within / SECTOR_SIZE, n / SECTOR_SIZE)) {
          const start = position + run.start * SECTOR_SIZE;
          const runLength = (run.end - run.start) * SECTOR_SIZE;
          if (run.present) add(start, runLength, true);
          else below(start, runLength);
        }
      }
      done += n;
    }
    if (runs.length > maxRuns) runs.length = maxRuns;
  }

  /**
   * Drops block `block` from this file, so it reads from the parent (or as zeros) again. The
   * table entry changes at the next flush; the block's space stays in the file until compact.
   */
  deallocateBlock(block: number): void {
    if (!this.file.writable) throw new VhdError('VHD_E_READ_ONLY', `${this.path} is open read-only`, this.path);
    if (this.type === DiskType.Fixed || this.file.blockOffset(block) === null) return;
    this.file.setBlockEntry(block, UNALLOCATED);
  }

  /**
   * Which parts of [offset, offset + length) this file itself holds (not its parents), as
   * runs in order: a dynamic disk's allocated block is held whole.
   */
  ownRuns(offset: number, length: number): AllocationRun[] {
    this.checkRange(offset, length, 'map');
    const runs: AllocationRun[] = [];
    const add = (start: number, n: number, allocated: boolean): void => {
      const last = runs[runs.length - 1];
      if (last && last.allocated === allocated && last.offset + last.length === start) last.length += n;
      else runs.push({ offset: start, length: n, allocated });
    };
    if (this.type === DiskType.Fixed) {
      add(offset, length, true);
      return runs;
    }
    const blockSize = this.file.blockSize;
    for (let done = 0; done < length;) {
      const position = offset + done;
      const block = Math.floor(position / blockSize);
      const within = position - block * blockSize;
      const n = Math.min(blockSize - within, length - done);
      const blockOffset = this.file.blockOffset(block);
      if (blockOffset === null) add(position, n, false);
      else if (this.type === DiskType.Dynamic) add(position, n, true);
      else {
        for (const run of bitmapRuns(this.file.readBitmap(block, blockOffset), within / SECTOR_SIZE, n / SECTOR_SIZE)) {
          add(position + run.start * SECTOR_SIZE, (run.end - run.start) * SECTOR_SIZE, run.present);
        }
      }
      done += n;
    }
    return runs;
  }

  /** The ranges whose data this file itself holds (not its parents), in ascending order. */
  *ownExtents(): Generator<{ offset: number; length: number }> {
    if (this.type === DiskType.Fixed) {
      yield { offset: 0, length: this.size };
      return;
    }
    const { blockSize, sectorsPerBlock } = this.file;
    const blocks = Math.ceil(this.size / blockSize);
    for (let block = 0; block < blocks; block++) {
      const blockOffset = this.file.blockOffset(block);
      if (blockOffset === null) continue;
      const base = block * blockSize;
      const limit = Math.min(sectorsPerBlock, (this.size - base) / SECTOR_SIZE);
      if (this.type === DiskType.Dynamic) {
        yield { offset: base, length: limit * SECTOR_SIZE };
        continue;
      }
      for (const run of bitmapRuns(this.file.readBitmap(block, blockOffset), 0, limit)) {
        if (run.present) yield { offset: base + run.start * SECTOR_SIZE, length: (run.end - run.start) * SECTOR_SIZE };
      }
    }
  }

  private readRange(target: Buffer, offset: number, read: FileRead = readNow): void {
    if (this.type === DiskType.Fixed) {
      read(this.file, target, offset);
      return;
    }
    const blockSize = this.file.blockSize;
    let done = 0;
    while (done < target.length) {
      const position = offset + done;
      const block = Math.floor(position / blockSize);
      const within = position - block * blockSize;
      const n = Math.min(blockSize - within, target.length - done);
      const piece = target.subarray(done, done + n);
      const blockOffset = this.file.blockOffset(block);
      if (blockOffset === null) {
        this.readBelow(piece, position, read);
      } else if (this.type === DiskType.Dynamic) {
        // As QEMU does, an allocated block of a dynamic disk is read whole: every writer
        // zero-fills new blocks, and check() reports data hidden behind clear bitmap bits.
        read(this.file, piece, this.file.dataOffset(blockOffset, within));
      } else {
        this.readDifferencingBlock(piece, block, blockOffset, within, position, read);
      }
      done += n;
    }
  }

  /** What lies under this level: the parent's data, and zeros past its end (or with no parent). */
  private readBelow(target: Buffer, position: number, read: FileRead): void {
    const inParent = this.parent ? Math.max(0, Math.min(target.length, this.parent.size - position)) : 0;
    if (inParent > 0) this.parent!.readRange(target.subarray(0, inParent), position, read);
    target.fill(0, inParent);
  }

  /** Reads runs of sectors from this file where the bitmap says so, from the parent elsewhere. */
  private readDifferencingBlock(piece: Buffer, block: number, blockOffset: number, within: number, position: number, read: FileRead): void {
    const bitmap = this.file.readBitmap(block, blockOffset);
    for (const run of bitmapRuns(bitmap, within / SECTOR_SIZE, piece.length / SECTOR_SIZE)) {
      const part = piece.subarray(run.start * SECTOR_SIZE, run.end * SECTOR_SIZE);
      if (run.present) read(this.file, part, this.file.dataOffset(blockOffset, within + run.start * SECTOR_SIZE));
      else this.readBelow(part, position + run.start * SECTOR_SIZE, read);
    }
  }

  private checkRange(offset: number, length: number, what: 'read' | 'write' | 'map'): void {
    if (this.closed) throw new VhdError('VHD_E_CLOSED', `${this.path} is closed`, this.path);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
        offset % SECTOR_SIZE !== 0 || length % SECTOR_SIZE !== 0) {
      throw new VhdError('VHD_E_UNALIGNED',
        `${this.path}: ${what} of ${length} bytes at offset ${offset} is not aligned to 512-byte sectors`, this.path, offset);
    }
    if (offset + length > this.size) {
      throw new VhdError('VHD_E_OUT_OF_RANGE',
        `${this.path}: ${what} of ${length} bytes at offset ${offset} runs past the end of the disk (${this.size} bytes)`, this.path, offset);
    }
  }
}

/** How readRange fetches a piece of one file: at once, or by queueing an asynchronous read. */
type FileRead = (file: VhdFile, target: Buffer, position: number) => void;

const readNow: FileRead = (file, target, position) => file.readFully(target, position);

function isSet(bitmap: Buffer, sector: number): boolean {
  return (bitmap[sector >> 3] & (0x80 >> (sector & 7))) !== 0;
}

/**
 * Sectors [first, first + count) of a block cut into runs whose bitmap bits agree: each run's
 * [start, end) counts from `first`, and `present` says whether this file holds its sectors.
 */
function* bitmapRuns(bitmap: Buffer, first: number, count: number): Generator<{ start: number; end: number; present: boolean }> {
  let start = 0;
  while (start < count) {
    const present = isSet(bitmap, first + start);
    let end = start + 1;
    while (end < count && isSet(bitmap, first + end) === present) end++;
    yield { start, end, present };
    start = end;
  }
}

function realPath(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return p;
  }
}

export function formatUuid(bytes: Buffer): string {
  const h = bytes.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
