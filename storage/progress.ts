// How long storage operations report progress and can be stopped: a callback with bytes done
// of bytes total, an AbortSignal, and a yield to the event loop between chunks so that a
// service running the operation keeps answering.

import { setImmediate as yieldToEventLoop } from 'node:timers/promises';

export type ProgressCallback = (done: number, total: number) => void;

export interface LongOperationOptions {
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
}

/** Reports progress, honours cancellation, and lets other work run; call between chunks. */
export async function step(options: LongOperationOptions, done: number, total: number): Promise<void> {
  options.onProgress?.(done, total);
  options.signal?.throwIfAborted();
  await yieldToEventLoop();
}
