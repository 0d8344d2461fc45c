// The mutated-VHD fuzzer. Valid fixed, dynamic and differencing disks are damaged by seeded
// mutations: bit flips inside one structure, truncations, and header, footer, locator and
// block table fields overwritten with telling values (0, all ones, the file's size, ...) with
// the checksum made right again, so that the damage reaches the checks behind it. Each damaged
// file goes through info, check, reads and convert in a child process (helpers/fuzz-runner.ts)
// with a time limit per case: a case that hangs, or that ends in anything but an engine
// refusal (VhdError), fails the test, naming its seed and its damage.
//
// test/vhd-corruption.test.ts checks what a damaged file reads as, in-process; this one is
// about never hanging or crashing, in every operation that opens a file.
//
// VSERVER_FUZZ_CASES (default 1000, 10 to 25 s here) sets the number of cases,
// VSERVER_FUZZ_SEED the first case's seed (case i has seed + i); the seed is printed.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { VhdDisk, createDifferencing, createDynamic, createFixed } from '../storage/vhd/index.js';
import type { CaseLine } from './helpers/fuzz-runner.js';
import { prng } from './helpers/random.js';
import { KiB, MiB, PROJECT_ROOT, makeTempDir, patternBytes, removeDir } from './helpers/vhd-fixtures.js';

const CASES = Number(process.env.VSERVER_FUZZ_CASES ?? 1000);
const SEED = Number(process.env.VSERVER_FUZZ_SEED ?? 0xf022);
/** A case takes milliseconds; one that takes this long is hung. */
const CASE_LIMIT_MS = 10_000;
/** Damaged files written at a time, and run by one child process. */
const BATCH = 30;
const RUNNER = path.join(PROJECT_ROOT, 'dist', 'test', 'helpers', 'fuzz-runner.js');
const BLOCK_SIZE = 512 * KiB;

const dir = makeTempDir('fuzz');
after(() => removeDir(dir));

type Kind = 'fixed' | 'dynamic' | 'differencing';
const KINDS: Kind[] = ['fixed', 'dynamic', 'differencing'];
const templates = {} as Record<Kind, string>;

function writeData(file: string, extents: Array<[number, number]>, seed: number): void {
  const disk = VhdDisk.open(file, { writable: true });
  try {
    extents.forEach(([offset, length], i) => disk.write(patternBytes(seed + i, length), offset));
  } finally {
    disk.close();
  }
}

before(async () => {
  templates.fixed = path.join(dir, 'fixed.vhd');
  await createFixed(templates.fixed, 2 * MiB);
  writeData(templates.fixed, [[0, 64 * KiB], [MiB, 4 * KiB]], 1);
  templates.dynamic = path.join(dir, 'dynamic.vhd');
  await createDynamic(templates.dynamic, { size: 4 * MiB, blockSize: BLOCK_SIZE });
  writeData(templates.dynamic, [[0, 8 * KiB], [BLOCK_SIZE + 512, 4 * KiB], [3 * MiB, BLOCK_SIZE]], 2);
  // The parent stays undamaged beside the damaged children, found through their locators.
  const parent = path.join(dir, 'parent.vhd');
  await createDynamic(parent, { size: 4 * MiB, blockSize: BLOCK_SIZE });
  writeData(parent, [[0, 64 * KiB], [2 * MiB, 64 * KiB]], 3);
  templates.differencing = path.join(dir, 'differencing.vhd');
  await createDifferencing(templates.differencing, parent, { blockSize: BLOCK_SIZE });
  writeData(templates.differencing, [[512, 1024], [2 * MiB + 4096, 8 * KiB]], 4);
});

// ---------------------------------------------------------------------------------------------
// Mutations

interface Region { name: string; start: number; length: number }

/** The structures of a disk file, from its own fields (read from the undamaged template). */
function regionsOf(bytes: Buffer, kind: Kind): Region[] {
  const size = bytes.length;
  const regions: Region[] = [{ name: 'footer', start: size - 512, length: 512 }, { name: 'whole file', start: 0, length: size }];
  if (kind === 'fixed') return regions;
  const header = Number(bytes.readBigUInt64BE(size - 512 + 16));
  const table = Number(bytes.readBigUInt64BE(header + 16));
  const entries = bytes.readUInt32BE(header + 28);
  regions.push(
    { name: 'footer copy', start: 0, length: 512 },
    { name: 'dynamic header', start: header, length: 1024 },
    { name: 'parent locator entries', start: header + 576, length: 8 * 24 },
    { name: 'block table', start: table, length: entries * 4 },
  );
  for (let i = 0; i < entries; i++) {
    const entry = bytes.readUInt32BE(table + i * 4);
    if (entry !== 0xffffffff) regions.push({ name: `bitmap of block ${i}`, start: entry * 512, length: 512 });
  }
  for (let i = 0; i < 8; i++) {
    const at = header + 576 + i * 24;
    if (bytes.readUInt32BE(at + 8) > 0) regions.push({ name: `parent locator ${i} data`, start: Number(bytes.readBigUInt64BE(at + 16)), length: bytes.readUInt32BE(at + 8) });
  }
  return regions;
}

/** One's complement of the byte sum, the checksum field itself counted as zero. */
function fixChecksum(bytes: Buffer, start: number, length: number, field: number): void {
  bytes.writeUInt32BE(0, start + field);
  let sum = 0;
  for (let i = start; i < start + length; i++) sum += bytes[i];
  bytes.writeUInt32BE(~sum >>> 0, start + field);
}

interface Field { name: string; structure: 'footer' | 'header' | 'table'; offset: number; width: 4 | 8 }
const FOOTER_FIELDS: Field[] = [
  { name: 'features', offset: 8 }, { name: 'format version', offset: 12 }, { name: 'data offset', offset: 16, width: 8 },
  { name: 'original size', offset: 40, width: 8 }, { name: 'current size', offset: 48, width: 8 },
  { name: 'geometry', offset: 56 }, { name: 'disk type', offset: 60 },
].map((f) => ({ width: 4, ...f, structure: 'footer' }) as Field);
const HEADER_FIELDS: Field[] = [
  { name: 'data offset', offset: 8, width: 8 }, { name: 'table offset', offset: 16, width: 8 }, { name: 'header version', offset: 24 },
  { name: 'max table entries', offset: 28 }, { name: 'block size', offset: 32 },
  ...[0, 1].flatMap((i) => [
    { name: `locator ${i} code`, offset: 576 + i * 24 }, { name: `locator ${i} data space`, offset: 576 + i * 24 + 4 },
    { name: `locator ${i} data length`, offset: 576 + i * 24 + 8 }, { name: `locator ${i} data offset`, offset: 576 + i * 24 + 16, width: 8 },
  ]),
].map((f) => ({ width: 4, ...f, structure: 'header' }) as Field);

function tellingValues(size: number): bigint[] {
  return [0n, 1n, 511n, 512n, 0x7fffffffn, 0x80000000n, 0xffffffffn, 0xffffffffffffffffn, BigInt(size), BigInt(size - 512), BigInt(size) * 512n, 2n ** 41n];
}

/** Damages `bytes` in place (or returns a shorter copy) and says how. */
function mutate(template: Buffer, kind: Kind, r: () => number): { bytes: Buffer; damage: string } {
  const bytes = Buffer.from(template);
  const size = bytes.length;
  const pick = <T>(list: T[]): T => list[Math.floor(r() * list.length)];
  const how = r();
  if (how < 0.4) {
    const region = pick(regionsOf(template, kind));
    const flips: string[] = [];
    for (let n = 1 + Math.floor(r() * 8); n > 0; n--) {
      const at = region.start + Math.floor(r() * region.length);
      const bit = Math.floor(r() * 8);
      bytes[at] ^= 1 << bit;
      flips.push(`${at}.${bit}`);
    }
    return { bytes, damage: `bits flipped in the ${region.name}: ${flips.join(' ')}` };
  }
  if (how < 0.55) {
    const length = r() < 0.5 ? Math.floor(r() * size) : Math.max(0, size - 512 * (1 + Math.floor(r() * 4)));
    return { bytes: bytes.subarray(0, length), damage: `truncated to ${length} of ${size} bytes` };
  }
  const fields = kind === 'fixed' ? FOOTER_FIELDS : [...FOOTER_FIELDS, ...HEADER_FIELDS, { name: 'an entry', structure: 'table', offset: 0, width: 4 } as Field];
  const field = pick(fields);
  const value = pick(tellingValues(size)) & (field.width === 4 ? 0xffffffffn : 0xffffffffffffffffn);
  const footer = size - 512;
  const header = kind === 'fixed' ? 0 : Number(template.readBigUInt64BE(footer + 16));
  const write = (at: number): void => {
    if (field.width === 8) bytes.writeBigUInt64BE(value, at);
    else bytes.writeUInt32BE(Number(value), at);
  };
  if (field.structure === 'footer') {
    write(footer + field.offset);
    fixChecksum(bytes, footer, 512, 64);
    if (kind !== 'fixed' && r() < 0.5) bytes.copy(bytes, 0, footer, size); // the copy at 0 agrees
  } else if (field.structure === 'header') {
    write(header + field.offset);
    fixChecksum(bytes, header, 1024, 36);
  } else {
    const table = Number(template.readBigUInt64BE(header + 16));
    const entry = Math.floor(r() * template.readUInt32BE(header + 28));
    bytes.writeUInt32BE(Number(value), table + entry * 4);
    return { bytes, damage: `block table entry ${entry} set to ${value}` };
  }
  return { bytes, damage: `${field.structure} field "${field.name}" set to ${value} (checksum fixed)` };
}

// ---------------------------------------------------------------------------------------------
// Running

interface Case { index: number; seed: number; kind: Kind; file: string; damage: string }
interface Outcome { steps?: Record<string, string>; problem?: string }

/** Runs the files in one child process after another, restarting past a case that hangs or kills it. */
async function runBatch(cases: Case[]): Promise<Map<Case, Outcome>> {
  const outcomes = new Map<Case, Outcome>();
  let rest = cases;
  while (rest.length) {
    const byFile = new Map(rest.map((c) => [c.file, c]));
    let current: Case | null = null;
    await new Promise<void>((resolve) => {
      const child = spawn(process.execPath, [RUNNER, dir, ...rest.map((c) => c.file)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      let buffered = '';
      let watchdog: NodeJS.Timeout | null = null;
      const arm = (): void => {
        if (watchdog) clearTimeout(watchdog);
        watchdog = setTimeout(() => {
          if (current) outcomes.set(current, { problem: `hung: no answer within ${CASE_LIMIT_MS / 1000} s` });
          child.kill('SIGKILL');
        }, CASE_LIMIT_MS);
      };
      arm();
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      child.stdout.on('data', (d: Buffer) => {
        buffered += d.toString();
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = JSON.parse(buffered.slice(0, nl)) as CaseLine;
          buffered = buffered.slice(nl + 1);
          const c = byFile.get(line.file)!;
          if (line.event === 'start') {
            current = c;
            arm();
          } else {
            outcomes.set(c, { steps: line.steps });
            current = null;
          }
        }
      });
      child.on('exit', (code, signal) => {
        if (watchdog) clearTimeout(watchdog);
        if (current && !outcomes.has(current)) outcomes.set(current, { problem: `the process died (${signal ?? code}): ${stderr.slice(-2000)}` });
        resolve();
      });
    });
    rest = rest.filter((c) => !outcomes.has(c));
  }
  return outcomes;
}

test(`${CASES} mutated disks through info, check, read and convert: each ends in a VhdError or succeeds, within ${CASE_LIMIT_MS / 1000} s`, async (t) => {
  t.diagnostic(`seed ${SEED} (VSERVER_FUZZ_SEED), ${CASES} cases (VSERVER_FUZZ_CASES)`);
  const templateBytes = Object.fromEntries(KINDS.map((k) => [k, fs.readFileSync(templates[k])])) as Record<Kind, Buffer>;
  const failures: string[] = [];
  const tally = new Map<string, number>();
  for (let first = 0; first < CASES; first += BATCH) {
    const cases: Case[] = [];
    for (let index = first; index < Math.min(CASES, first + BATCH); index++) {
      const seed = SEED + index;
      const kind = KINDS[index % KINDS.length];
      const { bytes, damage } = mutate(templateBytes[kind], kind, prng(seed));
      const file = path.join(dir, `case-${index}.vhd`);
      fs.writeFileSync(file, bytes);
      cases.push({ index, seed, kind, file, damage });
    }
    for (const [c, outcome] of await runBatch(cases)) {
      const crashes = Object.entries(outcome.steps ?? {}).filter(([, v]) => v.startsWith('crash'));
      const problem = outcome.problem ?? (crashes.length ? crashes.map(([k, v]) => `${k}: ${v}`).join('; ') : null);
      if (problem) failures.push(`case ${c.index} (seed ${c.seed}, ${c.kind}, ${c.damage}): ${problem}`);
      for (const [name, ending] of Object.entries(outcome.steps ?? {})) tally.set(`${name} ${ending}`, (tally.get(`${name} ${ending}`) ?? 0) + 1);
    }
    for (const c of cases) fs.rmSync(c.file, { force: true });
  }
  t.diagnostic([...tally].sort().map(([k, n]) => `${k}: ${n}`).join(', '));
  assert.deepEqual(failures, [], `reproduce with VSERVER_FUZZ_SEED=${SEED} VSERVER_FUZZ_CASES=${CASES}`);
  // The damage must have been seen, and the engine must still have run: both endings occur.
  assert.ok((tally.get('info ok') ?? 0) > 0, 'no damaged disk could be inspected: the runner does not work');
  assert.ok([...tally.keys()].some((k) => /^info VHD_E_/.test(k)), 'no damage was ever refused: the mutations do nothing');
  const ran = [...tally].filter(([k]) => k.startsWith('info ')).reduce((n, [, v]) => n + v, 0);
  assert.equal(ran, CASES, 'every case ran to its end');
});
