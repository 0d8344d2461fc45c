// The Virtual Server pages over HTTP, against a real vserverd: Server Properties and Website
// Properties show the service's real values; the Event Viewer's filters and pages give exactly
// the entries the API gives for the same filter; Users and Permissions changes users, tokens and
// access entries through the API, shows refusals beside their fields, and is for administrators
// only; an idle session really ends (with the server's clock moved on, not waited for). One test
// opens the Event Viewer in a real browser to see new events arrive.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { fieldOf, htmlPattern } from '../server/api/fields.js';
import { launchBrowser, markPage, newContext, signIn } from './helpers/browser.js';
import { ADMIN_PASSWORD, TestServer, login } from './helpers/server.js';
import { SiteSession, fieldError, unescapeHtml } from './helpers/site.js';

interface Ref { $ref: string }
interface LoggedEvent { id: number; time: string; category: string; severity: string; message: string; who: string; object: string | null }
interface HostInfo { engine: string; engineReason: string; qemuVersion: string; hostName: string }

/** The server runs in a zone east of UTC with a half hour, so that times read and shown in the server's zone are seen to be. */
const TIME_ZONE = 'Asia/Kolkata';
const ZONE_OFFSET_MS = 330 * 60_000;

let server: TestServer;
let admin: SiteSession;
let roots: string[];
let configDir: string;
let alpha: { ref: string; id: string };
let beta: { ref: string; id: string };

describe('the Virtual Server pages', { timeout: 180_000 }, () => {
  before(async () => {
    configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-site-server-'));
    roots = [path.join(configDir, 'root-one'), path.join(configDir, 'root-two')];
    for (const root of roots) fs.mkdirSync(root);
    const config = path.join(configDir, 'vserver.json');
    fs.writeFileSync(config, JSON.stringify({ allowedOrigins: ['https://ops.example.test'], sessionTimeoutMinutes: 45 }));
    server = await TestServer.start({
      args: ['--config', config, '--storage-root', roots[0], '--storage-root', roots[1]],
      env: { TZ: TIME_ZONE, VSERVER_SESSION_MINUTES: '7', VSERVER_THUMBNAIL_SECONDS: '9' },
    });
    alpha = vmOf(await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'alpha' }));
    beta = vmOf(await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'beta' }));
    await server.call('VirtualServer.CreateUser', { name: 'vic', role: 'Viewer', password: 'viewer-password' });
    await server.call('VirtualServer.CreateUser', { name: 'opal', role: 'Operator', password: 'operator-password' });
    admin = await SiteSession.signIn(server.url, 'admin', ADMIN_PASSWORD);
  });

  after(async () => {
    await server?.stop();
    server?.remove();
    if (configDir) fs.rmSync(configDir, { recursive: true, force: true });
  });

  describe('Server Properties', () => {
    it('shows the engine and the reason get_HostInfo gives, the storage roots and the profile limits', async () => {
      const host = await server.call<HostInfo>('VirtualServer.get_HostInfo');
      const page = await admin.text('/server');
      assert.match(page, /<h1>Server Properties<\/h1>/);
      assert.equal(cell(page, 'engine-reason'), escapeHtml(host.engineReason));
      assert.match(cell(page, 'engine'), host.engine === 'kvm' ? /^KVM/ : /^TCG/);
      assert.equal(cell(page, 'qemu-version'), escapeHtml(host.qemuVersion));
      assert.equal(cell(page, 'host-name'), escapeHtml(host.hostName));
      assert.equal(cell(page, 'version'), await server.call<string>('VirtualServer.get_Version'));
      const shownRoots = [...page.matchAll(/<li><code>([^<]+)<\/code><\/li>/g)].map((m) => m[1]);
      assert.deepEqual(shownRoots, roots.map(escapeHtml));
      const maxMemory = await server.call<number>('VirtualServer.get_MaximumMemoryPerVM');
      assert.match(page, new RegExp(`<dt>Memory per VM, most</dt><dd>${maxMemory} MB</dd>`));
      const adapters = await server.call<number>('VirtualServer.get_MaximumNetworkAdaptersPerVM');
      assert.match(page, new RegExp(`<dt>Network adapters per VM</dt><dd>${adapters} </dd>`));
    });
  });

  describe('Website Properties', () => {
    it('shows the session idle time set by VSERVER_SESSION_MINUTES, the thumbnail interval, the address and the allowed origins', async () => {
      const asked = Date.now();
      const page = await admin.text('/website');
      const answered = Date.now();
      assert.equal(cell(page, 'session-timeout', 'span'), '7 minutes', 'the environment wins over the config file');
      assert.equal(cell(page, 'thumbnail-seconds', 'span'), '9 seconds');
      assert.equal(cell(page, 'listening', 'code'), new URL(server.url).host);
      assert.match(page, /<li><code>https:\/\/ops\.example\.test<\/code><\/li>/);
      const expires = Date.parse(/<time class="session-expires" datetime="([^"]+)">/.exec(page)?.[1] ?? '');
      assert.ok(expires >= asked + 7 * 60_000 && expires <= answered + 7 * 60_000, 'the session ends 7 idle minutes after this request');
    });
  });

  describe('Event Viewer', () => {
    let all: LoggedEvent[];

    before(async () => {
      // A Warning (a refused call), and changes to each VM.
      const vicToken = await login(server.url, 'vic', 'viewer-password');
      await assert.rejects(server.call('VirtualServer.CreateVirtualMachine', { name: 'not-allowed' }, vicToken));
      await server.call('VirtualMachine.put_Memory', { this: alpha.ref, value: 256 });
      await server.call('VirtualMachine.put_Notes', { this: beta.ref, value: 'first note' });
      all = await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { limit: 1000 });
    });

    it('shows the newest events first, in the server time zone, with a VM as a link to its page', async () => {
      const page = await admin.text('/events');
      const rows = eventRows(page);
      const newest = await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { newestFirst: true, limit: 50 });
      assert.deepEqual(rows.map((r) => r.id), newest.map((e) => e.id));
      const memory = rows.find((r) => r.message.includes('put_Memory'))!;
      const logged = newest.find((e) => e.id === memory.id)!;
      assert.equal(memory.time, new Date(Date.parse(logged.time) + ZONE_OFFSET_MS).toISOString().slice(0, 19).replace('T', ' '));
      assert.equal(memory.object, `<a href="/vms/${alpha.id}" title="${alpha.ref}">alpha</a>`);
      assert.equal(memory.who, 'admin');
    });

    it('narrows to a category', async () => {
      const rows = eventRows(await admin.text('/events?category=Security'));
      const expected = all.filter((e) => e.category === 'Security');
      assert.ok(expected.length > 0 && expected.length < all.length);
      assert.deepEqual(rows.map((r) => r.id), expected.map((e) => e.id).reverse());
      assert.ok(rows.some((r) => r.message.includes('vic was refused VirtualServer.CreateVirtualMachine')));
    });

    it('narrows to a severity', async () => {
      const rows = eventRows(await admin.text('/events?severity=Warning'));
      const expected = all.filter((e) => e.severity === 'Warning');
      assert.ok(expected.length > 0 && expected.length < all.length);
      assert.deepEqual(rows.map((r) => r.id), expected.map((e) => e.id).reverse());
      assert.ok(rows.every((r) => r.severity === 'Warning'));
    });

    it('narrows to a VM', async () => {
      const rows = eventRows(await admin.text(`/events?vm=${alpha.id}`));
      const expected = all.filter((e) => e.object === alpha.ref);
      assert.ok(expected.length > 0);
      assert.deepEqual(rows.map((r) => r.id), expected.map((e) => e.id).reverse());
      assert.ok(rows.some((r) => r.message.includes('put_Memory')));
      assert.ok(!rows.some((r) => r.message.includes('first note')), 'beta\'s change is not shown');
    });

    it('narrows to a time range given in the server\'s time zone, both ends included', async () => {
      const times = [...new Set(all.map((e) => Date.parse(e.time)))].sort((a, b) => a - b);
      assert.ok(times.length >= 3, 'the events span at least three instants');
      const middle = times[Math.floor(times.length / 2)];
      const local = new Date(middle + ZONE_OFFSET_MS).toISOString().slice(0, 23);

      const from = eventRows(await admin.text(`/events?from=${local}`));
      assert.deepEqual(from.map((r) => r.id), all.filter((e) => Date.parse(e.time) >= middle).map((e) => e.id).reverse());
      const to = eventRows(await admin.text(`/events?to=${local}`));
      assert.deepEqual(to.map((r) => r.id), all.filter((e) => Date.parse(e.time) <= middle).map((e) => e.id).reverse());
      assert.ok(from.length < all.length && to.length < all.length && from.length > 0 && to.length > 0);

      // A "to" without seconds takes in the whole minute.
      const minuteEnd = Math.floor((middle + ZONE_OFFSET_MS) / 60_000) * 60_000 + 60_000 - ZONE_OFFSET_MS;
      const wholeMinute = eventRows(await admin.text(`/events?to=${local.slice(0, 16)}`));
      assert.deepEqual(wholeMinute.map((r) => r.id), all.filter((e) => Date.parse(e.time) < minuteEnd).map((e) => e.id).reverse());
    });

    it('refuses a filter it cannot read, beside the field, with status 400', async () => {
      const badTime = await admin.get('/events?from=yesterday');
      assert.equal(badTime.status, 400);
      const page = await badTime.text();
      assert.match(fieldError(page, 'from') ?? '', /"yesterday" is not a date and time/);
      assert.deepEqual(eventRows(page), []);

      const reversed = await admin.get('/events?from=2030-01-02T00:00&to=2030-01-01T00:00');
      assert.equal(reversed.status, 400);
      assert.match(fieldError(await reversed.text(), 'to') ?? '', /must not be before "from"/);

      const badCategory = await admin.get('/events?category=Gossip');
      assert.equal(badCategory.status, 400);
      assert.match(fieldError(await badCategory.text(), 'category') ?? '', /category/);

      const badVm = await admin.get('/events?vm=no-such-vm');
      assert.equal(badVm.status, 400);
      assert.match(fieldError(await badVm.text(), 'vm') ?? '', /no virtual machine no-such-vm/);
    });

    it('pages back by id, across more than one window of the log, without losing or repeating an entry', async () => {
      // alpha: 5 old changes, then 1100 of beta's, then 55 new ones of alpha's.
      await batch(Array.from({ length: 5 }, (_, i) => ['VirtualMachine.put_Notes', { this: alpha.ref, value: `old ${i}` }]));
      await batch(Array.from({ length: 1000 }, (_, i) => ['VirtualMachine.put_Notes', { this: beta.ref, value: `filler ${i}` }]));
      await batch(Array.from({ length: 100 }, (_, i) => ['VirtualMachine.put_Notes', { this: beta.ref, value: `more filler ${i}` }]));
      await batch(Array.from({ length: 55 }, (_, i) => ['VirtualMachine.put_Notes', { this: alpha.ref, value: `new ${i}` }]));
      const expected = (await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { object: alpha.ref, limit: 1000 })).map((e) => e.id).reverse();

      const seen: number[] = [];
      let next: string | null = `/events?vm=${alpha.id}`;
      let pages = 0;
      while (next) {
        const page = await admin.text(next);
        seen.push(...eventRows(page).map((r) => r.id));
        next = /<a class="button" href="([^"]+)" rel="next">Older events<\/a>/.exec(page)?.[1].replaceAll('&amp;', '&') ?? null;
        pages++;
        assert.ok(pages < 10, 'the pages come to an end');
      }
      assert.ok(pages >= 2);
      assert.deepEqual(seen, expected);
    });

    it('gives the rows newer than an id that the filter allows, for the live page', async () => {
      const [newest] = await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { newestFirst: true, limit: 1 });
      await server.call('VirtualMachine.put_Notes', { this: beta.ref, value: 'live beta' });
      await server.call('VirtualMachine.put_Notes', { this: alpha.ref, value: 'live alpha' });
      const rows = eventRows(await admin.text(`/events/rows?vm=${alpha.id}&after=${newest.id}`));
      assert.equal(rows.length, 1);
      assert.match(rows[0].message, /live alpha/);
      assert.ok(rows[0].id > newest.id);
      assert.deepEqual(eventRows(await admin.text(`/events/rows?vm=${alpha.id}&after=${newest.id}&from=2999-01-01T00:00`)), [], 'nothing logged now is after a "from" to come');
    });

    it('puts new events that match the filter on top of the open page, without a reload', async () => {
      const browser = await launchBrowser();
      try {
        const context = await newContext(browser, server.url);
        await signIn(await context.newPage(), 'admin', ADMIN_PASSWORD);
        // A page of its own, so that the socket awaited is the Event Viewer's.
        const page = await context.newPage();
        const socket = page.waitForEvent('websocket');
        await page.goto(`/events?vm=${alpha.id}`);
        const stillSamePage = await markPage(page);
        // An event about beta shows the socket is listening, and must not be added to alpha's events.
        const heard = (await socket).waitForEvent('framereceived', (frame) => String(frame.payload).includes('live in the browser, beta'));
        await server.call('VirtualMachine.put_Notes', { this: beta.ref, value: 'live in the browser, beta' });
        await heard;
        await server.call('VirtualMachine.put_Notes', { this: alpha.ref, value: 'live in the browser, alpha' });
        await page.locator('tbody tr[data-event]').first().filter({ hasText: 'live in the browser, alpha' }).waitFor();
        assert.equal(await page.locator('tbody tr', { hasText: 'live in the browser, beta' }).count(), 0);
        assert.ok(await stillSamePage());
      } finally {
        await browser.close();
      }
    });

    it('shows a Viewer no Security events, and no Security category to choose', async () => {
      const vic = await SiteSession.signIn(server.url, 'vic', 'viewer-password');
      const page = await vic.text('/events');
      assert.ok(eventRows(page).length > 0);
      assert.ok(eventRows(page).every((r) => r.category !== 'Security'));
      assert.doesNotMatch(page, /<option value="Security"/);
      assert.deepEqual(eventRows(await vic.text('/events?category=Security')), []);
    });
  });

  describe('Users and Permissions', () => {
    it('creates a user, changes the role, sets a password that then signs in, and deletes the user', async () => {
      const created = await admin.post('/users', { name: 'olga', role: 'Operator', password: 'olga-password-1' });
      assert.equal(created.status, 303);
      assert.match(created.headers.get('location') ?? '', /^\/users\?done=created&name=olga#users$/);
      assert.deepEqual(await userRole('olga'), 'Operator');
      const page = await admin.text('/users?done=created&name=olga');
      assert.match(page, /User olga was created\./);
      assert.match(page, /<tr data-user="olga">/);

      assert.equal((await admin.post('/users/olga/role', { role: 'Viewer' })).status, 303);
      assert.equal(await userRole('olga'), 'Viewer');

      assert.equal((await admin.post('/users/olga/password', { password: 'olga-password-2' })).status, 303);
      await assert.rejects(login(server.url, 'olga', 'olga-password-1'));
      await SiteSession.signIn(server.url, 'olga', 'olga-password-2');

      assert.equal((await admin.post('/users/olga/delete', {})).status, 303);
      assert.equal(await userRole('olga'), undefined);
    });

    it('refuses a duplicate name, a bad role and a short password beside the field, and changes nothing', async () => {
      await server.call('VirtualServer.CreateUser', { name: 'dora', role: 'Viewer', password: 'dora-password' });
      const before = await server.call<unknown[]>('VirtualServer.get_Users');

      const duplicate = await admin.post('/users', { name: 'dora', role: 'Operator', password: 'another-password' });
      assert.equal(duplicate.status, 400);
      const page = await duplicate.text();
      assert.match(fieldError(page, 'name') ?? '', /a user named dora already exists/);
      assert.match(page, /<input id="name" name="name" value="dora"/, 'the name given is kept in the form');
      assert.doesNotMatch(page, /another-password/, 'the password is not sent back');

      const badRole = await admin.post('/users', { name: 'emma', role: 'Emperor', password: 'emma-password' });
      assert.equal(badRole.status, 400);
      assert.match(fieldError(await badRole.text(), 'role') ?? '', /Administrator/);

      const short = await admin.post('/users', { name: 'emma', role: 'Viewer', password: 'short' }, { json: true });
      assert.equal(short.status, 400);
      const answer = await short.json() as { error: { message: string; fields: Record<string, string> } };
      assert.match(answer.error.fields.password, /at least 8 characters/);

      const myself = await admin.post('/users/admin/delete', {});
      assert.equal(myself.status, 400);
      assert.match(fieldError(await myself.text(), 'delete-admin') ?? '', /you are signed in as admin/);

      assert.deepEqual(await server.call('VirtualServer.get_Users'), before);
    });

    it('the Add a user name field takes its length, pattern and hint from CreateUser\'s declaration, and a browser applies the pattern', async () => {
      const name = fieldOf('VirtualServer.CreateUser', 'name');
      const page = await admin.text('/users');
      const input = /<input id="name" name="name"[^>]*>/.exec(page)?.[0] ?? '';
      assert.match(input, new RegExp(` maxlength="${name.maxLength}" `), input);
      assert.ok(input.includes(` pattern="${htmlPattern(name.pattern!)}" `), input);
      const hint = /<span class="hint" id="name-hint">([^<]*)<\/span>/.exec(page)?.[1] ?? '';
      assert.equal(unescapeHtml(hint), `${name.help} Up to ${name.maxLength} characters.`);
      const browser = await launchBrowser();
      try {
        const context = await newContext(browser, server.url);
        const tab = await context.newPage();
        await signIn(tab, 'admin', ADMIN_PASSWORD);
        await tab.goto('/users');
        const field = tab.locator('#name');
        const mismatch = async (value: string): Promise<boolean> => {
          await field.fill(value);
          return field.evaluate((el) => (el as HTMLInputElement).validity.patternMismatch);
        };
        assert.equal(await mismatch('a b'), true, 'a space is not in the declared pattern');
        assert.equal(await mismatch('a/b'), true);
        assert.equal(await mismatch('x.y_z-1'), false, 'letters, digits, ".", "_" and "-" are');
        assert.equal(await field.evaluate((el) => (el as HTMLInputElement).maxLength), name.maxLength);
      } finally {
        await browser.close();
      }
    });

    it('lists API tokens and revokes one', async () => {
      const token = await server.call<{ id: string; token: string }>('VirtualServer.CreateToken', { description: 'backup script', role: 'Viewer' });
      const page = await admin.text('/users');
      assert.match(page, new RegExp(`<tr data-token="${token.id}">[\\s\\S]*?backup script`));
      assert.equal((await admin.post(`/users/tokens/${token.id}/revoke`, {})).status, 303);
      const tokens = await server.call<{ id: string }[]>('VirtualServer.get_Tokens');
      assert.ok(!tokens.some((t) => t.id === token.id));
      await assert.rejects(server.call('VirtualServer.get_Name', {}, token.token), /sign in/);
    });

    it('adds an access entry that the API lists and that takes effect, and removes it', async () => {
      const vicToken = await login(server.url, 'vic', 'viewer-password');
      const vicSees = async (): Promise<string[]> => (await server.call<Ref[]>('VirtualServer.get_VirtualMachines', {}, vicToken)).map((r) => r.$ref);
      assert.ok((await vicSees()).includes(alpha.ref));

      const added = await admin.post('/users/permissions', { object: alpha.ref, who: 'vic', type: 'Denied', rights: 'read' });
      assert.equal(added.status, 303);
      assert.deepEqual(await server.call('Security.get_AccessRights', { this: `Security/${alpha.ref}` }), [{ name: 'vic', type: 'Denied', rights: ['read'] }]);
      assert.deepEqual(await vicSees(), [beta.ref]);
      const vic = await SiteSession.signIn(server.url, 'vic', 'viewer-password');
      assert.doesNotMatch(await vic.text('/'), new RegExp(alpha.id));
      assert.match(await admin.text(`/users?object=${encodeURIComponent(alpha.ref)}`), /<tr data-entry="vic">[\s\S]*?Denied[\s\S]*?read/);

      // Several rights in one entry, for everyone with a role.
      const both = await postFields(admin, '/users/permissions', [['object', beta.ref], ['who', 'role:Viewer'], ['type', 'Allowed'], ['rights', 'control'], ['rights', 'change']]);
      assert.equal(both.status, 303);
      assert.deepEqual(await server.call('Security.get_AccessRights', { this: `Security/${beta.ref}` }), [{ name: 'role:Viewer', type: 'Allowed', rights: ['control', 'change'] }]);
      assert.deepEqual((await server.call<string[]>('Security.get_CurrentUserAccessRights', { this: `Security/${beta.ref}` }, vicToken)).sort(), ['change', 'control', 'read']);

      assert.equal((await admin.post('/users/permissions/remove', { object: alpha.ref, who: 'vic' })).status, 303);
      assert.equal((await admin.post('/users/permissions/remove', { object: beta.ref, who: 'role:Viewer' })).status, 303);
      assert.deepEqual(await server.call('Security.get_AccessRights', { this: `Security/${alpha.ref}` }), []);
      assert.ok((await vicSees()).includes(alpha.ref));
    });

    it('refuses an entry for nobody, or with no rights, beside the field, and changes nothing', async () => {
      const nobody = await admin.post('/users/permissions', { object: 'VirtualServer', who: 'nobody', type: 'Allowed', rights: 'change' });
      assert.equal(nobody.status, 400);
      assert.match(fieldError(await nobody.text(), 'who') ?? '', /there is no user named nobody/);
      const none = await admin.post('/users/permissions', { object: 'VirtualServer', who: 'vic', type: 'Allowed' });
      assert.equal(none.status, 400);
      assert.match(fieldError(await none.text(), 'rights') ?? '', /choose at least one right/);
      const badObject = await admin.post('/users/permissions', { object: 'HardDisk/x.vhd', who: 'vic', type: 'Allowed', rights: 'read' });
      assert.equal(badObject.status, 400);
      assert.match(fieldError(await badObject.text(), 'object') ?? '', /neither the server nor a virtual machine/);
      assert.deepEqual(await server.call('Security.get_AccessRights', { this: 'Security/VirtualServer' }), []);
    });

    it('is for administrators: an Operator or a Viewer gets 403 on the page and on every form, and nothing changes', async () => {
      const users = await server.call('VirtualServer.get_Users');
      for (const [name, password] of [['opal', 'operator-password'], ['vic', 'viewer-password']]) {
        const session = await SiteSession.signIn(server.url, name, password);
        assert.equal((await session.get('/users')).status, 403, name);
        assert.doesNotMatch(await session.text('/'), /href="\/users"/, `${name}'s navigation has no Users and Permissions`);
        assert.equal((await session.post('/users', { name: 'intruder', role: 'Administrator', password: 'intruder-password' })).status, 403);
        assert.equal((await session.post(`/users/${name}/role`, { role: 'Administrator' })).status, 403);
        assert.equal((await session.post('/users/admin/password', { password: 'taken-over!' })).status, 403);
        assert.equal((await session.post('/users/vic/delete', {})).status, 403);
        assert.equal((await session.post('/users/permissions', { object: alpha.ref, who: name, type: 'Allowed', rights: 'changePermissions' })).status, 403);
        // The other Virtual Server pages are for everyone who may read the server.
        assert.equal((await session.get('/server')).status, 200);
        assert.equal((await session.get('/website')).status, 200);
      }
      assert.deepEqual(await server.call('VirtualServer.get_Users'), users);
      assert.deepEqual(await server.call('Security.get_AccessRights', { this: `Security/${alpha.ref}` }), []);
      await login(server.url, 'admin', ADMIN_PASSWORD);
    });

    it('refuses forms without the session\'s CSRF token', async () => {
      const users = await server.call('VirtualServer.get_Users');
      assert.equal((await admin.post('/users', { name: 'sneaky', role: 'Administrator', password: 'sneaky-password' }, { csrf: null })).status, 403);
      assert.equal((await admin.post('/users/vic/delete', {}, { csrf: 'not-the-token' })).status, 403);
      assert.equal((await admin.post('/users/permissions', { object: alpha.ref, who: 'vic', type: 'Denied', rights: 'read' }, { csrf: null })).status, 403);
      assert.deepEqual(await server.call('VirtualServer.get_Users'), users);
      assert.deepEqual(await server.call('Security.get_AccessRights', { this: `Security/${alpha.ref}` }), []);
    });
  });
});

describe('an idle website session', { timeout: 60_000 }, () => {
  let idle: TestServer;
  let folder: string;

  before(async () => {
    // vserverd's clock is moved on by a preloaded module that adds the offset in a file to Date.now.
    folder = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-clock-'));
    fs.writeFileSync(path.join(folder, 'offset'), '0');
    fs.writeFileSync(path.join(folder, 'clock.mjs'), [
      "import fs from 'node:fs';",
      'const now = Date.now;',
      `Date.now = () => now() + Number(fs.readFileSync(${JSON.stringify(path.join(folder, 'offset'))}, 'utf8'));`,
    ].join('\n'));
    idle = await TestServer.start({ env: { VSERVER_SESSION_MINUTES: '2', NODE_OPTIONS: `--import=${pathToFileURL(path.join(folder, 'clock.mjs')).href}` } });
  });

  after(async () => {
    await idle?.stop();
    idle?.remove();
    if (folder) fs.rmSync(folder, { recursive: true, force: true });
  });

  it('ends after the configured idle time; each request restarts that time, the page\'s background refreshes do not', async () => {
    const session = await SiteSession.signIn(idle.url, 'admin', ADMIN_PASSWORD);
    fs.writeFileSync(path.join(folder, 'offset'), String(90_000));
    assert.equal((await session.get('/website')).status, 200, 'a minute and a half idle: still signed in');
    fs.writeFileSync(path.join(folder, 'offset'), String(90_000 + 110_000));
    assert.equal((await session.get('/website')).status, 200, 'under two minutes since the last request');
    // The page's own refreshes (Master Status's rows, a task's progress) do not count as activity.
    fs.writeFileSync(path.join(folder, 'offset'), String(90_000 + 110_000 + 100_000));
    assert.equal((await session.get('/', { 'x-vserver-background': '1' })).status, 200, 'a background refresh within the idle time is answered');
    fs.writeFileSync(path.join(folder, 'offset'), String(90_000 + 110_000 + 121_000));
    const ended = await session.get('/website');
    assert.equal(ended.status, 303);
    assert.equal(ended.headers.get('location'), '/login');
    assert.equal((await session.post('/users', { name: 'late', role: 'Viewer', password: 'late-password' })).status, 303, 'a form of an ended session goes to sign in');
    assert.ok(!(await idle.call<{ name: string }[]>('VirtualServer.get_Users')).some((u) => u.name === 'late'));
  });
});

function vmOf(made: Ref): { ref: string; id: string } {
  return { ref: made.$ref, id: made.$ref.slice('VirtualMachine/'.length) };
}

async function userRole(name: string): Promise<string | undefined> {
  return (await server.call<{ name: string; role: string }[]>('VirtualServer.get_Users')).find((u) => u.name === name)?.role;
}

/** Many calls in one JSON-RPC batch, as the administrator. */
async function batch(calls: [string, Record<string, unknown>][]): Promise<void> {
  const response = await fetch(`${server.url}/api/rpc`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${server.adminToken}` },
    body: JSON.stringify(calls.map(([method, params], id) => ({ jsonrpc: '2.0', id, method, params }))),
  });
  const answers = await response.json() as { error?: { message: string } }[];
  assert.deepEqual(answers.filter((a) => a.error), []);
}

/** POSTs fields that may repeat (checkboxes), with the session's CSRF token. */
function postFields(session: SiteSession, page: string, fields: [string, string][]): Promise<Response> {
  const body = new URLSearchParams([...fields, ['_csrf', session.csrf]]);
  return fetch(`${session.url}${page}`, { method: 'POST', body, redirect: 'manual', headers: { cookie: session.cookie } });
}

interface EventRow { id: number; severity: string; time: string; category: string; message: string; who: string; object: string }

function eventRows(page: string): EventRow[] {
  return [...page.matchAll(/<tr data-event="(\d+)" class="severity-(\w+)">([\s\S]*?)<\/tr>/g)].map((m) => ({
    id: Number(m[1]), severity: m[2], time: /<time datetime="[^"]+">([^<]*)<\/time>/.exec(m[3])?.[1] ?? '',
    category: cell(m[3], 'category'), message: cell(m[3], 'message'), who: cell(m[3], 'who'), object: cell(m[3], 'object'),
  }));
}

/** The content of the first element of `tag` with the class `name`. */
function cell(html: string, name: string, tag = '(?:td|dd)'): string {
  const match = new RegExp(`<${tag} class="${name}">([\\s\\S]*?)</${tag}>`).exec(html);
  return match?.[1].trim() ?? '';
}

function escapeHtml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&#34;').replace(/'/g, '&#39;');
}
