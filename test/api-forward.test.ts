// API forwarding in a cluster (docs/cluster.md, "Forwarding"): two real vserverds (h1, h2) on a
// real etcd, sharing the cluster secret and one storage folder, and a third (h3) without the
// secret. A VM registered on both, running on h2 (a diskless VM: SeaBIOS finds nothing to boot,
// so no guest is needed), is read and turned off through h1, its task followed through h1;
// h2 Down is VM_E_HOST_UNREACHABLE; forged, replayed, unsigned and unauthenticated calls are refused.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { HostSignatures } from '../server/auth/host-signatures.js';
import { EtcdCluster, freePort } from './helpers/etcd.js';
import { ADMIN_PASSWORD, login, rejectsWith, rpc, TestServer } from './helpers/server.js';
import { SiteSession } from './helpers/site.js';

interface Ref { $ref: string }

const CLUSTER = 'fwdtest';
const SECRET = 'a-test-secret-of-at-least-32-characters-0123456789';
/** Every wait here is bounded by this. */
const WAIT_MS = 30_000;

/** Polls `read` until `done` accepts its value (bounded). */
async function until<T>(what: string, read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) assert.fail(`${what}: still ${JSON.stringify(value)} after ${WAIT_MS} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('API forwarding between the hosts of a cluster', { timeout: 300_000 }, () => {
  let etcd: EtcdCluster;
  let shared: string;
  let secretFile: string;
  const ports: Record<string, number> = {};
  let h1: TestServer;
  let h2: TestServer;
  let h3: TestServer;
  let vm: string;

  /** A host of the cluster on a port chosen here, so that its cluster address is its real one. */
  async function startHost(name: string, options: { dataDir?: string; runDir?: string; secret?: boolean } = {}): Promise<TestServer> {
    ports[name] ??= await freePort();
    const dataDir = options.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-data-'));
    return TestServer.start({
      dataDir, runDir: options.runDir,
      args: ['--port', String(ports[name]), '--storage-root', dataDir, '--storage-root', shared, '--cluster', CLUSTER, '--etcd', etcd.endpoints.join(','),
        '--host-name', name, '--host-address', `127.0.0.1:${ports[name]}`, '--shared-storage', shared,
        ...(options.secret === false ? [] : ['--cluster-secret-file', secretFile])],
    });
  }

  before(async () => {
    etcd = await EtcdCluster.start();
    shared = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-shared-'));
    secretFile = path.join(shared, 'cluster.secret');
    fs.writeFileSync(secretFile, `${SECRET}\n`, { mode: 0o600 });
    h1 = await startHost('h1');
    h2 = await startHost('h2');
    h3 = await startHost('h3', { secret: false });
    vm = (await h1.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'fwd', path: path.join(shared, 'fwd') })).$ref;
    await h1.call('VirtualMachine.put_Memory', { this: vm, value: 64 });
    const vmc = await h1.call<string>('VirtualMachine.get_File', { this: vm });
    assert.deepEqual(await h2.call<Ref>('VirtualServer.RegisterVirtualMachine', { path: vmc }), { $ref: vm });
    for (const server of [h1, h2]) await server.call('VirtualServer.CreateUser', { name: 'watcher', password: 'watcher-password-1', role: 'Viewer' });
    await h1.call('VirtualServer.CreateUser', { name: 'onlyh1', password: 'onlyh1-password-1', role: 'Administrator' });
    const task = await h2.call<Ref>('VirtualMachine.Startup', { this: vm });
    assert.equal(await h2.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: WAIT_MS }), true);
    assert.equal(await h2.call('Task.get_Error', { this: task.$ref }), null);
  });

  after(async () => {
    // The VM's worker outlives vserverd: turned off through whichever host still answers.
    for (const server of [h2, h1]) {
      const task = await server?.call<Ref>('VirtualMachine.TurnOff', { this: vm }).catch(() => null);
      if (task) await server.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: WAIT_MS }).catch(() => undefined);
    }
    for (const server of [h1, h2, h3]) {
      await server?.stop();
      server?.remove();
    }
    await etcd?.stop();
    if (shared) fs.rmSync(shared, { recursive: true, force: true });
  });

  test('h1 answers about the VM running on h2 as h2 does: its state, its host; every host lists it', async () => {
    assert.equal(await h2.call('VirtualMachine.get_State', { this: vm }), 'Running');
    assert.equal(await h1.call('VirtualMachine.get_State', { this: vm }), 'Running', 'not h1\'s own view (TurnedOff)');
    assert.deepEqual(await h1.call('VirtualMachine.get_Host', { this: vm }), { $ref: 'Host/h2' });
    assert.equal(typeof await h1.call('VirtualMachine.get_Uptime', { this: vm }), 'number');
    // A part of the VM is forwarded with it, and so is an error of h2's.
    await rejectsWith(h1.call('NetworkAdapter.get_EthernetAddress', { this: `NetworkAdapter/${vm.slice('VirtualMachine/'.length)}/0` }), 'VM_E_OBJECT_UNKNOWN');
    await rejectsWith(h1.call('VirtualMachine.Startup', { this: vm }), 'VM_E_VM_RUNNING');
    // h3 never registered it: it lists it from etcd and forwards, yet it has no secret to sign with.
    assert.ok((await h3.call<Ref[]>('VirtualServer.get_VirtualMachines')).some((r) => r.$ref === vm), 'h3 lists the cluster\'s VM');
    await rejectsWith(h3.call('VirtualMachine.get_State', { this: vm }), 'VM_E_CLUSTER_NO_SECRET', /host h2.*--cluster-secret-file/);
  });

  test('h1\'s website: the VM\'s page shows it as h2 reports it, says where it runs and links to its page there; no console link here', async () => {
    const site = await SiteSession.signIn(h1.url, 'admin', ADMIN_PASSWORD);
    const id = vm.slice('VirtualMachine/'.length);
    const page = await site.text(`/vms/${id}`);
    assert.match(page, /id="vm-state">Running</);
    assert.match(page, /<dd id="vm-host">h2<\/dd>/);
    assert.ok(page.includes(`href="http://127.0.0.1:${ports.h2}/vms/${id}" id="elsewhere-link"`), 'a link to the VM\'s page on h2');
    const status = await site.text('/');
    assert.ok(status.includes(`data-vm="${id}" data-state="Running"`), 'Master Status lists it Running');
    assert.ok(!status.includes(`/vms/${id}/console`), 'its console is on h2');
  });

  test('the same user with the same rights: a Viewer reads through h1 but may not turn off; a user h2 lacks is refused there', async () => {
    const watcher = await login(h1.url, 'watcher', 'watcher-password-1');
    assert.equal(await h1.call('VirtualMachine.get_State', { this: vm }, watcher), 'Running');
    await rejectsWith(h1.call('VirtualMachine.TurnOff', { this: vm }, watcher), 'VM_E_ACCESS_DENIED', /watcher \(Viewer\)/);
    const onlyH1 = await login(h1.url, 'onlyh1', 'onlyh1-password-1');
    await rejectsWith(h1.call('VirtualMachine.get_State', { this: vm }, onlyH1), 'VM_E_NOT_AUTHENTICATED', /onlyh1, who is not a user of this host/);
  });

  test('calls without a caller, or with a forged, replayed, misaddressed or partial signature, are refused', async () => {
    await rejectsWith(rpc(h1.url, 'VirtualMachine.get_State', { this: vm }), 'VM_E_NOT_AUTHENTICATED');
    const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'VirtualMachine.get_State', params: { this: vm } });
    const send = async (headers: Record<string, string>, sent = body): Promise<{ status: number; error?: { message: string; data: { name: string } }; result?: unknown }> => {
      const response = await fetch(`${h2.url}/api/rpc`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: sent });
      return { status: response.status, ...await response.json() as object };
    };
    const good = new HostSignatures(SECRET, 'h1');
    const signed = good.sign('h2', '/api/rpc', body, 'admin', 'Administrator');
    assert.deepEqual(await send(signed), { status: 200, jsonrpc: '2.0', id: 1, result: 'Running' });
    const refused = async (headers: Record<string, string>, reason: RegExp, sent?: string): Promise<void> => {
      const answer = await send(headers, sent);
      assert.equal(answer.status, 401);
      assert.equal(answer.error?.data.name, 'VM_E_NOT_AUTHENTICATED');
      assert.match(answer.error.message, reason);
    };
    await refused(signed, /received before/);
    await refused(new HostSignatures('another-secret-of-at-least-32-characters-xx', 'h1').sign('h2', '/api/rpc', body, 'admin', 'Administrator'), /signature does not match/);
    await refused(good.sign('h2', '/api/rpc', body, 'admin', 'Administrator'), /signature does not match/, body.replace('get_State', 'TurnOff'));
    await refused(good.sign('h3', '/api/rpc', body, 'admin', 'Administrator'), /signed for host h3/);
    await refused(good.sign('h2', '/api/rpc', body, 'admin', 'Administrator', Date.now() - 120_000), /more than 30 s/);
    const { 'x-vserver-forwarded-signature': _dropped, ...unsigned } = good.sign('h2', '/api/rpc', body, 'admin', 'Administrator');
    await refused(unsigned, /signature does not match/);
    // A bearer token does not make a forwarded call acceptable, nor does a host without the secret take one.
    await refused({ 'x-vserver-forwarded-user': 'admin', authorization: `Bearer ${h2.adminToken}` }, /signature does not match/);
    const toH3 = await fetch(`${h3.url}/api/rpc`, { method: 'POST', headers: good.sign('h3', '/api/rpc', body, 'admin', 'Administrator'), body });
    assert.equal(toH3.status, 401);
    assert.match((await toH3.json() as { error: { message: string } }).error.message, /h3\) has no cluster secret/);
  });

  test('VirtualServer calls naming the VM go to h2; FindVirtualMachine finds it through h3, which never registered it; h2\'s maintenance set through h1 is kept by h2', async () => {
    // h2 answers: the VM runs there (h1's own catalog row of it is not what is asked).
    await rejectsWith(h1.call('VirtualServer.UnregisterVirtualMachine', { vm }), 'VM_E_VM_RUNNING');
    await rejectsWith(h1.call('VirtualServer.DeleteVirtualMachine', { vm }), 'VM_E_VM_RUNNING');
    assert.deepEqual(await h3.call('VirtualServer.FindVirtualMachine', { name: 'fwd' }), { $ref: vm });
    assert.equal(await h3.call('VirtualServer.FindVirtualMachine', { name: 'no-such-vm' }), null);
    const local = (await h1.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'fwd-here' })).$ref;
    await rejectsWith(h1.call('VirtualServer.BackupVirtualMachines', { vms: [vm, local], path: 'backups' }), 'VM_E_INVALID_PARAMS', /several hosts .*on h2.*on h1|several hosts .*on h1.*on h2/);
    await h1.call('VirtualServer.DeleteVirtualMachine', { vm: local });

    assert.equal(await h1.call('Host.EnterMaintenance', { this: 'Host/h2' }), null);
    assert.equal(await h2.call('Host.get_State', { this: 'Host/h2' }), 'Maintenance');
    // h2 rewrites its record when a VM of its stops (its memory changed): its state stays its own.
    const other = (await h2.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'fwd-other' })).$ref;
    await h2.call('VirtualMachine.put_Memory', { this: other, value: 32 });
    for (const verb of ['Startup', 'TurnOff']) {
      const task = await h2.call<Ref>(`VirtualMachine.${verb}`, { this: other });
      assert.equal(await h2.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: WAIT_MS }), true);
      assert.equal(await h2.call('Task.get_Error', { this: task.$ref }), null);
    }
    await h2.call('VirtualServer.DeleteVirtualMachine', { vm: other });
    assert.equal(await h1.call('Host.get_State', { this: 'Host/h2' }), 'Maintenance');
    assert.equal(await h1.call('Host.ExitMaintenance', { this: 'Host/h2' }), null);
    assert.equal(await h2.call('Host.get_State', { this: 'Host/h2' }), 'Up');
  });

  test('h2 Down (its vserverd killed, the VM running on): h1 answers VM_E_HOST_UNREACHABLE naming h2 at once, not its own stale view', async () => {
    await h2.stop('SIGKILL');
    await until('h2 Down', () => h1.call<string>('Host.get_State', { this: 'Host/h2' }), (s) => s === 'Down');
    const started = Date.now();
    await rejectsWith(h1.call('VirtualMachine.get_State', { this: vm }), 'VM_E_HOST_UNREACHABLE', /host h2.*Down/);
    await rejectsWith(h1.call('VirtualMachine.TurnOff', { this: vm }), 'VM_E_HOST_UNREACHABLE', /host h2/);
    assert.ok(Date.now() - started < 5_000, 'answered without waiting for a timeout');
    const site = await SiteSession.signIn(h1.url, 'admin', ADMIN_PASSWORD);
    assert.match(await site.text('/'), /<p class="notice" role="note" data-unreadable>VirtualMachine.get_State is about an object on host h2, which cannot take the call: it is Down/);
    h2 = await startHost('h2', { dataDir: h2.dataDir, runDir: h2.runDir });
    assert.equal(await h1.call('VirtualMachine.get_State', { this: vm }), 'Running', 'h2 reattached its running VM');
  });

  test('a task made on h2 through h1 is followed to completion through h1; the VM, now off, is still answered by h2, where it last ran', async () => {
    const task = await h1.call<Ref>('VirtualMachine.TurnOff', { this: vm });
    assert.match(task.$ref, /^Task\/[0-9a-f-]{36}@h2$/, 'the task\'s id names its host');
    assert.equal(await h1.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: WAIT_MS }), true);
    assert.equal(await h1.call('Task.get_IsComplete', { this: task.$ref }), true);
    assert.equal(await h1.call('Task.get_Error', { this: task.$ref }), null);
    assert.equal(await h1.call('Task.get_Object', { this: task.$ref }), vm);
    assert.equal(await h1.call('VirtualMachine.get_State', { this: vm }), 'TurnedOff');
    const startup = await h1.call<Ref>('VirtualMachine.Startup', { this: vm });
    assert.match(startup.$ref, /@h2$/, 'turned on where it last ran');
    assert.equal(await h1.call('Task.WaitForCompletion', { this: startup.$ref, timeoutMs: WAIT_MS }), true);
    assert.equal(await h1.call('Task.get_Error', { this: startup.$ref }), null);
    assert.equal(await h2.call('VirtualMachine.get_State', { this: vm }), 'Running');
  });
});
