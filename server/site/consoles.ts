// Remote Control: a VM's graphical console (noVNC) and serial console (xterm.js) in the page.
// The page (views/console.ejs, static/console.js) asks here for a one-time ticket for each
// console, by a CSRF-checked POST, and opens the console's WebSocket with it
// (server/http/console-proxy.ts). Only a caller with the control right on the VM gets one.

import type { Response, Router } from 'express';
import { type VmState, isLive } from '../../vmm/state.js';
import { CONSOLE_KINDS, type ConsoleKind, consoleTickets, holderOf } from '../http/console-tickets.js';
import { CONSOLE_POLICY } from '../http/content-policy.js';
import { type SiteContext, type SiteRequest, api, can, refuseFor, refusalMessage, refusalStatus } from './context.js';

/** The VM's name and state as the caller may read them. */
async function readVm(ctx: SiteContext, req: SiteRequest, id: string): Promise<{ name: string; state: VmState }> {
  const self = `VirtualMachine/${id}`;
  return {
    name: await api<string>(ctx, req, 'VirtualMachine.get_Name', { this: self }),
    state: await api<VmState>(ctx, req, 'VirtualMachine.get_State', { this: self }),
  };
}

export function consoleRoutes(router: Router, ctx: SiteContext): void {
  router.get('/vms/:id/console', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    let vm;
    try {
      vm = await readVm(ctx, req, id);
    } catch (error) {
      return refuseFor(req, res, error);
    }
    res.set('Content-Security-Policy', CONSOLE_POLICY);
    res.render('console', {
      title: `Remote Control: ${vm.name}`, vm: { id, ...vm },
      canControl: can(ctx, req, 'control', `VirtualMachine/${id}`), live: isLive(vm.state),
    });
  });

  // Always JSON: only the console's script asks for tickets.
  router.post('/vms/:id/console/ticket', async (req: SiteRequest, res: Response) => {
    const id = String(req.params.id);
    const refuse = (status: number, message: string): void => { res.status(status).json({ error: { message } }); };
    const kind = (req.body as Record<string, unknown>).kind;
    if (typeof kind !== 'string' || !(CONSOLE_KINDS as readonly string[]).includes(kind)) {
      return refuse(400, `"kind" must be one of ${CONSOLE_KINDS.join(', ')}`);
    }
    let vm;
    try {
      vm = await readVm(ctx, req, id);
    } catch (error) {
      return refuse(refusalStatus(error), refusalMessage(error));
    }
    const caller = req.caller!;
    if (!can(ctx, req, 'control', `VirtualMachine/${id}`)) {
      return refuse(403, `${caller.principal.user} (${caller.principal.role}) may not use the consoles of ${vm.name}: that needs the control right`);
    }
    if (!isLive(vm.state)) return refuse(409, `${vm.name} is ${vm.state}: its consoles are there only while it runs`);
    const issued = consoleTickets.issue({ user: caller.principal.user, holder: holderOf(caller)!, vmId: id, kind: kind as ConsoleKind });
    res.json({ ok: true, ...issued });
  });
}
