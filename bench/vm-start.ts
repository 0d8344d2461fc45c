// Turn-on time and memory of a VM run by our worker, against QEMU started by hand with the same
// arguments and the VHD opened by QEMU itself (its vpc driver). Times run from the request (the
// worker's spawn included) to the guest's first byte on COM1 and to its ready marker.
// Goal: at most 1.10x bare QEMU to the marker; the worker's own RSS under 60 MiB.
// VM_BENCH_RUNS sets the number of boots of each (default 3).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { GUEST_READY_MARKER, testGuest } from '../test/helpers/guest.js';
import { parseVmConfig, type VmConfig } from '../vmm/config.js';
import { VmManager } from '../vmm/manager.js';
import { VmPaths } from '../vmm/paths.js';
import { qemuArgs } from '../vmm/qemu-args.js';
import { qemuUser } from '../vmm/worker/user.js';
import { SerialReader } from '../test/helpers/vm.js';
import { type BenchTable, formatMs, measured, median, memoryOf, MiB, now, withTempDir } from './lib.js';

const RUNS = Number(process.env.VM_BENCH_RUNS ?? 3);
const BOOT_TIMEOUT_MS = 120_000;

interface Boot { firstByteMs: number; markerMs: number; qemuRss: number; workerRss?: number; workerPeak?: number }

async function bootThroughWorker(manager: VmManager, config: VmConfig): Promise<Boot> {
  const start = now();
  const client = await manager.launch(config);
  const serial = await SerialReader.attach(VmPaths.of(config.id, manager.root).console);
  try {
    const turnedOn = client.request('turnOn');
    await serial.waitFor(/[^\s]/, BOOT_TIMEOUT_MS);
    const firstByteMs = now() - start;
    await serial.waitFor(GUEST_READY_MARKER, BOOT_TIMEOUT_MS);
    const markerMs = now() - start;
    const status = await turnedOn;
    const worker = memoryOf(status.workerPid!);
    const qemu = memoryOf(status.qemuPid!);
    return { firstByteMs, markerMs, qemuRss: qemu.rss, workerRss: worker.rss, workerPeak: worker.peak };
  } finally {
    await client.request('turnOff').catch(() => {});
    client.close();
    serial.close();
  }
}

/** The worker's QEMU arguments, the disk opened by QEMU's vpc driver, running at once (no -S). */
async function bootBare(config: VmConfig, dir: string): Promise<Boot> {
  const args = qemuArgs({
    config, engine: 'tcg', qmpSocket: path.join(dir, 'bare-qmp.sock'), vncSocket: path.join(dir, 'bare-vnc.sock'),
    taps: [], incoming: false, runAs: qemuUser(() => {})?.name ?? null,
    disks: new Map(config.scsi[0].disks.map((d) => [`scsi0-${d.target}`, { kind: 'vhd-file' as const, path: d.path }])),
  }).filter((a) => a !== '-S');
  const start = now();
  const qemu = spawn('qemu-system-x86_64', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  let errors = '';
  qemu.stderr.on('data', (d: Buffer) => { errors += d.toString(); });
  let firstByteMs = 0;
  try {
    const markerMs = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`bare QEMU: no marker; it printed ${output.slice(-500)} ${errors}`)), BOOT_TIMEOUT_MS);
      qemu.stdout.on('data', (d: Buffer) => {
        if (!firstByteMs && /[^\s]/.test(d.toString())) firstByteMs = now() - start;
        output += d.toString();
        if (output.includes(GUEST_READY_MARKER)) { clearTimeout(timer); resolve(now() - start); }
      });
      qemu.on('exit', (code) => reject(new Error(`bare QEMU exited (${code}): ${errors}`)));
    });
    return { firstByteMs, markerMs, qemuRss: memoryOf(qemu.pid!).rss };
  } finally {
    qemu.kill('SIGKILL');
    await new Promise((r) => qemu.once('close', r));
  }
}

export async function run(): Promise<BenchTable> {
  const guest = testGuest();
  return withTempDir('vserver-bench-vm', async (dir) => {
    fs.chmodSync(dir, 0o711);
    // A dynamic VHD, the kind QEMU's own vpc driver opens (it cannot follow differencing chains).
    fs.copyFileSync(guest.bootVhd, path.join(dir, 'boot.vhd'));
    const config = parseVmConfig({
      name: 'bench', memoryMB: 256, engine: 'tcg', bootOrder: ['disk'],
      scsi: [{ disks: [{ target: 0, path: 'boot.vhd' }] }], networkAdapters: [{ model: 'tulip', network: null }],
    }, dir);
    const manager = new VmManager(path.join(dir, 'run'));
    const worker: Boot[] = [];
    const bare: Boot[] = [];
    for (let i = 0; i < RUNS; i++) {
      // Alternating, so that drift in the machine's load touches both sides alike.
      worker.push(await bootThroughWorker(manager, config));
      bare.push(await bootBare(config, dir));
    }
    const m = (boots: Boot[], key: keyof Boot): number => median(boots.map((b) => b[key] ?? 0));
    const ratio = (ours: number, theirs: number, goal?: number): string => {
      const r = ours / theirs;
      return `${r.toFixed(2)}x${goal === undefined ? '' : r <= goal ? '' : ' (over goal)'}`;
    };
    const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;
    return {
      title: `VM turn-on: through the vserver worker vs bare QEMU (test guest, TCG, median of ${RUNS})`,
      columns: ['measure', 'worker', 'bare QEMU', 'worker / bare'],
      rows: [
        ['turn on -> first byte on COM1', formatMs(m(worker, 'firstByteMs')), formatMs(m(bare, 'firstByteMs')), ratio(m(worker, 'firstByteMs'), m(bare, 'firstByteMs'))],
        ['turn on -> guest ready marker', formatMs(m(worker, 'markerMs')), formatMs(m(bare, 'markerMs')), ratio(m(worker, 'markerMs'), m(bare, 'markerMs'), 1.1)],
        ['QEMU RSS at the marker', mib(m(worker, 'qemuRss')), mib(m(bare, 'qemuRss')), ratio(m(worker, 'qemuRss'), m(bare, 'qemuRss'))],
        ['worker RSS at the marker (peak)', `${mib(m(worker, 'workerRss'))} (${mib(m(worker, 'workerPeak'))})`, '-', m(worker, 'workerRss') < 60 * MiB ? 'under 60 MiB' : 'over 60 MiB (over goal)'],
      ],
      measures: [
        measured('turn on -> first byte on COM1', m(worker, 'firstByteMs'), m(bare, 'firstByteMs'), 'ms'),
        measured('turn on -> guest ready marker', m(worker, 'markerMs'), m(bare, 'markerMs'), 'ms', { max: 1.1 }),
        measured('QEMU RSS at the marker', m(worker, 'qemuRss') / MiB, m(bare, 'qemuRss') / MiB, 'MiB'),
        measured('worker RSS at the marker (goal: under 60 MiB, not a ratio)', m(worker, 'workerRss') / MiB, null, 'MiB'),
        measured('worker peak RSS at the marker', m(worker, 'workerPeak') / MiB, null, 'MiB'),
      ],
      notes: [
        'Goal: at most 1.10x bare QEMU to the marker; worker RSS under 60 MiB.',
        'The worker\'s time includes starting the worker process, serving the disk over NBD on a unix socket, QMP setup and '
        + 'the pty; bare QEMU gets the same arguments (minus -S) and opens the same dynamic VHD with its own vpc driver.',
      ],
    };
  });
}
