// A file worker process (see file-workers.ts): does one file job at a time for vserverd with
// the synchronous engine and StorageRoots, and answers. It may block on a file that never
// answers; vserverd then kills it and starts another.

import fs from 'node:fs';
import path from 'node:path';
import { VhdError, inspectDisk } from '../storage/vhd/index.js';
import { type FileJob, type JobReply, type JobRequest, type JobResults, toJobError } from './file-jobs.js';
import { StoragePathError, StorageRoots } from './storage-roots.js';

const roots = new StorageRoots(JSON.parse(process.argv[2]) as string[]);

/** Refuses, unopened, a parent candidate outside the roots (after symlinks), naming the child it belongs to. */
function admitParent(candidate: string, child: string): void {
  roots.resolve(candidate, { kind: `parent of ${child},` });
}

function perform(job: FileJob): JobResults[FileJob['op']] {
  switch (job.op) {
    case 'resolve': return roots.resolve(job.input, job.options);
    case 'new-file': {
      const file = roots.resolve(job.input, { kind: job.kind });
      if (fs.existsSync(file)) throw new VhdError('VHD_E_EXISTS', `${file} already exists`, file);
      return file;
    }
    case 'regular-file': {
      const file = roots.resolve(job.input, { mustExist: true, kind: job.kind });
      if (!fs.statSync(file).isFile()) throw new StoragePathError('VM_E_INVALID_PATH', `${file} is not a file; the ${job.kind} must be a regular file`);
      return file;
    }
    case 'inspect': return inspectDisk(roots.resolve(job.input, { mustExist: true, kind: job.kind }), { admitParent });
    case 'list': return roots.list(job.dir);
    case 'free-space': {
      const stats = fs.statfsSync(path.resolve(job.dir));
      return stats.bavail * stats.bsize;
    }
  }
}

process.on('message', (request: JobRequest) => {
  let reply: JobReply;
  try {
    reply = { id: request.id, value: perform(request.job) };
  } catch (e) {
    reply = { id: request.id, error: toJobError(e) };
  }
  process.send!(reply);
});
// vserverd gone (even killed): nothing left to answer.
process.on('disconnect', () => process.exit(0));
