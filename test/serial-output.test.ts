// A guest's serial output read by a script, against a real vserverd running the real test guest:
// VirtualMachine.GetSerialOutput by position (COM1 from the worker's scrollback, COM2 from its
// file), console tickets for bearer tokens (CreateConsoleTicket and the /console/* WebSockets),
// and vsctl vm console / vm serial run as a user runs them. One VM is booted for the whole file,
// with a small scrollback (VSERVER_SERIAL_SCROLLBACK_BYTES) so that the guest can overrun it.

import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as pty from 'node-pty';
import { WebSocket } from 'ws';
import { TICKET_SECONDS } from '../server/http/console-tickets.js';
import { isAlive, processesMentioning } from '../host/process.js';
import { readFrom, type SerialOutput } from '../vmm/serial-output.js';
import { GUEST_PROMPT, GUEST_READY_MARKER, testGuest } from './helpers/guest.js';
import { ADMIN_PASSWORD, TestServer, login, refusal } from './helpers/server.js';
import { SiteSession, type UpgradeRefusal, openedOrRefused } from './helpers/site.js';
import { TextWatch } from './helpers/text-watch.js';
import { VSCTL } from './helpers/vhd-fixtures.js';

const BOOT_MS = 120_000;
const SCROLLBACK = 16 * 1024;
const POLL_MS = 200;

interface Ref { $ref: string }
interface Ticket { ticket: string; url: string; expiresInSeconds: number }
type Opened = { ws: WebSocket; output: TextWatch } | UpgradeRefusal;

let server: TestServer;
let vm: string;
let idleVm: string;
let com2File: string;
let operatorToken: string;
let viewerToken: string;
const sockets: WebSocket[] = [];
/** Kills what a test started and left running (after a failure). */
const killers: Array<() => void> = [];

const output = (params: Record<string, unknown>, token?: string): Promise<SerialOutput> =>
  server.call<SerialOutput>('VirtualMachine.GetSerialOutput', { this: vm, ...params }, token);

/** Asks from `since` until the text read so far matches `pattern`; the text and the last answer. */
async function readUntil(pattern: RegExp, since: number | undefined, port = 1, timeoutMs = 60_000): Promise<{ text: string; last: SerialOutput }> {
  const deadline = Date.now() + timeoutMs;
  let text = '';
  for (;;) {
    const last = await output({ port, ...(since === undefined ? {} : { since }) });
    text += last.text;
    if (pattern.test(text.replace(/\r/g, ''))) return { text, last };
    if (Date.now() > deadline) assert.fail(`${String(pattern)} did not appear on port ${port} within ${timeoutMs} ms; read:\n${text.slice(-2000)}`);
    since = last.next;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** Opens a console WebSocket with these headers; the socket and what it shows, or the refusal. */
function open(url: string, headers: Record<string, string>): Promise<Opened> {
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}${url}`, { headers });
  sockets.push(ws);
  const shown: TextWatch = new TextWatch('the console WebSocket', () => `it showed:\n${shown.text.slice(-2000)}`);
  ws.on('message', (data, isBinary) => { if (isBinary) shown.append((data as Buffer).toString('latin1').replace(/\r/g, '')); });
  ws.on('close', (code, reason) => shown.end(`the socket closed (${code} ${String(reason)})`));
  return openedOrRefused(ws, { ws, output: shown });
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });

async function ticket(kind: 'serial' | 'vnc', token = server.adminToken): Promise<Ticket> {
  return server.call<Ticket>('VirtualMachine.CreateConsoleTicket', { this: vm, kind }, token);
}

async function opened(opening: Promise<Opened>): Promise<{ ws: WebSocket; output: TextWatch }> {
  const answer = await opening;
  if ('status' in answer) assert.fail(`the upgrade was refused: ${answer.status} ${answer.body}`);
  return answer;
}

async function refused(opening: Promise<Opened>, status: number, reason: RegExp): Promise<void> {
  const answer = await opening;
  assert.ok('status' in answer, 'the upgrade was accepted; it should have been refused');
  assert.equal(answer.status, status, answer.body);
  assert.match(answer.body, reason);
}

/** Types a line into COM1 through a console opened with the administrator's token. */
async function typeLine(line: string): Promise<void> {
  const { ws } = await opened(open((await ticket('serial')).url, bearer(server.adminToken)));
  await new Promise<void>((resolve, reject) => ws.send(Buffer.from(`${line}\r`), { binary: true }, (e) => (e ? reject(e) : resolve())));
  ws.close();
}

async function finish(task: Ref, timeoutMs = BOOT_MS): Promise<void> {
  assert.equal(await server.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs }), true, `${task.$ref} did not finish`);
  assert.equal(await server.call('Task.get_Error', { this: task.$ref }), null);
}

/** vsctl with stdin, stdout and stderr as pipes; the environment names no server or token of its own. */
function vsctlPiped(args: string[], url = server.url, token = server.adminToken): { child: ChildProcessWithoutNullStreams; stdout: TextWatch; stderr: TextWatch; exited: Promise<number | null> } {
  const env = { ...process.env };
  for (const name of ['VSERVER_URL', 'VSERVER_TOKEN', 'VSERVER_CREDENTIALS']) delete env[name];
  const child = spawn(VSCTL, [...args, '--url', url, '--token', token], { env });
  killers.push(() => child.kill('SIGKILL'));
  const stdout: TextWatch = new TextWatch('vsctl\'s stdout', () => `stdout:\n${stdout.text.slice(-2000)}\nstderr:\n${stderr.text}`);
  const stderr: TextWatch = new TextWatch('vsctl\'s stderr', () => `stderr:\n${stderr.text}\nstdout:\n${stdout.text.slice(-2000)}`);
  child.stdout.on('data', (c: Buffer) => stdout.append(c.toString('latin1').replace(/\r/g, '')));
  child.stderr.on('data', (c: Buffer) => stderr.append(c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => {
    stdout.end(`vsctl exited (${code})`);
    stderr.end(`vsctl exited (${code})`);
    resolve(code);
  }));
  return { child, stdout, stderr, exited };
}

describe('a guest\'s serial output for scripts: GetSerialOutput, console tickets for tokens, vsctl vm console', { timeout: 600_000 }, () => {
  before(async () => {
    const guest = testGuest();
    server = await TestServer.start({ env: { VSERVER_SERIAL_SCROLLBACK_BYTES: String(SCROLLBACK) } });
    for (const folder of ['disks', 'serial-vm']) fs.mkdirSync(path.join(server.dataDir, folder), { recursive: true });
    fs.copyFileSync(guest.bootVhd, path.join(server.dataDir, 'disks', 'serial.vhd'));
    vm = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'serial-vm' })).$ref;
    idleVm = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'idle-vm' })).$ref;
    await server.call('VirtualMachine.put_Memory', { this: vm, value: 256 });
    await server.call('VirtualMachine.AddSCSIController', { this: vm });
    await server.call('VirtualMachine.AddHardDiskConnection', { this: vm, path: 'disks/serial.vhd', busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
    await server.call('VirtualMachine.ConfigureSerialPort2', { this: vm, path: 'serial-vm/com2.txt' });
    com2File = await server.call<string>('VirtualMachine.get_SerialPort2', { this: vm });
    await finish(await server.call<Ref>('VirtualMachine.Startup', { this: vm }));
    await server.call('VirtualServer.CreateUser', { name: 'ops', password: 'ops-password-1', role: 'Operator' });
    await server.call('VirtualServer.CreateUser', { name: 'watcher', password: 'watcher-password-1', role: 'Viewer' });
    operatorToken = await login(server.url, 'ops', 'ops-password-1');
    viewerToken = await login(server.url, 'watcher', 'watcher-password-1');
  });

  after(async () => {
    for (const ws of sockets) ws.terminate();
    for (const kill of killers) kill();
    if (!server) return;
    try {
      if (['Running', 'Paused'].includes(await server.call<string>('VirtualMachine.get_State', { this: vm }))) {
        await finish(await server.call<Ref>('VirtualMachine.TurnOff', { this: vm }), 30_000);
      }
    } catch {
      // a VM that will not turn off is killed below
    }
    await server.stop();
    for (const pid of processesMentioning(server.runDir).filter(isAlive)) process.kill(pid, 'SIGKILL');
    server.remove();
  });

  it('returns COM1\'s output from its start: the guest\'s ready marker, with next at the end of what it returned', async () => {
    const { text, last } = await readUntil(new RegExp(`${GUEST_READY_MARKER}[^]*${GUEST_PROMPT.trim()}`), undefined, 1, BOOT_MS);
    const whole = await output({ port: 1 });
    assert.equal(whole.skipped, 0);
    assert.ok(whole.text.includes(GUEST_READY_MARKER), whole.text);
    // Asked without since, the answer starts at position 0 (the boot printed less than the scrollback).
    assert.equal(whole.next, Buffer.byteLength(whole.text));
    assert.ok(whole.next >= last.next, `next went back from ${last.next} to ${whole.next}`);
    assert.ok(text.length > 0);
  });

  it('asked from next, returns only what the guest printed since: a command typed on the console and its answer', async () => {
    const before = await output({ port: 1 });
    await typeLine('echo after-$((6*7))');
    const { text, last } = await readUntil(/^after-42$/m, before.next);
    assert.ok(!text.includes(GUEST_READY_MARKER), `old output came again:\n${text}`);
    assert.equal(last.next - before.next, Buffer.byteLength(text), 'the answers joined are exactly the bytes between the two positions');
    assert.ok(last.next > before.next);
    const nothingNew = await output({ port: 1, since: last.next });
    assert.deepEqual([nothingNew.next >= last.next, nothingNew.skipped], [true, 0]);
  });

  it('vsctl vm serial prints the output, and with --json {text, next, skipped}; --since goes on from next', async () => {
    const plain = vsctlPiped(['vm', 'serial', 'serial-vm']);
    plain.child.stdin.end();
    assert.equal(await plain.exited, 0, plain.stderr.text);
    assert.match(plain.stdout.text, new RegExp(GUEST_READY_MARKER));
    const json = vsctlPiped(['vm', 'serial', 'serial-vm', '--json']);
    json.child.stdin.end();
    assert.equal(await json.exited, 0, json.stderr.text);
    const answer = JSON.parse(json.stdout.text) as SerialOutput;
    assert.equal(answer.skipped, 0);
    assert.equal(answer.next, Buffer.byteLength(answer.text));
    const rest = vsctlPiped(['vm', 'serial', 'serial-vm', '--since', String(answer.next), '--json']);
    rest.child.stdin.end();
    assert.equal(await rest.exited, 0, rest.stderr.text);
    assert.ok(!(JSON.parse(rest.stdout.text) as SerialOutput).text.includes(GUEST_READY_MARKER));
  });

  it('reads COM2 from its file with the same positions: what the guest writes to /dev/ttyS1', async () => {
    const before = await output({ port: 2 });
    await typeLine('echo com2-$((6*7)) > /dev/ttyS1');
    const { text, last } = await readUntil(/com2-42/, before.next, 2);
    assert.equal(last.skipped, 0);
    assert.equal(last.next, fs.statSync(com2File).size);
    assert.equal(last.next - before.next, Buffer.byteLength(text));
    assert.ok(!text.includes('echo'), 'COM2 carries only what the guest wrote to it, not COM1\'s echo');
  });

  it('refuses a port that does not exist, a position past the end, and COM2 when it is not connected, by name', async () => {
    for (const port of [0, 3]) {
      const e = await refusal(output({ port }));
      assert.equal(e.data.name, 'VM_E_INVALID_PARAMS', e.message);
      assert.match(e.message, /"port" must be at (least 1|most 2)/);
    }
    const end = (await output({ port: 1 })).next;
    const past = await refusal(output({ port: 1, since: end + 1_000_000 }));
    assert.equal(past.data.name, 'VM_E_INVALID_PARAMS');
    assert.equal(past.data.param, 'since');
    assert.match(past.message, /past the end of the output/);
    const com2 = await refusal(server.call('VirtualMachine.GetSerialOutput', { this: idleVm, port: 2 }));
    assert.equal(com2.data.name, 'VM_E_PORT_NOT_CONNECTED');
    assert.match(com2.message, /COM2 of idle-vm is not connected to a file/);
  });

  it('refuses a VM that is off, by name', async () => {
    const e = await refusal(server.call('VirtualMachine.GetSerialOutput', { this: idleVm, port: 1 }));
    assert.equal(e.data.name, 'VM_E_VM_NOT_RUNNING');
    assert.match(e.message, /idle-vm is TurnedOff/);
    const t = await refusal(server.call('VirtualMachine.CreateConsoleTicket', { this: idleVm, kind: 'serial' }));
    assert.equal(t.data.name, 'VM_E_VM_NOT_RUNNING');
  });

  it('refuses a Viewer both the output and a console ticket (they need the control right); an Operator may read', async () => {
    for (const [member, params] of [['GetSerialOutput', { port: 1 }], ['CreateConsoleTicket', { kind: 'serial' }]] as const) {
      const e = await refusal(server.call(`VirtualMachine.${member}`, { this: vm, ...params }, viewerToken));
      assert.equal(e.data.name, 'VM_E_ACCESS_DENIED');
      assert.match(e.message, /watcher \(Viewer\) may not call .* it needs the "control" right/);
    }
    assert.ok((await output({ port: 1 }, operatorToken)).text.includes('after-42'));
  });

  it('gives a bearer token a ticket whose WebSocket, opened with that token, shows COM1 and types into the guest', async () => {
    const given = await ticket('serial');
    assert.equal(given.expiresInSeconds, TICKET_SECONDS);
    assert.equal(given.url, `/console/serial?ticket=${given.ticket}`);
    const { ws, output: shown } = await opened(open(given.url, bearer(server.adminToken)));
    await shown.waitFor('after-42', 30_000);
    const from = shown.text.length;
    ws.send(Buffer.from('echo token-$((6*7))\r'), { binary: true });
    await shown.waitFor(/^token-42$/m, 30_000, from);
    ws.close();
    // The banner may come with the upgrade's answer: the watch has listened since the socket was made.
    const vnc = await opened(open((await ticket('vnc')).url, bearer(server.adminToken)));
    const banner = await vnc.output.waitFor('RFB 003.008\n', 30_000);
    assert.equal(banner.index, 0);
    vnc.ws.close();
  });

  it('refuses a token\'s ticket presented by another token, by a session, a second time, or with no credentials', async () => {
    const other = await server.call<{ token: string }>('VirtualServer.CreateToken', { description: 'another token of admin' });
    const first = await ticket('serial');
    await refused(open(first.url, bearer(other.token)), 403, /given to another session or token/);
    await refused(open(first.url, bearer(server.adminToken)), 401, /unknown or already used/);

    const session = await SiteSession.signIn(server.url, 'admin', ADMIN_PASSWORD);
    await refused(open((await ticket('serial')).url, { cookie: session.cookie, origin: server.url }), 403, /given to another session or token/);
    const unauthenticated = await open((await ticket('serial')).url, {});
    assert.ok('status' in unauthenticated && unauthenticated.status === 401, 'an upgrade without credentials was accepted');

    // A ticket the token did not ask for is refused too: a session's, presented with the token.
    const siteTicket = await session.post(`/vms/${vm.slice('VirtualMachine/'.length)}/console/ticket`, { kind: 'serial' }, { json: true });
    const { url } = await siteTicket.json() as { url: string };
    await refused(open(url, bearer(server.adminToken)), 403, /given to another session or token/);
  });

  it('checks a token\'s ticket again at the upgrade: refused when the control right was taken away, or the token revoked, since it was given', async () => {
    const security = `Security/${vm}`;
    const denied = await ticket('serial', operatorToken);
    await server.call('Security.AddEntry', { this: security, name: 'ops', type: 'Denied', rights: ['control'] });
    try {
      await refused(open(denied.url, bearer(operatorToken)), 403, /ops may not use the consoles of serial-vm: that needs the control right/);
    } finally {
      await server.call('Security.RemoveEntry', { this: security, name: 'ops' });
    }
    const own = await server.call<{ id: string; token: string }>('VirtualServer.CreateToken', { description: 'revoked before its ticket is used' }, operatorToken);
    const orphan = await ticket('serial', own.token);
    await server.call('VirtualServer.RevokeToken', { id: own.id }, operatorToken);
    const answer = await open(orphan.url, bearer(own.token));
    assert.ok('status' in answer && answer.status === 401, 'a revoked token\'s ticket opened a console');
    (await opened(open((await ticket('serial', operatorToken)).url, bearer(operatorToken)))).ws.close();
  });

  it('gives no ticket through the API to a session cookie: its tickets come from the website', async () => {
    const session = await SiteSession.signIn(server.url, 'admin', ADMIN_PASSWORD);
    const response = await fetch(`${server.url}/api/rpc`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', cookie: session.cookie, 'x-csrf-token': session.csrf, origin: server.url },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'VirtualMachine.CreateConsoleTicket', params: { this: vm, kind: 'serial' } }),
    });
    const body = await response.json() as { error?: { message: string; data: { name: string } } };
    assert.equal(body.error?.data.name, 'VM_E_TOKEN_REQUIRED', JSON.stringify(body));
    assert.match(body.error!.message, /POST \/vms\/ID\/console\/ticket/);
  });

  it('vsctl vm console on a terminal: replays the scrollback, sends Ctrl-C and what is typed to the guest, Ctrl+] leaves with 0 and the terminal restored', async () => {
    const shown: TextWatch = new TextWatch('the terminal of vsctl vm console', () => `it showed:\n${shown.text.slice(-3000)}`);
    const script = `"$0" vm console serial-vm --url "$1" --token "$2"; echo "vsctl-exit=$?"; stty -a`;
    const env = { ...process.env } as Record<string, string>;
    for (const name of ['VSERVER_URL', 'VSERVER_TOKEN', 'VSERVER_CREDENTIALS']) delete env[name];
    const terminal = pty.spawn('/bin/sh', ['-c', script, VSCTL, server.url, server.adminToken], { name: 'xterm', cols: 100, rows: 30, env });
    killers.push(() => terminal.kill('SIGKILL'));
    terminal.onData((data) => shown.append(data.replace(/\r/g, '')));
    const shellExited = new Promise<void>((resolve) => terminal.onExit(() => { shown.end('the shell exited'); resolve(); }));
    const attached = await shown.waitFor('Ctrl+] leaves', 30_000);
    await shown.waitFor('token-42', 30_000);
    // Raw mode: Ctrl-C goes to the guest's shell, it does not interrupt vsctl.
    terminal.write('\x03');
    terminal.write('echo console-$((6*7))\r');
    await shown.waitFor(/^console-42$/m, 30_000, attached.index);
    terminal.write('\x1d');
    const exit = await shown.waitFor(/vsctl-exit=\d+/, 30_000);
    assert.equal(exit.text, 'vsctl-exit=0');
    assert.match(shown.text, /left the serial console of serial-vm/);
    // stty -a after vsctl: the terminal is back in canonical mode with echo, not raw.
    await shellExited;
    const settings = shown.text.slice(exit.index).split(/\s+/);
    assert.ok(settings.includes('icanon') && settings.includes('echo'), `stty -a after vsctl:\n${shown.text.slice(exit.index)}`);
  });

  it('vsctl vm console with piped input: types it into the guest, shows the answer, Ctrl+] leaves with 0', async () => {
    const run = vsctlPiped(['vm', 'console', 'serial-vm']);
    await run.stderr.waitFor('Ctrl+] leaves', 30_000);
    const from = run.stdout.text.length;
    run.child.stdin.write('echo piped-$((6*7))\n');
    await run.stdout.waitFor(/^piped-42$/m, 30_000, from);
    run.child.stdin.write('\x1d');
    assert.equal(await run.exited, 0, run.stderr.text);
    assert.match(run.stderr.text, /left the serial console of serial-vm/);
  });

  it('vsctl vm console with input that ends: types it, shows the answer, and leaves with 0 once the guest is quiet', async () => {
    const run = vsctlPiped(['vm', 'console', 'serial-vm']);
    run.child.stdin.end('echo ended-$((6*7))\n');
    assert.equal(await run.exited, 0, run.stderr.text);
    assert.match(run.stdout.text, /^ended-42$/m);
    assert.match(run.stderr.text, /left the serial console of serial-vm/);
  });

  it('reports the bytes skipped when the guest has overrun the scrollback since the position asked for', async () => {
    const before = await output({ port: 1 });
    // More than the scrollback: 40000 bytes of yes, then a marker the shell builds (the typed line does not match it).
    await typeLine('yes 0123456789abcdef | head -c 40000; echo overrun-$((1+1))');
    const deadline = Date.now() + 120_000;
    while (!(await output({ port: 1 })).text.includes('overrun-2')) {
      if (Date.now() > deadline) assert.fail('the guest did not finish printing within 120 s');
      await new Promise((r) => setTimeout(r, 500));
    }
    const late = await output({ port: 1, since: before.next });
    assert.ok(late.skipped > 0, `nothing was skipped: ${JSON.stringify({ before: before.next, next: late.next, skipped: late.skipped })}`);
    assert.equal(Buffer.byteLength(late.text), SCROLLBACK, 'what is kept is the scrollback, all of it');
    assert.equal(before.next + late.skipped + SCROLLBACK, late.next, 'skipped is exactly the bytes between since and the oldest kept');
    assert.ok(!late.text.includes(GUEST_READY_MARKER));
  });

  it('vsctl vm console and vm serial --follow exit 0 saying the VM stopped when it is turned off; then the output is refused as not running', async () => {
    const run = vsctlPiped(['vm', 'console', 'serial-vm']);
    await run.stderr.waitFor('Ctrl+] leaves', 30_000);
    const follow = vsctlPiped(['vm', 'serial', 'serial-vm', '--follow', '--since', String((await output({ port: 1 })).next)]);
    follow.child.stdin.end();
    await typeLine('echo follow-$((6*7))');
    await follow.stdout.waitFor(/^follow-42$/m, 30_000);
    assert.ok(!follow.stdout.text.includes(GUEST_READY_MARKER), '--since was not followed');
    await finish(await server.call<Ref>('VirtualMachine.TurnOff', { this: vm }), 30_000);
    assert.equal(await run.exited, 0, run.stderr.text);
    assert.match(run.stderr.text, /the VM stopped \(serial-vm is (TurningOff|TurnedOff)\)/);
    assert.equal(await follow.exited, 0, follow.stderr.text);
    assert.match(follow.stderr.text, /the VM stopped/);
    const e = await refusal(output({ port: 1 }));
    assert.equal(e.data.name, 'VM_E_VM_NOT_RUNNING');
  });
});

describe('serial output positions (readFrom)', () => {
  const held = Buffer.from('kept output: caf\u00e9', 'utf8'); // 18 bytes: é is 2

  it('reads what is kept when since is omitted, and from since within it', () => {
    assert.deepEqual(readFrom(held, 100), { text: 'kept output: caf\u00e9', next: 118, skipped: 0 });
    assert.deepEqual(readFrom(held, 100, 105), { text: 'output: caf\u00e9', next: 118, skipped: 0 });
    assert.deepEqual(readFrom(held, 100, 118), { text: '', next: 118, skipped: 0 });
  });

  it('reports the bytes older than what is kept as skipped', () => {
    assert.deepEqual(readFrom(held, 100, 40), { text: 'kept output: caf\u00e9', next: 118, skipped: 60 });
  });

  it('ends on a whole character: the first byte of a split one waits for the next read', () => {
    const split = held.subarray(0, held.length - 1);
    assert.deepEqual(readFrom(split, 100), { text: 'kept output: caf', next: 116, skipped: 0 });
    assert.deepEqual(readFrom(held, 100, 116), { text: '\u00e9', next: 118, skipped: 0 });
    const euro = Buffer.from('\u20ac', 'utf8');
    assert.deepEqual(readFrom(euro.subarray(0, 2), 0), { text: '', next: 0, skipped: 0 });
  });

  it('refuses a position past the end', () => {
    assert.throws(() => readFrom(held, 100, 119), (e: Error & { code?: string }) => e.code === 'VM_E_INVALID_PARAMS' && /past the end/.test(e.message));
  });
});

describe('vsctl vm console against a stand-in server', () => {
  it('shows what comes in the same packet as the upgrade\'s answer (the scrollback), then exits 0 when the VM stopped', async () => {
    // A server that answers the ticket call, then the upgrade with its first message and a
    // close (4001) in one write, so that they reach vsctl together.
    const frame = (opcode: number, payload: Buffer): Buffer => Buffer.concat([Buffer.from([0x80 | opcode, payload.length]), payload]);
    const stand = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => { body += c.toString(); });
      req.on('end', () => {
        const { id, method } = JSON.parse(body) as { id: number; method: string };
        assert.equal(method, 'VirtualMachine.CreateConsoleTicket');
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ jsonrpc: '2.0', id, result: { ticket: 't1', url: '/console/serial?ticket=t1', expiresInSeconds: TICKET_SECONDS } }));
      });
    });
    stand.on('upgrade', (req: http.IncomingMessage, socket: import('node:stream').Duplex) => {
      const accept = crypto.createHash('sha1').update(`${String(req.headers['sec-websocket-key'])}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      const close = Buffer.concat([Buffer.from([0x0f, 0xa1]), Buffer.from('stand-in is TurnedOff')]); // 4001
      socket.end(Buffer.concat([
        Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`),
        frame(0x2, Buffer.from('early-scrollback\r\n')),
        frame(0x8, close),
      ]));
    });
    await new Promise<void>((resolve) => stand.listen(0, '127.0.0.1', resolve));
    try {
      const run = vsctlPiped(['vm', 'console', '7d8e5c1a-3b9f-4e2d-a6c0-1f2e3d4c5b6a'], `http://127.0.0.1:${(stand.address() as AddressInfo).port}`, 'vst_0_stand-in');
      assert.equal(await run.exited, 0, run.stderr.text);
      assert.match(run.stdout.text, /^early-scrollback$/m, `stdout: ${run.stdout.text}\nstderr: ${run.stderr.text}`);
      assert.match(run.stderr.text, /the VM stopped \(stand-in is TurnedOff\)/);
    } finally {
      stand.close();
    }
  });
});
