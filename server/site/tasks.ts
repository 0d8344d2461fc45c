// Task pages: one long operation (a disk being created, merged, converted...) with its progress
// bar, its status and its log, a link to what it made once done, and Cancel while it may be
// stopped. static/task.js keeps the page live from the API's Task.OnProgress events.
// Pages that start a task answer with answerTask: a redirect to the task's page, or JSON for the
// site's scripts.

import type { Response, Router } from 'express';
import { guardOf, SERVER_REF } from '../api/objects.js';
import { type SiteContext, type SiteRequest, api, backTo, can, refuseFor, wantsJson } from './context.js';
import { answerDone } from './forms.js';

interface Ref { $ref: string }

export interface TaskView {
  id: string;
  description: string;
  percent: number;
  complete: boolean;
  error: { name: string; message: string } | null;
  log: string[];
  started: string;
  /** The status line: "running 40%", "done" or "failed: why". */
  status: string;
  /** Where to go once the task is done (the disk it made, say), or null. */
  result: { href: string; label: string } | null;
  /** What the finished task's result says, when it says something in words. */
  outcome: string | null;
  cancelable: boolean;
}

/**
 * Answers a request that started a task: to its page, or `{ok, task, location}` for scripts.
 * `back` is the page the task was started from, which the task page links back to.
 */
export function answerTask(req: SiteRequest, res: Response, task: Ref, back?: string): void {
  const id = task.$ref.slice('Task/'.length);
  const location = `/tasks/${encodeURIComponent(id)}${back ? `?back=${encodeURIComponent(back)}` : ''}`;
  answerDone(req, res, location, { task: id, location });
}

/** The link back to the page a task was started from (a local path only), named after that page. */
function backLink(value: unknown): { href: string; label: string } | null {
  const href = backTo(value, '');
  if (!href) return null;
  const label = /^\/vms\/[^/]+\/snapshots\b/.test(href) ? 'Back to the snapshots' : /^\/vms\/[^/?#]+([?#]|$)/.test(href) ? 'Back to the configuration' : 'Back';
  return { href, label };
}

/** What a task's result says in words (TurnOff's and MergeUndoDisks' say what became of the undo disks), or null. */
function outcomeOf(result: unknown): string | null {
  if (typeof result === 'string') return result;
  if (!result || typeof result !== 'object' || '$ref' in result) return null;
  const words = Object.values(result).filter((v): v is string => typeof v === 'string');
  return words.length ? words.join('; ') : null;
}

/** The page that shows an object a task made or acted on. */
function linkTo(reference: string): { href: string; label: string } | null {
  if (reference.startsWith('HardDisk/')) {
    const file = reference.slice('HardDisk/'.length);
    return { href: `/disks/inspect?path=${encodeURIComponent(file)}`, label: `Inspect ${file}` };
  }
  if (reference.startsWith('VirtualMachine/')) return { href: '/', label: 'Back to Master Status' };
  if (reference.startsWith('Snapshot/')) {
    const vm = reference.split('/')[1];
    return { href: `/vms/${encodeURIComponent(vm)}/snapshots`, label: 'Show the snapshots' };
  }
  return null;
}

async function readTask(ctx: SiteContext, req: SiteRequest, id: string): Promise<TaskView> {
  const self = { this: `Task/${id}` };
  const read = <T>(member: string): Promise<T> => api<T>(ctx, req, `Task.${member}`, self);
  const complete = await read<boolean>('get_IsComplete');
  const percent = await read<number>('get_PercentCompleted');
  const error = await read<{ name: string; message: string } | null>('get_Error');
  const result = await read<unknown>('get_Result');
  const object = await read<string | null>('get_Object');
  // A result that is an object (the new disk) is where to go; otherwise the object acted on.
  const made = result && typeof result === 'object' && typeof (result as Ref).$ref === 'string' ? (result as Ref).$ref : object;
  return {
    id,
    description: await read<string>('get_Description'),
    percent,
    complete,
    error,
    log: await read<string[]>('get_Log'),
    started: await read<string>('get_Started'),
    status: error ? `failed: ${error.message}` : complete ? 'done' : `running ${percent}%`,
    result: complete && !error && made ? linkTo(made) : null,
    outcome: complete && !error ? outcomeOf(result) : null,
    // Task.Cancel needs "control" on what the task acts on.
    cancelable: await read<boolean>('get_IsCancelable') && can(ctx, req, 'control', guardOf(object ?? SERVER_REF)),
  };
}

export function taskRoutes(router: Router, ctx: SiteContext): void {
  router.get('/tasks/:id', async (req: SiteRequest, res: Response) => {
    let task: TaskView;
    try {
      task = await readTask(ctx, req, String(req.params.id));
    } catch (error) {
      return refuseFor(req, res, error);
    }
    // static/task.js reads the task again when an event may have been missed.
    if (wantsJson(req)) return res.json(task);
    res.render('tasks/task', { title: 'Task', task, back: backLink(req.query.back) });
  });

  router.post('/tasks/:id/cancel', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    try {
      await api(ctx, req, 'Task.Cancel', { this: `Task/${id}` });
    } catch (error) {
      return refuseFor(req, res, error, 'Cancel');
    }
    answerDone(req, res, `/tasks/${encodeURIComponent(id)}`, { task: id });
  });
}
