// Change maps (changed-block tracking): which parts of a disk its guest has written since a
// given backup, one bit per 64 KiB, kept beside the top of the chain as "<top>.cbt". The NBD
// export of a writable top marks every write, zeroing and trim. The file says "open" while a
// worker serves the top (written and synced before the first write is answered) and "closed",
// with the bits and the top's identity (size and mtime), after a clean close. A map found open
// (its worker was killed) or whose top changed since (written by someone else) is unsure: it
// restarts empty with generation null, and the next backup is a full one.

import fs from 'node:fs';
import path from 'node:path';
import { fsyncFolder } from '../../host/files.js';
import { draftOf } from '../drafts.js';

export const CHANGE_MAP_VERSION = 1;
export const CHANGE_MAP_GRANULARITY = 64 * 1024;

export interface TopIdentity {
  size: number;
  mtimeNs: string;
}

/** The file as stored. */
export interface ChangeMapFile {
  version: number;
  granularity: number;
  /** The disk's size in bytes (the guest's view), which fixes the number of bits. */
  size: number;
  /** The backup the bits count from, or null when they count from nothing sure. */
  generation: string | null;
  state: 'open' | 'closed';
  topIdentity: TopIdentity | null;
  /** One bit per granule, most significant bit first, base64. */
  bits: string;
}

/** What a reader learns of a top's map. */
export interface ChangeMapInfo {
  file: string;
  generation: string | null;
  /** The bits cannot be trusted: the next backup must be full. */
  unsure: boolean;
  reason?: string;
  granularity: number;
  size: number;
  changedBytes: number;
}

export function changeMapPath(top: string): string {
  return `${top}.cbt`;
}

export function topIdentity(top: string): TopIdentity {
  const st = fs.statSync(top, { bigint: true });
  return { size: Number(st.size), mtimeNs: st.mtimeNs.toString() };
}

export class ChangeMap {
  private constructor(
    readonly size: number,
    readonly granularity: number,
    public generation: string | null,
    readonly bits: Uint8Array,
    /** Why the map cannot be trusted (it was reset), or null when it can. */
    public unsureReason: string | null,
  ) {}

  static empty(size: number, generation: string | null, unsureReason: string | null = null): ChangeMap {
    const granules = Math.ceil(size / CHANGE_MAP_GRANULARITY);
    return new ChangeMap(size, CHANGE_MAP_GRANULARITY, generation, new Uint8Array(Math.ceil(granules / 8)), unsureReason);
  }

  /**
   * The map of a top a worker is about to serve for writing: loaded when it is sure, reset
   * (generation null, with the reason) when it is not, and stored "open" before this returns.
   */
  static openFor(top: string, size: number): ChangeMap {
    const found = loadChangeMap(top, size);
    const map = found.map ?? ChangeMap.empty(size, null, found.reason);
    map.store(top, 'open');
    return map;
  }

  get granules(): number {
    return Math.ceil(this.size / this.granularity);
  }

  mark(offset: number, length: number): void {
    if (length <= 0) return;
    const first = Math.floor(offset / this.granularity);
    const last = Math.min(this.granules - 1, Math.floor((offset + length - 1) / this.granularity));
    for (let g = first; g <= last; g++) this.bits[g >> 3] |= 0x80 >> (g & 7);
  }

  isMarked(granule: number): boolean {
    return (this.bits[granule >> 3] & (0x80 >> (granule & 7))) !== 0;
  }

  /** The marked ranges, merged, clipped to the disk's size. */
  *changedRanges(): Generator<{ offset: number; length: number }> {
    let start = -1;
    for (let g = 0; g <= this.granules; g++) {
      const marked = g < this.granules && this.isMarked(g);
      if (marked && start < 0) start = g;
      if (!marked && start >= 0) {
        const offset = start * this.granularity;
        yield { offset, length: Math.min(g * this.granularity, this.size) - offset };
        start = -1;
      }
    }
  }

  get changedBytes(): number {
    let n = 0;
    for (const r of this.changedRanges()) n += r.length;
    return n;
  }

  /** A copy of the bits as they are now, for closing a map at an instant while this one goes on. */
  copy(): ChangeMap {
    return new ChangeMap(this.size, this.granularity, this.generation, Uint8Array.from(this.bits), this.unsureReason);
  }

  /** Starts counting from `generation` with no bits set. */
  restart(generation: string | null): void {
    this.bits.fill(0);
    this.generation = generation;
    this.unsureReason = null;
  }

  /** Writes "<top>.cbt" whole (a draft renamed into place, synced); a closed map records the top's identity. */
  store(top: string, state: 'open' | 'closed'): void {
    const file: ChangeMapFile = {
      version: CHANGE_MAP_VERSION, granularity: this.granularity, size: this.size, generation: this.generation, state,
      topIdentity: state === 'closed' ? topIdentity(top) : null, bits: Buffer.from(this.bits).toString('base64'),
    };
    writeDurably(changeMapPath(top), JSON.stringify(file));
  }

  info(top: string): ChangeMapInfo {
    return {
      file: changeMapPath(top), generation: this.generation, unsure: this.unsureReason !== null,
      ...(this.unsureReason ? { reason: this.unsureReason } : {}),
      granularity: this.granularity, size: this.size, changedBytes: this.changedBytes,
    };
  }
}

/** Reads a top's map as it stands, without changing anything (vserverd, for a stopped VM or a closed snapshot layer). */
export function readChangeMap(top: string, file = changeMapPath(top)): ChangeMapInfo & { map: ChangeMap } {
  const found = loadChangeMap(top, null, file);
  const map = found.map ?? ChangeMap.empty(found.size ?? 0, null, found.reason);
  return { ...map.info(top), file, map };
}

/** Starts a fresh, closed map for a top that is not being served, counting from `generation`. */
export function startChangeMap(top: string, generation: string | null, size: number): void {
  ChangeMap.empty(size, generation).store(top, 'closed');
}

function loadChangeMap(top: string, size: number | null, file = changeMapPath(top)): { map: ChangeMap | null; reason: string; size?: number } {
  let stored: ChangeMapFile;
  try {
    stored = JSON.parse(fs.readFileSync(file, 'utf8')) as ChangeMapFile;
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
    return { map: null, reason: missing ? `${path.basename(top)} has no change map yet` : `its change map ${file} is unreadable` };
  }
  const mapSize = size ?? stored.size;
  if (stored.version !== CHANGE_MAP_VERSION || stored.granularity !== CHANGE_MAP_GRANULARITY || stored.size !== mapSize) {
    return { map: null, reason: `its change map ${file} is of another version, granularity or disk size`, size: mapSize };
  }
  if (stored.state !== 'closed') {
    return { map: null, reason: `its change map ${file} was left open: the worker serving ${path.basename(top)} stopped without closing it`, size: mapSize };
  }
  let identity: TopIdentity;
  try {
    identity = topIdentity(top);
  } catch {
    return { map: null, reason: `${top} is not there`, size: mapSize };
  }
  if (!stored.topIdentity || stored.topIdentity.size !== identity.size || stored.topIdentity.mtimeNs !== identity.mtimeNs) {
    return { map: null, reason: `${path.basename(top)} was changed after its change map was closed (written by another program)`, size: mapSize };
  }
  const map = ChangeMap.empty(mapSize, stored.generation);
  const bits = Buffer.from(stored.bits, 'base64');
  if (bits.length !== map.bits.length) return { map: null, reason: `its change map ${file} has the wrong number of bits`, size: mapSize };
  map.bits.set(bits);
  return { map, reason: '' };
}

function writeDurably(file: string, text: string): void {
  const draft = draftOf(file);
  const fd = fs.openSync(draft, 'w', 0o644);
  try {
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(draft, file);
  fsyncFolder(path.dirname(file));
}

/**
 * Runs `change`, which rewrites the file `top` without changing what it reads (an offline merge
 * into it), and keeps its change map sure: a map that was sure before is closed again with the
 * top's new identity. An unsure or missing map is left as it is.
 */
export async function keepingChangeMap<T>(top: string, change: () => Promise<T>): Promise<T> {
  const before = loadChangeMap(top, null);
  const result = await change();
  before.map?.store(top, 'closed');
  return result;
}
