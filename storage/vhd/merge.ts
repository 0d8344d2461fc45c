// Merging a differencing disk: into its parent (the child's sectors are written into the
// parent, which is flushed, then the child is deleted), or with its whole chain into a new
// standalone disk. Both are idempotent: re-running an interrupted merge completes it, since
// the child is removed only after the parent holds and has flushed everything.

import fs from 'node:fs';
import type { LongOperationOptions } from '../progress.js';
import { copyRanges } from './copy-ranges.js';
import { VhdError } from './errors.js';
import { DiskType, diskTypeName } from './format.js';
import { type ConvertOptions, convertDisk } from './convert.js';
import { VhdDisk } from './disk.js';

export interface MergeResult {
  parent: string;
  bytesMerged: number;
}

export async function mergeIntoParent(childPath: string, options: LongOperationOptions = {}): Promise<MergeResult> {
  const child = VhdDisk.open(childPath, { writable: true, holder: 'vhd merge' });
  let parent: VhdDisk | null = null;
  let bytesMerged: number;
  try {
    if (child.type !== DiskType.Differencing || !child.parent) {
      throw new VhdError('VHD_E_WRONG_TYPE', `${child.path} is a ${diskTypeName(child.type)} disk; only a differencing disk merges into a parent`, child.path);
    }
    parent = VhdDisk.open(child.parent.path, { writable: true, holder: `vhd merge of ${child.path}` });
    const extents = [...child.ownExtents()];
    const total = extents.reduce((n, e) => n + e.length, 0);
    bytesMerged = await copyRanges(child, parent, extents, total, options);
    parent.flush();
  } finally {
    parent?.close();
    child.close();
  }
  // Only now is the child redundant: everything it held is durable in the parent.
  fs.rmSync(child.path);
  return { parent: parent.path, bytesMerged };
}

/** Flattens the disk and its chain into a new disk (dynamic unless asked otherwise). */
export async function mergeToNewDisk(childPath: string, targetPath: string, options: ConvertOptions = {}): Promise<void> {
  await convertDisk(childPath, targetPath, options);
}
