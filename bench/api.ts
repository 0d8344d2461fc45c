// The JSON-RPC API under read load: 50 concurrent clients reading properties of 5 registered VMs
// (2 of them running the test guest) from a real vserverd, against a bare Express app answering
// the same JSON-RPC requests from an in-memory map (bench/api-peer.ts), each a process of its
// own, one after the other in the same run with the same client. Every call is one HTTP request
// (keep-alive) carrying one JSON-RPC call: a VM and a property among get_Name, get_State,
// get_Memory, get_Notes and get_AutoStartAtLaunch, picked at random. Latency runs from sending
// the request to the parsed answer. Goal: vserverd at least 0.5x the bare app's calls/s, and
// its p99 under 20 ms. API_BENCH_SECONDS sets the measured duration of each side (default 10).

import { type ChildProcess, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CLOCK_TICKS_PER_SECOND, cpuTicks } from '../host/process.js';
import { finishesWithin } from '../host/time.js';
import { VmPaths } from '../vmm/paths.js';
import { type BenchTable, MiB, REPO_ROOT, formatCount, formatRatio, measured, memoryOf, now, withTempDir } from './lib.js';

const SECONDS = Number(process.env.API_BENCH_SECONDS ?? 10);
/** Untimed start of each side: connections opened, both processes' JIT warm. */
const WARMUP_MS = 1_000;
const CLIENTS = 50;
const VM_COUNT = 5;
const RUNNING_COUNT = 2;
const PROPERTIES = ['get_Name', 'get_State', 'get_Memory', 'get_Notes', 'get_AutoStartAtLaunch'] as const;
const GOAL_RATIO = 0.5;
const GOAL_P99_MS = 20;

const SERVER_MAIN = path.join(REPO_ROOT, 'dist', 'server', 'main.js');
const PEER_MAIN = path.join(REPO_ROOT, 'dist', 'bench', 'api-peer.js');
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 60_000;
const BOOT_TIMEOUT_MS = 180_000;
const REQUEST_TIMEOUT_MS = 10_000;

type Values = Record<string, Record<string, unknown>>;

function progress(message: string): void {
  process.stderr.write(`api bench: ${message}\n`);
}

// ---------------------------------------------------------------------------------------------
// The test guest's boot disk (test/guest/build.sh, which "scripts/setup.sh bench" runs)

interface GuestFiles { bootVhd: string; marker: string }

function testGuest(): GuestFiles {
  const cache = process.env.VSERVER_GUEST_CACHE ? path.resolve(process.env.VSERVER_GUEST_CACHE)
    : process.geteuid?.() === 0 ? '/var/cache/vserver/test-guest' : path.join(os.homedir(), '.cache', 'vserver', 'test-guest');
  const file = path.join(cache, 'guest.json');
  const build = 'build it with: bash scripts/setup.sh bench (or bash test/guest/build.sh)';
  let guest: { bootVhd?: unknown; marker?: unknown };
  try {
    guest = JSON.parse(fs.readFileSync(file, 'utf8')) as typeof guest;
  } catch (e) {
    throw new Error(`the test guest is not built (${file}: ${(e as Error).message}); ${build}`, { cause: e });
  }
  const { bootVhd, marker } = guest;
  if (typeof bootVhd !== 'string' || !fs.existsSync(bootVhd)) throw new Error(`${file} names no boot VHD that exists (${String(bootVhd)}); ${build}`);
  return { bootVhd, marker: typeof marker === 'string' && marker ? marker : 'VSERVER-GUEST-READY' };
}

/**
 * Resolves once the guest has printed `marker` on COM1 (the worker's console socket replays its
 * scrollback first, so a marker printed before the connection counts).
 */
function waitForGuest(socketPath: string, marker: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let text = '';
    const socket = net.connect(socketPath);
    const finish = (error?: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      if (error) reject(error);
      else resolve();
    };
    const timer = setTimeout(() => finish(new Error(`no ${marker} on ${socketPath} within ${timeoutMs} ms; it showed:\n${text.slice(-1000)}`)), timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (text.includes(marker)) finish();
    });
    socket.on('error', (e) => finish(new Error(`${socketPath}: ${e.message}`)));
  });
}

// ---------------------------------------------------------------------------------------------
// Child processes: vserverd and the peer

const liveChildren = new Set<ChildProcess>();
/** On process exit (also after Ctrl-C, which lib.ts turns into process.exit), no server is left behind. */
process.on('exit', () => { for (const child of liveChildren) child.kill('SIGTERM'); });

interface Server { child: ChildProcess; url: string; output: () => string }

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** Spawns `node script args` and resolves once it prints "listening on http://HOST:PORT". */
function startServer(what: string, script: string, args: string[], env: NodeJS.ProcessEnv): Promise<Server> {
  const child = spawn(process.execPath, [script, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  liveChildren.add(child);
  child.once('exit', () => liveChildren.delete(child));
  let output = '';
  const keep = (chunk: Buffer): void => { output += chunk.toString(); };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return new Promise<Server>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${what} did not listen within ${START_TIMEOUT_MS} ms:\n${output}`)); }, START_TIMEOUT_MS);
    const look = (): void => {
      const match = /listening on (http:\/\/[^/\s]+)/.exec(output);
      if (!match) return;
      clearTimeout(timer);
      child.stdout!.off('data', look);
      resolve({ child, url: match[1], output: () => output });
    };
    child.stdout!.on('data', look);
    child.once('exit', (code, signal) => { clearTimeout(timer); reject(new Error(`${what} exited (${code ?? signal}) before listening:\n${output}`)); });
  });
}

/** Sends SIGTERM and waits for the exit (SIGKILL after STOP_TIMEOUT_MS); returns how it ended. */
async function stopServer(server: Server): Promise<string> {
  const { child } = server;
  const describe = (): string => (child.signalCode ? `killed by ${child.signalCode}` : `exit status ${child.exitCode}`);
  if (exited(child)) return describe();
  const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  if (!(await finishesWithin(done, STOP_TIMEOUT_MS))) {
    child.kill('SIGKILL');
    await done;
    return `did not stop within ${STOP_TIMEOUT_MS / 1000} s of SIGTERM; ${describe()}`;
  }
  return describe();
}

// ---------------------------------------------------------------------------------------------
// /proc: memory, CPU time, and the processes a run folder's VMs left

function cpuSeconds(pid: number): number {
  return (cpuTicks(pid) ?? 0) / CLOCK_TICKS_PER_SECOND;
}

/** Busy and total CPU time of the whole machine, in seconds of one processor (/proc/stat). */
function machineCpu(): { busy: number; total: number } {
  const fields = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = fields[3] + fields[4]; // idle, iowait
  return { busy: (total - idle) / CLOCK_TICKS_PER_SECOND, total: total / CLOCK_TICKS_PER_SECOND };
}

/** Processes whose command line names `folder` (the VMs' workers and QEMUs name their run folder). */
function processesNaming(folder: string): Array<{ pid: number; command: string }> {
  const found: Array<{ pid: number; command: string }> = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const command = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      if (command.includes(folder)) found.push({ pid: Number(entry), command });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// HTTP: one POST, keep-alive

interface Target { label: string; host: string; port: number; path: string; headers: Record<string, string> }

function targetOf(label: string, url: string, rpcPath: string, token?: string): Target {
  const u = new URL(url);
  return { label, host: u.hostname, port: Number(u.port), path: rpcPath, headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) } };
}

function post(target: Target, agent: http.Agent, body: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: target.host, port: target.port, path: target.path, method: 'POST', agent,
      headers: { ...target.headers, 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 200)}`));
        else resolve(text);
      });
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

interface RpcAnswer { id?: unknown; result?: unknown; error?: { code: number; message: string; data?: { name?: string } } }

/** One call for the setup and the cleanup; throws on a JSON-RPC error. */
async function call<T = unknown>(target: Target, agent: http.Agent, method: string, params: Record<string, unknown> = {}): Promise<T> {
  const answer = JSON.parse(await post(target, agent, JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }))) as RpcAnswer;
  if (answer.error) throw new Error(`${method}: ${answer.error.data?.name ?? answer.error.code}: ${answer.error.message}`);
  return answer.result as T;
}

async function login(url: string, password: string): Promise<string> {
  const response = await fetch(`${url}/api/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'admin', password }) });
  const body = await response.json() as { token?: string; error?: { message: string } };
  if (!response.ok || !body.token) throw new Error(`login failed (${response.status}): ${body.error?.message ?? JSON.stringify(body)}`);
  return body.token;
}

// ---------------------------------------------------------------------------------------------
// Setup: the VMs

type Ref = { $ref: string };

/** Waits for a task and throws its error, if it failed. */
async function completeTask(target: Target, agent: http.Agent, task: Ref, what: string, timeoutMs: number): Promise<void> {
  const done = await call<boolean>(target, agent, 'Task.WaitForCompletion', { this: task.$ref, timeoutMs });
  if (!done) throw new Error(`${what}: not complete after ${timeoutMs} ms`);
  const error = await call<{ name: string; message: string } | null>(target, agent, 'Task.get_Error', { this: task.$ref });
  if (error) throw new Error(`${what}: ${error.name}: ${error.message}`);
}

async function waitForState(target: Target, agent: http.Agent, vm: string, state: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const current = await call<string>(target, agent, 'VirtualMachine.get_State', { this: vm });
    if (current === state) return;
    if (Date.now() > deadline) throw new Error(`${vm} is ${current}, not ${state}, after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// ---------------------------------------------------------------------------------------------
// The load

interface LoadResult {
  calls: number;
  seconds: number;
  latencies: Float64Array;
  errors: Map<string, number>;
  /** CPU time, in seconds, over the measured window; `machine` is every processor's busy time. */
  cpu: { server: number; client: number; vms: number; machine: number };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

/**
 * CLIENTS loops over one keep-alive agent, each waiting for its answer before the next call;
 * calls started in the warm-up are neither timed nor counted.
 */
async function load(target: Target, vms: string[], expected: Values, serverPid: number, vmPids: () => number[]): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
  const latencies: number[] = [];
  const errors = new Map<string, number>();
  const fail = (message: string): void => { errors.set(message, (errors.get(message) ?? 0) + 1); };
  const measureFrom = now() + WARMUP_MS;
  const until = measureFrom + SECONDS * 1000;
  let lastEnd = measureFrom;
  type Sample = { server: number; client: NodeJS.CpuUsage; vms: number; machine: number };
  const sample = (): Sample => ({ server: cpuSeconds(serverPid), client: process.cpuUsage(), vms: vmPids().reduce((s, p) => s + cpuSeconds(p), 0), machine: machineCpu().busy });
  let cpuAtStart: Sample | null = null;
  const sampleStart = setTimeout(() => { cpuAtStart = sample(); }, WARMUP_MS);

  const client = async (index: number): Promise<void> => {
    let id = index * 1e9;
    for (;;) {
      const start = now();
      if (start >= until) return;
      const vm = vms[Math.floor(Math.random() * vms.length)];
      const property = PROPERTIES[Math.floor(Math.random() * PROPERTIES.length)];
      const body = JSON.stringify({ jsonrpc: '2.0', id: ++id, method: `VirtualMachine.${property}`, params: { this: vm } });
      let problem: string | null = null;
      try {
        const answer = JSON.parse(await post(target, agent, body)) as RpcAnswer;
        if (answer.error) problem = `${property}: JSON-RPC error ${answer.error.code} ${answer.error.data?.name ?? ''}: ${answer.error.message}`;
        else if (answer.id !== id) problem = `${property}: answer for id ${String(answer.id)}, not ${id}`;
        else if (answer.result !== expected[vm][property]) problem = `${property}: ${JSON.stringify(answer.result)}, expected ${JSON.stringify(expected[vm][property])}`;
      } catch (e) {
        problem = `${property}: ${(e as Error).message}`;
      }
      const end = now();
      if (start < measureFrom) continue;
      latencies.push(end - start);
      if (end > lastEnd) lastEnd = end;
      if (problem) fail(problem);
    }
  };

  try {
    await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i)));
  } finally {
    clearTimeout(sampleStart);
    agent.destroy();
  }
  const cpuEnd = sample();
  const begin = cpuAtStart as Sample | null;
  const clientCpu = begin ? process.cpuUsage(begin.client) : { user: 0, system: 0 };
  const sorted = Float64Array.from(latencies).sort();
  return {
    calls: latencies.length, seconds: (lastEnd - measureFrom) / 1000, latencies: sorted, errors,
    cpu: {
      server: begin ? cpuEnd.server - begin.server : 0, client: (clientCpu.user + clientCpu.system) / 1e6,
      vms: begin ? cpuEnd.vms - begin.vms : 0, machine: begin ? cpuEnd.machine - begin.machine : 0,
    },
  };
}

// ---------------------------------------------------------------------------------------------

export async function run(): Promise<BenchTable> {
  if (!(SECONDS > 0)) throw new Error(`API_BENCH_SECONDS must be a positive number of seconds, not "${process.env.API_BENCH_SECONDS}"`);
  const guest = testGuest();
  return withTempDir('vserver-bench-api', async (dir) => {
    fs.chmodSync(dir, 0o711); // QEMU's unprivileged user passes through to its folder in the run folder
    const dataDir = path.join(dir, 'data');
    const runDir = path.join(dir, 'run');
    fs.mkdirSync(dataDir, { mode: 0o750 });
    const password = crypto.randomBytes(18).toString('base64url');
    // vserverd's own settings only: a VSERVER_STORAGE_ROOTS or VSERVER_CONFIG of the caller's would change the run.
    const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VSERVER_')));

    progress('starting vserverd');
    const vserverd = await startServer('vserverd', SERVER_MAIN, ['--port', '0', '--data', dataDir], { ...env, VSERVER_ADMIN_PASSWORD: password, VSERVER_RUN_DIR: runDir });
    const setupAgent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    let peer: Server | null = null;
    const vms: string[] = [];
    const cleanupNotes: string[] = [];
    let table: BenchTable | null = null;
    try {
      const token = await login(vserverd.url, password);
      const api = targetOf('vserverd POST /api/rpc', vserverd.url, '/api/rpc', token);

      progress(`creating ${VM_COUNT} VMs and ${RUNNING_COUNT} differencing disks of the test guest's boot disk`);
      fs.copyFileSync(guest.bootVhd, path.join(dataDir, 'template.vhd'));
      for (let i = 1; i <= VM_COUNT; i++) {
        const vm = (await call<Ref>(api, setupAgent, 'VirtualServer.CreateVirtualMachine', { name: `bench-api-${i}` })).$ref;
        vms.push(vm);
        await call(api, setupAgent, 'VirtualMachine.put_Notes', { this: vm, value: `API benchmark VM ${i} of ${VM_COUNT}` });
        // Should anything below fail, vserverd's SIGTERM then turns the VM off rather than saving it.
        await call(api, setupAgent, 'VirtualMachine.put_ShutdownActionOnQuit', { this: vm, value: 'TurnOff' });
      }
      const running = vms.slice(0, RUNNING_COUNT);
      for (const [i, vm] of running.entries()) {
        const disk = `disks/bench-api-${i + 1}.vhd`;
        const task = await call<Ref>(api, setupAgent, 'VirtualServer.CreateDifferencingVirtualHardDisk', { path: disk, parentPath: 'template.vhd' });
        await completeTask(api, setupAgent, task, `creating ${disk}`, 60_000);
        await call(api, setupAgent, 'VirtualMachine.put_Memory', { this: vm, value: 128 });
        await call(api, setupAgent, 'VirtualMachine.AddSCSIController', { this: vm });
        await call(api, setupAgent, 'VirtualMachine.AddHardDiskConnection', { this: vm, path: disk, busType: 'SCSI', busNumber: 0, deviceNumber: 0 });
      }
      progress(`turning on ${RUNNING_COUNT} VMs`);
      const bootStart = now();
      await Promise.all(running.map(async (vm) => {
        const task = await call<Ref>(api, setupAgent, 'VirtualMachine.Startup', { this: vm });
        await completeTask(api, setupAgent, task, `Startup of ${vm}`, BOOT_TIMEOUT_MS);
        await waitForState(api, setupAgent, vm, 'Running', BOOT_TIMEOUT_MS);
      }));
      const runningAfter = (now() - bootStart) / 1000;
      // Running comes as QEMU starts; the guest then boots under TCG for a while, which must not overlap the measurement.
      progress(`both Running after ${runningAfter.toFixed(1)} s; waiting for the guests' ${guest.marker} on COM1`);
      await Promise.all(running.map((vm) => waitForGuest(VmPaths.of(vm.slice('VirtualMachine/'.length), runDir).console, guest.marker, BOOT_TIMEOUT_MS)));
      const bootedAfter = (now() - bootStart) / 1000;
      progress(`both guests booted after ${bootedAfter.toFixed(1)} s`);

      // What every call must answer: read once, then checked on each answer (and served by the peer).
      const expected: Values = {};
      for (const vm of vms) {
        expected[vm] = {};
        for (const property of PROPERTIES) expected[vm][property] = await call(api, setupAgent, `VirtualMachine.${property}`, { this: vm });
      }
      const states = vms.map((vm) => expected[vm].get_State as string);
      const vmPids = (): number[] => processesNaming(runDir).map((p) => p.pid);

      progress(`${CLIENTS} clients against vserverd for ${WARMUP_MS / 1000} s + ${SECONDS} s`);
      const ours = await load(api, vms, expected, vserverd.child.pid!, vmPids);
      const ourMemory = memoryOf(vserverd.child.pid!);
      const statesAfter = await Promise.all(vms.map((vm) => call<string>(api, setupAgent, 'VirtualMachine.get_State', { this: vm })));

      progress('starting the bare Express peer');
      peer = await startServer('api-peer', PEER_MAIN, [JSON.stringify(expected)], env);
      progress(`${CLIENTS} clients against the bare Express peer for ${WARMUP_MS / 1000} s + ${SECONDS} s`);
      const theirs = await load(targetOf('bare Express POST /rpc', peer.url, '/rpc'), vms, expected, peer.child.pid!, vmPids);
      const peerMemory = memoryOf(peer.child.pid!);

      table = report(ours, theirs, ourMemory, peerMemory, states, statesAfter);
      table.notes.push(`Setup: Startup tasks done and get_State Running ${runningAfter.toFixed(1)} s after the Startup calls; both guests printed ${guest.marker} `
        + `after ${bootedAfter.toFixed(1)} s, and the measurements start only then.`);
    } finally {
      progress('cleaning up: turning the VMs off, stopping vserverd and the peer');
      if (peer) {
        const how = await stopServer(peer);
        if (how !== 'exit status 0') cleanupNotes.push(`The peer ended with ${how}.`);
      }
      let token: string | null = null;
      try {
        token = await login(vserverd.url, password);
      } catch (e) {
        cleanupNotes.push(`Cleanup: could not log in to turn the VMs off (${(e as Error).message}); vserverd's SIGTERM turns them off.`);
      }
      const api = targetOf('', vserverd.url, '/api/rpc', token ?? undefined);
      if (token) await Promise.all(vms.map(async (vm) => {
        try {
          const state = await call<string>(api, setupAgent, 'VirtualMachine.get_State', { this: vm });
          if (state === 'TurnedOff' || state === 'Saved') return;
          const task = await call<Ref>(api, setupAgent, 'VirtualMachine.TurnOff', { this: vm });
          await completeTask(api, setupAgent, task, `TurnOff of ${vm}`, 60_000);
          await waitForState(api, setupAgent, vm, 'TurnedOff', 30_000);
        } catch (e) {
          cleanupNotes.push(`Cleanup: turning ${vm} off failed: ${(e as Error).message}`);
        }
      }));
      setupAgent.destroy();
      const how = await stopServer(vserverd);
      if (how !== 'exit status 0') cleanupNotes.push(`vserverd ended with ${how}. Its output:\n${vserverd.output().trim()}`);
      // Workers and QEMUs exit with their VMs; anything naming the run folder now is a leak.
      const deadline = Date.now() + 10_000;
      let left = processesNaming(runDir);
      while (left.length && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        left = processesNaming(runDir);
      }
      for (const p of left) {
        cleanupNotes.push(`LEFT BEHIND (now SIGKILLed): pid ${p.pid}: ${p.command.slice(0, 200)}`);
        try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ }
      }
      if (!left.length) cleanupNotes.push('Cleanup: VMs turned off, vserverd and the peer stopped; no worker or QEMU of this run is left.');
      if (!table) for (const note of cleanupNotes) progress(note);
    }
    table.notes.push(...cleanupNotes);
    return table;
  });
}

function report(ours: LoadResult, theirs: LoadResult, ourMemory: { rss: number; peak: number }, peerMemory: { rss: number; peak: number },
  states: string[], statesAfter: string[]): BenchTable {
  const rate = (r: LoadResult): number => r.calls / r.seconds;
  const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(2) : '-');
  const errorCount = (r: LoadResult): number => [...r.errors.values()].reduce((a, b) => a + b, 0);
  const row = (label: string, r: LoadResult): string[] =>
    [label, formatCount(rate(r)), ms(percentile(r.latencies, 0.5)), ms(percentile(r.latencies, 0.99)), String(errorCount(r))];
  const ratio = rate(ours) / rate(theirs);
  const p99 = percentile(ours.latencies, 0.99);
  const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;
  const pct = (seconds: number, r: LoadResult): string => `${((seconds / r.seconds) * 100).toFixed(0)}%`;
  const cpu = (r: LoadResult): string => `server ${pct(r.cpu.server, r)}, load generator ${pct(r.cpu.client, r)}, this run's VMs (workers + QEMU) ${pct(r.cpu.vms, r)}, `
    + `other processes ${pct(Math.max(0, r.cpu.machine - r.cpu.server - r.cpu.client - r.cpu.vms), r)} (of ${os.availableParallelism() * 100}%)`;
  const errorNotes = (label: string, r: LoadResult): string[] => [...r.errors.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10)
    .map(([message, count]) => `ERRORS (${label}): ${count} x ${message}`);
  const counts = (list: string[]): string => [...new Set(list)].map((s) => `${list.filter((x) => x === s).length} ${s}`).join(', ');
  const others = (r: LoadResult): number => Math.max(0, r.cpu.machine - r.cpu.server - r.cpu.client - r.cpu.vms) / r.seconds;
  const busy = Math.max(others(ours), others(theirs));
  return {
    title: `JSON-RPC property reads: vserverd against a bare Express endpoint (${CLIENTS} clients, ${SECONDS} s each, ${VM_COUNT} VMs, ${RUNNING_COUNT} running)`,
    columns: ['endpoint', 'calls/s', 'p50 ms', 'p99 ms', 'errors'],
    rows: [row('vserverd POST /api/rpc', ours), row('bare Express POST /rpc', theirs)],
    measures: [
      measured('throughput', rate(ours), rate(theirs), 'calls/s', { min: GOAL_RATIO }),
      measured('latency p50', percentile(ours.latencies, 0.5), percentile(theirs.latencies, 0.5), 'ms'),
      measured(`latency p99 (goal: vserverd's under ${GOAL_P99_MS} ms, not a ratio)`, p99, percentile(theirs.latencies, 0.99), 'ms'),
      measured('errors', errorCount(ours), errorCount(theirs), 'calls'),
    ],
    notes: [
      `vserverd / bare throughput: ${formatRatio(ratio, GOAL_RATIO)}   (goal: >= ${GOAL_RATIO}x)`,
      `vserverd p99: ${ms(p99)} ms   (goal: < ${GOAL_P99_MS} ms${p99 < GOAL_P99_MS ? ', met' : ', OVER GOAL'})`,
      `vserverd RSS after the run: ${mib(ourMemory.rss)} (peak ${mib(ourMemory.peak)}); the bare Express peer: ${mib(peerMemory.rss)} (peak ${mib(peerMemory.peak)}).`,
      ...(busy > 0.2 ? [`WARNING: other processes used up to ${(busy * 100).toFixed(0)}% of a processor during the runs (see the CPU line below); `
        + 'on this machine that is enough to skew both figures and their ratio: run again when it is quiet.'] : []),
      ...errorNotes('vserverd', ours), ...errorNotes('bare Express', theirs),
      `Calls: ${formatCount(ours.calls)} to vserverd, ${formatCount(theirs.calls)} to the peer; each a random VM and one of ${PROPERTIES.join(', ')}, `
        + 'one JSON-RPC call per HTTP request, over a keep-alive http.Agent (maxSockets 50); each client waits for its answer before the next call, '
        + `and every answer is checked against the value read before the run. A ${WARMUP_MS / 1000} s warm-up of each side is not counted. `
        + `VM states: ${counts(states)} before, ${counts(statesAfter)} after vserverd's run.`,
      `This machine has ${os.availableParallelism()} logical processors; the load generator (one Node process) competes with the server for them, `
        + 'and the two idle guests (TCG) stay on during both runs. CPU used during the measured seconds (100% = one processor) -- '
        + `vserverd run: ${cpu(ours)}; bare run: ${cpu(theirs)}. `
        + `With ${CLIENTS} clients each waiting for its answer, mean latency is ${CLIENTS} / throughput (Little's law): a p99 under ${GOAL_P99_MS} ms `
        + `needs well over ${formatCount((CLIENTS * 1000) / GOAL_P99_MS)} calls/s.`
        + (theirs.cpu.client / theirs.seconds >= 0.9
          ? ' The load generator is saturated in the bare run: that figure is partly the client\'s limit, not Express\'s, so the ratio is kinder to '
            + 'vserverd than a separate client machine would make it.'
          : ''),
      'The peer (bench/api-peer.ts) is express() + express.json() answering from a Map: no authentication, schema check, reference resolution, access check or catalog lookup.',
    ],
  };
}
