// Master Status: every VM the caller may see, with a thumbnail of its screen, its state, uptime
// and CPU use, and the actions its state allows. static/site.js keeps the rows live: it re-reads
// a row (GET /status/rows/ID) when the VM's state changes and, while the VM runs, every few
// seconds, which also refreshes the thumbnail.

import type { Response, Router } from 'express';
import { SCHEMA } from '../api/schema.js';
import { type SiteContext, type SiteRequest, api, backTo, can, readEach, refuseFor, refusalMessage, refusalStatus, refusePage } from './context.js';
import { CpuUsage } from './cpu-usage.js';
import { type VmState, isActive, isLive } from '../../vmm/state.js';
import { answerDone } from './forms.js';

interface Action { action: string; label: string; method: string; self: (id: string) => string; danger?: boolean }

/** Power actions, Virtual Server's names, and the API member each one calls. */
const POWER: Record<string, Action> = {
  turnOn: { action: 'turnOn', label: 'Turn On', method: 'VirtualMachine.Startup', self: (id) => `VirtualMachine/${id}` },
  restore: { action: 'restore', label: 'Restore', method: 'VirtualMachine.Startup', self: (id) => `VirtualMachine/${id}` },
  save: { action: 'save', label: 'Save State', method: 'VirtualMachine.Save', self: (id) => `VirtualMachine/${id}` },
  shutdown: { action: 'shutdown', label: 'Shut Down Guest OS', method: 'GuestOS.Shutdown', self: (id) => `GuestOS/${id}` },
  turnOff: { action: 'turnOff', label: 'Turn Off', method: 'VirtualMachine.TurnOff', self: (id) => `VirtualMachine/${id}`, danger: true },
  pause: { action: 'pause', label: 'Pause', method: 'VirtualMachine.Pause', self: (id) => `VirtualMachine/${id}` },
  resume: { action: 'resume', label: 'Resume', method: 'VirtualMachine.Resume', self: (id) => `VirtualMachine/${id}` },
  reset: { action: 'reset', label: 'Reset', method: 'VirtualMachine.Reset', self: (id) => `VirtualMachine/${id}`, danger: true },
  discard: { action: 'discard', label: 'Discard Saved State', method: 'VirtualMachine.DiscardSavedState', self: (id) => `VirtualMachine/${id}`, danger: true },
};

/** What each state allows, in Virtual Server's order. */
const ACTIONS_BY_STATE: Record<string, string[]> = {
  TurnedOff: ['turnOn'],
  Saved: ['restore', 'discard'],
  Running: ['save', 'shutdown', 'turnOff', 'pause', 'reset'],
  Paused: ['resume', 'save', 'turnOff'],
};

export interface VmRow {
  id: string;
  name: string;
  state: string;
  uptime: number | null;
  cpu: number | null;
  crash: string | null;
  engine: string | null;
  /** Power actions the state allows and the caller may take. */
  actions: Action[];
  canRemoteControl: boolean;
  canConfigure: boolean;
  live: boolean;
  /** An undoable VM's Turn Off asks what becomes of its undo disks (a page of its own). */
  undoable: boolean;
}

const cpu = new CpuUsage();

export async function vmRow(ctx: SiteContext, req: SiteRequest, id: string): Promise<VmRow> {
  const self = `VirtualMachine/${id}`;
  const state = await api<VmState>(ctx, req, 'VirtualMachine.get_State', { this: self });
  const live = isLive(state);
  const status = ctx.services.machines.status(id);
  const control = can(ctx, req, 'control', self);
  // A VM running on another host of the cluster: its console is on that host's site.
  const here = ctx.services.machines.get(id);
  const runsHere = here !== null && isActive(ctx.services.machines.state(here));
  return {
    id,
    name: await api<string>(ctx, req, 'VirtualMachine.get_Name', { this: self }),
    state,
    uptime: live ? await api<number | null>(ctx, req, 'VirtualMachine.get_Uptime', { this: self }) : null,
    cpu: live && status?.qemuPid ? cpu.percent(status.qemuPid) : null,
    crash: (await api<{ reason: string } | null>(ctx, req, 'VirtualMachine.get_LastCrash', { this: self }))?.reason ?? null,
    engine: status?.engine ?? null,
    actions: control ? (ACTIONS_BY_STATE[state] ?? []).map((a) => POWER[a]) : [],
    canRemoteControl: control && live && runsHere,
    canConfigure: can(ctx, req, 'change', self),
    live,
    undoable: await api<boolean>(ctx, req, 'VirtualMachine.get_Undoable', { this: self }),
  };
}

export function formatUptime(seconds: number | null): string {
  if (seconds === null) return '';
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return d ? `${d}d ${h}h ${m}m` : h ? `${h}h ${m}m` : `${m}m ${s}s`;
}

export function masterStatusRoutes(router: Router, ctx: SiteContext): void {
  router.get('/', async (req: SiteRequest, res: Response) => {
    const refs = await api<{ $ref: string }[]>(ctx, req, 'VirtualServer.get_VirtualMachines');
    const read = await readEach(refs, (r) => vmRow(ctx, req, r.$ref.slice('VirtualMachine/'.length)));
    res.render('master-status', { title: 'Master Status', rows: read.values, unreadable: read.refusals, formatUptime, thumbnailSeconds: ctx.thumbnailSeconds, canCreate: can(ctx, req, 'change', 'VirtualServer') });
  });

  router.get('/status/rows/:id', async (req: SiteRequest, res: Response) => {
    try {
      const row = await vmRow(ctx, req, String(req.params.id));
      res.render('partials/vm-row', { vm: row, formatUptime, csrf: res.locals.csrf });
    } catch (error) {
      refuseFor(req, res, error);
    }
  });

  router.get('/vms/:id/thumbnail', async (req: SiteRequest, res: Response) => {
    try {
      const shot = await api<{ data: string } | null>(ctx, req, 'Display.get_Thumbnail', { this: `Display/${String(req.params.id)}` });
      if (!shot) return res.status(204).end();
      res.type('image/png').send(Buffer.from(shot.data, 'base64'));
    } catch (error) {
      res.status(refusalStatus(error)).type('text/plain').send(`${refusalMessage(error)}\n`);
    }
  });

  router.post('/vms/:id/power', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    const body = req.body as Record<string, unknown>;
    const action = typeof body.action === 'string' && Object.hasOwn(POWER, body.action) ? POWER[body.action] : null;
    if (!action) return refusePage(req, res, 400, `unknown action "${String(body.action)}"; one of ${Object.keys(POWER).join(', ')}`);
    try {
      const result = await api<{ $ref: string } | null>(ctx, req, action.method, { this: action.self(id) });
      const task = SCHEMA[action.method.split('.')[0]].members[action.method.split('.')[1]].task ? result?.$ref.slice('Task/'.length) : null;
      answerDone(req, res, backTo(body.back, '/'), { task });
    } catch (error) {
      refuseFor(req, res, error, action.label);
    }
  });
}
