// Re-parenting a differencing disk in place: its header is pointed at another parent (new
// locators written first, in space the old header does not reference), or, with no parent, the
// disk becomes a standalone dynamic disk (header and both footer copies rewritten). The header
// is 1024 bytes, two sectors, so a crash could tear it: the new header (and footer) go first to
// a journal "<file>.reparent", and finishInterruptedReparent() applies a journal left behind.

import fs from 'node:fs';
import path from 'node:path';
import { fsyncFolder } from '../../host/files.js';
import { crashPoint } from '../crash-points.js';
import { draftOf } from '../drafts.js';
import { VhdError, ioError } from './errors.js';
import {
  DiskType, FOOTER_COOKIE, FOOTER_SIZE, decodeFooter, decodeHeader, emptyLocators, encodeFooter, encodeHeader,
} from './format.js';
import type { VhdDisk } from './disk.js';
import type { VhdFile } from './file.js';
import { planLocators } from './locators.js';

interface Journal {
  headerOffset: number;
  header: string;
  /** Set when the disk becomes dynamic: the footer to write at the end and at offset 0. */
  footer: string | null;
}

export function reparentJournalOf(file: string): string {
  return `${file}.reparent`;
}

/**
 * Points `file` (a writable differencing disk whose data already makes it independent of its
 * current parent where the new one differs) at `parent`, or makes it dynamic when `parent` is
 * null. The caller relinks its in-memory chain. Durable when it returns.
 */
export function reparentFile(file: VhdFile, parent: VhdDisk | null): void {
  const layout = file.layout;
  if (layout.type !== DiskType.Differencing || !layout.header) {
    throw new VhdError('VHD_E_WRONG_TYPE', `${file.path} is not a differencing disk; only a differencing disk is re-parented`, file.path);
  }
  const header = { ...layout.header };
  let footerBytes: Buffer | null = null;
  if (parent) {
    // The new locators' data goes where the footer is, as a block would: the footer moves first.
    const plan = planLocators(file.path, parent.path, layout.footerOffset);
    const footerOffset = plan.end;
    file.writeFully(layout.footerBytes, footerOffset);
    file.sync();
    for (const [offset, data] of plan.areas) {
      const area = Buffer.alloc(plan.locators.find((l) => l.platformDataOffset === offset)!.platformDataSpace);
      data.copy(area);
      file.writeFully(area, offset);
    }
    file.sync();
    layout.footerOffset = footerOffset;
    layout.fileSize = footerOffset + FOOTER_SIZE;
    header.parentUniqueId = Buffer.from(parent.file.layout.footer.uniqueId);
    // The footer's time stamp, not the mtime: a parent that is read-only from now on may still be flushed once.
    header.parentTimestamp = parent.file.layout.footer.timestamp;
    header.parentName = path.basename(parent.path);
    header.parentLocators = plan.locators;
  } else {
    header.parentUniqueId = Buffer.alloc(16);
    header.parentTimestamp = 0;
    header.parentName = '';
    header.parentLocators = emptyLocators();
    const footer = { ...layout.footer, diskType: DiskType.Dynamic };
    footerBytes = encodeFooter(footer);
  }
  const headerOffset = layout.footer.dataOffset!;
  const headerBytes = encodeHeader(header);
  const journal = reparentJournalOf(file.path);
  writeJournal(journal, { headerOffset, header: headerBytes.toString('base64'), footer: footerBytes?.toString('base64') ?? null });
  crashPoint('reparent-journaled');
  file.writeFully(headerBytes, headerOffset);
  file.sync();
  if (footerBytes) {
    file.rewriteFooter(footerBytes);
    layout.footer = decodeFooter(footerBytes);
    layout.type = DiskType.Dynamic;
  }
  layout.header = decodeHeader(headerBytes);
  fs.rmSync(journal, { force: true });
  fsyncFolder(path.dirname(file.path));
}

/**
 * Completes a re-parenting that a crash interrupted (its journal is there): the journal's header
 * (and footer) are written as they are. True when there was one to complete.
 */
export function finishInterruptedReparent(filePath: string): boolean {
  const journalPath = reparentJournalOf(filePath);
  let journal: Journal;
  try {
    journal = JSON.parse(fs.readFileSync(journalPath, 'utf8')) as Journal;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    // A journal written half (the crash came while writing it): the header was not touched yet.
    fs.rmSync(journalPath, { force: true });
    return false;
  }
  let fd: number;
  try {
    fd = fs.openSync(filePath, 'r+');
  } catch (e) {
    throw ioError(filePath, 'completing an interrupted re-parenting of', e);
  }
  try {
    writeAt(fd, Buffer.from(journal.header, 'base64'), journal.headerOffset);
    if (journal.footer) {
      const footer = Buffer.from(journal.footer, 'base64');
      const end = fs.fstatSync(fd).size - FOOTER_SIZE;
      const cookie = Buffer.alloc(8);
      fs.readSync(fd, cookie, 0, 8, end);
      if (cookie.toString('latin1') !== FOOTER_COOKIE) {
        throw new VhdError('VHD_E_BAD_FOOTER', `${filePath}: no footer at the end of the file to complete the interrupted re-parenting`, filePath, end);
      }
      writeAt(fd, footer, end);
      fs.fsyncSync(fd);
      writeAt(fd, footer, 0);
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.rmSync(journalPath, { force: true });
  fsyncFolder(path.dirname(filePath));
  return true;
}

function writeJournal(journalPath: string, journal: Journal): void {
  const draft = draftOf(journalPath);
  const fd = fs.openSync(draft, 'w', 0o644);
  try {
    fs.writeSync(fd, JSON.stringify(journal));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(draft, journalPath);
  fsyncFolder(path.dirname(journalPath));
}

function writeAt(fd: number, buf: Buffer, position: number): void {
  let done = 0;
  while (done < buf.length) done += fs.writeSync(fd, buf, done, buf.length - done, position + done);
}
