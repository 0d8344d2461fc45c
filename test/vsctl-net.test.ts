// vsctl's net verbs and "vm nic attach|detach", run as a user runs them (bin/vsctl in a child
// process) against a real vserverd (TestServer, without host network parts): networks listed,
// shown, made and deleted; the DHCP server's settings changed, checked by the server and by the
// flags' declared types; adapters connected and disconnected; refusals printed with their names.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fieldOf } from '../server/api/fields.js';
import { TestServer } from './helpers/server.js';
import { makeTempDir, removeDir, VSCTL } from './helpers/vhd-fixtures.js';

interface Result { status: number | null; stdout: string; stderr: string }
interface Ref { $ref: string }

const dir = makeTempDir('vsctl-net');
after(() => removeDir(dir));

/** Runs vsctl without blocking this process, so the server can answer; killed after two minutes. */
function vsctlIn(env: Record<string, string>, args: string[]): Promise<Result> {
  return new Promise((resolve, reject) => {
    const clean: NodeJS.ProcessEnv = { ...process.env };
    for (const name of ['VSERVER_URL', 'VSERVER_TOKEN', 'VSERVER_CREDENTIALS', 'XDG_CONFIG_HOME']) delete clean[name];
    const child = spawn(VSCTL, args, { env: { ...clean, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
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

interface NetworkRow { id: string; name: string; kind: string; hostAdapter: string | null; dhcp: boolean; adapters: number }
interface Dhcp {
  enabled: boolean; networkAddress: string; networkMask: string; startingAddress: string; endingAddress: string; serverAddress: string;
  defaultGateway: string | null; dnsServers: string[]; winsServers: string[]; leaseTime: number; renewalTime: number; rebindingTime: number;
}
interface Shown { id: string; ref: string; name: string; kind: string; file: string; dhcp: Dhcp; adapters: Array<{ adapter: string; vmName: string; index: number }>; counters: Record<string, number> }

describe('vsctl net and vm nic against vserverd', { timeout: 300_000 }, () => {
  let server: TestServer | undefined;
  let vsctl: (...args: string[]) => Promise<Result>;

  before(async () => {
    // No host parts (bridges, TAPs, dnsmasq): these tests touch no network of the machine.
    server = await TestServer.start({ env: { VSERVER_HOST_NETWORKS: '0' } });
    const env = { VSERVER_URL: server.url, VSERVER_TOKEN: server.adminToken, VSERVER_CREDENTIALS: path.join(dir, 'none.json') };
    vsctl = (...args) => vsctlIn(env, args);
  }, { timeout: 60_000 });

  after(async () => {
    if (server) {
      await server.stop();
      server.remove();
    }
  });

  /** The DHCP server's settings as the API reads them. */
  async function dhcpOf(name: string): Promise<Record<string, unknown>> {
    const network = await server!.call<Ref>('VirtualServer.FindVirtualNetwork', { name });
    const dhcp = await server!.call<Ref>('VirtualNetwork.get_DHCPVirtualNetworkServer', { this: network.$ref });
    const read = (member: string): Promise<unknown> => server!.call(`DHCPVirtualNetworkServer.${member}`, { this: dhcp.$ref });
    const members = ['get_IsEnabled', 'get_NetworkAddress', 'get_NetworkMask', 'get_StartingIPAddress', 'get_EndingIPAddress', 'get_ServerIPAddress',
      'get_DefaultGatewayAddress', 'get_DNSServers', 'get_WINSServers', 'get_LeaseTime', 'get_RenewalTime', 'get_RebindingTime'];
    return Object.fromEntries(await Promise.all(members.map(async (m) => [m, await read(m)])));
  }

  test('net list: the Internal Network of a first start, internal and without DHCP; as a table and as JSON', async () => {
    const rows = parseJson<NetworkRow[]>(expectStatus(await vsctl('net', 'list', '--json'), 0, 'net list --json'), 'net list');
    const internal = rows.find((r) => r.name === 'Internal Network');
    assert.ok(internal, JSON.stringify(rows));
    assert.equal(internal.kind, 'internal');
    assert.equal(internal.hostAdapter, null);
    assert.equal(internal.dhcp, false);
    assert.equal(internal.adapters, 0);
    const text = expectStatus(await vsctl('net', 'list'), 0, 'net list').stdout;
    assert.match(text, /^NAME\s+KIND\s+HOST ADAPTER\s+DHCP\s+ADAPTERS\s+ID$/m);
    assert.match(text, new RegExp(`^Internal Network\\s+internal\\s+-\\s+off\\s+0\\s+${internal.id}$`, 'm'));
  });

  test('net create, then net show by name and by id: settings, the first free 10.237.N.0/24, DHCP off, no adapters, counters at 0', async () => {
    const made = parseJson<Shown>(expectStatus(await vsctl('net', 'create', 'lab', '--kind', 'internal', '--json'), 0, 'net create'), 'net create');
    assert.equal(made.name, 'lab');
    assert.equal(made.kind, 'internal');
    assert.match(made.ref, /^VirtualNetwork\/[0-9a-f-]{36}$/);
    assert.ok(fs.existsSync(made.file), `${made.file} exists`);
    const vnc = JSON.parse(fs.readFileSync(made.file, 'utf8')) as { format: string; id: string; name: string; kind: string };
    assert.deepEqual([vnc.format, vnc.id, vnc.name, vnc.kind], ['vserver-network', made.id, 'lab', 'internal']);
    assert.match(made.dhcp.networkAddress, /^10\.237\.\d+\.0$/);
    assert.equal(made.dhcp.networkMask, '255.255.255.0');
    assert.equal(made.dhcp.enabled, false);
    assert.deepEqual(made.adapters, []);
    assert.deepEqual(Object.values(made.counters), [0, 0, 0, 0, 0, 0]);

    const text = expectStatus(await vsctl('net', 'show', 'lab'), 0, 'net show').stdout;
    assert.match(text, /^Name:\s+lab$/m);
    assert.match(text, new RegExp(`^Id:\\s+${made.id}$`, 'm'));
    assert.match(text, /^Kind:\s+internal$/m);
    assert.match(text, /^DHCP:\s+disabled$/m);
    assert.match(text, new RegExp(`^\\s+Network:\\s+${made.dhcp.networkAddress.replace(/\./g, '\\.')} mask 255\\.255\\.255\\.0$`, 'm'));
    assert.match(text, /^Adapters:\s+none$/m);
    assert.match(text, /^Sent:\s+0 bytes, 0 packets$/m);
    const byId = parseJson<Shown>(expectStatus(await vsctl('net', 'show', made.id, '--json'), 0, 'net show ID'), 'net show');
    assert.equal(byId.name, 'lab');
  });

  test('net create refusals: a kind not declared (exit 2, the declared kinds), a name in use and a host network without a host (exit 1, named)', async () => {
    const kinds = fieldOf('VirtualServer.CreateVirtualNetwork', 'kind').choices ?? [];
    const bad = expectStatus(await vsctl('net', 'create', 'x', '--kind', 'bridge'), 2, 'net create --kind bridge');
    assert.match(bad.stderr, new RegExp(`"bridge" is not one of ${kinds.join(', ')}`));
    const missing = expectStatus(await vsctl('net', 'create', 'x'), 2, 'net create without --kind');
    assert.match(missing.stderr, /--kind is needed/);
    const taken = expectStatus(await vsctl('net', 'create', 'lab', '--kind', 'nat'), 1, 'net create of a name in use');
    assert.match(taken.stderr, /^vsctl: .+ \[VM_E_NETWORK_NAME_IN_USE\]$/m);
    const noSuch = expectStatus(await vsctl('net', 'create', 'x', '--kind', 'host', '--host-adapter', 'nosuch0'), 1, 'net create --host-adapter nosuch0');
    assert.match(noSuch.stderr, /\[VM_E_HOST_ADAPTER_UNKNOWN\]$/m);
    const unknown = expectStatus(await vsctl('net', 'show', 'nope', '--json'), 1, 'net show of no network');
    assert.equal(parseJson<{ error: { name: string } }>(unknown, 'error').error.name, 'VM_E_NETWORK_UNKNOWN');
  });

  test('net dhcp: every option, the lease times; the settings the API reads afterwards are those given', async () => {
    const r = expectStatus(await vsctl('net', 'dhcp', 'lab', '--network', '10.99.0.0', '--mask', '255.255.255.0', '--start', '10.99.0.10', '--end', '10.99.0.20',
      '--server', '10.99.0.1', '--gateway', '10.99.0.1', '--dns', '10.99.0.1,10.99.0.2', '--wins', '10.99.0.3', '--lease', '3600', '--renewal', '1800', '--rebinding', '3000', '--json'), 0, 'net dhcp');
    const settings = parseJson<Dhcp>(r, 'net dhcp');
    assert.deepEqual(
      [settings.networkAddress, settings.networkMask, settings.startingAddress, settings.endingAddress, settings.serverAddress, settings.defaultGateway, settings.dnsServers, settings.winsServers, settings.leaseTime, settings.renewalTime, settings.rebindingTime],
      ['10.99.0.0', '255.255.255.0', '10.99.0.10', '10.99.0.20', '10.99.0.1', '10.99.0.1', ['10.99.0.1', '10.99.0.2'], ['10.99.0.3'], 3600, 1800, 3000]);
    const api = await dhcpOf('lab');
    assert.deepEqual(
      [api.get_NetworkAddress, api.get_StartingIPAddress, api.get_EndingIPAddress, api.get_DefaultGatewayAddress, api.get_DNSServers, api.get_WINSServers, api.get_LeaseTime, api.get_RenewalTime, api.get_RebindingTime],
      ['10.99.0.0', '10.99.0.10', '10.99.0.20', '10.99.0.1', ['10.99.0.1', '10.99.0.2'], ['10.99.0.3'], 3600, 1800, 3000]);
    // One option alone keeps the others.
    expectStatus(await vsctl('net', 'dhcp', 'lab', '--end', '10.99.0.30'), 0, 'net dhcp --end');
    const after = await dhcpOf('lab');
    assert.equal(after.get_EndingIPAddress, '10.99.0.30');
    assert.equal(after.get_StartingIPAddress, '10.99.0.10');
    assert.equal(after.get_LeaseTime, 3600);
    const shown = expectStatus(await vsctl('net', 'dhcp', 'lab'), 0, 'net dhcp without options').stdout;
    assert.match(shown, /^\s+Addresses leased:\s+10\.99\.0\.10 to 10\.99\.0\.30$/m);
    assert.match(shown, /^\s+DNS servers:\s+10\.99\.0\.1, 10\.99\.0\.2$/m);
    assert.match(shown, /^\s+Lease time:\s+3600 s \(renewal 1800 s, rebinding 3000 s\)$/m);
  });

  test('net dhcp --enable and --disable turn the DHCP server on and off (without host parts it is a setting only); both at once is a usage error', async () => {
    const on = parseJson<Dhcp>(expectStatus(await vsctl('net', 'dhcp', 'lab', '--enable', '--json'), 0, 'net dhcp --enable'), 'net dhcp --enable');
    assert.equal(on.enabled, true);
    assert.equal((await dhcpOf('lab')).get_IsEnabled, true);
    assert.match(expectStatus(await vsctl('net', 'list'), 0, 'net list').stdout, /^lab\s+internal\s+-\s+on\s+0\s/m);
    const off = expectStatus(await vsctl('net', 'dhcp', 'lab', '--disable'), 0, 'net dhcp --disable').stdout;
    assert.match(off, /^DHCP:\s+disabled$/m);
    assert.equal((await dhcpOf('lab')).get_IsEnabled, false);
    const both = expectStatus(await vsctl('net', 'dhcp', 'lab', '--enable', '--disable'), 2, 'net dhcp --enable --disable');
    assert.match(both.stderr, /--enable and --disable: give one/);
  });

  test('net dhcp refusals are named and change nothing: a mask that is not contiguous, a range outside the network, lease times out of order, an overlap', async () => {
    const before = await dhcpOf('lab');
    const mask = expectStatus(await vsctl('net', 'dhcp', 'lab', '--mask', '255.0.255.0'), 1, 'net dhcp --mask 255.0.255.0');
    assert.match(mask.stderr, /^vsctl: .+ \[VM_E_DHCP_INVALID\]$/m);
    const outside = expectStatus(await vsctl('net', 'dhcp', 'lab', '--start', '10.98.0.10', '--json'), 1, 'net dhcp --start outside');
    const error = parseJson<{ error: { name: string; data: { problems?: Array<{ field: string; message: string }> } } }>(outside, 'error').error;
    assert.equal(error.name, 'VM_E_DHCP_INVALID');
    assert.ok(error.data.problems?.length, JSON.stringify(error));
    const order = expectStatus(await vsctl('net', 'dhcp', 'lab', '--renewal', '3500'), 1, 'net dhcp --renewal above rebinding');
    assert.match(order.stderr, /\[VM_E_DHCP_INVALID\]$/m);
    const leaseMin = fieldOf('DHCPVirtualNetworkServer.ConfigureDHCPLeaseTimes', 'leaseTime').min;
    const tooShort = await vsctl('net', 'dhcp', 'lab', '--lease', '10');
    // Below a minimum the declaration states, vsctl refuses before asking (exit 2); else the server does.
    if (leaseMin !== undefined && leaseMin > 10) {
      expectStatus(tooShort, 2, 'net dhcp --lease 10');
      assert.match(tooShort.stderr, new RegExp(`--lease: 10 is below the least allowed, ${leaseMin}`));
    } else {
      expectStatus(tooShort, 1, 'net dhcp --lease 10');
      assert.match(tooShort.stderr, /\[VM_E_DHCP_INVALID\]$/m);
    }
    const notNumber = expectStatus(await vsctl('net', 'dhcp', 'lab', '--lease', 'long'), 2, 'net dhcp --lease long');
    assert.match(notNumber.stderr, /--lease: "long" is not an integer/);
    const internal = await dhcpOf('Internal Network');
    const overlap = expectStatus(await vsctl('net', 'dhcp', 'lab', '--network', String(internal.get_NetworkAddress), '--mask', String(internal.get_NetworkMask),
      '--start', String(internal.get_NetworkAddress).replace(/\.0$/, '.100'), '--end', String(internal.get_NetworkAddress).replace(/\.0$/, '.110'),
      '--server', String(internal.get_NetworkAddress).replace(/\.0$/, '.1'), '--gateway', 'none'), 1, 'net dhcp over the Internal Network');
    assert.match(overlap.stderr, /Internal Network.*\[VM_E_DHCP_OVERLAP\]$/m);
    assert.deepEqual(await dhcpOf('lab'), before);
  });

  test('vm nic attach and detach; net delete is refused while an adapter is attached, naming it; net leases', async () => {
    expectStatus(await vsctl('vm', 'create', 'netvm', '--nic'), 0, 'vm create --nic');
    const attached = parseJson<{ adapter: string; network: string; networkName: string }>(expectStatus(await vsctl('vm', 'nic', 'attach', 'netvm', '0', 'lab', '--json'), 0, 'vm nic attach'), 'vm nic attach');
    assert.equal(attached.networkName, 'lab');
    assert.match(attached.adapter, /^NetworkAdapter\/[0-9a-f-]{36}\/0$/);
    const text = expectStatus(await vsctl('vm', 'nic', 'attach', 'netvm', '0', 'lab'), 0, 'vm nic attach again').stdout;
    assert.equal(text, 'netvm adapter 0 is connected to lab\n');
    const shown = parseJson<Shown>(expectStatus(await vsctl('net', 'show', 'lab', '--json'), 0, 'net show'), 'net show');
    assert.deepEqual(shown.adapters.map((a) => [a.adapter, a.vmName, a.index]), [[attached.adapter, 'netvm', 0]]);
    const listed = parseJson<NetworkRow[]>(expectStatus(await vsctl('net', 'list', '--json'), 0, 'net list'), 'net list');
    assert.equal(listed.find((n) => n.name === 'lab')?.adapters, 1);

    const refused = expectStatus(await vsctl('net', 'delete', 'lab'), 1, 'net delete while attached');
    assert.match(refused.stderr, /^vsctl: .*netvm.*\("vsctl vm nic detach VM INDEX" disconnects one\) \[VM_E_NETWORK_IN_USE\]$/m);
    const refusedJson = parseJson<{ error: { name: string; data: { adapters: unknown[] } } }>(expectStatus(await vsctl('net', 'delete', 'lab', '--json'), 1, 'net delete --json'), 'error');
    assert.equal(refusedJson.error.name, 'VM_E_NETWORK_IN_USE');
    assert.equal(refusedJson.error.data.adapters.length, 1);
    assert.ok(fs.existsSync(shown.file), 'the refused delete kept the .vnc');

    // Without host parts a VM whose adapter is attached cannot turn on: the CLI says why, by name, and the VM stays off.
    const start = expectStatus(await vsctl('vm', 'start', 'netvm'), 1, 'vm start with an attached adapter and no host parts');
    assert.match(start.stderr, /^vsctl: cannot turn on netvm, whose adapters are attached to networks: .+ \[VM_E_NETWORK_NOT_PERMITTED\]$/m);
    assert.equal(await server!.call('VirtualMachine.get_State', { this: `VirtualMachine/${attached.adapter.split('/')[1]}` }), 'TurnedOff');
    const shownVm = expectStatus(await vsctl('vm', 'show', 'netvm'), 0, 'vm show').stdout;
    assert.match(shownVm, /^Network adapters:\s+00:03:FF:\S+\s+\S+, network lab$/im);

    const bad = expectStatus(await vsctl('vm', 'nic', 'attach', 'netvm', '0', 'nope'), 1, 'vm nic attach to no network');
    assert.match(bad.stderr, /\[VM_E_NETWORK_UNKNOWN\]$/m);
    const usage = expectStatus(await vsctl('vm', 'nic', 'plug', 'netvm', '0'), 2, 'vm nic plug');
    assert.match(usage.stderr, /"plug" is not attach or detach/);
    const noIndex = expectStatus(await vsctl('vm', 'nic', 'detach', 'netvm', 'first'), 2, 'vm nic detach netvm first');
    assert.match(noIndex.stderr, /INDEX: "first" is not a whole number/);
    const noAdapter = expectStatus(await vsctl('vm', 'nic', 'detach', 'netvm', '5'), 1, 'vm nic detach of an adapter that is not there');
    assert.match(noAdapter.stderr, /\[VM_E_[A-Z_]+\]$/m);

    expectStatus(await vsctl('net', 'leases', 'lab'), 0, 'net leases');
    assert.equal((await vsctl('net', 'leases', 'lab')).stdout, 'no leases\n');
    assert.deepEqual(parseJson<unknown[]>(expectStatus(await vsctl('net', 'leases', 'lab', '--json'), 0, 'net leases --json'), 'net leases'), []);

    const detached = expectStatus(await vsctl('vm', 'nic', 'detach', 'netvm', '0'), 0, 'vm nic detach').stdout;
    assert.equal(detached, 'netvm adapter 0 is not connected\n');
    assert.deepEqual(await server!.call('NetworkAdapter.get_VirtualNetwork', { this: attached.adapter }), null);
    expectStatus(await vsctl('net', 'delete', 'lab'), 0, 'net delete');
    assert.ok(!fs.existsSync(shown.file), 'net delete removed the .vnc');
    const after = parseJson<NetworkRow[]>(expectStatus(await vsctl('net', 'list', '--json'), 0, 'net list'), 'net list');
    assert.ok(!after.some((n) => n.name === 'lab'), JSON.stringify(after));
    expectStatus(await vsctl('vm', 'delete', 'netvm'), 0, 'vm delete');
  });

  test('net delete --keep-file unregisters the network and keeps its .vnc, which RegisterVirtualNetwork adds back', async () => {
    const made = parseJson<Shown>(expectStatus(await vsctl('net', 'create', 'spare', '--kind', 'internal', '--json'), 0, 'net create'), 'net create');
    const kept = parseJson<{ unregistered: boolean; deleted: boolean; file: string }>(expectStatus(await vsctl('net', 'delete', 'spare', '--keep-file', '--json'), 0, 'net delete --keep-file'), 'net delete');
    assert.deepEqual([kept.unregistered, kept.deleted, kept.file], [true, false, made.file]);
    assert.ok(fs.existsSync(made.file), 'the .vnc is kept');
    const listed = parseJson<NetworkRow[]>(expectStatus(await vsctl('net', 'list', '--json'), 0, 'net list'), 'net list');
    assert.ok(!listed.some((n) => n.name === 'spare'));
    expectStatus(await vsctl('call', 'VirtualServer.RegisterVirtualNetwork', `path=${made.file}`), 0, 'RegisterVirtualNetwork');
    const back = parseJson<Shown>(expectStatus(await vsctl('net', 'show', 'spare', '--json'), 0, 'net show'), 'net show');
    assert.equal(back.id, made.id);
    expectStatus(await vsctl('net', 'delete', made.id), 0, 'net delete by id');
    assert.ok(!fs.existsSync(made.file));
  });
});
