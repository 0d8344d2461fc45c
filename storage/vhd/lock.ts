// One writer per disk: a writer holds "<file>.lock", created exclusively and naming its
// holder. A lock whose process is gone (same host, pid no longer running the same process)
// is stale and taken over, so a kill -9 never leaves a disk locked forever. A lock is written
// as a draft first (storage/drafts.ts names it); a draft left by a killed writer is removed by
// vserverd's start-up clean-up.

import fs from 'node:fs';
import os from 'node:os';
import { processStartTicks } from '../../host/process.js';
import { lockDraftOf } from '../drafts.js';
import { VhdError } from './errors.js';
import { readRegularFile } from './regular-file.js';

export interface LockOwner {
  holder: string;
  pid: number;
  host: string;
  /** The process's start time in clock ticks since boot, to tell a reused pid apart. */
  processStart: string;
  since: string;
}

const held = new Map<string, LockOwner>();
let exitHookInstalled = false;
let licensed = false;

/**
 * Called by a VM worker started with a run licence (a clustered VM). Its licence was granted only
 * once the VM's previous ownership lease was gone at etcd, and the previous owner's worker fences
 * itself (kills QEMU, writes nothing more) before its lease can expire: so a lock left by another
 * machine is its dead or fenced writer's, and this process may take it over. A lock held by a live
 * process on this machine is never taken.
 */
export function takeOverOtherMachinesLocks(): void {
  licensed = true;
}

function isAlive(owner: LockOwner): boolean {
  if (owner.host !== os.hostname()) return true; // another host's lock cannot be judged from here
  const start = processStartTicks(owner.pid);
  return start !== null && start === owner.processStart;
}

export function lockPath(file: string): string {
  return `${file}.lock`;
}

/** Reads who holds a file's write lock, or null when nobody living does. */
export function lockHolder(file: string): LockOwner | null {
  try {
    const owner = JSON.parse(readRegularFile(lockPath(file))) as LockOwner;
    return isAlive(owner) ? owner : null;
  } catch {
    return null;
  }
}

export function acquireWriteLock(file: string, holder: string): void {
  const path = lockPath(file);
  const owner: LockOwner = {
    holder,
    pid: process.pid,
    host: os.hostname(),
    processStart: processStartTicks(process.pid) ?? '',
    since: new Date().toISOString(),
  };
  for (let attempt = 0; attempt < 3; attempt++) {
    // Written whole to a private name, then linked into place: link() fails atomically when the
    // lock exists, and nobody ever reads a half-written lock.
    const draft = lockDraftOf(path);
    try {
      fs.writeFileSync(draft, JSON.stringify(owner), { mode: 0o644 });
      fs.linkSync(draft, path);
      held.set(path, owner);
      installExitHook();
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new VhdError('VHD_E_IO', `${file}: cannot create the write lock ${path}: ${(e as Error).message}`, file);
      }
    } finally {
      fs.rmSync(draft, { force: true });
    }
    const current = readOwner(path);
    if (current && isAlive(current) && !(licensed && current.host !== os.hostname())) {
      const who = held.has(path) ? 'this process' : `pid ${current.pid} on ${current.host}`;
      throw new VhdError('VHD_E_LOCKED',
        `${file} is open for writing by ${current.holder} (${who}, since ${current.since}); a disk has one writer at a time`, file);
    }
    // Stale or unreadable (a writer killed mid-write of the lock itself): remove and retry.
    fs.rmSync(path, { force: true });
  }
  throw new VhdError('VHD_E_LOCKED', `${file}: could not take the write lock ${path}`, file);
}

export function releaseWriteLock(file: string): void {
  const path = lockPath(file);
  if (!held.delete(path)) return;
  fs.rmSync(path, { force: true });
}

/**
 * Forgets a lock without removing its file: a fenced VM's worker (its run licence ended) may no
 * longer touch the disk, and by now the lock may be another host's. Its file is left for the next
 * owner, which judges it stale.
 */
export function abandonWriteLock(file: string): void {
  held.delete(lockPath(file));
}

/** The lock's owner; null when it is unreadable, or not a regular file (a FIFO put there must not block). */
function readOwner(path: string): LockOwner | null {
  try {
    return JSON.parse(readRegularFile(path)) as LockOwner;
  } catch {
    return null;
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const path of held.keys()) fs.rmSync(path, { force: true });
  });
}
