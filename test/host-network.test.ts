// server/network/: the host parts of virtual networks, made by the library itself with the real
// ip, nft and dnsmasq, inside network namespaces of this test's own (test/helpers/netns.ts): a
// "host" namespace runs HostNetworks (test/helpers/host-networks-child.ts); guests are namespaces
// joined to its bridges by veth pairs whose host ends are named like TAPs and get their addresses
// with busybox's udhcpc; an "outside" namespace sits behind the host, a "LAN" one behind a host
// adapter with its own dnsmasq. Nothing here touches the machine's own network namespace.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { checkDhcp, defaultDhcp, overlapping, parseIpv4, formatIpv4, maskPrefix, assertDhcp, type DhcpSettings } from '../server/network/dhcp-settings.js';
import { bridgeName, isOurs } from '../server/network/names.js';
import type { NetworkSpec, PartReport } from '../server/network/host-networks.js';
import type { Lease } from '../server/network/dnsmasq.js';
import type { Counters, HistoryPoint } from '../server/network/counters.js';
import type { HostInterface } from '../server/network/links.js';
import { Netns, removeLeftoverNamespaces, vethPair } from './helpers/netns.js';
import { HostNetworksClient } from './helpers/host-networks-child.js';

const valid = (): DhcpSettings => ({ ...defaultDhcp('nat', []), leaseTime: 600, renewalTime: 300, rebindingTime: 500 });

describe('DHCP settings', () => {
  test('IPv4 addresses and masks parse strictly and format back', () => {
    assert.equal(parseIpv4('10.237.0.1'), 0x0aed0001);
    assert.equal(formatIpv4(0x0aed0001), '10.237.0.1');
    for (const bad of ['10.237.0', '10.237.0.256', '010.1.1.1', '1.2.3.4.5', 'a.b.c.d', '', ' 1.2.3.4']) assert.equal(parseIpv4(bad), null, bad);
    assert.equal(maskPrefix('255.255.255.0'), 24);
    assert.equal(maskPrefix('255.255.255.255'), 32);
    assert.equal(maskPrefix('255.0.255.0'), null);
    assert.equal(maskPrefix('255.255.255.1'), null);
  });

  test('defaults: the first free 10.237.N.0/24; DHCP on (gateway = server) only for nat', () => {
    const first = defaultDhcp('nat', []);
    assert.deepEqual(first, {
      enabled: true, networkAddress: '10.237.0.0', networkMask: '255.255.255.0', startingAddress: '10.237.0.16', endingAddress: '10.237.0.254',
      serverAddress: '10.237.0.1', defaultGateway: '10.237.0.1', dnsServers: [], winsServers: [], leaseTime: 86400, renewalTime: 43200, rebindingTime: 75600,
    });
    assert.deepEqual(checkDhcp(first), []);
    const second = defaultDhcp('internal', [first, { networkAddress: '10.237.1.0', networkMask: '255.255.255.128' }]);
    assert.equal(second.networkAddress, '10.237.2.0');
    assert.equal(second.enabled, false);
    assert.equal(second.defaultGateway, null);
    assert.equal(defaultDhcp('host', []).enabled, false);
    assert.throws(() => defaultDhcp('nat', [{ networkAddress: '10.237.0.0', networkMask: '255.255.0.0' }]), { errorName: 'VM_E_DHCP_OVERLAP' });
  });

  test('overlapping networks', () => {
    const a = { networkAddress: '10.237.0.0', networkMask: '255.255.255.0' };
    assert.equal(overlapping(a, { networkAddress: '10.237.0.128', networkMask: '255.255.255.128' }), true);
    assert.equal(overlapping(a, { networkAddress: '10.0.0.0', networkMask: '255.0.0.0' }), true);
    assert.equal(overlapping(a, { networkAddress: '10.237.1.0', networkMask: '255.255.255.0' }), false);
  });

  test('every problem is named by its field', () => {
    const problems = (change: Partial<DhcpSettings>): string[] => checkDhcp({ ...valid(), ...change }).map((p) => p.field);
    assert.deepEqual(problems({ networkAddress: '10.237.0' }), ['networkAddress']);
    assert.deepEqual(problems({ networkMask: '255.0.255.0' }), ['networkMask']);
    assert.deepEqual(problems({ networkMask: '255.255.255.254' }), ['networkMask']);
    assert.deepEqual(problems({ networkAddress: '10.237.0.5' }), ['networkAddress']);
    assert.deepEqual(problems({ startingAddress: '10.237.1.16' }), ['startingAddress', 'startingAddress'], 'outside the network, and after the end');
    assert.deepEqual(problems({ endingAddress: '10.237.0.255' }), ['endingAddress']);
    assert.deepEqual(problems({ startingAddress: '10.237.0.200', endingAddress: '10.237.0.100' }), ['startingAddress']);
    assert.deepEqual(problems({ serverAddress: '10.237.0.20' }), ['serverAddress']);
    assert.deepEqual(problems({ serverAddress: '10.237.0.0' }), ['serverAddress']);
    assert.deepEqual(problems({ defaultGateway: '192.168.0.1' }), ['defaultGateway']);
    assert.deepEqual(problems({ dnsServers: ['8.8.8.8', 'dns'], winsServers: ['1.2.3'] }), ['dnsServers[1]', 'winsServers[0]']);
    assert.deepEqual(problems({ leaseTime: 59, renewalTime: 30, rebindingTime: 45 }), ['leaseTime']);
    assert.deepEqual(problems({ renewalTime: 29 }), ['renewalTime']);
    assert.deepEqual(problems({ rebindingTime: 44, renewalTime: 30 }), ['rebindingTime']);
    assert.deepEqual(problems({ renewalTime: 1.5 }), ['renewalTime']);
    assert.deepEqual(problems({ renewalTime: 500 }), ['renewalTime']);
    assert.deepEqual(problems({ rebindingTime: 600 }), ['rebindingTime']);
    assert.throws(() => assertDhcp({ ...valid(), networkMask: '255.0.255.0', serverAddress: 'x' }), (error: { errorName: string; details: { problems: { field: string }[] } }) => {
      assert.equal(error.errorName, 'VM_E_DHCP_INVALID');
      assert.deepEqual(error.details.problems.map((p) => p.field), ['networkMask', 'serverAddress']);
      return true;
    });
  });

  test('names: bridges from network ids, and what is ours', () => {
    assert.equal(bridgeName('1A2B3C4D-0000-4000-8000-000000000001'), 'vsbr1a2b3c4d');
    assert.equal(isOurs('vsbr1a2b3c4d'), true);
    assert.equal(isOurs('vst1a2b3c4dn3'), true);
    assert.equal(isOurs('eth0'), false);
    assert.equal(isOurs('vsbr-other'), false);
  });
});

/** A guest: a namespace whose eth0 is a veth into the host namespace, the host end named like a TAP. */
interface Guest { ns: Netns; tap: string; mac: string }

const UDHCPC_SCRIPT = `#!/bin/sh
# udhcpc's hook: takes the address and the router, and writes what the server sent to $LEASE_ENV.
case "$1" in
  bound|renew)
    ip address flush dev "$interface"
    ip address add "$ip/$mask" dev "$interface"
    if [ -n "$router" ]; then ip route replace default via "\${router%% *}" dev "$interface"; fi
    env > "$LEASE_ENV" ;;
esac
`;

describe('host networks in network namespaces', { timeout: 300_000 }, () => {
  const stateRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-hostnet-'));
  const stateDir = path.join(stateRoot, 'networks');
  const script = path.join(stateRoot, 'udhcpc.sh');
  const spaces: Netns[] = [];
  const clients: HostNetworksClient[] = [];
  let host: Netns;
  let hn: HostNetworksClient;

  const nat: NetworkSpec = { id: 'a1000001-0000-4000-8000-000000000001', name: 'NAT', kind: 'nat', hostAdapter: null, dhcp: { ...defaultDhcp('nat', []), leaseTime: 600, renewalTime: 300, rebindingTime: 500, dnsServers: ['10.99.0.53'], winsServers: ['10.237.0.3'] } };
  const internal: NetworkSpec = { id: 'a1000002-0000-4000-8000-000000000002', name: 'Internal', kind: 'internal', hostAdapter: null, dhcp: { ...defaultDhcp('internal', [nat.dhcp]), enabled: true } };
  const lan: NetworkSpec = { id: 'a1000003-0000-4000-8000-000000000003', name: 'LAN', kind: 'host', hostAdapter: 'lan0', dhcp: defaultDhcp('host', [nat.dhcp, internal.dhcp]) };
  const guests = new Map<string, Guest>();
  let countedBefore: Counters | undefined;

  const namespace = (label: string): Netns => {
    const ns = Netns.create(label);
    spaces.push(ns);
    return ns;
  };
  const client = (): HostNetworksClient => {
    const made = new HostNetworksClient(host, stateDir, 'nobody');
    clients.push(made);
    return made;
  };
  const networks = <T>(method: string, ...args: unknown[]): Promise<T> => hn.call<T>('networks', method, ...args);
  const dnsmasqPid = (spec: NetworkSpec): number => Number(fs.readFileSync(path.join(stateDir, spec.id, 'dnsmasq.pid'), 'utf8'));

  /** A guest joined to `spec`'s bridge through HostNetworks.ensureTap (the veth's host end stands in for a TAP). */
  async function guest(label: string, index: number, spec: NetworkSpec): Promise<Guest> {
    const ns = namespace(`hn-${label}`);
    const tap = `vst0000000${index}n0`;
    vethPair(host, tap, ns, 'eth0');
    await networks('ensureTap', tap, spec.id);
    const mac = JSON.parse(ns.run('ip', ['-json', 'link', 'show', 'dev', 'eth0']))[0].address as string;
    const made = { ns, tap, mac };
    guests.set(label, made);
    return made;
  }

  /** Runs udhcpc in the guest; what the DHCP server sent (udhcpc's variables). */
  function lease(g: Guest, hostname: string): Record<string, string> {
    const envFile = path.join(stateRoot, `${g.tap}.env`);
    fs.rmSync(envFile, { force: true });
    g.ns.run('env', [`LEASE_ENV=${envFile}`, 'busybox', 'udhcpc', '-i', 'eth0', '-f', '-q', '-n', '-t', '8', '-T', '2', '-s', script,
      '-x', `hostname:${hostname}`, '-O', 'wins', '-O', '58', '-O', '59'], 30_000);
    return Object.fromEntries(fs.readFileSync(envFile, 'utf8').split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  }

  const pings = (from: Netns, address: string): boolean => from.attempt('busybox', ['ping', '-c', '1', '-W', '2', address], 10_000).status === 0;
  const inRange = (address: string, settings: DhcpSettings): boolean => {
    const value = parseIpv4(address) ?? -1;
    return value >= (parseIpv4(settings.startingAddress) ?? 0) && value <= (parseIpv4(settings.endingAddress) ?? 0);
  };
  const actions = (reports: PartReport[], network: string): Record<string, string> =>
    Object.fromEntries(reports.filter((r) => r.network === network).map((r) => [r.part, r.action]));

  before(() => {
    removeLeftoverNamespaces();
    fs.mkdirSync(stateDir);
    fs.writeFileSync(script, UDHCPC_SCRIPT, { mode: 0o755 });
    host = namespace('hn-host');
    hn = client();
  });

  after(async () => {
    for (const made of clients) await made.close();
    for (const ns of spaces) ns.remove();
    fs.rmSync(stateRoot, { recursive: true, force: true });
  });

  test('this process may make host parts (root, ip, dnsmasq, nft); one without CAP_NET_ADMIN is told so', async () => {
    assert.deepEqual(await hn.call('static', 'permission'), { ok: true, reason: 'vserverd may make bridges, TAPs, NAT rules and DHCP servers' });
    const module = new URL('../server/network/host-networks.js', import.meta.url).pathname;
    // Root without CAP_NET_ADMIN: dropped from the bounding set, it is not in the program's effective set.
    const unprivileged = host.run('setpriv', ['--bounding-set', '-net_admin', '--', process.execPath, '--input-type=module', '-e',
      `import { HostNetworks } from ${JSON.stringify(module)}; console.log(JSON.stringify(await HostNetworks.permission()));`], 20_000);
    assert.deepEqual(JSON.parse(unprivileged), { ok: false, reason: 'vserverd cannot make host parts of virtual networks: it lacks the capability CAP_NET_ADMIN (run vserverd as root)' });
  });

  test('apply makes each kind\'s parts, and a second apply adopts them all', async () => {
    // The LAN behind the host adapter lan0: its own DHCP server; the host has an address on it.
    const lanNs = namespace('hn-lan');
    vethPair(host, 'lan0', lanNs, 'eth0');
    host.run('ip', ['address', 'add', '192.168.77.2/24', 'dev', 'lan0']);
    host.run('ip', ['route', 'add', '10.50.0.0/16', 'via', '192.168.77.1', 'dev', 'lan0']);
    lanNs.run('ip', ['address', 'add', '192.168.77.1/24', 'dev', 'eth0']);
    lanNs.run('ip', ['address', 'add', '10.50.0.1/16', 'dev', 'eth0']);
    const lanConf = path.join(stateRoot, 'lan-dnsmasq.conf');
    fs.writeFileSync(lanConf, `interface=eth0\nbind-interfaces\nport=0\nno-hosts\nno-resolv\ndhcp-range=192.168.77.50,192.168.77.60,255.255.255.0,600\ndhcp-leasefile=${stateRoot}/lan.leases\npid-file=${stateRoot}/lan.pid\n`);
    lanNs.run('dnsmasq', [`--conf-file=${lanConf}`]);

    const first = [...await networks<PartReport[]>('apply', nat), ...await networks<PartReport[]>('apply', internal), ...await networks<PartReport[]>('apply', lan)];
    assert.deepEqual(actions(first, nat.id), { bridge: 'created', address: 'created', rules: 'created', dhcp: 'created' });
    assert.deepEqual(actions(first, internal.id), { bridge: 'created', address: 'created', rules: 'created', dhcp: 'created' });
    assert.deepEqual(actions(first, lan.id), { bridge: 'created', 'host adapter': 'created' });
    assert.deepEqual(hn.reports.slice(-first.length), first, 'every action is also reported as it happens');

    const links = JSON.parse(host.run('ip', ['-json', '-details', 'link', 'show'])) as { ifname: string; master?: string; flags: string[]; linkinfo?: { info_kind: string } }[];
    for (const spec of [nat, internal, lan]) {
      const bridge = links.find((l) => l.ifname === bridgeName(spec.id));
      assert.equal(bridge?.linkinfo?.info_kind, 'bridge');
      assert.ok(bridge?.flags.includes('UP'));
    }
    assert.equal(links.find((l) => l.ifname === 'lan0')?.master, bridgeName(lan.id));
    const addressesOf = (name: string): string[] => (JSON.parse(host.run('ip', ['-json', '-4', 'address', 'show', 'dev', name]))[0]?.addr_info ?? []).map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`);
    assert.deepEqual(addressesOf(bridgeName(nat.id)), ['10.237.0.1/24']);
    assert.deepEqual(addressesOf(bridgeName(internal.id)), ['10.237.1.1/24']);
    // The host adapter's address moved to the bridge, and the host still reaches the LAN.
    assert.deepEqual(addressesOf(bridgeName(lan.id)), ['192.168.77.2/24']);
    assert.deepEqual(addressesOf('lan0'), []);
    assert.ok(pings(host, '192.168.77.1'), 'the host reaches its LAN through the bridge');
    assert.match(host.run('ip', ['-4', 'route', 'show', '10.50.0.0/16']), new RegExp(`via 192\\.168\\.77\\.1 dev ${bridgeName(lan.id)}`), 'its routes moved too');
    assert.ok(pings(host, '10.50.0.1'));
    assert.equal(host.run('cat', ['/proc/sys/net/ipv4/ip_forward']).trim(), '1');
    assert.match(host.run('nft', ['list', 'table', 'ip', `vserver_${bridgeName(nat.id)}`]), /masquerade/);
    assert.match(host.run('nft', ['list', 'table', 'ip', `vserver_${bridgeName(internal.id)}`]), /udp dport 67 accept/);
    assert.equal(host.attempt('nft', ['list', 'table', 'ip', `vserver_${bridgeName(lan.id)}`]).status, 1, 'a host-connected network has no rules');

    const pids = [dnsmasqPid(nat), dnsmasqPid(internal)];
    const second = [...await networks<PartReport[]>('apply', nat), ...await networks<PartReport[]>('apply', internal), ...await networks<PartReport[]>('apply', lan)];
    assert.deepEqual(second.filter((r) => r.action !== 'adopted'), []);
    assert.deepEqual([dnsmasqPid(nat), dnsmasqPid(internal)], pids);
  });

  test('a guest of the nat network gets a lease in its range with its settings, and leases() lists it', async () => {
    const g = await guest('natg', 1, nat);
    const sent = lease(g, 'natguest');
    assert.ok(inRange(sent.ip, nat.dhcp), sent.ip);
    assert.equal(sent.mask, '24');
    assert.equal(sent.router, '10.237.0.1');
    assert.equal(sent.serverid, '10.237.0.1');
    assert.equal(sent.dns, '10.99.0.53');
    assert.equal(sent.wins, '10.237.0.3');
    assert.equal(sent.lease, '600');
    assert.equal(sent.opt58, (300).toString(16).padStart(8, '0'));
    assert.equal(sent.opt59, (500).toString(16).padStart(8, '0'));
    const leases = await networks<Lease[]>('leases', nat.id);
    const listed = leases.find((l) => l.mac === g.mac.toUpperCase());
    assert.equal(listed?.address, sent.ip);
    assert.equal(listed?.hostname, 'natguest');
    const expires = Date.parse(listed?.expires ?? '') - Date.now();
    assert.ok(expires > 500_000 && expires <= 600_000, `expires in ${expires} ms`);
  });

  test('nat: the guest reaches an address routed only through the host, masqueraded; the outside cannot reach in', async () => {
    const outside = namespace('hn-out');
    vethPair(host, 'up0', outside, 'eth0');
    host.run('ip', ['address', 'add', '10.99.0.1/24', 'dev', 'up0']);
    outside.run('ip', ['address', 'add', '10.99.0.2/24', 'dev', 'eth0']);
    const server = outside.spawn(process.execPath, ['-e',
      "const s = require('net').createServer((c) => { console.log(c.remoteAddress); c.end(); s.close(); }); s.listen(7000, '10.99.0.2', () => console.log('ready')); setTimeout(() => process.exit(3), 20000).unref();"]);
    let said = '';
    server.stdout?.setEncoding('utf8').on('data', (chunk: string) => { said += chunk; });
    const ended = new Promise((resolve) => server.on('exit', resolve));
    for (const start = Date.now(); !said.includes('ready') && Date.now() - start < 10_000;) await new Promise((r) => setTimeout(r, 50));
    assert.ok(said.includes('ready'), 'the outside server listens');
    const g = guests.get('natg');
    assert.ok(g);
    g.ns.run(process.execPath, ['-e', "const c = require('net').connect(7000, '10.99.0.2'); c.on('data', () => {}); c.on('end', () => process.exit(0)); c.on('error', (e) => { console.error(e.message); process.exit(1); }); setTimeout(() => process.exit(2), 8000);"], 15_000);
    await ended;
    assert.deepEqual(said.trim().split('\n'), ['ready', '10.99.0.1'], 'the connection arrives from the host\'s address');
    // Even with a route to the guests, a connection from outside is not let in.
    outside.run('ip', ['route', 'add', '10.237.0.0/24', 'via', '10.99.0.1']);
    const guestAddress = JSON.parse(g.ns.run('ip', ['-json', '-4', 'address', 'show', 'dev', 'eth0']))[0].addr_info[0].local as string;
    assert.equal(pings(outside, guestAddress), false);
    assert.ok(pings(g.ns, '10.99.0.2'), 'while the guest reaches the outside');
  });

  test('internal: guests get leases and reach each other, but not the host (except DHCP) nor beyond it', async () => {
    const one = await guest('int1', 2, internal);
    const two = await guest('int2', 3, internal);
    const first = lease(one, 'one');
    const second = lease(two, 'two');
    assert.ok(inRange(first.ip, internal.dhcp) && inRange(second.ip, internal.dhcp));
    assert.equal(first.router, undefined, 'no router is offered on a network without a gateway');
    assert.ok(pings(one.ns, second.ip), 'guests reach each other');
    assert.equal(pings(one.ns, internal.dhcp.serverAddress), false, 'the host\'s address answers nothing but DHCP');
    one.ns.run('ip', ['route', 'add', 'default', 'via', internal.dhcp.serverAddress]);
    assert.equal(pings(one.ns, '10.99.0.2'), false, 'nothing is routed out of an internal network');
    assert.equal(pings(one.ns, '10.237.0.1'), false);
    assert.equal(host.run('cat', [`/proc/sys/net/ipv6/conf/${bridgeName(internal.id)}/disable_ipv6`]).trim(), '1', 'no IPv6 around the rules');
    assert.equal(host.run('ip', ['-6', 'address', 'show', 'dev', bridgeName(internal.id)]).trim(), '');
    assert.deepEqual((await networks<Lease[]>('leases', internal.id)).map((l) => l.hostname).sort(), ['one', 'two']);
  });

  test('host-connected: the guest\'s lease comes from the LAN\'s DHCP server', async () => {
    const g = await guest('lang', 4, lan);
    const sent = lease(g, 'langguest');
    assert.equal(sent.serverid, '192.168.77.1');
    const value = parseIpv4(sent.ip) ?? 0;
    assert.ok(value >= (parseIpv4('192.168.77.50') ?? 0) && value <= (parseIpv4('192.168.77.60') ?? 0), sent.ip);
    assert.ok(pings(g.ns, '192.168.77.2'), 'the guest reaches the host on the LAN');
    assert.deepEqual(await networks<Lease[]>('leases', lan.id), [], 'vserver serves no DHCP there');
  });

  test('the host\'s interfaces leave out loopback and vserver\'s bridges and TAPs', async () => {
    const list = await networks<HostInterface[]>('hostInterfaces');
    assert.deepEqual(list.map((i) => i.name).sort(), ['lan0', 'up0']);
    const up0 = list.find((i) => i.name === 'up0');
    assert.deepEqual(up0?.addresses.filter((a) => !a.startsWith('fe80:')), ['10.99.0.1/24']);
    assert.equal(up0?.up, true);
    assert.match(up0?.mac ?? '', /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  });

  test('ensureTap makes a persistent TAP owned by the QEMU user, in the network\'s bridge or none; removeTap deletes it', async () => {
    const tap = 'vst000000aan1';
    await networks('ensureTap', tap, nat.id);
    const info = (): { master?: string; flags: string[]; linkinfo: { info_kind: string; info_data: { type: string; persist: boolean } } } =>
      JSON.parse(host.run('ip', ['-json', '-details', 'link', 'show', 'dev', tap]))[0];
    assert.equal(info().linkinfo.info_kind, 'tun');
    assert.equal(info().linkinfo.info_data.type, 'tap');
    assert.equal(info().linkinfo.info_data.persist, true);
    assert.equal(info().master, bridgeName(nat.id));
    assert.ok(info().flags.includes('UP'));
    assert.equal(host.run('cat', [`/sys/class/net/${tap}/owner`]).trim(), host.run('id', ['-u', 'nobody']).trim());
    await networks('ensureTap', tap, null);
    assert.equal(info().master, undefined);
    await networks('ensureTap', tap, internal.id);
    assert.equal(info().master, bridgeName(internal.id));
    await networks('removeTap', tap);
    assert.equal(host.attempt('ip', ['link', 'show', 'dev', tap]).status, 1);
    await assert.rejects(networks('ensureTap', 'eth0', nat.id), { errorName: 'VM_E_NETWORK_FAILED' });
  });

  test('counters: an adapter\'s and its network\'s move by about what the guest sent, and never go down', async () => {
    const g = guests.get('natg');
    assert.ok(g);
    const attached = [{ tap: g.tap, network: nat.id }];
    await hn.call('counters', 'sample', attached);
    const before = await hn.call<Counters>('counters', 'network', nat.id);
    const count = 20;
    const size = 1000;
    g.ns.run('busybox', ['ping', '-c', String(count), '-i', '0.05', '-s', String(size), '-W', '2', '10.237.0.1'], 20_000);
    await hn.call('counters', 'sample', attached);
    const afterPing = await hn.call<Counters>('counters', 'network', nat.id);
    const frame = size + 8 + 20 + 14; // ICMP, IP and Ethernet headers
    const sent = afterPing.BytesSent - before.BytesSent;
    const received = afterPing.BytesReceived - before.BytesReceived;
    assert.ok(sent >= count * frame && sent < count * frame + 4_000, `sent ${sent}`);
    assert.ok(received >= count * frame && received < count * frame + 4_000, `received ${received}`);
    assert.ok(afterPing.PacketsSent - before.PacketsSent >= count && afterPing.PacketsSent - before.PacketsSent < count + 10);
    const history = await hn.call<HistoryPoint[]>('counters', 'history', nat.id, 'BytesSent');
    assert.equal(history.at(-1)?.value, sent);
    assert.ok(Date.parse(history.at(-1)?.time ?? '') <= Date.now());
    // Detached (no attachment listed), the network keeps what it counted.
    await hn.call('counters', 'sample', [], [nat.id]);
    assert.deepEqual(await hn.call<Counters>('counters', 'network', nat.id), afterPing);
    const saved = JSON.parse(fs.readFileSync(path.join(stateDir, nat.id, 'counters.json'), 'utf8')) as { totals: Counters };
    assert.deepEqual(saved.totals, afterPing, 'the totals are on disk');
    const own = await networks<{ rxBytes: number; txBytes: number }>('counters', g.tap);
    assert.ok(own.rxBytes >= sent);
    countedBefore = afterPing;
  });

  test('a fresh HostNetworks adopts every part as it is, and changes nothing', async () => {
    await hn.close();
    hn = client();
    const pids = [dnsmasqPid(nat), dnsmasqPid(internal)];
    const taps = [...guests.values()].map((g) => ({ name: g.tap, network: g.tap.endsWith('1n0') ? nat.id : g.tap.endsWith('4n0') ? lan.id : internal.id }));
    const reports = await networks<PartReport[]>('reconcile', [nat, internal, lan], taps);
    assert.deepEqual(reports.filter((r) => r.action !== 'adopted'), []);
    assert.equal(reports.filter((r) => r.part === 'tap').length, taps.length);
    assert.deepEqual([dnsmasqPid(nat), dnsmasqPid(internal)], pids);
    assert.deepEqual(await hn.call<Counters>('counters', 'network', nat.id), countedBefore, 'a new process reads the counters back');
    assert.equal((await hn.call<HistoryPoint[]>('counters', 'history', nat.id, 'BytesSent')).length, 3);
  });

  test('watch() starts a killed dnsmasq again and reports it; the leases are kept', async () => {
    const g = guests.get('natg');
    assert.ok(g);
    const leasesBefore = await networks<Lease[]>('leases', nat.id);
    const pid = dnsmasqPid(nat);
    process.kill(pid, 'SIGKILL');
    await networks('watch');
    let restarted: HostNetworksClient['reports'][number] | undefined;
    for (const start = Date.now(); !restarted && Date.now() - start < 10_000;) {
      await new Promise((r) => setTimeout(r, 200));
      restarted = hn.reports.find((r) => r.network === nat.id && r.part === 'dhcp' && r.action === 'restarted');
    }
    assert.ok(restarted, 'a restart is reported');
    assert.notEqual(dnsmasqPid(nat), pid);
    assert.deepEqual(await networks<Lease[]>('leases', nat.id), leasesBefore);
    const again = lease(g, 'natguest');
    assert.equal(again.ip, leasesBefore.find((l) => l.mac === g.mac.toUpperCase())?.address, 'the guest keeps its address');
  });

  test('reconcile makes a deleted bridge again, puts its TAPs back, and removes parts no network names', async () => {
    const g = guests.get('natg');
    assert.ok(g);
    host.run('ip', ['link', 'delete', 'dev', bridgeName(nat.id)]);
    host.run('ip', ['link', 'add', 'vsbrdeadbeef', 'type', 'bridge']);
    host.run('ip', ['tuntap', 'add', 'dev', 'vstdeadbeefn0', 'mode', 'tap']);
    fs.mkdirSync(path.join(stateDir, 'deadbeef-0000-4000-8000-000000000000'));
    const taps = [{ name: g.tap, network: nat.id }, ...['int1', 'int2'].map((label) => ({ name: guests.get(label)?.tap ?? '', network: internal.id })), { name: guests.get('lang')?.tap ?? '', network: lan.id }];
    const reports = await networks<PartReport[]>('reconcile', [nat, internal, lan], taps);
    assert.equal(actions(reports, nat.id).bridge, 'recreated');
    assert.deepEqual(reports.filter((r) => r.action === 'removed').map((r) => r.part).sort(), ['bridge', 'state', 'tap']);
    assert.ok(reports.some((r) => r.part === 'tap' && r.action === 'updated' && r.message.includes(g.tap)));
    assert.equal(host.attempt('ip', ['link', 'show', 'dev', 'vsbrdeadbeef']).status, 1);
    assert.equal(host.attempt('ip', ['link', 'show', 'dev', 'vstdeadbeefn0']).status, 1);
    assert.equal(lease(g, 'natguest').router, '10.237.0.1', 'the guest gets DHCP again through the new bridge');
  });

  test('bad input: unknown host adapters, invalid settings, an adapter another network holds', async () => {
    const spec = (change: Partial<NetworkSpec>): NetworkSpec => ({ ...lan, id: 'a1000004-0000-4000-8000-000000000004', ...change });
    await assert.rejects(networks('apply', spec({ hostAdapter: 'nosuch0' })), { errorName: 'VM_E_HOST_ADAPTER_UNKNOWN' });
    await assert.rejects(networks('apply', spec({ hostAdapter: null })), { errorName: 'VM_E_HOST_ADAPTER_UNKNOWN' });
    await assert.rejects(networks('apply', spec({ hostAdapter: 'lo' })), { errorName: 'VM_E_HOST_ADAPTER_UNKNOWN' });
    await assert.rejects(networks('apply', spec({ hostAdapter: bridgeName(nat.id) })), { errorName: 'VM_E_HOST_ADAPTER_UNKNOWN' });
    await assert.rejects(networks('apply', spec({ hostAdapter: 'lan0' })), (error: { errorName: string; message: string }) => {
      assert.equal(error.errorName, 'VM_E_NETWORK_FAILED');
      assert.match(error.message, new RegExp(bridgeName(lan.id)));
      return true;
    });
    await assert.rejects(networks('apply', { ...nat, dhcp: { ...nat.dhcp, endingAddress: '10.237.1.200' } }), (error: { errorName: string; details: { problems: { field: string }[] } }) => {
      assert.equal(error.errorName, 'VM_E_DHCP_INVALID');
      assert.deepEqual(error.details.problems.map((p) => p.field), ['endingAddress']);
      return true;
    });
    assert.equal(fs.existsSync(path.join(stateDir, 'a1000004-0000-4000-8000-000000000004')), false, 'a refused network leaves no state');
    await assert.rejects(networks('leases', '../../etc'), { errorName: 'VM_E_NETWORK_UNKNOWN' });
  });

  test('changed settings restart the DHCP server; DHCP off stops it and takes the address away', async () => {
    const pid = dnsmasqPid(internal);
    const changed = { ...internal, dhcp: { ...internal.dhcp, serverAddress: '10.237.1.2', startingAddress: '10.237.1.100' } };
    assert.deepEqual(actions(await networks<PartReport[]>('apply', changed), internal.id), { bridge: 'adopted', address: 'updated', rules: 'adopted', dhcp: 'updated' });
    assert.notEqual(dnsmasqPid(internal), pid);
    assert.match(fs.readFileSync(path.join(stateDir, internal.id, 'dnsmasq.conf'), 'utf8'), /dhcp-range=10\.237\.1\.100,/);
    const off = await networks<PartReport[]>('apply', { ...changed, dhcp: { ...changed.dhcp, enabled: false } });
    assert.deepEqual(actions(off, internal.id), { bridge: 'adopted', address: 'updated', rules: 'adopted', dhcp: 'removed' });
    assert.equal(fs.existsSync(path.join(stateDir, internal.id, 'dnsmasq.pid')), false);
    assert.deepEqual(JSON.parse(host.run('ip', ['-json', '-4', 'address', 'show', 'dev', bridgeName(internal.id)]))[0]?.addr_info ?? [], []);
  });

  test('remove takes the bridge, rules, DHCP server and state away, and gives the host adapter its address back', async () => {
    const natPid = dnsmasqPid(nat);
    await networks('remove', nat.id);
    await networks('remove', lan.id);
    for (const spec of [nat, lan]) {
      assert.equal(host.attempt('ip', ['link', 'show', 'dev', bridgeName(spec.id)]).status, 1);
      assert.equal(fs.existsSync(path.join(stateDir, spec.id)), false);
    }
    assert.equal(host.attempt('nft', ['list', 'table', 'ip', `vserver_${bridgeName(nat.id)}`]).status, 1);
    assert.ok(!fs.existsSync(`/proc/${natPid}`) || fs.readFileSync(`/proc/${natPid}/stat`, 'utf8').split(') ')[1].startsWith('Z'), 'its dnsmasq ended');
    const lan0 = JSON.parse(host.run('ip', ['-json', '-4', 'address', 'show', 'dev', 'lan0']))[0];
    assert.equal(lan0.master, undefined);
    assert.deepEqual(lan0.addr_info.map((a: { local: string }) => a.local), ['192.168.77.2']);
    assert.ok(pings(host, '192.168.77.1'), 'the host reaches its LAN on lan0 again');
    assert.match(host.run('ip', ['-4', 'route', 'show', '10.50.0.0/16']), /via 192\.168\.77\.1 dev lan0/);
    const guestTap = JSON.parse(host.run('ip', ['-json', 'link', 'show', 'dev', guests.get('natg')?.tap ?? '']))[0];
    assert.equal(guestTap.master, undefined, 'TAPs stay, in no bridge');
  });
});
