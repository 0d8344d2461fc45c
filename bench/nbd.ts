// The NBD server (vsctl vhd serve) against qemu-nbd (Debian's qemu-utils), both serving a
// dynamic VHD made the same way and driven by the same client, fio's nbd engine (libnbd), in
// one run: 1 MiB sequential reads and writes, 4 KiB random reads and writes at queue depth 1
// and 16, on disks pre-filled so that every request hits allocated blocks. Ratio = vserver
// figure / qemu-nbd figure (MiB/s or IOPS), so 1.0x or more means at least as fast; the goal
// is >= 1.0x on the sequential rows and >= 0.9x on the random ones.

import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { finishesWithin } from '../host/time.js';
import { checkDisk, createDynamic, inspectDisk } from '../storage/vhd/index.js';
import {
  type BenchTable, GiB, KiB, MiB, REPO_ROOT, formatCount, formatMs, formatRatio, haveCommand, measured, median, now, runCommand, withTempDir,
} from './lib.js';

/** What bin/vsctl execs (after building, which "npm run bench" has done). */
const VSCTL_JS = path.join(REPO_ROOT, 'dist', 'bin', 'vsctl.js');

const DISK_SIZE = 1 * GiB;
/** Timed runs per cell and server; the median is reported. */
const RUNS = 3;
const DEFAULT_SECONDS = 3;
/** Untimed start of every run (connection set up, queue filled), excluded by fio itself. */
const RAMP_MS = 500;
/** How long a server may take to start listening, and to stop once sent SIGTERM. */
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 30_000;

type Part = 'seq' | 'rand';
type Side = 'vserver' | 'qemu-nbd';

interface Cell {
  part: Part;
  label: string;
  rw: 'read' | 'write' | 'randread' | 'randwrite';
  bs: number;
  depth: number;
  unit: 'MiB/s' | 'IOPS';
  goal: number;
}

const CELLS: Cell[] = [
  { part: 'seq', label: '1 MiB sequential read, iodepth 4', rw: 'read', bs: MiB, depth: 4, unit: 'MiB/s', goal: 1.0 },
  { part: 'seq', label: '1 MiB sequential write, iodepth 4', rw: 'write', bs: MiB, depth: 4, unit: 'MiB/s', goal: 1.0 },
  { part: 'rand', label: '4 KiB random read, iodepth 1', rw: 'randread', bs: 4 * KiB, depth: 1, unit: 'IOPS', goal: 0.9 },
  { part: 'rand', label: '4 KiB random read, iodepth 16', rw: 'randread', bs: 4 * KiB, depth: 16, unit: 'IOPS', goal: 0.9 },
  { part: 'rand', label: '4 KiB random write, iodepth 1', rw: 'randwrite', bs: 4 * KiB, depth: 1, unit: 'IOPS', goal: 0.9 },
  { part: 'rand', label: '4 KiB random write, iodepth 16', rw: 'randwrite', bs: 4 * KiB, depth: 16, unit: 'IOPS', goal: 0.9 },
];

function progress(message: string): void {
  process.stderr.write(`nbd bench: ${message}\n`);
}

/** Writes dirty pages back (untimed, between measurements), so no run pays for another's writeback. */
function syncAll(): void {
  runCommand('sync', []);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Lets the event loop turn once. fio and sync run synchronously, so without this a Ctrl-C (whose
 * handler in lib.ts removes the temporary files and exits, which stops the servers) would wait
 * for the whole measuring loop.
 */
function turnEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

// ---------------------------------------------------------------------------------------------
// Settings from the environment

/** NBD_BENCH_ONLY=seq,rand runs only those rows (while working on one of them). */
function wantedParts(): Set<Part> {
  const only = process.env.NBD_BENCH_ONLY;
  if (!only) return new Set(['seq', 'rand']);
  const parts = only.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = parts.filter((p) => p !== 'seq' && p !== 'rand');
  if (bad.length || parts.length === 0) throw new Error(`NBD_BENCH_ONLY: expected a list of seq and rand, not "${only}"`);
  return new Set(parts as Part[]);
}

/** NBD_BENCH_SECONDS=N: the timed length of each fio run (default 3). */
function secondsPerRun(): number {
  const text = process.env.NBD_BENCH_SECONDS;
  if (text === undefined || text === '') return DEFAULT_SECONDS;
  const seconds = Number(text);
  if (!Number.isFinite(seconds) || seconds < 0.1 || seconds > 600) throw new Error(`NBD_BENCH_SECONDS: expected seconds between 0.1 and 600, not "${text}"`);
  return seconds;
}

// ---------------------------------------------------------------------------------------------
// The two servers, as child processes that are stopped however the run ends

interface Server {
  side: Side;
  file: string;
  uri: string;
  child: ChildProcess;
  log: string;
}

const liveChildren = new Set<ChildProcess>();

/** On process exit (also after Ctrl-C, which lib.ts turns into process.exit), no server is left behind. */
function killLiveChildren(): void {
  for (const child of liveChildren) child.kill('SIGTERM');
  liveChildren.clear();
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

function logTail(log: string): string {
  try {
    const text = fs.readFileSync(log, 'utf8').trim();
    return text ? `\n${text.split('\n').slice(-20).join('\n')}` : '';
  } catch {
    return '';
  }
}

function spawnServer(command: string, args: string[], log: string, stdout: 'pipe' | 'log'): ChildProcess {
  const fd = fs.openSync(log, 'a');
  try {
    const child = spawn(command, args, { stdio: ['ignore', stdout === 'pipe' ? 'pipe' : fd, fd] });
    liveChildren.add(child);
    child.once('exit', () => liveChildren.delete(child));
    return child;
  } finally {
    fs.closeSync(fd);
  }
}

/** Resolves when the child exits (or has already), with how it ended. */
function whenExited(child: ChildProcess): Promise<string> {
  const describe = (): string => (child.signalCode ? `killed by ${child.signalCode}` : `exit status ${child.exitCode}`);
  if (exited(child)) return Promise.resolve(describe());
  return new Promise((resolve) => child.once('exit', () => resolve(describe())));
}

/** Our server: "vsctl vhd serve FILE --socket PATH --json" prints one JSON line once it listens. */
async function startVserver(file: string, socket: string, log: string): Promise<Server> {
  const child = spawnServer(process.execPath, [VSCTL_JS, 'vhd', 'serve', file, '--socket', socket, '--json'], log, 'pipe');
  const ready = await new Promise<{ uri: string; pid: number }>((resolve, reject) => {
    let buffered = '';
    let settled = false;
    const timer = setTimeout(() => reject(new Error(`vsctl vhd serve did not report ready within ${START_TIMEOUT_MS} ms${logTail(log)}`)), START_TIMEOUT_MS);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      if (settled) return; // anything after the ready line is not ours to read
      buffered += chunk;
      const newline = buffered.indexOf('\n');
      if (newline < 0) return;
      settled = true;
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buffered.slice(0, newline)) as { uri: string; pid: number });
      } catch {
        reject(new Error(`vsctl vhd serve printed something other than its JSON line: ${buffered.slice(0, newline)}`));
      }
    });
    child.once('exit', () => {
      clearTimeout(timer);
      reject(new Error(`vsctl vhd serve ended before it was ready (${child.signalCode ?? `exit status ${child.exitCode}`})${logTail(log)}`));
    });
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  if (ready.pid !== child.pid) throw new Error(`vsctl vhd serve reported pid ${ready.pid}, but was started as ${child.pid}`);
  return { side: 'vserver', file, uri: ready.uri, child, log };
}

function connectOnce(socket: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket);
    s.once('connect', () => {
      s.destroy();
      resolve();
    });
    s.once('error', reject);
  });
}

/** qemu-nbd with writeback caching and thread-pool I/O, as a VM host would run it; ready once its socket accepts a connection. */
async function startQemuNbd(file: string, socket: string, exportName: string, log: string): Promise<Server> {
  const args = ['-t', '-f', 'vpc', '--cache=writeback', '--aio=threads', '-e', '16', '-k', socket, '-x', exportName, file];
  const child = spawnServer('qemu-nbd', args, log, 'log');
  let spawnError: Error | null = null;
  child.once('error', (e) => { spawnError = e; });
  const deadline = now() + START_TIMEOUT_MS;
  for (;;) {
    if (spawnError) throw spawnError;
    if (exited(child)) throw new Error(`qemu-nbd ended before it was ready (${await whenExited(child)})${logTail(log)}`);
    try {
      await connectOnce(socket);
      break;
    } catch {
      if (now() > deadline) throw new Error(`qemu-nbd did not accept connections within ${START_TIMEOUT_MS} ms${logTail(log)}`);
      await sleep(50);
    }
  }
  return { side: 'qemu-nbd', file, uri: `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`, child, log };
}

/** SIGTERM, then SIGKILL if it has not gone within the timeout. Returns how it ended. */
async function stopServer(server: Server): Promise<string> {
  const { child } = server;
  if (exited(child)) return `had already ended (${await whenExited(child)})`;
  const done = whenExited(child);
  child.kill('SIGTERM');
  if (!(await finishesWithin(done, STOP_TIMEOUT_MS))) {
    child.kill('SIGKILL');
    return `did not stop within ${STOP_TIMEOUT_MS} ms of SIGTERM; ${await done}`;
  }
  return await done;
}

// ---------------------------------------------------------------------------------------------
// fio

interface FioResult {
  /** MiB/s */
  bandwidth: number;
  iops: number;
  seconds: number;
}

interface FioJob {
  error: number;
  read: FioDirection;
  write: FioDirection;
}
interface FioDirection { io_bytes: number; bw_bytes: number; iops: number; runtime: number }

function fio(server: Server, name: string, options: string[], direction: 'read' | 'write', jsonFile: string): FioResult {
  if (exited(server.child)) throw new Error(`${server.side} is no longer running (${server.child.signalCode ?? `exit status ${server.child.exitCode}`})${logTail(server.log)}`);
  const args = [`--name=${name}`, '--ioengine=nbd', `--uri=${server.uri}`, ...options, '--output-format=json', `--output=${jsonFile}`];
  try {
    runCommand('fio', args);
  } catch (e) {
    const tail = logTail(server.log);
    throw new Error(`${(e as Error).message}${tail ? `\n${server.side}'s log:${tail}` : ''}`, { cause: e });
  }
  const report = JSON.parse(fs.readFileSync(jsonFile, 'utf8')) as { jobs: FioJob[] };
  fs.rmSync(jsonFile, { force: true });
  const job = report.jobs[0];
  const d = job?.[direction];
  if (!job || job.error !== 0 || !d || d.io_bytes <= 0) throw new Error(`fio ${name} against ${server.side}: no ${direction} I/O done (error ${job?.error})`);
  return { bandwidth: d.bw_bytes / MiB, iops: d.iops, seconds: d.runtime / 1000 };
}

/** The sequential 1 MiB write pass over the whole test area that allocates every block before the timed runs. */
function fill(server: Server, area: number, jsonFile: string): FioResult {
  return fio(server, 'fill', ['--rw=write', `--bs=${MiB}`, '--iodepth=4', `--size=${area}`], 'write', jsonFile);
}

function measure(server: Server, cell: Cell, area: number, seconds: number, jsonFile: string): number {
  const options = [
    `--rw=${cell.rw}`, `--bs=${cell.bs}`, `--iodepth=${cell.depth}`, `--size=${area}`,
    '--time_based', `--runtime=${Math.round(seconds * 1000)}ms`, `--ramp_time=${RAMP_MS}ms`,
    // The same offsets for both servers (fio's fixed seed), without fio's bookkeeping of which it visited.
    '--randrepeat=1', '--norandommap',
  ];
  const r = fio(server, cell.rw, options, cell.rw.endsWith('read') ? 'read' : 'write', jsonFile);
  return cell.unit === 'IOPS' ? r.iops : r.bandwidth;
}

function formatFigure(value: number, unit: Cell['unit']): string {
  return unit === 'IOPS' ? `${formatCount(value)} IOPS` : `${value.toFixed(0)} MiB/s`;
}

function version(command: string, pattern: RegExp): string {
  const out = runCommand(command, ['--version']).stdout;
  return pattern.exec(out)?.[0] ?? out.split('\n')[0].trim();
}

// ---------------------------------------------------------------------------------------------

export async function run(): Promise<BenchTable> {
  for (const tool of ['qemu-nbd', 'qemu-img', 'fio']) {
    if (!haveCommand(tool)) throw new Error(`${tool} not found; npm run bench installs it (scripts/setup.sh bench: qemu-utils, fio)`);
  }
  if (!fs.existsSync(VSCTL_JS)) throw new Error('dist/bin/vsctl.js missing; run npm run build');
  if (!runCommand('fio', ['--enghelp=nbd']).stdout.includes('uri')) throw new Error("this fio has no nbd engine (Debian's fio has; it is built with libnbd)");
  const parts = wantedParts();
  const seconds = secondsPerRun();
  const cells = CELLS.filter((c) => parts.has(c.part));
  const qemuVersion = version('qemu-nbd', /qemu-nbd \d+\.\d+\.\d+/);
  const fioVersion = version('fio', /fio-[\d.]+/);
  const started = now();
  process.on('exit', killLiveChildren);
  try {
    return await withTempDir('vserver-bench-nbd', async (dir) => {
      const files: Record<Side, string> = { vserver: path.join(dir, 'vserver.vhd'), 'qemu-nbd': path.join(dir, 'qemu-nbd.vhd') };
      for (const file of Object.values(files)) await createDynamic(file, { size: DISK_SIZE });
      const virtualSizes = Object.values(files).map((file) =>
        (JSON.parse(runCommand('qemu-img', ['info', '--output=json', '-f', 'vpc', file]).stdout) as { 'virtual-size': number })['virtual-size']);
      if (virtualSizes[0] !== virtualSizes[1]) throw new Error(`the two disks differ in size: ${virtualSizes.join(' vs ')}`);
      // Whole MiB only, so that the 1 MiB fill covers every byte the runs touch.
      const area = Math.floor(virtualSizes[0] / MiB) * MiB;
      syncAll();

      const servers: Server[] = [];
      const stops: string[] = [];
      const figures = new Map<Cell, Record<Side, number[]>>(cells.map((c) => [c, { vserver: [], 'qemu-nbd': [] }]));
      const fills: Partial<Record<Side, FioResult>> = {};
      const jsonFile = path.join(dir, 'fio.json');
      try {
        progress(`starting both servers on ${formatCount(virtualSizes[0])}-byte dynamic VHDs in ${dir}`);
        servers.push(await startVserver(files.vserver, path.join(dir, 'vserver.sock'), path.join(dir, 'vserver.log')));
        servers.push(await startQemuNbd(files['qemu-nbd'], path.join(dir, 'qemu-nbd.sock'), 'disk', path.join(dir, 'qemu-nbd.log')));

        for (const server of servers) {
          await turnEventLoop();
          const r = fill(server, area, jsonFile);
          fills[server.side] = r;
          progress(`fill (1 MiB sequential writes over ${area / MiB} MiB, allocating): ${server.side} ${r.bandwidth.toFixed(0)} MiB/s`);
          syncAll();
        }

        const perRun = cells.length * servers.length * (seconds + RAMP_MS / 1000);
        progress(`${RUNS} rounds of ${cells.length} cells x 2 servers, ${seconds} s each (+${RAMP_MS} ms ramp): about ${Math.round(perRun)} s per round`);
        for (let rep = 0; rep < RUNS; rep++) {
          for (const [i, cell] of cells.entries()) {
            // Interleaved, and which server goes first alternates from cell to cell and round to round.
            const order = (rep + i) % 2 === 0 ? servers : [...servers].reverse();
            const got: string[] = [];
            for (const server of order) {
              await turnEventLoop();
              syncAll();
              const value = measure(server, cell, area, seconds, jsonFile);
              figures.get(cell)![server.side].push(value);
              got.push(`${server.side} ${formatFigure(value, cell.unit)}`);
            }
            progress(`round ${rep + 1}/${RUNS}: ${cell.label}: ${got.join(', ')}`);
          }
        }
      } finally {
        for (const server of servers) stops.push(`${server.side} ${await stopServer(server)}`);
      }

      // Both disks afterwards: consistent, and allocated where the runs read.
      const states: string[] = [];
      for (const [side, file] of Object.entries(files)) {
        const report = await checkDisk(file);
        if (!report.valid) throw new Error(`${side}'s disk is not valid after the run: ${report.errors.map((e) => e.message).join('; ')}`);
        const blocks = inspectDisk(file).blocks!;
        states.push(`${side} ${blocks.allocated} of ${blocks.total}`);
      }

      const rows = cells.map((cell) => {
        const f = figures.get(cell)!;
        const ours = median(f.vserver);
        const theirs = median(f['qemu-nbd']);
        const ratio = ours / theirs;
        // The goal differs per row and has its own columns, so the ratio is printed unflagged.
        return [cell.label, formatFigure(ours, cell.unit), formatFigure(theirs, cell.unit), formatRatio(ratio, 0),
          `>= ${cell.goal.toFixed(1)}x`, ratio >= cell.goal ? 'yes' : 'NO'];
      });
      const measures = cells.map((cell) => {
        const f = figures.get(cell)!;
        return measured(cell.label, median(f.vserver), median(f['qemu-nbd']), cell.unit, { min: cell.goal });
      });
      const runs = cells.map((cell) => {
        const f = figures.get(cell)!;
        const list = (v: number[]): string => v.map((x) => (cell.unit === 'IOPS' ? formatCount(x) : x.toFixed(0))).join(', ');
        return `${cell.label} (${cell.unit}): vserver ${list(f.vserver)}; qemu-nbd ${list(f['qemu-nbd'])}.`;
      });
      return {
        title: `NBD server (vsctl vhd serve) vs ${qemuVersion}, client ${fioVersion} nbd engine (node ${process.version})`,
        columns: ['test', 'vserver', 'qemu-nbd', 'ratio', 'goal', 'met'],
        rows,
        measures,
        notes: [
          'goal: ratio >= 1.0x on the sequential rows, >= 0.9x on the random rows (ratio = vserver MiB/s or IOPS / qemu-nbd MiB/s or IOPS)',
          '',
          `method: each server serves its own ${formatCount(virtualSizes[0])}-byte dynamic VHD (2 MiB blocks), both made by ` +
            `createDynamic (what vsctl vhd create runs); ours as 'node dist/bin/vsctl.js vhd serve FILE --socket S --json', ` +
            `qemu-nbd as 'qemu-nbd -t -f vpc --cache=writeback --aio=threads -e 16 -k S -x disk FILE', both on unix sockets. ` +
            `Before timing, one sequential 1 MiB write pass (iodepth 4) over the first ${area / MiB} MiB allocated every block ` +
            `the runs touch: vserver ${fills.vserver?.bandwidth.toFixed(0)} MiB/s, qemu-nbd ` +
            `${fills['qemu-nbd']?.bandwidth.toFixed(0)} MiB/s (one run each, block allocation included). Every cell: one fio ` +
            `job, one connection, time_based for ${seconds} s after a ${RAMP_MS} ms ramp, over that area, the same seeded ` +
            `random offsets for both (randrepeat, norandommap); fio's own bw and IOPS. ${RUNS} rounds, in each every cell ` +
            `runs on both servers back to back, which goes first alternating; 'sync' (untimed) before every run; the ` +
            `median of the ${RUNS} runs is shown. Writes are not flushed during a run (fio sends no flush; both servers ` +
            `write into the page cache): they measure the servers, not the disk.`,
          '',
          `why qemu-nbd writes are slow: QEMU's vpc driver rewrites a block's bitmap with a synchronous write (an ` +
            `fdatasync) whenever a write goes to a different block than the previous write did: every 4 KiB random write, ` +
            `every other 1 MiB sequential one (strace of this qemu-nbd during 2 s of 4 KiB random writes at iodepth 1: ` +
            `1,511 fdatasync calls for 1,512 requests). That is QEMU's real cost on a VHD, not an artefact of the ` +
            `harness; see also the vhd benchmark. Our server syncs only when it allocates a block, which no timed run does ` +
            `(the same strace of ours: no fsync, one pwrite per request).`,
          '',
          `runs: ${runs.join(' ')}`,
          '',
          `afterwards: servers stopped with SIGTERM (${stops.join('; ')}); both disks checked valid by our checker, blocks ` +
            `allocated: ${states.join(', ')} (the last block holds only the tail beyond ${area / MiB} MiB).`,
          `whole benchmark: ${formatMs(now() - started)}`,
        ],
      };
    });
  } finally {
    killLiveChildren();
    process.off('exit', killLiveChildren);
  }
}
