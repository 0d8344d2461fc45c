// Damaged VHD files: the engine either reads them correctly or refuses them with a clear
// error, never crashes, hangs or writes to them. Hundreds of seeded cases flip 1-4 bytes
// inside one structure of a freshly built disk (dynamic, fixed, differencing); a few
// hand-made cases truncate files, bend block table entries and feed random bytes.
//
// For each damaged file: a read-only open either succeeds and the whole disk reads as it
// did before the damage, or fails with a VhdError (code VHD_E_*) whose message names the
// structure and its offset; then a writable open must fail too, and checkDisk must return
// a report (not throw) that says invalid. The file's bytes never change. (Writable opens are
// only tried when the read-only open failed: a writable open that succeeds may legitimately
// restore a damaged footer copy at offset 0.)
//
// To reproduce one case, the failure names its seed; VHD_CORRUPTION_SEED moves the whole set.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type TestContext, after, before, describe, it } from 'node:test';
import { VhdDisk, VhdError, checkDisk, createDifferencing, createDynamic, createFixed } from '../storage/vhd/index.js';
import { flipByte, sizeOf } from './helpers/vhd-fixtures.js';
import { prng } from './helpers/random.js';

const SECTOR = 512;
const BASE_SEED = Number(process.env.VHD_CORRUPTION_SEED ?? 0x5e55);
const BLOCK_SIZE = 512 * 1024;
const SECTORS_PER_BLOCK = BLOCK_SIZE / SECTOR;


function randomBytes(length: number, seed: number): Buffer {
  const r = prng(seed);
  const buf = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4) buf.writeUInt32LE(Math.floor(r() * 2 ** 32), i);
  return buf;
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** The VHD checksum: one's complement of the sum of a structure's bytes, its checksum field left out. */
function checksumHolds(structure: Buffer, checksumOffset: number): boolean {
  let sum = 0;
  for (let i = 0; i < structure.length; i++) {
    if (i < checksumOffset || i >= checksumOffset + 4) sum += structure[i];
  }
  return (~sum >>> 0) === structure.readUInt32BE(checksumOffset);
}

type Kind = 'dynamic' | 'fixed' | 'differencing';

/** A place to damage: bytes [start, start + length) of the file, inside one structure. */
interface Target {
  structure: string;
  start: number;
  length: number;
}

interface Fixture {
  kind: Kind;
  template: string;
  /** What the disk reads as, whole. */
  expected: Buffer;
  fileSize: number;
  /** Byte offset of the dynamic header (non-fixed disks). */
  headerOffset: number;
  tableOffset: number;
  tableEntries: number;
  /** Offsets of allocated blocks (their sector bitmaps). */
  blockOffsets: number[];
  bitmapBytes: number;
}

/** Writes seeded data at [offset, length) pairs (in sectors) through the engine, and into `expected`. */
function writeContent(file: string, expected: Buffer, extents: Array<[number, number]>, seed: number): void {
  const disk = VhdDisk.open(file, { writable: true });
  try {
    extents.forEach(([lba, sectors], i) => {
      const data = randomBytes(sectors * SECTOR, seed + i);
      disk.write(data, lba * SECTOR);
      data.copy(expected, lba * SECTOR);
    });
  } finally {
    disk.close();
  }
}

function readWhole(disk: VhdDisk): Buffer {
  const buf = Buffer.alloc(disk.size);
  disk.readInto(buf, 0);
  return buf;
}

function describeFixture(kind: Kind, template: string, expected: Buffer): Fixture {
  const disk = VhdDisk.open(template);
  try {
    assert.ok(readWhole(disk).equals(expected), `the ${kind} fixture does not read back as written`);
    const layout = disk.file.layout;
    const blockOffsets: number[] = [];
    for (let b = 0; b < (layout.bat?.length ?? 0); b++) {
      const offset = disk.file.blockOffset(b);
      if (offset !== null) blockOffsets.push(offset);
    }
    return {
      kind, template, expected,
      fileSize: fs.statSync(template).size,
      headerOffset: layout.footer.dataOffset ?? 0,
      tableOffset: layout.header?.tableOffset ?? 0,
      tableEntries: layout.header?.maxTableEntries ?? 0,
      blockOffsets,
      bitmapBytes: layout.bitmapBytes,
    };
  } finally {
    disk.close();
  }
}

/**
 * The structures of a fixture that may be damaged, each picked with a sub-range so that the
 * meaningful fields are hit often (most of a footer or header is reserved zeros).
 * Sector bitmaps are damaged only in dynamic disks: bitmaps carry no checksum, so in a
 * differencing disk a flipped bit silently switches a sector between the child's data and
 * the parent's and cannot be detected by anyone. A dynamic disk's allocated block is read
 * whole (as QEMU does), so there a flipped bitmap bit must not change what the disk reads.
 */
function pickTarget(f: Fixture, r: () => number): Target {
  const footerAt = f.fileSize - SECTOR;
  const choices: Array<() => Target> = [
    () => (r() < 0.5 ? { structure: 'footer', start: footerAt, length: 85 } : { structure: 'footer', start: footerAt, length: SECTOR }),
  ];
  if (f.kind !== 'fixed') {
    choices.push(
      () => ({ structure: 'footer copy', start: 0, length: r() < 0.5 ? 85 : SECTOR }),
      () => {
        const pick = r();
        if (pick < 0.35) return { structure: 'dynamic header', start: f.headerOffset, length: 1024 };
        if (pick < 0.7) return { structure: 'dynamic header', start: f.headerOffset, length: 64 }; // cookie .. parent unique id
        return { structure: 'dynamic header', start: f.headerOffset + 576, length: 8 * 24 }; // parent locator entries
      },
      () => ({ structure: 'block table', start: f.tableOffset, length: f.tableEntries * 4 }),
    );
  }
  if (f.kind === 'dynamic') {
    choices.push(() => {
      const block = f.blockOffsets[Math.floor(r() * f.blockOffsets.length)];
      return { structure: `sector bitmap of the block at offset ${block}`, start: block, length: SECTORS_PER_BLOCK / 8 };
    });
  }
  return choices[Math.floor(r() * choices.length)]();
}

interface Flip {
  offset: number;
  xor: number;
}

function pickFlips(target: Target, r: () => number): Flip[] {
  const count = 1 + Math.floor(r() * 4);
  const offsets = new Set<number>();
  while (offsets.size < Math.min(count, target.length)) offsets.add(target.start + Math.floor(r() * target.length));
  return [...offsets].sort((a, b) => a - b).map((offset) => ({ offset, xor: 1 + Math.floor(r() * 255) }));
}

function applyFlips(file: string, flips: Flip[]): void {
  for (const { offset, xor } of flips) flipByte(file, offset, xor);
}

function readAt(file: string, offset: number, length: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    fs.readSync(fd, buf, 0, length, offset);
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/** A clear error: a VhdError with a VHD_E_ code whose message names the offset at fault. */
function clearErrorProblem(e: unknown, mustNameOffset = true): string | null {
  if (!(e instanceof VhdError)) return `threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)} instead of a VhdError`;
  if (!e.code.startsWith('VHD_E_')) return `VhdError code ${e.code} does not start with VHD_E_`;
  if (mustNameOffset && !/offset/.test(e.message)) return `${e.code} message names no offset: ${e.message}`;
  return null;
}

/** Outcome of a damaged file, or a list of faults. */
interface Verdict {
  faults: string[];
  opened: boolean;
  error: string | null;
}

/**
 * The common verdict on a damaged file: read-only open gives the right content or a clear
 * error; if it failed, a writable open fails too and leaves no lock; checkDisk reports
 * invalid without throwing; the file is unchanged.
 */
async function judge(file: string, expected: Buffer | null, mustNameOffset = true): Promise<Verdict> {
  const faults: string[] = [];
  const before = sha256(file);
  let opened = false;
  let error: string | null = null;
  try {
    const disk = VhdDisk.open(file);
    opened = true;
    try {
      const content = readWhole(disk);
      if (!expected) faults.push(`opened as a ${disk.size}-byte disk, but the file is not a usable VHD`);
      else if (content.length !== expected.length) faults.push(`opened, but the disk is ${content.length} bytes instead of ${expected.length}`);
      else if (!content.equals(expected)) {
        let at = 0;
        while (content[at] === expected[at]) at++;
        faults.push(`opened, but reads different data (first difference at disk byte ${at})`);
      }
    } finally {
      disk.close();
    }
  } catch (e) {
    error = e instanceof Error ? `${(e as VhdError).code ?? e.name}: ${e.message}` : String(e);
    if (!opened) {
      const problem = clearErrorProblem(e, mustNameOffset);
      if (problem) faults.push(`read-only open ${problem}`);
    } else {
      faults.push(`reading the opened disk threw ${error}`);
    }
  }
  if (!opened) {
    try {
      const w = VhdDisk.open(file, { writable: true, holder: 'vhd-corruption test' });
      w.close();
      faults.push('read-only open failed, yet a writable open succeeded');
    } catch (e) {
      const problem = clearErrorProblem(e, mustNameOffset);
      if (problem) faults.push(`writable open ${problem}`);
    }
    if (fs.existsSync(`${file}.lock`)) faults.push('the failed writable open left its lock file behind');
  }
  try {
    const report = await checkDisk(file);
    if (!opened && report.valid) faults.push('checkDisk says valid, but open refused the file');
    if (!opened && report.errors.length === 0) faults.push('checkDisk lists no error, but open refused the file');
  } catch (e) {
    faults.push(`checkDisk threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  }
  if (sha256(file) !== before) faults.push('the file\'s bytes changed');
  return { faults, opened, error };
}

describe('VHD files with damaged structures', { timeout: 120_000 }, () => {
  let dir: string;
  const fixtures = new Map<Kind, Fixture>();
  let parentPath: string;
  let parentSha: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vhd-corruption-'));
    const spb = SECTORS_PER_BLOCK;

    // Dynamic: 8 MiB in 512 KiB blocks; some blocks full, some partly written, one straddle, the last sector.
    const dynamicPath = path.join(dir, 'dynamic-template.vhd');
    await createDynamic(dynamicPath, { size: 8 * 1024 * 1024, blockSize: BLOCK_SIZE });
    let size = sizeOf(dynamicPath);
    const dynamicExpected = Buffer.alloc(size);
    writeContent(dynamicPath, dynamicExpected, [
      [0, spb], [spb + 3, 100], [3 * spb + 300, 400], [5 * spb - 124, 324], [9 * spb + 17, 1], [size / SECTOR - 8, 8],
    ], 100);
    fixtures.set('dynamic', describeFixture('dynamic', dynamicPath, dynamicExpected));

    // Fixed: 4 MiB with data here and there.
    const fixedPath = path.join(dir, 'fixed-template.vhd');
    await createFixed(fixedPath, 4 * 1024 * 1024);
    size = sizeOf(fixedPath);
    const fixedExpected = Buffer.alloc(size);
    writeContent(fixedPath, fixedExpected, [[0, 64], [1000, 777], [size / SECTOR - 16, 16]], 200);
    fixtures.set('fixed', describeFixture('fixed', fixedPath, fixedExpected));

    // Differencing: a child over a dynamic parent; the child holds scattered sectors, some over
    // the parent's data, some where the parent holds nothing.
    parentPath = path.join(dir, 'parent.vhd');
    await createDynamic(parentPath, { size: 8 * 1024 * 1024, blockSize: BLOCK_SIZE });
    size = sizeOf(parentPath);
    const childExpected = Buffer.alloc(size);
    writeContent(parentPath, childExpected, [[0, 4 * spb], [6 * spb + 50, 200]], 300);
    const childPath = path.join(dir, 'child-template.vhd');
    await createDifferencing(childPath, parentPath, { blockSize: BLOCK_SIZE });
    writeContent(childPath, childExpected, [
      [10, 11], [2 * spb + 500, 600], [8 * spb, 51], [6 * spb + 5, 1], [6 * spb + 240, 20], [size / SECTOR - 1, 1],
    ], 400);
    fixtures.set('differencing', describeFixture('differencing', childPath, childExpected));
    parentSha = sha256(parentPath);
  });

  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });


  /** Damages copies of a fixture for `count` seeds and judges each. */
  async function campaign(t: TestContext, kind: Kind, count: number): Promise<void> {
    const f = fixtures.get(kind)!;
    // A child's copy stays beside its parent, which its locators name.
    const work = path.join(dir, `${kind}-damaged.vhd`);
    const failures: string[] = [];
    const tally = new Map<string, { opened: number; refused: number }>();
    for (let i = 0; i < count; i++) {
      const seed = (BASE_SEED * 1000 + (kind === 'dynamic' ? 0 : kind === 'fixed' ? 300 : 600) + i) >>> 0;
      const r = prng(seed);
      const target = pickTarget(f, r);
      const flips = pickFlips(target, r);
      fs.rmSync(work, { force: true });
      fs.copyFileSync(f.template, work);
      applyFlips(work, flips);
      const verdict = await judge(work, f.expected);
      const faults = verdict.faults;

      // Stronger expectations where the format allows them.
      const structureName = target.structure.startsWith('sector bitmap') ? 'sector bitmap' : target.structure;
      if (structureName === 'footer' || structureName === 'dynamic header') {
        const start = structureName === 'footer' ? f.fileSize - SECTOR : f.headerOffset;
        const bytes = readAt(work, start, structureName === 'footer' ? SECTOR : 1024);
        // Flips whose changes cancel out in the byte sum escape the checksum; any other must be refused.
        if (!checksumHolds(bytes, structureName === 'footer' ? 64 : 36) && verdict.opened) {
          faults.push(`the ${structureName}'s checksum no longer matches, yet the disk opened`);
        }
      }
      if ((structureName === 'footer copy' || structureName === 'sector bitmap') && !verdict.opened) {
        faults.push(`a damaged ${structureName} must not stop the disk from opening (refused with ${verdict.error})`);
      }

      const key = structureName;
      const entry = tally.get(key) ?? { opened: 0, refused: 0 };
      if (verdict.opened) entry.opened++;
      else entry.refused++;
      tally.set(key, entry);
      if (faults.length) {
        const where = flips.map((fl) => `${fl.offset} ^= 0x${fl.xor.toString(16).padStart(2, '0')}`).join(', ');
        failures.push(`seed ${seed}: ${kind} disk, ${target.structure} damaged at [${where}]` +
          `${verdict.error ? ` (open said ${verdict.error})` : ''}:\n    ${faults.join('\n    ')}`);
      }
    }
    fs.rmSync(work, { force: true });
    t.diagnostic([...tally].map(([k, v]) => `${k}: ${v.opened} opened, ${v.refused} refused`).join('; '));
    assert.equal(failures.length, 0, `${failures.length} of ${count} damaged ${kind} disks were mishandled:\n  ${failures.slice(0, 15).join('\n  ')}`);
    assert.ok([...tally.values()].some((v) => v.refused > 0), 'no damaged file was refused at all: the damage did not reach the structures');
  }

  it('a dynamic disk with 1-4 bytes flipped in its footer, footer copy, header, block table or a sector bitmap reads correctly or is refused clearly', async (t) => {
    await campaign(t, 'dynamic', 110);
  });

  it('a fixed disk with 1-4 bytes flipped in its footer reads correctly or is refused clearly', async (t) => {
    await campaign(t, 'fixed', 40);
  });

  it('a differencing disk with 1-4 bytes flipped in its footer, footer copy, header (parent locators included) or block table reads correctly or is refused clearly, and its parent is untouched', async (t) => {
    await campaign(t, 'differencing', 110);
    assert.equal(sha256(parentPath), parentSha, 'the parent file changed');
  });

  describe('hand-made damage gives a clear VhdError, never a crash or a hang', () => {
    /** Writes `bytes` to a file and checks it is refused with `code` (and the offset, where given). */
    async function expectRefused(name: string, bytes: Buffer, code: string, offset?: number, mustNameOffset = true): Promise<void> {
      const file = path.join(dir, name);
      fs.writeFileSync(file, bytes);
      let thrown: unknown = null;
      try {
        VhdDisk.open(file).close();
      } catch (e) {
        thrown = e;
      }
      assert.ok(thrown instanceof VhdError, `${name}: expected a VhdError ${code}, got ${thrown === null ? 'a successful open' : String(thrown)}`);
      assert.equal(thrown.code, code, `${name}: wrong code; message: ${thrown.message}`);
      if (offset !== undefined) assert.equal(thrown.offset, offset, `${name}: the error names the wrong offset; message: ${thrown.message}`);
      const verdict = await judge(file, null, mustNameOffset);
      assert.deepEqual(verdict.faults, [], `${name}: ${verdict.faults.join('; ')}`);
      fs.rmSync(file, { force: true });
    }

    const template = (kind: Kind): Buffer => fs.readFileSync(fixtures.get(kind)!.template);
    const footerOf = (bytes: Buffer): Buffer => bytes.subarray(bytes.length - SECTOR);

    it('an empty file is refused as too small to hold a footer', async () => {
      await expectRefused('empty.vhd', Buffer.alloc(0), 'VHD_E_BAD_FOOTER', undefined, false);
    });

    it('a 511-byte file is refused as too small to hold a footer', async () => {
      await expectRefused('511.vhd', template('dynamic').subarray(0, 511), 'VHD_E_BAD_FOOTER', undefined, false);
    });

    it('a dynamic disk cut in the middle of its block table is refused', async () => {
      const f = fixtures.get('dynamic')!;
      const bytes = template('dynamic');
      const cut = f.tableOffset + (f.tableEntries * 4) / 2;
      await expectRefused('cut-bat.vhd', bytes.subarray(0, cut), 'VHD_E_BAD_FOOTER');
      // The same cut with the footer put back: the table now runs past the footer.
      await expectRefused('cut-bat-footer.vhd', Buffer.concat([bytes.subarray(0, cut), footerOf(bytes)]), 'VHD_E_BAD_HEADER', f.headerOffset + 16);
    });

    it('a dynamic disk cut in the middle of a block is refused', async () => {
      const f = fixtures.get('dynamic')!;
      const bytes = template('dynamic');
      const last = Math.max(...f.blockOffsets);
      const cut = last + f.bitmapBytes + BLOCK_SIZE / 2;
      await expectRefused('cut-block.vhd', bytes.subarray(0, cut), 'VHD_E_BAD_FOOTER');
      // With the footer put back, the block table points past the data area.
      await expectRefused('cut-block-footer.vhd', Buffer.concat([bytes.subarray(0, cut), footerOf(bytes)]), 'VHD_E_BAD_BAT');
    });

    it('a fixed disk missing its footer, or a sector of data, is refused', async () => {
      const bytes = template('fixed');
      await expectRefused('fixed-no-footer.vhd', bytes.subarray(0, bytes.length - SECTOR), 'VHD_E_BAD_FOOTER');
      await expectRefused('fixed-short.vhd', Buffer.concat([bytes.subarray(0, bytes.length - 2 * SECTOR), footerOf(bytes)]), 'VHD_E_BAD_FOOTER');
    });

    it('a block table entry pointing past the end of the file is refused, naming the entry', async () => {
      const f = fixtures.get('dynamic')!;
      const bytes = template('dynamic');
      const free = firstFreeEntry(bytes, f);
      bytes.writeUInt32BE(Math.floor(f.fileSize / SECTOR) + 100, f.tableOffset + free * 4);
      await expectRefused('bat-past-eof.vhd', bytes, 'VHD_E_BAD_BAT', f.tableOffset + free * 4);
      // An allocated entry moved so that its block would end inside the footer.
      const moved = template('dynamic');
      const used = firstUsedEntry(moved, f);
      moved.writeUInt32BE(Math.floor(f.fileSize / SECTOR) - 2, f.tableOffset + used * 4);
      await expectRefused('bat-into-footer.vhd', moved, 'VHD_E_BAD_BAT', f.tableOffset + used * 4);
    });

    it('two block table entries pointing at the same block are refused', async () => {
      const f = fixtures.get('dynamic')!;
      const bytes = template('dynamic');
      const used = firstUsedEntry(bytes, f);
      const free = firstFreeEntry(bytes, f);
      bytes.writeUInt32BE(bytes.readUInt32BE(f.tableOffset + used * 4), f.tableOffset + free * 4);
      await expectRefused('bat-shared.vhd', bytes, 'VHD_E_BAD_BAT');
    });

    it('files of random bytes are refused', async () => {
      for (const [i, length] of [512, 4096, 1024 * 1024 + 512].entries()) {
        await expectRefused(`random-${i}.vhd`, randomBytes(length, BASE_SEED + i), 'VHD_E_BAD_FOOTER');
      }
      // Random bytes ending in a valid dynamic footer: the header it points at is garbage.
      const bytes = Buffer.concat([randomBytes(64 * 1024, BASE_SEED + 9), footerOf(template('dynamic'))]);
      await expectRefused('random-with-footer.vhd', bytes, 'VHD_E_BAD_HEADER', fixtures.get('dynamic')!.headerOffset);
    });
  });
});

function firstFreeEntry(bytes: Buffer, f: Fixture): number {
  for (let i = 0; i < f.tableEntries; i++) if (bytes.readUInt32BE(f.tableOffset + i * 4) === 0xffffffff) return i;
  throw new Error('the fixture has no unallocated block');
}

function firstUsedEntry(bytes: Buffer, f: Fixture): number {
  for (let i = 0; i < f.tableEntries; i++) if (bytes.readUInt32BE(f.tableOffset + i * 4) !== 0xffffffff) return i;
  throw new Error('the fixture has no allocated block');
}
