// The SHA-256 of a file, read in chunks (a backup's files are checked against their manifest with it).

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { LongOperationOptions } from '../storage/progress.js';
import { step } from '../storage/progress.js';

const CHUNK = 4 * 1024 * 1024;

export async function sha256File(file: string, options: LongOperationOptions = {}): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  const handle = await fs.promises.open(file, 'r');
  try {
    const { size } = await handle.stat();
    const buf = Buffer.alloc(CHUNK);
    let at = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buf, 0, CHUNK, at);
      if (!bytesRead) break;
      hash.update(buf.subarray(0, bytesRead));
      at += bytesRead;
      await step(options, at, size);
    }
    return { bytes: at, sha256: hash.digest('hex') };
  } finally {
    await handle.close();
  }
}
