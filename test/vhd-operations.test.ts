// The VHD engine's operations and limits: compact, convert, merge, expand, create limits,
// existing targets, I/O argument checks, the one-writer lock, and size/geometry agreement
// with qemu-img.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, describe, test } from 'node:test';
import {
  DiskType, MAX_DISK_SIZE, VhdDisk, checkDisk, compactDisk, convertDisk, createDifferencing, createDynamic, createFixed,
  expandDisk, inspectDisk, lockHolder, mergeIntoParent, mergeToNewDisk,
} from '../storage/vhd/index.js';
import {
  BLOCK, ContentModel, ENGINE_MODULE, GiB, KiB, MiB, type PatternWrite, assertSameContent, constBytes, expectVhdError,
  expectVhdErrorAsync, lastBlockStart, makeTempDir, modelSpans, patternBytes, qemuCompare, qemuCreate, qemuDataRanges,
  qemuIoVerify, qemuIoWrite, qemuToRaw, qemuVirtualSize, rawFileReader, removeDir, run, sha256File,
  sizeOf,
} from './helpers/vhd-fixtures.js';

const dir = makeTempDir('ops');
after(() => removeDir(dir));

let counter = 0;
function fresh(name: string): string {
  return path.join(dir, `${++counter}-${name}`);
}


function writeAll(file: string, writes: Array<{ offset: number; data: Buffer }>, model?: ContentModel): void {
  const disk = VhdDisk.open(file, { writable: true, holder: 'vhd-operations test' });
  try {
    for (const { offset, data } of writes) {
      disk.write(data, offset);
      model?.write(offset, data);
    }
    disk.flush();
  } finally {
    disk.close();
  }
}

function assertReads(file: string, model: ContentModel, what: string, ranges?: Array<[number, number]>): void {
  const disk = VhdDisk.open(file);
  try {
    assertSameContent(disk, model, what, ranges);
  } finally {
    disk.close();
  }
}

async function assertValid(file: string, { noWarnings = false } = {}): Promise<void> {
  const report = await checkDisk(file);
  assert.deepEqual(report.errors, [], `${file}: check errors`);
  if (noWarnings) assert.deepEqual(report.warnings, [], `${file}: check warnings`);
  assert.equal(report.valid, true);
}

/** QEMU reads the file as the model says (qemu-img compare against a raw image of the model). */
function assertQemuAgrees(file: string, model: ContentModel): void {
  assert.equal(qemuVirtualSize(file), model.size, 'qemu-img virtual size');
  const expected = `${file}.expected.raw`;
  model.writeRawFile(expected);
  try {
    const compare = qemuCompare(file, 'vpc', expected, 'raw');
    assert.equal(compare.status, 0, `qemu-img compare: ${compare.stdout}${compare.stderr}`);
  } finally {
    fs.rmSync(expected);
  }
}

function filesIn(folder: string): string[] {
  return fs.readdirSync(folder).sort();
}

// -----------------------------------------------------------------------------------------------

describe('compact', () => {
  test('compact drops the all-zero blocks of a dynamic disk, packs the rest, shrinks the file, and keeps every byte', async () => {
    const file = fresh('compact.vhd');
    await createDynamic(file, { size: 20 * MiB });
    const model = new ContentModel(sizeOf(file));
    // Blocks 0-7 hold data; then blocks 1, 3 and 5 are overwritten with zeros (allocated, but empty).
    const writes = [0, 1, 2, 3, 4, 5, 6, 7].map((b) => ({ offset: b * BLOCK + (b % 3) * 512, data: patternBytes(b, b === 4 ? BLOCK : 64 * KiB) }));
    writes.push(...[1, 3, 5].map((b) => ({ offset: b * BLOCK, data: Buffer.alloc(BLOCK) })));
    writeAll(file, writes, model);
    const before = inspectDisk(file);
    assert.equal(before.blocks?.allocated, 8);

    const result = await compactDisk(file);
    assert.equal(result.blocksDropped, 3);
    assert.ok(result.blocksMoved >= 1, 'blocks after the holes were moved down');
    assert.equal(result.bytesBefore, before.fileSize);
    assert.ok(result.bytesAfter < result.bytesBefore, 'the file shrank');
    const after = inspectDisk(file);
    assert.equal(after.fileSize, result.bytesAfter);
    assert.equal(after.blocks?.allocated, 5);
    // Footer copy, header, one sector of table, five blocks of bitmap + data, footer.
    assert.equal(after.fileSize, 512 + 1024 + 512 + 5 * (512 + BLOCK) + 512, 'no space left between blocks');
    assertReads(file, model, 'compacted disk');
    await assertValid(file, { noWarnings: true });
    assertQemuAgrees(file, model);
  });

  test('compact of a disk with no empty block leaves the file byte for byte unchanged', async () => {
    const file = fresh('compact-nothing.vhd');
    await createDynamic(file, { size: 10 * MiB });
    writeAll(file, [{ offset: 0, data: patternBytes(1, 4096) }, { offset: 2 * BLOCK, data: patternBytes(2, 4096) }]);
    const hash = sha256File(file);
    const result = await compactDisk(file);
    assert.deepEqual([result.blocksDropped, result.blocksMoved], [0, 0]);
    assert.equal(sha256File(file), hash);
  });

  test('compact drops the zero blocks of a disk qemu-io wrote, and qemu-img still reads it the same', async () => {
    const file = fresh('compact-qemu.vhd');
    qemuCreate(file, '16M');
    const size = qemuVirtualSize(file);
    const writes: PatternWrite[] = [
      { pattern: 0x31, offset: 512, length: 4096 },
      { pattern: 0x00, offset: 2 * BLOCK, length: BLOCK }, // QEMU allocates a block of zeros
      { pattern: 0x32, offset: 5 * BLOCK - 512, length: 1024 },
      { pattern: 0x33, offset: size - 512, length: 512 },
    ];
    qemuIoWrite(file, writes);
    const model = new ContentModel(size);
    for (const w of writes) model.writePattern(w);
    const result = await compactDisk(file);
    assert.equal(result.blocksDropped, 1);
    assertReads(file, model, 'compacted qemu disk');
    await assertValid(file);
    assertQemuAgrees(file, model);
    qemuIoVerify(file, writes.filter((w) => w.pattern !== 0));
  });

  test('compact is refused with VHD_E_WRONG_TYPE on fixed and differencing disks, which stay unchanged', async () => {
    const fixed = fresh('compact-fixed.vhd');
    await createFixed(fixed, 4 * MiB);
    const base = fresh('compact-base.vhd');
    await createDynamic(base, { size: 4 * MiB });
    const child = fresh('compact-child.vhd');
    await createDifferencing(child, base);
    for (const file of [fixed, child]) {
      const hash = sha256File(file);
      const e = await expectVhdErrorAsync(() => compactDisk(file), 'VHD_E_WRONG_TYPE', `compact ${path.basename(file)}`);
      assert.ok(e.message.includes(file));
      assert.equal(sha256File(file), hash);
      assert.equal(lockHolder(file), null, 'the refused compact released its lock');
    }
  });
});

// -----------------------------------------------------------------------------------------------

describe('convert', () => {
  const types = ['dynamic', 'fixed', 'raw'] as const;

  test('convert copies the content in every direction between dynamic, fixed and raw', async () => {
    const src: Record<string, string> = { dynamic: fresh('conv-src.vhd') };
    await createDynamic(src.dynamic, { size: 12 * MiB });
    const model = new ContentModel(sizeOf(src.dynamic));
    writeAll(src.dynamic, [
      { offset: 0, data: patternBytes(1, 512) },
      { offset: BLOCK - 1024, data: patternBytes(2, 3 * 512) },
      { offset: 2 * BLOCK, data: patternBytes(3, BLOCK) },
      { offset: model.size - 512, data: patternBytes(4, 512) },
    ], model);
    src.fixed = fresh('conv-src-fixed.vhd');
    await convertDisk(src.dynamic, src.fixed, { type: 'fixed' });
    src.raw = fresh('conv-src.raw');
    await convertDisk(src.dynamic, src.raw, { type: 'raw' });
    assert.equal(fs.statSync(src.raw).size, model.size, 'a raw image is the disk\'s bytes, no footer');

    for (const from of types) {
      for (const to of types) {
        const out = fresh(`conv-${from}-to-${to}.${to === 'raw' ? 'raw' : 'vhd'}`);
        await convertDisk(src[from], out, { type: to });
        const what = `${from} -> ${to}`;
        if (to === 'raw') {
          const raw = rawFileReader(out);
          try {
            assertSameContent(raw, model, what);
          } finally {
            raw.close();
          }
        } else {
          const disk = VhdDisk.open(out);
          try {
            assert.equal(disk.type, to === 'fixed' ? DiskType.Fixed : DiskType.Dynamic, what);
            assertSameContent(disk, model, what);
          } finally {
            disk.close();
          }
          if (to === 'dynamic') {
            // Zero chunks stay unallocated: blocks 0, 1, 2 and the last hold data.
            assert.equal(inspectDisk(out).blocks?.allocated, 4, `${what}: only blocks with data are allocated`);
          } else {
            assert.equal(fs.statSync(out).size, model.size + 512, `${what}: a fixed disk is its data and a footer`);
          }
          await assertValid(out, { noWarnings: true });
          assertQemuAgrees(out, model);
        }
      }
    }
  });

  test('a raw image whose size no CHS geometry expresses becomes a VHD rounded up as qemu-img rounds it: data equal, tail zero', async () => {
    const raw = fresh('odd.raw');
    const rawSize = 10 * MiB + 3 * 512;
    const source = new ContentModel(rawSize).write(0, patternBytes(7, 4096)).write(rawSize - 1024, constBytes(0xee, 1024));
    source.writeRawFile(raw);
    const qemuVhd = fresh('odd-by-qemu.vhd');
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', raw, qemuVhd]);
    const qemuSize = qemuVirtualSize(qemuVhd);
    for (const type of ['dynamic', 'fixed'] as const) {
      const out = fresh(`odd-${type}.vhd`);
      await convertDisk(raw, out, { type });
      const size = sizeOf(out);
      assert.ok(size > rawSize, 'rounded up, never truncated');
      assert.equal(size, qemuSize, 'the same size qemu-img convert -O vpc gives');
      assert.equal(inspectDisk(out).originalSize, size, 'original size == current size');
      const model = new ContentModel(size);
      for (const w of source.writes) model.write(w.offset, w.data);
      assertReads(out, model, `raw -> ${type}: the data, then zeros to the rounded size`);
      assertQemuAgrees(out, model);
    }
  });

  test('a raw image that is not whole sectors is refused with VHD_E_BAD_ARGUMENT', async () => {
    const raw = fresh('ragged.raw');
    fs.writeFileSync(raw, Buffer.alloc(1000, 1));
    await expectVhdErrorAsync(() => convertDisk(raw, fresh('ragged.vhd')), 'VHD_E_BAD_ARGUMENT');
  });
});

// -----------------------------------------------------------------------------------------------

describe('merge', () => {
  async function parentAndChild(parentType: 'dynamic' | 'fixed', name: string): Promise<{ parent: string; child: string; parentModel: ContentModel; childModel: ContentModel; childBytes: number }> {
    const folder = fresh(name);
    fs.mkdirSync(folder);
    const parent = path.join(folder, 'parent.vhd');
    if (parentType === 'dynamic') await createDynamic(parent, { size: 12 * MiB });
    else await createFixed(parent, 12 * MiB);
    const parentModel = new ContentModel(sizeOf(parent));
    writeAll(parent, [
      { offset: 0, data: patternBytes(10, 8 * KiB) },
      { offset: 3 * BLOCK, data: patternBytes(11, BLOCK) },
      { offset: parentModel.size - 512, data: patternBytes(12, 512) },
    ], parentModel);
    const child = path.join(folder, 'child.vhd');
    await createDifferencing(child, parent);
    const childModel = parentModel.clone();
    const childWrites = [
      { offset: 1024, data: patternBytes(20, 1024) }, // inside the parent's first run
      { offset: BLOCK - 512, data: patternBytes(21, 1024) }, // across a block boundary
      { offset: 3 * BLOCK + 512 * 9, data: patternBytes(22, 512 * 3) }, // partial sectors of a parent block
      { offset: 4 * BLOCK, data: patternBytes(23, BLOCK + 4096) }, // a whole block, where the parent has none
    ];
    writeAll(child, childWrites, childModel);
    const childBytes = childWrites.reduce((n, w) => n + w.data.length, 0);
    return { parent, child, parentModel, childModel, childBytes };
  }

  for (const parentType of ['dynamic', 'fixed'] as const) {
    test(`merging a child into its ${parentType} parent leaves the parent holding the overlay and deletes the child`, async () => {
      const { parent, child, childModel, childBytes } = await parentAndChild(parentType, `merge-${parentType}`);
      const result = await mergeIntoParent(child);
      assert.equal(result.parent, parent);
      assert.equal(result.bytesMerged, childBytes, 'exactly the child\'s own sectors are merged');
      assert.equal(fs.existsSync(child), false, 'the child is deleted');
      assert.deepEqual(filesIn(path.dirname(parent)), ['parent.vhd'], 'no lock or partial file left behind');
      assertReads(parent, childModel, 'parent after merge');
      await assertValid(parent, { noWarnings: true });
      assertQemuAgrees(parent, childModel);
    });
  }

  test('running a merge again after an interruption (the child restored after it finished) gives the same parent', async () => {
    const { parent, child, childModel } = await parentAndChild('dynamic', 'merge-again');
    fs.copyFileSync(child, `${child}.aside`);
    await mergeIntoParent(child);
    const once = sha256File(parent);
    fs.renameSync(`${child}.aside`, child);
    await mergeIntoParent(child);
    assert.equal(fs.existsSync(child), false);
    assert.equal(sha256File(parent), once, 'the second merge changed nothing');
    assertReads(parent, childModel, 'parent after merging twice');
    await assertValid(parent);
  });

  test('a merge stopped partway leaves the child in place, and running it again completes it', async () => {
    const { parent, child, childModel } = await parentAndChild('dynamic', 'merge-stopped');
    const controller = new AbortController();
    let reported = 0;
    await assert.rejects(mergeIntoParent(child, {
      signal: controller.signal,
      onProgress: (done) => { reported = done; controller.abort(); },
    }), { name: 'AbortError' });
    assert.ok(reported > 0, 'some of the child was merged before the stop');
    assert.equal(fs.existsSync(child), true, 'the child stays until the parent holds everything');
    assert.equal(lockHolder(child), null);
    assert.equal(lockHolder(parent), null);
    assertReads(child, childModel, 'the chain still reads as before after a stopped merge');
    await mergeIntoParent(child);
    assert.equal(fs.existsSync(child), false);
    assertReads(parent, childModel, 'parent after the merge was run again');
    await assertValid(parent);
  });

  test('merging the top of a three-disk chain into the middle disk leaves the base untouched', async () => {
    const { parent: base, child: middle, childModel: middleModel } = await parentAndChild('dynamic', 'merge-middle');
    const top = path.join(path.dirname(base), 'top.vhd');
    await createDifferencing(top, middle);
    const topModel = middleModel.clone();
    writeAll(top, [{ offset: 512, data: patternBytes(30, 512) }, { offset: 5 * BLOCK - 512, data: patternBytes(31, 2048) }], topModel);
    const baseHash = sha256File(base);
    await mergeIntoParent(top);
    assert.equal(sha256File(base), baseHash, 'the base is not written');
    assert.equal(inspectDisk(middle).type, 'differencing');
    assertReads(middle, topModel, 'middle disk after merge');
    await assertValid(middle);
  });

  test('merge --to writes the flattened chain to a new dynamic or fixed disk and leaves the chain as it was', async () => {
    const { parent, child, childModel } = await parentAndChild('dynamic', 'merge-to');
    const hashes = [parent, child].map(sha256File);
    for (const type of ['dynamic', 'fixed'] as const) {
      const out = path.join(path.dirname(parent), `flat-${type}.vhd`);
      await mergeToNewDisk(child, out, { type });
      assert.equal(inspectDisk(out).type, type);
      assert.equal(inspectDisk(out).parent, null);
      assertReads(out, childModel, `merge --to (${type})`);
      assertQemuAgrees(out, childModel);
      await expectVhdErrorAsync(() => mergeToNewDisk(child, out, { type }), 'VHD_E_EXISTS', 'merge --to an existing file');
    }
    assert.deepEqual([parent, child].map(sha256File), hashes);
  });

  test('merge is refused with VHD_E_WRONG_TYPE for a disk that has no parent', async () => {
    const file = fresh('merge-dynamic.vhd');
    await createDynamic(file, { size: 4 * MiB });
    await expectVhdErrorAsync(() => mergeIntoParent(file), 'VHD_E_WRONG_TYPE');
    assert.equal(fs.existsSync(file), true);
  });
});

// -----------------------------------------------------------------------------------------------

describe('expand', () => {
  test('a fixed disk expands: qemu-img reads the new size, old data is kept, new space reads as zeros', async () => {
    const file = fresh('expand-fixed.vhd');
    await createFixed(file, 10 * MiB);
    const model = new ContentModel(sizeOf(file));
    const runs = [{ pattern: 0x5a, offset: 0, length: 4096 }, { pattern: 0x5b, offset: model.size - 1024, length: 1024 }];
    writeAll(file, runs.map((r) => ({ offset: r.offset, data: constBytes(r.pattern, r.length) })), model);
    const { size } = await expandDisk(file, 20 * MiB);
    assert.ok(size >= 20 * MiB);
    assert.equal(sizeOf(file), size);
    assert.equal(fs.statSync(file).size, size + 512);
    const grown = new ContentModel(size);
    for (const w of model.writes) grown.write(w.offset, w.data);
    assertReads(file, grown, 'expanded fixed disk');
    await assertValid(file, { noWarnings: true });
    assertQemuAgrees(file, grown);
    qemuIoVerify(file, runs);
  });

  test('a dynamic disk whose block table has room expands in place, keeping its blocks where they are', async () => {
    const file = fresh('expand-small.vhd');
    await createDynamic(file, { size: 10 * MiB });
    const model = new ContentModel(sizeOf(file));
    writeAll(file, [{ offset: BLOCK - 512, data: patternBytes(1, 1024) }, { offset: model.size - 512, data: patternBytes(2, 512) }], model);
    const fileSize = fs.statSync(file).size;
    const { size } = await expandDisk(file, 100 * MiB);
    assert.equal(fs.statSync(file).size, fileSize, 'no block moved, no space added');
    const grown = new ContentModel(size);
    for (const w of model.writes) grown.write(w.offset, w.data);
    assertReads(file, grown, 'expanded dynamic disk');
    await assertValid(file, { noWarnings: true });
    assertQemuAgrees(file, grown);
  });

  test('a dynamic disk whose block table must grow (64M -> 300G) has its blocks moved, and qemu-img reads the new size and the old data', async () => {
    const file = fresh('expand-big.vhd');
    await createDynamic(file, { size: 64 * MiB });
    const oldSize = sizeOf(file);
    const last = lastBlockStart(oldSize);
    const runs: PatternWrite[] = [
      { pattern: 0x61, offset: 0, length: 4096 }, // block 0: right where the grown table will be
      { pattern: 0x62, offset: BLOCK - 512, length: 1024 },
      { pattern: 0x63, offset: 15 * BLOCK + 512, length: 64 * KiB },
      { pattern: 0x64, offset: last, length: oldSize - last }, // the whole last block
    ];
    const model = new ContentModel(oldSize);
    writeAll(file, runs.map((r) => ({ offset: r.offset, data: constBytes(r.pattern, r.length) })), model);
    writeAll(file, [{ offset: 8 * BLOCK, data: patternBytes(8, BLOCK) }], model);

    const where = (): { block0: number; tableEnd: number } => {
      const disk = VhdDisk.open(file);
      try {
        const header = disk.file.layout.header!;
        return { block0: disk.file.blockOffset(0)!, tableEnd: header.tableOffset + header.maxTableEntries * 4 };
      } finally {
        disk.close();
      }
    };
    const before = where();
    assert.ok(before.block0 < 1536 + ((300 * GiB) / BLOCK) * 4, 'block 0 sits where the grown table must go');

    const { size } = await expandDisk(file, 300 * GiB);
    assert.equal(size, 300 * GiB, 'past the CHS range the size is exact');
    const moved = where();
    assert.equal(moved.tableEnd, 1536 + ((300 * GiB) / BLOCK) * 4);
    assert.ok(moved.block0 >= moved.tableEnd, 'block 0 was moved out of the table\'s way');
    const info = inspectDisk(file);
    assert.equal(info.sizeInGuest, 300 * GiB);
    assert.equal(info.blocks?.total, (300 * GiB) / BLOCK);
    assert.equal(info.blocks?.allocated, 5);
    assert.equal(qemuVirtualSize(file), 300 * GiB);
    qemuIoVerify(file, runs);

    const grown = new ContentModel(size);
    for (const w of model.writes) grown.write(w.offset, w.data);
    assertReads(file, grown, 'the old data after the table grew', modelSpans(grown));
    await assertValid(file, { noWarnings: true });

    // The new space works both ways: we write near the new end, QEMU reads it; QEMU writes, we read it.
    const ours: PatternWrite = { pattern: 0x71, offset: size - 4096, length: 4096 };
    writeAll(file, [{ offset: ours.offset, data: constBytes(ours.pattern, ours.length) }], grown);
    qemuIoVerify(file, [ours, ...runs]);
    const theirs: PatternWrite = { pattern: 0x72, offset: 200 * GiB + 512, length: 1024 };
    qemuIoWrite(file, [theirs]);
    grown.writePattern(theirs);
    assertReads(file, grown, 'after writes in the new space', modelSpans(grown));
    const raw = `${file}.qemu.raw`;
    qemuToRaw(file, raw);
    const reader = rawFileReader(raw);
    const disk = VhdDisk.open(file);
    try {
      assertSameContent(disk, reader, 'our read vs qemu-img convert', [...modelSpans(grown), ...qemuDataRanges(raw, 'raw')]);
    } finally {
      disk.close();
      reader.close();
      fs.rmSync(raw);
    }
    assertQemuAgrees(file, grown);
    await assertValid(file, { noWarnings: true });
  });

  test('an empty dynamic disk expands past the CHS range (10M -> 300G) and its new first and last sectors work', async () => {
    const file = fresh('expand-empty.vhd');
    await createDynamic(file, { size: 10 * MiB });
    await expandDisk(file, 300 * GiB);
    assert.equal(qemuVirtualSize(file), 300 * GiB);
    await assertValid(file, { noWarnings: true });
    const runs: PatternWrite[] = [{ pattern: 0x01, offset: 0, length: 512 }, { pattern: 0x02, offset: 300 * GiB - 512, length: 512 }];
    writeAll(file, runs.map((r) => ({ offset: r.offset, data: constBytes(r.pattern, r.length) })));
    qemuIoVerify(file, runs);
    await assertValid(file, { noWarnings: true });
  });

  test('disks qemu-img created expand too: dynamic 10M -> 300G and fixed 10M -> 20M, and qemu-img reads them', async () => {
    const dynamic = fresh('expand-qemu-dynamic.vhd');
    const fixed = fresh('expand-qemu-fixed.vhd');
    qemuCreate(dynamic, '10M');
    qemuCreate(fixed, '10M', ['subformat=fixed']);
    for (const [file, target] of [[dynamic, 300 * GiB], [fixed, 20 * MiB]] as const) {
      const oldSize = qemuVirtualSize(file);
      const runs: PatternWrite[] = [{ pattern: 0x51, offset: 0, length: 4096 }, { pattern: 0x52, offset: oldSize - 512, length: 512 }];
      qemuIoWrite(file, runs);
      const { size } = await expandDisk(file, target);
      assert.equal(qemuVirtualSize(file), size, `${path.basename(file)}: qemu-img sees the new size`);
      assert.equal(sizeOf(file), size);
      const model = new ContentModel(size);
      for (const r of runs) model.writePattern(r);
      assertReads(file, model, `${path.basename(file)} expanded`, modelSpans(model));
      qemuIoVerify(file, [...runs, { pattern: 0, offset: oldSize, length: Math.min(size - oldSize, 4 * MiB) }]);
      await assertValid(file, { noWarnings: true });
    }
  });

  test('expand is refused for a differencing disk (VHD_E_WRONG_TYPE) and for a size not larger (VHD_E_SIZE_LIMIT); the file is unchanged', async () => {
    const base = fresh('expand-base.vhd');
    await createDynamic(base, { size: 10 * MiB });
    const child = fresh('expand-child.vhd');
    await createDifferencing(child, base);
    const fixed = fresh('expand-fixed-small.vhd');
    await createFixed(fixed, 10 * MiB);
    const hashes = [base, child, fixed].map(sha256File);
    await expectVhdErrorAsync(() => expandDisk(child, 20 * MiB), 'VHD_E_WRONG_TYPE', 'expand a differencing disk');
    const current = sizeOf(base);
    await expectVhdErrorAsync(() => expandDisk(base, 5 * MiB), 'VHD_E_SIZE_LIMIT', 'shrink a dynamic disk');
    await expectVhdErrorAsync(() => expandDisk(base, current), 'VHD_E_SIZE_LIMIT', 'expand to the same size');
    await expectVhdErrorAsync(() => expandDisk(fixed, 5 * MiB), 'VHD_E_SIZE_LIMIT', 'shrink a fixed disk');
    await expectVhdErrorAsync(() => expandDisk(base, MAX_DISK_SIZE + 512), 'VHD_E_SIZE_LIMIT', 'expand past 2040 GiB');
    assert.deepEqual([base, child, fixed].map(sha256File), hashes);
  });
});

// -----------------------------------------------------------------------------------------------

describe('create limits and existing targets', () => {
  test('a size of 0 bytes is refused with VHD_E_SIZE_LIMIT and leaves no file', async () => {
    const folder = fresh('zero');
    fs.mkdirSync(folder);
    await expectVhdErrorAsync(() => createDynamic(path.join(folder, 'd.vhd'), { size: 0 }), 'VHD_E_SIZE_LIMIT');
    await expectVhdErrorAsync(() => createFixed(path.join(folder, 'f.vhd'), 0), 'VHD_E_SIZE_LIMIT');
    assert.deepEqual(filesIn(folder), []);
  });

  test('more than 2040 GiB is refused with VHD_E_SIZE_LIMIT and leaves no file', async () => {
    const folder = fresh('too-big');
    fs.mkdirSync(folder);
    for (const size of [MAX_DISK_SIZE + 512, 2041 * GiB]) {
      const e = await expectVhdErrorAsync(() => createDynamic(path.join(folder, 'd.vhd'), { size }), 'VHD_E_SIZE_LIMIT');
      assert.match(e.message, /2040 GiB/);
      await expectVhdErrorAsync(() => createFixed(path.join(folder, 'f.vhd'), size), 'VHD_E_SIZE_LIMIT');
    }
    assert.deepEqual(filesIn(folder), []);
  });

  test('exactly 2040 GiB is accepted, and qemu-img sees the same size and reads its last sector', async () => {
    const file = fresh('max.vhd');
    await createDynamic(file, { size: 2040 * GiB });
    assert.equal(MAX_DISK_SIZE, 2040 * GiB);
    assert.equal(sizeOf(file), 2040 * GiB);
    assert.equal(qemuVirtualSize(file), 2040 * GiB);
    const last: PatternWrite = { pattern: 0x7e, offset: 2040 * GiB - 512, length: 512 };
    writeAll(file, [{ offset: last.offset, data: constBytes(last.pattern, last.length) }]);
    qemuIoVerify(file, [last]);
    await assertValid(file, { noWarnings: true });
  });

  test('every operation that makes a file refuses an existing target with VHD_E_EXISTS and leaves it unchanged', async () => {
    const folder = fresh('exists');
    fs.mkdirSync(folder);
    const source = path.join(folder, 'source.vhd');
    await createDynamic(source, { size: 4 * MiB });
    const child = path.join(folder, 'child.vhd');
    await createDifferencing(child, source);
    const target = path.join(folder, 'precious.vhd');
    fs.writeFileSync(target, 'precious data');
    const attempts: Array<[string, () => Promise<unknown>]> = [
      ['create dynamic', () => createDynamic(target, { size: 4 * MiB })],
      ['create fixed', () => createFixed(target, 4 * MiB)],
      ['create differencing', () => createDifferencing(target, source)],
      ['convert', () => convertDisk(source, target)],
      ['convert to raw', () => convertDisk(source, target, { type: 'raw' })],
      ['merge --to', () => mergeToNewDisk(child, target)],
    ];
    for (const [what, attempt] of attempts) {
      const e = await expectVhdErrorAsync(attempt, 'VHD_E_EXISTS', what);
      assert.ok(e.message.includes(target), `${what}: names the file`);
      assert.equal(fs.readFileSync(target, 'utf8'), 'precious data', `${what}: left the file alone`);
    }
    assert.deepEqual(filesIn(folder), ['child.vhd', 'precious.vhd', 'source.vhd'], 'no partial files left behind');
  });
});

// -----------------------------------------------------------------------------------------------

describe('reads and writes', () => {
  async function disks(): Promise<Record<string, string>> {
    const d = { dynamic: fresh('io-dynamic.vhd'), fixed: fresh('io-fixed.vhd'), differencing: fresh('io-diff.vhd') };
    await createDynamic(d.dynamic, { size: 4 * MiB });
    await createFixed(d.fixed, 4 * MiB);
    await createDifferencing(d.differencing, d.dynamic);
    return d;
  }

  test('reads and writes not on whole 512-byte sectors are refused with VHD_E_UNALIGNED', async () => {
    for (const [type, file] of Object.entries(await disks())) {
      const hash = sha256File(file);
      const disk = VhdDisk.open(file, { writable: true });
      try {
        expectVhdError(() => disk.read(1, 512), 'VHD_E_UNALIGNED', `${type}: read at offset 1`);
        expectVhdError(() => disk.read(0, 100), 'VHD_E_UNALIGNED', `${type}: read of 100 bytes`);
        expectVhdError(() => disk.read(-512, 512), 'VHD_E_UNALIGNED', `${type}: read at a negative offset`);
        expectVhdError(() => disk.write(Buffer.alloc(100), 0), 'VHD_E_UNALIGNED', `${type}: write of 100 bytes`);
        expectVhdError(() => disk.write(Buffer.alloc(512), 256), 'VHD_E_UNALIGNED', `${type}: write at offset 256`);
      } finally {
        disk.close();
      }
      assert.equal(sha256File(file), hash, `${type}: nothing written`);
    }
  });

  test('reads and writes past the end are refused with VHD_E_OUT_OF_RANGE', async () => {
    for (const [type, file] of Object.entries(await disks())) {
      const hash = sha256File(file);
      const disk = VhdDisk.open(file, { writable: true });
      try {
        const size = disk.size;
        assert.equal(disk.read(size - 512, 512).length, 512, `${type}: the last sector reads`);
        expectVhdError(() => disk.read(size - 512, 1024), 'VHD_E_OUT_OF_RANGE', `${type}: read across the end`);
        expectVhdError(() => disk.read(size, 512), 'VHD_E_OUT_OF_RANGE', `${type}: read at the end`);
        expectVhdError(() => disk.write(Buffer.alloc(1024), size - 512), 'VHD_E_OUT_OF_RANGE', `${type}: write across the end`);
        expectVhdError(() => disk.write(Buffer.alloc(512), size + 512 * 1000), 'VHD_E_OUT_OF_RANGE', `${type}: write past the end`);
      } finally {
        disk.close();
      }
      assert.equal(sha256File(file), hash, `${type}: nothing written`);
    }
  });

  test('a write to a disk opened read-only is refused with VHD_E_READ_ONLY and changes nothing', async () => {
    for (const [type, file] of Object.entries(await disks())) {
      const hash = sha256File(file);
      const disk = VhdDisk.open(file);
      try {
        assert.equal(disk.writable, false);
        expectVhdError(() => disk.write(Buffer.alloc(512, 1), 0), 'VHD_E_READ_ONLY', type);
      } finally {
        disk.close();
      }
      assert.equal(sha256File(file), hash, `${type}: nothing written`);
    }
  });

  test('a closed disk refuses reads and writes with VHD_E_CLOSED', async () => {
    const { dynamic } = await disks();
    const disk = VhdDisk.open(dynamic, { writable: true });
    disk.close();
    expectVhdError(() => disk.read(0, 512), 'VHD_E_CLOSED');
    expectVhdError(() => disk.write(Buffer.alloc(512), 0), 'VHD_E_CLOSED');
  });
});

// -----------------------------------------------------------------------------------------------

describe('one writer at a time', () => {
  /** A script that opens a disk in its own process: "try" opens writable and closes, "read" opens read-only, "hold" keeps it open. */
  const probe = path.join(dir, 'lock-probe.mjs');
  fs.writeFileSync(probe, `
const [engine, file, mode, holder] = process.argv.slice(2);
const { VhdDisk } = await import(engine);
try {
  const disk = VhdDisk.open(file, { writable: mode !== 'read', holder });
  if (mode === 'hold') {
    console.log(JSON.stringify({ ok: true, pid: process.pid }));
    setInterval(() => {}, 1000);
  } else {
    disk.read(0, 512);
    disk.close();
    console.log(JSON.stringify({ ok: true }));
  }
} catch (e) {
  console.log(JSON.stringify({ ok: false, code: e.code, message: e.message }));
}
`);
  const engineUrl = pathToFileURL(ENGINE_MODULE).href;

  function probeOnce(file: string, mode: 'try' | 'read'): { ok: boolean; code?: string; message?: string } {
    const r = run(process.execPath, [probe, engineUrl, file, mode, 'lock probe']);
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { ok: boolean; code?: string; message?: string };
  }

  test('a second writable open in another process gets VHD_E_LOCKED naming the holder, and succeeds once the holder closes', async () => {
    const file = fresh('locked.vhd');
    await createDynamic(file, { size: 4 * MiB });
    const disk = VhdDisk.open(file, { writable: true, holder: 'the vhd-operations test' });
    try {
      const second = probeOnce(file, 'try');
      assert.equal(second.ok, false);
      assert.equal(second.code, 'VHD_E_LOCKED');
      assert.match(second.message ?? '', /the vhd-operations test/, 'names the holder');
      assert.match(second.message ?? '', new RegExp(`pid ${process.pid}\\b`), 'names the holder\'s pid');
      assert.equal(lockHolder(file)?.holder, 'the vhd-operations test');
      assert.equal(probeOnce(file, 'read').ok, true, 'a reader is not blocked by the writer');
    } finally {
      disk.close();
    }
    assert.equal(lockHolder(file), null);
    assert.deepEqual(probeOnce(file, 'try'), { ok: true });
  });

  test('a differencing child of a disk open for writing is refused with VHD_E_LOCKED naming the writer, and nothing is created', async () => {
    const parent = fresh('written-parent.vhd');
    const child = fresh('stale-child.vhd');
    await createDynamic(parent, { size: 4 * MiB });
    const disk = VhdDisk.open(parent, { writable: true, holder: 'the parent\'s writer' });
    try {
      const e = await expectVhdErrorAsync(() => createDifferencing(child, parent), 'VHD_E_LOCKED');
      assert.match(e.message, /the parent's writer/);
      assert.equal(fs.existsSync(child), false);
    } finally {
      disk.close();
    }
    await createDifferencing(child, parent);
    assert.equal(inspectDisk(child).parent?.file, parent);
  });

  test('a second writable open in the same process is refused with VHD_E_LOCKED too', async () => {
    const file = fresh('locked-self.vhd');
    await createDynamic(file, { size: 4 * MiB });
    const disk = VhdDisk.open(file, { writable: true, holder: 'first opener' });
    try {
      const e = expectVhdError(() => VhdDisk.open(file, { writable: true }), 'VHD_E_LOCKED');
      assert.match(e.message, /first opener/);
    } finally {
      disk.close();
    }
    VhdDisk.open(file, { writable: true }).close();
  });

  test('a lock left by a killed process is taken over', async () => {
    const file = fresh('stale.vhd');
    await createDynamic(file, { size: 4 * MiB });
    const child = spawn(process.execPath, [probe, engineUrl, file, 'hold', 'doomed writer'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          if (out.includes('\n')) resolve(out);
        });
        child.once('exit', (code) => reject(new Error(`probe exited ${code} before holding the lock: ${out}`)));
      });
      assert.deepEqual(JSON.parse(line), { ok: true, pid: child.pid });
      assert.equal(lockHolder(file)?.holder, 'doomed writer');
      expectVhdError(() => VhdDisk.open(file, { writable: true }), 'VHD_E_LOCKED', 'while the holder lives');
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    assert.equal(fs.existsSync(`${file}.lock`), true, 'SIGKILL left the lock file behind');
    assert.equal(lockHolder(file), null, 'a dead holder does not count');
    const disk = VhdDisk.open(file, { writable: true, holder: 'successor' });
    try {
      assert.equal(lockHolder(file)?.holder, 'successor');
      disk.write(Buffer.alloc(512, 9), 0);
    } finally {
      disk.close();
    }
    assert.equal(fs.existsSync(`${file}.lock`), false);
  });
});

// -----------------------------------------------------------------------------------------------

describe('sizes and geometry agree with qemu-img create -f vpc', () => {
  const requests: Array<[string, number]> = [
    ['512 bytes', 512],
    ['100000 bytes', 100000],
    ['1M', MiB],
    ['10M', 10 * MiB],
    ['33M+512', 33 * MiB + 512],
    ['64M', 64 * MiB],
    ['1000M', 1000 * MiB],
    ['4G', 4 * GiB],
    ['31G+3584', 31 * GiB + 3584],
    ['65535*16*63 sectors (the S=255 threshold)', 65535 * 16 * 63 * 512],
    ['127G', 127 * GiB],
    ['130558M (just under the saturated geometry)', 130558 * MiB],
    ['128G', 128 * GiB],
    ['300G', 300 * GiB],
    ['2040G', 2040 * GiB],
  ];
  for (const [label, requested] of requests) {
    test(`a ${label} request: our size and geometry are qemu-img's`, async () => {
      const ours = fresh(`geo-ours-${requested}.vhd`);
      const theirs = fresh(`geo-qemu-${requested}.vhd`);
      await createDynamic(ours, { size: requested });
      qemuCreate(theirs, requested);
      const qemuSize = qemuVirtualSize(theirs);
      const info = inspectDisk(ours);
      assert.equal(info.sizeInGuest, qemuSize, 'size in the guest');
      assert.equal(qemuVirtualSize(ours), qemuSize, 'qemu-img reads our file at the same size');
      assert.deepEqual(info.geometry, inspectDisk(theirs).geometry, 'geometry');
      assert.equal(info.currentSize, info.sizeInGuest, 'current size is the size in the guest');
      fs.rmSync(ours);
      fs.rmSync(theirs);
    });
  }

  test('info reports the original size, the geometry and what it addresses', async () => {
    const odd = fresh('info-odd.vhd');
    await createDynamic(odd, { size: 33 * MiB + 512 });
    const a = inspectDisk(odd);
    assert.equal(a.originalSize, 994 * 4 * 17 * 512, 'the size at creation, rounded up to its geometry');
    assert.deepEqual(a.geometry, { cylinders: 994, heads: 4, sectorsPerTrack: 17 });
    assert.equal(a.addressableSize, 994 * 4 * 17 * 512);
    assert.equal(a.sizeInGuest, a.addressableSize, 'CHS and current size agree');
    assert.equal(a.currentSize, a.addressableSize);
    assert.equal(a.sizeRule, 'chs');
    assert.equal(a.creator.application, 'vs');

    const big = fresh('info-big.vhd');
    await createDynamic(big, { size: 300 * GiB });
    const b = inspectDisk(big);
    assert.equal(b.originalSize, 300 * GiB);
    assert.deepEqual(b.geometry, { cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
    assert.equal(b.addressableSize, 65535 * 16 * 255 * 512);
    assert.equal(b.sizeRule, 'current-size', 'a saturated geometry means the current size');
    assert.equal(b.sizeInGuest, 300 * GiB);

    const fixed = fresh('info-fixed.vhd');
    await createFixed(fixed, 100000);
    const c = inspectDisk(fixed);
    assert.equal(c.type, 'fixed');
    assert.equal(c.originalSize, 104448);
    assert.equal(c.sizeInGuest, 104448);
    assert.equal(c.blocks, null);
    assert.equal(c.fileSize, 104448 + 512);
  });
});
