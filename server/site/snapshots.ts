// A VM's Snapshots page (/vms/<id>/snapshots): the snapshot tree with each snapshot's time,
// memory, consistency and description, which one the VM goes on from; Create (a task whose page
// follows it), Revert (after a page that says the current state is lost, then confirm=true),
// Delete (a task) and the description's edit. Every change is an API call as the signed-in user;
// a refusal comes back beside the field it concerns, what was typed kept.

import type { Response, Router } from 'express';
import { fieldOf } from '../api/fields.js';
import { type FieldErrors, type SiteContext, type SiteRequest, api, can, refusalStatus, refuseFor, refusePage } from './context.js';
import { type Form, Refusal, answerDone, beside, problem, refusalErrors, refuseForm, text } from './forms.js';
import { answerTask } from './tasks.js';
import { type VmView, vmForPage } from './vm-configure.js';

interface Ref { $ref: string }

interface TreeEntry { snapshot: Ref; name: string; parent: Ref | null; depth: number; current: boolean; created: string }

export interface SnapshotView {
  ref: string;
  /** The snapshot's own id, the last part of its reference. */
  id: string;
  name: string;
  description: string;
  created: string;
  depth: number;
  current: boolean;
  includesMemory: boolean;
  memoryMethod: string | null;
  consistency: string;
}

const FIELDS = {
  name: fieldOf('VirtualMachine.CreateSnapshot', 'name'),
  description: fieldOf('VirtualMachine.CreateSnapshot', 'description'),
};

/** The notices a change leaves on the page. */
const NOTICES: Record<string, string> = {
  description: 'The description was saved.',
};

async function readSnapshots(ctx: SiteContext, req: SiteRequest, vmId: string): Promise<SnapshotView[]> {
  const tree = await api<TreeEntry[]>(ctx, req, 'VirtualMachine.get_Snapshots', { this: `VirtualMachine/${vmId}` });
  return Promise.all(tree.map(async (entry) => {
    const get = <T>(member: string): Promise<T> => api<T>(ctx, req, `Snapshot.${member}`, { this: entry.snapshot.$ref });
    return {
      ref: entry.snapshot.$ref,
      id: entry.snapshot.$ref.split('/').at(-1)!,
      name: entry.name,
      description: await get<string>('get_Description'),
      created: entry.created,
      depth: entry.depth,
      current: entry.current,
      includesMemory: await get<boolean>('get_IncludesMemory'),
      memoryMethod: await get<string | null>('get_MemoryMethod'),
      consistency: await get<string>('get_Consistency'),
    };
  }));
}

interface PageOptions { status?: number; errors?: FieldErrors; form?: Form; saved?: string }

async function renderSnapshots(ctx: SiteContext, req: SiteRequest, res: Response, id: string, options: PageOptions = {}): Promise<void> {
  const vm = await vmForPage(ctx, req, res, id);
  if (!vm) return;
  let snapshots: SnapshotView[];
  try {
    snapshots = await readSnapshots(ctx, req, vm.id);
  } catch (error) {
    return refuseFor(req, res, error);
  }
  const self = `VirtualMachine/${vm.id}`;
  res.status(options.status ?? 200).render('snapshots/list', {
    title: `Snapshots of ${vm.name}`, vm, snapshots, fields: FIELDS,
    errors: options.errors ?? {}, form: options.form ?? {},
    saved: options.saved && Object.hasOwn(NOTICES, options.saved) ? NOTICES[options.saved] : null,
    canChange: can(ctx, req, 'change', self), canControl: can(ctx, req, 'control', self),
  });
}

/** The snapshot a form or page names, which must be one of the VM's. */
async function snapshotOf(ctx: SiteContext, req: SiteRequest, vm: VmView, id: string): Promise<SnapshotView> {
  const found = (await readSnapshots(ctx, req, vm.id)).find((s) => s.id === id);
  if (!found) throw problem('snapshots-list', `${vm.name} has no snapshot ${id}`);
  return found;
}

async function renderRevert(ctx: SiteContext, req: SiteRequest, res: Response, vmId: string, snapshotId: string, status = 200, errors: FieldErrors = {}): Promise<void> {
  const vm = await vmForPage(ctx, req, res, vmId);
  if (!vm) return;
  let snapshot: SnapshotView;
  try {
    snapshot = await snapshotOf(ctx, req, vm, snapshotId);
  } catch (error) {
    return refusePage(req, res, 404, error instanceof Error ? error.message : String(error));
  }
  res.status(status).render('snapshots/revert', { title: `Revert ${vm.name} to ${snapshot.name}`, vm, snapshot, errors, canControl: can(ctx, req, 'control', `VirtualMachine/${vm.id}`) });
}

/** Answers a refused form: the refusal page for a missing right or VM, else `render` again with the messages. */
function answerRefused(req: SiteRequest, res: Response, error: unknown, render: (status: number, errors: FieldErrors) => Promise<void>): Promise<void> | void {
  const reason = error instanceof Refusal ? error.reason : error;
  const status = refusalStatus(reason, 'form');
  const errors = error instanceof Refusal ? refusalErrors(reason, error.field, error.params) : refusalErrors(reason);
  if (status === 403 || (status === 404 && !(error instanceof Refusal))) return refusePage(req, res, status, Object.values(errors).join('; '));
  return refuseForm(req, res, status, errors, () => render(status, errors));
}

export function snapshotRoutes(router: Router, ctx: SiteContext): void {
  const pageOf = (id: string): string => `/vms/${id}/snapshots`;

  router.get('/vms/:id/snapshots', async (req: SiteRequest, res: Response) => {
    const saved = typeof req.query.saved === 'string' ? req.query.saved : undefined;
    await renderSnapshots(ctx, req, res, String(req.params.id), { saved });
  });

  router.post('/vms/:id/snapshots/create', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    const form = req.body as Form;
    try {
      const name = text(form['snapshot-name']);
      if (!name) throw problem('snapshot-name', 'a snapshot needs a name');
      const description = typeof form['snapshot-description'] === 'string' ? form['snapshot-description'] : '';
      const params = { name, ...(description ? { description } : {}), includeMemory: form['snapshot-memory'] === 'on' };
      // A clashing or bad name is the name's; the VM's state (saved, undo disks) is the form's.
      const field = (e: { errorName: string }): string => (['VM_E_SNAPSHOT_NAME_TAKEN', 'VM_E_INVALID_PARAMS'].includes(e.errorName) ? 'snapshot-name' : 'snapshot-create');
      const task = await beside(field, api<Ref>(ctx, req, 'VirtualMachine.CreateSnapshot', { this: `VirtualMachine/${id}`, ...params }),
        { name: 'snapshot-name', description: 'snapshot-description', includeMemory: 'snapshot-memory' });
      answerTask(req, res, task, pageOf(id));
    } catch (error) {
      await answerRefused(req, res, error, (status, errors) => renderSnapshots(ctx, req, res, id, { status, errors, form }));
    }
  });

  router.post('/vms/:id/snapshots/:snapshot/description', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    const snapshotId = String(req.params.snapshot);
    const form = req.body as Form;
    const field = `description-${snapshotId}`;
    try {
      const value = typeof form.description === 'string' ? form.description : '';
      await beside(field, api(ctx, req, 'Snapshot.put_Description', { this: `Snapshot/${id}/${snapshotId}`, value }), { value: field });
      answerDone(req, res, `${pageOf(id)}?saved=description#snapshot-${snapshotId}`);
    } catch (error) {
      await answerRefused(req, res, error, (status, errors) => renderSnapshots(ctx, req, res, id, { status, errors, form: { [field]: form.description } }));
    }
  });

  router.get('/vms/:id/snapshots/:snapshot/revert', (req: SiteRequest, res: Response) => renderRevert(ctx, req, res, String(req.params.id), String(req.params.snapshot)));

  router.post('/vms/:id/snapshots/:snapshot/revert', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    const snapshotId = String(req.params.snapshot);
    const form = req.body as Form;
    try {
      // Only the confirmation page's button sends confirm=true; anything else is the API's to refuse.
      const task = await beside('revert', api<Ref>(ctx, req, 'Snapshot.Revert', { this: `Snapshot/${id}/${snapshotId}`, confirm: form.confirm === 'true' }));
      answerTask(req, res, task, pageOf(id));
    } catch (error) {
      await answerRefused(req, res, error, (status, errors) => renderRevert(ctx, req, res, id, snapshotId, status, errors));
    }
  });

  router.post('/vms/:id/snapshots/:snapshot/delete', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    const snapshotId = String(req.params.snapshot);
    try {
      const task = await beside('snapshots-list', api<Ref>(ctx, req, 'Snapshot.Delete', { this: `Snapshot/${id}/${snapshotId}` }));
      answerTask(req, res, task, pageOf(id));
    } catch (error) {
      await answerRefused(req, res, error, (status, errors) => renderSnapshots(ctx, req, res, id, { status, errors }));
    }
  });
}
