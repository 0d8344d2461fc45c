// The API's security against a real vserverd: nothing but /login and /healthz answers without a
// caller; POST /api/login hands out tokens and locks an account (and its address) after five
// failures; the first administrator gets a generated password shown once; every member of the
// schema is allowed or refused exactly as the caller's role and the object's access entries say;
// changes are audited without passwords; paths stay inside the storage roots, symlinks
// included; the WebSocket checks its caller, its Origin and each event's object; and a browser
// session is an HttpOnly, SameSite=Strict cookie whose API calls need the page's CSRF token.

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import WebSocket from 'ws';
import { SCHEMA } from '../server/api/schema.js';
import type { Right, TypeSpec } from '../server/api/schema-types.js';
import { createDynamic } from '../storage/vhd/index.js';
import { ADMIN_PASSWORD, RpcError, SERVER_MAIN, TestServer, login } from './helpers/server.js';

type Role = 'Administrator' | 'Operator' | 'Viewer';
interface Ref { $ref: string }
interface LoggedEvent { id: number; time: string; category: string; severity: string; message: string; who: string; object: string | null }

/** What each role may do, as the specification states it (not read from the server's code). */
const RIGHTS_OF: Record<Role, readonly Right[]> = {
  Administrator: ['read', 'change', 'control', 'delete', 'changePermissions'],
  Operator: ['read', 'control'],
  Viewer: ['read'],
};
const ALL_RIGHTS = RIGHTS_OF.Administrator;

const OP_PASSWORD = 'operator-password-1';
const VIEWER_PASSWORD = 'viewer-password-1';

let server: TestServer;
let opToken: string;
let viewerToken: string;
/** Two VMs for the access-entry, audit, storage and WebSocket tests. */
let vmA: string;
let vmB: string;

/** The call's result, or the name of the error it failed with ("ok" is never an error name). */
async function outcome(method: string, params: Record<string, unknown>, token: string): Promise<{ name: string; result?: unknown; message?: string }> {
  try {
    return { name: 'ok', result: await server.call(method, params, token) };
  } catch (e) {
    if (e instanceof RpcError) return { name: e.data.name, message: e.message };
    throw e;
  }
}

/** The call must fail with `name`; returns the error's message. */
async function refusedWith(name: string, method: string, params: Record<string, unknown>, token = server.adminToken): Promise<string> {
  const got = await outcome(method, params, token);
  assert.equal(got.name, name, `${method} ${JSON.stringify(params)}: expected ${name}, got ${got.name === 'ok' ? `a result ${JSON.stringify(got.result)}` : `${got.name}: ${got.message}`}`);
  return got.message!;
}

async function denied(method: string, params: Record<string, unknown>, token: string): Promise<void> {
  await refusedWith('VM_E_ACCESS_DENIED', method, params, token);
}

async function waitForTask(task: unknown): Promise<void> {
  const done = await server.call<boolean>('Task.WaitForCompletion', { this: (task as Ref).$ref, timeoutMs: 30_000 });
  assert.ok(done, `${(task as Ref).$ref} did not complete`);
}

/** Every event after `since`, as the administrator sees them. */
async function eventsSince(since: number, token = server.adminToken): Promise<LoggedEvent[]> {
  const all: LoggedEvent[] = [];
  for (;;) {
    const page = await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { since, limit: 1000 }, token);
    all.push(...page);
    if (page.length < 1000) return all;
    since = page.at(-1)!.id;
  }
}

async function lastEventId(): Promise<number> {
  return (await eventsSince(0)).at(-1)?.id ?? 0;
}

/**
 * A VM whose Startup fails at once, in its worker, instead of booting: its DVD drive holds an
 * image that was deleted after it was attached.
 */
async function vmThatFailsToStart(name: string): Promise<string> {
  const vm = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name })).$ref;
  const folder = path.dirname(await server.call<string>('VirtualMachine.get_File', { this: vm }));
  const drive = await server.call<Ref>('VirtualMachine.AddDVDROMDrive', { this: vm, busNumber: 1, deviceNumber: 0 });
  fs.writeFileSync(path.join(folder, 'gone.iso'), 'not an image');
  await server.call('DVDROMDrive.AttachImage', { this: drive.$ref, path: path.join(folder, 'gone.iso') });
  fs.rmSync(path.join(folder, 'gone.iso'));
  return vm;
}

async function createUser(name: string, password: string, role: Role): Promise<void> {
  await server.call('VirtualServer.CreateUser', { name, password, role });
}

/** A request to the server itself, with redirects left for the test to see. */
function http(pathname: string, init: RequestInit = {}, base = server.url): Promise<Response> {
  return fetch(`${base}${pathname}`, { redirect: 'manual', ...init });
}

function rpcBody(method: string, params: Record<string, unknown> = {}): string {
  return JSON.stringify({ jsonrpc: '2.0', id: 1, method, params });
}

async function assertNotAuthenticated(response: Response, what: string): Promise<void> {
  assert.equal(response.status, 401, `${what}: status`);
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/, `${what}: a JSON answer`);
  const body = await response.json() as { error?: { data?: { name?: string } } };
  assert.equal(body.error?.data?.name, 'VM_E_NOT_AUTHENTICATED', `${what}: ${JSON.stringify(body)}`);
}

function assertRedirectsToLogin(response: Response, what: string): void {
  assert.ok([302, 303].includes(response.status), `${what}: expected a redirect, got ${response.status}`);
  assert.equal(response.headers.get('location'), '/login', what);
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients

interface Message { jsonrpc: '2.0'; id?: unknown; method?: string; params?: Record<string, unknown>; result?: unknown; error?: { data: { name: string } } }

class SocketClient {
  readonly received: Message[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private readonly listeners = new Set<() => void>();

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      this.received.push(JSON.parse((data as Buffer).toString()) as Message);
      for (const listener of [...this.listeners]) listener();
    });
    this.closed = new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  }

  send(message: object): void {
    this.ws.send(JSON.stringify(message));
  }

  waitFor(what: string, predicate: (m: Message) => boolean, timeoutMs = 5000): Promise<Message> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const found = this.received.find(predicate);
        if (!found) return;
        done();
        resolve(found);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${what} did not arrive within ${timeoutMs} ms; received ${JSON.stringify(this.received)}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  close(): void {
    this.ws.close();
  }
}

const wsUrl = (): string => `${server.url.replace(/^http/, 'ws')}/api/ws`;

function openSocket(headers: Record<string, string>): Promise<SocketClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(), { headers });
    ws.once('open', () => resolve(new SocketClient(ws)));
    ws.once('unexpected-response', (request, response) => {
      request.destroy();
      reject(new Error(`the upgrade was refused with HTTP ${response.statusCode}`));
    });
    ws.on('error', reject);
  });
}

/** The HTTP status the upgrade is refused with; fails when it is accepted. */
function upgradeRefusal(headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(), { headers });
    ws.once('unexpected-response', (request, response) => {
      resolve(response.statusCode ?? 0);
      request.destroy();
    });
    ws.once('open', () => {
      ws.close();
      reject(new Error('the upgrade was accepted'));
    });
    ws.on('error', () => { /* the refused request, destroyed above */ });
  });
}

// ---------------------------------------------------------------------------------------------
// Browser sessions

/** Signs in through the form; returns the "name=value" of the session cookie and the Set-Cookie line. */
async function browserSignIn(user: string, password: string): Promise<{ cookie: string; setCookie: string; response: Response }> {
  const response = await http('/login', {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ user, password }).toString(),
  });
  const setCookie = response.headers.getSetCookie().find((c) => c.startsWith('vserver_session=')) ?? '';
  return { cookie: setCookie.split(';')[0], setCookie, response };
}

/** The CSRF token the signed-in page gives its scripts, or null when the page does not carry it. */
async function pageCsrfToken(cookie: string): Promise<string | null> {
  const page = await http('/', { headers: { cookie } });
  assert.equal(page.status, 200);
  const html = await page.text();
  return /<meta\s+name="csrf-token"\s+content="([^"]+)"/.exec(html)?.[1] ?? null;
}

function cookieRpc(cookie: string, headers: Record<string, string>, method: string, params: Record<string, unknown> = {}): Promise<Response> {
  return http('/api/rpc', { method: 'POST', headers: { 'content-type': 'application/json', cookie, ...headers }, body: rpcBody(method, params) });
}

// ---------------------------------------------------------------------------------------------

describe('vserverd API security', { timeout: 120_000 }, () => {
  /** A folder outside the storage roots, for the paths that must not reach it. */
  let outside = '';

  before(async () => {
    outside = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-outside-'));
    server = await TestServer.start();
    await createUser('op', OP_PASSWORD, 'Operator');
    await createUser('viewer', VIEWER_PASSWORD, 'Viewer');
    opToken = await login(server.url, 'op', OP_PASSWORD);
    viewerToken = await login(server.url, 'viewer', VIEWER_PASSWORD);
    vmA = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'acl-a' })).$ref;
    vmB = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'acl-b' })).$ref;
  });

  after(async () => {
    await server?.stop();
    server?.remove();
    if (outside) fs.rmSync(outside, { recursive: true, force: true });
  });

  describe('nothing but /login and /healthz answers without authentication', () => {
    test('/healthz and the sign-in page answer anyone', async () => {
      const health = await http('/healthz');
      assert.equal(health.status, 200);
      assert.equal(await health.text(), 'ok\n');
      const page = await http('/login');
      assert.equal(page.status, 200);
      assert.match(await page.text(), /<form method="post" action="\/login">/);
    });

    test('pages redirect to /login: /, /static/site.css and unknown paths alike', async () => {
      for (const pathname of ['/', '/static/site.css', '/static/', '/nowhere', '/api']) {
        assertRedirectsToLogin(await http(pathname), `GET ${pathname}`);
      }
      assertRedirectsToLogin(await http('/logout', { method: 'POST' }), 'POST /logout');
    });

    test('the API answers 401 VM_E_NOT_AUTHENTICATED in JSON: the schema, the RPC endpoint, unknown API paths', async () => {
      const schema = await http('/api/schema');
      assert.match(schema.headers.get('www-authenticate') ?? '', /^Bearer/);
      await assertNotAuthenticated(schema, 'GET /api/schema');
      await assertNotAuthenticated(await http('/api/rpc', { method: 'POST', headers: { 'content-type': 'application/json' }, body: rpcBody('VirtualServer.get_Name') }), 'POST /api/rpc');
      await assertNotAuthenticated(await http('/api/nowhere'), 'GET /api/nowhere');
      await assertNotAuthenticated(await http('/api/rpc'), 'GET /api/rpc');
    });

    test('a valid token opens the schema and the RPC endpoint', async () => {
      const schema = await http('/api/schema', { headers: { authorization: `Bearer ${server.adminToken}` } });
      assert.equal(schema.status, 200);
      assert.ok(((await schema.json()) as { interfaces: object }).interfaces);
      assert.equal(typeof await server.call('VirtualServer.get_Name'), 'string');
    });

    test('a wrong, malformed, revoked or expired token is 401 VM_E_NOT_AUTHENTICATED', async () => {
      const [, id, secret] = /^vst_([0-9a-f]{12})_(.{43})$/.exec(server.adminToken)!;
      const otherSecret = secret.startsWith('A') ? `B${secret.slice(1)}` : `A${secret.slice(1)}`;
      const revoked = await server.call<{ id: string; token: string }>('VirtualServer.CreateToken', { description: 'to revoke' });
      await server.call('VirtualServer.RevokeToken', { id: revoked.id });
      const expiring = await server.call<{ id: string; token: string }>('VirtualServer.CreateToken', { description: 'to expire', expiresInDays: 1 });
      // Time is moved on in the catalog itself: the token's expiry is set to a minute ago. (The token
      // is not used before: vserverd remembers a checked token for a few seconds, and this edit
      // bypasses it.)
      const db = new Database(path.join(server.dataDir, 'catalog.sqlite'));
      try {
        db.pragma('busy_timeout = 5000');
        db.prepare('UPDATE tokens SET expires = ? WHERE id = ?').run(new Date(Date.now() - 60_000).toISOString(), expiring.id);
      } finally {
        db.close();
      }
      const cases: Record<string, string> = {
        'a wrong secret for a real id': `Bearer vst_${id}_${otherSecret}`,
        'an unknown id': `Bearer vst_000000000000_${secret}`,
        'a malformed token': 'Bearer not-a-token',
        'a token with a character more': `Bearer ${server.adminToken}x`,
        'an empty bearer': 'Bearer ',
        'Basic credentials': `Basic ${Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64')}`,
        'a revoked token': `Bearer ${revoked.token}`,
        'an expired token': `Bearer ${expiring.token}`,
      };
      for (const [what, authorization] of Object.entries(cases)) {
        await assertNotAuthenticated(await http('/api/rpc', { method: 'POST', headers: { 'content-type': 'application/json', authorization }, body: rpcBody('VirtualServer.get_Name') }), `${what}: POST /api/rpc`);
        await assertNotAuthenticated(await http('/api/schema', { headers: { authorization } }), `${what}: GET /api/schema`);
        assertRedirectsToLogin(await http('/', { headers: { authorization } }), `${what}: GET /`);
      }
    });
  });

  describe('POST /api/login', () => {
    test('the right password gives a token that works, with the user\'s role and an expiry', async () => {
      const response = await http('/api/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'op', password: OP_PASSWORD }) });
      assert.equal(response.status, 200);
      const body = await response.json() as { token: string; user: string; role: string; expires: string };
      assert.match(body.token, /^vst_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/);
      assert.equal(body.user, 'op');
      assert.equal(body.role, 'Operator');
      assert.ok(Date.parse(body.expires) > Date.now(), 'it expires in the future');
      assert.equal(await server.call('VirtualMachine.get_Name', { this: vmA }, body.token), 'acl-a');
    });

    test('a wrong password or an unknown user is 401 VM_E_LOGIN_FAILED, logged as a Security warning', async () => {
      const since = await lastEventId();
      for (const [user, password] of [['op', 'not-the-password'], ['nobody-here', 'not-the-password']]) {
        const response = await http('/api/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user, password }) });
        assert.equal(response.status, 401);
        assert.equal(((await response.json()) as { error: { name: string } }).error.name, 'VM_E_LOGIN_FAILED');
      }
      const failures = (await eventsSince(since)).filter((e) => e.category === 'Security' && e.severity === 'Warning' && /failed sign-in/.test(e.message));
      assert.deepEqual(failures.map((e) => e.who), ['op', 'nobody-here']);
      assert.ok(failures.every((e) => !e.message.includes('not-the-password')), 'the password tried is not logged');
    });

    test('a request without a user or a password is 400, not a failed attempt', async () => {
      const response = await http('/api/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'op' }) });
      assert.equal(response.status, 400);
    });
  });

  describe('every member of the schema, for every role', () => {
    interface Fixtures {
      vm: string; id: string; name: string; vmc: string; disk: string; task: string;
      unregisterVictim: string; deleteVictim: string; tokenToRevoke: string;
      /** A host-connected network (catalog only: this server makes no host parts) on one of the host's interfaces. */
      network: string; hostAdapter: string; vnc: string; networkUnregisterVictim: string; networkDeleteVictim: string;
      /** A snapshot of a diskless VM of its own (a snapshot makes the VM's disks layers, which the disk members would then act on). */
      snapshot: string;
    }

    const ROLE_DIGIT: Record<Role, number> = { Administrator: 1, Operator: 2, Viewer: 3 };
    const TOKEN_OF = (): Record<Role, string> => ({ Administrator: server.adminToken, Operator: opToken, Viewer: viewerToken });
    const USER_OF: Record<Role, [string, string]> = { Administrator: ['admin', ADMIN_PASSWORD], Operator: ['op', OP_PASSWORD], Viewer: ['viewer', VIEWER_PASSWORD] };

    /** A fresh set of real objects for one role's walk, made by the administrator: the walk may delete them. */
    async function fixtures(role: Role): Promise<Fixtures> {
      const name = `m-${role}`;
      const folder = path.join(server.dataDir, name);
      const vm = await vmThatFailsToStart(name);
      const id = vm.slice('VirtualMachine/'.length);
      const diskTask = await server.call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: `${name}/disk0.vhd`, sizeMB: 16 });
      await waitForTask(diskTask);
      await waitForTask(await server.call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: `${name}/disk1.vhd`, sizeMB: 16 }));
      await server.call('VirtualMachine.AddHardDiskConnection', { this: vm, path: `${name}/disk0.vhd`, busType: 'IDE', busNumber: 0, deviceNumber: 0 });
      await server.call('VirtualMachine.AddHardDiskConnection', { this: vm, path: `${name}/disk1.vhd`, busType: 'IDE', busNumber: 0, deviceNumber: 1 });
      await server.call('VirtualMachine.AddDVDROMDrive', { this: vm, busNumber: 1, deviceNumber: 1 });
      fs.writeFileSync(path.join(folder, 'present.iso'), 'not an image either');
      for (let i = 0; i < 2; i++) {
        await server.call('VirtualMachine.AddSCSIController', { this: vm });
        await server.call('VirtualMachine.AddNetworkAdapter', { this: vm });
      }
      const unregisterVictim = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: `unregister-${role}` })).$ref;
      const deleteVictim = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: `delete-${role}` })).$ref;
      await createUser(`doomed-${role}`, 'doomed-password', 'Viewer');
      await createUser(`demoted-${role}`, 'demoted-password', 'Operator');
      const tokenToRevoke = (await server.call<{ id: string }>('VirtualServer.CreateToken', { description: 'revoked by the walk' }, TOKEN_OF()[role])).id;
      const [hostInterface] = (await server.call<{ networkInterfaces: { name: string }[] }>('VirtualServer.get_HostInfo')).networkInterfaces;
      assert.ok(hostInterface, 'the host has an interface a host-connected network can name');
      const network = (await server.call<Ref>('VirtualServer.CreateVirtualNetwork', { name: `net-${role}`, kind: 'host', hostAdapter: hostInterface.name })).$ref;
      const registered = (await server.call<Ref>('VirtualServer.CreateVirtualNetwork', { name: `vnc-${role}`, kind: 'internal' })).$ref;
      const vnc = await server.call<string>('VirtualNetwork.get_File', { this: registered });
      await server.call('VirtualServer.UnregisterVirtualNetwork', { network: registered });
      const networkUnregisterVictim = (await server.call<Ref>('VirtualServer.CreateVirtualNetwork', { name: `unregister-net-${role}`, kind: 'internal' })).$ref;
      const networkDeleteVictim = (await server.call<Ref>('VirtualServer.CreateVirtualNetwork', { name: `delete-net-${role}`, kind: 'internal' })).$ref;
      const snapshotVm = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: `snapshots-${role}` })).$ref;
      const snapshotTask = await server.call<Ref>('VirtualMachine.CreateSnapshot', { this: snapshotVm, name: 'walked' });
      await waitForTask(snapshotTask);
      const snapshot = (await server.call<Ref>('Task.get_Result', { this: snapshotTask.$ref })).$ref;
      return {
        vm, id, name, vmc: await server.call<string>('VirtualMachine.get_File', { this: vm }), disk: path.join(folder, 'disk0.vhd'),
        task: diskTask.$ref, unregisterVictim, deleteVictim, tokenToRevoke,
        network, hostAdapter: hostInterface.name, vnc, networkUnregisterVictim, networkDeleteVictim, snapshot,
      };
    }

    /** The references each interface's members are called on. */
    function targets(f: Fixtures): Record<string, string[]> {
      return {
        VirtualServer: [''],
        VirtualMachine: [f.vm],
        HardDiskConnection: [`HardDiskConnection/${f.id}/ide0-0`],
        DVDROMDrive: [`DVDROMDrive/${f.id}/ide1-0`],
        SCSIController: [`SCSIController/${f.id}/0`],
        NetworkAdapter: [`NetworkAdapter/${f.id}/0`],
        GuestOS: [`GuestOS/${f.id}`],
        Display: [`Display/${f.id}`],
        Task: [f.task],
        HardDisk: [`HardDisk/${f.disk}`],
        Security: ['Security/VirtualServer', `Security/${f.vm}`],
        VirtualNetwork: [f.network],
        DHCPVirtualNetworkServer: [f.network.replace('VirtualNetwork/', 'DHCPVirtualNetworkServer/')],
        Snapshot: [f.snapshot],
        // This server has no cluster settings: their members answer VM_E_NOT_CLUSTERED to those with the right.
        Cluster: ['Cluster/lab'],
        Host: ['Host/vhost1'],
      };
    }

    /** Parameters with a meaning the types alone cannot give: existing files, fresh names, the objects a call removes. */
    function overrides(role: Role, f: Fixtures): Record<string, Record<string, unknown>> {
      const [user, password] = USER_OF[role];
      return {
        'VirtualServer.CreateVirtualMachine': { name: `new-${role}` },
        'VirtualServer.RegisterVirtualMachine': { path: f.vmc },
        'VirtualServer.UnregisterVirtualMachine': { vm: f.unregisterVictim },
        'VirtualServer.DeleteVirtualMachine': { vm: f.deleteVictim },
        'VirtualServer.FindVirtualMachine': { name: f.name },
        'VirtualServer.CreateDynamicVirtualHardDisk': { path: `${f.name}/dynamic.vhd` },
        'VirtualServer.CreateFixedVirtualHardDisk': { path: `${f.name}/fixed.vhd` },
        'VirtualServer.CreateDifferencingVirtualHardDisk': { path: `${f.name}/child.vhd`, parentPath: f.disk },
        'VirtualServer.GetHardDisk': { path: f.disk },
        'VirtualServer.CreateUser': { name: `made-${role}`, password: 'made-password', role: 'Viewer' },
        'VirtualServer.DeleteUser': { name: `doomed-${role}` },
        'VirtualServer.SetUserRole': { name: `demoted-${role}`, role: 'Viewer' },
        'VirtualServer.SetUserPassword': { name: user, password },
        'VirtualServer.RevokeToken': { id: f.tokenToRevoke },
        'VirtualMachine.put_Name': { value: f.name },
        'VirtualMachine.put_Memory': { value: 256 },
        'VirtualMachine.AddHardDiskConnection': { path: f.disk },
        'VirtualMachine.RemoveHardDiskConnection': { connection: `HardDiskConnection/${f.id}/ide0-1` },
        'VirtualMachine.RemoveDVDROMDrive': { drive: `DVDROMDrive/${f.id}/ide1-1` },
        'VirtualMachine.RemoveSCSIController': { controller: `SCSIController/${f.id}/1` },
        'VirtualMachine.RemoveNetworkAdapter': { adapter: `NetworkAdapter/${f.id}/1` },
        'VirtualMachine.AddUSBDevice': { type: 'Tablet' },
        'VirtualMachine.RemoveUSBDevice': { type: 'Tablet' },
        'DVDROMDrive.AttachImage': { path: `${f.name}/present.iso` },
        'HardDisk.Convert': { path: `${f.name}/converted.vhd`, type: 'Dynamic' },
        'HardDisk.MergeTo': { path: `${f.name}/merged.vhd` },
        'Security.AddEntry': { name: 'role:Viewer', type: 'Allowed', rights: [] },
        'Security.RemoveEntry': { name: 'role:Viewer' },
        'VirtualServer.CreateVirtualNetwork': { name: `made-net-${role}`, kind: 'internal' },
        'VirtualServer.BackupVirtualMachines': { vms: [f.vm], path: `${f.name}/backups` },
        'VirtualMachine.CreateSnapshot': { name: `walk-${role}` },
        'VirtualServer.RegisterVirtualNetwork': { path: f.vnc },
        'VirtualServer.UnregisterVirtualNetwork': { network: f.networkUnregisterVictim },
        'VirtualServer.DeleteVirtualNetwork': { network: f.networkDeleteVictim },
        'VirtualServer.FindVirtualNetwork': { name: `net-${role}` },
        'VirtualNetwork.put_Name': { value: `net-${role}` },
        'VirtualNetwork.put_HostAdapter': { value: f.hostAdapter },
        'DHCPVirtualNetworkServer.ConfigureDHCPServer': {
          network: '10.200.0.0', networkMask: '255.255.255.0', startingIPAddress: '10.200.0.10', endingIPAddress: '10.200.0.20', serverIPAddress: '10.200.0.1',
        },
        'DHCPVirtualNetworkServer.ConfigureDHCPLeaseTimes': { leaseTime: 3600, renewalTime: 1800, rebindingTime: 3000 },
        'NetworkAdapter.put_EthernetAddress': { value: `00:03:FF:00:00:0${ROLE_DIGIT[role]}` },
      };
    }

    /** The least value of a type: the first of an enum, an integer's minimum, an empty list. */
    function sample(type: TypeSpec, member: string, f: Fixtures): unknown {
      switch (type.type) {
        case 'string': return 'x';
        case 'integer': return type.min ?? 0;
        case 'boolean': return false;
        case 'enum': return type.values[0];
        case 'array': return [];
        case 'object': return {};
        case 'ref': {
          const found = targets(f)[type.interface]?.[0];
          assert.ok(found, `${member}: no object of ${type.interface} to pass`);
          return found;
        }
        default: assert.fail(`${member}: no sample for a ${type.type} parameter`);
      }
    }

    /** Every member with the least valid parameters: the required ones only, sampled, then overridden. */
    function calls(role: Role, f: Fixtures): { method: string; params: Record<string, unknown>; right: Right; administratorsOnly: boolean }[] {
      const list = [];
      const special = overrides(role, f);
      for (const [iface, spec] of Object.entries(SCHEMA)) {
        for (const self of targets(f)[iface] ?? assert.fail(`no object to call ${iface}'s members on`)) {
          for (const [member, m] of Object.entries(spec.members)) {
            const method = `${iface}.${member}`;
            const params: Record<string, unknown> = self ? { this: self } : {};
            for (const [name, p] of Object.entries(m.params ?? {})) if (!p.optional) params[name] = sample(p, method, f);
            Object.assign(params, special[method]);
            list.push({ method, params, right: m.right, administratorsOnly: m.administratorsOnly === true });
          }
        }
      }
      return list;
    }

    /** Errors that would mean the call never reached the access check: the walk's parameters are wrong, not the server. */
    const NEVER_CHECKED = new Set(['VM_E_INVALID_PARAMS', 'VM_E_METHOD_NOT_FOUND', 'VM_E_VM_UNKNOWN', 'VM_E_TASK_UNKNOWN']);

    for (const role of ['Administrator', 'Operator', 'Viewer'] as const) {
      test(`${role}: a member is allowed exactly when the role has its right (and, for administratorsOnly members, is Administrator); each refusal is VM_E_ACCESS_DENIED and logged`, async () => {
        const f = await fixtures(role);
        const token = TOKEN_OF()[role];
        const user = USER_OF[role][0];
        const since = await lastEventId();
        const wrong: string[] = [];
        const refusedCalls: string[] = [];
        const walk = calls(role, f);
        const memberCount = Object.values(SCHEMA).reduce((n, s) => n + Object.keys(s.members).length, 0);
        assert.equal(walk.length, memberCount + Object.keys(SCHEMA.Security.members).length, 'every member is walked (Security\'s on the server and on a VM)');
        for (const { method, params, right, administratorsOnly } of walk) {
          const allowed = RIGHTS_OF[role].includes(right) && !(administratorsOnly && role !== 'Administrator');
          const got = await outcome(method, params, token);
          const on = 'this' in params ? ` on ${String(params.this)}` : '';
          if (allowed && got.name === 'VM_E_ACCESS_DENIED') wrong.push(`${method}${on} (needs ${right}) was refused: ${got.message}`);
          if (allowed && NEVER_CHECKED.has(got.name)) wrong.push(`${method}${on}: the walk's parameters are wrong: ${got.name}: ${got.message}`);
          if (!allowed && got.name !== 'VM_E_ACCESS_DENIED') wrong.push(`${method}${on} (needs ${right}${administratorsOnly ? ', administrators only' : ''}) was not refused: ${got.name === 'ok' ? 'it succeeded' : `${got.name}: ${got.message}`}`);
          if (!allowed) refusedCalls.push(method);
          if (got.name === 'ok' && typeof (got.result as Ref | null)?.$ref === 'string' && (got.result as Ref).$ref.startsWith('Task/')) await waitForTask(got.result);
        }
        assert.deepEqual(wrong, [], `${role}:\n${wrong.join('\n')}`);
        if (role === 'Administrator') assert.equal(refusedCalls.length, 0);
        else assert.ok(refusedCalls.length > 10, `${role} was refused ${refusedCalls.length} members`);

        const warnings = (await eventsSince(since)).filter((e) => e.category === 'Security' && e.severity === 'Warning');
        assert.deepEqual(warnings.map((e) => e.message.match(/refused (\S+)/)?.[1]), refusedCalls, 'one Security warning per refusal, in order, naming the member');
        assert.ok(warnings.every((e) => e.who === user && e.message.startsWith(`${user} was refused`)), `each names ${user}`);
        // The next role's walk bridges its own network to the same host interface.
        await server.call('NetworkAdapter.DetachFromVirtualNetwork', { this: `NetworkAdapter/${f.id}/0` });
        await server.call('VirtualServer.DeleteVirtualNetwork', { network: f.network });
      });
    }
  });

  describe('access entries and token roles', () => {
    const security = (vm: string): string => `Security/${vm}`;

    async function entry(vm: string, name: string, type: 'Allowed' | 'Denied', rights: Right[]): Promise<void> {
      await server.call('Security.AddEntry', { this: security(vm), name, type, rights });
    }

    async function clearEntries(): Promise<void> {
      for (const vm of [vmA, vmB]) {
        for (const e of await server.call<{ name: string }[]>('Security.get_AccessRights', { this: security(vm) })) {
          await server.call('Security.RemoveEntry', { this: security(vm), name: e.name });
        }
      }
    }

    async function rightsOf(vm: string, token: string): Promise<string[]> {
      return (await server.call<string[]>('Security.get_CurrentUserAccessRights', { this: security(vm) }, token)).sort();
    }

    test('an Allowed "change" entry on VM A lets a Viewer set A\'s notes, and not B\'s', async () => {
      await entry(vmA, 'viewer', 'Allowed', ['change']);
      try {
        await server.call('VirtualMachine.put_Notes', { this: vmA, value: 'set by the viewer' }, viewerToken);
        assert.equal(await server.call('VirtualMachine.get_Notes', { this: vmA }), 'set by the viewer');
        await denied('VirtualMachine.put_Notes', { this: vmB, value: 'refused' }, viewerToken);
        assert.deepEqual(await rightsOf(vmA, viewerToken), ['change', 'read']);
        assert.deepEqual(await rightsOf(vmB, viewerToken), ['read']);
      } finally {
        await clearEntries();
      }
    });

    test('a Denied "read" entry hides VM A from an Operator: not listed, not found, not readable, its events not shown', async () => {
      await server.call('VirtualMachine.put_Notes', { this: vmA, value: 'an event about A' });
      await entry(vmA, 'op', 'Denied', ['read']);
      try {
        const listed = (await server.call<Ref[]>('VirtualServer.get_VirtualMachines', {}, opToken)).map((r) => r.$ref);
        assert.ok(!listed.includes(vmA), 'A is not listed');
        assert.ok(listed.includes(vmB), 'B still is');
        assert.equal(await server.call('VirtualServer.FindVirtualMachine', { name: 'acl-a' }, opToken), null);
        assert.deepEqual(await server.call('VirtualServer.FindVirtualMachine', { name: 'acl-b' }, opToken), { $ref: vmB });
        await denied('VirtualMachine.get_Name', { this: vmA }, opToken);
        await denied('VirtualMachine.get_Notes', { this: vmA }, opToken);
        const seen = await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { limit: 1000 }, opToken);
        assert.ok(seen.length > 0);
        assert.ok(seen.every((e) => e.object === null || !e.object.includes(vmA.slice('VirtualMachine/'.length))), 'no event about A is shown');
        assert.deepEqual(await server.call('VirtualServer.GetEvents', { object: vmA }, opToken), []);
        // Only what the entry names is taken away: the Operator's other VMs keep their rights.
        assert.deepEqual(await rightsOf(vmB, opToken), ['control', 'read']);
      } finally {
        await clearEntries();
      }
    });

    test('a task about a VM is guarded by that VM: an Operator denied read on it cannot read or cancel the task by its reference', async () => {
      // The schema says of Task: "the caller needs read on the object the task acts on".
      const vm = await vmThatFailsToStart('tasked');
      const task = await server.call<Ref>('VirtualMachine.Startup', { this: vm });
      await waitForTask(task);
      assert.equal(await server.call('Task.get_Object', { this: task.$ref }), vm);
      await entry(vm, 'op', 'Denied', ['read', 'control']);
      try {
        assert.ok(!(await server.call<Ref[]>('VirtualServer.get_Tasks', {}, opToken)).some((t) => t.$ref === task.$ref), 'get_Tasks leaves it out');
        await denied('Task.get_Description', { this: task.$ref }, opToken);
        await denied('Task.get_Log', { this: task.$ref }, opToken);
        await denied('Task.Cancel', { this: task.$ref }, opToken);
      } finally {
        await server.call('Security.RemoveEntry', { this: security(vm), name: 'op' });
      }
    });

    test('an entry for "role:Viewer" applies to every Viewer, and to no one else', async () => {
      await createUser('viewer2', 'viewer2-password', 'Viewer');
      const viewer2 = await login(server.url, 'viewer2', 'viewer2-password');
      await entry(vmA, 'role:Viewer', 'Allowed', ['control']);
      try {
        for (const token of [viewerToken, viewer2]) {
          assert.deepEqual(await rightsOf(vmA, token), ['control', 'read']);
          // A control member runs (and fails on the VM's state, not on the caller's rights).
          await refusedWith('VM_E_VM_NOT_RUNNING', 'VirtualMachine.Pause', { this: vmA }, token);
          await denied('VirtualMachine.Pause', { this: vmB }, token);
        }
        assert.deepEqual(await rightsOf(vmA, opToken), ['control', 'read'], 'an Operator gets nothing from it');
        await denied('VirtualMachine.put_Notes', { this: vmA, value: 'no' }, viewerToken);
      } finally {
        await clearEntries();
      }
    });

    test('Denied wins over Allowed, whichever of the user and the role carries it', async () => {
      await entry(vmA, 'viewer', 'Allowed', ['change']);
      await entry(vmA, 'role:Viewer', 'Denied', ['change']);
      try {
        await denied('VirtualMachine.put_Notes', { this: vmA, value: 'no' }, viewerToken);
        await entry(vmA, 'viewer', 'Denied', ['change']);
        await entry(vmA, 'role:Viewer', 'Allowed', ['change']);
        await denied('VirtualMachine.put_Notes', { this: vmA, value: 'no' }, viewerToken);
        assert.deepEqual(await rightsOf(vmA, viewerToken), ['read']);
      } finally {
        await clearEntries();
      }
    });

    test('administrators keep every right whatever the entries deny them', async () => {
      await entry(vmA, 'admin', 'Denied', [...ALL_RIGHTS]);
      await entry(vmA, 'role:Administrator', 'Denied', [...ALL_RIGHTS]);
      try {
        assert.deepEqual(await rightsOf(vmA, server.adminToken), [...ALL_RIGHTS].sort());
        await server.call('VirtualMachine.put_Notes', { this: vmA, value: 'the administrator still can' });
        assert.equal(await server.call('VirtualMachine.get_Notes', { this: vmA }), 'the administrator still can');
        assert.ok((await server.call<Ref[]>('VirtualServer.get_VirtualMachines')).some((r) => r.$ref === vmA));
      } finally {
        await clearEntries();
      }
    });

    test('a Viewer-role token of an administrator can only read, even administrators-only members and with entries allowing more', async () => {
      const token = await server.call<{ token: string; role: string }>('VirtualServer.CreateToken', { role: 'Viewer', description: 'read-only' });
      assert.equal(token.role, 'Viewer');
      await entry(vmA, 'admin', 'Allowed', [...ALL_RIGHTS]);
      try {
        assert.equal(await server.call('VirtualMachine.get_Name', { this: vmA }, token.token), 'acl-a');
        assert.deepEqual(await rightsOf(vmA, token.token), ['read']);
        await denied('VirtualMachine.put_Notes', { this: vmA, value: 'no' }, token.token);
        await denied('VirtualMachine.Pause', { this: vmA }, token.token);
        await denied('VirtualServer.get_Users', {}, token.token);
        await denied('VirtualServer.CreateUser', { name: 'sneaky', password: 'sneaky-password', role: 'Administrator' }, token.token);
        await denied('Security.AddEntry', { this: security(vmA), name: 'viewer', type: 'Allowed', rights: ['change'] }, token.token);
      } finally {
        await clearEntries();
      }
    });

    test('CreateToken asking for a role above the caller\'s is refused with VM_E_ACCESS_DENIED naming both roles, and makes no token', async () => {
      const adminViewerToken = (await server.call<{ token: string }>('VirtualServer.CreateToken', { role: 'Viewer', description: 'narrowed admin' })).token;
      const before = (await server.call<{ id: string }[]>('VirtualServer.get_Tokens')).length;
      const cases: [string, string, string, string][] = [
        ['a Viewer', viewerToken, 'Viewer', 'Administrator'],
        ['a Viewer', viewerToken, 'Viewer', 'Operator'],
        ['an Operator', opToken, 'Operator', 'Administrator'],
        ['an administrator\'s Viewer-role token', adminViewerToken, 'Viewer', 'Operator'],
      ];
      for (const [who, token, has, asked] of cases) {
        const message = await refusedWith('VM_E_ACCESS_DENIED', 'VirtualServer.CreateToken', { role: asked }, token);
        assert.ok(message.includes(has) && message.includes(asked), `${who} asking for ${asked}: the message names both roles: ${message}`);
      }
      assert.equal((await server.call<{ id: string }[]>('VirtualServer.get_Tokens')).length, before, 'no token was made');
      // The caller's own role, a narrower one, or none (the caller's) are given as asked.
      assert.equal((await server.call<{ role: string }>('VirtualServer.CreateToken', { role: 'Operator' }, opToken)).role, 'Operator');
      assert.equal((await server.call<{ role: string }>('VirtualServer.CreateToken', { role: 'Viewer' }, opToken)).role, 'Viewer');
      const own = await server.call<{ token: string; role: string; user: string }>('VirtualServer.CreateToken', {}, viewerToken);
      assert.deepEqual([own.user, own.role], ['viewer', 'Viewer']);
      await denied('VirtualServer.get_Users', {}, own.token);
    });

    test('a token\'s role caps what access entries give its user', async () => {
      await entry(vmA, 'op', 'Allowed', ['change']);
      try {
        const readOnly = await server.call<{ token: string }>('VirtualServer.CreateToken', { role: 'Viewer' }, opToken);
        await server.call('VirtualMachine.put_Notes', { this: vmA, value: 'set by op' }, opToken);
        await denied('VirtualMachine.put_Notes', { this: vmA, value: 'no' }, readOnly.token);
        await denied('VirtualMachine.Pause', { this: vmA }, readOnly.token);
      } finally {
        await clearEntries();
      }
    });

    test('demoting a user narrows the tokens they already hold', async () => {
      await createUser('acting-admin', 'acting-admin-password', 'Administrator');
      const token = await login(server.url, 'acting-admin', 'acting-admin-password');
      assert.ok(Array.isArray(await server.call('VirtualServer.get_Users', {}, token)));
      await server.call('VirtualServer.SetUserRole', { name: 'acting-admin', role: 'Viewer' });
      await denied('VirtualServer.get_Users', {}, token);
      await denied('VirtualMachine.put_Notes', { this: vmA, value: 'no' }, token);
      await server.call('VirtualServer.DeleteUser', { name: 'acting-admin' });
      await assertNotAuthenticated(await http('/api/schema', { headers: { authorization: `Bearer ${token}` } }), 'a deleted user\'s token');
    });

    test('a refusal is logged as a Security warning naming the user, the member and the object', async () => {
      const since = await lastEventId();
      await denied('VirtualMachine.put_Notes', { this: vmB, value: 'refused' }, viewerToken);
      const [warning, ...rest] = (await eventsSince(since)).filter((e) => e.category === 'Security');
      assert.equal(rest.length, 0);
      assert.equal(warning.severity, 'Warning');
      assert.equal(warning.who, 'viewer');
      assert.equal(warning.object, vmB);
      assert.match(warning.message, /^viewer was refused VirtualMachine\.put_Notes on acl-b: it needs the "change" right$/);
    });
  });

  describe('every change is audited, without passwords', () => {
    test('Security events (sign-ins, refusals) are shown to administrators only; a Viewer sees the events of what it may read', async () => {
      const since = await lastEventId();
      const failed = await fetch(`${server.url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'viewer', password: 'not-the-password' }) });
      assert.equal(failed.status, 401);
      await server.call('VirtualMachine.put_Notes', { this: vmA, value: 'seen by viewers' });
      const asAdministrator = await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { since });
      const asViewer = await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { since }, viewerToken);
      assert.ok(asAdministrator.some((e) => e.category === 'Security' && /failed sign-in as viewer/.test(e.message)), JSON.stringify(asAdministrator));
      assert.deepEqual(asViewer.filter((e) => e.category === 'Security'), []);
      assert.ok(asViewer.some((e) => /seen by viewers/.test(e.message)), JSON.stringify(asViewer));
    });

    test('a put_Notes appears in the event log with who made it and the VM\'s reference', async () => {
      await server.call('Security.AddEntry', { this: `Security/${vmA}`, name: 'viewer', type: 'Allowed', rights: ['change'] });
      const since = await lastEventId();
      await server.call('VirtualMachine.put_Notes', { this: vmA, value: 'audited notes' }, viewerToken);
      await server.call('Security.RemoveEntry', { this: `Security/${vmA}`, name: 'viewer' });
      const events = await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { since, object: vmA });
      const notes = events.filter((e) => e.message.includes('VirtualMachine.put_Notes'));
      assert.equal(notes.length, 1, JSON.stringify(events));
      assert.equal(notes[0].who, 'viewer');
      assert.equal(notes[0].object, vmA);
      assert.equal(notes[0].category, 'Virtual Machine');
      assert.equal(notes[0].severity, 'Information');
      assert.match(notes[0].message, /audited notes/);
      // Reads are not changes: they leave no entry.
      await server.call('VirtualMachine.get_Notes', { this: vmA }, viewerToken);
      const later = await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { since: notes[0].id, object: vmA });
      assert.deepEqual(later.filter((e) => e.message.includes('get_Notes')), []);
    });

    test('no password appears in any event: CreateUser, SetUserPassword (by an administrator and by the user), sign-in, refused calls', async () => {
      const since = await lastEventId();
      const passwords = ['first-Secret-9431', 'second-Secret-2287', 'third-Secret-7716', 'fourth-Secret-5540'];
      await server.call('VirtualServer.CreateUser', { name: 'secretive', password: passwords[0], role: 'Operator' });
      await server.call('VirtualServer.SetUserPassword', { name: 'secretive', password: passwords[1] });
      const token = await login(server.url, 'secretive', passwords[1]);
      await server.call('VirtualServer.SetUserPassword', { name: 'secretive', password: passwords[2] }, token);
      await login(server.url, 'secretive', passwords[2]);
      await denied('VirtualServer.CreateUser', { name: 'other', password: passwords[3], role: 'Viewer' }, token);
      await refusedWith('VM_E_WEAK_PASSWORD', 'VirtualServer.SetUserPassword', { name: 'secretive', password: 'short' }, token);
      const events = await eventsSince(since);
      const audits = events.filter((e) => /CreateUser|SetUserPassword/.test(e.message) && e.severity === 'Information');
      assert.equal(audits.length, 3, JSON.stringify(events));
      assert.ok(audits.every((e) => e.message.includes('password=(hidden)') && e.category === 'Security'), JSON.stringify(audits));
      const text = JSON.stringify(await eventsSince(0));
      for (const p of [...passwords, 'short', ADMIN_PASSWORD, OP_PASSWORD, VIEWER_PASSWORD]) assert.ok(!text.includes(p), `the event log holds a password: ${p}`);
    });
  });

  describe('paths stay inside the storage roots', () => {
    const OUTSIDE_ROOTS = 'VM_E_PATH_OUTSIDE_ROOTS';
    let up: string;

    before(async () => {
      await createDynamic(path.join(outside, 'outside.vhd'), { size: 16 * 1024 * 1024 });
      fs.copyFileSync(await server.call<string>('VirtualMachine.get_File', { this: vmB }), path.join(outside, 'outside.vmc'));
      const root = server.dataDir;
      // Inside the data folder (the storage root), links that lead out of it.
      fs.symlinkSync(path.join(outside, 'outside.vhd'), path.join(root, 'link-to-outside.vhd'));
      fs.symlinkSync(path.join(outside, 'created-through-link.vhd'), path.join(root, 'dangling.vhd'));
      fs.symlinkSync(path.join(outside, 'outside.vmc'), path.join(root, 'link-to-outside.vmc'));
      fs.symlinkSync(outside, path.join(root, 'escape'));
      up = path.join('..', path.basename(outside));
    });

    function outsideListing(): string[] {
      return fs.readdirSync(outside, { recursive: true }).map(String).sort();
    }

    test('new disks: an absolute path, "..", a dangling symlink and a symlinked folder leading out are refused, and nothing is created', async () => {
      const before = outsideListing();
      const dotdot = path.join(path.dirname(server.dataDir), 'outside.vhd');
      const existedBefore = fs.existsSync(dotdot);
      for (const p of ['/etc/passwd', '/tmp/vserver-new.vhd', '../outside.vhd', `${up}/by-dotdot.vhd`, 'dangling.vhd', 'escape/under-link.vhd', 'escape/../../x.vhd']) {
        await refusedWith(OUTSIDE_ROOTS, 'VirtualServer.CreateDynamicVirtualHardDisk', { path: p, sizeMB: 16 });
        await refusedWith(OUTSIDE_ROOTS, 'VirtualServer.CreateFixedVirtualHardDisk', { path: p, sizeMB: 1 });
      }
      await refusedWith(OUTSIDE_ROOTS, 'VirtualServer.CreateDifferencingVirtualHardDisk', { path: 'child.vhd', parentPath: 'link-to-outside.vhd' });
      await refusedWith(OUTSIDE_ROOTS, 'VirtualServer.CreateVirtualMachine', { name: 'escaped', path: 'escape/vm' });
      assert.equal(fs.existsSync(path.join(server.dataDir, 'child.vhd')), false);
      assert.deepEqual(outsideListing(), before);
      if (!existedBefore) assert.equal(fs.existsSync(dotdot), false, `${dotdot} was created`);
      assert.equal(fs.existsSync('/tmp/vserver-new.vhd'), false);
    });

    test('existing files: GetHardDisk, AddHardDiskConnection, AttachImage and RegisterVirtualMachine refuse paths leading out', async () => {
      const cases = ['/etc/passwd', `${up}/outside.vhd`, 'link-to-outside.vhd', 'escape/outside.vhd'];
      for (const p of cases) {
        await refusedWith(OUTSIDE_ROOTS, 'VirtualServer.GetHardDisk', { path: p });
        await refusedWith(OUTSIDE_ROOTS, 'VirtualMachine.AddHardDiskConnection', { this: vmA, path: p, busType: 'IDE', busNumber: 0, deviceNumber: 0 });
      }
      for (const p of ['/etc/passwd', `${up}/outside.vmc`, 'link-to-outside.vmc', 'escape/outside.vmc']) {
        await refusedWith(OUTSIDE_ROOTS, 'VirtualServer.RegisterVirtualMachine', { path: p });
      }
      const dvd = await server.call<Ref>('VirtualMachine.AddDVDROMDrive', { this: vmA, busNumber: 1, deviceNumber: 0 });
      for (const p of ['/etc/passwd', 'escape/outside.vhd']) await refusedWith(OUTSIDE_ROOTS, 'DVDROMDrive.AttachImage', { this: dvd.$ref, path: p });
      await server.call('VirtualMachine.RemoveDVDROMDrive', { this: vmA, drive: dvd.$ref });
      assert.deepEqual(await server.call('VirtualMachine.get_HardDiskConnections', { this: vmA }), []);
      // A path outside is refused before its existence is checked: the API tells nothing about files out there.
      await refusedWith(OUTSIDE_ROOTS, 'VirtualServer.GetHardDisk', { path: '/no/such/file.vhd' });
    });

    test('references and listings: HardDisk/<path outside>, GetFiles and Convert refuse paths leading out', async () => {
      await refusedWith(OUTSIDE_ROOTS, 'HardDisk.get_File', { this: 'HardDisk//etc/passwd' });
      await refusedWith(OUTSIDE_ROOTS, 'HardDisk.get_Info', { this: `HardDisk/${path.join(server.dataDir, 'link-to-outside.vhd')}` });
      await refusedWith(OUTSIDE_ROOTS, 'VirtualServer.GetFiles', { path: '/etc' });
      await refusedWith(OUTSIDE_ROOTS, 'VirtualServer.GetFiles', { path: 'escape' });
      const listing = await server.call<{ entries: { name: string }[] }>('VirtualServer.GetFiles');
      const names = listing.entries.map((e) => e.name);
      for (const link of ['link-to-outside.vhd', 'dangling.vhd', 'escape']) assert.ok(!names.includes(link), `GetFiles offers ${link}`);
      await waitForTask(await server.call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: 'inside.vhd', sizeMB: 16 }));
      const inside = `HardDisk/${path.join(server.dataDir, 'inside.vhd')}`;
      await refusedWith(OUTSIDE_ROOTS, 'HardDisk.Convert', { this: inside, path: 'escape/converted.vhd', type: 'Fixed' });
      await refusedWith(OUTSIDE_ROOTS, 'HardDisk.MergeTo', { this: inside, path: '/tmp/merged.vhd' });
      assert.deepEqual(outsideListing(), ['outside.vhd', 'outside.vmc']);
    });

    test('a path inside the roots is accepted (the refusals above are about where, not what)', async () => {
      const disk = await server.call<Ref>('VirtualServer.GetHardDisk', { path: 'inside.vhd' });
      assert.equal(disk.$ref, `HardDisk/${fs.realpathSync(path.join(server.dataDir, 'inside.vhd'))}`);
    });
  });

  describe('WebSocket /api/ws', () => {
    test('without credentials the upgrade is refused with 401; with a wrong token too', async () => {
      assert.equal(await upgradeRefusal({}), 401);
      assert.equal(await upgradeRefusal({ authorization: 'Bearer not-a-token' }), 401);
    });

    test('a valid token from a foreign Origin is refused with 403', async () => {
      assert.equal(await upgradeRefusal({ authorization: `Bearer ${server.adminToken}`, origin: 'http://evil.example' }), 403);
      assert.equal(await upgradeRefusal({ authorization: `Bearer ${server.adminToken}`, origin: 'null' }), 403);
    });

    test('a valid token without an Origin works: calls are answered, and events arrive', async () => {
      const socket = await openSocket({ authorization: `Bearer ${server.adminToken}` });
      try {
        socket.send({ jsonrpc: '2.0', id: 'name', method: 'VirtualMachine.get_Name', params: { this: vmA } });
        assert.equal((await socket.waitFor('the answer', (m) => m.id === 'name')).result, 'acl-a');
        socket.send({ jsonrpc: '2.0', id: 'notes', method: 'VirtualMachine.put_Notes', params: { this: vmA, value: 'over the socket' } });
        await socket.waitFor('the answer to put_Notes', (m) => m.id === 'notes');
        await server.call('VirtualMachine.put_Notes', { this: vmB, value: 'over HTTP' });
        const logged = await socket.waitFor('the event of the HTTP put_Notes', (m) => m.method === 'VirtualServer.OnEventLogged' && m.params?.object === vmB);
        assert.equal(logged.params?.who, 'admin');
        assert.match(String(logged.params?.message), /VirtualMachine\.put_Notes/);
        await socket.waitFor('the event of the socket\'s own put_Notes', (m) => m.method === 'VirtualServer.OnEventLogged' && m.params?.object === vmA);
      } finally {
        socket.close();
      }
    });

    test('a Viewer denied read on a VM receives no event about it (log, task, state), while other VMs\' still arrive', async () => {
      const vmC = await vmThatFailsToStart('hidden-from-viewer');
      await server.call('Security.AddEntry', { this: `Security/${vmC}`, name: 'viewer', type: 'Denied', rights: ['read'] });
      const viewer = await openSocket({ authorization: `Bearer ${viewerToken}` });
      const admin = await openSocket({ authorization: `Bearer ${server.adminToken}` });
      try {
        await server.call('VirtualMachine.put_Notes', { this: vmC, value: 'secret to the viewer' });
        await waitForTask(await server.call<Ref>('VirtualMachine.Startup', { this: vmC }));
        await server.call('VirtualMachine.put_Notes', { this: vmB, value: 'seen by the viewer' });
        await admin.waitFor('the hidden VM\'s log event, to the administrator', (m) => m.method === 'VirtualServer.OnEventLogged' && m.params?.object === vmC);
        await admin.waitFor('the hidden VM\'s task progress, to the administrator', (m) => m.method === 'Task.OnProgress');
        await viewer.waitFor('B\'s event, to the viewer', (m) => m.params?.object === vmB && String(m.params?.message).includes('put_Notes'));
        await admin.waitFor('B\'s event, to the administrator', (m) => m.params?.object === vmB && String(m.params?.message).includes('put_Notes'));
        const cId = vmC.slice('VirtualMachine/'.length);
        const leaked = viewer.received.filter((m) => JSON.stringify(m).includes(cId) || /secret to the viewer|hidden-from-viewer/.test(JSON.stringify(m)));
        assert.deepEqual(leaked, [], 'the viewer heard about the hidden VM');
      } finally {
        viewer.close();
        admin.close();
      }
    });

    test('revoking the token closes the socket on its next message, with code 4401', async () => {
      const created = await server.call<{ id: string; token: string }>('VirtualServer.CreateToken', { description: 'socket' }, viewerToken);
      const socket = await openSocket({ authorization: `Bearer ${created.token}` });
      socket.send({ jsonrpc: '2.0', id: 1, method: 'VirtualServer.get_Name' });
      await socket.waitFor('the first answer', (m) => m.id === 1);
      await server.call('VirtualServer.RevokeToken', { id: created.id });
      socket.send({ jsonrpc: '2.0', id: 2, method: 'VirtualServer.get_Name' });
      const closed = await socket.closed;
      assert.equal(closed.code, 4401);
      assert.ok(!socket.received.some((m) => m.id === 2), 'the call after the revocation was not answered');
    });
  });

  describe('browser sessions', () => {
    test('POST /login sets an HttpOnly, SameSite=Strict session cookie and redirects to /; the cookie opens /', async () => {
      const { cookie, setCookie, response } = await browserSignIn('viewer', VIEWER_PASSWORD);
      assert.equal(response.status, 303);
      assert.equal(response.headers.get('location'), '/');
      assert.match(setCookie, /;\s*HttpOnly/i);
      assert.match(setCookie, /;\s*SameSite=Strict/i);
      assert.match(setCookie, /;\s*Path=\//i);
      const page = await http('/', { headers: { cookie } });
      assert.equal(page.status, 200);
      assert.match(await page.text(), /Signed in as <strong>viewer<\/strong>/);
      assert.equal((await http('/static/site.css', { headers: { cookie } })).status, 200, 'the stylesheet is served to a signed-in browser');
    });

    test('the page carries the session\'s CSRF token; API calls with the cookie need it in X-CSRF-Token (403 VM_E_CSRF otherwise)', async () => {
      const { cookie } = await browserSignIn('viewer', VIEWER_PASSWORD);
      const csrf = await pageCsrfToken(cookie);
      const without: Record<string, string>[] = [{}, { 'x-csrf-token': 'wrong' }, { 'x-csrf-token': '' }];
      for (const headers of without) {
        const refused = await cookieRpc(cookie, headers, 'VirtualServer.get_Name');
        assert.equal(refused.status, 403, JSON.stringify(headers));
        assert.equal(((await refused.json()) as { error: { data: { name: string } } }).error.data.name, 'VM_E_CSRF');
      }
      assert.ok(csrf, 'the signed-in page gives its scripts no CSRF token, so a browser session can never call the API');
      const answered = await cookieRpc(cookie, { 'x-csrf-token': csrf }, 'VirtualMachine.get_Name', { this: vmB });
      assert.equal(answered.status, 200);
      assert.equal(((await answered.json()) as { result: string }).result, 'acl-b');
      const foreign = await cookieRpc(cookie, { 'x-csrf-token': csrf, origin: 'http://evil.example' }, 'VirtualServer.get_Name');
      assert.equal(foreign.status, 403, 'a foreign Origin is refused even with the token');
    });

    test('a browser session opens the WebSocket from the server\'s own origin, not from another', async () => {
      const { cookie } = await browserSignIn('viewer', VIEWER_PASSWORD);
      assert.equal(await upgradeRefusal({ cookie, origin: 'http://evil.example' }), 403);
      const socket = await openSocket({ cookie, origin: server.url });
      socket.send({ jsonrpc: '2.0', id: 1, method: 'VirtualServer.get_Name' });
      await socket.waitFor('the answer', (m) => m.id === 1);
      socket.close();
    });

    test('POST /login from a foreign Origin is refused and sets no cookie', async () => {
      const response = await http('/login', {
        method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'http://evil.example' },
        body: new URLSearchParams({ user: 'viewer', password: VIEWER_PASSWORD }).toString(),
      });
      assert.equal(response.status, 403);
      assert.deepEqual(response.headers.getSetCookie(), []);
    });

    test('a wrong bearer token is refused even alongside a valid session cookie', async () => {
      const { cookie } = await browserSignIn('viewer', VIEWER_PASSWORD);
      await assertNotAuthenticated(await http('/api/schema', { headers: { cookie, authorization: 'Bearer not-a-token' } }), 'a wrong token with a cookie');
    });

    test('POST /logout ends the session: the cookie is cleared and no longer opens / or the API', async () => {
      const { cookie } = await browserSignIn('viewer', VIEWER_PASSWORD);
      const csrf = await pageCsrfToken(cookie);
      const out = await http('/logout', { method: 'POST', headers: { cookie } });
      assert.equal(out.status, 303);
      assert.equal(out.headers.get('location'), '/login');
      assert.ok(out.headers.getSetCookie().some((c) => /^vserver_session=;/.test(c) && /Expires=Thu, 01 Jan 1970/.test(c)), 'the cookie is cleared');
      assertRedirectsToLogin(await http('/', { headers: { cookie } }), 'GET / after logout');
      await assertNotAuthenticated(await cookieRpc(cookie, { 'x-csrf-token': csrf ?? '' }, 'VirtualServer.get_Name'), 'POST /api/rpc after logout');
      assert.equal(await upgradeRefusal({ cookie }), 401);
    });

    test('a password change ends the user\'s browser sessions', async () => {
      await createUser('browser-user', 'browser-password-1', 'Viewer');
      const { cookie } = await browserSignIn('browser-user', 'browser-password-1');
      assert.equal((await http('/', { headers: { cookie } })).status, 200);
      await server.call('VirtualServer.SetUserPassword', { name: 'browser-user', password: 'browser-password-2' });
      assertRedirectsToLogin(await http('/', { headers: { cookie } }), 'GET / with a session from before the password change');
    });

    test('a deleted user\'s session does not come back when a user of the same name is created', async () => {
      await createUser('recycled', 'recycled-password-1', 'Viewer');
      const { cookie } = await browserSignIn('recycled', 'recycled-password-1');
      await server.call('VirtualServer.DeleteUser', { name: 'recycled' });
      assertRedirectsToLogin(await http('/', { headers: { cookie } }), 'GET / after the user was deleted');
      await createUser('recycled', 'recycled-password-2', 'Administrator');
      assertRedirectsToLogin(await http('/', { headers: { cookie } }), 'GET / with the old session, after a new user of that name was created');
    });
  });
});

// ---------------------------------------------------------------------------------------------
// A server of its own: its first start has no administrator password, and its sign-in lockout
// (which locks 127.0.0.1 too) must not stop the tests above.

interface Spawned { child: ChildProcess; url: string; stdout: () => string; output: () => string }

async function spawnVserverd(dataDir: string, runDir: string, env: Record<string, string>): Promise<Spawned> {
  const child = spawn(process.execPath, [SERVER_MAIN, '--port', '0', '--data', dataDir], {
    env: { ...process.env, VSERVER_RUN_DIR: runDir, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let output = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      output += chunk.toString();
      const match = /listening on (http:\/\/\S+?)\/? /.exec(stdout);
      if (match) resolve(match[1]);
    });
    child.stderr!.on('data', (chunk: Buffer) => { output += chunk.toString(); });
    child.once('exit', (code, signal) => reject(new Error(`vserverd exited (${code ?? signal}) before listening:\n${output}`)));
  });
  return { child, url, stdout: () => stdout, output: () => output };
}

async function stopSpawned(spawned: Spawned | undefined): Promise<void> {
  if (!spawned || spawned.child.exitCode !== null || spawned.child.signalCode !== null) return;
  const exited = new Promise((resolve) => spawned.child.once('exit', resolve));
  spawned.child.kill('SIGTERM');
  await exited;
}

describe('the first administrator, and the sign-in lockout', { timeout: 60_000 }, () => {
  let dataDir = '';
  let runDir = '';
  let running: Spawned | undefined;
  let generated = '';
  let adminToken = '';

  before(() => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-data-'));
    runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-run-'));
  });

  after(async () => {
    await stopSpawned(running);
    for (const dir of [dataDir, runDir]) if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const call = async <T>(method: string, params: Record<string, unknown> = {}): Promise<T> => {
    const response = await fetch(`${running!.url}/api/rpc`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` }, body: rpcBody(method, params),
    });
    const body = await response.json() as { result?: T; error?: { message: string } };
    if (body.error) throw new Error(`${method}: ${body.error.message}`);
    return body.result as T;
  };

  const apiLogin = (user: string, password: string): Promise<Response> => fetch(`${running!.url}/api/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user, password }),
  });

  test('with VSERVER_ADMIN_PASSWORD empty, the first start prints a generated password once, on stdout, and it signs in', async () => {
    running = await spawnVserverd(dataDir, runDir, { VSERVER_ADMIN_PASSWORD: '' });
    const match = /created the administrator "admin" with the password (\S+)/.exec(running.stdout());
    assert.ok(match, `no generated password on stdout:\n${running.output()}`);
    generated = match[1];
    assert.ok(generated.length >= 16, `a long password: ${generated}`);
    assert.equal(running.stdout().split(generated).length - 1, 1, 'printed once');
    adminToken = await login(running.url, 'admin', generated);
    const users = await call<{ name: string; role: string }[]>('VirtualServer.get_Users');
    assert.deepEqual(users.map((u) => [u.name, u.role]), [['admin', 'Administrator']]);
    const events = JSON.stringify(await call('VirtualServer.GetEvents', { limit: 1000 }));
    assert.ok(!events.includes(generated), 'the generated password is not in the event log');
  });

  test('a restart on the same data folder prints no password, and the generated one still works', async () => {
    assert.ok(generated, 'the first start gave a password');
    // A password set now applies to no one: the administrator exists already.
    await stopSpawned(running);
    running = await spawnVserverd(dataDir, runDir, { VSERVER_ADMIN_PASSWORD: 'a-later-password' });
    assert.doesNotMatch(running.output(), /password/i);
    await login(running.url, 'admin', generated);
    assert.equal((await apiLogin('admin', 'a-later-password')).status, 401);
    // The sign-in lockout below needs a fresh count of failures from this address: the limiter lives in memory.
    await stopSpawned(running);
    running = await spawnVserverd(dataDir, runDir, { VSERVER_ADMIN_PASSWORD: '' });
    assert.doesNotMatch(running.output(), /password/i);
    adminToken = await login(running.url, 'admin', generated);
  });

  test('after 5 failed sign-ins a user is locked out (429 VM_E_TOO_MANY_ATTEMPTS, Retry-After), even with the right password; each failure is a Security warning', async () => {
    assert.ok(adminToken, 'signed in as the administrator');
    await call('VirtualServer.CreateUser', { name: 'locked', password: 'locked-password', role: 'Viewer' });
    const since = (await call<LoggedEvent[]>('VirtualServer.GetEvents', { limit: 1000 })).at(-1)!.id;
    for (let i = 1; i <= 5; i++) {
      const response = await apiLogin('locked', `wrong-password-${i}`);
      assert.equal(response.status, 401, `attempt ${i}`);
      assert.equal(((await response.json()) as { error: { name: string } }).error.name, 'VM_E_LOGIN_FAILED');
    }
    const locked = await apiLogin('locked', 'locked-password');
    assert.equal(locked.status, 429);
    assert.equal(((await locked.json()) as { error: { name: string } }).error.name, 'VM_E_TOO_MANY_ATTEMPTS');
    const retryAfter = Number(locked.headers.get('retry-after'));
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 15 * 60, `Retry-After: ${locked.headers.get('retry-after')}`);
    // The browser's form is locked as well.
    const form = await fetch(`${running!.url}/login`, {
      method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'user=locked&password=locked-password',
    });
    assert.equal(form.status, 429);
    assert.deepEqual(form.headers.getSetCookie(), []);

    const events = (await call<LoggedEvent[]>('VirtualServer.GetEvents', { since, limit: 1000 })).filter((e) => e.category === 'Security');
    const failures = events.filter((e) => /failed sign-in as locked/.test(e.message));
    assert.equal(failures.length, 5);
    assert.ok(failures.every((e) => e.severity === 'Warning' && e.who === 'locked'));
    assert.ok(events.some((e) => e.severity === 'Warning' && /sign-in as locked from \S+ refused: too many failed attempts/.test(e.message)), 'the refusal is logged too');
    assert.ok(!JSON.stringify(events).includes('wrong-password-'), 'no password tried is logged');
  });

  test('the address is locked too, after 20 failures whatever the names: a sign-in as another user from it is refused while it lasts; tokens already given keep working', async () => {
    // The failures so far (for "locked", and one earlier) count towards the address's 20.
    let failures = 0;
    for (; failures < 20; failures++) {
      const response = await apiLogin(`nobody-${failures}`, 'wrong-password');
      if (response.status === 429) break;
      assert.equal(response.status, 401);
    }
    assert.ok(failures > 0 && failures < 20, `the address was locked after ${failures} more failures`);
    const other = await apiLogin('admin', generated);
    assert.equal(other.status, 429);
    assert.equal(typeof await call('VirtualServer.get_Name'), 'string');
  });
});
