// The reliability campaign, as the project's own repeatable test: vserverd is killed (-9) in the
// middle of each disk task it runs (create dynamic and fixed, convert, compact, merge, expand)
// and started again on the same folders. Then the catalog passes SQLite's integrity check, the
// task is finished (failed with VM_E_SERVICE_STOPPED, or done if it finished first), no draft
// is left, every disk there passes `vsctl vhd check` and QEMU reads its block map, and the task
// can be run again to its end. And a full file system as a storage root: out of space is a
// named error, nothing is left behind, and the service keeps answering.
//
// One round (each task killed once, at its first percent) by default; VSERVER_CAMPAIGN_ROUNDS=N
// runs N rounds, each killing later in the task.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openCatalog } from '../server/catalog/database.js';
import { isAlive } from '../host/process.js';
import { VhdDisk, createDifferencing, createDynamic, createFixed } from '../storage/vhd/index.js';
import { CAMPAIGN_ROUNDS, killPoint } from './helpers/campaign.js';
import { RpcError, TestServer } from './helpers/server.js';
import { MiB, patternBytes, run, vsctl } from './helpers/vhd-fixtures.js';
import { delay } from './helpers/wait.js';

const TASK_MS = 60_000;
/** How long a disk job may take to notice that vserverd is gone and stop: far less than the tasks take. */
const JOB_EXIT_MS = 1000;

interface Ref { $ref: string }
interface Files { dir: string; file: (name: string) => string; api: (name: string) => string }

/** A disk task of the campaign: what it needs made first, and the call that starts it. */
interface Scenario {
  name: string;
  prepare(files: Files): Promise<void>;
  start(server: TestServer, files: Files): Promise<Ref>;
  /** Whether what the first run left must be cleared before the task can run again (a new file at a fixed name). */
  redoNeedsRoom?: string;
  /** Whether the work is already in place (the kill came after the point of no return), so that there is nothing to run again. */
  alreadyDone?(files: Files): boolean;
  /** The bytes the whole task handles, which its log's rate line must give (in MB) when it completes. */
  bytes?: number;
  /** Checks of the content after the kill, beyond validity. */
  checkContent?(files: Files, context: string): void;
}

function sizeOf(file: string): number {
  const disk = VhdDisk.open(file);
  try {
    return disk.size;
  } finally {
    disk.close();
  }
}

/** Each 2 MiB block of the disk reads as `expected(block)` (null: zeros). */
function assertBlocks(file: string, blocks: number, expected: (block: number) => Buffer | null, context: string): void {
  const disk = VhdDisk.open(file);
  try {
    for (let b = 0; b < blocks; b++) {
      const data = disk.read(b * 2 * MiB, 2 * MiB);
      const want = expected(b);
      assert.ok(want ? data.equals(want) : data.every((x) => x === 0), `${context}: block ${b} of ${path.basename(file)} does not hold what was written`);
    }
  } finally {
    disk.close();
  }
}

const GROW_FROM = 16 * MiB;
const GROW_TO_MB = 768;

/** A dynamic disk of `blocks` 2 MiB blocks, every other one written with data and the rest with zeros (all allocated). */
async function halfZeroDisk(file: string, blocks: number): Promise<void> {
  await createDynamic(file, { size: blocks * 2 * MiB });
  const disk = VhdDisk.open(file, { writable: true });
  try {
    for (let b = 0; b < blocks; b++) disk.write(b % 2 ? patternBytes(b, 2 * MiB) : Buffer.alloc(2 * MiB), b * 2 * MiB);
  } finally {
    disk.close();
  }
}

const SCENARIOS: Scenario[] = [
  {
    name: 'create a dynamic disk',
    prepare: async () => {},
    start: (server, f) => server.call<Ref>('VirtualServer.CreateDynamicVirtualHardDisk', { path: f.api('new.vhd'), sizeMB: 2_000_000 }),
    redoNeedsRoom: 'new.vhd',
    // Written at once (headers and block table), with no progress to report: the kill finds it done.
  },
  {
    name: 'create a fixed disk',
    prepare: async () => {},
    start: (server, f) => server.call<Ref>('VirtualServer.CreateFixedVirtualHardDisk', { path: f.api('new.vhd'), sizeMB: 768 }),
    redoNeedsRoom: 'new.vhd',
    bytes: 768 * MiB,
  },
  {
    name: 'convert a dynamic disk to a fixed one',
    prepare: async (f) => { await createDynamic(f.file('source.vhd'), { size: 768 * MiB }); },
    start: (server, f) => server.call<Ref>('HardDisk.Convert', { this: `HardDisk/${f.file('source.vhd')}`, path: f.api('copy.vhd'), type: 'Fixed' }),
    redoNeedsRoom: 'copy.vhd',
    bytes: 768 * MiB,
  },
  {
    name: 'compact a dynamic disk',
    prepare: async (f) => { await halfZeroDisk(f.file('sparse.vhd'), 160); },
    start: (server, f) => server.call<Ref>('HardDisk.Compact', { this: `HardDisk/${f.file('sparse.vhd')}` }),
    bytes: 160 * 2 * MiB,
    checkContent: (f, context) => assertBlocks(f.file('sparse.vhd'), 160, (b) => (b % 2 ? patternBytes(b, 2 * MiB) : null), context),
  },
  {
    name: 'merge a differencing disk into its parent',
    prepare: async (f) => {
      await createDynamic(f.file('parent.vhd'), { size: 320 * MiB });
      await createDifferencing(f.file('child.vhd'), f.file('parent.vhd'));
      const child = VhdDisk.open(f.file('child.vhd'), { writable: true });
      try {
        for (let b = 0; b < 160; b++) child.write(patternBytes(1000 + b, 2 * MiB), b * 2 * MiB);
      } finally {
        child.close();
      }
    },
    start: (server, f) => server.call<Ref>('HardDisk.Merge', { this: `HardDisk/${f.file('child.vhd')}` }),
    alreadyDone: (f) => !fs.existsSync(f.file('child.vhd')),
    checkContent: (f, context) => {
      const top = fs.existsSync(f.file('child.vhd')) ? f.file('child.vhd') : f.file('parent.vhd');
      assertBlocks(top, 160, (b) => patternBytes(1000 + b, 2 * MiB), context);
    },
  },
  {
    name: 'expand a fixed disk',
    prepare: async (f) => { await createFixed(f.file('grow.vhd'), GROW_FROM); },
    start: (server, f) => server.call<Ref>('HardDisk.Expand', { this: `HardDisk/${f.file('grow.vhd')}`, sizeMB: GROW_TO_MB }),
    // The new size is written last, after the new space is zeroed: a disk at its new size is a finished expand.
    alreadyDone: (f) => sizeOf(f.file('grow.vhd')) >= GROW_TO_MB * MiB,
    checkContent: (f, context) => {
      const disk = VhdDisk.open(f.file('grow.vhd'));
      try {
        // Not expanded yet: the disk keeps the size it was made with (GROW_FROM rounded up to its geometry).
        if (disk.size < GROW_TO_MB * MiB) return;
        assert.ok(disk.read(GROW_FROM, MiB).every((b) => b === 0), `${context}: the new space reads as zeros (the old footer is not in it)`);
      } finally {
        disk.close();
      }
    },
  },
];

let server: TestServer;
const dirs: string[] = [];

function filesOf(root: string, name: string): Files {
  const dir = path.join(root, 'campaign', name.replace(/\W+/g, '-'));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  return { dir, file: (n) => path.join(dir, n), api: (n) => path.join(dir, n) };
}

/** Kills vserverd once the task has reached `percent` (or finished); resolves with what it had reached, and the disk jobs it had then. */
async function killAt(task: Ref, percent: number): Promise<{ percent: number; complete: boolean; jobs: number[] }> {
  const deadline = Date.now() + TASK_MS;
  for (;;) {
    const reached = await server.call<number>('Task.get_PercentCompleted', { this: task.$ref });
    const complete = await server.call<boolean>('Task.get_IsComplete', { this: task.$ref });
    if (reached >= percent || complete || Date.now() > deadline) {
      const jobs = server.children('disk-job.js');
      await server.stop('SIGKILL');
      return { percent: reached, complete, jobs };
    }
    await delay(10);
  }
}

/**
 * Every .vhd left in the folder is valid to this engine and to QEMU. QEMU has no check for VHD
 * ("does not support checks"); its map walks the footer, header and block table instead. It
 * cannot open a differencing VHD at all.
 */
function assertDisksValid(dir: string, context: string): void {
  for (const name of fs.readdirSync(dir).filter((n) => n.endsWith('.vhd'))) {
    const file = path.join(dir, name);
    const check = vsctl(['vhd', 'check', file]);
    assert.equal(check.status, 0, `${context}: vsctl vhd check ${name}:\n${check.stdout}${check.stderr}`);
    if (name === 'child.vhd') continue;
    const qemu = run('qemu-img', ['map', '-f', 'vpc', '--output=json', file]);
    assert.equal(qemu.status, 0, `${context}: qemu-img map ${name}:\n${qemu.stderr}`);
  }
}

function drafts(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.endsWith('.partial'));
}

async function waitDone(task: Ref): Promise<{ name: string; message: string } | null> {
  assert.equal(await server.call<boolean>('Task.WaitForCompletion', { this: task.$ref, timeoutMs: TASK_MS }), true, `${task.$ref} did not finish`);
  return server.call('Task.get_Error', { this: task.$ref });
}

describe('kill -9 of vserverd during each disk task', { timeout: 600_000 }, () => {
  before(async () => {
    server = await TestServer.start();
    dirs.push(server.dataDir, server.runDir);
  });
  after(async () => {
    await server?.stop('SIGKILL');
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (let round = 0; round < CAMPAIGN_ROUNDS; round++) {
    // Round 0 kills at the first percent; later rounds spread over the task.
    const at = killPoint(round, 1, 95);
    for (const scenario of SCENARIOS) {
      it(`${scenario.name}: killed at ${at}%, restarted, the task is settled, no draft, the disks valid, and it runs again`, async (t) => {
        const files = filesOf(server.dataDir, scenario.name);
        await scenario.prepare(files);
        const task = await scenario.start(server, files);
        const killed = await killAt(task, at);
        const context = `${scenario.name} killed at ${killed.percent}%${killed.complete ? ' (complete)' : ''}`;
        // The task's disk job does not outlive vserverd: it stops when its IPC channel closes.
        // (A zombie has stopped: this sandbox's init reaps orphans late.)
        for (let i = 0; killed.jobs.some(isAlive); i++) {
          assert.ok(i < JOB_EXIT_MS / 50, `${context}: the disk job ${killed.jobs.join(', ')} still runs ${JOB_EXIT_MS} ms after vserverd's kill`);
          await delay(50);
        }
        const leftBehind = drafts(files.dir);
        t.diagnostic(`${context}; disk jobs at the kill: ${killed.jobs.join(', ') || 'none'}; drafts once they were gone: ${leftBehind.join(', ') || 'none'}`);

        const catalog = openCatalog(server.dataDir);
        try {
          assert.equal(catalog.pragma('integrity_check', { simple: true }), 'ok', `${context}: the catalog is sound`);
        } finally {
          catalog.close();
        }

        server = await TestServer.start({ dataDir: server.dataDir, runDir: server.runDir });
        assert.equal(await server.call<boolean>('Task.get_IsComplete', { this: task.$ref }), true, `${context}: the task is finished`);
        const error = await server.call<{ name: string } | null>('Task.get_Error', { this: task.$ref });
        if (killed.complete) assert.equal(error, null, `${context}: a finished task stays done`);
        else assert.equal(error?.name, 'VM_E_SERVICE_STOPPED', `${context}: ${JSON.stringify(error)}`);
        assert.deepEqual(drafts(files.dir), [], `${context}: drafts left (before the restart: ${leftBehind.join(', ') || 'none'})`);
        assertDisksValid(files.dir, context);

        scenario.checkContent?.(files, context);

        if (scenario.alreadyDone?.(files)) return;
        if (scenario.redoNeedsRoom) fs.rmSync(files.file(scenario.redoNeedsRoom), { force: true });
        const again = await scenario.start(server, files);
        assert.equal(await waitDone(again), null, `${context}: run again after the restart, the task completes`);
        if (scenario.bytes) {
          const log = await server.call<string[]>('Task.get_Log', { this: again.$ref });
          // Sizes are rounded up as at creation (CHS geometry), by well under 1%.
          const rates = log.map((l) => / (\d+\.\d) MB in \d+\.\d s, \d+\.\d MB\/s$/.exec(l)).filter((m) => m !== null).map((m) => Number(m[1]) * 1e6);
          assert.ok(rates.some((b) => b >= scenario.bytes! && b < scenario.bytes! * 1.01), `${context}: the log gives the rate over ${scenario.bytes} bytes:\n${log.join('\n')}`);
        }
        assertDisksValid(files.dir, `${context}, run again`);
      });
    }
  }
});

describe('an orderly stop of vserverd during a disk task', { timeout: 120_000 }, () => {
  it('SIGTERM kills the task\'s disk job; the next start settles the task as VM_E_SERVICE_STOPPED and removes its draft', async () => {
    let stopped = await TestServer.start();
    const folder = path.join(stopped.dataDir, 'stop');
    try {
      const task = await stopped.call<Ref>('VirtualServer.CreateFixedVirtualHardDisk', { path: path.join(folder, 'big.vhd'), sizeMB: 8000 });
      let jobs: number[] = [];
      for (let i = 0; jobs.length === 0 || !fs.existsSync(folder) || drafts(folder).length === 0; i++) {
        assert.ok(i < 100, 'the disk job and its draft did not appear within 5 s');
        await delay(50);
        jobs = stopped.children('disk-job.js');
      }
      assert.equal(await stopped.stop('SIGTERM'), 0);
      for (let i = 0; jobs.some(isAlive); i++) {
        assert.ok(i < JOB_EXIT_MS / 50, `the disk job ${jobs.join(', ')} still runs ${JOB_EXIT_MS} ms after vserverd stopped`);
        await delay(50);
      }
      stopped = await TestServer.start({ dataDir: stopped.dataDir, runDir: stopped.runDir });
      const error = await stopped.call<{ name: string } | null>('Task.get_Error', { this: task.$ref });
      assert.equal(error?.name, 'VM_E_SERVICE_STOPPED', JSON.stringify(error));
      assert.deepEqual(fs.readdirSync(folder), [], 'the killed job\'s draft is removed at the start');
    } finally {
      await stopped.stop('SIGKILL');
      stopped.remove();
    }
  });
});

/** A small tmpfs as the only storage root: room for some, not all. */
describe('a full file system as a storage root', { timeout: 120_000, skip: process.geteuid?.() !== 0 ? 'mounting a tmpfs needs root' : false }, () => {
  let mountPoint: string;
  let small: TestServer;

  before(async () => {
    mountPoint = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-full-'));
    assert.equal(run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mountPoint]).status, 0, 'mount the tmpfs');
    small = await TestServer.start({ args: ['--storage-root', mountPoint] });
  });
  after(async () => {
    await small?.stop('SIGKILL');
    small?.remove();
    run('umount', [mountPoint]);
    fs.rmSync(mountPoint, { recursive: true, force: true });
  });

  it('CreateFixed and Convert that run out of space fail with VHD_E_IO naming the file and "no space left"; nothing is left; the service answers', async () => {
    const fixed = await small.call<Ref>('VirtualServer.CreateFixedVirtualHardDisk', { path: path.join(mountPoint, 'big.vhd'), sizeMB: 64 });
    await small.call('Task.WaitForCompletion', { this: fixed.$ref, timeoutMs: TASK_MS });
    const fixedError = await small.call<{ name: string; message: string }>('Task.get_Error', { this: fixed.$ref });
    assert.equal(fixedError?.name, 'VHD_E_IO', JSON.stringify(fixedError));
    assert.ok(fixedError.message.includes(path.join(mountPoint, 'big.vhd')) && /no space left/i.test(fixedError.message), fixedError.message);
    assert.deepEqual(fs.readdirSync(mountPoint), [], 'no file or draft is left');

    // A 6 MB dynamic source holding data, converted to a fixed copy that cannot fit beside it.
    const source = path.join(mountPoint, 'source.vhd');
    await createDynamic(source, { size: 6 * MiB });
    const disk = VhdDisk.open(source, { writable: true });
    try {
      disk.write(patternBytes(7, 4 * MiB), 0);
    } finally {
      disk.close();
    }
    const convert = await small.call<Ref>('HardDisk.Convert', { this: `HardDisk/${source}`, path: path.join(mountPoint, 'copy.vhd'), type: 'Fixed' });
    await small.call('Task.WaitForCompletion', { this: convert.$ref, timeoutMs: TASK_MS });
    const convertError = await small.call<{ name: string; message: string }>('Task.get_Error', { this: convert.$ref });
    assert.equal(convertError?.name, 'VHD_E_IO', JSON.stringify(convertError));
    assert.ok(convertError.message.includes(path.join(mountPoint, 'copy.vhd')) && /no space left/i.test(convertError.message), convertError.message);
    assert.deepEqual(fs.readdirSync(mountPoint), ['source.vhd'], 'only the source is left');
    assert.equal(vsctl(['vhd', 'check', source]).status, 0, 'the source is intact');

    assert.equal(typeof await small.call<string>('VirtualServer.get_Version'), 'string', 'the service still answers');
    await assert.rejects(small.call('VirtualServer.GetHardDisk', { path: path.join(mountPoint, 'copy.vhd') }), (e: unknown) => e instanceof RpcError);
  });
});
