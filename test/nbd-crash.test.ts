// Crash safety through the NBD server: "vsctl vhd serve" is killed with SIGKILL at random
// instants while this test, as an NBD client, writes to the served disk. Each time the file must
// pass checkDisk and hold every write that was acknowledged before the last FLUSH the server
// acknowledged; writes after it may or may not have landed, sector by sector, and nothing else
// may appear. A differencing child's parent must not change at all.
//
// The writes are the seeded sequence of test/fixtures/crash-workload.ts (as in vhd-crash.test.ts:
// every sector names the write that produced it), sent pipelined, up to WINDOW at a time. Where
// the plan puts a flush, the client waits until every write sent so far is acknowledged, sends
// FLUSH and carries on writing without waiting for it; when the FLUSH is acknowledged, every
// write up to that point counts as flushed. After the kill the disk is checked, its content
// verified against the replayed sequence, and it is served again (the dead server's write lock
// is taken over) to check that it reads the same through NBD and takes a new write.
//
// To reproduce a failure, run with NBD_CRASH_SEED=<base seed printed in the failure>; the kill
// instants are times and so only approximately reproducible.

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { type TestContext, after, before, describe, it } from 'node:test';
import { VhdDisk, checkDisk, createDifferencing, createDynamic } from '../storage/vhd/index.js';
import {
  type PlannedWrite, SECTOR, mix, planWrite, prng, writeData,
} from './fixtures/crash-workload.js';
import { assertFlushedWritesPresent, createCrashParent } from './helpers/crash-check.js';
import { NbdClient, NbdClosedError } from './helpers/nbd-client.js';
import { serveVhd } from './helpers/nbd-fixtures.js';
import { MiB, makeTempDir, removeDir } from './helpers/vhd-fixtures.js';

const DISK_BYTES = 32 * MiB;
/** Writes per run: about a third of a second of work here, long enough for allocations throughout. */
const WRITES = 800;
/** Writes in flight at once. */
const WINDOW = 16;
/** Kills per disk type (after one run left to finish, which measures the workload). */
const KILLS_PER_KIND = 12;
const BLOCK_SIZES = [512 * 1024, 2 * MiB];
const BASE_SEED = Number(process.env.NBD_CRASH_SEED ?? 0x2bd);

type Kind = 'dynamic' | 'differencing';

/**
 * When to kill the server: at once once it is ready, a delay after the client started writing,
 * or a delay (0: at once) after the client saw its n-th FLUSH acknowledged; null lets it finish.
 */
type KillPlan = { after: 'ready' } | { after: 'start'; delayMs: number } | { after: 'flush'; flush: number; delayMs: number } | null;

function describePlan(plan: KillPlan): string {
  if (!plan) return 'not killed (left to finish)';
  if (plan.after === 'ready') return 'SIGKILL as soon as it was ready';
  if (plan.after === 'start') return `SIGKILL ${plan.delayMs.toFixed(2)} ms after the client started writing`;
  return `SIGKILL ${plan.delayMs.toFixed(2)} ms after the client saw FLUSH #${plan.flush} acknowledged`;
}

interface Progress {
  /** Writes sent (1..sent); later ones cannot have landed. */
  sent: number;
  /** Every write up to this one was acknowledged before a FLUSH that was acknowledged. */
  lastFlush: number;
  flushes: number;
  done: boolean;
}

function exited(child: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve([child.exitCode, child.signalCode]);
  return once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
}

/**
 * Sends writes 1..WRITES of the sequence, pipelined, with the plan's flushes; see the file
 * comment. Rejects with NbdClosedError when the server dies.
 */
async function writeWorkload(client: NbdClient, seed: number, totalSectors: number, blockSize: number, progress: Progress, onFlush: (n: number) => void): Promise<void> {
  const inflight = new Set<Promise<void>>();
  const track = (p: Promise<void>): void => {
    const tracked: Promise<void> = p.finally(() => inflight.delete(tracked));
    tracked.catch(() => { /* awaited through the set */ });
    inflight.add(tracked);
  };
  for (let index = 1; index <= WRITES; index++) {
    const w = planWrite(seed, index, totalSectors, blockSize);
    while (inflight.size >= WINDOW) await Promise.race(inflight);
    track(client.write(w.lba * SECTOR, writeData(seed, w)));
    progress.sent = index;
    if (w.flushAfter || index === WRITES) {
      // Only writes already acknowledged are covered by the FLUSH sent now.
      await Promise.all(inflight);
      track(client.flush().then(() => {
        progress.lastFlush = Math.max(progress.lastFlush, index);
        onFlush(++progress.flushes);
      }));
    }
  }
  await Promise.all(inflight);
  progress.done = true;
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

interface RunOutcome {
  killed: boolean;
  /** ms from the client's first write to the end of the workload or the kill. */
  writingMs: number;
  flushes: number;
  lastFlush: number;
  sent: number;
}

describe('NBD server crash safety (kill -9 of "vsctl vhd serve" while a client writes)', { timeout: 90_000 }, () => {
  let dir: string;
  let parentPath: string;
  let parentSha: string;
  let totalKills = 0;

  before(async () => {
    dir = makeTempDir('nbd-crash');
    // The differencing runs' parent: known data in two of every three chunks, never written elsewhere.
    parentPath = path.join(dir, 'parent.vhd');
    await createCrashParent(parentPath, DISK_BYTES);
    parentSha = sha256(parentPath);
  });

  after(() => {
    if (dir) removeDir(dir);
  });

  /** One server life on a fresh disk; throws an informative assertion error on any fault. */
  async function runOnce(kind: Kind, seed: number, blockSize: number, plan: KillPlan, reserve: boolean): Promise<RunOutcome> {
    const diskPath = path.join(dir, `${kind}-${seed}.vhd`);
    if (kind === 'dynamic') await createDynamic(diskPath, { size: DISK_BYTES, blockSize });
    else await createDifferencing(diskPath, parentPath, { blockSize });
    const socket = path.join(dir, `${kind}-${seed}.sock`);

    const served = await serveVhd(diskPath, { socket });
    const progress: Progress = { sent: 0, lastFlush: 0, flushes: 0, done: false };
    let killed = false;
    let timer: NodeJS.Timeout | undefined;
    const kill = (): void => {
      if (served.child.exitCode === null && served.child.signalCode === null && !progress.done) {
        killed = true;
        served.child.kill('SIGKILL');
      }
    };
    const arm = (delayMs: number): void => {
      if (delayMs <= 0) kill();
      else timer = setTimeout(kill, delayMs);
    };
    let client: NbdClient | null = null;
    let failure: unknown = null;
    let writingMs = 0;
    try {
      if (plan?.after === 'ready') kill();
      client = await NbdClient.open(socket, '');
      const { size } = client.export!;
      const started = performance.now();
      if (plan?.after === 'start') arm(plan.delayMs);
      const onFlush = (n: number): void => {
        if (plan?.after === 'flush' && n === plan.flush) arm(plan.delayMs);
      };
      await writeWorkload(client, seed, size / SECTOR, blockSize, progress, onFlush);
      writingMs = performance.now() - started;
      assert.ok(await client.disconnect(), 'the server did not close after DISC');
    } catch (e) {
      failure = e;
    } finally {
      clearTimeout(timer);
      client?.destroy();
    }
    const context = [
      `${kind} disk, base seed ${BASE_SEED}, workload seed ${seed}, block size ${blockSize / 1024} KiB, ${describePlan(plan)}`,
      `${progress.sent} writes sent, ${progress.flushes} flushes acknowledged, the last covering writes 1-${progress.lastFlush}`,
      `failure seen by the client: ${failure === null ? 'none' : String(failure)}; server stderr: ${served.stderr().trim() || '(none)'}`,
    ].join('\n  ');
    if (!killed) {
      // Finished before the kill: stop it normally (SIGTERM flushes and releases the disk).
      assert.equal(failure, null, `the workload failed though the server was not killed:\n  ${context}`);
      served.child.kill('SIGTERM');
    }
    const [code, signal] = await exited(served.child);
    if (killed) {
      assert.equal(signal, 'SIGKILL', `the server was not killed by SIGKILL:\n  ${context}`);
      assert.ok(failure === null || failure instanceof NbdClosedError || (failure instanceof Error && /connect|ECONNREFUSED|ENOENT|closed/.test(failure.message)),
        `the client failed otherwise than by losing the connection:\n  ${context}\n  ${failure instanceof Error ? failure.stack : ''}`);
    } else {
      assert.equal(code, 0, `vsctl vhd serve exited ${code ?? signal} on SIGTERM:\n  ${context}`);
      assert.equal(progress.lastFlush, WRITES, `a workload that finished must have flushed everything:\n  ${context}`);
    }

    // 1. The file is valid.
    const report = await checkDisk(diskPath);
    assert.ok(report.valid && report.errors.length === 0,
      `checkDisk finds the disk invalid:\n  ${context}\n  errors: ${report.errors.map((e) => e.message).join('; ')}`);

    // 2. Every sector holds its value as of the last acknowledged FLUSH, or a later write's data.
    assertFlushedWritesPresent(diskPath, kind, seed, progress.lastFlush, progress.sent, context);

    // 3. A differencing disk never touches its parent.
    if (kind === 'differencing') assert.equal(sha256(parentPath), parentSha, `the parent file changed:\n  ${context}`);

    // 4. The disk can be served again (the dead server's lock is taken over): it reads the same
    //    through NBD and takes a write and a flush.
    if (reserve) await serveAgain(diskPath, socket, seed, context);

    for (const name of fs.readdirSync(dir)) {
      if (name.startsWith(`${kind}-${seed}.`)) fs.rmSync(path.join(dir, name), { force: true });
    }
    return { killed, writingMs, flushes: progress.flushes, lastFlush: progress.lastFlush, sent: progress.sent };
  }

  async function serveAgain(diskPath: string, socket: string, seed: number, context: string): Promise<void> {
    const direct = VhdDisk.open(diskPath);
    const expected = direct.read(0, direct.size);
    const totalSectors = direct.size / SECTOR;
    direct.close();
    const served = await serveVhd(diskPath, { socket });
    const probe: PlannedWrite = { index: WRITES + 1, lba: mix(seed, 0x9e) % (totalSectors - 8), sectors: 8, flushAfter: true };
    try {
      const client = await NbdClient.open(socket, '', { structured: true });
      for (let at = 0; at < expected.length; at += 8 * MiB) {
        const n = Math.min(8 * MiB, expected.length - at);
        assert.ok((await client.read(at, n)).equals(expected.subarray(at, at + n)), `the disk reads differently through NBD after the kill (at ${at}):\n  ${context}`);
      }
      await client.write(probe.lba * SECTOR, writeData(seed, probe));
      await client.flush();
      assert.ok(await client.disconnect());
    } finally {
      served.child.kill('SIGTERM');
    }
    const [code, signal] = await exited(served.child);
    assert.equal(code, 0, `serving the disk again: vsctl vhd serve exited ${code ?? signal}: ${served.stderr()}\n  ${context}`);
    assert.ok(!fs.existsSync(`${diskPath}.lock`), `the write lock is left behind after serving again:\n  ${context}`);
    const again = await checkDisk(diskPath);
    assert.ok(again.valid, `the disk is invalid after one more write and flush:\n  ${context}\n  errors: ${again.errors.map((e) => e.message).join('; ')}`);
    const readBack = VhdDisk.open(diskPath);
    try {
      assert.ok(readBack.read(probe.lba * SECTOR, probe.sectors * SECTOR).equals(writeData(seed, probe)),
        `a write flushed through NBD after the kill does not read back:\n  ${context}`);
    } finally {
      readBack.close();
    }
  }

  /** One disk type: a run left to finish (which times the workload), then the kills. */
  async function campaign(kind: Kind, t: TestContext): Promise<void> {
    const rng = prng(mix(BASE_SEED, kind === 'dynamic' ? 1 : 2));
    const nextSeed = (): number => (mix(BASE_SEED, Math.floor(rng() * 2 ** 32)) % 0x7fffffff) + 1;
    const pickBlockSize = (): number => BLOCK_SIZES[Math.floor(rng() * BLOCK_SIZES.length)];
    const full = await runOnce(kind, nextSeed(), pickBlockSize(), null, true);
    assert.ok(full.flushes > 20, `a whole run acknowledged only ${full.flushes} flushes`);
    let writingMs = full.writingMs;
    let kills = 0;
    let runs = 0;
    const killedAt: string[] = [];
    // A run that outlives its kill (it finished first) is still verified, and another is added,
    // up to a few extra, so that KILLS_PER_KIND kills land while the client writes.
    for (let k = 0; kills < KILLS_PER_KIND && runs < KILLS_PER_KIND + 5; k++, runs++) {
      let plan: KillPlan;
      const mode = rng();
      if (k === 0) plan = { after: 'ready' };
      else if (mode < 0.5) plan = { after: 'start', delayMs: rng() * 0.9 * writingMs };
      else plan = { after: 'flush', flush: 1 + Math.floor(rng() * 0.9 * full.flushes), delayMs: rng() < 0.5 ? 0 : rng() * 3 };
      const outcome = await runOnce(kind, nextSeed(), pickBlockSize(), plan, k % 3 === 0);
      if (!outcome.killed) {
        writingMs = Math.min(writingMs, outcome.writingMs);
        continue;
      }
      kills++;
      killedAt.push(`${outcome.sent}/${outcome.lastFlush}`);
    }
    t.diagnostic(`workload left alone: ${full.writingMs.toFixed(0)} ms, ${full.flushes} flushes; ${runs} runs; ` +
      `killed with (writes sent / writes flushed): ${killedAt.join(', ')}`);
    totalKills += kills;
    assert.equal(kills, KILLS_PER_KIND, `only ${kills} of ${runs} runs were killed before the workload finished`);
  }

  it('a kill -9 at any instant leaves a valid dynamic disk holding every flushed write', async (t) => {
    await campaign('dynamic', t);
  });

  it('a kill -9 at any instant leaves a valid differencing disk holding every flushed write, and its parent untouched', async (t) => {
    await campaign('differencing', t);
  });

  it(`the server was killed ${2 * KILLS_PER_KIND} times in all`, () => {
    assert.equal(totalKills, 2 * KILLS_PER_KIND);
  });
});
