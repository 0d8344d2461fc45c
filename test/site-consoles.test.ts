// Remote Control's consoles against a real vserverd running the real test guest: the page, the
// one-time tickets, and the two WebSockets (/console/serial to COM1, /console/vnc to QEMU's VNC).
// One VM is booted for the whole file. Every refusal is checked to happen before the upgrade,
// with the status and reason vserverd gives; the happy paths talk to the guest itself.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { ConsoleTickets, TICKET_SECONDS } from '../server/http/console-tickets.js';
import { isAlive, processesMentioning } from '../host/process.js';
import { launchBrowser, newContext, policyViolations, saveArtifact, signIn } from './helpers/browser.js';
import { GUEST_PROMPT, GUEST_READY_MARKER, testGuest } from './helpers/guest.js';
import { ADMIN_PASSWORD, TestServer } from './helpers/server.js';
import { SiteSession, type UpgradeRefusal, openedOrRefused } from './helpers/site.js';
import { TextWatch } from './helpers/text-watch.js';

const BOOT_MS = 120_000;
/** In the page (tests have no DOM types): whether noVNC's canvas holds more than one colour, which a blank screen does not. */
const SCREEN_DRAWN = `(() => {
  const canvas = document.querySelector('#vnc-screen canvas');
  const pixels = canvas && canvas.width ? canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data : null;
  if (!pixels) return false;
  for (let i = 4; i < pixels.length; i += 4) {
    if (pixels[i] !== pixels[0] || pixels[i + 1] !== pixels[1] || pixels[i + 2] !== pixels[2]) return true;
  }
  return false;
})()`;

interface Ref { $ref: string }
interface Ticket { ok: true; ticket: string; url: string; expiresInSeconds: number }
/** An accepted socket with every message it received from the first (which may come with the upgrade's answer), or a refusal. */
type Opened = { ws: WebSocket; received: Message[] } | UpgradeRefusal;
interface Message { data: Buffer; isBinary: boolean }

let server: TestServer;
let admin: SiteSession;
let operator: SiteSession;
let viewer: SiteSession;
let vmId: string;
const sockets: WebSocket[] = [];

/** POST /vms/ID/console/ticket as `session`; the answer's status and JSON. */
async function askTicket(session: SiteSession, kind: string, options: { csrf?: string | null; vm?: string } = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await session.post(`/vms/${options.vm ?? vmId}/console/ticket`, { kind }, { csrf: options.csrf, json: true });
  return { status: response.status, body: await response.json() as Record<string, unknown> };
}

async function ticket(session: SiteSession, kind: 'vnc' | 'serial'): Promise<Ticket> {
  const { status, body } = await askTicket(session, kind);
  assert.equal(status, 200, `ticket for ${kind}: ${JSON.stringify(body)}`);
  return body as unknown as Ticket;
}

/** Opens a console WebSocket as a browser would (Origin, cookie); resolves with the socket or the refusal. */
function open(pathAndQuery: string, headers: Record<string, string>): Promise<Opened> {
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}${pathAndQuery}`, { headers: { origin: server.url, ...headers } });
  sockets.push(ws);
  const received: Message[] = [];
  ws.on('message', (data, isBinary) => received.push({ data: data as Buffer, isBinary }));
  return openedOrRefused(ws, { ws, received });
}

function openWith(session: SiteSession, pathAndQuery: string): Promise<Opened> {
  return open(pathAndQuery, { cookie: session.cookie });
}

async function refused(opening: Promise<Opened>, status: number, reason: RegExp): Promise<void> {
  const answer = await opening;
  assert.ok('status' in answer, 'the upgrade was accepted; it should have been refused');
  assert.equal(answer.status, status, answer.body);
  assert.match(answer.body, reason);
}

async function opened(opening: Promise<Opened>): Promise<{ ws: WebSocket; received: Message[] }> {
  const answer = await opening;
  if ('status' in answer) assert.fail(`the upgrade was refused: ${answer.status} ${answer.body}`);
  return answer;
}

/** What a serial console WebSocket shows (carriage returns removed), and the control messages it answers. */
function watchSerial({ ws, received }: { ws: WebSocket; received: Message[] }): { ws: WebSocket; output: TextWatch; notes: Record<string, unknown>[] } {
  const output: TextWatch = new TextWatch('the serial console WebSocket', (): string => `it showed:\n${output.text.slice(-2000)}`);
  const notes: Record<string, unknown>[] = [];
  const take = ({ data, isBinary }: Message): void => {
    if (isBinary) output.append(String(data).replace(/\r/g, ''));
    else notes.push(JSON.parse(String(data)) as Record<string, unknown>);
  };
  for (const message of received) take(message);
  ws.on('message', (data, isBinary) => take({ data: data as Buffer, isBinary }));
  ws.on('close', (code, reason) => output.end(`the socket closed (${code} ${String(reason)})`));
  return { ws, output, notes };
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })));
}

async function finish(task: Ref, timeoutMs = BOOT_MS): Promise<void> {
  assert.equal(await server.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs }), true, `${task.$ref} did not finish`);
  assert.equal(await server.call('Task.get_Error', { this: task.$ref }), null);
}

describe('the consoles of a running VM, through their tickets and WebSockets', { timeout: 600_000 }, () => {
  before(async () => {
    const guest = testGuest();
    server = await TestServer.start();
    fs.mkdirSync(path.join(server.dataDir, 'disks'), { recursive: true });
    fs.copyFileSync(guest.bootVhd, path.join(server.dataDir, 'disks', 'console.vhd'));
    const made = await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'console-vm' });
    vmId = made.$ref.slice('VirtualMachine/'.length);
    await server.call('VirtualMachine.put_Memory', { this: made.$ref, value: 256 });
    await server.call('VirtualMachine.AddSCSIController', { this: made.$ref });
    await server.call('VirtualMachine.AddHardDiskConnection', { this: made.$ref, path: 'disks/console.vhd', busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
    await finish(await server.call<Ref>('VirtualMachine.Startup', { this: made.$ref }));
    await server.call('VirtualServer.CreateUser', { name: 'ops', password: 'ops-password-1', role: 'Operator' });
    await server.call('VirtualServer.CreateUser', { name: 'watcher', password: 'watcher-password-1', role: 'Viewer' });
    admin = await SiteSession.signIn(server.url, 'admin', ADMIN_PASSWORD);
    operator = await SiteSession.signIn(server.url, 'ops', 'ops-password-1');
    viewer = await SiteSession.signIn(server.url, 'watcher', 'watcher-password-1');
  });

  after(async () => {
    for (const ws of sockets) ws.terminate();
    if (!server) return;
    try {
      if (['Running', 'Paused'].includes(await server.call<string>('VirtualMachine.get_State', { this: `VirtualMachine/${vmId}` }))) {
        await finish(await server.call<Ref>('VirtualMachine.TurnOff', { this: `VirtualMachine/${vmId}` }), 30_000);
      }
    } catch {
      // a VM that will not turn off is killed below
    }
    await server.stop();
    for (const pid of processesMentioning(server.runDir).filter(isAlive)) process.kill(pid, 'SIGKILL');
    server.remove();
  });

  it('shows the Remote Control page with both consoles to a user with the control right', async () => {
    const page = await admin.text(`/vms/${vmId}/console`);
    assert.match(page, /<h1>Remote Control: console-vm<\/h1>/);
    assert.match(page, /id="vm-state">Running</);
    assert.match(page, /id="vnc-screen"/);
    assert.match(page, /id="serial-terminal"/);
    assert.match(page, />Ctrl\+Alt\+Del</);
    assert.match(page, /<script type="module" src="\/static\/console.js">/);
  });

  it('tells a Viewer they may not use the consoles, and refuses them a ticket (403)', async () => {
    const page = await viewer.text(`/vms/${vmId}/console`);
    assert.match(page, /not use its consoles: that needs the control right/);
    assert.doesNotMatch(page, /id="serial-terminal"|console\.js/);
    const { status, body } = await askTicket(viewer, 'serial');
    assert.equal(status, 403);
    assert.match(String((body.error as { message: string }).message), /watcher \(Viewer\) may not use the consoles of console-vm/);
    assert.equal(body.ticket, undefined);
  });

  it('refuses a ticket request without the CSRF token, for an unknown kind, or for an unknown VM', async () => {
    assert.equal((await askTicket(admin, 'serial', { csrf: null })).status, 403);
    const kind = await askTicket(admin, 'keyboard');
    assert.equal(kind.status, 400);
    assert.match(String((kind.body.error as { message: string }).message), /"kind" must be one of vnc, serial/);
    assert.equal((await askTicket(admin, 'serial', { vm: '00000000-0000-4000-8000-000000000000' })).status, 404);
  });

  it('refuses a console WebSocket without a session cookie (401), even with a valid ticket', async () => {
    const { url } = await ticket(admin, 'serial');
    await refused(open(url, {}), 401, /^$/);
  });

  it('refuses a session\'s ticket presented with a bearer token of the same user (403): a ticket opens for its holder only', async () => {
    const { url } = await ticket(admin, 'serial');
    await refused(open(url, { authorization: `Bearer ${server.adminToken}` }), 403, /given to another session or token/);
  });

  it('refuses a console WebSocket without a ticket, or with a made-up one (401)', async () => {
    await refused(openWith(admin, '/console/serial'), 401, /no console ticket/);
    await refused(openWith(admin, '/console/vnc'), 401, /no console ticket/);
    await refused(openWith(admin, '/console/serial?ticket=made-up-ticket'), 401, /unknown or already used/);
  });

  it('opens a console once per ticket: the second use is refused (401)', async () => {
    const { url } = await ticket(admin, 'serial');
    const first = await opened(openWith(admin, url));
    first.ws.close();
    await refused(openWith(admin, url), 401, /unknown or already used/);
  });

  it('refuses a ticket for the other kind of console (403), and spends it', async () => {
    const { ticket: serialTicket } = await ticket(admin, 'serial');
    await refused(openWith(admin, `/console/vnc?ticket=${serialTicket}`), 403, /for the serial console, not the vnc console/);
    await refused(openWith(admin, `/console/serial?ticket=${serialTicket}`), 401, /unknown or already used/);
  });

  it('refuses another session\'s ticket (403), though that user may use the console', async () => {
    const { url } = await ticket(admin, 'serial');
    await refused(openWith(operator, url), 403, /given to another session/);
    const own = await ticket(operator, 'serial');
    (await opened(openWith(operator, own.url))).ws.close();
  });

  it('shows the serial console\'s scrollback on attach and types into the guest: echo hello-$((6*7)) prints hello-42', async () => {
    const booting = watchSerial(await opened(openWith(admin, (await ticket(admin, 'serial')).url)));
    const ready = await booting.output.waitFor(GUEST_READY_MARKER, BOOT_MS);
    await booting.output.waitFor(GUEST_PROMPT, BOOT_MS, ready.index);
    booting.ws.close();

    // The guest printed its marker once, before this socket existed: it can only come from the scrollback.
    const serial = watchSerial(await opened(openWith(admin, (await ticket(admin, 'serial')).url)));
    const ws = serial.ws;
    await serial.output.waitFor(GUEST_READY_MARKER, 30_000);
    ws.send(JSON.stringify({ type: 'resize', cols: 100, rows: 30 }));
    const from = serial.output.text.length;
    ws.send(Buffer.from('echo hello-$((6*7))\r'), { binary: true });
    await serial.output.waitFor(/^hello-42$/m, 30_000, from);
    assert.deepEqual(serial.notes, [], 'a resize is accepted without an answer');
  });

  it('answers a malformed control message on the serial console with an error and stays open', async () => {
    const serial = watchSerial(await opened(openWith(admin, (await ticket(admin, 'serial')).url)));
    const ws = serial.ws;
    await serial.output.waitFor(GUEST_READY_MARKER, 30_000);
    ws.send('not json');
    ws.send(JSON.stringify({ type: 'resize', cols: 0, rows: 24 }));
    const from = serial.output.text.length;
    ws.send(Buffer.from('echo still-$((40+2))\r'), { binary: true });
    await serial.output.waitFor(/^still-42$/m, 30_000, from);
    assert.equal(serial.notes.length, 2);
    assert.equal(serial.notes[0].type, 'error');
    assert.match(String(serial.notes[0].message), /must be JSON/);
    assert.match(String(serial.notes[1].message), /whole numbers cols and rows from 1 to 1000/);
  });

  it('carries the RFB stream of QEMU\'s VNC server on the graphical console: the banner RFB 003.008', async () => {
    const { ws, received } = await opened(openWith(admin, (await ticket(admin, 'vnc')).url));
    if (!received.length) await new Promise((resolve) => ws.once('message', resolve));
    assert.equal(received[0].isBinary, true);
    assert.equal(received[0].data.subarray(0, 12).toString('latin1'), 'RFB 003.008\n');
    ws.close();
  });

  it('logs each console opened to the event log, with the user and the VM', async () => {
    const events = await server.call<{ category: string; message: string; who: string; object: string }[]>('VirtualServer.GetEvents', { category: 'Virtual Machine', limit: 1000 });
    const opens = events.filter((e) => /opened the/.test(e.message));
    assert.ok(opens.some((e) => e.message === 'admin opened the serial console (COM1) of console-vm' && e.who === 'admin' && e.object === `VirtualMachine/${vmId}`), JSON.stringify(opens));
    assert.ok(opens.some((e) => e.message === 'admin opened the graphical console of console-vm'));
    assert.ok(opens.some((e) => e.message === 'ops opened the serial console (COM1) of console-vm' && e.who === 'ops'));
  });

  it('in a browser: the serial console shows the guest\'s marker and runs what is typed; Ctrl+] gives the keyboard back', async () => {
    const browser = await launchBrowser();
    try {
      const page = await (await newContext(browser, server.url)).newPage();
      await signIn(page, 'admin', ADMIN_PASSWORD);
      await page.goto(`/vms/${vmId}/console`);
      const terminal = page.locator('#serial-terminal');
      await page.locator('#serial-terminal[data-connected]').waitFor();
      // xterm.js draws nothing while it is out of sight; a user scrolls down to it.
      await terminal.scrollIntoViewIfNeeded();
      await terminal.locator('.xterm-rows', { hasText: GUEST_READY_MARKER }).waitFor();
      await terminal.click();
      await page.keyboard.type('echo browser-$((6*7))');
      await page.keyboard.press('Enter');
      await terminal.locator('.xterm-rows > div', { hasText: /^\s*browser-42\s*$/ }).waitFor();
      await page.keyboard.press('Control+BracketRight');
      assert.equal(await page.evaluate('document.activeElement?.id'), 'serial-reconnect');
      assert.equal(await page.locator('#serial-status').textContent(), 'Connected');
    } finally {
      await browser.close();
    }
  });

  it('in a browser: the graphical console shows the VM\'s screen, scales to fit, and fits a narrow screen', async () => {
    const browser = await launchBrowser();
    try {
      const page = await (await newContext(browser, server.url)).newPage();
      await signIn(page, 'admin', ADMIN_PASSWORD);
      await page.goto(`/vms/${vmId}/console`);
      await page.locator('#vnc-screen[data-connected]').waitFor();
      assert.equal(await page.locator('#vnc-ctrl-alt-del').isEnabled(), true);
      // A blank canvas is one colour: wait for the guest's screen to draw more.
      await page.waitForFunction(SCREEN_DRAWN);
      saveArtifact('console-vnc.png', await page.locator('#vnc-screen').screenshot());
      const scale = page.locator('#vnc-scale');
      assert.equal(await scale.getAttribute('aria-pressed'), 'true');
      await scale.click();
      assert.equal(await scale.getAttribute('aria-pressed'), 'false');

      const narrow = await (await newContext(browser, server.url, 'narrow')).newPage();
      await signIn(narrow, 'admin', ADMIN_PASSWORD);
      await narrow.goto(`/vms/${vmId}/console`);
      await narrow.locator('#vnc-screen[data-connected]').waitFor();
      await narrow.locator('#serial-terminal[data-connected]').waitFor();
      assert.ok(await narrow.evaluate('document.documentElement.scrollWidth <= window.innerWidth'), 'the page scrolls sideways on a narrow screen');
    } finally {
      await browser.close();
    }
  });

  it('in a browser: neither console, nor the sign-in and Remote Control pages, reported a Content-Security-Policy violation', () => {
    assert.deepEqual(policyViolations(), []);
  });

  it('closes both consoles with the VM\'s state as the reason when it is turned off, and then gives no tickets (409)', async () => {
    const serial = (await opened(openWith(admin, (await ticket(admin, 'serial')).url))).ws;
    const vnc = (await opened(openWith(admin, (await ticket(admin, 'vnc')).url))).ws;
    const serialClosed = closed(serial);
    const vncClosed = closed(vnc);
    await finish(await server.call<Ref>('VirtualMachine.TurnOff', { this: `VirtualMachine/${vmId}` }), 30_000);
    for (const end of [await serialClosed, await vncClosed]) {
      assert.equal(end.code, 4001);
      assert.match(end.reason, /^console-vm is (TurningOff|TurnedOff)$/);
    }
    const { status, body } = await askTicket(admin, 'serial');
    assert.equal(status, 409);
    assert.match(String((body.error as { message: string }).message), /console-vm is TurnedOff: its consoles are there only while it runs/);
  });
});

describe('console tickets', () => {
  it(`expire after ${TICKET_SECONDS} s`, () => {
    let now = 1_000_000;
    const tickets = new ConsoleTickets(() => now);
    const grant = { user: 'admin', holder: 'session:s1', vmId: 'vm', kind: 'serial' as const };
    const fresh = tickets.issue(grant);
    const stale = tickets.issue(grant);
    now += TICKET_SECONDS * 1000 - 1;
    assert.deepEqual(tickets.redeem(fresh.ticket, 'serial', 'session:s1'), { ...grant, expires: 1_000_000 + TICKET_SECONDS * 1000 });
    now += 1;
    const refusal = tickets.redeem(stale.ticket, 'serial', 'session:s1');
    assert.equal('status' in refusal && refusal.status, 401);
    assert.match('message' in refusal ? refusal.message : '', /has expired/);
  });
});
