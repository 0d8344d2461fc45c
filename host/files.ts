// Writing files so that a crash (of vserver or of the host) leaves either the old file or the
// new one, whole: data flushed before the rename, the folder flushed after it. One helper for
// every layer, so the order is written down once.

import fs from 'node:fs';
import path from 'node:path';

/** Flushes an open file's data and size to disk. */
function fsyncOpened(file: string, flags: string): void {
  const fd = fs.openSync(file, flags);
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Flushes a file written by someone else (a child process, a stream now closed) to disk. */
export function fsyncFile(file: string): void {
  fsyncOpened(file, 'r+');
}

/** Makes the names in a folder durable: a file's own fsync does not cover its directory entry. */
export function fsyncFolder(folder: string): void {
  fsyncOpened(folder, 'r');
}

/**
 * Writes `data` to `draft` (created with `mode`, or replaced), flushes it, renames it over
 * `file` and flushes the folder. The draft is removed when anything fails. The caller names the
 * draft so that each layer keeps its own convention (storage/drafts.ts for the server's files).
 * Asynchronous, so that vserverd's requests never wait on a slow disk with the event loop held.
 */
export async function writeFileDurably(file: string, data: string | Buffer, options: { draft: string; mode?: number }): Promise<void> {
  const { draft, mode = 0o644 } = options;
  try {
    const handle = await fs.promises.open(draft, 'w', mode);
    try {
      // An existing draft keeps its old mode through open(): set it.
      await handle.chmod(mode);
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fs.promises.rename(draft, file);
  } catch (e) {
    await fs.promises.rm(draft, { force: true });
    throw e;
  }
  const folder = await fs.promises.open(path.dirname(file), 'r');
  try {
    await folder.sync();
  } finally {
    await folder.close();
  }
}
