// vsctl's commands that talk to vserverd, run as a user runs them (bin/vsctl in a child
// process). Without a server: "call" reads its help, parameter names and types from the schema,
// usage errors exit 2 before anything is sent, and the server, the token and the credentials file
// are found in their documented order (a small stand-in HTTP server records what vsctl sends).
// Against a real vserverd (TestServer): login, call, vm, disk, task, events and token.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { typeProblem } from '../server/api/dispatch.js';
import { fieldOf } from '../server/api/fields.js';
import { SCHEMA } from '../server/api/schema.js';
import { ADMIN_PASSWORD, SERVER_MAIN, TestServer } from './helpers/server.js';
import { makeTempDir, removeDir, VSCTL } from './helpers/vhd-fixtures.js';

interface Result { status: number | null; stdout: string; stderr: string }

const dir = makeTempDir('vsctl-api');
after(() => removeDir(dir));

let counter = 0;
/** A fresh folder for one test's credentials. */
function fresh(label: string): string {
  const folder = path.join(dir, `${++counter}-${label}`);
  fs.mkdirSync(folder);
  return folder;
}

const INHERITED = ['VSERVER_URL', 'VSERVER_TOKEN', 'VSERVER_PASSWORD', 'VSERVER_CREDENTIALS', 'XDG_CONFIG_HOME'];

/** The environment of a user with none of vsctl's variables set, plus `extra`. */
function environment(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of INHERITED) delete env[name];
  for (const [name, value] of Object.entries(extra)) if (value !== undefined) env[name] = value;
  return env;
}

/** Runs vsctl and waits for it (blocking: for commands that reach no server in this process). */
function vsctlSync(args: string[], extra: Record<string, string | undefined>, input = ''): Result {
  const r = spawnSync(VSCTL, args, { env: environment(extra), input, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs vsctl without blocking this process, so a server in it can answer. */
function vsctl(args: string[], extra: Record<string, string | undefined>, input = ''): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(VSCTL, args, { env: environment(extra), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    child.stdin.end(input);
  });
}

function expectStatus(r: Result, status: number, what: string): Result {
  assert.equal(r.status, status, `${what} exited ${r.status}, expected ${status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

function parseJson<T>(r: Result, what: string): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    return assert.fail(`${what} printed something that is not JSON:\n${r.stdout}\nstderr: ${r.stderr}`);
  }
}

function writeCredentialsFile(file: string, document: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, JSON.stringify(document), { mode: 0o600 });
}

/** A URL where nothing listens. */
async function closedUrl(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

// ---------------------------------------------------------------------------------------------
// A stand-in for vserverd: answers /api/login and /api/rpc (single calls and batches) from
// handlers, accepts any bearer token but "refused", and records every request.

interface Recorded { path: string; authorization: string | undefined; body: unknown }
interface RpcRequest { id: number; method: string; params: Record<string, unknown> }
type Handler = (params: Record<string, unknown>) => unknown;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

class Refusal extends Error {
  constructor(readonly errorName: string, message: string) {
    super(message);
  }
}

const LOGIN_TOKEN = `vst_0123456789ab_${'s'.repeat(43)}`;

class StandIn {
  requests: Recorded[] = [];
  handlers: Record<string, Handler> = {};
  private constructor(private readonly server: http.Server, readonly url: string) {}

  static async start(): Promise<StandIn> {
    const server = http.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const standIn = new StandIn(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    server.on('request', (request, response) => standIn.answer(request, response));
    return standIn;
  }

  /** The calls made (batches flattened), as "method" and params. */
  calls(): RpcRequest[] {
    return this.requests.filter((r) => r.path === '/api/rpc').flatMap((r) => (Array.isArray(r.body) ? r.body : [r.body]) as RpcRequest[]);
  }

  private answer(request: http.IncomingMessage, response: http.ServerResponse): void {
    let text = '';
    request.on('data', (c: Buffer) => { text += c.toString(); });
    request.on('end', () => {
      const body = JSON.parse(text || 'null') as unknown;
      this.requests.push({ path: request.url ?? '', authorization: request.headers.authorization, body });
      const send = (status: number, value: unknown): void => {
        response.writeHead(status, { 'content-type': 'application/json' });
        response.end(JSON.stringify(value));
      };
      if (request.url === '/api/login') {
        const { user, password } = body as { user: string; password: string };
        if (password === 'right password') send(200, { token: LOGIN_TOKEN, user, role: 'Administrator', expires: null });
        else send(401, { error: { name: 'VM_E_LOGIN_FAILED', message: 'wrong user name or password' } });
        return;
      }
      if (request.url !== '/api/rpc') return send(404, { error: { name: 'NOT_FOUND', message: 'no such path' } });
      if (!request.headers.authorization || request.headers.authorization === 'Bearer refused') {
        return send(401, { jsonrpc: '2.0', id: null, error: { code: -32001, message: 'not authenticated', data: { name: 'VM_E_NOT_AUTHENTICATED' } } });
      }
      const one = async (call: RpcRequest): Promise<unknown> => {
        const handler = this.handlers[call.method];
        try {
          if (!handler) throw new Refusal('VM_E_NOT_IMPLEMENTED', `the stand-in has no ${call.method}`);
          return { jsonrpc: '2.0', id: call.id, result: (await handler(call.params ?? {})) ?? null };
        } catch (e) {
          const name = e instanceof Refusal ? e.errorName : 'VM_E_INTERNAL';
          return { jsonrpc: '2.0', id: call.id, error: { code: -32000, message: (e as Error).message, data: { name, object: call.params?.this ?? null } } };
        }
      };
      // Batches are answered in reverse order: JSON-RPC lets a server answer in any order.
      void (Array.isArray(body) ? Promise.all((body as RpcRequest[]).map(one)).then((all) => all.reverse()) : one(body as RpcRequest)).then((answer) => send(200, answer));
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------------------

describe('vsctl call: help, names and types from the schema (no server)', () => {
  const offline = (): Record<string, string> => ({ VSERVER_CREDENTIALS: path.join(fresh('offline'), 'credentials.json'), VSERVER_URL: 'http://127.0.0.1:9' });

  test('vsctl --help lists the groups that talk to vserverd', () => {
    const r = expectStatus(vsctlSync(['--help'], offline()), 0, 'vsctl --help');
    for (const group of ['vhd', 'vm', 'disk', 'task', 'events', 'token', 'call', 'login', 'logout']) assert.match(r.stdout, new RegExp(`^\\s+${group}\\s`, 'm'), group);
    const vm = expectStatus(vsctlSync(['vm', '--help'], offline()), 0, 'vsctl vm --help');
    for (const command of ['list', 'show', 'create', 'start', 'stop', 'save', 'pause', 'resume', 'reset', 'shutdown', 'delete', 'console', 'serial', 'run', 'check']) {
      assert.match(vm.stdout, new RegExp(`^\\s+${command}\\s`, 'm'), `vm ${command}`);
    }
  });

  test('call --help lists every interface and every member with the start of its doc', () => {
    const r = expectStatus(vsctlSync(['call', '--help'], offline()), 0, 'vsctl call --help');
    assert.match(r.stdout, /^usage: vsctl call Interface\.Member/);
    for (const [iface, spec] of Object.entries(SCHEMA)) {
      assert.match(r.stdout, new RegExp(`^${iface}\\b`, 'm'), iface);
      for (const [name, member] of Object.entries(spec.members)) {
        const start = member.doc.slice(0, 20).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        assert.match(r.stdout, new RegExp(`^\\s+${name}\\s+(\\(task\\) )?${start}`, 'm'), `${iface}.${name}`);
      }
    }
  });

  test('call Interface.Member --help: the doc, each parameter with its type, optional ones marked, the right, the example', () => {
    const disk = expectStatus(vsctlSync(['call', 'VirtualServer.CreateDynamicVirtualHardDisk', '--help'], offline()), 0, 'help').stdout;
    assert.match(disk, /^usage: vsctl call VirtualServer\.CreateDynamicVirtualHardDisk path=STRING \[sizeMB=INTEGER\] \[--wait\]/);
    assert.ok(disk.includes(SCHEMA.VirtualServer.members.CreateDynamicVirtualHardDisk.doc));
    assert.match(disk, /^\s+sizeMB\s+integer \(1\.\.2088960\), optional\. Size in the guest/m);
    assert.match(disk, /^\s+path\s+string \(at most 4096 characters\)\. The new \.vhd\./m);
    assert.match(disk, /^returns: Task reference/m);
    assert.match(disk, /^right:\s+change on the server$/m);
    assert.match(disk, /^\s+vsctl call VirtualServer\.CreateDynamicVirtualHardDisk path=disks\/web\.vhd sizeMB=16384$/m);
    assert.match(disk, /VHD_E_EXISTS/);

    const attach = expectStatus(vsctlSync(['call', 'VirtualMachine.AddHardDiskConnection', '-h'], offline()), 0, 'help').stdout;
    assert.match(attach, /--this VirtualMachine\/<id>/);
    assert.match(attach, /^\s+busType\s+IDE\|SCSI\./m);
    assert.match(attach, /^\s+deviceNumber\s+integer \(0\.\.\)\./m);
    assert.match(attach, /^right:\s+change on the VirtualMachine$/m);
    assert.match(attach, /=> \{"\$ref":"HardDiskConnection\//);

    const users = expectStatus(vsctlSync(['call', 'VirtualServer.get_Users', '--help'], offline()), 0, 'help').stdout;
    assert.match(users, /^right:\s+read on the server \(administrators only\)$/m);
    assert.match(users, /^parameters: none$/m);
    const entry = expectStatus(vsctlSync(['call', 'Security.AddEntry', '--help'], offline()), 0, 'help').stdout;
    assert.match(entry, /rights=read,control/, 'a list in the example is written comma-separated');
  });

  test('an unknown member is a usage error (exit 2) naming close matches, with or without --help, and nothing is sent', () => {
    for (const args of [['call', 'VirtualServer.get_MaximumMemoryPerVm'], ['call', 'VirtualServer.get_MaximumMemoryPerVm', '--help'], ['call', 'get_MaximumMemoryPerVM']]) {
      const r = expectStatus(vsctlSync(args, offline()), 2, args.join(' '));
      assert.match(r.stderr, /no member "(VirtualServer\.)?get_MaximumMemoryPer(Vm|VM)"/);
      assert.match(r.stderr, /did you mean VirtualServer\.get_MaximumMemoryPerVM\b/);
      assert.doesNotMatch(r.stderr, /cannot reach/);
    }
    const start = expectStatus(vsctlSync(['call', 'VirtualMachine.Start', '--this', 'x'], offline()), 2, 'VirtualMachine.Start');
    assert.match(start.stderr, /did you mean VirtualMachine\.Startup\b/);
    expectStatus(vsctlSync(['call', 'Nothing.AtAll'], offline()), 2, 'Nothing.AtAll');
    // Names every JavaScript object inherits are not members either.
    for (const method of ['constructor.name', 'VirtualServer.constructor', '__proto__.x']) {
      assert.match(expectStatus(vsctlSync(['call', method], offline()), 2, method).stderr, /no member/);
    }
    expectStatus(vsctlSync(['call'], offline()), 2, 'call without a member');
  });

  test('parameters are checked against the member before anything is sent: exit 2', () => {
    const cases: Array<[string[], RegExp]> = [
      [['VirtualServer.CreateVirtualMachine', 'name=web', 'memory=512'], /VirtualServer\.CreateVirtualMachine has no parameter "memory": its parameters are name, path/],
      [['VirtualServer.get_Name', 'x=1'], /has no parameter "x": it takes no parameters/],
      [['VirtualServer.GetEvents', 'limit=ten'], /limit: "ten" is not an integer/],
      [['VirtualServer.GetEvents', 'limit=0'], /limit: 0 is below the least allowed, 1/],
      [['VirtualServer.GetEvents', 'limit=1001'], /limit: 1001 is above the most allowed, 1000/],
      [['VirtualServer.GetEvents', 'severity=Fatal'], /severity: "Fatal" is not one of Information, Warning, Error/],
      [['VirtualServer.GetEvents', 'since'], /"since" is not key=value/],
      [['VirtualServer.GetEvents', 'since=1', 'since=2'], /since is given twice/],
      [['VirtualServer.CreateVirtualMachine'], /needs name=string/],
      [['VirtualMachine.get_Name'], /acts on an object: give --this VirtualMachine\/<id>/],
      [['VirtualServer.get_Name', '--this', 'VirtualMachine/x'], /takes no --this/],
      [['VirtualMachine.get_Name', '--this', 'a', 'this=b'], /this is given twice/],
      [['VirtualServer.get_Name', '--wait'], /--wait: VirtualServer\.get_Name does not return a Task/],
      [['Security.AddEntry', '--this', 'VirtualMachine/x', 'name=ops', 'type=Allowed', 'rights=["read"'], /rights: .* is not valid JSON/],
      [['VirtualServer.GetEvents', '--bogus'], /Unknown option '--bogus'/],
    ];
    for (const [args, message] of cases) {
      const r = expectStatus(vsctlSync(['call', ...args], offline()), 2, `call ${args.join(' ')}`);
      assert.match(r.stderr, message, args.join(' '));
    }
  });

  test('a value outside its declaration (a name longer than CreateVirtualMachine\'s maxLength) is refused with the declaration\'s message before anything is sent', () => {
    const limit = fieldOf('VirtualServer.CreateVirtualMachine', 'name').maxLength!;
    assert.equal(limit, (SCHEMA.VirtualServer.members.CreateVirtualMachine.params!.name as { maxLength: number }).maxLength);
    const r = expectStatus(vsctlSync(['call', 'VirtualServer.CreateVirtualMachine', `name=${'n'.repeat(limit + 1)}`], offline()), 2, 'a long name');
    const declared = typeProblem(SCHEMA.VirtualServer.members.CreateVirtualMachine.params!.name, 'n'.repeat(limit + 1));
    assert.ok(declared && r.stderr.includes(`name ${declared}`), r.stderr);
    assert.match(r.stderr, new RegExp(`at most ${limit} characters \\(${limit + 1} given\\)`));
    assert.doesNotMatch(r.stderr, /cannot reach/);
  });

  test('memory outside put_Memory\'s declared limits (vm create --memory, call put_Memory) exits 2 naming the limit before anything is sent', () => {
    const { min, max } = fieldOf('VirtualMachine.put_Memory', 'value');
    assert.deepEqual([min, max], [4, 3686]);
    const cases: Array<[string[], RegExp]> = [
      [['vm', 'create', 'web', '--memory', '4000'], /--memory must be at most 3686 \(4000 given\)/],
      [['vm', 'create', 'web', '--memory', '4G'], /--memory must be at most 3686 \(4096 given\)/],
      [['vm', 'create', 'web', '--memory', '3M'], /--memory must be at least 4 \(3 given\)/],
      [['call', 'VirtualMachine.put_Memory', 'this=VirtualMachine/x', 'value=3687'], /value: 3687 is above the most allowed, 3686/],
    ];
    for (const [args, message] of cases) {
      const r = expectStatus(vsctlSync(args, offline()), 2, args.join(' '));
      assert.match(r.stderr, message, args.join(' '));
      assert.doesNotMatch(r.stderr, /cannot reach/);
    }
  });

  test('the other commands\' usage errors exit 2 before anything is sent', () => {
    const cases: Array<[string[], RegExp]> = [
      [['vm', 'show'], /usage: vsctl vm show NAME\|ID/],
      [['vm', 'create', 'web', '--memory', 'lots'], /--memory: "lots" is not a size in MB/],
      [['vm', 'create', 'web', '--disk', 'a.vhd', '--new-disk', '16'], /--disk and --new-disk/],
      [['vm', 'start', 'a', 'b'], /usage: vsctl vm start NAME\|ID/],
      [['vm', 'pause', 'web', '--no-wait'], /Unknown option '--no-wait'/],
      [['disk', 'create', 'x.vhd', '--type', 'sparse'], /--type must be one of dynamic, fixed, differencing/],
      [['disk', 'create', 'x.vhd', '--type', 'fixed'], /a fixed disk needs --size/],
      [['disk', 'create', 'x.vhd', '--type', 'differencing'], /needs --parent/],
      [['disk', 'create', 'x.vhd', '--parent', 'p.vhd', '--size', '16'], /--size is not for it/],
      [['task', 'wait', 'Task/1', '--timeout', 'soon'], /--timeout: "soon" is not a whole number/],
      [['events', '--severity', 'Fatal'], /--severity: "Fatal" is not one of Information, Warning, Error/],
      [['events', '--limit', '0'], /--limit: "0" is not a whole number of at least 1/],
      [['events', '--limit', '5', '--follow'], /--limit does not go with --follow/],
      [['token', 'create', '--role', 'Root'], /--role: "Root" is not one of Administrator, Operator, Viewer/],
      [['token', 'revoke'], /usage: vsctl token revoke ID/],
      [['login', 'extra'], /usage: vsctl login/],
    ];
    for (const [args, message] of cases) {
      const r = expectStatus(vsctlSync(args, offline()), 2, args.join(' '));
      assert.match(r.stderr, message, args.join(' '));
    }
  });

  test('every command that talks to vserverd has --help, --url and --token', () => {
    for (const args of [['vm', 'list'], ['vm', 'create'], ['vm', 'start'], ['disk', 'inspect'], ['task', 'wait'], ['events'], ['token', 'create'], ['call']]) {
      const r = expectStatus(vsctlSync([...args, '--help'], offline()), 0, `${args.join(' ')} --help`);
      assert.match(r.stdout, /--url URL/);
      assert.match(r.stdout, /--token TOKEN/);
      assert.match(r.stdout, /--json/);
    }
  });
});

describe('vsctl and a stand-in vserverd: values sent, the server and token chosen, login, errors', () => {
  let a: StandIn;
  let b: StandIn;
  before(async () => {
    [a, b] = await Promise.all([StandIn.start(), StandIn.start()]);
    for (const s of [a, b]) {
      s.handlers['VirtualServer.get_Name'] = () => (s === a ? 'host-a' : 'host-b');
      s.handlers['VirtualServer.RevokeToken'] = () => null;
    }
  });
  after(async () => {
    await Promise.all([a.close(), b.close()]);
  });

  function reset(): void {
    a.requests = [];
    b.requests = [];
  }

  test('values are sent as the schema\'s types: integers, enums, lists, JSON, references, strings kept as typed', async () => {
    const credentials = path.join(fresh('types'), 'credentials.json');
    const env = { VSERVER_CREDENTIALS: credentials, VSERVER_URL: a.url, VSERVER_TOKEN: 'tok' };
    a.handlers['VirtualServer.GetEvents'] = () => [];
    a.handlers['Security.AddEntry'] = () => null;
    a.handlers['VirtualServer.DeleteVirtualMachine'] = () => null;
    a.handlers['VirtualMachine.put_Notes'] = () => null;
    a.handlers['HardDisk.Expand'] = () => ({ $ref: 'Task/t1' });
    const uuid = '7d8e5c1a-3b9f-4e2d-a6c0-1f2e3d4c5b6a';
    const cases: Array<[string[], string, Record<string, unknown>]> = [
      [['VirtualServer.GetEvents', 'since=5', 'limit=2', 'category=virtual machine', 'severity=Error'], 'VirtualServer.GetEvents', { since: 5, limit: 2, category: 'Virtual Machine', severity: 'Error' }],
      [['Security.AddEntry', '--this', `VirtualMachine/${uuid}`, 'name=ops', 'type=Allowed', 'rights=read,control'], 'Security.AddEntry',
        { this: `Security/VirtualMachine/${uuid}`, name: 'ops', type: 'Allowed', rights: ['read', 'control'] }],
      [['Security.AddEntry', `this=Security/VirtualServer`, 'name=role:Operator', 'type=Denied', 'rights=["delete"]'], 'Security.AddEntry',
        { this: 'Security/VirtualServer', name: 'role:Operator', type: 'Denied', rights: ['delete'] }],
      [['VirtualServer.DeleteVirtualMachine', `vm=${uuid}`], 'VirtualServer.DeleteVirtualMachine', { vm: `VirtualMachine/${uuid}` }],
      [['VirtualServer.DeleteVirtualMachine', `vm=VirtualMachine/${uuid}`], 'VirtualServer.DeleteVirtualMachine', { vm: `VirtualMachine/${uuid}` }],
      [['VirtualMachine.put_Notes', '--this', uuid, 'value=[draft] {1} = 2'], 'VirtualMachine.put_Notes', { this: `VirtualMachine/${uuid}`, value: '[draft] {1} = 2' }],
      [['HardDisk.Expand', '--this', '/srv/disks/web.vhd', 'sizeMB=32768'], 'HardDisk.Expand', { this: 'HardDisk//srv/disks/web.vhd', sizeMB: 32768 }],
    ];
    for (const [args, method, params] of cases) {
      reset();
      expectStatus(await vsctl(['call', ...args], env), 0, `call ${args.join(' ')}`);
      const calls = a.calls();
      assert.equal(calls.length, 1);
      assert.equal(calls[0].method, method);
      assert.deepEqual(calls[0].params, params, args.join(' '));
    }
  });

  test('results print as text (a reference as itself, lists one per line, objects as key: value) or as JSON', async () => {
    const env = { VSERVER_CREDENTIALS: path.join(fresh('render'), 'credentials.json'), VSERVER_URL: a.url, VSERVER_TOKEN: 'tok' };
    a.handlers['VirtualServer.get_VirtualMachines'] = () => [{ $ref: 'VirtualMachine/1' }, { $ref: 'VirtualMachine/2' }];
    a.handlers['VirtualServer.FindVirtualMachine'] = () => ({ $ref: 'VirtualMachine/1' });
    a.handlers['VirtualServer.get_HostInfo'] = () => ({ hostName: 'h', engine: 'tcg', memoryMB: 2048 });
    a.handlers['VirtualServer.get_StorageRoots'] = () => ['/srv/a', '/srv/b'];
    a.handlers['VirtualServer.DeleteVirtualMachine'] = () => null;
    assert.equal((await vsctl(['call', 'VirtualServer.get_VirtualMachines'], env)).stdout, 'VirtualMachine/1\nVirtualMachine/2\n');
    assert.equal((await vsctl(['call', 'VirtualServer.FindVirtualMachine', 'name=web'], env)).stdout, 'VirtualMachine/1\n');
    assert.equal((await vsctl(['call', 'VirtualServer.get_StorageRoots'], env)).stdout, '/srv/a\n/srv/b\n');
    assert.equal((await vsctl(['call', 'VirtualServer.get_HostInfo'], env)).stdout, 'hostName: h\nengine:   tcg\nmemoryMB: 2048\n');
    assert.equal((await vsctl(['call', 'VirtualServer.get_Name'], env)).stdout, 'host-a\n');
    assert.equal((await vsctl(['call', 'VirtualServer.DeleteVirtualMachine', 'vm=VirtualMachine/1'], env)).stdout, '', 'a member that returns nothing prints nothing');
    assert.deepEqual(JSON.parse((await vsctl(['call', 'VirtualServer.get_VirtualMachines', '--json'], env)).stdout), [{ $ref: 'VirtualMachine/1' }, { $ref: 'VirtualMachine/2' }]);
    assert.equal(JSON.parse((await vsctl(['call', 'VirtualServer.DeleteVirtualMachine', 'vm=VirtualMachine/1', '--json'], env)).stdout), null);
  });

  test('the server: --url, else VSERVER_URL, else the credentials file\'s default; the token: --token, else VSERVER_TOKEN, else the file\'s entry for that server', async () => {
    const credentials = path.join(fresh('order'), 'credentials.json');
    writeCredentialsFile(credentials, { servers: { [a.url]: { token: 'token-a', user: 'alice' }, [`${b.url}`]: { token: 'token-b', user: 'bob' } }, default: a.url });
    const cases: Array<[string[], Record<string, string>, StandIn, string]> = [
      [[], {}, a, 'Bearer token-a'],
      [[], { VSERVER_URL: b.url }, b, 'Bearer token-b'],
      [[], { VSERVER_URL: `${b.url}/` }, b, 'Bearer token-b'],
      [['--url', a.url], { VSERVER_URL: b.url }, a, 'Bearer token-a'],
      [[], { VSERVER_TOKEN: 'token-env' }, a, 'Bearer token-env'],
      [['--token', 'token-flag'], { VSERVER_TOKEN: 'token-env' }, a, 'Bearer token-flag'],
      [['--url', b.url, '--token', 'token-flag'], { VSERVER_URL: a.url, VSERVER_TOKEN: 'token-env' }, b, 'Bearer token-flag'],
    ];
    for (const [flags, env, server, authorization] of cases) {
      reset();
      const what = `${flags.join(' ')} ${JSON.stringify(env)}`;
      const r = expectStatus(await vsctl(['call', 'VirtualServer.get_Name', ...flags], { VSERVER_CREDENTIALS: credentials, ...env }), 0, what);
      assert.equal(r.stdout, server === a ? 'host-a\n' : 'host-b\n', what);
      assert.equal(server.requests.length, 1, what);
      assert.equal(server.requests[0].authorization, authorization, what);
    }
  });

  test('the credentials file is $VSERVER_CREDENTIALS, else $XDG_CONFIG_HOME/vserver/credentials.json, else ~/.config/vserver/credentials.json', async () => {
    const home = fresh('home');
    const xdg = fresh('xdg');
    const explicit = path.join(fresh('explicit'), 'mine.json');
    writeCredentialsFile(path.join(home, '.config', 'vserver', 'credentials.json'), { servers: { [a.url]: { token: 'token-home' } }, default: a.url });
    writeCredentialsFile(path.join(xdg, 'vserver', 'credentials.json'), { servers: { [a.url]: { token: 'token-xdg' } }, default: a.url });
    writeCredentialsFile(explicit, { servers: { [a.url]: { token: 'token-explicit' } }, default: a.url });
    const cases: Array<[Record<string, string>, string]> = [
      [{ HOME: home }, 'Bearer token-home'],
      [{ HOME: home, XDG_CONFIG_HOME: xdg }, 'Bearer token-xdg'],
      [{ HOME: home, XDG_CONFIG_HOME: xdg, VSERVER_CREDENTIALS: explicit }, 'Bearer token-explicit'],
    ];
    for (const [env, authorization] of cases) {
      reset();
      expectStatus(await vsctl(['call', 'VirtualServer.get_Name'], env), 0, JSON.stringify(env));
      assert.equal(a.requests[0]?.authorization, authorization, JSON.stringify(env));
    }
  });

  test('with nothing configured, vsctl goes to http://127.0.0.1:8080 and says so when it fails', async () => {
    const r = await vsctl(['call', 'VirtualServer.get_Name'], { HOME: fresh('empty-home') });
    if (r.status !== 0) assert.match(r.stderr, /http:\/\/127\.0\.0\.1:8080/);
  });

  test('login reads the password from stdin, keeps the token for the server in a file of mode 0600 (folder 0700), written whole, and makes it the default', async () => {
    const folder = path.join(fresh('login'), 'vserver');
    const credentials = path.join(folder, 'credentials.json');
    writeCredentialsFile(credentials, { servers: { [b.url]: { token: 'token-b', user: 'bob' } }, default: b.url });
    fs.chmodSync(credentials, 0o644);
    const r = expectStatus(await vsctl(['login', '--url', a.url, '--user', 'alice'], { VSERVER_CREDENTIALS: credentials }, 'right password\nnot this line\n'), 0, 'login');
    assert.equal(r.stdout, `logged in to ${a.url} as alice\n`);
    assert.deepEqual(a.requests.at(-1)?.body, { user: 'alice', password: 'right password' });
    assert.equal(fs.statSync(credentials).mode & 0o777, 0o600);
    assert.equal(fs.statSync(folder).mode & 0o777, 0o700);
    assert.deepEqual(fs.readdirSync(folder), ['credentials.json'], 'no temporary file is left');
    assert.deepEqual(JSON.parse(fs.readFileSync(credentials, 'utf8')), {
      servers: { [b.url]: { token: 'token-b', user: 'bob' }, [a.url]: { token: LOGIN_TOKEN, user: 'alice' } }, default: a.url,
    });

    reset();
    expectStatus(await vsctl(['call', 'VirtualServer.get_Name'], { VSERVER_CREDENTIALS: credentials }), 0, 'a call after login');
    assert.equal(a.requests[0].authorization, `Bearer ${LOGIN_TOKEN}`);

    reset();
    const out = expectStatus(await vsctl(['logout'], { VSERVER_CREDENTIALS: credentials }), 0, 'logout');
    assert.equal(out.stdout, `logged out of ${a.url}\n`);
    assert.deepEqual(a.calls().map((c) => [c.method, c.params]), [['VirtualServer.RevokeToken', { id: '0123456789ab' }]]);
    assert.deepEqual(JSON.parse(fs.readFileSync(credentials, 'utf8')), { servers: { [b.url]: { token: 'token-b', user: 'bob' } } });
    assert.equal(fs.statSync(credentials).mode & 0o777, 0o600);
    expectStatus(await vsctl(['logout', '--url', a.url], { VSERVER_CREDENTIALS: credentials }), 0, 'a second logout');
  });

  test('login takes VSERVER_PASSWORD and creates the folders it needs; a refused login exits 1 and keeps nothing', async () => {
    const folder = path.join(fresh('login-env'), 'deeper', 'vserver');
    const credentials = path.join(folder, 'credentials.json');
    const r = expectStatus(await vsctl(['login', '--json'], { VSERVER_CREDENTIALS: credentials, VSERVER_URL: a.url, VSERVER_PASSWORD: 'right password' }), 0, 'login');
    const out = parseJson<Record<string, unknown>>(r, 'login --json');
    assert.equal(out.url, a.url);
    assert.equal(out.user, 'admin', 'the user is admin when not given');
    assert.equal(out.token, undefined, 'the token is not printed');
    assert.equal(fs.statSync(folder).mode & 0o777, 0o700);
    assert.equal(fs.statSync(credentials).mode & 0o777, 0o600);

    const refused = path.join(fresh('login-refused'), 'credentials.json');
    const bad = expectStatus(await vsctl(['login', '--url', a.url], { VSERVER_CREDENTIALS: refused }, 'wrong password\n'), 1, 'a refused login');
    assert.match(bad.stderr, new RegExp(`login to ${a.url} as admin failed: wrong user name or password \\[VM_E_LOGIN_FAILED\\]`));
    assert.equal(fs.existsSync(refused), false);
    const none = expectStatus(await vsctl(['login', '--url', a.url], { VSERVER_CREDENTIALS: refused }, ''), 2, 'a login without a password');
    assert.match(none.stderr, /no password given/);
  });

  test('errors: a refused token, an API error (with --json on stdout), a server that is not there', async () => {
    const credentials = path.join(fresh('errors'), 'credentials.json');
    const notLoggedIn = expectStatus(await vsctl(['call', 'VirtualServer.get_Name', '--url', a.url], { VSERVER_CREDENTIALS: credentials }), 1, 'no token');
    assert.equal(notLoggedIn.stderr, `vsctl: not logged in to ${a.url}: run vsctl login, or set VSERVER_TOKEN [VM_E_NOT_AUTHENTICATED]\n`);
    const refused = expectStatus(await vsctl(['vm', 'list', '--url', a.url], { VSERVER_CREDENTIALS: credentials, VSERVER_TOKEN: 'refused' }), 1, 'a refused token');
    assert.match(refused.stderr, new RegExp(`not logged in to ${a.url}: the token from VSERVER_TOKEN was refused \\(not authenticated\\); run vsctl login, or set VSERVER_TOKEN`));

    a.handlers['VirtualServer.FindVirtualMachine'] = () => null;
    a.handlers['VirtualMachine.get_Name'] = (p) => { throw new Refusal('VM_E_OBJECT_UNKNOWN', `no object ${String(p.this)}`); };
    const env = { VSERVER_CREDENTIALS: credentials, VSERVER_URL: a.url, VSERVER_TOKEN: 'tok' };
    const unknown = expectStatus(await vsctl(['call', 'VirtualMachine.get_Name', '--this', 'VirtualMachine/x'], env), 1, 'an API error');
    assert.equal(unknown.stderr, 'vsctl: no object VirtualMachine/x [VM_E_OBJECT_UNKNOWN]\n');
    const json = parseJson<{ error: { name: string; message: string; data: Record<string, unknown> } }>(
      expectStatus(await vsctl(['call', 'VirtualMachine.get_Name', '--this', 'VirtualMachine/x', '--json'], env), 1, 'an API error, --json'), 'error');
    assert.deepEqual(json, { error: { name: 'VM_E_OBJECT_UNKNOWN', message: 'no object VirtualMachine/x', data: { object: 'VirtualMachine/x' } } });
    const noVm = expectStatus(await vsctl(['vm', 'show', 'ghost'], env), 1, 'vm show of a VM that does not exist');
    assert.match(noVm.stderr, /no VM is named "ghost" on .* \[VM_E_VM_UNKNOWN\]/);

    const nowhere = await closedUrl();
    const unreachable = expectStatus(await vsctl(['call', 'VirtualServer.get_Name', '--url', nowhere], { VSERVER_CREDENTIALS: credentials }), 1, 'nothing listening');
    assert.equal(unreachable.stderr, `vsctl: cannot reach vserverd at ${nowhere}: connection refused (is it running? npm start) [VSCTL_E_UNREACHABLE]\n`);
    const follow = expectStatus(await vsctl(['events', '--follow', '--url', nowhere], { VSERVER_CREDENTIALS: credentials }), 1, 'events --follow, nothing listening');
    assert.match(follow.stderr, /cannot reach vserverd at/);
    const badUrl = expectStatus(await vsctl(['call', 'VirtualServer.get_Name', '--url', 'ftp://x'], { VSERVER_CREDENTIALS: credentials }), 2, 'a URL that is not http');
    assert.match(badUrl.stderr, /--url: "ftp:\/\/x" is not an http:\/\/ or https:\/\/ URL/);
  });

  test('vm list asks for every VM\'s name, state and memory in one batch', async () => {
    const env = { VSERVER_CREDENTIALS: path.join(fresh('list'), 'credentials.json'), VSERVER_URL: a.url, VSERVER_TOKEN: 'tok' };
    const vms: Record<string, { name: string; state: string; memory: number }> = {
      'VirtualMachine/bbbb': { name: 'web', state: 'Running', memory: 512 },
      'VirtualMachine/aaaa': { name: 'db', state: 'TurnedOff', memory: 1024 },
    };
    a.handlers['VirtualServer.get_VirtualMachines'] = () => Object.keys(vms).map(($ref) => ({ $ref }));
    a.handlers['VirtualMachine.get_Name'] = (p) => vms[String(p.this)].name;
    a.handlers['VirtualMachine.get_State'] = (p) => vms[String(p.this)].state;
    a.handlers['VirtualMachine.get_Memory'] = (p) => vms[String(p.this)].memory;
    reset();
    const list = parseJson<unknown[]>(expectStatus(await vsctl(['vm', 'list', '--json'], env), 0, 'vm list --json'), 'vm list');
    assert.deepEqual(list, [
      { id: 'aaaa', ref: 'VirtualMachine/aaaa', name: 'db', state: 'TurnedOff', memoryMB: 1024 },
      { id: 'bbbb', ref: 'VirtualMachine/bbbb', name: 'web', state: 'Running', memoryMB: 512 },
    ]);
    assert.equal(a.requests.length, 2, 'get_VirtualMachines, then one batch');
    assert.equal((a.requests[1].body as unknown[]).length, 6);
    const text = expectStatus(await vsctl(['vm', 'list'], env), 0, 'vm list').stdout.split('\n');
    assert.match(text[0], /^NAME\s+STATE\s+MEMORY \(MB\)\s+ID$/);
    assert.match(text[1], /^db\s+TurnedOff\s+1024\s+aaaa$/);
    assert.match(text[2], /^web\s+Running\s+512\s+bbbb$/);
  });

  test('task wait follows WaitForCompletion to the end: the result, or the task\'s error with exit 1', async () => {
    const env = { VSERVER_CREDENTIALS: path.join(fresh('task'), 'credentials.json'), VSERVER_URL: a.url, VSERVER_TOKEN: 'tok' };
    let waits = 0;
    const slices: number[] = [];
    a.handlers['Task.WaitForCompletion'] = async (p) => {
      slices.push(Number(p.timeoutMs));
      await sleep(Math.min(Number(p.timeoutMs), 100));
      return ++waits >= 3;
    };
    a.handlers['Task.get_IsComplete'] = () => waits >= 3;
    a.handlers['Task.get_PercentCompleted'] = () => (waits >= 3 ? 100 : 40);
    a.handlers['Task.get_Description'] = () => 'Creating disk';
    a.handlers['Task.get_Error'] = (p) => (p.this === 'Task/bad' ? { name: 'VHD_E_EXISTS', message: 'the file exists' } : null);
    a.handlers['Task.get_Result'] = (p) => (p.this === 'Task/bad' ? null : { $ref: 'HardDisk//srv/x.vhd' });
    const ok = expectStatus(await vsctl(['task', 'wait', 'good'], env), 0, 'task wait');
    assert.equal(ok.stdout, 'HardDisk//srv/x.vhd\n');
    assert.equal(waits, 3);
    assert.ok(slices.every((ms) => ms > 0 && ms <= 1000), `waits in slices of a second at most: ${slices.join(', ')}`);
    assert.ok(a.calls().every((c) => c.method !== 'Task.WaitForCompletion' || c.params.this === 'Task/good'));
    waits = 0;
    const failed = expectStatus(await vsctl(['task', 'wait', 'Task/bad'], env), 1, 'task wait of a failed task');
    assert.match(failed.stderr, /Task\/bad failed: the file exists \[VHD_E_EXISTS\]/);
    waits = -1000;
    const late = expectStatus(await vsctl(['task', 'wait', 'Task/slow', '--timeout', '1', '--json'], env), 1, 'task wait --timeout');
    assert.equal(parseJson<{ isComplete: boolean }>(late, 'task wait --json').isComplete, false);
  });
});

// ---------------------------------------------------------------------------------------------
// Against vserverd itself. These need dist/server/main.js to be the API server.

/** A vserverd that never said "listening on" is left running by TestServer.start(): find this process's child running it. */
function killStrayServers(): void {
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (parent === process.pid && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(SERVER_MAIN)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone already, or not ours to read
    }
  }
}

async function startServer(): Promise<TestServer> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('vserverd did not say "listening on URL" within 30 s (is dist/server/main.js the API server?)')), 30_000);
  });
  try {
    return await Promise.race([TestServer.start(), timeout]);
  } catch (e) {
    killStrayServers();
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

describe('vsctl against vserverd', { timeout: 300_000 }, () => {
  let server: TestServer | undefined;
  let work: string;
  let credentials: string;
  /** The logged-in user's environment: the credentials file only. */
  let env: Record<string, string>;

  before(async () => {
    work = fresh('server');
    credentials = path.join(work, 'config', 'credentials.json');
    env = { VSERVER_CREDENTIALS: credentials };
    server = await startServer();
  }, { timeout: 60_000 });

  after(async () => {
    if (server) {
      await server.stop();
      server.remove();
    }
  });

  const url = (): string => server!.url;

  test('login stores a token (mode 0600) and the commands after it use it', async () => {
    const r = expectStatus(await vsctl(['login', '--url', url(), '--user', 'admin'], env, `${ADMIN_PASSWORD}\n`), 0, 'login');
    assert.equal(r.stdout, `logged in to ${url()} as admin\n`);
    assert.equal(fs.statSync(credentials).mode & 0o777, 0o600);
    const stored = JSON.parse(fs.readFileSync(credentials, 'utf8')) as { servers: Record<string, { token: string; user: string }>; default: string };
    assert.equal(stored.default, url());
    assert.equal(stored.servers[url()].user, 'admin');
    assert.match(stored.servers[url()].token, /^vst_[0-9a-f]+_/);
    const call = expectStatus(await vsctl(['call', 'VirtualServer.get_MaximumMemoryPerVM'], env), 0, 'a call after login');
    assert.equal(call.stdout, '3686\n');
  });

  test('a wrong password is refused: exit 1', async () => {
    const r = expectStatus(await vsctl(['login', '--url', url()], { VSERVER_CREDENTIALS: path.join(work, 'other.json') }, 'not the password\n'), 1, 'login');
    assert.match(r.stderr, /VM_E_LOGIN_FAILED/);
  });

  test('VSERVER_TOKEN and --url override the credentials file', async () => {
    const empty = { VSERVER_CREDENTIALS: path.join(work, 'empty.json') };
    const byEnv = expectStatus(await vsctl(['call', 'VirtualServer.get_MaximumMemoryPerVM', '--url', url()], { ...empty, VSERVER_TOKEN: server!.adminToken }), 0, 'VSERVER_TOKEN');
    assert.equal(byEnv.stdout, '3686\n');
    const nowhere = await closedUrl();
    expectStatus(await vsctl(['call', 'VirtualServer.get_MaximumMemoryPerVM'], { ...env, VSERVER_URL: nowhere }), 1, 'VSERVER_URL where nothing listens');
    const byFlag = expectStatus(await vsctl(['call', 'VirtualServer.get_MaximumMemoryPerVM', '--url', url()], { ...env, VSERVER_URL: nowhere }), 0, '--url over VSERVER_URL');
    assert.equal(byFlag.stdout, '3686\n');
    const badToken = expectStatus(await vsctl(['call', 'VirtualServer.get_MaximumMemoryPerVM'], { ...env, VSERVER_TOKEN: 'vst_000000000000_nope' }), 1, 'a bad VSERVER_TOKEN over the file');
    assert.match(badToken.stderr, /not logged in to/);
  });

  test('not logged in: exit 1 and what to do', async () => {
    const r = expectStatus(await vsctl(['vm', 'list', '--url', url()], { VSERVER_CREDENTIALS: path.join(work, 'nobody.json') }), 1, 'vm list without a token');
    assert.match(r.stderr, new RegExp(`not logged in to ${url()}: run vsctl login, or set VSERVER_TOKEN`));
  });

  test('an unknown member is a usage error: exit 2', async () => {
    const r = expectStatus(await vsctl(['call', 'VirtualServer.get_MaximumMemory'], env), 2, 'unknown member');
    assert.match(r.stderr, /did you mean VirtualServer\.get_MaximumMemoryPerVM/);
  });

  test('vm create, vm list --json, vm show, vm delete', async () => {
    const created = parseJson<{ id: string; ref: string; memoryMB: number; hardDisk: { file: string }; networkAdapter: { ethernetAddress: string } }>(
      expectStatus(await vsctl(['vm', 'create', 'apitest', '--memory', '256', '--new-disk', '16', '--nic', '--json'], env), 0, 'vm create'), 'vm create');
    assert.equal(created.memoryMB, 256);
    assert.match(created.hardDisk.file, /apitest\/apitest\.vhd$/);
    assert.match(created.networkAdapter.ethernetAddress, /^00:03:FF/i);
    expectStatus(await vsctl(['vm', 'create', 'plain'], env), 0, 'vm create without options');

    const list = parseJson<Array<{ id: string; name: string; state: string; memoryMB: number }>>(expectStatus(await vsctl(['vm', 'list', '--json'], env), 0, 'vm list'), 'vm list');
    assert.deepEqual(list.map((v) => [v.name, v.state, v.memoryMB]), [['apitest', 'TurnedOff', 256], ['plain', 'TurnedOff', 128]]);
    assert.equal(list[0].id, created.id);

    const shown = expectStatus(await vsctl(['vm', 'show', 'apitest'], env), 0, 'vm show').stdout;
    assert.match(shown, /^Name:\s+apitest$/m);
    assert.match(shown, new RegExp(`^Id:\\s+${created.id}$`, 'm'));
    assert.match(shown, /^State:\s+TurnedOff$/m);
    assert.match(shown, /^Memory:\s+256 MB$/m);
    assert.match(shown, /^Hard disks:\s+SCSI 0:0\s+\S*apitest\.vhd$/m);
    assert.match(shown, new RegExp(`^Network adapters:\\s+${created.networkAdapter.ethernetAddress}`, 'm'));
    const byId = parseJson<{ name: string; hardDisks: unknown[]; networkAdapters: unknown[] }>(expectStatus(await vsctl(['vm', 'show', created.id, '--json'], env), 0, 'vm show ID'), 'vm show');
    assert.equal(byId.name, 'apitest');
    assert.equal(byId.hardDisks.length, 1);
    assert.equal(byId.networkAdapters.length, 1);

    expectStatus(await vsctl(['vm', 'delete', 'apitest'], env), 0, 'vm delete');
    expectStatus(await vsctl(['vm', 'delete', 'plain', '--keep-files'], env), 0, 'vm delete --keep-files');
    const after = parseJson<unknown[]>(expectStatus(await vsctl(['vm', 'list', '--json'], env), 0, 'vm list'), 'vm list');
    assert.deepEqual(after, []);
    const gone = expectStatus(await vsctl(['vm', 'show', 'apitest'], env), 1, 'vm show of a deleted VM');
    assert.match(gone.stderr, /no VM is named "apitest"/);
  });

  test('disk create, then disk inspect --json', async () => {
    const made = parseJson<{ file: string }>(expectStatus(await vsctl(['disk', 'create', 'api-test.vhd', '--size', '64', '--json'], env), 0, 'disk create'), 'disk create');
    assert.match(made.file, /api-test\.vhd$/);
    const info = parseJson<Record<string, unknown>>(expectStatus(await vsctl(['disk', 'inspect', 'api-test.vhd', '--json'], env), 0, 'disk inspect'), 'disk inspect');
    assert.equal(String(info.type).toLowerCase(), 'dynamic');
    assert.ok(Number(info.sizeInGuest) >= 64 * 1024 * 1024, `sizeInGuest ${String(info.sizeInGuest)}`);
    expectStatus(await vsctl(['disk', 'create', 'api-child.vhd', '--parent', 'api-test.vhd'], env), 0, 'disk create --parent');
    const child = parseJson<Record<string, unknown>>(expectStatus(await vsctl(['disk', 'inspect', 'api-child.vhd', '--json'], env), 0, 'disk inspect'), 'disk inspect');
    assert.equal(String(child.type).toLowerCase(), 'differencing');
    const again = expectStatus(await vsctl(['disk', 'create', 'api-test.vhd', '--size', '64'], env), 1, 'disk create over an existing file');
    assert.match(again.stderr, /VHD_E_EXISTS/);
  });

  test('task list shows the finished disk tasks', async () => {
    const tasks = parseJson<Array<{ id: string; description: string; percentCompleted: number; isComplete: boolean; error: unknown }>>(
      expectStatus(await vsctl(['task', 'list', '--json'], env), 0, 'task list'), 'task list');
    assert.ok(tasks.length >= 2, `${tasks.length} tasks`);
    assert.ok(tasks.some((t) => t.isComplete && t.error === null && t.percentCompleted === 100), JSON.stringify(tasks));
    const text = expectStatus(await vsctl(['task', 'list'], env), 0, 'task list').stdout;
    assert.match(text, /^ID\s+STATUS\s+DONE\s+DESCRIPTION$/m);
    assert.match(text, /\bdone\s+100%/);
    const waited = expectStatus(await vsctl(['task', 'wait', tasks[0].id, '--timeout', '5'], env), 0, 'task wait of a finished task');
    assert.equal(waited.status, 0);
  });

  test('events --json --limit 5', async () => {
    const events = parseJson<Array<Record<string, unknown>>>(expectStatus(await vsctl(['events', '--json', '--limit', '5'], env), 0, 'events'), 'events');
    assert.ok(events.length >= 1 && events.length <= 5, `${events.length} events`);
    for (const e of events) for (const key of ['id', 'time', 'category', 'severity', 'message', 'who']) assert.ok(key in e, `${key} in ${JSON.stringify(e)}`);
    const text = expectStatus(await vsctl(['events', '--limit', '2'], env), 0, 'events').stdout;
    assert.ok(text.trim().split('\n').length <= 2);
  });

  test('events --follow prints events as they are logged, until Ctrl-C', async () => {
    const child = spawn(VSCTL, ['events', '--follow', '--json'], { env: environment(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString(); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      // Give it time to connect, then make something happen: creating a VM is logged.
      await new Promise((r) => setTimeout(r, 1500));
      const vm = await server!.call<{ $ref: string }>('VirtualServer.CreateVirtualMachine', { name: 'followed' });
      await server!.call('VirtualServer.DeleteVirtualMachine', { vm: vm.$ref });
      const deadline = Date.now() + 15_000;
      while (!stdout.includes('\n') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    } finally {
      child.kill('SIGINT');
    }
    assert.equal(await exited, 0, `stderr: ${stderr}`);
    const lines = stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { id: number; message: string });
    assert.ok(lines.length >= 1, `no event arrived; stderr: ${stderr}`);
    assert.ok(lines.every((e) => typeof e.id === 'number'));
  });

  test('token create --role Viewer: the token reads, but a call that needs change is refused (VM_E_ACCESS_DENIED, exit 1); revoked, it stops working', async () => {
    const made = expectStatus(await vsctl(['token', 'create', '--role', 'Viewer', '--description', 'vsctl test'], env), 0, 'token create');
    const token = made.stdout.trim();
    assert.match(token, /^vst_[0-9a-f]+_\S+$/);
    assert.match(made.stderr, /will not be shown again/);
    const viewer = { VSERVER_CREDENTIALS: path.join(work, 'viewer.json'), VSERVER_URL: url(), VSERVER_TOKEN: token };
    expectStatus(await vsctl(['call', 'VirtualServer.get_MaximumMemoryPerVM'], viewer), 0, 'a read with the Viewer token');
    const denied = expectStatus(await vsctl(['call', 'VirtualServer.CreateVirtualMachine', 'name=nope', '--json'], viewer), 1, 'a change with the Viewer token');
    assert.equal(parseJson<{ error: { name: string } }>(denied, 'error').error.name, 'VM_E_ACCESS_DENIED');
    const deniedText = expectStatus(await vsctl(['vm', 'create', 'nope'], viewer), 1, 'vm create with the Viewer token');
    assert.match(deniedText.stderr, /\[VM_E_ACCESS_DENIED\]$/m);

    const tokens = parseJson<Array<{ id: string; role: string; description: string }>>(expectStatus(await vsctl(['token', 'list', '--json'], env), 0, 'token list'), 'token list');
    const mine = tokens.find((t) => token.startsWith(`vst_${t.id}_`));
    assert.ok(mine, 'token list shows the new token');
    assert.equal(mine.role, 'Viewer');
    assert.equal(mine.description, 'vsctl test');
    assert.ok(!JSON.stringify(tokens).includes(token), 'token list shows no secret');
    expectStatus(await vsctl(['token', 'revoke', mine.id], env), 0, 'token revoke');
    const revoked = expectStatus(await vsctl(['call', 'VirtualServer.get_MaximumMemoryPerVM'], viewer), 1, 'a call with a revoked token');
    assert.match(revoked.stderr, /not logged in to/);
  });

  test('logout forgets the token and revokes it', async () => {
    const stored = (JSON.parse(fs.readFileSync(credentials, 'utf8')) as { servers: Record<string, { token: string }> }).servers[url()].token;
    const r = expectStatus(await vsctl(['logout'], env), 0, 'logout');
    assert.equal(r.stdout, `logged out of ${url()}\n`);
    assert.deepEqual(JSON.parse(fs.readFileSync(credentials, 'utf8')), { servers: {} });
    const old = expectStatus(await vsctl(['call', 'VirtualServer.get_Name', '--url', url()], { ...env, VSERVER_TOKEN: stored }), 1, 'the old token');
    assert.match(old.stderr, /not logged in to/);
  });
});
