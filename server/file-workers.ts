// File work for API calls (storage-root lookups, VHD inspection, folder listings) runs in a few
// worker processes, each job with a time limit, so that a file that never answers (a FIFO
// swapped in, a hung FUSE or network file system) costs one worker and one VM_E_FILE_TIMEOUT,
// never vserverd's event loop: /healthz and every other call go on being answered.
//
// Processes, not worker threads: a thread stuck in a system call cannot be stopped, and Node
// joins every thread at exit, so one stuck read would keep vserverd from ever exiting. A stuck
// process is killed (SIGKILL also ends a FUSE request) and replaced; one that will not even die
// counts against MAX_STUCK_WORKERS, past which new jobs are refused at once.

import { type ChildProcess, fork } from 'node:child_process';
import path from 'node:path';
import { ApiError } from './errors.js';
import { type FileJob, type JobReply, type JobResults, describeJob, fromJobError } from './file-jobs.js';

/** How long one file job may take before its caller gets VM_E_FILE_TIMEOUT. */
export const FILE_TIME_LIMIT_MS = 10_000;
/** Workers kept when idle: inspection is short, so two keep up with the API. */
const IDLE_WORKERS = 2;
/** Workers at once; jobs beyond wait. Files that do not answer then hold a few workers, not all file work. */
const MAX_WORKERS = 6;
/** Workers given up on that have not exited yet; beyond this, file jobs are refused. */
export const MAX_STUCK_WORKERS = 4;

const WORKER_MAIN = path.join(import.meta.dirname, 'file-worker.js');

interface Pending {
  id: number;
  job: FileJob;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
  worker: Worker | null;
}

interface Worker {
  child: ChildProcess;
  pending: Pending | null;
}

export class FileWorkers {
  #workers: Worker[] = [];
  #queue: Pending[] = [];
  #stuck = 0;
  #nextId = 0;

  /** `roots`: the storage roots, as StorageRoots has resolved them. */
  constructor(private readonly roots: readonly string[]) {}

  run<Op extends FileJob['op']>(job: Extract<FileJob, { op: Op }>): Promise<JobResults[Op]> {
    if (this.#stuck >= MAX_STUCK_WORKERS) {
      return Promise.reject(new ApiError('VM_E_FILE_TIMEOUT',
        `${describeJob(job)} was refused: ${this.#stuck} earlier file operations are stuck on files that do not answer, and vserverd takes no more until one ends`));
    }
    return new Promise((resolve, reject) => {
      const pending: Pending = {
        id: ++this.#nextId, job, resolve: resolve as (value: unknown) => void, reject, worker: null,
        timer: setTimeout(() => this.#timeOut(pending), FILE_TIME_LIMIT_MS),
      };
      this.#queue.push(pending);
      this.#dispatch();
    });
  }

  /** Stops every worker (vserverd's exit; tests). */
  close(): void {
    for (const worker of this.#workers) worker.child.kill('SIGKILL');
    this.#workers = [];
  }

  #dispatch(): void {
    while (this.#queue.length) {
      let worker = this.#workers.find((w) => w.pending === null);
      if (!worker) {
        if (this.#workers.length >= MAX_WORKERS) return;
        worker = this.#spawn();
      }
      const pending = this.#queue.shift()!;
      worker.pending = pending;
      pending.worker = worker;
      worker.child.send({ id: pending.id, job: pending.job });
    }
  }

  #spawn(): Worker {
    const child = fork(WORKER_MAIN, [JSON.stringify(this.roots)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] });
    const worker: Worker = { child, pending: null };
    // Idle workers must not keep vserverd (or a test) alive; a pending job's timer does.
    child.unref();
    child.channel?.unref();
    child.on('message', (reply: JobReply) => {
      const pending = worker.pending;
      if (!pending || pending.id !== reply.id) return;
      this.#settle(worker);
      if ('error' in reply) pending.reject(fromJobError(reply.error));
      else pending.resolve(reply.value);
    });
    child.on('exit', (code, signal) => {
      const pending = worker.pending;
      if (!this.#workers.includes(worker)) return;
      this.#workers = this.#workers.filter((w) => w !== worker);
      if (pending) {
        clearTimeout(pending.timer);
        pending.reject(new Error(`the file worker doing ${describeJob(pending.job)} ended (${signal ?? code})`));
      }
      this.#dispatch();
    });
    this.#workers.push(worker);
    return worker;
  }

  #settle(worker: Worker): void {
    clearTimeout(worker.pending!.timer);
    worker.pending = null;
    this.#dispatch();
    if (worker.pending === null && this.#workers.filter((w) => w.pending === null).length > IDLE_WORKERS) {
      this.#workers = this.#workers.filter((w) => w !== worker);
      worker.child.kill();
    }
  }

  #timeOut(pending: Pending): void {
    pending.reject(new ApiError('VM_E_FILE_TIMEOUT',
      `${describeJob(pending.job)} did not answer within ${FILE_TIME_LIMIT_MS / 1000} s; a file it reads does not answer (a FIFO, a hung FUSE or network file system?)`));
    const worker = pending.worker;
    if (!worker) {
      this.#queue = this.#queue.filter((p) => p !== pending);
      return;
    }
    // Given up on: out of the pool at once, counted as stuck until it has really gone.
    this.#workers = this.#workers.filter((w) => w !== worker);
    worker.pending = null;
    this.#stuck++;
    worker.child.once('exit', () => { this.#stuck--; });
    worker.child.kill('SIGKILL');
    this.#dispatch();
  }
}
