// The cluster's objects over the real API: a vserverd in cluster mode on a real etcd (started
// here, on ports of its own), its Cluster and Host members, maintenance with its event over the
// WebSocket, a VM's high availability (stored, refused outside the shared storage, bad input
// named), vsctl's cluster verbs; and a vserverd without cluster settings, which says it is alone.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import { clusterKeys, type FailoverRecord } from '../server/cluster/model.js';
import { EtcdCluster, freePort } from './helpers/etcd.js';
import { rejectsWith, TestServer } from './helpers/server.js';
import { vsctl } from './helpers/vhd-fixtures.js';

interface Ref { $ref: string }
interface HostRow { host: Ref; name: string; address: string; state: string; memoryAvailableMB: number; virtualMachines: Ref[]; local: boolean }
interface Note { method: string; params: Record<string, unknown> }

const CLUSTER = 'apitest';
const HOST = 'api-h1';
/** Every wait here is bounded by this. */
const WAIT_MS = 20_000;

/** Polls `read` until `done` accepts its value (bounded); returns that value. */
async function until<T>(what: string, read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  let last: T = await read();
  while (!done(last)) {
    if (Date.now() > deadline) assert.fail(`${what}: still ${JSON.stringify(last)} after ${WAIT_MS} ms`);
    await new Promise((r) => setTimeout(r, 200));
    last = await read();
  }
  return last;
}

/** The notifications of /api/ws, kept in order. */
class Notes {
  readonly seen: Note[] = [];
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { method?: string; params?: Record<string, unknown> };
      if (m.method) this.seen.push({ method: m.method, params: m.params ?? {} });
    });
  }

  static open(server: TestServer): Promise<Notes> {
    const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/api/ws`, { headers: { authorization: `Bearer ${server.adminToken}` } });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new Notes(ws)));
      ws.once('error', reject);
    });
  }

  async waitFor(what: string, match: (n: Note) => boolean, from: number): Promise<Note> {
    const found = await until(what, async () => this.seen.slice(from).find(match) ?? null, (n) => n !== null);
    return found!;
  }
}

let etcd: EtcdCluster;
let server: TestServer;
let shared: string;
let dataDir: string;
const env = (): NodeJS.ProcessEnv => ({ ...process.env, VSERVER_URL: server.url, VSERVER_TOKEN: server.adminToken, VSERVER_CREDENTIALS: path.join(dataDir, 'no-credentials.json') });

before(async () => {
  etcd = await EtcdCluster.start();
  shared = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-shared-'));
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-data-'));
  server = await TestServer.start({
    dataDir,
    args: ['--storage-root', dataDir, '--storage-root', shared, '--cluster', CLUSTER, '--etcd', etcd.endpoints.join(','),
      '--host-name', HOST, '--host-address', `127.0.0.1:${await freePort()}`, '--shared-storage', shared],
  });
});

after(async () => {
  await server?.stop();
  server?.remove();
  await etcd?.stop();
  if (shared) fs.rmSync(shared, { recursive: true, force: true });
});

describe('a vserverd in a cluster of one host', () => {
  const cluster = `Cluster/${CLUSTER}`;
  const host = `Host/${HOST}`;

  test('VirtualServer.get_Cluster names the cluster; Cluster.get_Hosts lists this host Up and local; it is the leader; no failovers yet', async () => {
    assert.deepEqual(await server.call('VirtualServer.get_Cluster'), { $ref: cluster });
    assert.equal(await server.call('Cluster.get_Name', { this: cluster }), CLUSTER);
    const hosts = await until('this host Up', () => server.call<HostRow[]>('Cluster.get_Hosts', { this: cluster }), (h) => h[0]?.state === 'Up');
    assert.equal(hosts.length, 1);
    assert.deepEqual({ ...hosts[0], memoryAvailableMB: 0 }, { host: { $ref: host }, name: HOST, address: hosts[0].address, state: 'Up', memoryAvailableMB: 0, virtualMachines: [], local: true });
    assert.match(hosts[0].address, /^127\.0\.0\.1:\d+$/);
    assert.ok(hosts[0].memoryAvailableMB > 0, `memoryAvailableMB ${hosts[0].memoryAvailableMB}`);
    assert.deepEqual(await until('a leader', () => server.call<Ref | null>('Cluster.get_Leader', { this: cluster }), (l) => l !== null), { $ref: host });
    assert.deepEqual(await server.call('Cluster.get_FailoverHistory', { this: cluster }), []);
    assert.deepEqual(await server.call('Cluster.get_FailoverHistory', { this: cluster, since: '2026-01-01T00:00:00Z' }), []);
  });

  test('Host members answer for this host; an unknown host is VM_E_HOST_UNKNOWN naming the hosts, another cluster VM_E_OBJECT_UNKNOWN', async () => {
    assert.equal(await server.call('Host.get_Name', { this: host }), HOST);
    assert.equal(await server.call('Host.get_State', { this: host }), 'Up');
    assert.match(await server.call<string>('Host.get_Address', { this: host }), /^127\.0\.0\.1:\d+$/);
    assert.deepEqual(await server.call('Host.get_VirtualMachines', { this: host }), []);
    assert.ok(await server.call<number>('Host.get_MemoryAvailable', { this: host }) > 0);
    await rejectsWith(server.call('Host.get_State', { this: 'Host/nobody' }), 'VM_E_HOST_UNKNOWN', new RegExp(`nobody.*${HOST}`));
    await rejectsWith(server.call('Host.EnterMaintenance', { this: 'Host/nobody' }), 'VM_E_HOST_UNKNOWN');
    await rejectsWith(server.call('Cluster.get_Hosts', { this: 'Cluster/elsewhere' }), 'VM_E_OBJECT_UNKNOWN', new RegExp(CLUSTER));
    await rejectsWith(server.call('Cluster.get_FailoverHistory', { this: cluster, since: 'yesterday' }), 'VM_E_INVALID_PARAMS', /since/);
  });

  test('EnterMaintenance and ExitMaintenance change get_State and are announced as Cluster.OnHostStateChange', async () => {
    const notes = await Notes.open(server);
    try {
      const from = notes.seen.length;
      assert.equal(await server.call('Host.EnterMaintenance', { this: host }), null);
      assert.equal(await server.call('Host.get_State', { this: host }), 'Maintenance');
      const entered = await notes.waitFor('Maintenance announced', (n) => n.method === 'Cluster.OnHostStateChange' && n.params.state === 'Maintenance', from);
      assert.deepEqual(entered.params, { cluster: cluster, host, name: HOST, state: 'Maintenance', previous: 'Up' });
      const mark = notes.seen.length;
      assert.equal(await server.call('Host.ExitMaintenance', { this: host }), null);
      assert.equal(await server.call('Host.get_State', { this: host }), 'Up');
      const left = await notes.waitFor('Up announced', (n) => n.method === 'Cluster.OnHostStateChange' && n.params.state === 'Up', mark);
      assert.deepEqual(left.params, { cluster: cluster, host, name: HOST, state: 'Up', previous: 'Maintenance' });
      const logged = await server.call<{ message: string }[]>('VirtualServer.GetEvents', { newestFirst: true, limit: 20 });
      assert.ok(logged.some((e) => e.message.startsWith(`Host.EnterMaintenance on ${host}`)), 'the change is in the event log');
    } finally {
      notes.ws.close();
    }
  });

  test('a VM on shared storage: put_HighAvailability is stored and read back, fields left out kept; bad input is named and changes nothing', async () => {
    const vm = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'ha-shared', path: path.join(shared, 'ha-shared') })).$ref;
    assert.deepEqual(await server.call('VirtualMachine.get_HighAvailability', { this: vm }), { enabled: false, priority: 50, preferredHosts: [], maxRestarts: 3 });
    const settings = { enabled: true, priority: 80, preferredHosts: [HOST], maxRestarts: 5 };
    assert.equal(await server.call('VirtualMachine.put_HighAvailability', { this: vm, value: settings }), null);
    assert.deepEqual(await server.call('VirtualMachine.get_HighAvailability', { this: vm }), settings);
    await server.call('VirtualMachine.put_HighAvailability', { this: vm, value: { priority: 10 } });
    assert.deepEqual(await server.call('VirtualMachine.get_HighAvailability', { this: vm }), { ...settings, priority: 10 });
    assert.deepEqual(await server.call('VirtualMachine.get_Host', { this: vm }), { $ref: host }, 'an HA VM is known to the cluster, on this host');

    await rejectsWith(server.call('VirtualMachine.put_HighAvailability', { this: vm, value: { preferredHosts: ['nobody'] } }), 'VM_E_HOST_UNKNOWN', /nobody/);
    await rejectsWith(server.call('VirtualMachine.put_HighAvailability', { this: vm, value: { preferredHosts: [HOST, HOST] } }), 'VM_E_INVALID_PARAMS', /more than once/);
    await rejectsWith(server.call('VirtualMachine.put_HighAvailability', { this: vm, value: { priority: 101 } }), 'VM_E_INVALID_PARAMS', /priority.*100/);
    await rejectsWith(server.call('VirtualMachine.put_HighAvailability', { this: vm, value: { maxRestarts: -1 } }), 'VM_E_INVALID_PARAMS', /maxRestarts.*0/);
    await rejectsWith(server.call('VirtualMachine.put_HighAvailability', { this: vm, value: { preferredHosts: ['Not A Name'] } }), 'VM_E_INVALID_PARAMS', /preferredHosts/);
    assert.deepEqual(await server.call('VirtualMachine.get_HighAvailability', { this: vm }), { ...settings, priority: 10 }, 'refused changes changed nothing');
  });

  test('a VM outside the shared storage: enabling HA is VM_E_NOT_SHARED_STORAGE naming its file, and it stays disabled', async () => {
    const vm = (await server.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'ha-local' })).$ref;
    const vmc = await server.call<string>('VirtualMachine.get_File', { this: vm });
    await rejectsWith(server.call('VirtualMachine.put_HighAvailability', { this: vm, value: { enabled: true } }), 'VM_E_NOT_SHARED_STORAGE', new RegExp(path.basename(vmc).replace('.', '\\.')));
    assert.equal((await server.call<{ enabled: boolean }>('VirtualMachine.get_HighAvailability', { this: vm })).enabled, false);
  });

  test('a failover record written to etcd, as the leader writes it, is in get_FailoverHistory (since filters it) and announced as VirtualMachine.OnFailover', async () => {
    const vm = await server.call<Ref | null>('VirtualServer.FindVirtualMachine', { name: 'ha-shared' });
    assert.ok(vm, 'the VM of the HA test');
    const id = vm.$ref.slice('VirtualMachine/'.length);
    const record: FailoverRecord = {
      id: 'f-api-test-1', vm: id, vmName: 'ha-shared', from: 'api-h2', to: HOST, reason: 'host api-h2 is Down (its lease expired)',
      detected: '2026-12-06T02:10:00.000Z', fenced: '2026-12-06T02:10:00.400Z', started: '2026-12-06T02:10:01.200Z', running: '2026-12-06T02:10:09.600Z', seconds: 9.6, error: null,
    };
    const notes = await Notes.open(server);
    try {
      const from = notes.seen.length;
      etcd.etcdctl(['put', clusterKeys(CLUSTER).failover(record.id), JSON.stringify(record)]);
      const note = await notes.waitFor('OnFailover', (n) => n.method === 'VirtualMachine.OnFailover', from);
      assert.deepEqual(note.params, {
        vm: vm.$ref, name: 'ha-shared', failover: record.id, from: 'api-h2', to: HOST, reason: record.reason, seconds: 9.6,
        detected: record.detected, fenced: record.fenced, started: record.started, running: record.running, error: null,
      });
    } finally {
      notes.ws.close();
    }
    const listed = { id: record.id, vm, vmName: 'ha-shared', from: 'api-h2', to: HOST, reason: record.reason,
      detected: record.detected, fenced: record.fenced, started: record.started, running: record.running, seconds: 10, error: null };
    assert.deepEqual(await server.call('Cluster.get_FailoverHistory', { this: `Cluster/${CLUSTER}` }), [listed]);
    assert.deepEqual(await server.call('Cluster.get_FailoverHistory', { this: `Cluster/${CLUSTER}`, since: '2026-12-06T02:10:00Z' }), [listed], 'since is inclusive');
    assert.deepEqual(await server.call('Cluster.get_FailoverHistory', { this: `Cluster/${CLUSTER}`, since: '2026-12-06T02:10:01Z' }), []);
  });

  test('vsctl cluster status, hosts and history, host maintenance on|off (this host by default), vm ha', () => {
    const run = (args: string[]): string => {
      const r = vsctl(args, { env: env() });
      assert.equal(r.status, 0, `vsctl ${args.join(' ')}: ${r.stderr}${r.stdout}`);
      return r.stdout;
    };
    const status = JSON.parse(run(['cluster', 'status', '--json'])) as { name: string; leader: string; thisHost: string; hosts: HostRow[] };
    assert.deepEqual([status.name, status.leader, status.thisHost, status.hosts.map((h) => h.name)], [CLUSTER, HOST, HOST, [HOST]]);
    assert.match(run(['cluster', 'status']), new RegExp(`cluster:\\s+${CLUSTER}[\\s\\S]*leader:\\s+${HOST}[\\s\\S]*hosts:\\s+1: 1 Up`));
    assert.match(run(['cluster', 'hosts']), new RegExp(`^HOST\\s+STATE\\s+ADDRESS\\s+FREE MB\\s+VMS\\n\\* ${HOST}\\s+Up\\s+127\\.0\\.0\\.1:\\d+\\s+\\d+\\s+1\\n$`));
    // The failover record of the test before.
    assert.match(run(['cluster', 'history']), /^DETECTED\s+VM\s+FROM\s+TO\s+TOOK\s+REASON\n2026-12-06T02:10:00\.000Z\s+ha-shared\s+api-h2\s+api-h1\s+10 s\s+host api-h2 is Down \(its lease expired\)\n$/);
    assert.deepEqual((JSON.parse(run(['cluster', 'history', '--json'])) as { id: string }[]).map((f) => f.id), ['f-api-test-1']);
    assert.equal(run(['cluster', 'history', '--since', '2026-12-06T03:00Z']), 'no failovers\n');
    assert.equal(run(['host', 'maintenance', 'on']), `${HOST} is Maintenance\n`);
    assert.deepEqual(JSON.parse(run(['host', 'maintenance', 'off', HOST, '--json'])), { host: HOST, state: 'Up' });
    const bad = vsctl(['host', 'maintenance', 'sideways'], { env: env() });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /"on" or "off"/);
    const ha = JSON.parse(run(['vm', 'ha', 'ha-shared', '--disable', '--priority', '60', '--prefer', '', '--max-restarts', '2', '--json'])) as Record<string, unknown>;
    assert.deepEqual({ ...ha, vm: null }, { vm: null, enabled: false, priority: 60, preferredHosts: [], maxRestarts: 2, host: HOST });
    assert.match(run(['vm', 'ha', 'ha-shared']), /high availability:\s+disabled\npriority:\s+60\npreferred hosts:\s+any\nmax restarts:\s+2\nhost:\s+api-h1\n/);
    const refused = vsctl(['vm', 'ha', 'ha-local', '--enable'], { env: env() });
    assert.equal(refused.status, 1);
    assert.match(refused.stderr, /VM_E_NOT_SHARED_STORAGE/);
  });

  test('etcd gone (its one member killed): cluster calls are VM_E_CLUSTER_UNAVAILABLE within 10 s saying the quorum is lost; the host\'s own members answer; etcd back, so is the cluster', async () => {
    etcd.kill(0);
    try {
      const started = Date.now();
      await rejectsWith(server.call('Cluster.get_Hosts', { this: `Cluster/${CLUSTER}` }), 'VM_E_CLUSTER_UNAVAILABLE',
        /etcd has lost its quorum: 1 of 1 members refuse connections \(http:\/\/127\.0\.0\.1:\d+\); running VMs go on/);
      assert.ok(Date.now() - started < 10_000, `answered after ${Date.now() - started} ms`);
      await rejectsWith(server.call('Host.EnterMaintenance', { this: `Host/${HOST}` }), 'VM_E_CLUSTER_UNAVAILABLE', /lost its quorum/);
      assert.equal(typeof await server.call('VirtualServer.get_Name'), 'string', 'what needs no etcd still answers');
    } finally {
      await etcd.restart(0);
    }
    const hosts = await until('the cluster answering again', () => server.call<HostRow[]>('Cluster.get_Hosts', { this: `Cluster/${CLUSTER}` }).catch(() => []), (h) => h[0]?.state === 'Up');
    assert.equal(hosts[0].name, HOST);
  });
});

describe('a vserverd without cluster settings', () => {
  test('VirtualServer.get_Cluster is null, Cluster and Host members are VM_E_NOT_CLUSTERED, vsctl cluster status says it runs alone', async () => {
    const alone = await TestServer.start();
    try {
      assert.equal(await alone.call('VirtualServer.get_Cluster'), null);
      await rejectsWith(alone.call('Cluster.get_Hosts', { this: `Cluster/${CLUSTER}` }), 'VM_E_NOT_CLUSTERED');
      await rejectsWith(alone.call('Host.EnterMaintenance', { this: `Host/${HOST}` }), 'VM_E_NOT_CLUSTERED');
      const vm = (await alone.call<Ref>('VirtualServer.CreateVirtualMachine', { name: 'alone' })).$ref;
      assert.equal(await alone.call('VirtualMachine.get_Host', { this: vm }), null);
      await rejectsWith(alone.call('VirtualMachine.get_HighAvailability', { this: vm }), 'VM_E_NOT_CLUSTERED');
      const aloneEnv = { ...process.env, VSERVER_URL: alone.url, VSERVER_TOKEN: alone.adminToken, VSERVER_CREDENTIALS: path.join(alone.dataDir, 'no-credentials.json') };
      const status = vsctl(['cluster', 'status'], { env: aloneEnv });
      assert.equal(status.status, 0, status.stderr);
      assert.match(status.stdout, /runs alone \(no cluster settings\)/);
      const hosts = vsctl(['cluster', 'hosts'], { env: aloneEnv });
      assert.equal(hosts.status, 1);
      assert.match(hosts.stderr, /not in a cluster.*VM_E_NOT_CLUSTERED/);
    } finally {
      await alone.stop();
      alone.remove();
    }
  });
});
