// The Cluster section (/cluster): every host with its state, address, free memory and VMs, the
// leader, Maintenance on and off per host, and the failover history with each timeline
// (detected, fenced, started, running). Only on a vserverd with cluster settings; every read and
// change is an API call as the signed-in user.

import type { Response, Router } from 'express';
import type { HostState } from '../cluster/model.js';
import { type SiteContext, type SiteRequest, api, can, refusePage, refuseFor } from './context.js';

interface Ref { $ref: string }
interface HostRow { host: Ref; name: string; address: string; state: HostState; memoryAvailableMB: number; virtualMachines: Ref[]; local: boolean }
interface FailoverRow {
  id: string; vm: Ref; vmName: string; from: string; to: string | null; reason: string;
  detected: string; fenced: string | null; started: string | null; running: string | null; seconds: number | null; error: string | null;
}

/** Seconds from the detection to a later step of a failover, for its timeline. */
function after(detected: string, at: string | null): string {
  return at === null ? '–' : `+${((Date.parse(at) - Date.parse(detected)) / 1000).toFixed(1)} s`;
}

/** The notice a Maintenance change leaves: only for a host of the list, so that a link cannot make the page say anything else. */
function noticeOf(req: SiteRequest, hosts: HostRow[]): string | null {
  const host = hosts.find((h) => h.name === req.query.host);
  if (!host) return null;
  if (req.query.saved === 'maintenance-on') return `${host.name} is in Maintenance: no VM is placed on it until it leaves.`;
  if (req.query.saved === 'maintenance-off') return `${host.name} left Maintenance: it takes VMs again.`;
  return null;
}

export function clusterRoutes(router: Router, ctx: SiteContext): void {
  router.get('/cluster', async (req: SiteRequest, res: Response) => {
    const cluster = ctx.services.cluster;
    if (!cluster) return refusePage(req, res, 404, 'this vserverd runs alone: it was started without cluster settings (docs/cluster.md)');
    try {
      const self = `Cluster/${cluster.name}`;
      const [hosts, leader, history] = await Promise.all([
        api<HostRow[]>(ctx, req, 'Cluster.get_Hosts', { this: self }),
        api<Ref | null>(ctx, req, 'Cluster.get_Leader', { this: self }),
        api<FailoverRow[]>(ctx, req, 'Cluster.get_FailoverHistory', { this: self }),
      ]);
      const names = new Map(ctx.services.machines.list().map((vm) => [`VirtualMachine/${vm.id}`, vm.name]));
      res.render('cluster/status', {
        title: `Cluster ${cluster.name}`, cluster: cluster.name, hosts, leader: leader?.$ref.split('/').at(-1) ?? null,
        // Newest first: the one just seen is the one wanted.
        history: [...history].reverse(), vmName: (r: Ref) => names.get(r.$ref) ?? r.$ref.split('/').at(-1),
        canChange: can(ctx, req, 'change', 'VirtualServer'), after,
        saved: noticeOf(req, hosts),
      });
    } catch (error) {
      refuseFor(req, res, error);
    }
  });

  router.post('/cluster/hosts/:name/maintenance', async (req: SiteRequest, res: Response) => {
    const body = req.body as Record<string, unknown>;
    const enter = body.maintenance === 'on';
    try {
      await api(ctx, req, enter ? 'Host.EnterMaintenance' : 'Host.ExitMaintenance', { this: `Host/${req.params.name}` });
      res.redirect(303, `/cluster?saved=${enter ? 'maintenance-on' : 'maintenance-off'}&host=${encodeURIComponent(String(req.params.name))}`);
    } catch (error) {
      refuseFor(req, res, error);
    }
  });
}
