// Guest-to-guest networking on one of vserver's networks against the same two guests on a Linux
// bridge and TAPs made by hand (the peer), and the API's time to create a network and to attach
// an adapter. Everything runs in network namespaces made here (vsT-guestnet-bench-*).
//
// Both sides boot the test guest (test/guest) from its VHD on SCSI with one tulip adapter, 128 MB,
// TCG. Ours: vserverd in a namespace makes the network (internal, DHCP on), the workers run the
// guests. The peer: QEMU started by hand with the worker's own arguments (vmm/qemu-args.ts: the
// same `-netdev tap`, the disk opened by QEMU's vpc driver) on TAPs of a hand-made bridge with a
// dnsmasq. Throughput: NET_BENCH_MIB MiB (default 32) of zeros through busybox nc, timed by the
// sending guest's clock (/proc/uptime, 10 ms); round trip: busybox ping -c 20 -i 0.2, its
// average; each the median of NET_BENCH_RUNS (default 3) rounds, the sides alternating, each
// round on newly booted guests.
// Goals: throughput >= 0.95x the peer; round trip <= 1.05x the peer.

import fs from 'node:fs';
import path from 'node:path';
import { createApiGuest, type GuestConsole, type Ref, startApiGuest, turnOffApiGuest } from '../test/helpers/api-guests.js';
import { GUEST_READY_MARKER, runQemu, type SerialQemu, testGuest } from '../test/helpers/guest.js';
import { makeBridge, makeTap, startDnsmasq } from '../test/helpers/handmade-net.js';
import { Netns, removeLeftoverNamespaces } from '../test/helpers/netns.js';
import { TestServer } from '../test/helpers/server.js';
import { parseVmConfig } from '../vmm/config.js';
import { qemuArgs } from '../vmm/qemu-args.js';
import { qemuUser } from '../vmm/worker/user.js';
import { type BenchTable, formatMs, measured, median, now, withTempDir } from './lib.js';

const LABEL = 'guestnet-bench';
const MIB = Number(process.env.NET_BENCH_MIB ?? 32);
const RUNS = Number(process.env.NET_BENCH_RUNS ?? 3);
const API_SAMPLES = 50;
const PINGS = 20;
const BOOT_TIMEOUT_MS = 120_000;
const PORT = 5001;
/** Both sides' guests get their addresses by DHCP from this range. */
const SUBNET = { network: '10.66.0.0', mask: '255.255.255.0', server: '10.66.0.1', start: '10.66.0.100', end: '10.66.0.120' };

/** What both sides offer the measurements: a shell in each of the two guests and their addresses. */
interface Shell { run(command: string, timeoutMs?: number): Promise<string> }
interface Pair { shells: [Shell, Shell]; addresses: [string, string] }
interface Figures { mibPerSecond: number; rttMs: number }

/** A shell over a bare QEMU's COM1 on stdio (carriage returns removed), like SerialReader.run. */
function shellOf(qemu: SerialQemu): Shell {
  return {
    async run(command, timeoutMs = 120_000) {
      const tag = `R${Math.random().toString(36).slice(2, 8)}`;
      const from = qemu.output().length;
      qemu.type(`echo "${tag}"-begin; ${command}; echo "${tag}"-end\n`);
      const begin = await qemu.waitFor(`${tag}-begin`, timeoutMs, from);
      const end = await qemu.waitFor(`${tag}-end`, timeoutMs, begin.index + begin.text.length);
      return qemu.output().slice(begin.index + begin.text.length, end.index).replace(/\r/g, '');
    },
  };
}

const LEASE_LINE = /VSERVER-LEASE eth0 (\S+) /;

/** Sends MIB MiB from the first guest to the second; MiB/s by the sender's clock. */
async function throughput(pair: Pair): Promise<number> {
  const [sender, receiver] = pair.shells;
  // "& true": run() appends "; echo marker", and "&;" is a syntax error.
  await receiver.run(`nc -l -p ${PORT} -e sh -c 'cat >/dev/null' </dev/null & true`);
  await new Promise((r) => setTimeout(r, 300));
  const out = await sender.run(
    `read a _ </proc/uptime; dd if=/dev/zero bs=1M count=${MIB} 2>/dev/null | nc ${pair.addresses[1]} ${PORT}; read b _ </proc/uptime; echo "XFER $a $b"`, 600_000);
  const match = /XFER (\d+\.\d+) (\d+\.\d+)/.exec(out);
  if (!match) throw new Error(`no timing from the sender: ${out}`);
  const seconds = Number(match[2]) - Number(match[1]);
  return MIB / Math.max(seconds, 0.01);
}

async function roundTrip(pair: Pair): Promise<number> {
  const out = await pair.shells[0].run(`ping -c ${PINGS} -i 0.2 ${pair.addresses[1]} | tail -1`, 60_000);
  const match = /= [\d.]+\/([\d.]+)\//.exec(out);
  if (!match) throw new Error(`ping printed: ${out}`);
  return Number(match[1]);
}

/** One sample of each figure between the pair. */
async function measure(pair: Pair): Promise<Figures> {
  return { mibPerSecond: await throughput(pair), rttMs: await roundTrip(pair) };
}

/** A side of the comparison: its network set up once, its two guests booted and halted per round. */
interface Side {
  boot(): Promise<Pair>;
  halt(): Promise<void>;
  close(): Promise<void>;
}

/** The peer: two bare QEMUs with the worker's arguments on TAPs of a hand-made bridge with a dnsmasq. */
async function peerSide(dir: string): Promise<Side> {
  const ns = Netns.create(`${LABEL}-peer`);
  let qemus: SerialQemu[] = [];
  try {
    makeBridge(ns, 'br0', `${SUBNET.server}/24`);
    const dnsmasq = await startDnsmasq(ns, 'br0', { start: SUBNET.start, end: SUBNET.end, mask: SUBNET.mask, leaseSeconds: 86400, router: null }, path.join(dir, 'peer'));
    const argsOf = [0, 1].map((i) => {
      makeTap(ns, `tap${i}`, 'br0');
      const disk = path.join(dir, `peer-${i}.vhd`);
      fs.copyFileSync(testGuest().bootVhd, disk);
      const config = parseVmConfig({
        name: `peer-${i}`, memoryMB: 128, engine: 'tcg', bootOrder: ['disk'],
        scsi: [{ disks: [{ target: 0, path: disk }] }], networkAdapters: [{ model: 'tulip', mac: `00:03:FF:66:00:0${i + 1}`, network: null }],
      }, dir);
      return qemuArgs({
        config, engine: 'tcg', qmpSocket: path.join(dir, `peer-${i}-qmp.sock`), vncSocket: path.join(dir, `peer-${i}-vnc.sock`),
        taps: [`tap${i}`], incoming: false, runAs: qemuUser(() => {})?.name ?? null,
        disks: new Map([['scsi0-0', { kind: 'vhd-file' as const, path: disk }]]),
      }).filter((a) => a !== '-S');
    });
    const halt = async (): Promise<void> => {
      await Promise.all(qemus.map((q) => q.kill()));
      qemus = [];
    };
    return {
      async boot() {
        const addresses: string[] = [];
        for (const args of argsOf) {
          const qemu = runQemu(args, 30 * 60_000, ns);
          qemus.push(qemu);
          const ready = await qemu.waitFor(GUEST_READY_MARKER, BOOT_TIMEOUT_MS);
          const lease = await qemu.waitFor(LEASE_LINE, 60_000, ready.index);
          addresses.push(LEASE_LINE.exec(lease.text)![1]);
        }
        return { shells: [shellOf(qemus[0]), shellOf(qemus[1])], addresses: [addresses[0], addresses[1]] };
      },
      halt,
      async close() {
        await halt();
        dnsmasq.stop();
        ns.remove();
      },
    };
  } catch (e) {
    await Promise.all(qemus.map((q) => q.kill()));
    ns.remove();
    throw e;
  }
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

interface OurSide extends Side {
  /** Times attaching the first guest's adapter (after an untimed detach), its VM running. */
  timeAttach(): Promise<number[]>;
  /** Times creating internal networks (deleted afterwards), no guest running. */
  timeCreate(): Promise<number[]>;
}

/** Ours: vserverd in a namespace, one internal network with DHCP, two guests through the API. */
async function ourSide(dir: string): Promise<OurSide> {
  const ns = Netns.create(`${LABEL}-ours`);
  let server: TestServer | null = null;
  let consoles: GuestConsole[] = [];
  try {
    server = await TestServer.start({ netns: ns, dataDir: path.join(dir, 'data'), runDir: path.join(dir, 'run') });
    const srv = server;
    const network = await srv.call<Ref>('VirtualServer.CreateVirtualNetwork', { name: 'Bench', kind: 'internal' });
    const dhcp = (await srv.call<Ref>('VirtualNetwork.get_DHCPVirtualNetworkServer', { this: network.$ref })).$ref;
    await srv.call('DHCPVirtualNetworkServer.ConfigureDHCPServer', {
      this: dhcp, network: SUBNET.network, networkMask: SUBNET.mask, startingIPAddress: SUBNET.start, endingIPAddress: SUBNET.end, serverIPAddress: SUBNET.server,
    });
    await srv.call('DHCPVirtualNetworkServer.put_IsEnabled', { this: dhcp, value: true });
    const vms = [await createApiGuest(srv, 'bench-a'), await createApiGuest(srv, 'bench-b')];
    for (const vm of vms) await srv.call('NetworkAdapter.AttachToVirtualNetwork', { this: vm.adapter, network: network.$ref });
    const halt = async (): Promise<void> => {
      for (const guest of consoles) guest.close();
      consoles = [];
      for (const vm of vms) await turnOffApiGuest(srv, vm);
    };
    return {
      async boot() {
        const addresses: string[] = [];
        for (const vm of vms) {
          const guest = await startApiGuest(srv, vm);
          consoles.push(guest);
          addresses.push((await guest.lease(0, 60_000)).address);
        }
        return { shells: [consoles[0], consoles[1]], addresses: [addresses[0], addresses[1]] };
      },
      halt,
      async timeAttach() {
        const times: number[] = [];
        for (let i = 0; i < API_SAMPLES; i++) {
          await srv.call('NetworkAdapter.DetachFromVirtualNetwork', { this: vms[0].adapter });
          const start = now();
          await srv.call('NetworkAdapter.AttachToVirtualNetwork', { this: vms[0].adapter, network: network.$ref });
          times.push(now() - start);
        }
        return times;
      },
      async timeCreate() {
        const times: number[] = [];
        const made: Ref[] = [];
        for (let i = 0; i < API_SAMPLES; i++) {
          const start = now();
          made.push(await srv.call<Ref>('VirtualServer.CreateVirtualNetwork', { name: `Bench ${i}`, kind: 'internal' }));
          times.push(now() - start);
        }
        for (const ref of made) await srv.call('VirtualServer.DeleteVirtualNetwork', { network: ref.$ref });
        return times;
      },
      async close() {
        await halt().catch(() => {});
        await srv.stop();
        ns.remove();
      },
    };
  } catch (e) {
    for (const guest of consoles) guest.close();
    await server?.stop();
    ns.remove();
    throw e;
  }
}

/**
 * NET_BENCH_RUNS rounds, each booting the peer's pair and then ours (never more than two guests
 * at once) and taking one sample of each figure, so that drift in the machine's load touches both
 * alike; the medians. The API rows are taken on our side after the last round.
 */
async function compare(peer: Side, ours: OurSide): Promise<{ theirs: Figures; mine: Figures; attachMs: number[]; createMs: number[] }> {
  const theirs: Figures[] = [];
  const mine: Figures[] = [];
  let attachMs: number[] = [];
  for (let round = 0; round < RUNS; round++) {
    theirs.push(await measure(await peer.boot()));
    await peer.halt();
    mine.push(await measure(await ours.boot()));
    if (round === RUNS - 1) attachMs = await ours.timeAttach();
    await ours.halt();
  }
  const createMs = await ours.timeCreate();
  const medians = (figures: Figures[]): Figures => ({ mibPerSecond: median(figures.map((f) => f.mibPerSecond)), rttMs: median(figures.map((f) => f.rttMs)) });
  return { theirs: medians(theirs), mine: medians(mine), attachMs, createMs };
}

export async function run(): Promise<BenchTable> {
  for (const side of ['peer', 'ours']) removeLeftoverNamespaces(`${LABEL}-${side}`);
  return withTempDir('vserver-bench-net', async (dir) => {
    // QEMU's unprivileged user crosses this folder to its sockets and disks.
    fs.chmodSync(dir, 0o711);
    const peer = await peerSide(dir);
    let result;
    try {
      const ours = await ourSide(dir);
      try {
        result = await compare(peer, ours);
      } finally {
        await ours.close();
      }
    } finally {
      await peer.close();
    }
    const { theirs, mine, attachMs, createMs } = result;
    const throughputRatio = mine.mibPerSecond / theirs.mibPerSecond;
    const rttRatio = mine.rttMs / theirs.rttMs;
    const rate = (v: number): string => `${v.toFixed(1)} MiB/s`;
    const ms = (v: number): string => `${v.toFixed(3)} ms`;
    const stats = (values: number[]): string => `${formatMs(percentile(values, 50))} / ${formatMs(percentile(values, 99))}`;
    return {
      title: `Guest-to-guest network: a vserver internal network vs a hand-made bridge + TAPs (test guest, TCG, ${MIB} MiB, medians of ${RUNS} alternating rounds)`,
      columns: ['measure', 'vserver', 'hand-made bridge', 'vserver / bridge'],
      rows: [
        ['TCP throughput (busybox nc)', rate(mine.mibPerSecond), rate(theirs.mibPerSecond),
          `${throughputRatio.toFixed(2)}x${throughputRatio >= 0.95 ? '' : ' (below goal)'}`],
        [`ping round trip (avg of ${PINGS}, median of ${RUNS})`, ms(mine.rttMs), ms(theirs.rttMs), `${rttRatio.toFixed(2)}x${rttRatio <= 1.05 ? '' : ' (over goal)'}`],
        [`CreateVirtualNetwork p50 / p99 (${API_SAMPLES})`, stats(createMs), '-', 'no peer'],
        [`AttachToVirtualNetwork, running VM, p50 / p99 (${API_SAMPLES})`, stats(attachMs), '-', 'no peer'],
      ],
      measures: [
        measured('TCP throughput', mine.mibPerSecond, theirs.mibPerSecond, 'MiB/s', { min: 0.95 }),
        measured('ping round trip', mine.rttMs, theirs.rttMs, 'ms', { max: 1.05 }),
        measured('CreateVirtualNetwork p50', percentile(createMs, 50), null, 'ms'),
        measured('CreateVirtualNetwork p99', percentile(createMs, 99), null, 'ms'),
        measured('AttachToVirtualNetwork (running VM) p50', percentile(attachMs, 50), null, 'ms'),
        measured('AttachToVirtualNetwork (running VM) p99', percentile(attachMs, 99), null, 'ms'),
      ],
      notes: [
        'Goals: throughput >= 0.95x the hand-made bridge; round trip <= 1.05x.',
        'Both sides: two test guests, 128 MB, the worker\'s QEMU arguments (SCSI boot VHD, one tulip adapter), DHCP from a dnsmasq; '
        + 'vserver\'s side runs vserverd and its workers in one network namespace, the peer\'s bridge, TAPs and QEMUs in another. '
        + 'Throughput is timed by the sending guest\'s clock (10 ms steps); API times are wall time of one JSON-RPC call over HTTP '
        + '(through the test forwarder into the namespace), the attach on a running VM (TAP and bridge port made), the create of an internal network.',
      ],
    };
  });
}
