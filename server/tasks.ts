// Long operations as Virtual Server's IVMTask: a description, percent completed, a result or an
// error, and a log. Tasks are kept in the catalog after they finish. A task that was running
// when vserverd stopped is settled at the next start (settleInterrupted): from what its VM's
// worker reports when its kind says how, else failed with VM_E_SERVICE_STOPPED.
//
// Progress is announced (the 'progress' event, Task.OnProgress) only when the whole percent
// grows, at most once per PROGRESS_INTERVAL_MS, with a trailing announcement so that the last
// value is not lost; the log gets a line per phase of the work, never one per chunk.

import { EventEmitter } from 'node:events';
import { newTaskId } from './references.js';
import { finishesWithin } from '../host/time.js';
import { type Catalog, prepared } from './catalog/database.js';
import { ApiError, toApiError } from './errors.js';

export interface TaskState {
  id: string;
  description: string;
  /** The object the task acts on; its rights decide who may see the task. */
  object: string | null;
  owner: string;
  /** The VM operation the task asks of a worker ('turnOn', 'save'...), or null: how a task cut by a restart of vserverd is settled. */
  kind: string | null;
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
  /**
   * How far the work is: percent of the whole, and optionally the phase it is in ("saving
   * memory") and the bytes that phase has handled, for its rate. Call as often as you like.
   */
  progress(percent: number, phase?: string, bytes?: number): void;
  note(line: string): void;
}

interface TaskRow { id: string; description: string; object: string | null; owner: string; kind: string | null; cancelable: number; started: string; finished: string | null; percent: number; result: string | null; error: string | null; log: string }

const KEEP_FINISHED = 500;
/** At most this often (about 5 a second) is a task's progress announced. */
export const PROGRESS_INTERVAL_MS = 200;
const MB = 1e6;

/** The phase a task is in, for its log line and its rate when it ends. */
interface Phase { name: string; since: number; bytes: number }

/** What a running task needs beyond its state: its cancellation, its end, its throttle. */
interface Live {
  state: TaskState;
  abort: AbortController;
  done: Promise<void>;
  announcedPercent: number;
  announcedAt: number;
  trailing: NodeJS.Timeout | null;
  phase: Phase | null;
}

/** How a task cut by a restart ends: done with a log line, or failed with an error. */
export type Settlement = { done: string } | { error: ApiError };

/** The error of a task that vserverd's stop cut short; `more` says what is known since. */
export const SERVICE_STOPPED = (more = ''): ApiError => new ApiError('VM_E_SERVICE_STOPPED', `vserverd stopped while the task ran${more}`);

export class Tasks extends EventEmitter<{ progress: [TaskState] }> {
  private readonly running = new Map<string, Live>();

  /** `host`: this host's name in a cluster, written into each task's id (server/references.ts), or null. */
  constructor(private readonly db: Catalog, private readonly host: string | null = null) {
    super();
  }

  /** Starts `work` as a task and returns at once; the work's result or error settles the task. */
  start(description: string, object: string | null, owner: string, options: { cancelable?: boolean; kind?: string }, work: (task: TaskHandle) => Promise<unknown>): TaskState {
    const state: TaskState = {
      id: newTaskId(this.host), description, object, owner, kind: options.kind ?? null, cancelable: options.cancelable ?? false, started: new Date().toISOString(),
      finished: null, percent: 0, result: null, error: null, log: [],
    };
    this.appendLog(state, description);
    this.insert(state);
    this.run(state, work);
    return state;
  }

  /**
   * The tasks that were running when vserverd last stopped, each settled by `settle`: at once
   * (null: failed with VM_E_SERVICE_STOPPED), or when the promise it returns settles (the task
   * runs again meanwhile, as far as callers can see). Call once, at start.
   */
  settleInterrupted(settle: (task: TaskState) => Promise<Settlement> | null): void {
    const rows = prepared(this.db, 'SELECT * FROM tasks WHERE finished IS NULL').all() as TaskRow[];
    for (const state of rows.map(fromRow)) {
      const outcome = settle(state) ?? Promise.resolve({ error: SERVICE_STOPPED() });
      this.run(state, async (task) => {
        const settled = await outcome;
        if ('error' in settled) throw settled.error;
        task.note(settled.done);
        return null;
      });
    }
  }

  private run(state: TaskState, work: (task: TaskHandle) => Promise<unknown>): void {
    const abort = new AbortController();
    const live: Live = { state, abort, done: Promise.resolve(), announcedPercent: state.percent, announcedAt: Date.now(), trailing: null, phase: null };
    const handle: TaskHandle = {
      id: state.id,
      signal: abort.signal,
      progress: (percent, phase, bytes) => this.progress(live, percent, phase, bytes),
      note: (line) => this.appendLog(state, line),
    };
    this.running.set(state.id, live);
    // Announced before the work begins, so that its first reports come after.
    this.emit('progress', state);
    live.done = (async () => {
      try {
        state.result = (await work(handle)) ?? null;
        state.percent = 100;
        this.closePhase(live);
        this.appendLog(state, 'completed');
      } catch (e) {
        const error = abort.signal.aborted ? new ApiError('VM_E_TASK_CANCELLED', `${state.description} was cancelled`) : toApiError(e);
        state.error = { name: error.errorName, message: error.message };
        this.appendLog(state, `failed: ${error.message}`);
      }
      if (live.trailing) clearTimeout(live.trailing);
      state.finished = new Date().toISOString();
      this.running.delete(state.id);
      this.save(state);
      this.emit('progress', state);
      this.prune();
    })();
  }

  /** Percent never goes back; an announcement waits for the interval, the latest value is announced then. */
  private progress(live: Live, percent: number, phase?: string, bytes?: number): void {
    const { state } = live;
    if (phase !== undefined && phase !== live.phase?.name) {
      this.closePhase(live);
      live.phase = { name: phase, since: Date.now(), bytes: 0 };
      this.appendLog(state, phase);
    }
    // Work without phases is one phase, from the task's start.
    live.phase ??= { name: '', since: Date.parse(state.started), bytes: 0 };
    if (bytes !== undefined) live.phase.bytes = bytes;
    const whole = Math.max(0, Math.min(99, Math.floor(percent)));
    if (whole <= state.percent || state.finished) return;
    state.percent = whole;
    const wait = live.announcedAt + PROGRESS_INTERVAL_MS - Date.now();
    if (wait <= 0) this.announce(live);
    else live.trailing ??= setTimeout(() => this.announce(live), wait);
  }

  private announce(live: Live): void {
    live.trailing = null;
    if (live.state.finished || live.state.percent === live.announcedPercent) return;
    live.announcedPercent = live.state.percent;
    live.announcedAt = Date.now();
    this.emit('progress', live.state);
  }

  /** Logs the phase's rate as it ends ("saving memory: 130.0 MB in 2.1 s, 61.9 MB/s"), when it reported its bytes. */
  private closePhase(live: Live): void {
    const phase = live.phase;
    if (!phase?.bytes) return;
    const seconds = Math.max(0.001, (Date.now() - phase.since) / 1000);
    const rate = `${(phase.bytes / MB).toFixed(1)} MB in ${seconds.toFixed(1)} s, ${(phase.bytes / MB / seconds).toFixed(1)} MB/s`;
    this.appendLog(live.state, phase.name ? `${phase.name}: ${rate}` : rate);
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
    return finishesWithin(live.done, timeoutMs);
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
    prepared(this.db, `INSERT INTO tasks (id, description, object, owner, kind, cancelable, started, finished, percent, result, error, log)
      VALUES (@id, @description, @object, @owner, @kind, @cancelable, @started, NULL, 0, NULL, NULL, @log)`)
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
    id: row.id, description: row.description, object: row.object, owner: row.owner, kind: row.kind, cancelable: row.cancelable === 1, started: row.started,
    finished: row.finished, percent: row.percent, result: row.result ? JSON.parse(row.result) as unknown : null,
    error: row.error ? JSON.parse(row.error) as TaskState['error'] : null, log: JSON.parse(row.log) as string[],
  };
}
