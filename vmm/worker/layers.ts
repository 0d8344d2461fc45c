// The layers of the chains a worker serves, changed while the guest runs: a new empty top made
// ahead of a snapshot and switched to in an instant, a layer merged into its child (up-merge) or
// its child committed into it, the chain reopened without the layer each time. Every step keeps
// what the guest reads the same; the files are left for vserverd to delete.
//
// Requests on an export are handled one at a time and the engine's I/O is synchronous, so code
// that runs without awaiting sees no guest write land in the middle of it.

import fs from 'node:fs';
import path from 'node:path';
import { crashPoint } from '../../storage/crash-points.js';
import { ChangeMap, changeMapPath } from '../../storage/nbd/change-map.js';
import type { NbdExport } from '../../storage/nbd/export.js';
import { type LongOperationOptions, step } from '../../storage/progress.js';
import { copyRangeNow, copyRanges } from '../../storage/vhd/copy-ranges.js';
import { createDifferencing } from '../../storage/vhd/create.js';
import { VhdDisk } from '../../storage/vhd/disk.js';
import { reparentFile } from '../../storage/vhd/reparent.js';
import { upMergeOpen } from '../../storage/vhd/up-merge.js';
import { VmError } from '../state.js';

/** A slot's disk as the worker serves it: the top and its chain, top first. */
export interface ServedDisk { slot: string; file: string; chain: string[] }

export interface SlotExport { slot: string; export: NbdExport }

/** A new top made ahead of the pause, to be switched to in it. */
export interface PreparedTop { slot: string; exp: NbdExport; disk: VhdDisk; previous: VhdDisk }

export function servedDisks(slots: SlotExport[]): ServedDisk[] {
  return slots.map(({ slot, export: exp }) => ({ slot, file: exp.disk.path, chain: exp.disk.chain().map((d) => d.path) }));
}

/**
 * Makes each `file` an empty differencing child of its slot's current top and opens it onto the
 * open top, all before the pause. Nothing is served from them yet. All or nothing: on failure the
 * files made so far are closed and removed.
 */
export async function prepareTops(slots: SlotExport[], layers: Array<{ slot: string; file: string }>, holder: string): Promise<PreparedTop[]> {
  const prepared: PreparedTop[] = [];
  const made: string[] = [];
  try {
    for (const { slot, file } of layers) {
      const exp = slots.find((s) => s.slot === slot)!.export;
      const previous = exp.disk;
      await createDifferencing(file, previous.path, { parentStillWritten: true });
      made.push(file);
      prepared.push({ slot, exp, previous, disk: VhdDisk.openOnto(file, previous, { writable: true, holder }) });
    }
    return prepared;
  } catch (e) {
    for (const p of prepared) p.disk.closeOwn();
    for (const file of made) fs.rmSync(file, { force: true });
    throw e;
  }
}

/** Undoes prepareTops when the pause could not be reached: the new files closed and removed. */
export function discardPrepared(prepared: PreparedTop[]): void {
  for (const p of prepared) {
    p.disk.closeOwn();
    fs.rmSync(p.disk.path, { force: true });
    fs.rmSync(changeMapPath(p.disk.path), { force: true });
  }
}

/**
 * Inside the pause: every previous top flushed, then every export switched to its new top
 * (synchronously: no request is served in between). The previous tops stay open as parents.
 */
export function switchTops(prepared: PreparedTop[]): void {
  for (const p of prepared) p.previous.flush();
  for (const p of prepared) void p.exp.replaceDisk(p.disk);
}

/** What happened to a slot's change map at a snapshot. */
export interface ClosedMap { slot: string; file: string; unsure: boolean; reason?: string }

/**
 * The change maps across a snapshot, in two halves. Before the pause, each new top's map file is
 * stored open. In the pause (`atInstant`), with `generation` the bits so far are kept to close
 * into "<previous top>.cbt" and the new top counts from `generation`; without it the map goes on
 * with the new top. After the resume (`finish`), the closed maps are written.
 */
export class MapHandover {
  private readonly closing: Array<{ slot: string; top: string; map: ChangeMap }> = [];

  constructor(private readonly prepared: PreparedTop[], private readonly generation: string | null) {}

  beforePause(): void {
    for (const p of this.prepared) {
      const map = this.generation !== null ? ChangeMap.empty(p.disk.size, this.generation) : (p.exp.changes ?? ChangeMap.empty(p.disk.size, null, 'no change map was kept'));
      map.store(p.disk.path, 'open');
    }
  }

  atInstant(): void {
    for (const p of this.prepared) {
      const current = p.exp.changes ?? ChangeMap.empty(p.disk.size, null, 'no change map was kept');
      if (this.generation !== null) {
        this.closing.push({ slot: p.slot, top: p.previous.path, map: current.copy() });
        current.restart(this.generation);
      }
      p.exp.changes = current;
    }
  }

  finish(): ClosedMap[] | undefined {
    if (this.generation === null) {
      // The map went on with the new top: the previous top's (open) file means nothing now.
      for (const p of this.prepared) fs.rmSync(changeMapPath(p.previous.path), { force: true });
      return undefined;
    }
    return this.closing.map(({ slot, top, map }) => {
      map.store(top, 'closed');
      return { slot, file: changeMapPath(top), unsure: map.unsureReason !== null, ...(map.unsureReason ? { reason: map.unsureReason } : {}) };
    });
  }
}

export interface MergeOutcome { bytesMerged: number; top: string }

/** The layer's place in the served chain: the layer, its index (0 is the top) and its child. */
function locate(exp: NbdExport, slot: string, layerPath: string): { chain: VhdDisk[]; index: number } {
  const chain = exp.disk.chain();
  const wanted = path.resolve(layerPath);
  const index = chain.findIndex((d) => d.path === wanted);
  if (index < 0) {
    throw new VmError('VM_E_INVALID_PARAMS', `${layerPath} is not in the chain served for ${slot} (${chain.map((d) => d.path).join(' -> ')})`);
  }
  return { chain, index };
}

/**
 * Up-merge while serving: `layer` (not the top) into its child; the chain goes on without it.
 * The child is written through the top's own handle when it is the top, else through a second
 * handle of its own, after which the chain below the top is reopened.
 */
export async function mergeIntoChildOnline(exp: NbdExport, slot: string, layerPath: string, holder: string, options: LongOperationOptions): Promise<MergeOutcome> {
  const { chain, index } = locate(exp, slot, layerPath);
  if (index === 0) throw new VmError('VM_E_INVALID_PARAMS', `${layerPath} is the top of ${slot}'s chain: it has no child to merge into`);
  const layer = chain[index];
  const child = chain[index - 1];
  let bytesMerged: number;
  if (index === 1 || child.writable) {
    // The top, or a previous top this worker still holds for writing: written through its own handle, which stays in the chain.
    bytesMerged = await upMergeOpen(layer, child, options);
    crashPoint('merge-into-child-reparented');
    await exp.idle();
    layer.closeOwn();
  } else {
    const writer = VhdDisk.openOnto(child.path, layer, { writable: true, holder });
    try {
      bytesMerged = await upMergeOpen(layer, writer, options);
    } finally {
      writer.closeOwn();
    }
    crashPoint('merge-into-child-reparented');
    const below = layer.parent;
    const fresh = below ? VhdDisk.openOnto(child.path, below) : VhdDisk.open(child.path);
    chain[index - 2].relink(fresh);
    await exp.idle();
    child.closeOwn();
    layer.closeOwn();
  }
  return { bytesMerged, top: exp.disk.path };
}

/** Guest writes at most this much behind the copy before the final, synchronous catch-up. */
const CATCH_UP_BYTES = 8 * 1024 * 1024;
const CATCH_UP_ROUNDS = 20;
const CHUNK = 1024 * 1024;

/**
 * Commit while serving: the child of `layer` in the chain is copied into `layer` (writes that
 * land meanwhile are copied after it), and the chain goes on without the child: when the child
 * was the top, `layer` becomes the top (the change map goes with it); else the child's own child
 * is re-parented onto `layer`.
 */
export async function commitIntoParentOnline(
  exp: NbdExport, slot: string, layerPath: string, holder: string, options: LongOperationOptions & { topChanged?: () => void },
): Promise<MergeOutcome> {
  const { chain, index } = locate(exp, slot, layerPath);
  if (index === 0) throw new VmError('VM_E_INVALID_PARAMS', `${layerPath} is the top of ${slot}'s chain: nothing above it to commit`);
  const layer = chain[index];
  const child = chain[index - 1];
  const childIsTop = index === 1;
  // The layer written through its own handle if the worker already holds one (a previous top), else a second one.
  const target = layer.writable ? layer : layer.parent ? VhdDisk.openOnto(layer.path, layer.parent, { writable: true, holder }) : VhdDisk.open(layer.path, { writable: true, holder });
  const dirty: Array<[number, number]> = [];
  const unwatch = childIsTop ? exp.watchChanges((offset, length) => { dirty.push([offset, length]); }) : () => {};
  let bytesMerged = 0;
  try {
    const extents = [...child.ownExtents()];
    const total = extents.reduce((n, e) => n + e.length, 0);
    const buf = Buffer.alloc(CHUNK);
    const copy = (offset: number, length: number): void => { bytesMerged += copyRangeNow(child, target, { offset, length }, buf); };
    bytesMerged = await copyRanges(child, target, extents, total, options, CHUNK);
    crashPoint('commit-copied');
    // Writes that landed during the copy, round by round, until few are left to copy without yielding.
    for (let round = 0; round < CATCH_UP_ROUNDS; round++) {
      const pending = sectorRanges(dirty.splice(0), child.size);
      const bytes = pending.reduce((n, [, l]) => n + l, 0);
      for (const [offset, length] of pending) copy(offset, length);
      if (bytes <= CATCH_UP_BYTES) break;
      target.flush();
      await step(options, total, total);
    }
    for (const [offset, length] of sectorRanges(dirty.splice(0), child.size)) copy(offset, length);
    target.flush();
    unwatch();
    if (childIsTop) {
      // The switch: from the next request on the layer is the top, with the change map.
      void exp.replaceDisk(target);
      exp.changes?.store(target.path, 'open');
      options.topChanged?.();
      crashPoint('commit-switched');
      fs.rmSync(changeMapPath(child.path), { force: true });
      await exp.idle();
      child.closeOwn();
      if (target !== layer) layer.closeOwn();
    } else {
      const grandchild = chain[index - 2];
      if (grandchild.writable) {
        reparentFile(grandchild.file, target);
        grandchild.relink(target);
      } else {
        const writer = VhdDisk.openOnto(grandchild.path, child, { writable: true, holder });
        try {
          reparentFile(writer.file, target);
        } finally {
          writer.closeOwn();
        }
        const fresh = VhdDisk.openOnto(grandchild.path, target);
        (index - 3 >= 0 ? chain[index - 3] : null)?.relink(fresh);
        await exp.idle();
        grandchild.closeOwn();
      }
      crashPoint('commit-switched');
      await exp.idle();
      child.closeOwn();
      if (target !== layer) layer.closeOwn();
    }
  } catch (e) {
    unwatch();
    if (target !== layer && exp.disk !== target) target.closeOwn();
    throw e;
  }
  return { bytesMerged, top: exp.disk.path };
}

/** Byte ranges widened to whole sectors, clipped to the disk, overlaps merged. */
function sectorRanges(ranges: Array<[number, number]>, size: number): Array<[number, number]> {
  const aligned = ranges.map(([o, l]): [number, number] => {
    const start = Math.floor(o / 512) * 512;
    return [start, Math.min(size, Math.ceil((o + l) / 512) * 512) - start];
  }).sort((a, b) => a[0] - b[0]);
  const merged: Array<[number, number]> = [];
  for (const [o, l] of aligned) {
    const last = merged[merged.length - 1];
    if (last && o <= last[0] + last[1]) last[1] = Math.max(last[1], o + l - last[0]);
    else merged.push([o, l]);
  }
  return merged;
}
