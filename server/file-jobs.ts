// The file work an API call asks for (a path looked up in the storage roots, a VHD and its
// parent chain inspected, a folder listed), as messages between vserverd and its file workers
// (file-workers.ts, file-worker.ts). Errors cross as their class, code and message.

import { VhdError, type DiskInfo, type VhdErrorCode } from '../storage/vhd/index.js';
import { type ResolveOptions, type StorageListing, type StoragePathCode, StoragePathError } from './storage-roots.js';

export type FileJob =
  /** StorageRoots.resolve. */
  | { op: 'resolve'; input: string; options: ResolveOptions }
  /** A file to be created inside the roots: its real path; one that exists is VHD_E_EXISTS. */
  | { op: 'new-file'; input: string; kind: string }
  /** An existing regular file inside the roots (an ISO or floppy image). */
  | { op: 'regular-file'; input: string; kind: string }
  /** An existing VHD inside the roots, every file of its chain inside them too. */
  | { op: 'inspect'; input: string; kind: string }
  /** StorageRoots.list. */
  | { op: 'list'; dir?: string }
  /** Bytes free for an unprivileged user in the file system holding a folder. */
  | { op: 'free-space'; dir: string };

export interface JobResults {
  'resolve': string;
  'new-file': string;
  'regular-file': string;
  'inspect': DiskInfo;
  'list': StorageListing;
  'free-space': number;
}

export type JobError =
  | { type: 'vhd'; code: VhdErrorCode; message: string; file?: string; offset?: number }
  | { type: 'path'; code: StoragePathCode; message: string }
  | { type: 'other'; message: string };

export type JobReply = { id: number; value: unknown } | { id: number; error: JobError };
export interface JobRequest { id: number; job: FileJob }

export function toJobError(e: unknown): JobError {
  if (e instanceof VhdError) return { type: 'vhd', code: e.code, message: e.message, file: e.file, offset: e.offset };
  if (e instanceof StoragePathError) return { type: 'path', code: e.code, message: e.message };
  return { type: 'other', message: (e as Error)?.message ?? String(e) };
}

export function fromJobError(e: JobError): Error {
  if (e.type === 'vhd') return new VhdError(e.code, e.message, e.file, e.offset);
  if (e.type === 'path') return new StoragePathError(e.code, e.message);
  return new Error(e.message);
}

/** For the time-out message: what the job was doing. */
export function describeJob(job: FileJob): string {
  switch (job.op) {
    case 'inspect': return `reading the disk ${job.input}`;
    case 'list': return `listing ${job.dir ?? 'the first storage root'}`;
    case 'free-space': return `measuring the free space under ${job.dir}`;
    default: return `looking up ${job.input}`;
  }
}
