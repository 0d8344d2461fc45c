// Virtual networks with real guests: vserverd runs in its own network namespace (every bridge,
// TAP, dnsmasq and nft rule it makes lives there), the test guests (test/guest) boot under QEMU
// through the API, and the test talks to them over their serial consoles. At most two guests
// run at once. Also: the guest's DHCP client against a hand-made bridge with bare QEMU, and the
// API's refusals of bad network settings (no guest).
//
// Namespaces (all vsT-guestnet-*): "host" (vserverd, its workers and QEMUs), "lan" (a LAN with
// its own dnsmasq and httpd, reached by a veth a host-connected network bridges to), "far" (an
// httpd reached through a NAT network: it has no route back to the guests, so a reply proves
// masquerading), "bare" (the hand-made bridge of the first test).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isAlive } from '../host/process.js';
import {
  type ApiGuest, createApiGuest, type GuestConsole, type Ref, startApiGuest, turnOffApiGuest,
} from './helpers/api-guests.js';
import {
  GUEST_LEASE_LOST_PREFIX, GUEST_READY_MARKER, killAllQemu, leasePattern, parseGuestLeases, startQemu, testGuest,
} from './helpers/guest.js';
import { makeBridge, makeTap, startDnsmasq, startHttpd } from './helpers/handmade-net.js';
import { Netns, removeLeftoverNamespaces, vethPair } from './helpers/netns.js';
import { rejectsWith, TestServer } from './helpers/server.js';
import { makeTempDir, removeDir } from './helpers/vhd-fixtures.js';
import { delay, waitFor } from './helpers/wait.js';

const LABEL = 'guestnet';
const MiB = 1024 * 1024;

interface Lease { mac: string; address: string; hostname: string; expires: string }
interface LoggedEvent { id: number; category: string; message: string }

/** Lab: the internal network of the guest-to-guest tests, DHCP on, an explicit range. */
const LAB = { network: '10.88.1.0', mask: '255.255.255.0', start: '10.88.1.100', end: '10.88.1.120', server: '10.88.1.1' };
/** The LAN behind the host-connected network. */
const LAN = { cidr: '192.168.77.1/24', address: '192.168.77.1', start: '192.168.77.100', end: '192.168.77.150' };
/** The far side of the NAT network: the host namespace holds .1, the far namespace .2. */
const FAR = { host: '198.51.100.1', far: '198.51.100.2' };

const dir = makeTempDir('networks-vm');
// QEMU's unprivileged user crosses it to its folder in the run folder.
fs.chmodSync(dir, 0o711);
const namespaces: Netns[] = [];
const consoles: GuestConsole[] = [];
const children: Array<{ stop(): void }> = [];
let hostNs: Netns;
let server: TestServer;
let lab: Ref;
let alpha: ApiGuest;
let bravo: ApiGuest;
let charlie: ApiGuest;

/** The labels of this test's namespaces (vsT-guestnet-<label>-<pid>-<random>). */
const NAMESPACES = ['host', 'bare', 'lan', 'far'] as const;

function netns(label: (typeof NAMESPACES)[number]): Netns {
  const ns = Netns.create(`${LABEL}-${label}`);
  namespaces.push(ns);
  return ns;
}

async function createNetwork(name: string, kind: string, hostAdapter?: string): Promise<Ref> {
  const ref = await server.call<Ref>('VirtualServer.CreateVirtualNetwork', { name, kind, ...(hostAdapter ? { hostAdapter } : {}) });
  assert.match(ref.$ref, /^VirtualNetwork\/[0-9a-f-]{36}$/);
  return ref;
}

function networkId(network: Ref): string {
  return network.$ref.slice('VirtualNetwork/'.length);
}

async function dhcpOf(network: Ref): Promise<string> {
  return (await server.call<Ref>('VirtualNetwork.get_DHCPVirtualNetworkServer', { this: network.$ref })).$ref;
}

async function leases(network: Ref): Promise<Lease[]> {
  return server.call<Lease[]>('DHCPVirtualNetworkServer.get_Leases', { this: await dhcpOf(network) });
}

/** The DHCP server's settings as its getters read them. */
async function dhcpSettings(network: Ref): Promise<Record<string, unknown>> {
  const dhcp = await dhcpOf(network);
  const names = ['IsEnabled', 'NetworkAddress', 'NetworkMask', 'StartingIPAddress', 'EndingIPAddress', 'ServerIPAddress', 'DefaultGatewayAddress'];
  const values = await Promise.all(names.map((n) => server.call(`DHCPVirtualNetworkServer.get_${n}`, { this: dhcp })));
  return Object.fromEntries(names.map((n, i) => [n, values[i]]));
}

async function attach(vm: ApiGuest, network: Ref): Promise<void> {
  await server.call('NetworkAdapter.AttachToVirtualNetwork', { this: vm.adapter, network: network.$ref });
}

async function counters(ref: string): Promise<{ sent: number; received: number }> {
  const sent = await server.call<number>(`${ref.split('/')[0]}.get_BytesSent`, { this: ref });
  const received = await server.call<number>(`${ref.split('/')[0]}.get_BytesReceived`, { this: ref });
  return { sent, received };
}

function ipToNumber(ip: string): number {
  return ip.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

function inRange(address: string, start: string, end: string): boolean {
  return ipToNumber(address) >= ipToNumber(start) && ipToNumber(address) <= ipToNumber(end);
}

async function start(vm: ApiGuest): Promise<GuestConsole> {
  const guest = await startApiGuest(server, vm);
  consoles.push(guest);
  return guest;
}

async function turnOff(guest: GuestConsole): Promise<void> {
  guest.close();
  await turnOffApiGuest(server, guest.vm);
}

/** Drops the guest's lease and asks for a new one (udhcpc: SIGUSR2 releases, SIGUSR1 renews); returns the new lease. */
async function renewLease(guest: GuestConsole): Promise<{ address: string; mac: string }> {
  // Release first and let udhcpc act on it: signalled at once, it may take the renewal (USR1)
  // before the release (USR2) and then stay released.
  const released = guest.serial.text.length;
  guest.serial.type('for p in $(pidof udhcpc); do kill -USR2 $p; done\n');
  await guest.serial.waitFor(GUEST_LEASE_LOST_PREFIX, 10_000, released).catch(() => { /* a guest without an address prints nothing */ });
  const from = guest.serial.text.length;
  guest.serial.type('for p in $(pidof udhcpc); do kill -USR1 $p; done\n');
  return guest.lease(from, 60_000);
}

interface Transfer {
  sent: string;
  received: string;
  /** Whether the sender was still sending when `during` had run. */
  runningAfterDuring: boolean;
}

/**
 * Sends `mib` MiB from `from` to `to` with busybox nc, the receiver hashing the stream: random
 * data from a file (hashed by the sender), or zeros streamed from /dev/zero (hashed here), which
 * needs no room in the guest. `during` runs while the transfer is under way.
 */
async function transfer(from: GuestConsole, to: GuestConsole, toAddress: string, mib: number, data: 'random' | 'zeros', during?: () => Promise<void>): Promise<Transfer> {
  const port = 5000 + Math.floor(Math.random() * 1000);
  let sent: string;
  let source: string;
  if (data === 'random') {
    await from.run(`dd if=/dev/urandom of=/tmp/send bs=1M count=${mib} 2>/dev/null`, 120_000);
    sent = await from.sha256('/tmp/send');
    source = '</tmp/send';
  } else {
    const hash = crypto.createHash('sha256');
    for (let i = 0; i < mib; i++) hash.update(Buffer.alloc(MiB));
    sent = hash.digest('hex');
    source = `dd if=/dev/zero bs=1M count=${mib} 2>/dev/null |`;
  }
  // "& true": the command is followed by "; echo marker", and "&;" is a syntax error.
  await to.run(`rm -f /tmp/recv.sum; nc -l -p ${port} -e sh -c 'sha256sum >/tmp/recv.sum' </dev/null & true`);
  await delay(500);
  let finished = false;
  const command = data === 'random' ? `nc ${toAddress} ${port} ${source}` : `${source} nc ${toAddress} ${port}`;
  const sending = from.run(`${command}; echo nc-exit-$?`, 600_000).finally(() => { finished = true; });
  let runningAfterDuring = true;
  if (during) {
    await during();
    runningAfterDuring = !finished;
  }
  const output = await sending;
  assert.match(output, /nc-exit-0/, `the sender's nc: ${output}`);
  let received = '';
  for (let i = 0; i < 20 && !/^[0-9a-f]{64}/.test(received); i++) {
    received = (await to.run('cat /tmp/recv.sum 2>/dev/null')).trim();
    if (!/^[0-9a-f]{64}/.test(received)) await delay(500);
  }
  if (data === 'random') await from.run('rm -f /tmp/send');
  return { sent, received: received.slice(0, 64), runningAfterDuring };
}

/** Waits until a network's sampled counters have been still for one sample interval (5 s) and more. */
async function quietCounters(ref: string): Promise<{ sent: number; received: number }> {
  let before = await counters(ref);
  for (let i = 0; i < 6; i++) {
    await delay(6000);
    const now = await counters(ref);
    if (now.sent === before.sent && now.received === before.received) return now;
    before = now;
  }
  assert.fail(`the counters of ${ref} did not settle`);
}

async function eventsSince(since: number): Promise<LoggedEvent[]> {
  return server.call<LoggedEvent[]>('VirtualServer.GetEvents', { since, limit: 1000 });
}

async function lastEventId(): Promise<number> {
  const newest = await server.call<LoggedEvent[]>('VirtualServer.GetEvents', { limit: 1, newestFirst: true });
  return newest[0]?.id ?? 0;
}

before(async () => {
  for (const label of NAMESPACES) removeLeftoverNamespaces(`${LABEL}-${label}`);
  hostNs = netns('host');
  server = await TestServer.start({ netns: hostNs, dataDir: path.join(dir, 'data'), runDir: path.join(dir, 'run') });
});

after(async () => {
  for (const c of consoles) c.close();
  if (server && server.process.exitCode === null && server.process.signalCode === null) {
    for (const vm of [alpha, bravo, charlie]) if (vm) await turnOffApiGuest(server, vm).catch(() => {});
    await server.stop();
  }
  for (const child of children) child.stop();
  await killAllQemu();
  for (const ns of namespaces) ns.remove();
  removeDir(dir);
});

describe('the test guest\'s DHCP client', { timeout: 180_000 }, () => {
  it('gets a lease from a dnsmasq on a hand-made bridge, prints it, and pings the bridge (bare QEMU)', async () => {
    const ns = netns('bare');
    makeBridge(ns, 'br0', '10.99.0.1/24');
    makeTap(ns, 'tap0', 'br0');
    const dnsmasq = await startDnsmasq(ns, 'br0', { start: '10.99.0.50', end: '10.99.0.60', mask: '255.255.255.0', leaseSeconds: 3600, router: null }, path.join(dir, 'bare'));
    children.push(dnsmasq);
    const guest = testGuest();
    const mac = '00:03:ff:42:00:01';
    const vm = startQemu(['-kernel', guest.kernel, '-initrd', guest.initrd, '-append', guest.append,
      '-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no', '-device', `tulip,netdev=n0,mac=${mac}`], 150_000, ns);
    try {
      const ready = await vm.waitFor(GUEST_READY_MARKER, 90_000);
      const line = await vm.waitFor(leasePattern('eth0'), 60_000, ready.index);
      const [lease] = parseGuestLeases(line.text);
      assert.equal(lease.mac, mac);
      assert.ok(inRange(lease.address, '10.99.0.50', '10.99.0.60'), `lease ${lease.address} in the range`);
      assert.ok(dnsmasq.leases().some((l) => l.includes(mac) && l.includes(lease.address)), `dnsmasq's leases: ${dnsmasq.leases().join('; ')}`);
      const from = vm.output().length;
      vm.type('ping -c 3 -i 0.2 10.99.0.1 | grep -c "bytes from"; echo ping-done\n');
      const done = await vm.waitFor(/(\d+)\r?\nping-done/, 30_000, from);
      assert.equal(/(\d+)\r?\nping-done/.exec(done.text)![1], '3', 'three replies from the bridge');
    } finally {
      await vm.kill();
      dnsmasq.stop();
    }
  });
});

describe('networks through the API of a vserverd in its own namespace', { timeout: 1_500_000 }, () => {
  it('refuses bad settings with named errors and changes nothing', async () => {
    lab = await createNetwork('Lab', 'internal');
    const dhcp = await dhcpOf(lab);
    await server.call('DHCPVirtualNetworkServer.ConfigureDHCPServer', {
      this: dhcp, network: LAB.network, networkMask: LAB.mask, startingIPAddress: LAB.start, endingIPAddress: LAB.end, serverIPAddress: LAB.server,
    });
    await server.call('DHCPVirtualNetworkServer.put_IsEnabled', { this: dhcp, value: true });
    const other = await createNetwork('Other', 'internal');
    const otherBefore = await dhcpSettings(other);
    const labBefore = await dhcpSettings(lab);
    assert.equal(labBefore.StartingIPAddress, LAB.start);
    const otherDhcp = await dhcpOf(other);
    const configure = (settings: Record<string, unknown>): Promise<unknown> => server.call('DHCPVirtualNetworkServer.ConfigureDHCPServer', {
      this: otherDhcp, network: '10.88.2.0', networkMask: '255.255.255.0', startingIPAddress: '10.88.2.10', endingIPAddress: '10.88.2.20', serverIPAddress: '10.88.2.1', ...settings,
    });

    const overlap = await rejectsWith(configure({ network: '10.88.1.0', startingIPAddress: '10.88.1.200', endingIPAddress: '10.88.1.210', serverIPAddress: '10.88.1.2' }), 'VM_E_DHCP_OVERLAP');
    assert.match(overlap.message, /Lab/, 'the error names the network it overlaps');
    const outside = await rejectsWith(configure({ startingIPAddress: '10.89.0.10' }), 'VM_E_DHCP_INVALID');
    const problems = (e: typeof outside): Array<{ field: string; message: string }> => e.data.problems as Array<{ field: string; message: string }>;
    assert.ok(problems(outside).some((p) => /start/i.test(p.field)), `problems: ${JSON.stringify(outside.data.problems)}`);
    const mask = await rejectsWith(configure({ networkMask: '255.0.255.0' }), 'VM_E_DHCP_INVALID');
    assert.ok(problems(mask).some((p) => /mask/i.test(p.field)), `problems: ${JSON.stringify(mask.data.problems)}`);
    assert.deepEqual(await dhcpSettings(other), otherBefore, 'Other\'s DHCP settings are unchanged');
    assert.deepEqual(await dhcpSettings(lab), labBefore, 'Lab\'s DHCP settings are unchanged');

    const networks = await server.call<Ref[]>('VirtualServer.get_VirtualNetworks');
    await rejectsWith(createNetwork('Lab', 'internal'), 'VM_E_NETWORK_NAME_IN_USE');
    await rejectsWith(createNetwork('Nowhere', 'host', 'vsTnosuch0'), 'VM_E_HOST_ADAPTER_UNKNOWN');
    assert.deepEqual(await server.call<Ref[]>('VirtualServer.get_VirtualNetworks'), networks, 'no network was added');
    assert.equal(await server.call('VirtualServer.FindVirtualNetwork', { name: 'Nowhere' }), null);

    alpha = await createApiGuest(server, 'alpha');
    bravo = await createApiGuest(server, 'bravo');
    charlie = await createApiGuest(server, 'charlie');
    await server.call('NetworkAdapter.put_IsEthernetAddressDynamic', { this: alpha.adapter, value: false });
    await server.call('NetworkAdapter.put_EthernetAddress', { this: alpha.adapter, value: '00:03:FF:12:34:56' });
    const bravoMac = await server.call<string>('NetworkAdapter.get_EthernetAddress', { this: bravo.adapter });
    await server.call('NetworkAdapter.put_IsEthernetAddressDynamic', { this: bravo.adapter, value: false });
    await rejectsWith(server.call('NetworkAdapter.put_EthernetAddress', { this: bravo.adapter, value: '00:03:ff:12:34:56' }), 'VM_E_MAC_IN_USE');
    assert.equal(await server.call('NetworkAdapter.get_EthernetAddress', { this: bravo.adapter }), bravoMac, 'bravo keeps its address');
    await rejectsWith(server.call('NetworkAdapter.put_EthernetAddress', { this: bravo.adapter, value: '01:00:5E:00:00:01' }), 'VM_E_MAC_INVALID');

    await attach(alpha, lab);
    const inUse = await rejectsWith(server.call('VirtualServer.DeleteVirtualNetwork', { network: lab.$ref }), 'VM_E_NETWORK_IN_USE');
    assert.deepEqual(inUse.data.adapters, [alpha.adapter]);
    assert.deepEqual(await server.call('VirtualServer.FindVirtualNetwork', { name: 'Lab' }), lab, 'Lab is still there');
    assert.ok(fs.existsSync(await server.call<string>('VirtualNetwork.get_File', { this: lab.$ref })), 'its .vnc is still there');
    await attach(charlie, other);
  });

  let a: GuestConsole;
  let b: GuestConsole;
  let aLease: { address: string; mac: string };
  let bLease: { address: string; mac: string };

  it('two guests on an internal network get leases in its range (the guests and get_Leases agree), ping each other and move 10 MiB intact', async () => {
    await attach(bravo, lab);
    a = await start(alpha);
    aLease = await a.lease(0, 60_000);
    b = await start(bravo);
    bLease = await b.lease(0, 60_000);
    for (const [name, lease] of [['alpha', aLease], ['bravo', bLease]] as const) {
      assert.ok(inRange(lease.address, LAB.start, LAB.end), `${name}'s lease ${lease.address} is in ${LAB.start}-${LAB.end}`);
    }
    assert.notEqual(aLease.address, bLease.address);
    assert.equal(aLease.mac.toUpperCase(), '00:03:FF:12:34:56', 'alpha has its static address');
    const served = await leases(lab);
    for (const lease of [aLease, bLease]) {
      assert.ok(served.some((l) => l.mac.toLowerCase() === lease.mac.toLowerCase() && l.address === lease.address), `get_Leases has ${lease.mac} ${lease.address}: ${JSON.stringify(served)}`);
    }
    assert.equal(await a.pingReplies(bLease.address), 3, 'alpha reaches bravo');
    assert.equal(await b.pingReplies(aLease.address), 3, 'bravo reaches alpha');
    const moved = await transfer(a, b, bLease.address, 10, 'random');
    assert.equal(moved.received, moved.sent, 'the sha256 of what bravo received is that of what alpha sent');
  });

  it('detaching a running guest stops its traffic, attaching restores it; the counters move by about what was sent', async () => {
    await server.call('NetworkAdapter.DetachFromVirtualNetwork', { this: bravo.adapter });
    assert.equal(await server.call('NetworkAdapter.get_VirtualNetwork', { this: bravo.adapter }), null);
    assert.equal(await a.pingReplies(bLease.address, 5), 0, 'no replies from the detached guest');
    await attach(bravo, lab);
    let replies = 0;
    for (let i = 0; i < 5 && replies === 0; i++) replies = await a.pingReplies(bLease.address);
    assert.ok(replies > 0, 'replies again once attached');

    const labBefore = await quietCounters(lab.$ref);
    const before = await counters(alpha.adapter);
    const moved = await transfer(a, b, bLease.address, 4, 'random');
    assert.equal(moved.received, moved.sent);
    // Counters are sampled: wait until alpha's adapter shows the 4 MiB.
    const delta = async (): Promise<number> => { const now = await counters(alpha.adapter); return Math.max(now.sent - before.sent, now.received - before.received); };
    const deadline = Date.now() + 20_000;
    let moving = await delta();
    while (moving < 4 * MiB && Date.now() < deadline) {
      await delay(1000);
      moving = await delta();
    }
    assert.ok(moving >= 4 * MiB && moving <= 4 * MiB * 1.25, `alpha's adapter counted ${moving} bytes for a 4 MiB transfer`);
    // The network counts what its guests sent and received (alpha's 4 MiB out, bravo's in).
    const labNow = await quietCounters(lab.$ref);
    for (const [name, delta] of [['sent', labNow.sent - labBefore.sent], ['received', labNow.received - labBefore.received]] as const) {
      assert.ok(delta >= 4 * MiB && delta <= 4 * MiB * 1.25, `Lab counted ${delta} bytes ${name} for a 4 MiB transfer`);
    }
  });

  it('kill -9 of vserverd during a transfer: the transfer completes; after a restart the network, its leases and counters are there', async () => {
    const countersBefore = await counters(lab.$ref);
    const moved = await transfer(a, b, bLease.address, 64, 'zeros', async () => {
      await delay(1500);
      await server.stop('SIGKILL');
    });
    assert.ok(moved.runningAfterDuring, 'vserverd was killed while the transfer ran');
    assert.equal(moved.received, moved.sent, 'the transfer completed intact with vserverd gone');
    server = await TestServer.start({ netns: hostNs, dataDir: server.dataDir, runDir: server.runDir });
    assert.deepEqual(await server.call('VirtualServer.FindVirtualNetwork', { name: 'Lab' }), lab);
    const served = await leases(lab);
    for (const lease of [aLease, bLease]) {
      assert.ok(served.some((l) => l.mac.toLowerCase() === lease.mac.toLowerCase() && l.address === lease.address), `after the restart get_Leases has ${lease.address}: ${JSON.stringify(served)}`);
    }
    const countersAfter = await counters(lab.$ref);
    assert.ok(countersAfter.sent >= countersBefore.sent && countersAfter.received >= countersBefore.received,
      `Lab's counters survive the restart: ${JSON.stringify(countersBefore)} then ${JSON.stringify(countersAfter)}`);
    assert.equal(await a.pingReplies(bLease.address), 3, 'the guests still reach each other');
  });

  it('a killed dnsmasq is noticed and restarted, the event log says so, and the leases survive', async () => {
    const pidFile = path.join(server.dataDir, 'networks', networkId(lab), 'dnsmasq.pid');
    const oldPid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    assert.ok(isAlive(oldPid), `dnsmasq (${oldPid}) runs`);
    const since = await lastEventId();
    process.kill(oldPid, 'SIGKILL');
    let newPid = 0;
    await waitFor('vserverd to restart dnsmasq', () => {
      try {
        newPid = Number(fs.readFileSync(pidFile, 'utf8').trim());
      } catch {
        return false;
      }
      return newPid !== oldPid && isAlive(newPid);
    }, 60_000, 200);
    let logged: LoggedEvent[] = [];
    const deadline = Date.now() + 15_000;
    while (!logged.some((e) => /network/i.test(e.category) && /DHCP/.test(e.message)) && Date.now() < deadline) {
      logged = await eventsSince(since);
      await delay(300);
    }
    assert.ok(logged.some((e) => /network/i.test(e.category) && /DHCP/.test(e.message)), `the event log says so: ${JSON.stringify(logged)}`);
    const served = await leases(lab);
    for (const lease of [aLease, bLease]) assert.ok(served.some((l) => l.address === lease.address), `lease ${lease.address} survives: ${JSON.stringify(served)}`);
    // The new dnsmasq serves: bravo asks again and keeps its address.
    const renewed = await renewLease(b);
    assert.equal(renewed.address, bLease.address);
  });

  it('a guest on another network reaches neither of them (even with an address in their subnet)', async () => {
    await turnOff(b);
    const c = await start(charlie);
    // No DHCP on Other: an address in Lab's subnet by hand, so that only the bridge separates them.
    await c.run('killall udhcpc; ip addr flush dev eth0; ip addr add 10.88.1.200/24 dev eth0');
    assert.equal(await c.pingReplies(aLease.address, 5), 0, 'charlie does not reach alpha');
    assert.equal(await a.pingReplies('10.88.1.200', 3), 0, 'alpha does not reach charlie');
    await turnOff(a);
    b = await start(bravo);
    const lease = await b.lease(0, 60_000);
    assert.equal(await c.pingReplies(lease.address, 5), 0, 'charlie does not reach bravo');
    await turnOff(c);
  });

  it('host-connected: the guest gets its lease from the LAN\'s dnsmasq and fetches a page from its httpd', async () => {
    const lan = netns('lan');
    vethPair(hostNs, 'vsTlan0', lan, 'lan0');
    lan.run('ip', ['addr', 'add', LAN.cidr, 'dev', 'lan0']);
    const dnsmasq = await startDnsmasq(lan, 'lan0', { start: LAN.start, end: LAN.end, mask: '255.255.255.0', leaseSeconds: 3600, router: null }, path.join(dir, 'lan'));
    children.push(dnsmasq);
    const site = path.join(dir, 'lan-site');
    fs.mkdirSync(site, { recursive: true });
    const token = `lan-page-${Date.now()}`;
    fs.writeFileSync(path.join(site, 'index.html'), `${token}\n`);
    const httpd = await startHttpd(lan, LAN.address, 80, site);
    children.push(httpd);

    const interfaces = (await server.call<{ networkInterfaces: Array<{ name: string }> }>('VirtualServer.get_HostInfo')).networkInterfaces;
    assert.ok(interfaces.some((i) => i.name === 'vsTlan0'), `get_HostInfo lists vsTlan0: ${JSON.stringify(interfaces)}`);
    const hostNet = await createNetwork('Host LAN', 'host', 'vsTlan0');
    await attach(bravo, hostNet);
    const lease = await renewLease(b);
    assert.ok(inRange(lease.address, LAN.start, LAN.end), `the lease ${lease.address} is from the LAN's range`);
    assert.ok(dnsmasq.leases().some((l) => l.includes(lease.address)), `the LAN's dnsmasq leased it: ${dnsmasq.leases().join('; ')}`);
    const page = await b.run(`timeout 20 wget -q -O - http://${LAN.address}/index.html`, 30_000);
    assert.match(page, new RegExp(token));
  });

  it('NAT: the guest fetches a page from a namespace routed via the host, seen there as the host (masquerade)', async () => {
    const far = netns('far');
    vethPair(hostNs, 'vsTfar0', far, 'far0');
    hostNs.run('ip', ['addr', 'add', `${FAR.host}/24`, 'dev', 'vsTfar0']);
    far.run('ip', ['addr', 'add', `${FAR.far}/24`, 'dev', 'far0']);
    const site = path.join(dir, 'far-site');
    fs.mkdirSync(site, { recursive: true });
    const token = `far-page-${Date.now()}`;
    fs.writeFileSync(path.join(site, 'index.html'), `${token}\n`);
    const httpd = await startHttpd(far, FAR.far, 80, site);
    children.push(httpd);

    const nat = await createNetwork('Outside', 'nat');
    const settings = await dhcpSettings(nat);
    assert.equal(settings.IsEnabled, true, 'DHCP is on for a NAT network');
    await attach(bravo, nat);
    const lease = await renewLease(b);
    assert.ok(inRange(lease.address, String(settings.StartingIPAddress), String(settings.EndingIPAddress)), `the lease ${lease.address} is from the NAT network's range`);
    const page = await b.run(`timeout 20 wget -q -O - http://${FAR.far}/index.html`, 30_000);
    assert.match(page, new RegExp(token), 'the page arrived (the far side has no route to the guests)');
    await waitFor('the httpd to log the request', () => httpd.log().includes('index.html'), 5_000, 100);
    assert.match(httpd.log(), new RegExp(`${FAR.host.replaceAll('.', '\\.')}\\b`), `the far side saw the host's address: ${httpd.log()}`);
    assert.doesNotMatch(httpd.log(), new RegExp(lease.address.replaceAll('.', '\\.')), 'not the guest\'s');
    await turnOff(b);
  });
});
