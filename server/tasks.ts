// Long operations as Virtual Server's IVMTask: a description, percent completed, a result or an
// error, and a log. Tasks are kept in the catalog after they finish; a task that was running
// when vserverd stopped is marked failed at the next start, with that reason.

import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { type Catalog, prepared } from './catalog/database.js';
import { ApiError, toApiError } from './api/errors.js';

export interface TaskState {
  id: string;
  description: string;
  /** The object the task acts on; its rights decide who may see the task. */
  object: string | null;
  owner: string;
  cancelable: boolean;
  started: string;
  finished: string | null;
  percent: number;
  result: unknown;
  error: { name: string; message: string } | null;
  log: string[];
}

export interface TaskHandle {
  readonly id: string;
  readonly signal: AbortSignal;
  progress(percent: number, note?: string): void;
  note(line: string): void;
}

interface TaskRow { id: string; description: string; object: string | null; owner: string; cancelable: number; started: string; finished: string | null; percent: number; result: string | null; error: string | null; log: string }

const KEEP_FINISHED = 500;

export class Tasks extends EventEmitter<{ progress: [TaskState] }> {
  private readonly running = new Map<string, { state: TaskState; abort: AbortController; done: Promise<void> }>();

  constructor(private readonly db: Catalog) {
    super();
    const now = new Date().toISOString();
    prepared(db, `UPDATE tasks SET finished = ?, error = ? WHERE finished IS NULL`)
      .run(now, JSON.stringify({ name: 'VM_E_SERVICE_STOPPED', message: 'vserverd stopped while the task ran' }));
  }

  /** Starts `work` as a task and returns at once; the work's result or error settles the task. */
  start(description: string, object: string | null, owner: string, options: { cancelable?: boolean }, work: (task: TaskHandle) => Promise<unknown>): TaskState {
    const state: TaskState = {
      id: randomUUID(), description, object, owner, cancelable: options.cancelable ?? false, started: new Date().toISOString(),
      finished: null, percent: 0, result: null, error: null, log: [],
    };
    const abort = new AbortController();
    const handle: TaskHandle = {
      id: state.id,
      signal: abort.signal,
      progress: (percent, note) => {
        const rounded = Math.max(0, Math.min(99, Math.floor(percent)));
        if (note) this.appendLog(state, note);
        if (rounded === state.percent && !note) return;
        state.percent = rounded;
        this.emit('progress', state);
      },
      note: (line) => this.appendLog(state, line),
    };
    this.appendLog(state, description);
    this.insert(state);
    const done = (async () => {
      try {
        state.result = (await work(handle)) ?? null;
        state.percent = 100;
        this.appendLog(state, 'completed');
      } catch (e) {
        const error = abort.signal.aborted ? new ApiError('VM_E_TASK_CANCELLED', `${description} was cancelled`) : toApiError(e);
        state.error = { name: error.errorName, message: error.message };
        this.appendLog(state, `failed: ${error.message}`);
      }
      state.finished = new Date().toISOString();
      this.running.delete(state.id);
      this.save(state);
      this.emit('progress', state);
      this.prune();
    })();
    this.running.set(state.id, { state, abort, done });
    this.emit('progress', state);
    return state;
  }

  get(id: string): TaskState | null {
    const live = this.running.get(id);
    if (live) return live.state;
    const row = prepared(this.db, 'SELECT * FROM tasks WHERE id = ?').get(id) as TaskRow | undefined;
    return row ? fromRow(row) : null;
  }

  /** Tasks in flight, then finished ones, newest first. */
  list(limit = 100): TaskState[] {
    const live = [...this.running.values()].map((t) => t.state).reverse();
    const rows = prepared(this.db, 'SELECT * FROM tasks WHERE finished IS NOT NULL ORDER BY started DESC LIMIT ?').all(limit) as TaskRow[];
    return [...live, ...rows.map(fromRow)].slice(0, limit);
  }

  /** Resolves true when the task has finished, false when timeoutMs passed first. */
  async wait(id: string, timeoutMs: number): Promise<boolean> {
    const live = this.running.get(id);
    if (!live) return true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); });
    try {
      return await Promise.race([live.done.then(() => true), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  cancel(id: string): void {
    const live = this.running.get(id);
    if (!live) throw new ApiError('VM_E_TASK_NOT_CANCELABLE', `task ${id} has already finished`);
    if (!live.state.cancelable) throw new ApiError('VM_E_TASK_NOT_CANCELABLE', `"${live.state.description}" cannot be cancelled`);
    this.appendLog(live.state, 'cancel requested');
    live.abort.abort();
  }

  private appendLog(state: TaskState, line: string): void {
    state.log.push(`${new Date().toISOString()} ${line}`);
    if (state.log.length > 1000) state.log.splice(0, state.log.length - 1000);
  }

  private insert(state: TaskState): void {
    prepared(this.db, `INSERT INTO tasks (id, description, object, owner, cancelable, started, finished, percent, result, error, log)
      VALUES (@id, @description, @object, @owner, @cancelable, @started, NULL, 0, NULL, NULL, @log)`)
      .run({ ...state, cancelable: state.cancelable ? 1 : 0, log: JSON.stringify(state.log) });
  }

  private save(state: TaskState): void {
    prepared(this.db, 'UPDATE tasks SET finished = @finished, percent = @percent, result = @result, error = @error, log = @log WHERE id = @id')
      .run({ id: state.id, finished: state.finished, percent: state.percent, result: JSON.stringify(state.result), error: state.error ? JSON.stringify(state.error) : null, log: JSON.stringify(state.log) });
  }

  private prune(): void {
    prepared(this.db, `DELETE FROM tasks WHERE finished IS NOT NULL AND id NOT IN (SELECT id FROM tasks WHERE finished IS NOT NULL ORDER BY started DESC LIMIT ?)`).run(KEEP_FINISHED);
  }
}

function fromRow(row: TaskRow): TaskState {
  return {
    id: row.id, description: row.description, object: row.object, owner: row.owner, cancelable: row.cancelable === 1, started: row.started,
    finished: row.finished, percent: row.percent, result: row.result ? JSON.parse(row.result) as unknown : null,
    error: row.error ? JSON.parse(row.error) as TaskState['error'] : null, log: JSON.parse(row.log) as string[],
  };
}
