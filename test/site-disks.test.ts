// The website's Virtual Disks pages, task pages and the file picker's listing, used over HTTP as
// a signed-in browser would, against a real vserverd: disks made, merged, converted, compacted
// and expanded through the forms are checked with qemu-img and qemu-io; a refused form shows the
// API's message beside its field and makes nothing; the listing stays inside the storage roots;
// a Viewer sees a disk but cannot change it; a form without its CSRF token is refused.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ADMIN_PASSWORD, TestServer } from './helpers/server.js';
import { SiteSession, fieldError, unescapeHtml } from './helpers/site.js';
import { BLOCK, MiB, constBytes, qemuCompare, qemuImg, qemuInfo, qemuIoVerify, writeVhd } from './helpers/vhd-fixtures.js';

interface Ref { $ref: string }
interface TaskError { name: string; message: string }
interface Listing { kind: string; root: string; folder: string; parent: string | null; roots: string[]; entries: Array<{ name: string; path: string; type: string; size: number }> }

let server: TestServer;
let site: SiteSession;
/** The first storage root (the data folder, as a real path): where relative paths start. */
let root: string;

before(async () => {
  server = await TestServer.start();
  root = fs.realpathSync(server.dataDir);
  site = await SiteSession.signIn(server.url, 'admin', ADMIN_PASSWORD);
});

after(async () => {
  if (!server) return;
  await server.stop();
  server.remove();
});

const inRoot = (...parts: string[]): string => path.join(root, ...parts);

/** A value of the page's properties list (dl.properties). */
function property(html: string, label: string): string | undefined {
  const match = new RegExp(`<dt>${label}</dt><dd>([^<]*)</dd>`).exec(html);
  return match ? unescapeHtml(match[1]) : undefined;
}

/** The id of the task a form started: its answer is a 303 to the task's page. */
async function startedTask(response: Response): Promise<string> {
  assert.equal(response.status, 303, `expected a redirect to the task's page, got ${response.status}: ${await response.text()}`);
  const match = /^\/tasks\/([0-9a-f-]{36})$/.exec(response.headers.get('location') ?? '');
  assert.ok(match, `redirected to ${response.headers.get('location')}`);
  return match[1];
}

/** Waits for the task through the API; returns its error (null when it succeeded). */
async function finish(id: string): Promise<TaskError | null> {
  assert.equal(await server.call('Task.WaitForCompletion', { this: `Task/${id}`, timeoutMs: 120_000 }), true, `Task/${id} did not finish`);
  return server.call<TaskError | null>('Task.get_Error', { this: `Task/${id}` });
}

/** Sends a form that starts a task, and waits for the task to succeed; returns the task's id. */
async function succeed(pathname: string, fields: Record<string, string>): Promise<string> {
  const id = await startedTask(await site.post(pathname, fields));
  assert.equal(await finish(id), null, `${pathname} ${JSON.stringify(fields)}: the task failed`);
  return id;
}

function virtualSize(file: string): number {
  return qemuInfo(file, 'vpc')['virtual-size'] as number;
}

async function taskCount(): Promise<number> {
  return (await server.call<Ref[]>('VirtualServer.get_Tasks')).length;
}

const inspectHref = (file: string): string => `/disks/inspect?path=${encodeURIComponent(file)}`;

describe('Create Virtual Disk', () => {
  test('the form offers the three types, a new-file path field and a parent field with the picker, and the size limits as hints, 127 GB by default', async () => {
    const html = await site.text('/disks/create');
    for (const type of ['Dynamic', 'Fixed', 'Differencing']) assert.match(html, new RegExp(`<input type="radio" name="type" id="type-${type}" value="${type}"`));
    assert.match(html, /id="type-Dynamic" value="Dynamic" checked/);
    assert.match(html, /<input id="path" name="path" value="" data-file-picker="vhd" data-file-picker-new/);
    assert.match(html, /<input id="parent" name="parent" value="" data-file-picker="vhd" autocomplete/);
    assert.match(html, /id="size" name="size" min="1" step="any" value="127"/);
    assert.match(html, /<option selected>GB<\/option>/);
    assert.match(html, /1 MB to 2,088,960 MB \(2040 GB\)/);
    assert.match(html, /<input type="hidden" name="_csrf" value="[^"]+">/);
  });

  test('a dynamic disk made through the form: a 303 to its task page, whose task finishes; qemu-img reads a vpc image of the size asked, and the task page says done and links to the disk', async () => {
    const file = inRoot('site', 'dynamic.vhd');
    const id = await startedTask(await site.post('/disks/create', { type: 'Dynamic', path: 'site/dynamic.vhd', size: '64', unit: 'MB' }));
    const running = await site.text(`/tasks/${id}`);
    assert.match(running, /<progress id="task-progress" max="100" value="\d+"/);
    assert.match(running, /<p id="task-status" role="status"[^>]*>(running \d+%|done)<\/p>/);
    assert.match(running, new RegExp(`Create dynamic disk ${file}`));

    assert.equal(await finish(id), null);
    const info = qemuInfo(file, 'vpc');
    assert.equal(info.format, 'vpc');
    const size = info['virtual-size'] as number;
    assert.ok(size >= 64 * MiB && size < 65 * MiB, `virtual size ${size} for 64 MB`);

    const done = await site.text(`/tasks/${id}`);
    assert.match(done, new RegExp(`id="task" data-task="${id}" data-complete="true"`));
    assert.match(done, /<progress id="task-progress" max="100" value="100"/);
    assert.match(done, /<p id="task-status" role="status" class="">done<\/p>/);
    assert.ok(done.includes(`href="${inspectHref(file)}"`), 'the finished task links to the new disk\'s Inspect page');
    assert.match(done, /<ol id="task-log" class="task-log">[\s\S]*completed<\/li>/);

    const inspect = await site.text(inspectHref(file));
    assert.equal(property(inspect, 'Type'), 'Dynamic');
    assert.equal(property(inspect, 'File'), file);
    assert.ok(property(inspect, 'Size in the guest')?.startsWith(`${size.toLocaleString('en-US')} bytes`), property(inspect, 'Size in the guest'));
  });

  test('a size in GB is that many GB, and a dynamic disk whose size is left empty is 127 GB', async () => {
    await succeed('/disks/create', { type: 'Dynamic', path: 'site/two-gb.vhd', size: '2', unit: 'GB' });
    const two = virtualSize(inRoot('site', 'two-gb.vhd'));
    assert.ok(two >= 2048 * MiB && two < 2049 * MiB, `virtual size ${two} for 2 GB`);
    await succeed('/disks/create', { type: 'Dynamic', path: 'site/default.vhd', size: '', unit: 'GB' });
    const fallback = virtualSize(inRoot('site', 'default.vhd'));
    assert.ok(fallback >= 127 * 1024 * MiB && fallback < 127 * 1024 * MiB + MiB, `default size ${fallback}`);
  });

  test('a fixed disk made through the form is written whole: qemu-img reads the size asked, the file is that plus its 512-byte footer, and Inspect says Fixed', async () => {
    const file = inRoot('site', 'fixed.vhd');
    await succeed('/disks/create', { type: 'Fixed', path: 'site/fixed.vhd', size: '8', unit: 'MB' });
    const size = virtualSize(file);
    assert.ok(size >= 8 * MiB && size < 9 * MiB, `virtual size ${size} for 8 MB`);
    assert.equal(fs.statSync(file).size, size + 512);
    assert.equal(property(await site.text(inspectHref(file)), 'Type'), 'Fixed');
  });

  test('a differencing disk made through the form has its parent\'s size (the size field is ignored); Inspect shows the parent chain, each parent a link to its own Inspect page', async () => {
    const parent = inRoot('site', 'dynamic.vhd');
    const child = inRoot('site', 'child.vhd');
    await succeed('/disks/create', { type: 'Differencing', path: 'site/child.vhd', parent: 'site/dynamic.vhd', size: '999999999', unit: 'GB' });
    const info = JSON.parse(qemuImg('info', '--output=json', child)) as Record<string, unknown>;
    assert.equal(info.format, 'vpc');
    assert.equal(info['virtual-size'], virtualSize(parent));

    const html = await site.text(inspectHref(child));
    assert.equal(property(html, 'Type'), 'Differencing');
    assert.equal(property(html, 'Parent'), parent);
    const chain = /<ol class="disk-chain" id="disk-chain">([\s\S]*?)<\/ol>/.exec(html)?.[1] ?? '';
    assert.match(chain, new RegExp(`<strong>${child}</strong> \\(this disk, differencing\\)`));
    assert.ok(chain.includes(`<a href="${inspectHref(parent)}">${parent}</a> (base, dynamic)`), chain);

    const parentPage = await site.text(inspectHref(parent));
    assert.equal(property(parentPage, 'Type'), 'Dynamic');
    assert.match(parentPage, /<p id="disk-chain">This disk has no parent.<\/p>/);
  });

  test('refusals come back beside their field with status 400 and the API\'s message, keeping what was typed; no file and no task is made', async () => {
    const existing = inRoot('site', 'dynamic.vhd');
    const before = fs.readFileSync(existing);
    const tasks = await taskCount();
    const outside = path.join(os.tmpdir(), `vserver-outside-${process.pid}.vhd`);
    const cases: Array<{ fields: Record<string, string>; field: string; says: RegExp; file?: string }> = [
      { fields: { type: 'Dynamic', path: outside, size: '16', unit: 'MB' }, field: 'path', says: /outside the storage roots/, file: outside },
      { fields: { type: 'Fixed', path: '../escape.vhd', size: '16', unit: 'MB' }, field: 'path', says: /outside the storage roots/, file: path.join(path.dirname(root), 'escape.vhd') },
      { fields: { type: 'Dynamic', path: 'site/dynamic.vhd', size: '16', unit: 'MB' }, field: 'path', says: /already exists/ },
      { fields: { type: 'Dynamic', path: 'site/huge.vhd', size: '3000', unit: 'GB' }, field: 'size', says: /2088960/, file: inRoot('site', 'huge.vhd') },
      { fields: { type: 'Fixed', path: 'site/zero.vhd', size: '0', unit: 'MB' }, field: 'size', says: /sizeMB/, file: inRoot('site', 'zero.vhd') },
      { fields: { type: 'Fixed', path: 'site/words.vhd', size: 'lots', unit: 'MB' }, field: 'size', says: /must be a number/, file: inRoot('site', 'words.vhd') },
      { fields: { type: 'Differencing', path: 'site/orphan.vhd', parent: 'site/missing.vhd' }, field: 'parent', says: /missing\.vhd.*does not exist/, file: inRoot('site', 'orphan.vhd') },
      { fields: { type: 'Differencing', path: 'site/stray.vhd', parent: '/etc/hostname' }, field: 'parent', says: /outside the storage roots/, file: inRoot('site', 'stray.vhd') },
      { fields: { type: 'Sparse', path: 'site/sparse.vhd', size: '16', unit: 'MB' }, field: 'type', says: /Dynamic, Fixed, Differencing/, file: inRoot('site', 'sparse.vhd') },
    ];
    for (const c of cases) {
      const response = await site.post('/disks/create', c.fields);
      const html = await response.text();
      assert.equal(response.status, 400, `${JSON.stringify(c.fields)}: ${response.status}`);
      assert.match(fieldError(html, c.field) ?? '(no message)', c.says, `${JSON.stringify(c.fields)}: the message beside "${c.field}"`);
      if (c.field !== 'type') assert.match(html, new RegExp(`aria-describedby="[^"]*${c.field}-error`), 'the field points at its message');
      assert.ok(html.includes(`value="${c.fields.path}"`), 'the path typed is kept');
      if (c.file) assert.equal(fs.existsSync(c.file), false, `${c.file} was made`);
    }
    assert.deepEqual(fs.readFileSync(existing), before, 'the existing disk is untouched');
    assert.equal(await taskCount(), tasks, 'no task was started');
  });

  test('for the site\'s scripts (Accept: application/json) a started disk is {ok, task, location} and a refusal is 400 with the message and its field', async () => {
    const started = await site.post('/disks/create', { type: 'Dynamic', path: 'site/json.vhd', size: '4', unit: 'MB' }, { json: true });
    assert.equal(started.status, 200);
    const answer = await started.json() as { ok: boolean; task: string; location: string };
    assert.equal(answer.ok, true);
    assert.equal(answer.location, `/tasks/${answer.task}`);
    assert.equal(await finish(answer.task), null);
    assert.ok(fs.existsSync(inRoot('site', 'json.vhd')));

    const refused = await site.post('/disks/create', { type: 'Dynamic', path: 'site/json.vhd', size: '4', unit: 'MB' }, { json: true });
    assert.equal(refused.status, 400);
    const error = (await refused.json() as { error: { message: string; fields: Record<string, string> } }).error;
    assert.match(error.message, /already exists/);
    assert.deepEqual(Object.keys(error.fields), ['path']);
  });
});

describe('task pages', () => {
  test('a cancelable task\'s page has Cancel; cancelling through it ends the task cancelled, the page says so without the button, and no file is left', async () => {
    const file = inRoot('site-cancel', 'big.vhd');
    const id = await startedTask(await site.post('/disks/create', { type: 'Fixed', path: 'site-cancel/big.vhd', size: '8000', unit: 'MB' }));
    assert.equal(await server.call('Task.get_IsComplete', { this: `Task/${id}` }), false, 'the 8000 MB disk is still being written');
    const running = await site.text(`/tasks/${id}`);
    assert.match(running, new RegExp(`<form method="post" action="/tasks/${id}/cancel" id="task-cancel">`));
    assert.match(running, /data-complete="false"/);

    const cancelled = await site.post(`/tasks/${id}/cancel`, {});
    assert.equal(cancelled.status, 303);
    assert.equal(cancelled.headers.get('location'), `/tasks/${id}`);
    assert.equal((await finish(id))?.name, 'VM_E_TASK_CANCELLED');
    const page = await site.text(`/tasks/${id}`);
    assert.match(page, /<p id="task-status" role="status" class="error">failed: [^<]*was cancelled<\/p>/);
    assert.match(page, /data-complete="true"/);
    assert.doesNotMatch(page, /id="task-cancel"/);
    assert.match(page, /<p id="task-result" hidden>/, 'a failed task links to nothing');
    assert.equal(fs.existsSync(file), false);

    const again = await site.post(`/tasks/${id}/cancel`, {});
    assert.equal(again.status, 409, 'a finished task cannot be cancelled: its state is in the way');
    assert.match(await again.text(), /Cancel: [^<]*has already finished/);
    assert.equal((await site.post('/tasks/00000000-0000-4000-8000-000000000000/cancel', {})).status, 404);
  });

  test('the task page read as JSON gives what static/task.js shows; an unknown task is 404', async () => {
    const id = await succeed('/disks/create', { type: 'Dynamic', path: 'site/read.vhd', size: '4', unit: 'MB' });
    const response = await site.get(`/tasks/${id}`, { accept: 'application/json' });
    assert.equal(response.status, 200);
    const task = await response.json() as { id: string; complete: boolean; percent: number; status: string; result: { href: string }; log: string[] };
    assert.deepEqual([task.id, task.complete, task.percent, task.status], [id, true, 100, 'done']);
    assert.equal(task.result.href, inspectHref(inRoot('site', 'read.vhd')));
    assert.ok(task.log.at(-1)?.endsWith(' completed'));
    assert.equal((await site.get('/tasks/00000000-0000-4000-8000-000000000000')).status, 404);
  });
});

describe('the file picker\'s listing', () => {
  const names = (listing: Listing): string[] => listing.entries.map((e) => e.name);

  async function list(query: string): Promise<Listing> {
    const response = await site.get(`/files?${query}`);
    assert.equal(response.status, 200, `/files?${query}: ${response.status}`);
    return await response.json() as Listing;
  }

  before(() => {
    fs.mkdirSync(inRoot('picker', 'sub'), { recursive: true });
    for (const name of ['a.vhd', 'B.VHD', 'c.iso', 'd.vmc', 'e.vfd', 'f.flp', 'notes.txt']) fs.writeFileSync(inRoot('picker', name), 'x');
    fs.symlinkSync('/etc', inRoot('picker', 'etc-link'));
  });

  test('a folder inside the roots: folders first, then only the files of the kind asked; the roots to switch between, and the folder above', async () => {
    const vhd = await list('path=picker&kind=vhd');
    assert.deepEqual(names(vhd), ['sub', 'B.VHD', 'a.vhd']);
    assert.equal(vhd.folder, inRoot('picker'));
    assert.equal(vhd.parent, root);
    assert.equal(vhd.root, root);
    assert.deepEqual(vhd.roots, await server.call('VirtualServer.get_StorageRoots'));
    assert.equal(vhd.entries[1].path, inRoot('picker', 'B.VHD'));
    assert.deepEqual(names(await list('path=picker&kind=iso')), ['sub', 'c.iso']);
    assert.deepEqual(names(await list('path=picker&kind=vmc')), ['sub', 'd.vmc']);
    assert.deepEqual(names(await list('path=picker&kind=vfd')), ['sub', 'e.vfd', 'f.flp']);
    assert.deepEqual(names(await list(`path=${encodeURIComponent(inRoot('picker'))}&kind=folder`)), ['sub']);
    assert.deepEqual(names(await list('path=picker&kind=any')), ['sub', 'B.VHD', 'a.vhd', 'c.iso', 'd.vmc', 'e.vfd', 'f.flp', 'notes.txt'], 'the link to /etc is not offered');
    assert.deepEqual(names(await list('path=picker')), names(await list('path=picker&kind=any')));
    const top = await list('kind=folder');
    assert.equal(top.folder, root);
    assert.equal(top.parent, null, 'nothing above the root');
    assert.ok(names(top).includes('picker'));
  });

  test('paths outside the roots (/etc, ../.., a link leading out) are refused with the API\'s message, as is an unknown kind', async () => {
    for (const outside of ['/etc', '../..', 'picker/etc-link']) {
      const response = await site.get(`/files?path=${encodeURIComponent(outside)}&kind=any`);
      assert.equal(response.status, 400, outside);
      const { error } = await response.json() as { error: { message: string } };
      assert.match(error.message, /outside the storage roots/, outside);
      assert.doesNotMatch(JSON.stringify(error), /passwd|hostname/, 'nothing of /etc is told');
    }
    const unknown = await site.get('/files?path=picker&kind=exe');
    assert.equal(unknown.status, 400);
    assert.match((await unknown.json() as { error: { message: string } }).error.message, /unknown kind "exe"/);
  });
});

describe('Inspect Virtual Disk and its operations', () => {
  let source: string;

  before(async () => {
    source = inRoot('ops', 'source.vhd');
    await succeed('/disks/create', { type: 'Dynamic', path: 'ops/source.vhd', size: '16', unit: 'MB' });
    writeVhd(source, constBytes(0x5a, 64 * 1024), 0);
    writeVhd(source, Buffer.alloc(64 * 1024), 2 * BLOCK);
  });

  test('Inspect shows what the API reports (type, sizes, geometry, unique id, blocks, free space), the VMs the disk is attached to, and the operations a dynamic disk allows', async () => {
    const vm = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'holder' });
    await server.call('VirtualMachine.AddSCSIController', { this: vm.$ref });
    await server.call('VirtualMachine.AddHardDiskConnection', { this: vm.$ref, path: source, busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
    const info = await server.call<{ uniqueId: string; geometry: { cylinders: number; heads: number; sectorsPerTrack: number }; blocks: { allocated: number; total: number }; sizeInGuest: number }>('HardDisk.get_Info', { this: `HardDisk/${source}` });
    const html = await site.text(`/disks/inspect?path=${encodeURIComponent('ops/source.vhd')}`);
    assert.equal(property(html, 'File'), source);
    assert.equal(property(html, 'Type'), 'Dynamic');
    assert.equal(property(html, 'Unique ID'), info.uniqueId);
    assert.equal(property(html, 'Geometry'), `${info.geometry.cylinders} cylinders, ${info.geometry.heads} heads, ${info.geometry.sectorsPerTrack} sectors per track`);
    assert.equal(property(html, 'Blocks allocated'), `${info.blocks.allocated} of ${info.blocks.total}`);
    assert.ok(property(html, 'Size in the guest')?.startsWith(`${info.sizeInGuest.toLocaleString('en-US')} bytes`));
    assert.match(property(html, 'Free space on the host') ?? '', /^[\d,]+ bytes/);
    assert.match(property(html, 'Created') ?? '', /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
    assert.match(html, new RegExp(`<dt>Attached to</dt>\\s*<dd><a href="/vms/${vm.$ref.slice('VirtualMachine/'.length)}">holder</a></dd>`));
    for (const operation of ['convert', 'compact', 'expand']) assert.match(html, new RegExp(`action="/disks/${operation}" id="op-${operation}"`));
    for (const operation of ['merge', 'merge-to']) assert.doesNotMatch(html, new RegExp(`id="op-${operation}"`), 'only a differencing disk merges');
    await server.call('VirtualServer.UnregisterVirtualMachine', { vm: vm.$ref });
  });

  test('Inspect of a missing disk is 404 and of a path outside the roots 400, each with the API\'s message beside the path', async () => {
    const missing = await site.get('/disks/inspect?path=ops/missing.vhd');
    assert.equal(missing.status, 404);
    assert.match(fieldError(await missing.text(), 'path') ?? '', /missing\.vhd.*does not exist/);
    const outside = await site.get('/disks/inspect?path=/etc/hostname');
    assert.equal(outside.status, 400);
    assert.match(fieldError(await outside.text(), 'path') ?? '', /outside the storage roots/);
  });

  test('Convert through the form writes a fixed copy that qemu-img reads as the same disk; an existing target is refused beside the field', async () => {
    const fixed = inRoot('ops', 'converted.vhd');
    await succeed('/disks/convert', { path: source, type: 'Fixed', target: 'ops/converted.vhd' });
    assert.equal(fs.statSync(fixed).size, virtualSize(fixed) + 512);
    assert.equal(qemuCompare(source, 'vpc', fixed, 'vpc').status, 0, 'the copy holds the same data');
    assert.equal(property(await site.text(inspectHref(fixed)), 'Type'), 'Fixed');

    const before = fs.readFileSync(fixed);
    const refused = await site.post('/disks/convert', { path: source, type: 'Dynamic', target: fixed });
    assert.equal(refused.status, 400);
    const html = await refused.text();
    assert.match(fieldError(html, 'convert-target') ?? '', /already exists/);
    assert.ok(html.includes(`id="convert-target" name="target" value="${fixed}"`), 'the target typed is kept');
    assert.deepEqual(fs.readFileSync(fixed), before);
  });

  test('Compact through the form drops the block of zeros: fewer blocks, a smaller file, the same data', async () => {
    const sizeBefore = fs.statSync(source).size;
    const id = await succeed('/disks/compact', { path: source });
    assert.ok((await site.text(`/tasks/${id}`)).includes(`href="${inspectHref(source)}"`), 'the task links back to the disk');
    const info = await server.call<{ blocks: { allocated: number } }>('HardDisk.get_Info', { this: `HardDisk/${source}` });
    assert.equal(info.blocks.allocated, 1);
    assert.ok(fs.statSync(source).size < sizeBefore, 'the file shrank');
    qemuIoVerify(source, [{ pattern: 0x5a, offset: 0, length: 64 * 1024 }, { pattern: 0, offset: 2 * BLOCK, length: 64 * 1024 }]);
  });

  test('Expand through the form grows the disk and keeps its data; a smaller size fails in its task, whose page says why, and changes nothing', async () => {
    await succeed('/disks/expand', { path: source, size: '32', unit: 'MB' });
    const size = virtualSize(source);
    assert.ok(size >= 32 * MiB && size < 33 * MiB, `virtual size ${size} after Expand to 32 MB`);
    qemuIoVerify(source, [{ pattern: 0x5a, offset: 0, length: 64 * 1024 }]);

    const id = await startedTask(await site.post('/disks/expand', { path: source, size: '8', unit: 'MB' }));
    assert.equal((await finish(id))?.name, 'VHD_E_SIZE_LIMIT');
    const page = await site.text(`/tasks/${id}`);
    assert.match(page, /<p id="task-status" role="status" class="error">failed: [^<]*must be larger<\/p>/);
    assert.match(page, /data-complete="true"/);
    assert.equal(virtualSize(source), size);

    const words = await site.post('/disks/expand', { path: source, size: 'big', unit: 'GB' });
    assert.equal(words.status, 400);
    assert.match(fieldError(await words.text(), 'expand-size') ?? '', /must be a number/);
  });

  test('Merge To and Merge through the forms: a new flat disk with the chain\'s data, then the child written into its parent and deleted; Merge of an attached child is refused in its form', async () => {
    const base = inRoot('ops', 'base.vhd');
    const child = inRoot('ops', 'base-child.vhd');
    const flat = inRoot('ops', 'flat.vhd');
    await succeed('/disks/create', { type: 'Dynamic', path: 'ops/base.vhd', size: '16', unit: 'MB' });
    writeVhd(base, constBytes(0x11, 64 * 1024), 0);
    await succeed('/disks/create', { type: 'Differencing', path: 'ops/base-child.vhd', parent: base });
    writeVhd(child, constBytes(0x22, 64 * 1024), BLOCK);
    const expected = [{ pattern: 0x11, offset: 0, length: 64 * 1024 }, { pattern: 0x22, offset: BLOCK, length: 64 * 1024 }];

    const childPage = await site.text(inspectHref(child));
    for (const operation of ['merge', 'merge-to', 'convert']) assert.match(childPage, new RegExp(`id="op-${operation}"`));
    assert.doesNotMatch(childPage, /id="op-(compact|expand)"/, 'a differencing disk neither compacts nor expands');

    await succeed('/disks/merge-to', { path: child, target: 'ops/flat.vhd' });
    assert.equal(property(await site.text(inspectHref(flat)), 'Type'), 'Dynamic');
    qemuIoVerify(flat, expected);
    assert.ok(fs.existsSync(child), 'Merge To keeps the child');

    const vm = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'merge-holder' });
    await server.call('VirtualMachine.AddSCSIController', { this: vm.$ref });
    await server.call('VirtualMachine.AddHardDiskConnection', { this: vm.$ref, path: child, busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
    const refused = await site.post('/disks/merge', { path: child });
    assert.equal(refused.status, 400);
    assert.match(await refused.text(), /<p class="error" role="alert" id="merge-error">[^<]*attached to merge-holder/);
    assert.ok(fs.existsSync(child));
    await server.call('VirtualServer.UnregisterVirtualMachine', { vm: vm.$ref });

    const id = await succeed('/disks/merge', { path: child });
    assert.equal(fs.existsSync(child), false, 'Merge deletes the child once the parent holds its data');
    qemuIoVerify(base, expected);
    assert.ok((await site.text(`/tasks/${id}`)).includes(`href="${inspectHref(base)}"`), 'the finished Merge links to the parent');
  });
});

describe('rights and CSRF', () => {
  let viewer: SiteSession;
  let disk: string;

  before(async () => {
    await server.call('VirtualServer.CreateUser', { name: 'viewer', password: 'viewer-password', role: 'Viewer' });
    viewer = await SiteSession.signIn(server.url, 'viewer', 'viewer-password');
    disk = inRoot('rights', 'disk.vhd');
    await succeed('/disks/create', { type: 'Dynamic', path: 'rights/disk.vhd', size: '16', unit: 'MB' });
  });

  test('a Viewer sees a disk\'s properties and can browse files, but no form that would change anything is shown', async () => {
    const html = await viewer.text(inspectHref(disk));
    assert.equal(property(html, 'Type'), 'Dynamic');
    assert.match(html, /id="disk-no-actions"/);
    assert.doesNotMatch(html, /method="post" action="\/disks\//);
    const create = await viewer.text('/disks/create');
    assert.doesNotMatch(create, /action="\/disks\/create"/);
    assert.match(create, /needs the <strong>change<\/strong> right/);
    assert.equal((await viewer.get('/files?kind=vhd')).status, 200);
  });

  test('a Viewer\'s direct POSTs are refused by the API with 403, and nothing changes', async () => {
    const size = virtualSize(disk);
    const tasks = await taskCount();
    const posts: Array<[string, Record<string, string>]> = [
      ['/disks/expand', { path: disk, size: '64', unit: 'MB' }],
      ['/disks/compact', { path: disk }],
      ['/disks/convert', { path: disk, type: 'Fixed', target: 'rights/copy.vhd' }],
      ['/disks/create', { type: 'Dynamic', path: 'rights/new.vhd', size: '16', unit: 'MB' }],
    ];
    for (const [pathname, fields] of posts) {
      const response = await viewer.post(pathname, fields);
      assert.equal(response.status, 403, `${pathname}: ${response.status}`);
      assert.match(await response.text(), /change/, 'the refusal names the right missing');
    }
    assert.equal(virtualSize(disk), size);
    assert.equal(fs.existsSync(inRoot('rights', 'copy.vhd')), false);
    assert.equal(fs.existsSync(inRoot('rights', 'new.vhd')), false);
    assert.equal(await taskCount(), tasks);
  });

  test('a form without the session\'s CSRF token, or with another, is refused with 403 and makes nothing', async () => {
    for (const csrf of [null, 'not-the-token']) {
      const create = await site.post('/disks/create', { type: 'Dynamic', path: 'rights/forged.vhd', size: '16', unit: 'MB' }, { csrf });
      assert.equal(create.status, 403);
      assert.match(await create.text(), /CSRF/);
      const expand = await site.post('/disks/expand', { path: disk, size: '64', unit: 'MB' }, { csrf });
      assert.equal(expand.status, 403);
    }
    assert.equal(fs.existsSync(inRoot('rights', 'forged.vhd')), false);
    assert.ok(virtualSize(disk) < 64 * MiB);
  });
});
