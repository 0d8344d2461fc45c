// A host-connected network's host adapter joins the network's bridge. A port of a bridge no longer
// takes traffic for the host's own addresses, so they move with it: the bridge takes the adapter's
// MAC address, its IPv4 addresses and its routes, and gives them back when the adapter leaves.
// What moved is written in the network's state folder, so a new vserverd can give it back too.

import fs from 'node:fs';
import path from 'node:path';
import { mustRun } from './command.js';
import { addAddress, addresses, deleteAddress, link, setMaster, setUp } from './links.js';

const FILE = 'host-adapter.json';

interface Route { dst: string; gateway?: string; metric?: number; protocol?: string; scope?: string }

interface Moved { adapter: string; addresses: string[]; routes: Route[] }

async function routesOf(name: string): Promise<Route[]> {
  // The kernel's own routes (the subnets of the addresses) come and go with the addresses.
  return (JSON.parse(await mustRun('ip', ['-json', '-4', 'route', 'show', 'dev', name])) as Route[]).filter((r) => r.protocol !== 'kernel');
}

function routeArgs(route: Route, dev: string): string[] {
  return [route.dst, ...(route.gateway ? ['via', route.gateway] : []), 'dev', dev, ...(route.metric !== undefined ? ['metric', String(route.metric)] : [])];
}

async function move(moved: Moved, from: string, to: string): Promise<void> {
  for (const cidr of moved.addresses) {
    await deleteAddress(from, cidr).catch(() => undefined);
    await addAddress(to, cidr).catch(() => undefined); // there already (a second run)
  }
  for (const route of moved.routes) await mustRun('ip', ['-4', 'route', 'replace', ...routeArgs(route, to)]);
}

/** Makes `adapter` a port of `bridge`, moving its addresses and routes to the bridge. Whether it changed anything. */
export async function joinBridge(adapter: string, bridge: string, folder: string): Promise<boolean> {
  const info = await link(adapter);
  if (info?.master === bridge) return false;
  const moved: Moved = {
    adapter,
    addresses: (await addresses(adapter)).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
    routes: await routesOf(adapter),
  };
  await fs.promises.writeFile(path.join(folder, FILE), JSON.stringify(moved));
  if (info?.address) await mustRun('ip', ['link', 'set', 'dev', bridge, 'address', info.address]);
  await setMaster(adapter, bridge);
  await setUp(adapter, true);
  await move(moved, adapter, bridge);
  return true;
}

/** Takes `adapter` out of `bridge` and gives back what moved (when this folder says so). */
export async function leaveBridge(adapter: string, bridge: string, folder: string): Promise<void> {
  const file = path.join(folder, FILE);
  let moved: Moved | null = null;
  try {
    moved = JSON.parse(await fs.promises.readFile(file, 'utf8')) as Moved;
  } catch { /* nothing moved */ }
  const info = await link(adapter);
  if (info?.master === bridge) await setMaster(adapter, null);
  if (moved?.adapter === adapter && info) await move(moved, bridge, adapter);
  await fs.promises.rm(file, { force: true });
}
