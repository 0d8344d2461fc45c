// Crash safety of block allocation (storage/vhd/file.ts): a writer process is killed with
// SIGKILL at random instants of its life, and each time the file must be valid and hold
// every write that was acknowledged before the last flush the writer reported.
//
// The writer (test/fixtures/crash-writer.ts) performs a seeded sequence of writes whose every
// sector names the write that produced it (test/fixtures/crash-workload.ts), so after a kill
// the test replays the sequence and checks each sector of the disk: it must hold the value it
// had as of the last reported flush, or the data of a later write covering it (a write after
// the last flush may or may not have landed), and nothing else.
//
// To reproduce a failure, run with VHD_CRASH_SEED=<base seed printed in the failure>; the
// kill instants are times and so only approximately reproducible.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type TestContext, after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { VhdDisk, checkDisk, createDifferencing, createDynamic } from '../storage/vhd/index.js';
import { type PlannedWrite, SECTOR, mix, prng, writeData } from './fixtures/crash-workload.js';
import { assertFlushedWritesPresent, createCrashParent } from './helpers/crash-check.js';

const WRITER = fileURLToPath(new URL('./fixtures/crash-writer.js', import.meta.url));
const DISK_BYTES = 64 * 1024 * 1024;
/** Writes per writer run: about a third of a second of work here, long enough for allocations throughout. */
const WRITES = 800;
/** Kills per disk type (after one run left to finish, which measures the writer's life). */
const KILLS_PER_TYPE = 18;
const BLOCK_SIZES = [64 * 1024, 512 * 1024, 2 * 1024 * 1024];
const BASE_SEED = Number(process.env.VHD_CRASH_SEED ?? 0x2005);
/** QEMU reads what the engine reads (checked on some dynamic runs; QEMU has no VHD differencing support). */
const HAVE_QEMU_IMG = spawnSync('qemu-img', ['--version']).status === 0;

type Kind = 'dynamic' | 'differencing';

/**
 * When to kill: a delay after spawning the writer, after it reports the disk open, or after
 * its n-th flush report (0 ms: at once); null lets it finish. Counting flushes places kills
 * across the writer's life whatever the machine's speed; the delays place them between.
 */
type KillPlan = { after: 'spawn' | 'open'; delayMs: number } | { after: 'flush'; flush: number; delayMs: number } | null;

interface RunOutcome {
  killed: boolean;
  lifeMs: number;
  flushes: number;
  lastFlush: number;
  /** When the writer reported the disk open, in ms after spawning; null if it never did. */
  openMs: number | null;
  /** The killed writer's lock was still there and the reopen took it over. */
  staleLock: boolean;
}

function describePlan(plan: KillPlan): string {
  if (!plan) return 'not killed (left to finish)';
  let event = 'spawning the writer';
  if (plan.after === 'open') event = 'the writer reported the disk open';
  else if (plan.after === 'flush') event = `reading flush report #${plan.flush}`;
  return `SIGKILL ${plan.delayMs.toFixed(2)} ms after ${event}`;
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

describe('VHD crash safety (kill -9 of a writing process)', () => {
  let dir: string;
  let parentPath: string;
  let parentSha: string;
  let totalKills = 0;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhd-crash-'));
    // The differencing runs' parent: known data in two of every three chunks, never written elsewhere.
    parentPath = path.join(dir, 'parent.vhd');
    await createCrashParent(parentPath, DISK_BYTES);
    parentSha = sha256(parentPath);
  });

  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** One writer run on a fresh disk; throws an informative assertion error on any fault. */
  async function runOnce(kind: Kind, seed: number, blockSize: number, plan: KillPlan, crossCheck = false): Promise<RunOutcome> {
    const diskPath = path.join(dir, `${kind}-${seed}.vhd`);
    if (kind === 'dynamic') await createDynamic(diskPath, { size: DISK_BYTES, blockSize });
    else await createDifferencing(diskPath, parentPath, { blockSize });

    const started = performance.now();
    const child = spawn(process.execPath, [WRITER, diskPath, String(seed), String(WRITES)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let pending = '';
    let stdoutTail: string[] = [];
    let stderr = '';
    let lastFlush = 0;
    let flushes = 0;
    let finished = false;
    let openMs: number | null = null;
    const kill = (): void => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      if (!plan) return;
      if (plan.delayMs <= 0) kill();
      else timer = setTimeout(kill, plan.delayMs);
    };
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => { stderr += chunk; });
    child.stdout.on('data', (chunk: string) => {
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const line of lines) {
        stdoutTail = [...stdoutTail.slice(-4), line];
        if (line.startsWith('F ')) {
          lastFlush = Number(line.slice(2));
          flushes++;
          if (plan?.after === 'flush' && flushes === plan.flush) arm();
        } else if (line === 'O') {
          openMs = performance.now() - started;
          if (plan?.after === 'open') arm();
        } else if (line === 'D') {
          finished = true;
        }
      }
    });
    if (plan?.after === 'spawn') arm();
    const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
    clearTimeout(timer);
    const lifeMs = performance.now() - started;

    const context = [
      `${kind} disk, base seed ${BASE_SEED}, writer seed ${seed}, block size ${blockSize / 1024} KiB, ${describePlan(plan)}`,
      `writer lived ${lifeMs.toFixed(1)} ms, exit code ${code}, signal ${signal}, last flush reported after write #${lastFlush}`,
      `writer stdout tail: ${JSON.stringify(stdoutTail)}${stderr ? `, stderr: ${stderr.trim()}` : ''}`,
    ].join('\n  ');
    const killed = signal === 'SIGKILL';
    assert.ok(killed || (code === 0 && finished), `the writer failed on its own:\n  ${context}`);
    if (finished) assert.equal(lastFlush, WRITES, `a writer that finished must have flushed everything:\n  ${context}`);

    // 1. The file is valid.
    const report = await checkDisk(diskPath);
    assert.ok(report.valid && report.errors.length === 0,
      `checkDisk finds the killed writer's disk invalid:\n  ${context}\n  errors: ${report.errors.map((e) => e.message).join('; ')}`);

    // 2. Every sector holds its value as of the last reported flush, or a later write's data.
    assertFlushedWritesPresent(diskPath, kind, seed, lastFlush, WRITES, context);
    if (crossCheck && kind === 'dynamic' && HAVE_QEMU_IMG) qemuAgrees(diskPath, context);

    // 3. The disk is usable: a writable open takes over the dead writer's lock; a write and
    //    a flush land, and the file is still valid.
    const staleLock = fs.existsSync(`${diskPath}.lock`);
    assert.ok(!staleLock || killed, `a writer that finished left its lock behind:\n  ${context}`);
    const reopened = VhdDisk.open(diskPath, { writable: true, holder: 'vhd-crash test' });
    const probe: PlannedWrite = { index: WRITES + 1, lba: mix(seed, 0x9e) % (reopened.size / SECTOR - 8), sectors: 8, flushAfter: true };
    try {
      reopened.write(writeData(seed, probe), probe.lba * SECTOR);
      reopened.flush();
    } finally {
      reopened.close();
    }
    assert.ok(!fs.existsSync(`${diskPath}.lock`), `the write lock is left behind after close:\n  ${context}`);
    const readBack = VhdDisk.open(diskPath);
    try {
      assert.ok(readBack.read(probe.lba * SECTOR, probe.sectors * SECTOR).equals(writeData(seed, probe)),
        `a write flushed after reopening the killed writer's disk does not read back:\n  ${context}`);
    } finally {
      readBack.close();
    }
    const again = await checkDisk(diskPath);
    assert.ok(again.valid, `the disk is invalid after one more write and flush:\n  ${context}\n  errors: ${again.errors.map((e) => e.message).join('; ')}`);

    // 4. A differencing disk never touches its parent.
    if (kind === 'differencing') assert.equal(sha256(parentPath), parentSha, `the parent file changed:\n  ${context}`);

    for (const name of fs.readdirSync(dir)) {
      if (name.startsWith(path.basename(diskPath))) fs.rmSync(path.join(dir, name), { force: true });
    }
    return { killed, lifeMs, flushes, lastFlush, openMs, staleLock };
  }

  /** qemu-img compares the file with a raw image of what the engine reads from it. */
  function qemuAgrees(diskPath: string, context: string): void {
    const raw = `${diskPath}.raw`;
    const disk = VhdDisk.open(diskPath);
    const fd = fs.openSync(raw, 'w');
    try {
      const chunk = Buffer.alloc(4 * 1024 * 1024);
      for (let offset = 0; offset < disk.size; offset += chunk.length) {
        const piece = chunk.subarray(0, Math.min(chunk.length, disk.size - offset));
        disk.readInto(piece, offset);
        fs.writeSync(fd, piece, 0, piece.length, offset);
      }
    } finally {
      fs.closeSync(fd);
      disk.close();
    }
    const result = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'vpc', raw, diskPath], { encoding: 'utf8' });
    fs.rmSync(raw, { force: true });
    assert.equal(result.status, 0, `qemu-img reads the killed writer's disk differently from the engine:\n  ${context}\n  ${result.stdout}${result.stderr}`);
  }

  /** Runs one disk type: a run left to finish (which times the writer), then the kills. */
  async function campaign(kind: Kind, t: TestContext): Promise<void> {
    const rng = prng(mix(BASE_SEED, kind === 'dynamic' ? 1 : 2));
    const nextSeed = (): number => (mix(BASE_SEED, Math.floor(rng() * 2 ** 32)) % 0x7fffffff) + 1;
    const pickBlockSize = (): number => BLOCK_SIZES[Math.floor(rng() * BLOCK_SIZES.length)];
    const full = await runOnce(kind, nextSeed(), pickBlockSize(), null);
    let kills = 0;
    const killedAt: string[] = [];
    // A run that outlives its kill (it finished first) is still verified, and another is added,
    // up to a few extra, so that KILLS_PER_TYPE kills happen.
    let runs = 0;
    let staleLocks = 0;
    // How long the writer takes from open to exit: the shortest seen so far, as load varies.
    let writingMs = full.lifeMs - (full.openMs ?? 0);
    for (let k = 0; kills < KILLS_PER_TYPE && runs < KILLS_PER_TYPE + 8; k++, runs++) {
      const mode = rng();
      let plan: KillPlan;
      const openMs = full.openMs ?? 0;
      if (k === 0) plan = { after: 'spawn', delayMs: 0 }; // before the writer has even started
      else if (mode < 0.12) plan = { after: 'spawn', delayMs: rng() * (openMs + 10) }; // start-up, opening, the first writes
      else if (mode < 0.45) plan = { after: 'open', delayMs: rng() * 0.9 * writingMs }; // while writing
      else {
        // Right after a flush returned, or a few writes later; any seed's writer flushes
        // about 240 times (0.3 of 800 writes), never fewer than 200 in practice.
        plan = { after: 'flush', flush: 1 + Math.floor(rng() * Math.min(200, full.flushes)), delayMs: rng() < 0.5 ? 0 : rng() * 4 };
      }
      const outcome = await runOnce(kind, nextSeed(), pickBlockSize(), plan, runs % 3 === 0);
      if (outcome.staleLock) staleLocks++;
      if (!outcome.killed) writingMs = Math.min(writingMs, outcome.lifeMs - (outcome.openMs ?? 0));
      if (outcome.killed) {
        kills++;
        killedAt.push(`${outcome.lifeMs.toFixed(0)}/${outcome.lastFlush}`);
      }
    }
    t.diagnostic(`writer left alone: open after ${full.openMs?.toFixed(0)} ms, done after ${full.lifeMs.toFixed(0)} ms, ` +
      `${full.flushes} flushes; ${runs} runs, ${staleLocks} stale locks taken over; killed at (ms after spawn / writes flushed): ${killedAt.join(', ')}`);
    totalKills += kills;
    assert.equal(kills, KILLS_PER_TYPE,
      `only ${kills} of ${runs} writer runs were killed before finishing (the writer lived ${full.lifeMs.toFixed(0)} ms when left alone)`);
  }

  it('a kill -9 at any instant leaves a valid dynamic disk holding every flushed write', async (t) => {
    await campaign('dynamic', t);
  });

  it('a kill -9 at any instant leaves a valid differencing disk holding every flushed write, and its parent untouched', async (t) => {
    await campaign('differencing', t);
  });

  it('the writer was killed at least 30 times in all', () => {
    assert.ok(totalKills >= 30, `only ${totalKills} kills happened`);
  });
});
