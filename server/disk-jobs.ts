// Disk tasks (create, convert, compact, merge, expand) run the VHD engine in a child process
// each, a "disk job", so that a file that is slow to read (a hung FUSE or network file system)
// stalls that child, never vserverd's event loop. Progress and the result or the engine's error
// come back over IPC. No time limit: disk tasks are long, and a slow file is not a failure.
//
// A cancel asks the child to stop (the engine then removes its draft as on any abort); a child
// stuck in a read cannot hear it and is killed after CANCEL_GRACE_MS (SIGKILL ends a FUSE
// wait), and vserverd removes the draft it left. The child exits when its IPC channel closes,
// so a kill -9 of vserverd does not leave it writing; vserverd's orderly stop kills the jobs.

import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { draftOf } from '../storage/drafts.js';
import type { LongOperationOptions } from '../storage/progress.js';
import {
  type ImageType, VhdDisk, compactDisk, convertDisk, createDifferencing, createDynamic, createFixed, expandDisk, mergeIntoParent, mergeToNewDisk,
} from '../storage/vhd/index.js';
import { mergeIntoChild } from '../storage/vhd/up-merge.js';
import { copyChainToVhd, copyChangedToVhd } from '../storage/backup/copy.js';
import { keepingChangeMap } from '../storage/nbd/change-map.js';
import { type JobError, fromJobError } from './file-jobs.js';
import { sha256File } from './file-hash.js';
import { readChangeMap, startChangeMap } from '../storage/nbd/change-map.js';

/** How long a cancelled job may take to stop by itself before it is killed. */
export const CANCEL_GRACE_MS = 2000;

/** A new disk's folder is made first (it is inside the storage roots: checked before the task). */
function inNewFolder(target: string): string {
  fs.mkdirSync(path.dirname(target), { recursive: true });
  return target;
}

/** The operations a disk job can run: each the engine's function, its arguments by name; `target`, when there is one, is the file written new. */
export const DISK_OPERATIONS = {
  createDynamic: (a: { target: string; size?: number }) => createDynamic(inNewFolder(a.target), { size: a.size }),
  createFixed: (a: { target: string; size: number }, o: LongOperationOptions) => createFixed(inNewFolder(a.target), a.size, o),
  createDifferencing: (a: { target: string; parent: string }) => createDifferencing(inNewFolder(a.target), a.parent),
  convertDisk: (a: { source: string; target: string; type: ImageType }, o: LongOperationOptions) => convertDisk(a.source, a.target, { ...o, type: a.type }),
  compactDisk: (a: { file: string }, o: LongOperationOptions) => compactDisk(a.file, o),
  mergeIntoParent: (a: { child: string }, o: LongOperationOptions) => mergeIntoParent(a.child, o),
  mergeToNewDisk: (a: { child: string; target: string }, o: LongOperationOptions) => mergeToNewDisk(a.child, a.target, o),
  expandDisk: (a: { file: string; size: number }, o: LongOperationOptions) => expandDisk(a.file, a.size, o),
  /** Offline up-merge: `layer` into its child `child` (re-run completes an interrupted one); `layer` is left for the caller to delete. */
  mergeIntoChild: (a: { layer: string; child: string }, o: LongOperationOptions) => keepingChangeMap(a.child, () => mergeIntoChild(a.layer, a.child, o)),
  /** A full backup copy of the chain at `top`: { bytes, sha256, dataBytes }. */
  copyChainToVhd: (a: { top: string; target: string }, o: LongOperationOptions) => copyChainToVhd(a.top, inNewFolder(a.target), o),
  /** An incremental backup copy: the ranges `map` marks, as a child of `parentBackup`. */
  copyChangedToVhd: (a: { top: string; map: string; parentBackup: string; target: string }, o: LongOperationOptions) =>
    copyChangedToVhd(a.top, a.map, a.parentBackup, inNewFolder(a.target), o),
  sha256: (a: { file: string }, o: LongOperationOptions) => sha256File(a.file, o),
  /** What a top's change map says (vserverd decides from it whether a backup can be incremental). */
  changeMapInfo: async (a: { top: string; file?: string }) => {
    const { map: _map, ...info } = readChangeMap(a.top, a.file);
    return info;
  },
  /** Starts a stopped VM's top's change map afresh, counting from the backup `generation`. */
  startChangeMap: async (a: { top: string; generation: string }) => {
    const disk = VhdDisk.open(a.top);
    const size = disk.size;
    disk.close();
    startChangeMap(a.top, a.generation, size);
  },
} satisfies Record<string, (args: never, options: LongOperationOptions) => Promise<unknown>>;

export type DiskOperation = keyof typeof DISK_OPERATIONS;
export type DiskJobArgs<Op extends DiskOperation> = Parameters<(typeof DISK_OPERATIONS)[Op]>[0];
export type DiskJobResult<Op extends DiskOperation> = Awaited<ReturnType<(typeof DISK_OPERATIONS)[Op]>>;

/** vserverd to the child: the job, then perhaps ABORT. */
export interface DiskJobRequest { op: DiskOperation; args: unknown }
export const ABORT = 'abort';
/** The child to vserverd: progress as often as the engine reports it, then one answer. */
export type DiskJobMessage = { progress: [done: number, total: number] } | { result: unknown } | { error: JobError };

const DISK_JOB_MAIN = path.join(import.meta.dirname, 'disk-job.js');
const running = new Set<ChildProcess>();

/** Runs the engine's `op` in a child process; resolves with what it returns, rejects with its error. */
export function runDiskJob<Op extends DiskOperation>(op: Op, args: DiskJobArgs<Op>, options: LongOperationOptions = {}): Promise<DiskJobResult<Op>> {
  return new Promise((resolve, reject) => {
    const child = fork(DISK_JOB_MAIN, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] });
    running.add(child);
    let answer: DiskJobMessage | null = null;
    let killer: NodeJS.Timeout | undefined;
    const cancel = (): void => {
      if (child.connected) child.send(ABORT);
      killer ??= setTimeout(() => child.kill('SIGKILL'), CANCEL_GRACE_MS);
    };
    child.on('message', (message: DiskJobMessage) => {
      if ('progress' in message) options.onProgress?.(...message.progress);
      else answer = message;
    });
    // A process that could not be started: no 'close' may follow. (A failed send: 'close' does.)
    child.on('error', (error) => {
      if (child.pid !== undefined) return;
      running.delete(child);
      options.signal?.removeEventListener('abort', cancel);
      reject(new Error(`the disk job ${op} could not start: ${error.message}`));
    });
    // 'close', not 'exit': after the IPC channel too has closed, so the answer has been read.
    child.on('close', (code, signal) => {
      running.delete(child);
      clearTimeout(killer);
      options.signal?.removeEventListener('abort', cancel);
      const settled: DiskJobMessage | null = answer;
      if (settled && 'result' in settled) {
        resolve(settled.result as DiskJobResult<Op>);
        return;
      }
      const failure = settled && 'error' in settled ? fromJobError(settled.error)
        : new Error(`the disk job ${op} ended without an answer (${signal ?? `exit code ${String(code)}`})`);
      // A killed child's draft of the new file (the engine removes it on any other end).
      const target = (args as { target?: string }).target;
      void (target && child.pid ? fs.promises.rm(draftOf(target, child.pid), { force: true }).catch(() => {}) : Promise.resolve())
        .then(() => reject(failure));
    });
    child.send({ op, args } satisfies DiskJobRequest);
    if (options.signal?.aborted) cancel();
    else options.signal?.addEventListener('abort', cancel, { once: true });
  });
}

/** Kills every running disk job (vserverd's stop): their tasks end as VM_E_SERVICE_STOPPED at the next start, which removes their drafts. */
export function killDiskJobs(): void {
  for (const child of running) child.kill('SIGKILL');
}
