// vserverd's cluster agent against a real etcd (test/helpers/etcd.ts: free loopback ports) and
// two real vserverds (hosts a and b) sharing one storage folder and the cluster secret: membership, VM ownership, the
// shared-storage rule of HA, a kill -9 of the owner's vserverd, and etcd unreachable at start.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Etcd3 } from 'etcd3';
import { HostSignatures } from '../server/auth/host-signatures.js';
import { clusterKeys } from '../server/cluster/model.js';
import { VmPaths } from '../vmm/paths.js';
import { type ApiGuest, createApiGuest, finishTask, type Ref, turnOffApiGuest } from './helpers/api-guests.js';
import { EtcdCluster, freePort } from './helpers/etcd.js';
import { TestServer, rejectsWith } from './helpers/server.js';
import { delay } from './helpers/wait.js';

const CLUSTER = 'agent-test';
const KEYS = clusterKeys(CLUSTER);
const SECRET = 'the-agent-test-cluster-secret-0123456789';
function clusterArgs(etcdUrl: string, host: string, shared: string): string[] {
  const secretFile = path.join(shared, 'cluster.secret');
  fs.writeFileSync(secretFile, SECRET);
  return ['--cluster', CLUSTER, '--etcd', etcdUrl, '--host-name', host, '--host-address', `127.0.0.1:${host === 'a' ? 18001 : 18002}`, '--shared-storage', shared,
    '--cluster-secret-file', secretFile];
}

/** A call that `server` (host `to`) answers itself, as one another host forwarded to it (never forwarded again). */
async function answeredBy<T>(server: TestServer, to: string, method: string, params: Record<string, unknown>): Promise<T> {
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method, params });
  const headers = new HostSignatures(SECRET, 'a').sign(to, '/api/rpc', body, 'admin', 'Administrator');
  const answer = await (await fetch(`${server.url}/api/rpc`, { method: 'POST', headers, body })).json() as { result?: T; error?: { message: string } };
  if (answer.error) assert.fail(`${method} on ${to}: ${answer.error.message}`);
  return answer.result as T;
}

/** Starts a vserverd expected to refuse to start, in folders of its own removed afterwards; resolves with the error. */
async function refusedStart(args: string[]): Promise<Error> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-data-'));
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-run-'));
  try {
    const server = await TestServer.start({ dataDir, runDir, args });
    await server.stop();
    assert.fail('vserverd started');
  } catch (e) {
    return e as Error;
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
    fs.rmSync(runDir, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('cluster agent', { timeout: 600_000 }, () => {
  let etcd: EtcdCluster;
  let etcdUrl: string;
  /** Workers and QEMUs left by a killed vserverd, killed at the end if still there. */
  const leftovers: number[] = [];
  let client: Etcd3;
  let shared: string;
  let a: TestServer;
  let b: TestServer;
  const vms: { server: () => TestServer; vm: ApiGuest }[] = [];

  before(async () => {
    etcd = await EtcdCluster.start();
    etcdUrl = etcd.endpoints[0]!;
    client = new Etcd3({ hosts: etcdUrl });
    shared = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-shared-'));
    // Host a keeps its data folder (its VMs' .vmc and disks) on the shared storage; host b its own, and may reach the shared one.
    const aData = path.join(shared, 'a-data');
    a = await TestServer.start({ dataDir: aData, args: clusterArgs(etcdUrl, 'a', shared) });
    const bData = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-data-'));
    b = await TestServer.start({ dataDir: bData, args: [...clusterArgs(etcdUrl, 'b', shared), '--storage-root', bData, '--storage-root', shared] });
  });

  after(async () => {
    for (const { server, vm } of vms) await turnOffApiGuest(server(), vm).catch(() => undefined);
    await a?.stop();
    await b?.stop();
    a?.remove();
    b?.remove();
    for (const pid of leftovers) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    client?.close();
    await etcd?.stop();
    if (shared) fs.rmSync(shared, { recursive: true, force: true });
  });

  it('both hosts are Up in etcd, and one of them leads', async () => {
    const hosts = await client.getAll().prefix(KEYS.hosts).json() as Record<string, { state: string }>;
    assert.deepEqual(Object.keys(hosts).sort(), [KEYS.host('a'), KEYS.host('b')]);
    assert.deepEqual(Object.values(hosts).map((h) => h.state), ['Up', 'Up']);
    const leader = await client.election(KEYS.election).leader();
    assert.ok(leader === 'a' || leader === 'b', `leader ${leader}`);
  });

  it('refuses a second vserverd with a host name in use by a live host', { timeout: 60_000 }, async () => {
    const error = await refusedStart(clusterArgs(etcdUrl, 'a', shared));
    assert.match(error.message, /exited \(2\)/);
    assert.match(error.message, /host name a is in use by a live host at 127\.0\.0\.1:18001/);
  });

  it('refuses to start when etcd cannot be reached, naming the endpoints; starts alone when the cluster is optional', { timeout: 60_000 }, async () => {
    const nowhere = `http://127.0.0.1:${await freePort()}`;
    const error = await refusedStart(clusterArgs(nowhere, 'c', shared));
    assert.match(error.message, /exited \(2\)/);
    assert.ok(error.message.includes(`cannot reach etcd at ${nowhere} for the cluster "${CLUSTER}"`), error.message);
    const alone = await TestServer.start({ args: [...clusterArgs(nowhere, 'c', shared), '--cluster-optional'] });
    try {
      assert.match(alone.output, /warning: cannot reach etcd at .* starting as a single host/);
      assert.equal(await alone.call('VirtualServer.get_Cluster'), null);
    } finally {
      await alone.stop();
      alone.remove();
    }
  });

  it('owns a VM while it runs: the other host is refused by name, and the key goes at turn off', { timeout: 240_000 }, async () => {
    const vm = await createApiGuest(a, 'owned', 64);
    vms.push({ server: () => a, vm });
    await finishTask(a, await a.call<Ref>('VirtualMachine.Startup', { this: vm.ref }));
    const owner = await client.get(KEYS.owner(vm.id)).json() as { host: string; leaseId: string } | null;
    assert.equal(owner?.host, 'a');
    const record = await client.get(KEYS.vm(vm.id)).json() as { desired: string; host: string };
    assert.equal(record.desired, 'Running');
    assert.equal(record.host, 'a');
    // The licence the worker renews holds the same lease.
    const licence = JSON.parse(fs.readFileSync(path.join(VmPaths.of(vm.id, a.runDir).dir, 'licence.json'), 'utf8')) as { leaseId: string; host: string };
    assert.deepEqual([licence.leaseId, licence.host], [owner.leaseId, 'a']);

    const vmc = await a.call<string>('VirtualMachine.get_File', { this: vm.ref });
    const onB = await b.call<Ref>('VirtualServer.RegisterVirtualMachine', { path: vmc });
    assert.equal(onB.$ref, vm.ref, 'b registers the VM under the id of its .vmc');
    // Through b's API the call is forwarded to a, where the VM runs (test/api-forward.test.ts); a's
    // address here is a placeholder nobody listens on, so the forward is refused by name, not answered from b's view.
    await rejectsWith(b.call('VirtualMachine.Startup', { this: onB.$ref }), 'VM_E_HOST_UNREACHABLE', /host a.*127\.0\.0\.1:18001/);
    // b's own turn on (a call forwarded to b just as the VM started on a, say) is refused by etcd.
    const task = await answeredBy<Ref>(b, 'b', 'VirtualMachine.Startup', { this: onB.$ref });
    assert.match(task.$ref, /@b$/);
    assert.equal(await b.call('Task.WaitForCompletion', { this: task.$ref, timeoutMs: 30_000 }), true);
    const error = await b.call<{ name: string; message: string } | null>('Task.get_Error', { this: task.$ref });
    assert.equal(error?.name, 'VM_E_OWNED_ELSEWHERE');
    assert.match(error.message, /VM owned is running on host a/);
    assert.equal(await answeredBy(b, 'b', 'VirtualMachine.get_State', { this: onB.$ref }), 'TurnedOff');
    assert.equal((await client.get(KEYS.owner(vm.id)).json() as { host: string }).host, 'a', 'the refusal leaves a\'s ownership alone');

    await turnOffApiGuest(a, vm);
    const deadline = Date.now() + 5_000;
    for (;;) {
      const [ownerText, record] = [await client.get(KEYS.owner(vm.id)).string(), await client.get(KEYS.vm(vm.id)).json() as { desired: string }];
      if (ownerText === null && record.desired === 'Off') break;
      assert.ok(Date.now() < deadline, `within 5 s of the turn off the ownership key went (${ownerText}) and the VM's record says Off (${record.desired})`);
      await delay(50);
    }
    await b.call('VirtualServer.UnregisterVirtualMachine', { vm: onB.$ref });
  });

  it('refuses HA for a VM outside the shared storage, and takes it for one inside', { timeout: 120_000 }, async () => {
    const local = await createApiGuest(b, 'local', 64);
    await rejectsWith(b.call('VirtualMachine.put_HighAvailability', { this: local.ref, value: { enabled: true } }), 'VM_E_NOT_SHARED_STORAGE', /local cannot be highly available: .* is not under the shared storage/);
    const sharedVm = await createApiGuest(a, 'sharedvm', 64);
    vms.push({ server: () => a, vm: sharedVm });
    await a.call('VirtualMachine.put_HighAvailability', { this: sharedVm.ref, value: { enabled: true, priority: 70 } });
    const record = await client.get(KEYS.vm(sharedVm.id)).json() as { ha: { enabled: boolean; priority: number } };
    assert.deepEqual([record.ha.enabled, record.ha.priority], [true, 70]);
  });

  it('a kill -9 of the owner\'s vserverd leaves its VM running, and nothing moves', { timeout: 240_000 }, async () => {
    const { vm } = vms.find((v) => v.vm.name === 'sharedvm')!;
    await finishTask(a, await a.call<Ref>('VirtualMachine.Startup', { this: vm.ref }));
    const status = VmPaths.of(vm.id, a.runDir).readStatus()!;
    assert.ok(status.workerPid && status.qemuPid, 'the worker and QEMU are known');
    leftovers.push(status.workerPid, status.qemuPid);
    const dataDir = a.dataDir;
    const runDir = a.runDir;
    await a.stop('SIGKILL');
    // Past host a's lease (5 s) and the VM's lease (5 s) with margin: a failover would have been placed by now.
    const watchUntil = Date.now() + 12_000;
    while (Date.now() < watchUntil) {
      assert.equal(await client.get(KEYS.placement(vm.id)).string(), null, 'no placement for the VM');
      await delay(500);
    }
    assert.equal(await client.get(KEYS.host('a')).string(), null, 'host a is Down (its lease ran out)');
    assert.ok(isAlive(status.workerPid!) && isAlive(status.qemuPid!), 'the worker and QEMU still run');
    assert.equal((await client.get(KEYS.owner(vm.id)).json() as { host: string } | null)?.host, 'a', 'the worker kept the ownership alive');

    a = await TestServer.start({ dataDir, runDir, args: clusterArgs(etcdUrl, 'a', shared) });
    assert.equal(await a.call('VirtualMachine.get_State', { this: vm.ref }), 'Running', 'the restarted vserverd reattached');
    assert.equal((await client.get(KEYS.owner(vm.id)).json() as { host: string } | null)?.host, 'a', 'the restart left the ownership alone');
  });

  it('the death of host a (vserverd, worker and QEMU killed) restarts its HA VM on b', { timeout: 240_000 }, async () => {
    const { vm } = vms.find((v) => v.vm.name === 'sharedvm')!;
    const status = VmPaths.of(vm.id, a.runDir).readStatus()!;
    assert.equal(status.state, 'Running');
    const killedAt = Date.now();
    await a.stop('SIGKILL');
    process.kill(status.workerPid!, 'SIGKILL');
    process.kill(status.qemuPid!, 'SIGKILL');
    vms.push({ server: () => b, vm });
    // Host lease and VM lease (5 s each), the election moving to b, then b's turn on.
    const deadline = Date.now() + 90_000;
    let failover: { from: string; to: string | null; running: string | null; error: string | null; seconds: number | null } | undefined;
    while (!failover?.running) {
      assert.ok(Date.now() < deadline, `the VM ran on b within 90 s of the kill (failover so far: ${JSON.stringify(failover)})`);
      const history = Object.values(await client.getAll().prefix(KEYS.history).json() as Record<string, { vm: string; from: string; to: string | null; running: string | null; error: string | null; seconds: number | null }>);
      failover = history.find((r) => r.vm === vm.id && r.from === 'a');
      if (failover?.error) {
        const events = await b.call<{ message: string }[]>('VirtualServer.GetEvents', { limit: 1000 });
        assert.fail(`the failover failed: ${failover.error}; b's events: ${events.map((e) => e.message).join(' | ')}`);
      }
      await delay(250);
    }
    assert.equal(failover.to, 'b');
    assert.ok(failover.seconds! > 0 && failover.seconds! * 1000 < Date.now() - killedAt, `seconds ${failover.seconds}`);
    assert.equal(await b.call('VirtualMachine.get_State', { this: vm.ref }), 'Running');
    assert.equal((await client.get(KEYS.owner(vm.id)).json() as { host: string } | null)?.host, 'b');
    assert.equal((await client.get(KEYS.vm(vm.id)).json() as { host: string }).host, 'b');
    assert.equal(await client.get(KEYS.placement(vm.id)).string(), null, 'the placement is gone once done');
    console.log(`failover of ${vm.name}: ${(Date.now() - killedAt) / 1000} s from the kill to Running on b (recorded: ${failover.seconds} s from detection)`);
    const events = await b.call<{ message: string }[]>('VirtualServer.GetEvents', { category: 'Cluster', limit: 1000 });
    assert.ok(events.some((e) => e.message === 'host a is Down (was Up)'), `b logged host a Down: ${JSON.stringify(events.map((e) => e.message))}`);
    assert.ok(events.some((e) => /^failover of sharedvm from a \(host a is Down\): running on b after [\d.]+ s$/.test(e.message)), 'b logged the failover');
  });

  it('restarts an HA VM whose QEMU died on its healthy host, up to maxRestarts, then marks it failed', { timeout: 240_000 }, async () => {
    const { vm } = vms.find((v) => v.vm.name === 'sharedvm')!;
    await b.call('VirtualMachine.put_HighAvailability', { this: vm.ref, value: { maxRestarts: 1 } });
    const paths = VmPaths.of(vm.id, b.runDir);
    const first = paths.readStatus()!;
    process.kill(first.qemuPid!, 'SIGKILL');
    const deadline = Date.now() + 90_000;
    for (;;) {
      const now = paths.readStatus();
      if (now?.state === 'Running' && now.qemuPid !== first.qemuPid) break;
      assert.ok(Date.now() < deadline, `the VM ran again on b within 90 s (state ${now?.state})`);
      await delay(250);
    }
    const record = await client.get(KEYS.vm(vm.id)).json() as { restarts: number; failed: string | null; host: string };
    assert.deepEqual([record.restarts, record.failed, record.host], [1, null, 'b']);
    // The restart's history record is written once the VM runs: a moment after its status says so.
    for (;;) {
      const restart = Object.values(await client.getAll().prefix(KEYS.history).json() as Record<string, { vm: string; from: string; to: string; running: string | null }>)
        .find((r) => r.vm === vm.id && r.from === 'b' && r.to === 'b');
      if (restart?.running) break;
      assert.ok(Date.now() < deadline, `a history record of the restart: ${JSON.stringify(restart)}`);
      await delay(250);
    }

    process.kill(paths.readStatus()!.qemuPid!, 'SIGKILL');
    for (;;) {
      const now = await client.get(KEYS.vm(vm.id)).json() as { failed: string | null };
      if (now.failed) {
        assert.match(now.failed, /its QEMU died 2 times on b \(restarts allowed: 1\)/);
        break;
      }
      assert.ok(Date.now() < deadline, 'the VM was marked failed');
      await delay(250);
    }
    await delay(3_000);
    assert.equal(await b.call('VirtualMachine.get_State', { this: vm.ref }), 'TurnedOff', 'a failed VM is not restarted');
    assert.equal(await client.get(KEYS.owner(vm.id)).string(), null, 'and owns nothing');
  });

  it('a host whose lease is lost (revoked at etcd) joins again with a new one', { timeout: 60_000 }, async () => {
    const before = (await client.get(KEYS.host('b')).exec()).kvs[0]!;
    await client.leaseClient.leaseRevoke({ ID: before.lease });
    const deadline = Date.now() + 20_000;
    for (;;) {
      const now = (await client.get(KEYS.host('b')).exec()).kvs[0];
      if (now && now.lease !== before.lease) {
        assert.equal((JSON.parse(now.value.toString()) as { state: string }).state, 'Up');
        break;
      }
      assert.ok(Date.now() < deadline, 'b wrote hosts/b again under a new lease within 20 s');
      await delay(100);
    }
  });

  it('a host in maintenance is Maintenance in etcd, still after a restart of its vserverd, and Up again after', { timeout: 60_000 }, async () => {
    await b.call('Host.EnterMaintenance', { this: 'Host/b' });
    assert.equal((await client.get(KEYS.host('b')).json() as { state: string }).state, 'Maintenance');
    const { dataDir, runDir } = b;
    await b.stop();
    b = await TestServer.start({ dataDir, runDir, args: [...clusterArgs(etcdUrl, 'b', shared), '--storage-root', dataDir, '--storage-root', shared] });
    assert.equal((await client.get(KEYS.host('b')).json() as { state: string }).state, 'Maintenance', 'b joined again in Maintenance');
    assert.equal(await b.call('Host.get_State', { this: 'Host/b' }), 'Maintenance');
    await b.call('Host.ExitMaintenance', { this: 'Host/b' });
    assert.equal((await client.get(KEYS.host('b')).json() as { state: string }).state, 'Up');
    assert.equal((await client.get(KEYS.member('b')).json() as { maintenance: boolean }).maintenance, false, 'the kept maintenance is gone');
  });
});
