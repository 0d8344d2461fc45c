// The journal of a re-parenting (reparent.ts): the new header (and footer) of a differencing
// disk, written and synced beside it as "<file>.reparent" before the header is overwritten, so a
// crash that tears the two-sector header is completed by writing the journal's bytes again.

import fs from 'node:fs';
import path from 'node:path';
import { fsyncFolder } from '../../host/files.js';
import { draftOf } from '../drafts.js';
import { VhdError, ioError } from './errors.js';
import { FOOTER_COOKIE, FOOTER_SIZE } from './format.js';

export interface Journal {
  headerOffset: number;
  header: string;
  /** Set when the disk becomes dynamic: the footer to write at the end and at offset 0. */
  footer: string | null;
}

export function reparentJournalOf(file: string): string {
  return `${file}.reparent`;
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

export function writeJournal(journalPath: string, journal: Journal): void {
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
