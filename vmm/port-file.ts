// A serial or parallel port's output file: QEMU creates it (not its folder) and rewrites it from
// its start at each turn on, so it must be a text file, never one of a VM's own files. Checked
// when a port is connected (the API) and again at each turn on (the worker's pre-flight): one
// check, each caller naming the problem in its own error.

import fs from 'node:fs/promises';
import path from 'node:path';
import { PORT_FILE_REFUSED } from './config.js';

export type PortFileProblem = 'vm-file' | 'not-a-file' | 'no-folder';

/** What is wrong with `file` as the output of `port` ("COM2", "LPT1"), or null when nothing is. */
export async function portFileProblem(port: string, file: string): Promise<{ problem: PortFileProblem; message: string } | null> {
  if (PORT_FILE_REFUSED.some((ext) => file.toLowerCase().endsWith(ext))) {
    return { problem: 'vm-file', message: `${port} would overwrite ${file} each time the VM is turned on; choose a text file (not ${PORT_FILE_REFUSED.join(', ')})` };
  }
  const [existing, folder] = await Promise.all([fs.stat(file).catch(() => null), fs.stat(path.dirname(file)).catch(() => null)]);
  if (existing && !existing.isFile()) return { problem: 'not-a-file', message: `${file} is not a file; ${port} writes to a text file` };
  if (!folder) return { problem: 'no-folder', message: `the folder ${path.dirname(file)} for ${port}'s output file ${file} does not exist` };
  return null;
}
