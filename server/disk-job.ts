// A disk job process (see disk-jobs.ts): runs one operation of the VHD engine for vserverd,
// sends its progress and its answer, and exits. It may block on a slow file; vserverd then
// kills it on cancel.

import type { LongOperationOptions } from '../storage/progress.js';
import { ABORT, CANCEL_GRACE_MS, DISK_OPERATIONS, type DiskJobMessage, type DiskJobRequest } from './disk-jobs.js';
import { toJobError } from './file-jobs.js';

const abort = new AbortController();

function send(message: DiskJobMessage, then?: () => void): void {
  if (process.connected) process.send!(message, undefined, {}, () => then?.());
  else then?.();
}

async function perform({ op, args }: DiskJobRequest): Promise<void> {
  const operation = DISK_OPERATIONS[op] as (args: unknown, options: LongOperationOptions) => Promise<unknown>;
  let answer: DiskJobMessage;
  try {
    const result = await operation(args, { signal: abort.signal, onProgress: (done, total) => send({ progress: [done, total] }) });
    answer = { result: result ?? null };
  } catch (e) {
    answer = { error: toJobError(e) };
  }
  send(answer, () => process.exit(0));
}

process.on('message', (message: DiskJobRequest | typeof ABORT) => {
  if (message === ABORT) abort.abort();
  else void perform(message);
});
// vserverd gone (even killed): stop writing. The engine removes its draft as on a cancel; past
// the grace (a stretch without a chance to abort) the process goes anyway.
process.on('disconnect', () => {
  abort.abort();
  setTimeout(() => process.exit(1), CANCEL_GRACE_MS);
});
