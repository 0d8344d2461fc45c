// The site's side of undo disks that is not a Configure form (those are in vm-configure.ts):
// Turn Off with the choice Virtual Server's site offered for an undoable VM (keep, commit or
// discard its undo disks; the VM's UndoAction proposed), passed to TurnOff as undoAction; and
// Merge undo disks, a task whose page follows it.

import type { Response, Router } from 'express';
import { type SiteContext, type SiteRequest, api, backTo, can, refusalStatus, refusePage } from './context.js';
import { type Form, Refusal, beside, problem, refusalErrors, refuseForm, text } from './forms.js';
import { answerTask } from './tasks.js';
import { CHOICES, renderConfigure, vmForPage } from './vm-configure.js';

interface Ref { $ref: string }

/** What each choice does, in the words of the Turn Off page. */
const UNDO_CHOICES: Record<string, string> = {
  Keep: 'Keep the undo disks: the next turn on goes on from them, and the hard disks stay as they are',
  Commit: 'Commit the undo disks: their changes are written into the hard disks, then they are deleted',
  Discard: 'Discard the undo disks: every change since the VM was turned on with them is lost',
};

interface TurnOffOptions { status?: number; errors?: Record<string, string>; form?: Form }

async function renderTurnOff(ctx: SiteContext, req: SiteRequest, res: Response, id: string, options: TurnOffOptions = {}): Promise<void> {
  const vm = await vmForPage(ctx, req, res, id);
  if (!vm) return;
  const back = backTo((options.form?.back ?? req.query.back), '/');
  res.status(options.status ?? 200).render('vms/turn-off', {
    title: `Turn off ${vm.name}`, vm, back, errors: options.errors ?? {}, form: options.form ?? {},
    choices: CHOICES.undoActions.map((a) => ({ value: a, label: UNDO_CHOICES[a] ?? a })),
    canControl: can(ctx, req, 'control', `VirtualMachine/${vm.id}`),
  });
}

/** A refused form of these: the refusal page for a missing right or VM, else `render` with the messages. */
function answerRefused(req: SiteRequest, res: Response, error: unknown, field: string, render: (status: number, errors: Record<string, string>) => Promise<void>): Promise<void> | void {
  const reason = error instanceof Refusal ? error.reason : error;
  const status = refusalStatus(reason);
  const errors = refusalErrors(reason, error instanceof Refusal ? error.field : field, { undoAction: 'undo-action' });
  if (status === 403 || status === 404) return refusePage(req, res, status, Object.values(errors).join('; '));
  return refuseForm(req, res, status, errors, () => render(status, errors));
}

export function undoDiskRoutes(router: Router, ctx: SiteContext): void {
  router.get('/vms/:id/turn-off', (req: SiteRequest, res: Response) => renderTurnOff(ctx, req, res, String(req.params.id)));

  router.post('/vms/:id/turn-off', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    const form = req.body as Form;
    try {
      const self = `VirtualMachine/${id}`;
      const undoable = await api<boolean>(ctx, req, 'VirtualMachine.get_Undoable', { this: self });
      const choice = text(form['undo-action']);
      if (undoable && !CHOICES.undoActions.includes(choice)) throw problem('undo-action', `choose what becomes of the undo disks: ${CHOICES.undoActions.join(', ')}`);
      const task = await beside('turn-off', api<Ref>(ctx, req, 'VirtualMachine.TurnOff', { this: self, ...(undoable ? { undoAction: choice } : {}) }));
      answerTask(req, res, task, backTo(form.back, '/'));
    } catch (error) {
      await answerRefused(req, res, error, 'turn-off', (status, errors) => renderTurnOff(ctx, req, res, id, { status, errors, form }));
    }
  });

  router.post('/vms/:id/undo/merge', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    try {
      const task = await beside('undo-disks', api<Ref>(ctx, req, 'VirtualMachine.MergeUndoDisks', { this: `VirtualMachine/${id}` }));
      answerTask(req, res, task, `/vms/${id}#section-disks`);
    } catch (error) {
      await answerRefused(req, res, error, 'undo-disks', (status, errors) => renderConfigure(ctx, req, res, id, { status, errors }));
    }
  });
}
