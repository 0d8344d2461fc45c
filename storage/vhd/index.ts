// The VHD engine's public surface.
export { VhdError, type VhdErrorCode, type Problem } from './errors.js';
export { DiskType, diskTypeName, DEFAULT_DISK_SIZE, DEFAULT_BLOCK_SIZE, MAX_DISK_SIZE, SECTOR_SIZE } from './format.js';
export { VhdDisk, formatUuid } from './disk.js';
export { createDynamic, createFixed, createDifferencing } from './create.js';
export { inspectDisk, type DiskInfo } from './inspect.js';
export { checkDisk, type CheckReport } from './check.js';
export { convertDisk, type ImageType, IMAGE_TYPES } from './convert.js';
export { mergeIntoParent, mergeToNewDisk } from './merge.js';
export { compactDisk } from './compact.js';
export { expandDisk } from './expand.js';
export { lockHolder } from './lock.js';
export { mergeIntoChild, type UpMergeResult } from './up-merge.js';
export { finishInterruptedReparent } from './reparent.js';
