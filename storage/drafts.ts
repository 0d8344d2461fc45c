// A file in the making (a new disk, a converted copy, a VM's saved state) is written as a hidden
// draft beside its target, named after the writing process: ".NAME.PID.partial". A disk's write
// lock is made the same way, as "NAME.lock.PID.tmp" (storage/vhd/lock.ts). A draft whose
// process is gone (kill -9, a crash) is garbage, and the pid in its name is how to tell.

import fs from 'node:fs';
import path from 'node:path';
import { isAlive } from '../host/process.js';

const DRAFT = /^\.(.+)\.(\d+)\.partial$/;
const LOCK_DRAFT = /^(.+\.lock)\.(\d+)\.tmp$/;

/** The draft of `target` written by this process (or by the process `pid`). */
export function draftOf(target: string, pid = process.pid): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.${pid}.partial`);
}

/** The draft of the write lock `lock` made by this process, linked into place once written whole. */
export function lockDraftOf(lock: string): string {
  return `${lock}.${process.pid}.tmp`;
}

/** The pid that writes a draft or a lock draft (from its file name), or null when the name is neither's. */
export function draftWriter(file: string): number | null {
  const name = path.basename(file);
  const match = DRAFT.exec(name) ?? LOCK_DRAFT.exec(name);
  return match ? Number(match[2]) : null;
}

/** Whether `file` is a draft whose writer no longer runs. */
export function isDeadDraft(file: string): boolean {
  const pid = draftWriter(file);
  return pid !== null && pid !== process.pid && !isAlive(pid);
}

/** The dead drafts of one target. */
export function deadDraftsOf(target: string): string[] {
  const dir = path.dirname(target);
  const prefix = `.${path.basename(target)}.`;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((n) => n.startsWith(prefix) && DRAFT.exec(n)?.[1] === path.basename(target)).map((n) => path.join(dir, n)).filter(isDeadDraft);
}

/** Folders below each root searched for dead drafts, and entries read at most, so that a start stays quick on large trees. */
export const DRAFT_SEARCH = { depth: 4, entries: 20_000 } as const;

/** Dead drafts under `roots`, searched breadth-first to DRAFT_SEARCH's bounds (symlinks are not followed). */
export function deadDrafts(roots: readonly string[]): string[] {
  const found: string[] = [];
  let budget = DRAFT_SEARCH.entries;
  let level = [...roots];
  for (let depth = 0; depth <= DRAFT_SEARCH.depth && level.length && budget > 0; depth++) {
    const next: string[] = [];
    for (const dir of level) {
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(dir, { withFileTypes: true });
      } catch {
        continue; // unreadable or gone: nothing of ours to clean there
      }
      for (const entry of entries.slice(0, budget)) {
        const file = path.join(dir, entry.name);
        if (entry.isDirectory()) next.push(file);
        else if (entry.isFile() && isDeadDraft(file)) found.push(file);
      }
      budget -= entries.length;
      if (budget <= 0) break;
    }
    level = next;
  }
  return found;
}
