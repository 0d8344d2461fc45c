// Interoperability with QEMU both ways: disks qemu-img creates and qemu-io fills read here
// byte for byte at the size QEMU sees; disks made and written here read in qemu-img and
// qemu-io with the same size and content; and one file written by both in turn.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import {
  DiskType, VhdDisk, checkDisk, convertDisk, createDynamic, createFixed, inspectDisk,
} from '../storage/vhd/index.js';
import { FOOTER_SIZE, decodeFooter, encodeFooter } from '../storage/vhd/format.js';
import {
  BLOCK, ContentModel, FULL_COMPARE_LIMIT, GiB, KiB, MiB, type PatternWrite, assertSameContent, lastBlockStart, makeTempDir, modelSpans,
  patternBytes, qemuCompare, qemuCreate, qemuDataRanges, qemuIoVerify, qemuIoWrite, qemuToRaw, qemuVirtualSize,
  rawFileReader, removeDir,
  sizeOf, vhdiMediaSize,
} from './helpers/vhd-fixtures.js';

const dir = makeTempDir('interop');
after(() => removeDir(dir));

let counter = 0;
function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  fs.readSync(fd, buf, 0, length, position);
  return buf;
}

function fresh(name: string): string {
  return path.join(dir, `${++counter}-${name}`);
}

async function assertValid(file: string): Promise<void> {
  const report = await checkDisk(file);
  assert.deepEqual(report.errors, [], `${file}: check found errors`);
  assert.equal(report.valid, true);
}

/** Compares our whole read of a disk with QEMU's (qemu-img convert -O raw) and with the model. */
function assertReadsLikeQemu(file: string, model: ContentModel): void {
  const raw = `${file}.qemu.raw`;
  qemuToRaw(file, raw);
  const disk = VhdDisk.open(file);
  const qemu = rawFileReader(raw);
  try {
    assert.equal(fs.statSync(raw).size, disk.size, 'qemu-img convert output size vs ours');
    // Where either side can hold data; everywhere else QEMU's output is a hole and the model zeros.
    const spans = [...qemuDataRanges(raw, 'raw'), ...modelSpans(model)];
    const name = path.basename(file);
    assertSameContent(disk, qemu, `${name}: our read vs qemu-img convert`, disk.size <= FULL_COMPARE_LIMIT ? undefined : spans);
    assertSameContent(disk, model, `${name}: our read vs what was written`, spans);
  } finally {
    qemu.close();
    disk.close();
    fs.rmSync(raw);
  }
}

/** Scattered qemu-io writes: first sector, block boundaries, inside blocks, unaligned, overlapping, the end. */
function qemuWrites(size: number): PatternWrite[] {
  const last = lastBlockStart(size);
  return [
    { pattern: 0x11, offset: 0, length: 512 },
    { pattern: 0x22, offset: BLOCK - 1024, length: 2048 },
    { pattern: 0x33, offset: 3 * MiB + 1536, length: 12 * KiB },
    { pattern: 0x44, offset: 4 * MiB - 512, length: BLOCK + 1024 },
    { pattern: 0x55, offset: 5 * MiB, length: 4096 },
    { pattern: 0x66, offset: 6 * MiB + 100, length: 300 },
    { pattern: 0x77, offset: last - 512, length: 1024 },
    { pattern: 0x88, offset: size - 4096, length: 4096 },
  ];
}

describe('disks qemu-img creates and qemu-io fills read back here byte for byte', () => {
  const cases: Array<{ name: string; size: string; options?: string[]; type: DiskType; exact?: number; creator?: string }> = [
    { name: 'dynamic 10M', size: '10M', type: DiskType.Dynamic },
    { name: 'dynamic 1000M', size: '1000M', type: DiskType.Dynamic },
    { name: 'dynamic 33M+512', size: String(33 * MiB + 512), type: DiskType.Dynamic },
    { name: 'dynamic 127G', size: '127G', type: DiskType.Dynamic },
    { name: 'fixed 10M', size: '10M', options: ['subformat=fixed'], type: DiskType.Fixed },
    { name: 'fixed 33M+512', size: String(33 * MiB + 512), options: ['subformat=fixed'], type: DiskType.Fixed },
    { name: 'dynamic 1000M force_size', size: '1000M', options: ['force_size=on'], type: DiskType.Dynamic, exact: 1000 * MiB, creator: 'qem2' },
    { name: 'fixed 33M+512 force_size', size: String(33 * MiB + 512), options: ['subformat=fixed', 'force_size=on'], type: DiskType.Fixed, exact: 33 * MiB + 512, creator: 'qem2' },
  ];
  for (const c of cases) {
    test(`${c.name}: our size equals qemu-img's virtual size and every byte equals qemu-img convert's`, async () => {
      const file = fresh(`qemu-${c.name.replace(/\W+/g, '-')}.vhd`);
      qemuCreate(file, c.size, c.options);
      const qemuSize = qemuVirtualSize(file);
      const writes = qemuWrites(qemuSize);
      qemuIoWrite(file, writes);

      const disk = VhdDisk.open(file);
      try {
        assert.equal(disk.size, qemuSize, 'disk.size vs qemu-img virtual size');
        assert.equal(disk.type, c.type);
        if (c.exact !== undefined) assert.equal(disk.size, c.exact, 'force_size keeps the exact requested size');
        if (c.creator) assert.equal(disk.file.layout.footer.creatorApplication, c.creator);
      } finally {
        disk.close();
      }
      const model = new ContentModel(qemuSize);
      for (const w of writes) model.writePattern(w);
      assertReadsLikeQemu(file, model);
      await assertValid(file);
    });
  }
});

/** Our writes: constant runs qemu-io can verify, plus one run of varied bytes over a whole block. */
function ourWrites(size: number): { runs: PatternWrite[]; varied: { offset: number; data: Buffer } } {
  const last = lastBlockStart(size);
  const variedStart = 4 * MiB + 512;
  return {
    runs: [
      { pattern: 0xa1, offset: 0, length: 4096 },
      { pattern: 0xa2, offset: BLOCK - 3 * 512, length: 6 * 512 },
      { pattern: 0xa3, offset: 3 * MiB + 5 * 512, length: 7 * 512 },
      // Far out on big disks (the middle of 127 GiB is 32 thousand blocks in).
      ...(size >= 64 * MiB ? [{ pattern: 0xa4, offset: Math.floor(size / 2 / BLOCK) * BLOCK + 512, length: 512 }] : []),
      { pattern: 0xa5, offset: last - 1024, length: 2048 },
      { pattern: 0xa6, offset: size - 1024, length: 1024 },
    ],
    // Varied bytes over all of block 2 and into block 3 (shorter on small disks, to stop before the last block).
    varied: { offset: variedStart, data: patternBytes(6, Math.min(BLOCK + 4096, last - 1024 - variedStart)) },
  };
}

function writeOurs(file: string, model: ContentModel): PatternWrite[] {
  const disk = VhdDisk.open(file, { writable: true, holder: 'vhd-interop test' });
  try {
    const { runs, varied } = ourWrites(disk.size);
    for (const r of runs) {
      disk.write(Buffer.alloc(r.length, r.pattern), r.offset);
      model.writePattern(r);
    }
    disk.write(varied.data, varied.offset);
    model.write(varied.offset, varied.data);
    disk.flush();
    return runs;
  } finally {
    disk.close();
  }
}


describe('disks made and written here are read by qemu-img and qemu-io', () => {
  const cases: Array<{ name: string; make: (file: string) => Promise<ContentModel> }> = [
    { name: 'dynamic, default size (127 GiB)', make: async (f) => { await createDynamic(f); return new ContentModel(sizeOf(f)); } },
    { name: 'dynamic 33M+512', make: async (f) => { await createDynamic(f, { size: 33 * MiB + 512 }); return new ContentModel(sizeOf(f)); } },
    { name: 'dynamic 1000M', make: async (f) => { await createDynamic(f, { size: 1000 * MiB }); return new ContentModel(sizeOf(f)); } },
    { name: 'dynamic 10M with 512 KiB blocks', make: async (f) => { await createDynamic(f, { size: 10 * MiB, blockSize: 512 * KiB }); return new ContentModel(sizeOf(f)); } },
    { name: 'dynamic 300G (past the CHS range)', make: async (f) => { await createDynamic(f, { size: 300 * GiB }); return new ContentModel(sizeOf(f)); } },
    { name: 'fixed 10M', make: async (f) => { await createFixed(f, 10 * MiB); return new ContentModel(sizeOf(f)); } },
    { name: 'fixed 33M+512', make: async (f) => { await createFixed(f, 33 * MiB + 512); return new ContentModel(sizeOf(f)); } },
    ...(['dynamic', 'fixed'] as const).map((type) => ({
      name: `${type}, converted from a 7M+512 raw image`,
      make: async (f: string) => {
        const raw = `${f}.source.raw`;
        const rawSize = 7 * MiB + 512;
        const source = new ContentModel(rawSize)
          .write(MiB - 512, patternBytes(1, MiB + 1024))
          .write(rawSize - 512, Buffer.alloc(512, 0xee));
        source.writeRawFile(raw);
        await convertDisk(raw, f, { type });
        fs.rmSync(raw);
        const model = new ContentModel(sizeOf(f));
        assert.ok(model.size >= rawSize, 'a converted raw image is rounded up, never down');
        for (const w of source.writes) model.write(w.offset, w.data);
        return model;
      },
    })),
  ];
  for (const c of cases) {
    test(`${c.name}: qemu-img sees our size, converts to our bytes, compares equal, and qemu-io reads our patterns`, async () => {
      const file = fresh(`ours-${c.name.replace(/\W+/g, '-')}.vhd`);
      const model = await c.make(file);
      const runs = writeOurs(file, model);
      assert.equal(qemuVirtualSize(file), model.size, 'qemu-img virtual size vs ours');
      assertReadsLikeQemu(file, model);
      const expected = `${file}.expected.raw`;
      model.writeRawFile(expected);
      const compare = qemuCompare(file, 'vpc', expected, 'raw');
      assert.equal(compare.status, 0, `qemu-img compare: ${compare.stdout}${compare.stderr}`);
      fs.rmSync(expected);
      qemuIoVerify(file, runs);
      await assertValid(file);
    });
  }
});

describe('a new disk has one size for every reader: this engine, qemu-img and libvhdi', () => {
  const cases: Array<{ name: string; make: (file: string) => Promise<void> }> = [
    { name: 'dynamic, default size (127 GiB)', make: (f) => createDynamic(f) },
    { name: 'dynamic 33M+512', make: (f) => createDynamic(f, { size: 33 * MiB + 512 }) },
    { name: 'dynamic 300G (past the CHS range)', make: (f) => createDynamic(f, { size: 300 * GiB }) },
    { name: 'fixed 10M+512', make: (f) => createFixed(f, 10 * MiB + 512) },
    {
      name: 'fixed, converted from a 7M+512 raw image',
      make: async (f) => {
        const raw = `${f}.source.raw`;
        fs.writeFileSync(raw, Buffer.alloc(7 * MiB + 512));
        await convertDisk(raw, f, { type: 'fixed' });
        fs.rmSync(raw);
      },
    },
  ];
  for (const c of cases) {
    test(`${c.name}: the footer's original and current size are equal, and all three read that size`, async () => {
      const file = fresh(`sizes-${c.name.replace(/\W+/g, '-')}.vhd`);
      await c.make(file);
      const info = inspectDisk(file);
      assert.equal(info.originalSize, info.currentSize, 'original size == current size at creation, as the specification says');
      assert.equal(info.sizeInGuest, info.currentSize);
      assert.equal(qemuVirtualSize(file), info.sizeInGuest, 'qemu-img virtual size vs ours');
      assert.equal(vhdiMediaSize(file), info.sizeInGuest, 'libvhdi media size vs ours');
    });
  }

  test('a default disk made by an earlier version (original size = the 127 GiB asked) still reads at 136365219840, as QEMU reads it', async () => {
    const file = fresh('sizes-127G-earlier.vhd');
    await createDynamic(file);
    // What earlier versions wrote: the request in the original size, in both footer copies.
    const fd = fs.openSync(file, 'r+');
    try {
      const end = fs.fstatSync(fd).size - FOOTER_SIZE;
      const footer = decodeFooter(readAt(fd, end, FOOTER_SIZE));
      footer.originalSize = 127 * GiB;
      const bytes = encodeFooter(footer);
      fs.writeSync(fd, bytes, 0, FOOTER_SIZE, 0);
      fs.writeSync(fd, bytes, 0, FOOTER_SIZE, end);
    } finally {
      fs.closeSync(fd);
    }
    const info = inspectDisk(file);
    assert.equal(info.originalSize, 127 * GiB);
    assert.equal(info.sizeInGuest, 136365219840, 'the size it always had');
    assert.equal(qemuVirtualSize(file), 136365219840);
    await assertValid(file);
  });

  test('the default 127 GiB disk has the sizes qemu-img create -f vpc 127G writes: 136365219840 in both fields', async () => {
    const ours = fresh('sizes-127G-ours.vhd');
    const theirs = fresh('sizes-127G-qemu.vhd');
    await createDynamic(ours);
    qemuCreate(theirs, '127G');
    const [a, b] = [inspectDisk(ours), inspectDisk(theirs)];
    assert.deepEqual([a.originalSize, a.currentSize], [b.originalSize, b.currentSize]);
    assert.equal(a.currentSize, 136365219840);
    assert.deepEqual(a.geometry, b.geometry);
  });
});

describe('one file written in turn by this engine and by qemu-io', () => {
  for (const type of ['dynamic', 'fixed'] as const) {
    test(`a ${type} disk we wrote, then qemu-io wrote, reads the same to both, stays valid, and qemu reads our later writes`, async () => {
      const file = fresh(`both-${type}.vhd`);
      if (type === 'dynamic') await createDynamic(file, { size: 20 * MiB });
      else await createFixed(file, 20 * MiB);
      const model = new ContentModel(sizeOf(file));
      const size = model.size;

      // 1. Us: blocks 0 and 3 and the end.
      const ours1 = [
        { pattern: 0x01, offset: 0, length: 8 * KiB },
        { pattern: 0x02, offset: 3 * BLOCK + 512, length: 64 * KiB },
        { pattern: 0x03, offset: size - 2048, length: 2048 },
      ];
      let disk = VhdDisk.open(file, { writable: true });
      for (const w of ours1) { disk.write(Buffer.alloc(w.length, w.pattern), w.offset); model.writePattern(w); }
      disk.close();

      // 2. QEMU: into a block we allocated, across our data, a new block, unaligned, and the end.
      const theirs = [
        { pattern: 0x10, offset: 4 * KiB, length: 8 * KiB },
        { pattern: 0x11, offset: 3 * BLOCK + 32 * KiB, length: BLOCK },
        { pattern: 0x12, offset: 6 * BLOCK + 1000, length: 3000 },
        { pattern: 0x13, offset: size - 1536, length: 1024 },
      ];
      qemuIoWrite(file, theirs);
      for (const w of theirs) model.writePattern(w);
      assertReadsLikeQemu(file, model);
      await assertValid(file);

      // 3. Us again, over QEMU's data and into fresh space; QEMU must read it back.
      const ours2 = [
        { pattern: 0x21, offset: 8 * KiB, length: 2 * KiB },
        { pattern: 0x22, offset: 4 * BLOCK - 512, length: 1024 },
        { pattern: 0x23, offset: 8 * BLOCK, length: 4096 },
      ];
      disk = VhdDisk.open(file, { writable: true });
      for (const w of ours2) { disk.write(Buffer.alloc(w.length, w.pattern), w.offset); model.writePattern(w); }
      disk.close();
      qemuIoVerify(file, [...ours2, { pattern: 0x13, offset: size - 1536, length: 1024 }, { pattern: 0x03, offset: size - 512, length: 512 }]);
      assertReadsLikeQemu(file, model);
      await assertValid(file);
    });
  }
});
