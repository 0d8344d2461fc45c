/// <reference lib="dom" />
// The website in a real browser: Debian's chromium, driven by playwright-core, against a real
// vserverd running the real test guest. One VM goes through its life from the pages alone:
// its disk is made on Virtual Disks, the VM on Virtual Machines, it is turned on, watched,
// used through both consoles, saved, restored, paused, resumed and shut down from Master
// Status, each state arriving without a reload. Then a Viewer, a forged form, a signed-out
// browser, a console socket without a ticket and a refused configuration.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import { isAlive, processesMentioning } from '../host/process.js';
import { launchBrowser, markPage, newContext, policyViolations, saveArtifact, signIn } from './helpers/browser.js';
import { GUEST_READY_MARKER, testGuest } from './helpers/guest.js';
import { ADMIN_PASSWORD, TestServer } from './helpers/server.js';

/** Boot under TCG takes seconds; a state change through save and restore takes longer. */
const BOOT_MS = 120_000;
const STATE_MS = 90_000;

let server: TestServer;
let browser: Browser;
let admin: BrowserContext;
let page: Page;
let vmId = '';
let vmRef = '';
/** Every URL the admin's browser asked for: all must be vserverd's own. */
const requested: string[] = [];
/** What the admin's pages logged as errors, shown when a step fails. */
const pageErrors: string[] = [];

const row = (): Locator => page.locator(`tr.vm-row[data-vm="${vmId}"]`);
const state = (): Promise<unknown> => server.call('VirtualMachine.get_State', { this: vmRef });

/** Clicks a Master Status action of the VM and waits, on the same page, for the row to show `settled`. */
async function act(action: string, settled: string): Promise<void> {
  const samePage = await markPage(page);
  await row().locator(`button[data-action="${action}"]`).click();
  try {
    await page.locator(`tr.vm-row[data-vm="${vmId}"][data-state="${settled}"]`).waitFor({ timeout: STATE_MS });
  } catch (error) {
    const shown = await row().evaluate((element) => element.outerHTML).catch(() => '(no row)');
    throw new Error(`after ${action} the row did not show ${settled}; the API says ${String(await state())}.\nThe row: ${shown}\nThe page's errors: ${pageErrors.join('\n') || 'none'}\nvserverd said: ${server.output.slice(-2000)}`, { cause: error });
  }
  assert.ok(await samePage(), `the page was reloaded or left after ${action}`);
  assert.equal(await state(), settled);
}

/** How many different colours the image or canvas has: 1 is a blank screen. */
async function colours(target: Locator): Promise<number> {
  return target.evaluate((element) => {
    const source = element as HTMLImageElement | HTMLCanvasElement;
    const canvas = document.createElement('canvas');
    canvas.width = source.width;
    canvas.height = source.height;
    const context = canvas.getContext('2d')!;
    context.drawImage(source, 0, 0, canvas.width, canvas.height);
    const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const seen = new Set<number>();
    for (let i = 0; i < pixels.length; i += 4) seen.add((pixels[i] << 16) | (pixels[i + 1] << 8) | pixels[i + 2]);
    return seen.size;
  });
}

describe('the website in a real browser, with a real guest', { timeout: 900_000 }, () => {
  before(async () => {
    const guest = testGuest();
    server = await TestServer.start();
    fs.mkdirSync(path.join(server.dataDir, 'disks'), { recursive: true });
    fs.copyFileSync(guest.bootVhd, path.join(server.dataDir, 'disks', 'guest-boot.vhd'));
    await server.call('VirtualServer.CreateUser', { name: 'vic', role: 'Viewer', password: 'viewer-password' });
    browser = await launchBrowser();
    admin = await newContext(browser, server.url);
    page = await admin.newPage();
    page.on('request', (request) => requested.push(request.url()));
    page.on('console', (message) => { if (message.type() === 'error') pageErrors.push(message.text()); });
    page.on('pageerror', (error) => pageErrors.push(error.message));
  });

  after(async () => {
    await browser?.close();
    if (server) {
      try {
        if (vmRef && ['Running', 'Paused'].includes(String(await state()))) {
          await server.call('VirtualMachine.TurnOff', { this: vmRef });
        }
      } catch {
        // killed below
      }
      await server.stop();
      for (const pid of processesMentioning(server.runDir).filter(isAlive)) process.kill(pid, 'SIGKILL');
      server.remove();
    }
  });

  it('signs in through the form', async () => {
    await signIn(page, 'admin', ADMIN_PASSWORD);
    await page.getByRole('heading', { name: 'Master Status' }).waitFor();
    assert.match(await page.locator('header').innerText(), /Signed in as admin/);
  });

  it('creates a dynamic disk on Virtual Disks and shows its task finishing', async () => {
    await page.getByRole('link', { name: 'Create' }).nth(1).click();
    await page.waitForURL('**/disks/create');
    await page.getByLabel('Dynamic', { exact: true }).check();
    await page.getByLabel('New disk file').fill('disks/data.vhd');
    await page.getByLabel('Size in the guest').fill('1024');
    await page.getByLabel('Unit of the size').selectOption('MB');
    await page.getByRole('button', { name: 'Create' }).click();
    await page.waitForURL('**/tasks/*');
    await page.locator('#task[data-complete="true"]').waitFor();
    assert.match(await page.locator('#task-status').innerText(), /done/i);
    assert.equal(await page.locator('#task-progress').getAttribute('value'), '100');
    const disk = await server.call<{ $ref: string }>('VirtualServer.GetHardDisk', { path: 'disks/data.vhd' });
    assert.equal(await server.call('HardDisk.get_Type', { this: disk.$ref }), 'Dynamic');
  });

  it('creates a VM with the guest\'s boot disk, then adds the new disk on SCSI', async () => {
    await page.goto('/vms/create');
    await page.getByLabel('Name', { exact: true }).fill('browser-vm');
    await page.getByLabel('Memory (MB)').fill('256');
    await page.getByLabel('An existing disk').check();
    await page.getByLabel('.vhd file').fill('disks/guest-boot.vhd');
    await page.getByLabel('Attach it at').selectOption('SCSI');
    await page.getByLabel('Network adapter').selectOption('tulip');
    await page.getByRole('button', { name: 'Create' }).click();
    await page.waitForURL(/\/vms\/[0-9a-f-]{36}$/);
    vmId = new URL(page.url()).pathname.split('/').at(-1)!;
    vmRef = `VirtualMachine/${vmId}`;

    const disks = page.locator('#section-disks');
    await disks.getByLabel('.vhd file').fill('disks/data.vhd');
    await disks.getByLabel('Bus type').selectOption('SCSI');
    await disks.getByLabel('Bus number').fill('0');
    await disks.getByLabel('Device number').fill('1');
    await disks.getByRole('button', { name: /Add/ }).click();
    await page.waitForURL(/\/vms\/[0-9a-f-]{36}/);

    const config = await server.call<{ memoryMB: number; scsi: { disks: { target: number; path: string }[] }[]; networkAdapters: { model: string }[] }>('VirtualMachine.get_Configuration', { this: vmRef });
    assert.equal(config.memoryMB, 256);
    assert.deepEqual(config.scsi[0].disks.map((d) => [d.target, path.basename(d.path)]), [[0, 'guest-boot.vhd'], [1, 'data.vhd']]);
    assert.deepEqual(config.networkAdapters.map((n) => n.model), ['tulip']);
  });

  it('turns the VM on from Master Status: the row becomes Running without a reload and its thumbnail leaves blank', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Master Status' }).click();
    await page.waitForURL((url) => url.pathname === '/');
    assert.equal(await row().locator('.thumbnail.blank').count(), 1, 'the thumbnail is blank while the VM is off');
    await act('turnOn', 'Running');
    // The screen shows SeaBIOS, then the guest's console: more than one colour.
    const thumbnail = row().locator('img.thumbnail');
    await thumbnail.waitFor();
    let seen = 0;
    for (let tries = 0; tries < 60 && seen <= 1; tries++) {
      seen = await row().locator('img.thumbnail').evaluate((img) => (img as HTMLImageElement).complete && (img as HTMLImageElement).naturalWidth > 0)
        ? await colours(row().locator('img.thumbnail')) : 0;
      if (seen <= 1) await page.waitForTimeout(1000);
    }
    assert.ok(seen > 1, `the thumbnail still shows a blank screen (${seen} colours)`);
    // Uptime comes with the row's next refresh if the first one raced QEMU's start.
    await row().locator('.uptime').filter({ hasText: /\d+[ms]/ }).waitFor({ timeout: 30_000 });
  });

  it('shows the serial console with the guest\'s marker, and runs a typed command', async () => {
    await row().getByRole('link', { name: 'Remote Control' }).click();
    await page.waitForURL(`**/vms/${vmId}/console`);
    const terminal = page.locator('#serial-terminal');
    await page.locator('#serial-console[data-connected]').waitFor({ timeout: BOOT_MS });
    // xterm.js draws only what is on screen; the serial console is below the graphical one.
    await terminal.scrollIntoViewIfNeeded();
    await terminal.locator('.xterm-rows').filter({ hasText: GUEST_READY_MARKER }).waitFor({ timeout: BOOT_MS });
    await terminal.click();
    await page.keyboard.type('echo browser-$((6*7))\n');
    await terminal.locator('.xterm-rows').filter({ hasText: 'browser-42' }).waitFor();
  });

  it('shows the graphical console: its screen is not a blank canvas (saved as a test artifact)', async () => {
    await page.locator('#vnc-console[data-connected]').waitFor({ timeout: 30_000 });
    const canvas = page.locator('#vnc-screen canvas');
    let seen = 0;
    for (let tries = 0; tries < 30 && seen <= 1; tries++) {
      seen = await colours(canvas);
      if (seen <= 1) await page.waitForTimeout(1000);
    }
    const shot = saveArtifact('graphical-console.png', await canvas.screenshot());
    assert.ok(seen > 1, `the graphical console is blank (${seen} colours; see ${shot})`);
    await page.getByRole('button', { name: 'Ctrl+Alt+Del' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Ctrl+Alt+Del' }).isEnabled(), true);
  });

  it('saves, restores, pauses, resumes and shuts down from Master Status, each state shown without a reload', async () => {
    await page.goto('/');
    await act('save', 'Saved');
    assert.equal(await row().locator('.thumbnail.blank').count(), 1);
    await act('restore', 'Running');
    await act('pause', 'Paused');
    // From the keyboard: focus the button and press Enter.
    const samePage = await markPage(page);
    await row().locator('button[data-action="resume"]').focus();
    await page.keyboard.press('Enter');
    await page.locator(`tr.vm-row[data-vm="${vmId}"][data-state="Running"]`).waitFor({ timeout: STATE_MS });
    assert.ok(await samePage());
    await act('shutdown', 'TurnedOff');
    const events = await server.call<{ message: string }[]>('VirtualServer.GetEvents', { object: vmRef, newestFirst: true, limit: 50 });
    assert.ok(events.some((e) => /Shutdown/.test(e.message)), 'the shutdown went through the API and was audited');
  });

  it('shows a Viewer the VM but no actions, and refuses the Viewer\'s direct POST', async () => {
    const context = await newContext(browser, server.url);
    try {
      const viewer = await context.newPage();
      await signIn(viewer, 'vic', 'viewer-password');
      const viewerRow = viewer.locator(`tr.vm-row[data-vm="${vmId}"]`);
      await viewerRow.waitFor();
      assert.equal(await viewerRow.locator('button, a.button').count(), 0, 'no action buttons for a Viewer');
      await viewer.goto(`/vms/${vmId}`);
      assert.equal(await viewer.locator('main form[method="post"]').count(), 0, 'no forms on Configure for a Viewer');
      const csrf = await viewer.locator('meta[name="csrf-token"]').getAttribute('content');
      const refused = await viewer.evaluate(async ([id, token]) => {
        const response = await fetch(`/vms/${id}/power`, { method: 'POST', body: new URLSearchParams({ action: 'turnOn', _csrf: token! }), headers: { Accept: 'application/json' } });
        return response.status;
      }, [vmId, csrf] as const);
      assert.equal(refused, 403);
      assert.equal(await state(), 'TurnedOff');
    } finally {
      await context.close();
    }
  });

  it('refuses a form sent without its CSRF token, and changes nothing', async () => {
    const status = await page.evaluate(async (id) => {
      const response = await fetch(`/vms/${id}/power`, { method: 'POST', body: new URLSearchParams({ action: 'turnOn' }), headers: { Accept: 'application/json' } });
      return response.status;
    }, vmId);
    assert.equal(status, 403);
    assert.equal(await state(), 'TurnedOff');
  });

  it('sends a signed-out browser to sign in', async () => {
    const context = await newContext(browser, server.url);
    try {
      const stranger = await context.newPage();
      for (const where of ['/', `/vms/${vmId}`, `/vms/${vmId}/console`, '/events']) {
        await stranger.goto(where);
        assert.equal(new URL(stranger.url()).pathname, '/login', where);
      }
    } finally {
      await context.close();
    }
  });

  it('refuses console WebSockets without a valid ticket', async () => {
    const outcome = await page.evaluate(async () => {
      const attempt = (url: string): Promise<string> => new Promise((resolve) => {
        const socket = new WebSocket(url);
        socket.onopen = () => { resolve('open'); socket.close(); };
        socket.onerror = () => resolve('refused');
      });
      const base = `ws://${location.host}`;
      return [await attempt(`${base}/console/serial`), await attempt(`${base}/console/serial?ticket=made-up`), await attempt(`${base}/console/vnc?ticket=made-up`)];
    });
    assert.deepEqual(outcome, ['refused', 'refused', 'refused']);
  });

  it('refuses 4000 MB of memory and a fifth network adapter beside their fields, and changes nothing', async () => {
    await page.goto(`/vms/${vmId}`);
    const before = await server.call('VirtualMachine.get_Configuration', { this: vmRef });
    await page.locator('#memory').fill('4000');
    await page.locator('#section-memory').getByRole('button').click();
    await page.locator('#memory-error').waitFor();
    assert.match(await page.locator('#memory-error').innerText(), /4000 MB is outside the limits of 4 to 3686 MB/);
    assert.equal(await server.call('VirtualMachine.get_Memory', { this: vmRef }), 256);

    await page.goto(`/vms/${vmId}`);
    for (let n = 1; n < 4; n++) {
      await page.locator('#section-nics').getByRole('button', { name: /Add/ }).click();
      await page.waitForLoadState();
    }
    assert.match(await page.locator('#nic-count').innerText(), /4 of 4/);
    const withFour = await server.call('VirtualMachine.get_Configuration', { this: vmRef });
    await page.locator('#section-nics').getByRole('button', { name: /Add/ }).click();
    await page.locator('#nic-model-error').waitFor();
    assert.match(await page.locator('#nic-model-error').innerText(), /at most 4 network adapters/);
    assert.deepEqual(await server.call('VirtualMachine.get_Configuration', { this: vmRef }), withFour);
    assert.notDeepEqual(before, withFour);
  });

  it('works on a narrow screen: the navigation folds behind Menu and nothing overflows sideways', async () => {
    const context = await newContext(browser, server.url, 'narrow');
    try {
      const phone = await context.newPage();
      await signIn(phone, 'admin', ADMIN_PASSWORD);
      assert.equal(await phone.locator('nav#nav').isVisible(), false);
      await phone.getByRole('button', { name: 'Menu' }).click();
      assert.equal(await phone.locator('nav#nav').isVisible(), true);
      for (const where of ['/', `/vms/${vmId}`, '/disks/create', '/events', '/users']) {
        await phone.goto(where);
        const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        assert.ok(overflow <= 1, `${where} is ${overflow} px wider than the screen`);
      }
    } finally {
      await context.close();
    }
  });

  it('loaded nothing from another host', () => {
    const origin = new URL(server.url).origin;
    const foreign = requested.filter((url) => !url.startsWith(origin) && !url.startsWith('data:') && !url.startsWith('blob:'));
    assert.deepEqual(foreign, []);
    assert.ok(requested.some((url) => url.includes('/assets/novnc/core/rfb.js')));
    assert.ok(requested.some((url) => url.includes('/assets/xterm/lib/xterm.mjs')));
  });

  it('sends one Content-Security-Policy with every answer: each kind of page, partial, asset, image and refusal', async () => {
    const task = (await server.call<{ $ref: string }[]>('VirtualServer.get_Tasks'))[0].$ref.split('/')[1];
    const pages = ['/', '/vms', '/vms/create', '/vms/add', `/vms/${vmId}`, `/vms/${vmId}/remove`, `/vms/${vmId}/console`, '/disks/create',
      '/disks/inspect?path=disks/data.vhd', `/tasks/${task}`, '/events', '/users', '/server', '/website', '/vms/no-such-vm'];
    const others = ['/login', '/healthz', '/static/site.css', '/static/site.js', '/assets/xterm/lib/xterm.mjs', '/assets/novnc/core/rfb.js', `/status/rows/${vmId}`,
      '/events/rows', `/vms/${vmId}/thumbnail`, '/files?kind=vhd', '/api/schema', '/nowhere'];
    const policies = new Map<string, string>();
    for (const where of pages) {
      const response = await page.goto(where);
      policies.set(where, (await response!.allHeaders())['content-security-policy'] ?? '(none)');
    }
    for (const where of others) {
      const response = await page.request.get(where, { maxRedirects: 0 });
      policies.set(where, response.headers()['content-security-policy'] ?? '(none)');
    }
    const policy = policies.get('/')!;
    for (const directive of ["default-src 'self'", "script-src 'self'", "connect-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'", "form-action 'self'"]) {
      assert.ok(policy.split('; ').includes(directive), `the policy has ${directive}: ${policy}`);
    }
    assert.match(policy, /(^|; )style-src 'self'( 'sha256-[A-Za-z0-9+/=]+')*(;|$)/, 'styles: the site\'s own, and hashed inline ones only');
    assert.doesNotMatch(policy, /unsafe-inline|unsafe-eval/);
    // Remote Control alone allows inline styles, for xterm.js (server/http/content-policy.ts); nothing else differs.
    const consolePage = `/vms/${vmId}/console`;
    assert.equal(policies.get(consolePage), policy.replace(/(^|; )style-src [^;]*/, "$1style-src 'self' 'unsafe-inline'"));
    assert.deepEqual([...policies].filter(([where, p]) => p !== policy && where !== consolePage), [], 'every other answer carries the same policy');
  });

  it('no page reported a Content-Security-Policy violation, in any browser profile of this run', () => {
    assert.ok(requested.some((url) => url.includes('/console')), 'the consoles were among the pages');
    assert.deepEqual(policyViolations(), []);
  });
});
