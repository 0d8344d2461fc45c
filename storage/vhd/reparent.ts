// Re-parenting a differencing disk in place: its header is pointed at another parent (new
// locators written first, in space the old header does not reference), or, with no parent, the
// disk becomes a standalone dynamic disk (header and both footer copies rewritten). The header
// is 1024 bytes, two sectors, so a crash could tear it: the new header (and footer) go first to
// a journal "<file>.reparent", and finishInterruptedReparent() applies a journal left behind.

import fs from 'node:fs';
import path from 'node:path';
import { fsyncFolder } from '../../host/files.js';
import { crashPoint } from '../crash-points.js';
import { VhdError } from './errors.js';
import { DiskType, FOOTER_SIZE, decodeFooter, decodeHeader, emptyLocators, encodeFooter, encodeHeader } from './format.js';
import type { VhdDisk } from './disk.js';
import type { VhdFile } from './file.js';
import { planLocators } from './locators.js';
import { reparentJournalOf, writeJournal } from './reparent-journal.js';

export { finishInterruptedReparent, reparentJournalOf } from './reparent-journal.js';

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

