// A VM's .vmc file: its configuration document, beside its files, so that another host (or this
// one, after the catalog is lost) can register it. It is replaced whole and durably: a draft
// named for the writing process (storage/drafts.ts, so that a dead writer's draft is known as
// garbage), flushed, renamed over the .vmc, and the folder flushed (host/files.ts).

import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { writeFileDurably } from '../host/files.js';
import { draftOf } from '../storage/drafts.js';
import { parseVmConfig, type VmConfig } from '../vmm/config.js';

function vmcText(config: VmConfig): string {
  return `${JSON.stringify({ version: 1, ...config }, null, 2)}\n`;
}

export function writeVmc(file: string, config: VmConfig): Promise<void> {
  return writeFileDurably(file, vmcText(config), { draft: draftOf(file) });
}

/**
 * Whether `file` holds the configuration `config`, read as registering it would read it (a .vmc
 * written by hand may spell the same configuration otherwise: relative paths, other spacing).
 */
export function vmcHolds(file: string, config: VmConfig): boolean {
  try {
    return isDeepStrictEqual(parseVmConfig(JSON.parse(fs.readFileSync(file, 'utf8')), path.dirname(file)), config);
  } catch {
    return false;
  }
}
