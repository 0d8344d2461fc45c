// The website's frame and Master Status over plain HTTP, against a real vserverd: what a
// signed-out browser gets, CSRF on forms, what a Viewer sees and may do, the row fragments and
// thumbnails the page's script reads, and the console assets served from the npm packages.
// (test/site-browser.test.ts drives the same pages in a real browser with a running guest.)

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ADMIN_PASSWORD, TestServer, login } from './helpers/server.js';
import { SiteSession } from './helpers/site.js';

interface Ref { $ref: string }

let server: TestServer;
let admin: SiteSession;
let viewer: SiteSession;
let vm: { ref: string; id: string };

describe('the website frame and Master Status', { timeout: 120_000 }, () => {
  before(async () => {
    server = await TestServer.start();
    const made = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'status-vm' });
    vm = { ref: made.$ref, id: made.$ref.slice('VirtualMachine/'.length) };
    await server.call('VirtualServer.CreateUser', { name: 'vera', role: 'Viewer', password: 'viewer-password' });
    admin = await SiteSession.signIn(server.url, 'admin', ADMIN_PASSWORD);
    viewer = await SiteSession.signIn(server.url, 'vera', 'viewer-password');
  });

  after(async () => {
    await server?.stop();
    server?.remove();
  });

  it('sends a signed-out browser to sign in, from every page and asset', async () => {
    for (const page of ['/', '/vms', `/vms/${vm.id}`, '/disks/create', '/events', '/users', '/static/site.js', '/assets/novnc/core/rfb.js', `/vms/${vm.id}/thumbnail`]) {
      const response = await fetch(`${server.url}${page}`, { redirect: 'manual' });
      assert.equal(response.status, 303, page);
      assert.equal(response.headers.get('location'), '/login', page);
    }
    const post = await fetch(`${server.url}/vms/${vm.id}/power`, { method: 'POST', body: new URLSearchParams({ action: 'turnOn' }), redirect: 'manual' });
    assert.equal(post.status, 303);
    assert.equal(post.headers.get('location'), '/login');
  });

  it('refuses a wrong password on the sign-in form with the message on the page', async () => {
    const response = await fetch(`${server.url}/login`, { method: 'POST', body: new URLSearchParams({ user: 'admin', password: 'wrong' }), redirect: 'manual' });
    assert.equal(response.status, 401);
    assert.match(await response.text(), /the user name or password is wrong/);
  });

  it('lists the VM with its state and the actions its state allows', async () => {
    const page = await admin.text('/');
    assert.match(page, /<title>Master Status - vserver<\/title>/);
    const row = rowOf(page, vm.id);
    assert.match(row, /data-state="TurnedOff"/);
    assert.match(row, /status-vm/);
    assert.match(row, /data-action="turnOn"/);
    assert.match(row, /data-action="configure"/);
    assert.match(row, /data-action="remove"/);
    assert.doesNotMatch(row, /data-action="(save|turnOff|pause|reset|shutdown|remoteControl)"/, 'a turned-off VM offers no running-VM actions');
    assert.match(row, /class="thumbnail blank"/, 'a turned-off VM has a blank thumbnail');
  });

  it('serves a row on its own for the page\'s script, and no thumbnail while the VM is off', async () => {
    const fragment = await admin.text(`/status/rows/${vm.id}`);
    assert.match(fragment, /^<tr class="vm-row" data-vm=/);
    assert.equal((await admin.get(`/vms/${vm.id}/thumbnail`)).status, 204);
    assert.equal((await admin.get('/status/rows/00000000-0000-0000-0000-000000000000')).status, 404);
  });

  it('shows a Viewer the VM but no action, and refuses the Viewer\'s direct POST', async () => {
    const page = await viewer.text('/');
    const row = rowOf(page, vm.id);
    assert.match(row, /status-vm/);
    assert.doesNotMatch(row, /data-action=/, 'no buttons for a Viewer');
    assert.doesNotMatch(page, /href="\/users"/, 'Users and Permissions is not offered to a Viewer');
    const response = await viewer.post(`/vms/${vm.id}/power`, { action: 'turnOn' });
    assert.equal(response.status, 403);
    assert.match(await response.text(), /Turn On: .*(denied|right)/i);
    assert.equal(await server.call('VirtualMachine.get_State', { this: vm.ref }), 'TurnedOff');
  });

  it('refuses a form without its CSRF token, or with another session\'s, and changes nothing', async () => {
    const none = await admin.post(`/vms/${vm.id}/power`, { action: 'turnOn' }, { csrf: null });
    assert.equal(none.status, 403);
    assert.match(await none.text(), /CSRF/);
    const other = await admin.post(`/vms/${vm.id}/power`, { action: 'turnOn' }, { csrf: viewer.csrf });
    assert.equal(other.status, 403);
    const foreign = await admin.post(`/vms/${vm.id}/power`, { action: 'turnOn' }, { headers: { origin: 'http://evil.example' } });
    assert.equal(foreign.status, 403);
    assert.equal(await server.call('VirtualMachine.get_State', { this: vm.ref }), 'TurnedOff');
    const tasks = await server.call<Ref[]>('VirtualServer.get_Tasks');
    assert.equal(tasks.length, 0, 'no Startup task was made');
  });

  it('answers an unknown action and a refused one with a message (JSON for the page\'s script)', async () => {
    const unknown = await admin.post(`/vms/${vm.id}/power`, { action: 'explode' });
    assert.equal(unknown.status, 400);
    assert.match(await unknown.text(), /unknown action (&#34;|")explode/);
    const refused = await admin.post(`/vms/${vm.id}/power`, { action: 'pause' }, { json: true });
    assert.equal(refused.status, 409);
    const body = await refused.json() as { error: { message: string } };
    assert.match(body.error.message, /^Pause: status-vm is TurnedOff; it must be Running/);
  });

  it('answers a power action on a VM that does not exist with 404, and Discard Saved State on a turned-off VM with 409', async () => {
    const unknown = await admin.post('/vms/00000000-0000-4000-8000-000000000000/power', { action: 'turnOn' });
    assert.equal(unknown.status, 404);
    assert.match(await unknown.text(), /Turn On: there is no virtual machine/);
    const discard = await admin.post(`/vms/${vm.id}/power`, { action: 'discard' }, { json: true });
    assert.equal(discard.status, 409);
    assert.match((await discard.json() as { error: { message: string } }).error.message, /^Discard Saved State: .*only a Saved VM has a saved state/);
    assert.equal(await server.call('VirtualMachine.get_State', { this: vm.ref }), 'TurnedOff');
  });

  it('does not serve pages to a bearer token: scripts use the API', async () => {
    const token = await login(server.url, 'admin', ADMIN_PASSWORD);
    const response = await fetch(`${server.url}/`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(response.status, 403);
    assert.match(await response.text(), /browser session/);
  });

  it('serves the consoles\' scripts and styles from the installed packages, and nothing beside them', async () => {
    for (const asset of ['/assets/novnc/core/rfb.js', '/assets/novnc/core/util/browser.js', '/assets/xterm/lib/xterm.mjs', '/assets/xterm/css/xterm.css', '/assets/xterm-addon-fit/lib/addon-fit.mjs']) {
      const response = await admin.get(asset);
      assert.equal(response.status, 200, asset);
      assert.match(response.headers.get('content-type') ?? '', /javascript|css/, asset);
    }
    for (const outside of ['/assets/novnc/package.json', '/assets/novnc/core/../../../package.json', '/assets/novnc/core/%2e%2e/%2e%2e/%2e%2e/package.json', '/assets/xterm/src/index.ts']) {
      assert.equal((await admin.get(outside)).status, 404, outside);
    }
  });

  it('signs out: the session no longer opens pages', async () => {
    const session = await SiteSession.signIn(server.url, 'admin', ADMIN_PASSWORD);
    const out = await session.post('/logout', {});
    assert.equal(out.status, 303);
    assert.equal(out.headers.get('location'), '/login');
    const after = await session.get('/');
    assert.equal(after.status, 303);
    assert.equal(after.headers.get('location'), '/login');
  });
});

/** The Master Status row of VM `id`, from <tr ...data-vm="id"> to its </tr>. */
function rowOf(page: string, id: string): string {
  const start = page.indexOf(`data-vm="${id}"`);
  assert.ok(start > 0, `the page has no row for ${id}`);
  return page.slice(start, page.indexOf('</tr>', start));
}
