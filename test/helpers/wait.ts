// Waiting in tests: a pause, and a condition polled until it holds or its time runs out.

import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';

export { delay };

/** Polls `test` every `pollMs` until it holds; fails the test, naming `what`, after `timeoutMs`. */
export async function waitFor(what: string, test: () => boolean, timeoutMs: number, pollMs = 5): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!test()) {
    if (Date.now() > deadline) assert.fail(`${what} did not happen within ${timeoutMs} ms`);
    await delay(pollMs);
  }
}
