// Virtual networks of the same name on two hosts are one network to a VM that moves (issue 17):
// two vserverds, each in a network namespace of its own with its own host parts, each with its own
// network "Ext" (different ids), share a VM folder. A VM made on the first, with an adapter on its
// Ext and one on a network only the first has, is registered on the second from its .vmc, as a
// failover does, and turned on there (64 MB, no disk: QEMU's firmware is enough to hold its TAPs).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { tapName } from '../vmm/config.js';
import { finishTask, type Ref } from './helpers/api-guests.js';
import { Netns, removeLeftoverNamespaces } from './helpers/netns.js';
import { TestServer } from './helpers/server.js';
import { makeTempDir, removeDir } from './helpers/vhd-fixtures.js';

interface LoggedEvent { id: number; severity: string; message: string; object: string | null }

const LABELS = ['byname1', 'byname2'] as const;
const dir = makeTempDir('networks-by-name');
// QEMU's unprivileged user crosses it to the VM's folder and its run folder.
fs.chmodSync(dir, 0o711);
const shared = path.join(dir, 'shared');
const namespaces: Netns[] = [];
const servers: TestServer[] = [];
let vm: Ref | null = null;

async function host(label: (typeof LABELS)[number]): Promise<{ server: TestServer; ns: Netns }> {
  const ns = Netns.create(label);
  namespaces.push(ns);
  const dataDir = path.join(dir, `${label}-data`);
  const server = await TestServer.start({ netns: ns, dataDir, runDir: path.join(dir, `${label}-run`), args: ['--storage-root', dataDir, '--storage-root', shared] });
  servers.push(server);
  return { server, ns };
}

/** The bridge an interface of `ns` is a port of, or null. */
function masterOf(ns: Netns, link: string): string | null {
  const [info] = JSON.parse(ns.run('ip', ['-j', 'link', 'show', 'dev', link])) as Array<{ master?: string }>;
  return info.master ?? null;
}

before(() => {
  for (const label of LABELS) removeLeftoverNamespaces(label);
  fs.mkdirSync(shared, { mode: 0o777 });
});

after(async () => {
  const h2 = servers[1];
  if (vm && h2) await h2.call<Ref>('VirtualMachine.TurnOff', { this: vm.$ref }).then((t) => finishTask(h2, t, 30_000)).catch(() => {});
  for (const server of servers) await server.stop();
  for (const ns of namespaces) ns.remove();
  removeDir(dir);
});

describe('a VM registered from another host\'s .vmc finds its networks by name', { timeout: 300_000 }, () => {
  it('an adapter on h1\'s Ext is attached to h2\'s Ext and keeps its MAC; one on a network h2 lacks starts not connected, with a warning naming it and the host', async () => {
    const { server: h1 } = await host('byname1');
    const { server: h2, ns: ns2 } = await host('byname2');
    const ext1 = await h1.call<Ref>('VirtualServer.CreateVirtualNetwork', { name: 'Ext', kind: 'internal' });
    const lab1 = await h1.call<Ref>('VirtualServer.CreateVirtualNetwork', { name: 'Lab', kind: 'internal' });
    // Names match whatever their case, as they are unique on one host.
    const ext2 = await h2.call<Ref>('VirtualServer.CreateVirtualNetwork', { name: 'EXT', kind: 'internal' });
    assert.notEqual(ext1.$ref, ext2.$ref, 'each host made its own network');

    const made = await h1.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'mover', path: path.join(shared, 'mover') });
    await h1.call('VirtualMachine.put_Memory', { this: made.$ref, value: 64 });
    const onExt = await h1.call<Ref>('VirtualMachine.AddNetworkAdapter', { this: made.$ref, network: ext1.$ref });
    const onLab = await h1.call<Ref>('VirtualMachine.AddNetworkAdapter', { this: made.$ref, network: lab1.$ref });
    const macs = await Promise.all([onExt, onLab].map((a) => h1.call<string>('NetworkAdapter.get_EthernetAddress', { this: a.$ref })));
    const vmcPath = await h1.call<string>('VirtualMachine.get_File', { this: made.$ref });
    const written = JSON.parse(fs.readFileSync(vmcPath, 'utf8')) as { networkAdapters: Array<{ network: string | null; networkName: string | null }> };
    assert.deepEqual(written.networkAdapters.map((a) => a.networkName), ['Ext', 'Lab'], 'the .vmc keeps each network\'s name beside its id');

    const since = (await h2.call<LoggedEvent[]>('VirtualServer.GetEvents', { limit: 1, newestFirst: true }))[0]?.id ?? 0;
    vm = await h2.call<Ref>('VirtualServer.RegisterVirtualMachine', { path: vmcPath });
    assert.equal(vm.$ref, made.$ref, 'h2 registers the VM under the id of its .vmc');
    const nics = [onExt.$ref, onLab.$ref];
    assert.deepEqual(await h2.call('NetworkAdapter.get_VirtualNetwork', { this: nics[0] }), ext2, 'adapter 0 is on h2\'s Ext');
    assert.equal(await h2.call('NetworkAdapter.get_VirtualNetworkName', { this: nics[0] }), 'EXT');
    assert.equal(await h2.call('NetworkAdapter.get_VirtualNetwork', { this: nics[1] }), null, 'adapter 1 is not connected: h2 has no Lab');
    assert.equal(await h2.call('NetworkAdapter.get_VirtualNetworkName', { this: nics[1] }), 'Lab', 'it keeps the name of the network it awaits');
    assert.deepEqual(await Promise.all(nics.map((a) => h2.call<string>('NetworkAdapter.get_EthernetAddress', { this: a }))), macs, 'the MAC addresses go with the VM');

    await finishTask(h2, await h2.call<Ref>('VirtualMachine.Startup', { this: vm.$ref }), 60_000);
    const id = vm.$ref.slice('VirtualMachine/'.length);
    const ext2Bridge = `vsbr${ext2.$ref.slice('VirtualNetwork/'.length, 'VirtualNetwork/'.length + 8)}`;
    assert.equal(masterOf(ns2, tapName(id, 0)), ext2Bridge, 'adapter 0\'s TAP is a port of h2\'s Ext bridge');
    assert.equal(masterOf(ns2, tapName(id, 1)), null, 'adapter 1\'s TAP is on no bridge');
    const hostName = await h2.call<string>('VirtualServer.get_Name');
    const events = await h2.call<LoggedEvent[]>('VirtualServer.GetEvents', { since, limit: 1000 });
    const warnings = events.filter((e) => e.severity === 'Warning' && e.object === vm?.$ref);
    assert.ok(warnings.some((e) => /adapter 1 is turned on not connected/.test(e.message) && e.message.includes('Lab') && e.message.includes(`host ${hostName}`)),
      `a warning names the network and the host: ${JSON.stringify(warnings)}`);
  });
});
