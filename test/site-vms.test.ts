// The Virtual Machines pages over HTTP against a real vserverd: Create makes a VM with the devices
// chosen and leaves nothing behind when a step is refused; Configure shows the profile's limits,
// and a refused value (memory 4000 MB, a fifth network adapter) comes back as a 400 page with the
// API's message beside the field while nothing changes; every form reaches the configuration; a
// form without its CSRF token and a Viewer's direct POST are refused; Add registers a .vmc and
// Remove keeps or deletes the VM's files. No guest runs here.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SCHEMA } from '../server/api/schema.js';
import { ADMIN_PASSWORD, TestServer } from './helpers/server.js';
import { SiteSession, fieldError, unescapeHtml } from './helpers/site.js';

interface Ref { $ref: string }
interface VmConfiguration {
  id: string; name: string; memoryMB: number;
  ide: Array<{ channel: number; device: number; type: string; path?: string; image?: string | null }>;
  scsi: Array<{ model: string; disks: Array<{ target: number; path: string }> }>;
  networkAdapters: Array<{ model: string; mac: string; network: string }>;
  com2: { file: string } | null; lpt1: { file: string } | null; floppy: { image: string | null } | null; usb: string[];
}

const VIEWER_PASSWORD = 'viewer-password-1';

let server: TestServer;
let admin: SiteSession;
let viewer: SiteSession;
/** The storage root (the data folder, as a real path). */
let root: string;

const call = <T = unknown>(method: string, params: Record<string, unknown> = {}): Promise<T> => server.call<T>(method, params);
const idOf = (vm: string): string => vm.slice('VirtualMachine/'.length);
const configOf = (vm: string): Promise<VmConfiguration> => call<VmConfiguration>('VirtualMachine.get_Configuration', { this: vm });

async function createVm(name: string): Promise<string> {
  return (await call<Ref>('VirtualServer.CreateVirtualMachine', { name })).$ref;
}

async function createDisk(relative: string, sizeMB = 16): Promise<string> {
  const task = await call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: relative, sizeMB });
  assert.equal(await call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 60_000 }), true);
  assert.equal(await call('Task.get_Error', { this: task.$ref }), null);
  return path.join(root, relative);
}

/** The page's own content, after the frame's header and navigation (which hold the sign-out form). */
function mainOf(html: string): string {
  const start = html.indexOf('<main');
  assert.ok(start >= 0, 'the page has a <main>');
  return html.slice(start);
}

/** The value attribute of the input with this id. */
function inputValue(html: string, id: string): string | null {
  const tag = new RegExp(`<input[^>]*\\bid="${id}"[^>]*>`).exec(html)?.[0];
  const value = tag && /\bvalue="([^"]*)"/.exec(tag)?.[1];
  return value === undefined || value === null ? null : unescapeHtml(value);
}

/** A form post that must succeed: a 303 back to the VM's Configure page. */
async function submit(session: SiteSession, vm: string, action: string, fields: Record<string, string>): Promise<void> {
  const response = await session.post(`/vms/${idOf(vm)}/${action}`, fields);
  const body = response.status === 303 ? '' : await response.text();
  assert.equal(response.status, 303, `POST ${action} ${JSON.stringify(fields)}: ${body}`);
  assert.match(response.headers.get('location') ?? '', new RegExp(`^/vms/${idOf(vm)}\\?saved=`));
}

/** `refuse` must leave the VM's configuration and its .vmc exactly as they were. */
async function unchanged(vm: string, refuse: () => Promise<void>): Promise<void> {
  const before = await configOf(vm);
  const file = await call<string>('VirtualMachine.get_File', { this: vm });
  const onDisk = fs.readFileSync(file, 'utf8');
  await refuse();
  assert.deepEqual(await configOf(vm), before, 'the configuration is unchanged');
  assert.equal(fs.readFileSync(file, 'utf8'), onDisk, 'the .vmc is unchanged');
}

before(async () => {
  server = await TestServer.start();
  root = fs.realpathSync(server.dataDir);
  admin = await SiteSession.signIn(server.url, 'admin', ADMIN_PASSWORD);
  await call('VirtualServer.CreateUser', { name: 'viewer', password: VIEWER_PASSWORD, role: 'Viewer' });
  viewer = await SiteSession.signIn(server.url, 'viewer', VIEWER_PASSWORD);
});

after(async () => {
  if (!server) return;
  await server.stop();
  server.remove();
});

describe('Create', () => {
  test('Create makes a VM with a new dynamic disk on SCSI 0:0 and a network adapter, then shows its Configure page', async () => {
    const response = await admin.post('/vms/create', { name: 'created', memory: '256', disk: 'new', 'disk-size': '64', 'disk-bus': 'SCSI', 'nic-model': 'e1000' });
    assert.equal(response.status, 303, await response.clone().text());
    const found = await call<Ref | null>('VirtualServer.FindVirtualMachine', { name: 'created' });
    assert.ok(found, 'the VM exists');
    assert.equal(response.headers.get('location'), `/vms/${idOf(found.$ref)}`);
    const config = await configOf(found.$ref);
    assert.equal(config.memoryMB, 256);
    const disk = path.join(root, 'created', 'created.vhd');
    assert.deepEqual(config.scsi, [{ model: 'lsi53c895a', disks: [{ target: 0, path: disk }] }]);
    assert.deepEqual(config.ide, []);
    assert.equal(config.networkAdapters.length, 1);
    assert.equal(config.networkAdapters[0].model, 'e1000');
    assert.match(config.networkAdapters[0].mac, /^00:03:FF(:[0-9A-F]{2}){3}$/);
    assert.equal(await call('HardDisk.get_Type', { this: `HardDisk/${disk}` }), 'Dynamic');
    const size = await call<number>('HardDisk.get_SizeInGuest', { this: `HardDisk/${disk}` });
    assert.ok(size >= 64 * 1024 * 1024 && size < 65 * 1024 * 1024, `64 MB asked, rounded up to whole cylinders: ${size}`);
    assert.match(await admin.text(response.headers.get('location')!), /<h1>Configure created<\/h1>/);
  });

  test('Create with an existing disk attaches it at IDE 0:0, and "None" adds no network adapter', async () => {
    const disk = await createDisk('create-disks/existing.vhd');
    const response = await admin.post('/vms/create', { name: 'on-ide', memory: '64', disk: 'existing', 'disk-path': 'create-disks/existing.vhd', 'disk-bus': 'IDE', 'nic-model': 'none' });
    assert.equal(response.status, 303, await response.clone().text());
    const vm = (await call<Ref>('VirtualServer.FindVirtualMachine', { name: 'on-ide' })).$ref;
    const config = await configOf(vm);
    assert.deepEqual(config.ide, [{ channel: 0, device: 0, type: 'HardDisk', path: disk }]);
    assert.deepEqual([config.scsi, config.networkAdapters, config.memoryMB], [[], [], 64]);
  });

  test('a refused step of Create shows the API\'s message beside its field, keeps what was typed, and leaves no VM or file behind', async () => {
    const memory = await admin.post('/vms/create', { name: 'refused', memory: '4000', disk: 'new', 'disk-size': '64', 'disk-bus': 'SCSI', 'nic-model': 'tulip' });
    assert.equal(memory.status, 400);
    const page = await memory.text();
    assert.equal(fieldError(page, 'memory'), '4000 MB is outside the limits of 4 to 3686 MB per VM');
    assert.equal(inputValue(page, 'memory'), '4000', 'the value typed is kept');
    assert.equal(inputValue(page, 'name'), 'refused');
    assert.equal(await call('VirtualServer.FindVirtualMachine', { name: 'refused' }), null, 'the half-made VM was deleted');
    assert.equal(fs.existsSync(path.join(root, 'refused')), false, 'its folder went with it, and no disk was made');

    const missing = await admin.post('/vms/create', { name: 'refused', memory: '128', disk: 'existing', 'disk-path': 'create-disks/missing.vhd', 'disk-bus': 'IDE', 'nic-model': 'none' });
    assert.equal(missing.status, 400);
    assert.match(fieldError(await missing.text(), 'disk-path') ?? '', /missing\.vhd/);
    assert.equal(await call('VirtualServer.FindVirtualMachine', { name: 'refused' }), null);

    const taken = await admin.post('/vms/create', { name: 'CREATED', memory: '128', disk: 'none', 'nic-model': 'none' });
    assert.equal(taken.status, 400);
    assert.match(fieldError(await taken.text(), 'name') ?? '', /named created already exists/);
  });
});

describe('Configure: limits and refusals', () => {
  let vm: string;
  before(async () => {
    vm = await createVm('limits');
    await call('VirtualMachine.AddSCSIController', { this: vm });
    await call('VirtualMachine.AddNetworkAdapter', { this: vm });
    await call('VirtualMachine.AddNetworkAdapter', { this: vm });
  });

  test('Configure shows the profile\'s limits as hints, not as HTML limits the browser would enforce', async () => {
    const page = mainOf(await admin.text(`/vms/${idOf(vm)}`));
    assert.match(page, /<span class="hint" id="memory-hint">4 to 3686 MB<\/span>/);
    assert.match(page, /2 of 4 network adapters/);
    assert.match(page, /1 of 4 SCSI adapters/);
    assert.match(page, /7 disks each \(targets 0-6\)/);
    assert.match(page, /4 of 4 IDE positions free/);
    assert.match(page, /at most 1 floppy drive/);
    assert.match(page, /Keyboard[\s\S]*Mouse[\s\S]*Tablet[\s\S]*SmartCardReader/);
    assert.match(page, /0 to 3600 seconds/);
    const memoryInput = /<input[^>]*id="memory"[^>]*>/.exec(page)?.[0] ?? '';
    assert.ok(memoryInput && !/\b(min|max)=/.test(memoryInput), memoryInput);
    assert.equal(inputValue(page, 'memory'), '128');
  });

  test('Configure\'s choices and limits are the member declarations\': each select offers the declared values, each hint states the declared limits', async () => {
    const page = mainOf(await admin.text(`/vms/${idOf(vm)}`));
    const options = (id: string): string[] => {
      const select = new RegExp(`<select id="${id}"[^>]*>([\\s\\S]*?)</select>`).exec(page)?.[1] ?? '';
      return [...select.matchAll(/<option(?: value="([^"]*)")?[^>]*>([^<]*)<\/option>/g)].map((m) => unescapeHtml(m[1] ?? m[2]));
    };
    const declared = (method: string, param: string): readonly string[] => {
      const [iface, member] = method.split('.');
      const spec = SCHEMA[iface].members[member].params![param];
      assert.equal(spec.type, 'enum', `${method} ${param}`);
      return (spec as { values: readonly string[] }).values;
    };
    assert.deepEqual(options('nic-model'), declared('VirtualMachine.AddNetworkAdapter', 'model'));
    assert.deepEqual(options('scsi-model'), declared('VirtualMachine.AddSCSIController', 'model'));
    assert.deepEqual(options('disk-bus-type'), declared('VirtualMachine.AddHardDiskConnection', 'busType'));
    assert.deepEqual(options('auto-start'), declared('VirtualMachine.put_AutoStartAtLaunch', 'value'));
    assert.deepEqual(options('shutdown-action'), declared('VirtualMachine.put_ShutdownActionOnQuit', 'value'));
    const limits = (method: string): { min?: number; max?: number; maxLength?: number } => SCHEMA.VirtualMachine.members[method].params!.value as never;
    const hint = (id: string): string => unescapeHtml(new RegExp(`<span class="hint" id="${id}-hint">([^<]*)</span>`).exec(page)?.[1] ?? '');
    assert.match(hint('name'), new RegExp(`^1 to ${limits('put_Name').maxLength} characters`));
    assert.match(hint('notes'), new RegExp(`^Up to ${limits('put_Notes').maxLength!.toLocaleString('en-US')} characters`));
    assert.match(hint('auto-start-delay'), new RegExp(`^${limits('put_AutoStartAtLaunchDelay').min} to ${limits('put_AutoStartAtLaunchDelay').max} seconds`));
    assert.equal(hint('memory'), `${limits('put_Memory').min} to ${limits('put_Memory').max} MB`);
  });

  test('memory 4000 MB is refused: a 400 page with the API\'s limit message beside the memory field, the value kept, and the VM and its .vmc unchanged', async () => {
    await unchanged(vm, async () => {
      const response = await admin.post(`/vms/${idOf(vm)}/memory`, { memory: '4000' });
      assert.equal(response.status, 400);
      const page = await response.text();
      assert.equal(fieldError(page, 'memory'), '4000 MB is outside the limits of 4 to 3686 MB per VM');
      assert.match(page, /<input id="memory" name="memory" type="number" value="4000" aria-describedby="memory-hint memory-error">/);
    });
    assert.equal(await call('VirtualMachine.get_Memory', { this: vm }), 128);
  });

  test('a fifth network adapter is refused beside the adapter field and the VM keeps four', async () => {
    await submit(admin, vm, 'nics/add', { 'nic-model': 'tulip' });
    await submit(admin, vm, 'nics/add', { 'nic-model': 'virtio' });
    assert.equal((await configOf(vm)).networkAdapters.length, 4);
    assert.match(await admin.text(`/vms/${idOf(vm)}`), /4 of 4 network adapters/);
    await unchanged(vm, async () => {
      const response = await admin.post(`/vms/${idOf(vm)}/nics/add`, { 'nic-model': 'e1000' });
      assert.equal(response.status, 400);
      const page = await response.text();
      assert.equal(fieldError(page, 'nic-model'), 'a VM has at most 4 network adapters; 5 were given');
      assert.match(page, /<option selected>e1000<\/option>/, 'the model chosen is kept');
    });
    assert.equal((await call<Ref[]>('VirtualMachine.get_NetworkAdapters', { this: vm })).length, 4);
  });

  test('a MAC address outside 00:03:FF is refused beside the MAC field', async () => {
    const other = await createVm('limits-mac');
    await unchanged(other, async () => {
      const response = await admin.post(`/vms/${idOf(other)}/nics/add`, { 'nic-model': 'tulip', 'nic-mac': '52:54:00:12:34:56' });
      assert.equal(response.status, 400);
      const page = await response.text();
      assert.match(fieldError(page, 'nic-mac') ?? '', /"52:54:00:12:34:56" is not a MAC address under 00:03:FF/);
      assert.equal(fieldError(page, 'nic-model'), null);
    });
  });

  test('asked for JSON (as the site\'s scripts ask), a refusal is its status with the message by field, and a change is {ok, location}', async () => {
    await unchanged(vm, async () => {
      const refused = await admin.post(`/vms/${idOf(vm)}/memory`, { memory: '4000' }, { json: true });
      assert.equal(refused.status, 400);
      assert.deepEqual(await refused.json(), {
        error: { message: '4000 MB is outside the limits of 4 to 3686 MB per VM', fields: { memory: '4000 MB is outside the limits of 4 to 3686 MB per VM' } },
      });
    });
    const done = await admin.post(`/vms/${idOf(vm)}/memory`, { memory: '96' }, { json: true });
    assert.equal(done.status, 200);
    assert.deepEqual(await done.json(), { ok: true, location: `/vms/${idOf(vm)}?saved=memory#section-memory` });
    assert.equal(await call('VirtualMachine.get_Memory', { this: vm }), 96);
    await call('VirtualMachine.put_Memory', { this: vm, value: 128 });
  });

  test('a value the form can tell is not a number is refused beside its field without calling the API', async () => {
    await unchanged(vm, async () => {
      const response = await admin.post(`/vms/${idOf(vm)}/memory`, { memory: 'lots' });
      assert.equal(response.status, 400);
      assert.equal(fieldError(await response.text(), 'memory'), 'Memory is a whole number; "lots" is not one');
    });
  });

  test('a form without its CSRF token, or with another, is refused with 403 and changes nothing', async () => {
    await unchanged(vm, async () => {
      for (const csrf of [null, 'not-the-token']) {
        const response = await admin.post(`/vms/${idOf(vm)}/memory`, { memory: '512' }, { csrf });
        assert.equal(response.status, 403);
        assert.match(await response.text(), /CSRF/);
      }
    });
  });

  test('an unknown VM is a 404 page', async () => {
    const response = await admin.get('/vms/00000000-0000-4000-8000-000000000000');
    assert.equal(response.status, 404);
    assert.match(await response.text(), /no virtual machine/);
  });
});

describe('Configure: each form reaches the configuration', () => {
  let vm: string;
  let folder: string;
  before(async () => {
    vm = await createVm('forms');
    folder = path.dirname(await call<string>('VirtualMachine.get_File', { this: vm }));
  });

  test('General sets the name and the notes; Memory sets the memory', async () => {
    await submit(admin, vm, 'general', { name: 'forms-renamed', notes: 'made by the site test' });
    assert.equal(await call('VirtualMachine.get_Name', { this: vm }), 'forms-renamed');
    assert.equal(await call('VirtualMachine.get_Notes', { this: vm }), 'made by the site test');
    await submit(admin, vm, 'memory', { memory: '512' });
    assert.equal((await configOf(vm)).memoryMB, 512);
    const page = await admin.text(`/vms/${idOf(vm)}?saved=memory`);
    assert.match(page, /<p class="saved" role="status">The memory was saved\.<\/p>/);
    assert.equal(inputValue(page, 'name'), 'forms-renamed');
  });

  test('COM2 and LPT1 connect to text files and disconnect when emptied', async () => {
    await submit(admin, vm, 'com2', { com2: 'forms/com2.txt' });
    await submit(admin, vm, 'lpt1', { lpt1: path.join(folder, 'lpt1.txt') });
    let config = await configOf(vm);
    assert.deepEqual([config.com2, config.lpt1], [{ file: path.join(root, 'forms', 'com2.txt') }, { file: path.join(folder, 'lpt1.txt') }]);
    assert.equal(inputValue(await admin.text(`/vms/${idOf(vm)}`), 'com2'), path.join(root, 'forms', 'com2.txt'));
    await submit(admin, vm, 'com2', { com2: '' });
    config = await configOf(vm);
    assert.deepEqual([config.com2, config.lpt1], [null, { file: path.join(folder, 'lpt1.txt') }]);
    await unchanged(vm, async () => {
      const response = await admin.post(`/vms/${idOf(vm)}/com2`, { com2: 'no-such-folder/com2.txt' });
      assert.equal(response.status, 400);
      assert.match(fieldError(await response.text(), 'com2') ?? '', /no-such-folder.*does not exist/);
    });
  });

  test('the floppy drive is added, given an image, emptied and removed', async () => {
    const vfd = path.join(root, 'floppies', 'boot.vfd');
    fs.mkdirSync(path.dirname(vfd), { recursive: true });
    fs.writeFileSync(vfd, Buffer.alloc(1474560));
    await submit(admin, vm, 'floppy/add', {});
    assert.deepEqual((await configOf(vm)).floppy, { image: null });
    await submit(admin, vm, 'floppy/media', { 'floppy-image': 'floppies/boot.vfd', do: 'attach' });
    assert.deepEqual((await configOf(vm)).floppy, { image: vfd });
    await submit(admin, vm, 'floppy/media', { do: 'release' });
    assert.deepEqual((await configOf(vm)).floppy, { image: null });
    await submit(admin, vm, 'floppy/remove', {});
    assert.equal((await configOf(vm)).floppy, null);
  });

  test('USB checkboxes add and remove devices', async () => {
    await submit(admin, vm, 'usb', { 'usb-form': '1', 'usb-Tablet': 'on', 'usb-Keyboard': 'on' });
    assert.deepEqual((await configOf(vm)).usb, ['Keyboard', 'Tablet']);
    await submit(admin, vm, 'usb', { 'usb-form': '1', 'usb-Mouse': 'on' });
    assert.deepEqual((await configOf(vm)).usb, ['Mouse']);
    assert.match(await admin.text(`/vms/${idOf(vm)}`), /<input type="checkbox" id="usb-Mouse" name="usb-Mouse" checked>/);
  });

  test('a CD/DVD drive is added at a free IDE position, given an ISO, emptied and removed', async () => {
    const iso = path.join(root, 'isos', 'tools.iso');
    fs.mkdirSync(path.dirname(iso), { recursive: true });
    fs.writeFileSync(iso, Buffer.alloc(64 * 1024));
    await submit(admin, vm, 'dvd/add', { 'dvd-position': '1:0' });
    assert.deepEqual((await configOf(vm)).ide, [{ channel: 1, device: 0, type: 'DVD', image: null }]);
    const drive = `DVDROMDrive/${idOf(vm)}/ide1-0`;
    await submit(admin, vm, 'dvd/media', { drive, 'dvd-image-ide1-0': 'isos/tools.iso', do: 'attach' });
    assert.deepEqual((await configOf(vm)).ide, [{ channel: 1, device: 0, type: 'DVD', image: iso }]);
    assert.doesNotMatch(await admin.text(`/vms/${idOf(vm)}`), /<option value="1:0"/, 'a taken position is not offered');
    await submit(admin, vm, 'dvd/media', { drive, do: 'release' });
    assert.equal((await configOf(vm)).ide[0].image, null);
    await submit(admin, vm, 'dvd/remove', { drive });
    assert.deepEqual((await configOf(vm)).ide, []);
  });

  test('a SCSI adapter is added with its model, a disk attached to it at a target and detached, and the adapter removed', async () => {
    const disk = await createDisk('forms-disks/data.vhd');
    await submit(admin, vm, 'scsi/add', { 'scsi-model': 'virtio-scsi' });
    await submit(admin, vm, 'disks/add', { 'disk-path': 'forms-disks/data.vhd', 'disk-bus-type': 'SCSI', 'disk-bus-number': '0', 'disk-device-number': '3' });
    assert.deepEqual((await configOf(vm)).scsi, [{ model: 'virtio-scsi', disks: [{ target: 3, path: disk }] }]);
    const taken = await admin.post(`/vms/${idOf(vm)}/disks/add`, { 'disk-path': 'forms-disks/data.vhd', 'disk-bus-type': 'IDE', 'disk-bus-number': '2', 'disk-device-number': '0' });
    assert.equal(taken.status, 400);
    assert.match(fieldError(await taken.text(), 'disk-position') ?? '', /IDE has 2 channels/);
    await submit(admin, vm, 'disks/remove', { connection: `HardDiskConnection/${idOf(vm)}/scsi0-3` });
    await submit(admin, vm, 'scsi/remove', { controller: `SCSIController/${idOf(vm)}/0` });
    assert.deepEqual((await configOf(vm)).scsi, []);
    assert.ok(fs.existsSync(disk), 'the disk file is kept');
  });

  test('a network adapter is added with the model and MAC given, and removed', async () => {
    await submit(admin, vm, 'nics/add', { 'nic-model': 'virtio', 'nic-mac': '00-03-ff-0a-0b-0c' });
    assert.deepEqual((await configOf(vm)).networkAdapters, [{ model: 'virtio', mac: '00:03:FF:0A:0B:0C', network: null, networkName: null, dynamicMac: false }]);
    assert.match(await admin.text(`/vms/${idOf(vm)}`), /<code>00:03:FF:0A:0B:0C<\/code>/);
    await submit(admin, vm, 'nics/remove', { adapter: `NetworkAdapter/${idOf(vm)}/0` });
    assert.deepEqual((await configOf(vm)).networkAdapters, []);
  });

  test('automatic start, its delay and the action on quit are saved; a delay beyond 3600 is refused beside it and nothing changes', async () => {
    await submit(admin, vm, 'autostart', { 'auto-start': 'Always', 'auto-start-delay': '30', 'shutdown-action': 'TurnOff' });
    assert.equal(await call('VirtualMachine.get_AutoStartAtLaunch', { this: vm }), 'Always');
    assert.equal(await call('VirtualMachine.get_AutoStartAtLaunchDelay', { this: vm }), 30);
    assert.equal(await call('VirtualMachine.get_ShutdownActionOnQuit', { this: vm }), 'TurnOff');
    const response = await admin.post(`/vms/${idOf(vm)}/autostart`, { 'auto-start': 'Never', 'auto-start-delay': '4000', 'shutdown-action': 'Save' });
    assert.equal(response.status, 400);
    assert.match(fieldError(await response.text(), 'auto-start-delay') ?? '', /3600/);
    assert.equal(await call('VirtualMachine.get_AutoStartAtLaunch', { this: vm }), 'Always', 'the rule is unchanged');
    assert.equal(await call('VirtualMachine.get_ShutdownActionOnQuit', { this: vm }), 'TurnOff');
  });
});

describe('Configure while the VM is not turned off', () => {
  let vm: string;
  let savedState: string;
  before(async () => {
    vm = await createVm('saved');
    // A .vsv beside the VM, found when it is registered, makes it Saved, as after Save State; no guest has to run.
    savedState = await call<string>('VirtualMachine.get_SavedStateFilePath', { this: vm });
    fs.writeFileSync(savedState, 'a saved state');
    const file = await call<string>('VirtualMachine.get_File', { this: vm });
    await call('VirtualServer.UnregisterVirtualMachine', { vm });
    assert.equal((await call<Ref>('VirtualServer.RegisterVirtualMachine', { path: file })).$ref, vm);
    assert.equal(await call('VirtualMachine.get_State', { this: vm }), 'Saved');
  });
  after(() => fs.rmSync(savedState, { force: true }));

  test('the page says the configuration changes only while turned off, and shows the hardware forms disabled but the notes and start and stop settings enabled', async () => {
    const page = mainOf(await admin.text(`/vms/${idOf(vm)}`));
    assert.match(page, /its configuration can only be changed while it is turned off/);
    assert.match(page, /<input id="name" name="name" value="saved" autocomplete="off" disabled/);
    assert.match(page, /<form method="post" action="\/vms\/[^/]+\/memory#section-memory">\s*<input[^>]*>\s*<fieldset class="plain" disabled>/);
    assert.doesNotMatch(/<textarea[^>]*>/.exec(page)?.[0] ?? '', /disabled/);
    assert.doesNotMatch(/<select id="auto-start"[^>]*>/.exec(page)?.[0] ?? 'missing', /disabled/);
  });

  test('a hardware change is refused with 409 and the API\'s message beside the field; the notes still change', async () => {
    await unchanged(vm, async () => {
      const response = await admin.post(`/vms/${idOf(vm)}/memory`, { memory: '256' });
      assert.equal(response.status, 409);
      assert.match(fieldError(await response.text(), 'memory') ?? '', /saved state/);
    });
    await submit(admin, vm, 'general', { notes: 'changed while saved' });
    assert.equal(await call('VirtualMachine.get_Notes', { this: vm }), 'changed while saved');
  });

  test('a Saved VM may still be removed: its Remove page offers both ways, enabled', async () => {
    const page = mainOf(await admin.text(`/vms/${idOf(vm)}/remove`));
    assert.match(page, /<fieldset>\s*<legend>Remove saved<\/legend>/);
    assert.doesNotMatch(page, /must be turned off/);
  });
});

describe('a Viewer', () => {
  let vm: string;
  before(async () => {
    vm = await createVm('viewed');
    await call('VirtualMachine.AddNetworkAdapter', { this: vm });
  });

  test('sees the Configure page with its settings and no form, button or field that changes anything', async () => {
    const response = await viewer.get(`/vms/${idOf(vm)}`);
    assert.equal(response.status, 200);
    const page = mainOf(await response.text());
    assert.match(page, /<dd>128 MB/);
    assert.match(page, /1 of 4 network adapters/);
    for (const tag of ['<form', '<button', '<input', '<select', '<textarea']) assert.equal(page.includes(tag), false, `no ${tag} for a Viewer`);
    assert.equal(page.includes(`/vms/${idOf(vm)}/remove`), false, 'no link to Remove');
  });

  test('is refused Create and Add (403), and a direct POST is refused by the API with 403 and changes nothing', async () => {
    assert.equal((await viewer.get('/vms/create')).status, 403);
    assert.equal((await viewer.get('/vms/add')).status, 403);
    await unchanged(vm, async () => {
      const response = await viewer.post(`/vms/${idOf(vm)}/memory`, { memory: '512' });
      assert.equal(response.status, 403);
      assert.match(await response.text(), /may not call VirtualMachine\.put_Memory/);
      assert.equal((await viewer.post(`/vms/${idOf(vm)}/nics/add`, { 'nic-model': 'tulip' })).status, 403);
    });
    const create = await viewer.post('/vms/create', { name: 'by-viewer', memory: '128', disk: 'none', 'nic-model': 'none' });
    assert.equal(create.status, 403);
    assert.equal(await call('VirtualServer.FindVirtualMachine', { name: 'by-viewer' }), null);
    const remove = await viewer.post(`/vms/${idOf(vm)}/remove`, { how: 'delete' });
    assert.equal(remove.status, 403);
    assert.ok(await call('VirtualServer.FindVirtualMachine', { name: 'viewed' }), 'the VM is still there');
  });
});

describe('Add and Remove', () => {
  test('Add registers a .vmc written by the API, under its own id; a missing file is refused beside the path', async () => {
    const vm = await createVm('to-add');
    const file = await call<string>('VirtualMachine.get_File', { this: vm });
    await call('VirtualServer.UnregisterVirtualMachine', { vm });
    const response = await admin.post('/vms/add', { path: path.relative(root, file) });
    assert.equal(response.status, 303, await response.clone().text());
    assert.equal(response.headers.get('location'), `/vms/${idOf(vm)}`);
    assert.deepEqual(await call('VirtualServer.FindVirtualMachine', { name: 'to-add' }), { $ref: vm });

    const missing = await admin.post('/vms/add', { path: 'to-add/missing.vmc' });
    assert.equal(missing.status, 400);
    const page = await missing.text();
    assert.match(fieldError(page, 'path') ?? '', /missing\.vmc/);
    assert.equal(inputValue(page, 'path'), 'to-add/missing.vmc');
  });

  test('Remove from the list keeps the .vmc; Delete removes it; both go back to Master Status', async () => {
    const kept = await createVm('remove-keep');
    const keptFile = await call<string>('VirtualMachine.get_File', { this: kept });
    const page = await admin.text(`/vms/${idOf(kept)}/remove`);
    assert.match(page, /name="how" value="unregister"/);
    assert.match(page, /name="how" value="delete"/);
    const unclear = await admin.post(`/vms/${idOf(kept)}/remove`, { how: 'everything' });
    assert.equal(unclear.status, 400);
    assert.match(fieldError(await unclear.text(), 'how') ?? '', /keep the files or to delete/);
    assert.ok(await call('VirtualServer.FindVirtualMachine', { name: 'remove-keep' }), 'nothing was removed');
    const unregister = await admin.post(`/vms/${idOf(kept)}/remove`, { how: 'unregister' });
    assert.equal(unregister.status, 303);
    assert.equal(unregister.headers.get('location'), '/');
    assert.equal(await call('VirtualServer.FindVirtualMachine', { name: 'remove-keep' }), null);
    assert.ok(fs.existsSync(keptFile), 'the .vmc is kept');

    const deleted = await createVm('remove-delete');
    const deletedFile = await call<string>('VirtualMachine.get_File', { this: deleted });
    const remove = await admin.post(`/vms/${idOf(deleted)}/remove`, { how: 'delete' });
    assert.equal(remove.status, 303);
    assert.equal(await call('VirtualServer.FindVirtualMachine', { name: 'remove-delete' }), null);
    assert.equal(fs.existsSync(deletedFile), false, 'the .vmc is deleted');
  });

  test('the list of VMs to configure links each one with its state, memory and device counts', async () => {
    const page = mainOf(await admin.text('/vms'));
    const vm = (await call<Ref>('VirtualServer.FindVirtualMachine', { name: 'created' })).$ref;
    assert.match(page, new RegExp(`<tr data-vm="${idOf(vm)}">\\s*<th scope="row"><a href="/vms/${idOf(vm)}">created</a></th>\\s*<td><span class="state-TurnedOff">TurnedOff</span></td>\\s*<td>256 MB</td>\\s*<td>1</td>\\s*<td>1</td>`));
  });
});
