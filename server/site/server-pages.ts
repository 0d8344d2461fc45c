// The Virtual Server section of the site: Server Properties (the host, the engine VMs run on and
// why, the storage roots, the profile's limits) and Website Properties (the site's own settings),
// both read-only; the Event Viewer (events-page.ts) and Users and Permissions (users-page.ts).

import type { AddressInfo, Server } from 'node:net';
import type { Response, Router } from 'express';
import { type SiteContext, type SiteRequest, api, refuseFor } from './context.js';
import { eventRoutes, formatTime } from './events-page.js';
import { formatUptime } from './master-status.js';
import { userRoutes } from './users-page.js';

interface HostInfo {
  hostName: string; logicalProcessors: number; memoryMB: number; memoryAvailableMB: number;
  operatingSystem: string; engine: string; engineReason: string; qemuVersion: string;
}

/** The profile's limits, as Virtual Server's Server Properties listed them, and the member each comes from. */
const LIMITS = [
  ['Memory per VM, most', 'get_MaximumMemoryPerVM', 'MB'],
  ['Memory per VM, least', 'get_MinimumMemoryPerVM', 'MB'],
  ['Processors per VM', 'get_MaximumNumberOfProcessorsPerVM', ''],
  ['Network adapters per VM', 'get_MaximumNetworkAdaptersPerVM', ''],
  ['IDE channels per VM', 'get_MaximumNumberOfIDEBuses', '(two devices each)'],
  ['SCSI adapters per VM', 'get_MaximumNumberOfSCSIControllers', '(seven disks each)'],
  ['Serial ports per VM', 'get_MaximumSerialPortsPerVM', ''],
  ['Parallel ports per VM', 'get_MaximumParallelPortsPerVM', ''],
  ['Floppy drives per VM', 'get_MaximumFloppyDrivesPerVM', ''],
] as const;

export function serverRoutes(router: Router, ctx: SiteContext): void {
  router.get('/server', async (req: SiteRequest, res: Response) => {
    try {
      const read = <T>(member: string): Promise<T> => api<T>(ctx, req, `VirtualServer.${member}`);
      const [host, version, uptime, roots] = await Promise.all([read<HostInfo>('get_HostInfo'), read<string>('get_Version'), read<number>('get_UpTime'), read<string[]>('get_StorageRoots')]);
      const limits = await Promise.all(LIMITS.map(async ([label, member, unit]) => ({ label, value: await read<number>(member), unit })));
      res.render('server/properties', { title: 'Server Properties', host, version, uptime: formatUptime(uptime), roots, limits });
    } catch (error) {
      refuseFor(req, res, error);
    }
  });

  router.get('/website', (req: SiteRequest, res: Response) => {
    res.render('server/website', {
      title: 'Website Properties',
      sessionTimeoutMinutes: ctx.sessionTimeoutMinutes,
      thumbnailSeconds: ctx.thumbnailSeconds,
      allowedOrigins: ctx.allowedOrigins,
      listening: listeningOn(req),
      sessionExpires: new Date(req.caller!.session!.expires),
      formatTime,
    });
  });

  eventRoutes(router, ctx);
  userRoutes(router, ctx);
}

/** The address vserverd's HTTP server listens on (the one this request came in by). */
function listeningOn(req: SiteRequest): string {
  // node:net sets .server on the sockets a server accepts; it is not in the typings.
  const address = (req.socket as { server?: Server }).server?.address() as AddressInfo | null | undefined;
  const host = address?.address ?? req.socket.localAddress ?? '';
  const port = address?.port ?? req.socket.localPort;
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}
