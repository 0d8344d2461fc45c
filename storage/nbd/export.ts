// One disk as an NBD export: byte-granular reads and writes over the engine's sector I/O (a
// partial sector is read, patched and written back), zeroing and trimming that drop whole
// blocks where the chain allows, and the base:allocation map.

// The engine's modules one by one, not its index: a VM worker loads only what serving needs.
import type { VhdDisk } from '../vhd/disk.js';
import type { ChangeMap } from './change-map.js';
import { DiskType, SECTOR_SIZE } from '../vhd/format.js';
import { MAX_REQUEST, STATE_HOLE, STATE_ZERO, Transmission } from './protocol.js';

export interface ExportOptions {
  /** The name clients ask for; the first export added is also the default ("") export. */
  name: string;
  description?: string;
  readOnly?: boolean;
}

export interface Extent {
  length: number;
  flags: number;
}

const ZEROES = Buffer.alloc(1024 * 1024);

/** Told of every range a client changed (written, zeroed or trimmed), before the request is answered. */
export type ChangeWatcher = (offset: number, length: number) => void;

export class NbdExport {
  private readonly inflight = new Set<Promise<void>>();
  private readonly watchers = new Set<ChangeWatcher>();
  private current: VhdDisk;
  readonly name: string;
  readonly description: string;
  readonly readOnly: boolean;
  /** The change map of the disk served, marked at every change; null when none is kept. */
  changes: ChangeMap | null = null;
  /**
   * Asked before each change a client requests (write, trim, zeroes, flush): why it must not be
   * applied, or null. A clustered VM's worker closes it when its run licence ends.
   */
  writeGate: (() => string | null) | null = null;

  constructor(disk: VhdDisk, options: ExportOptions) {
    this.current = disk;
    this.name = options.name;
    this.description = options.description ?? '';
    this.readOnly = options.readOnly ?? !disk.writable;
  }

  /** Why client changes are refused now (the gate is closed), or null. */
  writeRefusal(): string | null {
    return this.writeGate?.() ?? null;
  }

  /** The disk served now (the top of its chain). */
  get disk(): VhdDisk {
    return this.current;
  }

  /**
   * Serves `disk` from the next request on (requests are handled one at a time, and reads that
   * are still running finish on the old disk): resolves once no read uses the old disk, after
   * which the caller may close it. The new disk must have the same size.
   */
  async replaceDisk(disk: VhdDisk): Promise<void> {
    if (disk.size !== this.current.size) throw new Error(`${disk.path} is ${disk.size} bytes, the export ${this.name} is ${this.current.size}`);
    this.current = disk;
    await this.idle();
  }

  /** Calls `watcher` with each range changed from now on, until the returned function is called. */
  watchChanges(watcher: ChangeWatcher): () => void {
    this.watchers.add(watcher);
    return () => this.watchers.delete(watcher);
  }

  private changed(offset: number, length: number): void {
    this.changes?.mark(offset, length);
    for (const watcher of this.watchers) watcher(offset, length);
  }

  get size(): number {
    return this.disk.size;
  }

  /**
   * Every connection shares this process's one open disk and there is no per-connection cache,
   * so a flush on any connection covers writes made on all of them: multi-conn is safe.
   */
  get transmissionFlags(): number {
    const t = Transmission;
    const base = t.HAS_FLAGS | t.SEND_FLUSH | t.SEND_FUA | t.SEND_DF | t.CAN_MULTI_CONN;
    return this.readOnly ? base | t.READ_ONLY : base | t.SEND_TRIM | t.SEND_WRITE_ZEROES;
  }

  /** Minimum, preferred and maximum request sizes. Any size works; 4 KiB avoids read-modify-write. */
  get blockSizes(): [number, number, number] {
    return [1, 4096, MAX_REQUEST];
  }

  read(offset: number, target: Buffer): void {
    const span = sectorSpan(offset, target);
    this.disk.readInto(span.buffer, span.start);
    span.deliver();
  }

  /** A read whose file I/O runs in the thread pool, overlapping other work; see VhdDisk.readIntoAsync. */
  readAsync(offset: number, target: Buffer): Promise<void> {
    const span = sectorSpan(offset, target);
    const done = this.disk.readIntoAsync(span.buffer, span.start).then(() => span.deliver());
    const tracked = done.finally(() => this.inflight.delete(tracked));
    this.inflight.add(tracked);
    return tracked;
  }

  /** Resolves once no read started by readAsync is still running (before the disk may be closed). */
  async idle(): Promise<void> {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  }

  /** True when no level of the chain holds data in the range, so it reads as zeros. */
  isHole(offset: number, length: number): boolean {
    return !this.disk.isAllocated(offset, length);
  }

  write(offset: number, data: Buffer): void {
    this.changed(offset, data.length);
    const { start, end } = alignOut(offset, data.length);
    if (start === offset && end === offset + data.length) {
      this.disk.write(data, offset);
      return;
    }
    const whole = Buffer.allocUnsafe(end - start);
    if (offset !== start) this.disk.readInto(whole.subarray(0, SECTOR_SIZE), start);
    if (offset + data.length !== end) this.disk.readInto(whole.subarray(whole.length - SECTOR_SIZE), end - SECTOR_SIZE);
    data.copy(whole, offset - start);
    this.disk.write(whole, start);
  }

  flush(): void {
    this.disk.flush();
  }

  /** Drops the whole blocks in the range; the rest is left as it is (TRIM promises no content). */
  trim(offset: number, length: number): void {
    this.changed(offset, length);
    for (const piece of this.blockPieces(offset, length)) {
      if (piece.whole) this.disk.deallocateBlock(piece.block);
    }
  }

  /**
   * Makes the range read as zeros: whole blocks are dropped where that reveals zeros (no parent
   * data beneath), ranges that already read as zeros are left alone, the rest is written.
   * `allocate` (NBD_CMD_FLAG_NO_HOLE) writes zeros everywhere instead.
   */
  writeZeroes(offset: number, length: number, allocate: boolean): void {
    this.changed(offset, length);
    for (const piece of this.blockPieces(offset, length)) {
      if (!allocate) {
        if (piece.whole && this.zeroBeneath(piece.offset, piece.length)) {
          this.disk.deallocateBlock(piece.block);
          continue;
        }
        if (this.isHole(piece.offset, piece.length)) continue;
      }
      for (let done = 0; done < piece.length; done += ZEROES.length) {
        const n = Math.min(ZEROES.length, piece.length - done);
        this.write(piece.offset + done, ZEROES.subarray(0, n));
      }
    }
  }

  /** base:allocation extents from `offset`, each HOLE|ZERO or data, covering at most `length`. */
  blockStatus(offset: number, length: number, maxExtents: number): Extent[] {
    const { start, end } = alignOut(offset, length);
    // The runs are whole sectors covering the request, so each overlaps it: clipping keeps them all.
    return this.disk.allocationMap(start, end - start, maxExtents).map((run) => ({
      length: Math.min(run.offset + run.length, offset + length) - Math.max(run.offset, offset),
      flags: run.allocated ? 0 : STATE_HOLE | STATE_ZERO,
    }));
  }

  /** Whether dropping this file's block over the range would read zeros: nothing beneath it holds data. */
  private zeroBeneath(offset: number, length: number): boolean {
    const parent = this.disk.parent;
    if (!parent || offset >= parent.size) return true;
    return !parent.isAllocated(offset, Math.min(length, parent.size - offset));
  }

  /** The range cut at block boundaries; `whole` pieces cover their block to its end (or the disk's). */
  private *blockPieces(offset: number, length: number): Generator<{ block: number; offset: number; length: number; whole: boolean }> {
    const blockSize = this.disk.type === DiskType.Fixed ? this.size : this.disk.file.blockSize;
    const end = offset + length;
    let position = offset;
    while (position < end) {
      const block = Math.floor(position / blockSize);
      const blockStart = block * blockSize;
      const blockEnd = Math.min(blockStart + blockSize, this.size);
      const pieceEnd = Math.min(end, blockEnd);
      const whole = this.disk.type !== DiskType.Fixed && position === blockStart && pieceEnd === blockEnd;
      yield { block, offset: position, length: pieceEnd - position, whole };
      position = pieceEnd;
    }
  }
}

/**
 * What a read of `target` at `offset` reads from the disk: the whole sectors around it, into
 * `target` itself when it is aligned, else into a scratch buffer that deliver() copies from.
 */
function sectorSpan(offset: number, target: Buffer): { start: number; buffer: Buffer; deliver(): void } {
  const { start, end } = alignOut(offset, target.length);
  if (start === offset && end === offset + target.length) return { start, buffer: target, deliver() {} };
  const buffer = Buffer.allocUnsafe(end - start);
  return { start, buffer, deliver: () => { buffer.copy(target, 0, offset - start, offset - start + target.length); } };
}

function alignOut(offset: number, length: number): { start: number; end: number } {
  const start = Math.floor(offset / SECTOR_SIZE) * SECTOR_SIZE;
  const end = Math.ceil((offset + length) / SECTOR_SIZE) * SECTOR_SIZE;
  return { start, end };
}
