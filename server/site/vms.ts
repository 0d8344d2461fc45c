// The Virtual Machines pages: the list to configure, Create, Add (register a .vmc), Configure
// (vm-configure.ts: one form per part of the VM) and Remove. Every change is made by API calls
// as the signed-in user; a refusal shows the page again with the API's message beside the field
// it concerns and the entered values kept. The declared limits are shown as hints, never as
// HTML min/max, so that the server is the one that says no (memory in the site's words, checked
// against put_Memory's declared limits before the API is asked).

import path from 'node:path';
import type { Response, Router } from 'express';
import { hardDisks, type VmConfig } from '../../vmm/config.js';
import { PROFILE } from '../../vmm/profile.js';
import { knownErrorName } from '../error-catalogue.js';
import { ApiError, toApiError } from '../errors.js';
import { SERVER_REF } from '../api/objects.js';
import { type FieldErrors, type SiteContext, type SiteRequest, api, can, errorName, readEach, refusalStatus, refusePage } from './context.js';
import { type Form, Refusal, answerDone, beside, problem, refusalErrors, refuseForm, text, wholeNumber } from './forms.js';
import { CHANGES, CHOICES, memoryOf, readVm, renderConfigure, vmForPage } from './vm-configure.js';

interface Ref { $ref: string }

/** Where a field of the configuration document is edited on these pages. */
const DOCUMENT_FIELDS: Record<string, string> = {
  name: 'name', memoryMB: 'memory', networkAdapters: 'nic-model', scsi: 'scsi-model', usb: 'usb', com2: 'com2', lpt1: 'lpt1',
};

/** A refusal's status: a Refusal is of what the form named, anything else of the page's own VM. */
function statusOf(error: unknown): number {
  return error instanceof Refusal ? refusalStatus(error.reason, 'form') : refusalStatus(error);
}

/** A refusal as messages by form field: the API's own field when it names one, else the step's. */
function errorsOf(error: unknown): FieldErrors {
  if (error instanceof Refusal) return refusalErrors(error.reason, error.field, { ...DOCUMENT_FIELDS, ...error.params });
  return refusalErrors(error, '_form', DOCUMENT_FIELDS);
}

/**
 * Answers a refused form: a missing right or a missing VM with the refusal page; otherwise the
 * page again with the messages (`render`), or JSON for the site's scripts.
 */
function answerRefusal(req: SiteRequest, res: Response, error: unknown, render: (status: number, errors: FieldErrors) => Promise<void> | void): Promise<void> | void {
  const status = statusOf(error);
  const errors = errorsOf(error);
  if (status === 403 || status === 404) return refusePage(req, res, status, Object.values(errors).join('; '));
  return refuseForm(req, res, status, errors, () => render(status, errors));
}

// --- Create and Add ---------------------------------------------------------------------------

/** Waits for a task the page started; its failure becomes the task's error. */
async function taskResult(ctx: SiteContext, req: SiteRequest, task: Ref): Promise<unknown> {
  const self = { this: task.$ref };
  if (!await api<boolean>(ctx, req, 'Task.WaitForCompletion', { ...self, timeoutMs: 60_000 })) {
    throw new ApiError('VM_E_TASK_TIMEOUT', `${await api<string>(ctx, req, 'Task.get_Description', self)} has not finished after a minute`);
  }
  const error = await api<{ name: string; message: string } | null>(ctx, req, 'Task.get_Error', self);
  if (error) throw new ApiError(knownErrorName(error.name), error.message);
  return api(ctx, req, 'Task.get_Result', self);
}

/**
 * Creates a VM from the Create form, step by step through the API. Whatever fails after the VM
 * exists deletes it again (its .vmc and folder); the new disk is made last, so that a refusal
 * leaves no disk file behind.
 */
async function createVm(ctx: SiteContext, req: SiteRequest, form: Form): Promise<string> {
  const memory = memoryOf(form);
  const disk = text(form.disk);
  if (!['none', 'new', 'existing'].includes(disk)) throw problem('disk', 'choose no disk, a new disk or an existing one');
  const sizeMB = disk === 'new' ? wholeNumber(form, 'disk-size', 'The size') : undefined;
  const existing = disk === 'existing' ? text(form['disk-path']) : undefined;
  if (existing === '') throw problem('disk-path', 'choose the .vhd file to attach');
  const bus = text(form['disk-bus']);
  if (disk !== 'none' && !['IDE', 'SCSI'].includes(bus)) throw problem('disk-bus', 'choose IDE 0:0 or SCSI 0:0');
  const nicModel = text(form['nic-model']);

  const vm = (await beside('name', api<Ref>(ctx, req, 'VirtualServer.CreateVirtualMachine', { name: text(form.name) }))).$ref;
  const call = <T>(method: string, params: Record<string, unknown> = {}): Promise<T> => api<T>(ctx, req, method, { this: vm, ...params });
  const attach = async (file: string, field: string): Promise<void> => {
    if (bus === 'SCSI') await beside(field, call('VirtualMachine.AddSCSIController'));
    await beside(field, call('VirtualMachine.AddHardDiskConnection', { path: file, busType: bus, busNumber: 0, deviceNumber: 0 }));
  };
  try {
    await beside('memory', call('VirtualMachine.put_Memory', { value: memory }));
    if (existing) await attach(existing, 'disk-path');
    if (nicModel && nicModel !== 'none') await beside('nic-model', call('VirtualMachine.AddNetworkAdapter', { model: nicModel }));
    if (sizeMB !== undefined) {
      const name = await call<string>('VirtualMachine.get_Name');
      const file = path.join(path.dirname(await call<string>('VirtualMachine.get_File')), `${name}.vhd`);
      const task = await beside('disk-size', api<Ref>(ctx, req, 'VirtualServer.CreateDynamicVirtualHardDisk', { path: file, sizeMB }));
      await beside('disk-size', taskResult(ctx, req, task));
      await attach(file, 'disk-size').catch((error: unknown) => {
        throw new Refusal('disk-size', new ApiError(errorName(error instanceof Refusal ? error.reason : error), `${(error as Error).message} (the new disk ${file} was kept)`));
      });
    }
  } catch (error) {
    await api(ctx, req, 'VirtualServer.DeleteVirtualMachine', { vm }).catch(() => undefined);
    throw error;
  }
  return vm.slice('VirtualMachine/'.length);
}

function mayCreate(ctx: SiteContext, req: SiteRequest, res: Response, what: string): boolean {
  if (can(ctx, req, 'change', SERVER_REF)) return true;
  refusePage(req, res, 403, `${what} needs the change right on the server, which ${String(res.locals.user)} (${String(res.locals.role)}) does not have`);
  return false;
}

async function renderRemove(ctx: SiteContext, req: SiteRequest, res: Response, id: string, status = 200, errors: FieldErrors = {}): Promise<void> {
  const vm = await vmForPage(ctx, req, res, id);
  if (!vm) return;
  res.status(status).render('vms/remove', { title: `Remove ${vm.name}`, vm, errors, canDelete: can(ctx, req, 'delete', `VirtualMachine/${vm.id}`) });
}

// --- Routes -----------------------------------------------------------------------------------

export function vmRoutes(router: Router, ctx: SiteContext): void {
  router.get('/vms', async (req: SiteRequest, res: Response) => {
    const refs = await api<Ref[]>(ctx, req, 'VirtualServer.get_VirtualMachines');
    const read = await readEach(refs, async ({ $ref }) => {
      const config = await api<VmConfig>(ctx, req, 'VirtualMachine.get_Configuration', { this: $ref });
      const state = await api<string>(ctx, req, 'VirtualMachine.get_State', { this: $ref });
      return { id: config.id, name: config.name, state, memoryMB: config.memoryMB, disks: hardDisks(config).length, nics: config.networkAdapters.length };
    });
    res.render('vms/list', { title: 'Configure', rows: read.values, unreadable: read.refusals, canCreate: can(ctx, req, 'change', SERVER_REF) });
  });

  router.get('/vms/create', (req: SiteRequest, res: Response) => {
    if (!mayCreate(ctx, req, res, 'Creating a virtual machine')) return;
    res.render('vms/create', { title: 'Create Virtual Machine', errors: {}, form: { memory: String(PROFILE.memoryMB.default), disk: 'new', 'disk-size': String(CHOICES.defaultDiskMB), 'disk-bus': 'IDE', 'nic-model': PROFILE.networkAdapters.defaultModel }, ...CHOICES });
  });

  router.post('/vms/create', async (req: SiteRequest, res: Response) => {
    const form = req.body as Form;
    try {
      answerDone(req, res, `/vms/${await createVm(ctx, req, form)}`);
    } catch (error) {
      await answerRefusal(req, res, error, (status, errors) => res.status(status).render('vms/create', { title: 'Create Virtual Machine', errors, form, ...CHOICES }));
    }
  });

  router.get('/vms/add', (req: SiteRequest, res: Response) => {
    if (!mayCreate(ctx, req, res, 'Adding a virtual machine')) return;
    res.render('vms/add', { title: 'Add Virtual Machine', errors: {}, form: {} });
  });

  router.post('/vms/add', async (req: SiteRequest, res: Response) => {
    const form = req.body as Form;
    try {
      const file = text(form.path);
      if (!file) throw problem('path', 'choose the .vmc file of the virtual machine');
      const vm = await beside('path', api<Ref>(ctx, req, 'VirtualServer.RegisterVirtualMachine', { path: file }));
      answerDone(req, res, `/vms/${vm.$ref.slice('VirtualMachine/'.length)}`);
    } catch (error) {
      // A refused .vmc names the document's fields (memoryMB, ...): they are all the file's fault here.
      const reason = error instanceof Refusal ? error.reason : error;
      const whole = errorName(reason) === 'VM_E_CONFIG_INVALID' ? new Refusal('path', new ApiError('VM_E_CONFIG_INVALID', toApiError(reason).message)) : error;
      await answerRefusal(req, res, whole, (status, errors) => res.status(status).render('vms/add', { title: 'Add Virtual Machine', errors, form }));
    }
  });

  router.get('/vms/:id', async (req: SiteRequest, res: Response) => {
    const saved = typeof req.query.saved === 'string' ? req.query.saved : undefined;
    await renderConfigure(ctx, req, res, String(req.params.id), { saved });
  });

  for (const [action, change] of Object.entries(CHANGES)) {
    router.post(`/vms/:id/${action}`, async (req: SiteRequest, res: Response) => {
      const id = String(req.params.id);
      const form = req.body as Form;
      try {
        const vm = await readVm(ctx, req, id);
        const self = `VirtualMachine/${vm.id}`;
        const notice = await change.apply({ vm, call: (method, params = {}) => api(ctx, req, method, { this: self, ...params }) }, form);
        answerDone(req, res, `/vms/${vm.id}?saved=${notice ?? change.section}#section-${change.section}`);
      } catch (error) {
        await answerRefusal(req, res, error, (status, errors) => renderConfigure(ctx, req, res, id, { status, errors, form }));
      }
    });
  }

  router.get('/vms/:id/remove', (req: SiteRequest, res: Response) => renderRemove(ctx, req, res, String(req.params.id)));

  router.post('/vms/:id/remove', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    const form = req.body as Form;
    try {
      const how = text(form.how);
      if (how !== 'unregister' && how !== 'delete') throw problem('how', 'choose to keep the files or to delete the .vmc and saved state');
      await beside('how', api(ctx, req, how === 'delete' ? 'VirtualServer.DeleteVirtualMachine' : 'VirtualServer.UnregisterVirtualMachine', { vm: `VirtualMachine/${id}` }));
      answerDone(req, res, '/');
    } catch (error) {
      await answerRefusal(req, res, error, (status, errors) => renderRemove(ctx, req, res, id, status, errors));
    }
  });
}
