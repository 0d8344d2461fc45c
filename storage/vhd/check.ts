// Full structural verification ("vsctl vhd check"): every structure of the file and of each
// parent, the parent links, and each allocated block's bitmap against its data. Never writes.

import fs from 'node:fs';
import path from 'node:path';
import { type LongOperationOptions, step } from '../progress.js';
import { type Problem, VhdError, ioError } from './errors.js';
import { DiskType } from './format.js';
import { readLayout } from './layout.js';
import { VhdDisk } from './disk.js';
import { openRegularFile } from './regular-file.js';

export interface CheckReport {
  file: string;
  valid: boolean;
  errors: Problem[];
  warnings: Problem[];
  /** Files of the chain that were verified, this disk first. */
  checked: string[];
}

export async function checkDisk(filePath: string, options: LongOperationOptions = {}): Promise<CheckReport> {
  const file = path.resolve(filePath);
  const report: CheckReport = { file, valid: false, errors: [], warnings: [], checked: [] };
  const add = (p: Problem, level: string): void => {
    const tagged = level === file ? p : { ...p, message: `${level}: ${p.message}` };
    (p.severity === 'error' ? report.errors : report.warnings).push(tagged);
  };
  let disk: VhdDisk;
  try {
    const fd = openRegularFile(file, false);
    try {
      for (const p of readLayout(fd).problems) add(p, file);
    } finally {
      fs.closeSync(fd);
    }
    if (report.errors.length) return report;
    disk = VhdDisk.open(file);
  } catch (caught) {
    const e = caught instanceof VhdError ? caught : ioError(file, 'reading', caught);
    report.errors.push({ severity: 'error', code: e.code, structure: 'file', offset: e.offset ?? null, message: e.message });
    return report;
  }
  try {
    const levels = disk.chain();
    for (const level of levels) {
      report.checked.push(level.path);
      if (level !== disk) for (const p of level.file.warnings) add(p, level.path);
      for (const w of level.chainWarnings) add({ severity: 'warning', code: 'VHD_E_PARENT_MISMATCH', structure: 'parent', offset: null, message: w }, level.path);
    }
    const total = levels.reduce((n, l) => n + l.file.allocatedBlocks(), 0);
    let done = 0;
    for (const level of levels) {
      if (level.type !== DiskType.Dynamic) continue;
      done = await checkDynamicBitmaps(level, (p) => add(p, level.path), done, total, options);
    }
  } finally {
    disk.close();
  }
  report.valid = report.errors.length === 0;
  return report;
}

/** A dynamic disk's data behind a clear bitmap bit reads as data here and in QEMU, as zeros elsewhere. */
async function checkDynamicBitmaps(
  disk: VhdDisk, report: (p: Problem) => void, done: number, total: number, options: LongOperationOptions,
): Promise<number> {
  const file = disk.file;
  const blocks = Math.ceil(file.layout.footer.currentSize / file.blockSize);
  const data = Buffer.alloc(file.blockSize);
  for (let block = 0; block < blocks; block++) {
    const offset = file.blockOffset(block);
    if (offset === null) continue;
    const bitmap = file.readBitmap(block, offset);
    if (bitmap.subarray(0, file.sectorsPerBlock / 8).every((b) => b === 0xff)) {
      await step(options, ++done, total);
      continue;
    }
    file.readFully(data, file.dataOffset(offset, 0));
    let hidden = 0;
    for (let s = 0; s < file.sectorsPerBlock; s++) {
      if (bitmap[s >> 3] & (0x80 >> (s & 7))) continue;
      if (data.subarray(s * 512, s * 512 + 512).some((b) => b !== 0)) hidden++;
    }
    if (hidden) {
      report({ severity: 'warning', code: 'VHD_E_BAD_BAT', structure: 'sector bitmap', offset,
        message: `block ${block} at offset ${offset}: ${hidden} sectors hold data but their bitmap bits are clear (read as data here and by QEMU, as zeros by VirtualBox)` });
    }
    await step(options, ++done, total);
  }
  return done;
}
