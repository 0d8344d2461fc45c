// Copies that make a backup: the content of a chain at its top as one standalone dynamic VHD, or
// only the blocks a change map marks as a differencing VHD whose parent is the previous backup.
// Each is written as a draft beside its target and linked into place whole, and is given with
// the SHA-256 of the finished file (the manifest's).

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fsyncFolder } from '../../host/files.js';
import { draftOf } from '../drafts.js';
import { type LongOperationOptions, step } from '../progress.js';
import { Writeback } from '../vhd/convert.js';
import { buildFile, createDifferencing, writeAll, writeDynamicDisk } from '../vhd/create.js';
import { DEFAULT_BLOCK_SIZE, FOOTER_SIZE, SECTOR_SIZE, encodeHeader, roundUp } from '../vhd/format.js';
import { readLayout } from '../vhd/layout.js';
import { BackgroundHash } from './hasher.js';
import { copyRanges } from '../vhd/copy-ranges.js';
import { VhdDisk } from '../vhd/disk.js';
import { VhdError, ioError } from '../vhd/errors.js';
import { readChangeMap } from '../nbd/change-map.js';

export interface CopyResult {
  /** The finished file's size. */
  bytes: number;
  sha256: string;
  /** Bytes of guest data read from the chain and written (the changed ranges for an incremental copy). */
  dataBytes: number;
}

/**
 * The chain's content at `topPath` as a new standalone dynamic VHD at `targetPath`: every block
 * some level of the chain holds, written in order behind a block table known from the start, so
 * the file is written once from front to back and hashed as it is written (on a worker thread).
 */
export async function copyChainToVhd(topPath: string, targetPath: string, options: LongOperationOptions = {}): Promise<CopyResult> {
  const source = VhdDisk.open(topPath);
  let digest = '';
  let dataBytes = 0;
  try {
    await buildFile(targetPath, async (fd, draft) => {
      writeDynamicDisk(fd, { size: source.size, blockSize: DEFAULT_BLOCK_SIZE });
      // The draft is open write-only: its empty structures are read back through a second descriptor.
      const reader = fs.openSync(draft, 'r');
      let layout: ReturnType<typeof readLayout>['layout'];
      try {
        layout = readLayout(reader).layout;
      } finally {
        fs.closeSync(reader);
      }
      const { blockSize, bitmapBytes, footerOffset: dataStart, footerBytes, header } = layout!;
      const prefix = Buffer.alloc(dataStart);
      Buffer.from(footerBytes).copy(prefix, 0);
      encodeHeader(header!).copy(prefix, FOOTER_SIZE);
      const span = bitmapBytes + blockSize;
      const blocks = Math.ceil(source.size / blockSize);
      const held: number[] = [];
      for (let block = 0; block < blocks; block++) {
        const start = block * blockSize;
        if (source.isAllocated(start, Math.min(blockSize, source.size - start))) held.push(block);
      }
      const table = Buffer.alloc(roundUp(header!.maxTableEntries * 4, SECTOR_SIZE), 0xff);
      held.forEach((block, k) => table.writeUInt32BE((dataStart + k * span) / SECTOR_SIZE, block * 4));
      writeAll(fd, table, header!.tableOffset);
      table.copy(prefix, header!.tableOffset);
      const hash = new BackgroundHash();
      // The written data goes to disk in the background, so the final sync has little left to do.
      const writeback = new Writeback(fd);
      try {
        await hash.add(prefix);
        // One block is written (in the thread pool) while the next is read: a pipeline of two.
        let writing: { piece: Buffer; done: Promise<void> } | null = null;
        const settle = async (): Promise<void> => {
          if (!writing) return;
          await writing.done;
          await hash.add(writing.piece);
          await writeback.wrote(span);
          writing = null;
        };
        for (const [k, block] of held.entries()) {
          const piece = hash.buffer(span);
          piece.fill(0xff, 0, bitmapBytes);
          const start = block * blockSize;
          const inDisk = Math.min(blockSize, source.size - start);
          source.readInto(piece.subarray(bitmapBytes, bitmapBytes + inDisk), start);
          piece.fill(0, bitmapBytes + inDisk);
          await settle();
          const done = writeAllAsync(fd, piece, dataStart + k * span);
          done.catch(() => {}); // awaited by settle(); a failure before then must not go unhandled
          writing = { piece, done };
          dataBytes += blockSize;
          await step(options, k + 1, held.length);
        }
        await settle();
        const footer = Buffer.from(footerBytes);
        writeAll(fd, footer, dataStart + held.length * span);
        await hash.add(footer);
        await writeback.finished();
        digest = await hash.finish();
      } catch (e) {
        await hash.abandon();
        throw e;
      }
    });
  } finally {
    source.close();
  }
  return { bytes: fs.statSync(targetPath).size, sha256: digest, dataBytes };
}

/**
 * A differencing VHD at `targetPath`, child of `parentBackupPath`, holding what the chain at
 * `topPath` reads in every range the change map `mapPath` marks. The map must be sure (closed,
 * its top unchanged since): an unsure map is refused with its reason, and the backup is full.
 */
export async function copyChangedToVhd(
  topPath: string, mapPath: string, parentBackupPath: string, targetPath: string, options: LongOperationOptions = {},
): Promise<CopyResult & { generation: string | null }> {
  const changes = readChangeMap(topPath, mapPath);
  if (changes.unsure) {
    throw new VhdError('VHD_E_BAD_ARGUMENT', `the change map ${mapPath} cannot be trusted (${changes.reason}); make a full backup`, mapPath);
  }
  if (fs.existsSync(targetPath)) throw new VhdError('VHD_E_EXISTS', `${targetPath} already exists`, targetPath);
  const draft = draftOf(targetPath);
  fs.rmSync(draft, { force: true });
  let dataBytes: number;
  try {
    await createDifferencing(draft, parentBackupPath);
    const source = VhdDisk.open(topPath);
    const target = VhdDisk.open(draft, { writable: true, fastAllocation: true, holder: 'backup copy' });
    try {
      if (source.size !== target.size || source.size !== changes.size) {
        throw new VhdError('VHD_E_BAD_ARGUMENT',
          `${topPath} is ${source.size} bytes, its change map counts ${changes.size} and the previous backup ${parentBackupPath} is ${target.size}: they are not the same disk`, topPath);
      }
      const total = changes.changedBytes;
      dataBytes = await copyRanges(source, target, changes.map.changedRanges(), total, options);
      target.flush();
    } finally {
      target.close();
      source.close();
    }
    try {
      fs.linkSync(draft, targetPath);
    } catch (e) {
      throw (e as NodeJS.ErrnoException).code === 'EEXIST' ? new VhdError('VHD_E_EXISTS', `${targetPath} already exists`, targetPath) : ioError(targetPath, 'creating', e);
    }
    fsyncFolder(path.dirname(targetPath));
  } finally {
    fs.rmSync(draft, { force: true });
  }
  return { ...(await hashFile(targetPath)), dataBytes, generation: changes.generation };
}

/** The file's size and SHA-256, read in large pieces. */
export async function hashFile(file: string): Promise<{ bytes: number; sha256: string }> {
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { bytes, sha256: hash.digest('hex') };
}

function writeAllAsync(fd: number, buf: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const next = (done: number): void => {
      if (done >= buf.length) { resolve(); return; }
      fs.write(fd, buf, done, buf.length - done, position + done, (e, n) => (e ? reject(e) : next(done + n)));
    };
    next(0);
  });
}
