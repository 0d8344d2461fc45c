// Merging a layer into its child ("up-merge"): every sector the layer holds that the child does
// not is copied into the child, then the child is re-parented onto the layer's parent (or, when
// the layer had none, becomes a standalone dynamic disk). The child reads the same at every
// step: the sectors copied are the ones it read through the layer anyway. The re-parenting is
// the last step and journaled (reparent.ts), so an interrupted merge is completed by running it
// again. The layer is left where it is: deleting it is the caller's decision.

import { type LongOperationOptions, step } from '../progress.js';
import { VhdError } from './errors.js';
import { DiskType, diskTypeName } from './format.js';
import { VhdDisk } from './disk.js';
import { finishInterruptedReparent, reparentFile } from './reparent.js';

/** Bytes copied per step: each step runs without yielding, so a guest write never lands inside one. */
const CHUNK = 1024 * 1024;
const ZEROS = Buffer.alloc(CHUNK);

export interface UpMergeResult {
  child: string;
  /** The child's parent now, or null when it became a standalone dynamic disk. */
  parent: string | null;
  bytesMerged: number;
}

/**
 * Copies into `child` (open for writing, its parent is `layer`) every sector `layer` holds that
 * `child` does not. Safe while `child` is written by others in this process: each piece is
 * looked up, read and written in one synchronous stretch, so a write that lands between pieces
 * is never overwritten. Returns the bytes copied.
 */
export async function copyLayerIntoChild(layer: VhdDisk, child: VhdDisk, options: LongOperationOptions = {}): Promise<number> {
  const extents = [...layer.ownExtents()].map((e) => ({ offset: e.offset, length: Math.min(e.length, child.size - e.offset) })).filter((e) => e.length > 0);
  const total = extents.reduce((n, e) => n + e.length, 0);
  const buf = Buffer.alloc(CHUNK);
  let scanned = 0;
  let copied = 0;
  for (const extent of extents) {
    for (let at = 0; at < extent.length; at += CHUNK) {
      const offset = extent.offset + at;
      const length = Math.min(CHUNK, extent.length - at);
      for (const run of child.ownRuns(offset, length)) {
        if (run.allocated) continue;
        const piece = buf.subarray(0, run.length);
        layer.readInto(piece, run.offset);
        child.write(piece, run.offset);
        copied += run.length;
      }
      scanned += length;
      await step(options, scanned, total);
    }
  }
  return copied;
}

/**
 * Writes zeros into every sector of an allocated block that `disk` does not hold, so that the
 * disk reads the same once it has no parent (a dynamic disk reads an allocated block whole).
 * Only right when nothing beneath holds data in those sectors.
 */
export async function fillAbsentSectors(disk: VhdDisk, options: LongOperationOptions = {}): Promise<number> {
  if (disk.type !== DiskType.Differencing) return 0;
  const blockSize = disk.file.blockSize;
  const blocks = Math.ceil(disk.size / blockSize);
  let written = 0;
  for (let block = 0; block < blocks; block++) {
    if (disk.file.blockOffset(block) === null) continue;
    const start = block * blockSize;
    for (const run of disk.ownRuns(start, Math.min(blockSize, disk.size - start))) {
      if (run.allocated) continue;
      for (let at = 0; at < run.length; at += CHUNK) {
        const n = Math.min(CHUNK, run.length - at);
        disk.write(ZEROS.subarray(0, n), run.offset + at);
        written += n;
      }
    }
    if (block % 64 === 0) await step(options, block, blocks);
  }
  return written;
}

/**
 * The in-process up-merge on open disks: `child` (writable, its parent is `layer`) takes in
 * `layer` and is re-parented onto `layer`'s parent. The caller relinks `child` to that parent
 * (child.relink is done here) and closes `layer`'s own level.
 */
export async function upMergeOpen(layer: VhdDisk, child: VhdDisk, options: LongOperationOptions = {}): Promise<number> {
  if (child.parent !== layer) throw new VhdError('VHD_E_PARENT_MISMATCH', `${child.path} is not a child of ${layer.path}`, child.path);
  let bytes = await copyLayerIntoChild(layer, child, options);
  const below = layer.parent;
  // Past the layer's chain there is nothing: the sectors the child lacks read as zeros from here on.
  if (!below) bytes += await fillAbsentSectors(child, options);
  child.flush();
  reparentFile(child.file, below);
  child.relink(below);
  return bytes;
}

/**
 * Offline up-merge of the layer `layerPath` into its child `childPath`. Running it again after an
 * interruption completes it; running it after it completed finds nothing to do.
 */
export async function mergeIntoChild(layerPath: string, childPath: string, options: LongOperationOptions = {}): Promise<UpMergeResult> {
  finishInterruptedReparent(childPath);
  const layerAlone = VhdDisk.open(layerPath);
  const layerId = layerAlone.file.layout.footer.uniqueId;
  const belowId = layerAlone.parent?.file.layout.footer.uniqueId ?? null;
  const belowPath = layerAlone.parent?.path ?? null;
  layerAlone.close();
  const child = VhdDisk.open(childPath, { writable: true, holder: `vhd merge of ${layerPath} into ${childPath}` });
  try {
    const parent = child.parent;
    const parentId = parent?.file.layout.footer.uniqueId ?? null;
    if (!parent || !parentId!.equals(layerId)) {
      // Done before (the child already sits on the layer's parent, or stands alone): nothing to do.
      const done = belowId ? parentId?.equals(belowId) === true : child.type === DiskType.Dynamic;
      if (done) return { child: child.path, parent: belowPath, bytesMerged: 0 };
      throw new VhdError('VHD_E_PARENT_MISMATCH',
        `${childPath} (a ${diskTypeName(child.type)} disk) is not a child of ${layerPath}; only a layer's own child takes it in`, childPath);
    }
    const bytesMerged = await upMergeOpen(parent, child, options);
    parent.closeOwn(); // out of the chain now; its parents are the child's
    return { child: child.path, parent: child.parent?.path ?? null, bytesMerged };
  } finally {
    child.close();
  }
}
