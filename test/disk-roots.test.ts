// Differencing chains, media and saved states must stay inside vserverd's storage roots. A child
// inside a root whose parent is outside it (by a relative "..\.." locator, by an absolute W2ku
// locator, or through a symlink inside the root) is refused by every member that would open it,
// with VM_E_PATH_OUTSIDE_ROOTS naming the link at fault, and nothing of the outside file (its
// unique id) reaches the caller. A VM whose files lead outside does not start.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createDifferencing, createDynamic, inspectDisk } from '../storage/vhd/index.js';
import { MiB, makeTempDir, removeDir } from './helpers/vhd-fixtures.js';
import { RpcError, TestServer, login, refusal } from './helpers/server.js';

const dir = makeTempDir('roots');
const root = path.join(dir, 'root');
const outside = path.join(dir, 'outside');
const base = path.join(outside, 'base.vhd');

let server: TestServer;
let viewer: string;
let baseId: string;

/** VM_E_PATH_OUTSIDE_ROOTS naming `link` (the file whose real path is outside), and no trace of the outside disk's unique id. */
function assertOutside(e: RpcError, link: string, what: string): void {
  assert.equal(e.data.name, 'VM_E_PATH_OUTSIDE_ROOTS', `${what}: ${e.message}`);
  assert.ok(e.message.includes(link), `${what}: "${e.message}" does not name ${link}`);
  assert.match(e.message, /outside the storage roots/);
  const whole = JSON.stringify({ message: e.message, data: e.data });
  assert.ok(!whole.toLowerCase().includes(baseId.toLowerCase()) && !whole.includes(baseId.replace(/-/g, '')), `${what} tells the outside disk's unique id: ${whole}`);
}

before(async () => {
  fs.mkdirSync(root);
  fs.mkdirSync(outside);
  await createDynamic(base, { size: 8 * MiB });
  baseId = inspectDisk(base).uniqueId;
  server = await TestServer.start({ args: ['--storage-root', root] });
  await server.call('VirtualServer.CreateUser', { name: 'viewer', password: 'viewer-password', role: 'Viewer' });
  viewer = await login(server.url, 'viewer', 'viewer-password');
});
after(async () => {
  await server?.stop();
  server?.remove();
  removeDir(dir);
});

/** Children inside the root whose parent is `base`, outside it, each reached by one kind of link. */
async function outsideChildren(): Promise<Array<{ how: string; child: string; link: string }>> {
  // Both locators (relative ..\..\outside\base.vhd first, then absolute) lead outside.
  const relative = path.join(root, 'relative', 'child.vhd');
  fs.mkdirSync(path.dirname(relative));
  await createDifferencing(relative, base);

  // Made three folders below `outside`, then moved three below the root: its relative locator
  // now names root/base.vhd (inside, missing), so only the absolute W2ku one finds the parent.
  const deep = path.join(outside, 'a', 'b', 'c', 'child.vhd');
  fs.mkdirSync(path.dirname(deep), { recursive: true });
  await createDifferencing(deep, base);
  const absolute = path.join(root, 'x', 'y', 'z', 'child.vhd');
  fs.mkdirSync(path.dirname(absolute), { recursive: true });
  fs.renameSync(deep, absolute);

  // A symlink inside the root to the outside disk, named as the parent.
  const link = path.join(root, 'linked', 'base-link.vhd');
  fs.mkdirSync(path.dirname(link));
  fs.symlinkSync(base, link);
  const viaLink = path.join(root, 'linked', 'child.vhd');
  await createDifferencing(viaLink, link);

  return [
    { how: 'a relative ..\\.. locator', child: relative, link: base },
    { how: 'an absolute W2ku locator', child: absolute, link: base },
    { how: 'a symlink inside the root', child: viaLink, link },
  ];
}

describe('a chain that leaves the storage roots is refused', () => {
  test('GetHardDisk, HardDisk.get_Info, get_Parent, AddHardDiskConnection, CreateDifferencingVirtualHardDisk: VM_E_PATH_OUTSIDE_ROOTS naming the link', async () => {
    const vm = await server.call<{ $ref: string }>('VirtualServer.CreateVirtualMachine', { name: 'holder' });
    for (const { how, child, link } of await outsideChildren()) {
      for (const [who, token] of [['Viewer', viewer], ['Administrator', server.adminToken]] as const) {
        assertOutside(await refusal(server.call('VirtualServer.GetHardDisk', { path: child }, token)), link, `${how}: GetHardDisk as ${who}`);
        for (const member of ['get_Info', 'get_Parent', 'get_Type', 'get_SizeInGuest']) {
          assertOutside(await refusal(server.call(`HardDisk.${member}`, { this: `HardDisk/${child}` }, token)), link, `${how}: HardDisk.${member} as ${who}`);
        }
      }
      assertOutside(await refusal(server.call('VirtualMachine.AddHardDiskConnection', { this: vm.$ref, path: child, busType: 'IDE', busNumber: 0, deviceNumber: 0 })), link, `${how}: AddHardDiskConnection`);
      const next = path.join(path.dirname(child), 'next.vhd');
      assertOutside(await refusal(server.call('VirtualServer.CreateDifferencingVirtualHardDisk', { path: next, parentPath: child })), link, `${how}: CreateDifferencingVirtualHardDisk`);
      assert.ok(!fs.existsSync(next), `${how}: a child of the refused disk was made`);
      for (const [member, extra] of [['Convert', { type: 'Dynamic' }], ['MergeTo', {}]] as const) {
        const target = path.join(path.dirname(child), `${member}.vhd`);
        assertOutside(await refusal(server.call(`HardDisk.${member}`, { this: `HardDisk/${child}`, path: target, ...extra })), link, `${how}: HardDisk.${member}`);
        assert.ok(!fs.existsSync(target));
      }
    }
    assert.deepEqual(await server.call('VirtualMachine.get_HardDiskConnections', { this: vm.$ref }), [], 'a refused disk was attached');
  });

  test('a VM whose disk\'s parent became a symlink out of the roots does not start (VM_E_PATH_OUTSIDE_ROOTS)', async () => {
    const folder = path.join(root, 'swap');
    fs.mkdirSync(folder);
    const parent = path.join(folder, 'parent.vhd');
    const child = path.join(folder, 'child.vhd');
    await createDynamic(parent, { size: 8 * MiB });
    await createDifferencing(child, parent);
    const vm = await server.call<{ $ref: string }>('VirtualServer.CreateVirtualMachine', { name: 'swapped' });
    await server.call('VirtualMachine.AddHardDiskConnection', { this: vm.$ref, path: child, busType: 'IDE', busNumber: 0, deviceNumber: 0 });
    // The same parent, now outside, reached through a link where it was.
    const moved = path.join(outside, 'moved-parent.vhd');
    fs.renameSync(parent, moved);
    fs.symlinkSync(moved, parent);
    const e = await refusal(server.call('VirtualMachine.Startup', { this: vm.$ref }));
    assert.equal(e.data.name, 'VM_E_PATH_OUTSIDE_ROOTS', e.message);
    assert.ok(e.message.includes(parent) && e.message.includes(child), e.message);
    assert.equal(await server.call('VirtualMachine.get_State', { this: vm.$ref }), 'TurnedOff');
  });

  test('media and saved state outside the roots: AttachImage and AttachFloppyImage refuse them, and a registered .vmc naming them does not start', async () => {
    const iso = path.join(outside, 'media.iso');
    const floppy = path.join(outside, 'media.vfd');
    fs.writeFileSync(iso, Buffer.alloc(2048 * 16));
    fs.writeFileSync(floppy, Buffer.alloc(1474560));
    const vm = await server.call<{ $ref: string }>('VirtualServer.CreateVirtualMachine', { name: 'media' });
    const drive = await server.call<{ $ref: string }>('VirtualMachine.AddDVDROMDrive', { this: vm.$ref, busNumber: 1, deviceNumber: 0 });
    assertOutside(await refusal(server.call('DVDROMDrive.AttachImage', { this: drive.$ref, path: iso })), iso, 'AttachImage');
    await server.call('VirtualMachine.AddFloppyDrive', { this: vm.$ref });
    assertOutside(await refusal(server.call('VirtualMachine.AttachFloppyImage', { this: vm.$ref, path: floppy })), floppy, 'AttachFloppyImage');

    const cases: Array<{ name: string; doc: Record<string, unknown>; file: string }> = [
      { name: 'iso-outside', doc: { ide: [{ channel: 1, device: 0, type: 'DVD', image: iso }] }, file: iso },
      { name: 'floppy-outside', doc: { floppy: { image: floppy } }, file: floppy },
      { name: 'state-outside', doc: { savedState: path.join(outside, 'state.vsv') }, file: path.join(outside, 'state.vsv') },
    ];
    for (const { name, doc, file } of cases) {
      const vmc = path.join(root, `${name}.vmc`);
      fs.writeFileSync(vmc, JSON.stringify({ version: 1, name, ...doc }));
      const registered = await server.call<{ $ref: string }>('VirtualServer.RegisterVirtualMachine', { path: vmc });
      const e = await refusal(server.call('VirtualMachine.Startup', { this: registered.$ref }));
      assert.equal(e.data.name, 'VM_E_PATH_OUTSIDE_ROOTS', `${name}: ${e.message}`);
      assert.ok(e.message.includes(file), `${name}: ${e.message}`);
      assert.equal(await server.call('VirtualMachine.get_State', { this: registered.$ref }), 'TurnedOff');
    }
  });
});
