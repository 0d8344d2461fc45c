// Long operations interrupted by SIGKILL at random points: compact, merge and expand each leave
// a valid disk with every byte of the guest's data, and running the same command again
// completes the job.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { VhdDisk, checkDisk, createDifferencing, createDynamic, createFixed, expandDisk } from '../storage/vhd/index.js';
import { KiB, MiB, VSCTL, makeTempDir, patternBytes, qemuImg, qemuVirtualSize, removeDir, sha256File, vsctl } from './helpers/vhd-fixtures.js';
import { prng } from './helpers/random.js';

const BLOCK = 64 * KiB;
const SIZE = 32 * MiB;
const KILLS = 8;
const EXPAND_KILLER = fileURLToPath(new URL('./fixtures/expand-killer.js', import.meta.url));

/** Runs vsctl and kills it with SIGKILL after `delayMs` (or lets it finish first). */
function runKilledAfter(args: string[], delayMs: number): Promise<'killed' | 'finished'> {
  return new Promise((resolve) => {
    const child = spawn(VSCTL, args, { stdio: 'ignore' });
    const timer = setTimeout(() => child.kill('SIGKILL'), delayMs);
    child.on('exit', (_code, signal) => {
      clearTimeout(timer);
      resolve(signal === 'SIGKILL' ? 'killed' : 'finished');
    });
  });
}

function readAll(file: string): Buffer {
  const disk = VhdDisk.open(file);
  try {
    return disk.read(0, disk.size);
  } finally {
    disk.close();
  }
}

function writeBlocks(file: string, blocks: number[], seed: number): void {
  const disk = VhdDisk.open(file, { writable: true });
  try {
    for (const block of blocks) disk.write(patternBytes(seed + block, BLOCK), block * BLOCK);
  } finally {
    disk.close();
  }
}

/** What a disk's structure is at a moment: its file size and where each block lies. */
function layoutState(file: string): string {
  const disk = VhdDisk.open(file);
  try {
    const bat = disk.file.layout.bat!;
    return `${fs.statSync(file).size}:${crypto.createHash('sha1').update(Buffer.from(bat.buffer, bat.byteOffset, bat.byteLength)).digest('hex').slice(0, 8)}`;
  } finally {
    disk.close();
  }
}

/**
 * The kills must land inside the operation, not only before it starts or after it ends: at
 * least two kills must leave the disk in a state other than the one a finished run leaves,
 * and they must not all leave the same state.
 */
function assertSomeKilledMidway(outcomes: Array<{ outcome: string; state: string }>): void {
  const finished = new Set(outcomes.filter((o) => o.outcome === 'finished').map((o) => o.state));
  const killed = outcomes.filter((o) => o.outcome === 'killed');
  const unfinished = killed.filter((o) => !finished.has(o.state));
  assert.ok(killed.length >= KILLS / 2 && unfinished.length >= 2 && new Set(killed.map((o) => o.state)).size >= 2,
    `kills did not land inside the operation: ${outcomes.map((o) => `${o.outcome} ${o.state}`).join(', ')}`);
}

async function assertValid(file: string, what: string): Promise<void> {
  const report = await checkDisk(file);
  assert.deepEqual(report.errors.map((e) => e.message), [], `${what}: ${file} is not valid`);
}

describe('interrupted long operations', () => {
  let dir: string;
  const random = prng(20261127);
  /**
   * Kill points spread between the process's start-up (timed by a "vsctl vhd info" of the same
   * file) and the end of a full run, from the faster of two runs of each on this machine. A run
   * that finishes before its kill shortens the estimate of the whole; a kill that left the file
   * untouched (when the caller can tell) lengthens the estimate of the start-up and does not
   * count. Attempts go on until KILLS kills have landed (at most three times as many attempts).
   */
  async function killSchedule(prepare: (file: string) => Promise<void>, args: (file: string) => string[]) {
    let duration = Infinity;
    let startup = Infinity;
    for (let i = 0; i < 2; i++) {
      const file = path.join(dir, `calibrate-child-${Math.floor(random() * 1e9)}.vhd`);
      await prepare(file);
      let start = Date.now();
      assert.equal(await runKilledAfter(['vhd', 'info', file, '--json'], 60_000), 'finished');
      startup = Math.min(startup, Date.now() - start);
      start = Date.now();
      assert.equal(await runKilledAfter(args(file), 60_000), 'finished');
      duration = Math.min(duration, Date.now() - start);
    }
    let kills = 0;
    let attempts = 0;
    return {
      /** The next kill delay in ms, or null when enough kills have landed. */
      next(): number | null {
        if (kills >= KILLS || attempts >= KILLS * 3) return null;
        attempts++;
        const from = Math.min(startup, duration * 0.9);
        return Math.floor(from + (duration - from) * (0.1 + 0.85 * ((kills + random()) / KILLS)));
      },
      get attempt(): number {
        return attempts;
      },
      async run(argv: string[], delay: number, untouched?: () => boolean): Promise<'killed' | 'finished'> {
        const start = Date.now();
        const outcome = await runKilledAfter(argv, delay);
        if (outcome === 'finished') duration = Math.min(duration, Date.now() - start);
        else if (untouched?.()) startup = Math.max(startup, delay);
        else kills++;
        return outcome;
      },
    };
  }

  before(() => { dir = makeTempDir('interrupt'); });
  after(() => removeDir(dir));

  test('a compact killed at any point keeps every byte, and running it again finishes it', async () => {
    const prepare = async (file: string): Promise<void> => {
      await createDynamic(file, { size: SIZE, blockSize: BLOCK });
      const all = Array.from({ length: SIZE / BLOCK }, (_, b) => b);
      writeBlocks(file, all, 1);
      // Zero every other block so that compact drops half and moves most of the rest.
      const disk = VhdDisk.open(file, { writable: true });
      for (const block of all.filter((b) => b % 2 === 0)) disk.write(Buffer.alloc(BLOCK), block * BLOCK);
      disk.close();
    };
    const args = (file: string): string[] => ['vhd', 'compact', file];
    const outcomes: Array<{ outcome: string; state: string }> = [];
    const schedule = await killSchedule(prepare, args);
    for (let delay = schedule.next(); delay !== null; delay = schedule.next()) {
      const file = path.join(dir, `compact-${schedule.attempt}.vhd`);
      await prepare(file);
      const expected = readAll(file);
      const beforeHash = sha256File(file);
      const outcome = await schedule.run(args(file), delay, () => sha256File(file) === beforeHash);
      outcomes.push({ outcome, state: layoutState(file) });
      await assertValid(file, `compact killed after ${delay} ms (${outcome})`);
      assert.ok(readAll(file).equals(expected), `compact killed after ${delay} ms changed the data`);
      const again = vsctl(['vhd', 'compact', file, '--json']);
      assert.equal(again.status, 0, again.stderr);
      assert.ok(readAll(file).equals(expected));
      await assertValid(file, 'compact run again');
      const blocksLeft = SIZE / BLOCK / 2;
      assert.ok(fs.statSync(file).size < 1536 + 4 * (SIZE / BLOCK) + blocksLeft * (BLOCK + 512) + 4096,
        `after the second compact the file holds only the ${blocksLeft} data blocks`);
    }
    assertSomeKilledMidway(outcomes);
  });

  test('a merge killed at any point leaves both disks valid, and running it again completes it', async () => {
    const prepare = async (child: string): Promise<void> => {
      const parent = child.replace(/child/, 'parent');
      await createDynamic(parent, { size: SIZE, blockSize: BLOCK });
      writeBlocks(parent, [0, 5, 100, 200], 7);
      await createDifferencing(child, parent);
      writeBlocks(child, Array.from({ length: 300 }, (_, b) => b + 50), 9);
    };
    const args = (child: string): string[] => ['vhd', 'merge', child];
    const outcomes: Array<{ outcome: string; state: string }> = [];
    const schedule = await killSchedule(prepare, args);
    for (let delay = schedule.next(); delay !== null; delay = schedule.next()) {
      const child = path.join(dir, `child-${schedule.attempt}.vhd`);
      const parent = path.join(dir, `parent-${schedule.attempt}.vhd`);
      await prepare(child);
      const expected = readAll(child);
      const parentHash = sha256File(parent);
      const outcome = await schedule.run(args(child), delay, () => fs.existsSync(child) && sha256File(parent) === parentHash);
      outcomes.push({ outcome, state: layoutState(parent) });
      await assertValid(parent, `merge killed after ${delay} ms (${outcome})`);
      if (fs.existsSync(child)) {
        await assertValid(child, `merge killed after ${delay} ms`);
        assert.ok(readAll(child).equals(expected), 'the child still reads as before the merge');
        const again = vsctl(['vhd', 'merge', child]);
        assert.equal(again.status, 0, again.stderr);
      }
      assert.equal(fs.existsSync(child), false, 'the merged child is removed');
      assert.ok(readAll(parent).equals(expected), `after merge (killed after ${delay} ms) the parent holds the overlay`);
    }
    assertSomeKilledMidway(outcomes);
  });

  test('an expand killed at any point leaves the old data and a valid disk of the old or the new size', async () => {
    const prepare = async (file: string): Promise<void> => {
      await createDynamic(file, { size: SIZE, blockSize: BLOCK });
      writeBlocks(file, Array.from({ length: 64 }, (_, b) => b), 3);
    };
    const args = (file: string): string[] => ['vhd', 'expand', file, '--size', '40G'];
    const outcomes: Array<{ outcome: string; state: string }> = [];
    const schedule = await killSchedule(prepare, args);
    for (let delay = schedule.next(); delay !== null; delay = schedule.next()) {
      const file = path.join(dir, `expand-${schedule.attempt}.vhd`);
      await prepare(file);
      const before = readAll(file);
      const beforeHash = sha256File(file);
      const outcome = await schedule.run(args(file), delay, () => sha256File(file) === beforeHash);
      outcomes.push({ outcome, state: layoutState(file) });
      await assertValid(file, `expand killed after ${delay} ms (${outcome})`);
      const disk = VhdDisk.open(file);
      const size = disk.size;
      const old = disk.read(0, before.length);
      disk.close();
      assert.ok(old.equals(before), `expand killed after ${delay} ms changed the data`);
      if (size === before.length) {
        const again = vsctl(['vhd', 'expand', file, '--size', '40G']);
        assert.equal(again.status, 0, again.stderr);
      } else {
        assert.notEqual(sha256File(file), beforeHash);
      }
      const grown = VhdDisk.open(file);
      assert.ok(grown.size >= 40 * 1024 ** 3 && grown.size < 40 * 1024 ** 3 + 8 * MiB, `the disk is 40 GiB (rounded up to its geometry), not ${grown.size}`);
      assert.ok(grown.read(0, before.length).equals(before));
      assert.ok(grown.read(grown.size - 512, 512).equals(Buffer.alloc(512)));
      grown.close();
    }
    assertSomeKilledMidway(outcomes);
  });
  test('a fixed disk\'s expand killed after each of its writes and syncs reads at the old size, or at the new one with zeros in all the new space', async () => {
    const original = path.join(dir, 'fixed-original.vhd');
    await createFixed(original, 4 * MiB);
    const disk = VhdDisk.open(original, { writable: true });
    const oldSize = disk.size;
    disk.write(patternBytes(5, oldSize), 0);
    disk.close();
    const before = readAll(original);
    const grow = 12 * MiB;
    const expandCopy = (name: string, step: number): ReturnType<typeof spawnSync> => {
      fs.copyFileSync(original, path.join(dir, name));
      return spawnSync(process.execPath, [EXPAND_KILLER, path.join(dir, name), String(grow), String(step)], { encoding: 'utf8' });
    };
    const full = expandCopy('fixed-full.vhd', Number.MAX_SAFE_INTEGER);
    assert.equal(full.status, 0, String(full.stderr));
    const steps = Number(/^S (\d+)$/m.exec(String(full.stdout))?.[1]);
    const after = readAll(path.join(dir, 'fixed-full.vhd'));
    const newSize = after.length;
    assert.ok(steps >= 4 && newSize > oldSize + 4 * MiB, `a finished expand took ${steps} steps to ${newSize} bytes`);
    const seen = new Set<number>();
    for (let step = 1; step <= steps; step++) {
      const name = `fixed-${step}.vhd`;
      const file = path.join(dir, name);
      const killed = expandCopy(name, step);
      assert.equal(killed.signal, 'SIGKILL', `the expand did not die after step ${step}: ${String(killed.stderr)}`);
      await assertValid(file, `expand killed after step ${step}`);
      const opened = VhdDisk.open(file);
      const size = opened.size;
      const data = opened.read(0, size);
      opened.close();
      seen.add(size);
      assert.ok(size === oldSize || size === newSize, `after step ${step} the disk is ${size} bytes`);
      assert.ok(data.subarray(0, oldSize).equals(before), `after step ${step} the old data changed`);
      assert.ok(data.subarray(oldSize).equals(Buffer.alloc(size - oldSize)),
        `after step ${step} the new space (the old footer's 512 bytes first) does not read as zeros`);
      assert.equal(qemuVirtualSize(file), size, `qemu-img reads the disk after step ${step} at another size`);
      qemuImg('compare', '-f', 'vpc', '-F', 'vpc', file, path.join(dir, size === oldSize ? 'fixed-original.vhd' : 'fixed-full.vhd'));
      if (size === oldSize) await expandDisk(file, grow);
      const grown = VhdDisk.open(file);
      assert.equal(grown.size, newSize, `expanding again after step ${step} finishes the job`);
      assert.ok(grown.read(0, newSize).equals(after));
      grown.close();
      fs.rmSync(file);
    }
    assert.deepEqual([...seen].sort((a, b) => a - b), [oldSize, newSize], 'kills left both the old and the new disk');
  });
});
