// Tasks (server/tasks.ts) on a real catalog: progress is announced once per whole percent and
// at most once per PROGRESS_INTERVAL_MS, the latest value is never lost, percent never goes
// back; the log has phases and rates, not a line per report; interrupted tasks are settled.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Catalog, openCatalog } from '../server/catalog/database.js';
import { ApiError } from '../server/errors.js';
import { PROGRESS_INTERVAL_MS, type TaskHandle, Tasks, type TaskState } from '../server/tasks.js';
import { delay } from './helpers/wait.js';

let dir: string;
let db: Catalog;

/** Starts a task whose work is `work` on its own Tasks, recording each announcement (time, percent, finished). */
function recorded(tasks: Tasks, work: (t: TaskHandle) => Promise<unknown>): { state: TaskState; seen: { at: number; percent: number; finished: boolean }[] } {
  const seen: { at: number; percent: number; finished: boolean }[] = [];
  tasks.on('progress', (s) => seen.push({ at: Date.now(), percent: s.percent, finished: s.finished !== null }));
  const state = tasks.start('Test work', null, 'admin', {}, work);
  return { state, seen };
}

describe('Tasks', () => {
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-tasks-'));
    db = openCatalog(dir);
  });
  after(() => {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a thousand reports over a second make at most one announcement per interval, rising, and the completion at 100', async () => {
    const tasks = new Tasks(db);
    const { state, seen } = recorded(tasks, async (t) => {
      for (let i = 0; i < 1000; i++) {
        t.progress(i / 10, 'copying', i * 1000);
        if (i % 10 === 0) await delay(10);
      }
    });
    assert.equal(await tasks.wait(state.id, 10_000), true);
    assert.ok(seen.length <= 1 + 1000 / (PROGRESS_INTERVAL_MS / 1.5), `${seen.length} announcements`);
    for (let i = 1; i < seen.length; i++) {
      assert.ok(seen[i].percent > seen[i - 1].percent, `rising: ${seen.map((s) => s.percent).join(' ')}`);
      if (!seen[i].finished) assert.ok(seen[i].at - seen[i - 1].at >= PROGRESS_INTERVAL_MS - 2, `spaced: ${seen.map((s) => s.at - seen[0].at).join(' ')}`);
    }
    assert.deepEqual(seen.at(-1), { at: seen.at(-1)!.at, percent: 100, finished: true });
    const lines = tasks.get(state.id)!.log.map((l) => l.replace(/^\S+ /, ''));
    assert.equal(lines.length, 4, lines.join('\n'));
    assert.deepEqual([lines[0], lines[1], lines[3]], ['Test work', 'copying', 'completed']);
    assert.match(lines[2], /^copying: 1\.0 MB in \d+\.\d s, \d+\.\d MB\/s$/);
  });

  it('the last percent reported is announced after the interval even when nothing follows; percent never goes back', async () => {
    const tasks = new Tasks(db);
    let release!: () => void;
    const { state, seen } = recorded(tasks, async (t) => {
      t.progress(10);
      t.progress(57.9); // within the interval: held back, then announced
      t.progress(30); // lower: ignored
      await new Promise<void>((r) => { release = r; });
    });
    assert.equal(tasks.get(state.id)!.percent, 57, 'the task knows its percent at once');
    assert.deepEqual(seen.map((s) => s.percent), [0], 'within the interval of the start, nothing more is announced');
    await delay(PROGRESS_INTERVAL_MS * 2);
    assert.deepEqual(seen.map((s) => s.percent), [0, 57], 'then the latest percent is');
    release();
    assert.equal(await tasks.wait(state.id, 1000), true);
    assert.deepEqual(seen.map((s) => s.percent), [0, 57, 100]);
  });

  it('tasks left running by a stop are settled at the next start: by the settler (done, or its error), else VM_E_SERVICE_STOPPED', async () => {
    const first = new Tasks(db);
    const never = new Promise<never>(() => {});
    const done = first.start('Startup of a', 'VirtualMachine/a', 'admin', { kind: 'turnOn' }, () => never);
    const failed = first.start('Save state of b', 'VirtualMachine/b', 'admin', { kind: 'save' }, () => never);
    const plain = first.start('Compact x', 'HardDisk/x', 'admin', { cancelable: true }, () => never);

    const next = new Tasks(db); // a new process on the same catalog
    const asked: string[] = [];
    next.settleInterrupted((task) => {
      asked.push(`${task.kind ?? 'none'} ${task.object ?? ''}`);
      if (task.id === done.id) return delay(50).then(() => ({ done: 'the VM is running (reattached)' }));
      if (task.id === failed.id) return Promise.resolve({ error: new ApiError('VM_E_SERVICE_STOPPED', 'stopped; the VM is Running') });
      return null;
    });
    assert.deepEqual(asked.sort(), ['none HardDisk/x', 'save VirtualMachine/b', 'turnOn VirtualMachine/a']);
    assert.equal(next.get(done.id)!.finished, null, 'a task whose settler waits runs on meanwhile');
    for (const t of [done, failed, plain]) assert.equal(await next.wait(t.id, 1000), true);
    const settled = next.get(done.id)!;
    assert.deepEqual([settled.error, settled.percent], [null, 100]);
    assert.ok(settled.log.some((l) => l.endsWith(' the VM is running (reattached)')), settled.log.join('\n'));
    assert.deepEqual(next.get(failed.id)!.error, { name: 'VM_E_SERVICE_STOPPED', message: 'stopped; the VM is Running' });
    assert.deepEqual(next.get(plain.id)!.error, { name: 'VM_E_SERVICE_STOPPED', message: 'vserverd stopped while the task ran' });
  });
});
