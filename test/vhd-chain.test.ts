// Differencing chains four disks deep (base -> child -> grandchild -> great-grandchild): each
// level reads as its parent overlaid with its own writes, parents never change, the chain
// survives being moved, a wrong or missing parent is refused with a clear error, and
// converting the top flattens the chain.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import {
  DiskType, VhdDisk, checkDisk, convertDisk, createDifferencing, createDynamic, createFixed, inspectDisk, mergeIntoParent,
} from '../storage/vhd/index.js';
import {
  BLOCK, ContentModel, MiB, assertSameContent, expectVhdError, lastBlockStart, makeTempDir, patternBytes, qemuCompare,
  qemuToRaw, qemuVirtualSize, rawFileReader, removeDir, sha256File,
  sizeOf,
} from './helpers/vhd-fixtures.js';

const dir = makeTempDir('chain');
after(() => removeDir(dir));

/** 18 MiB requested: nine whole 2 MiB blocks and a partial tenth. */
const REQUEST = 18 * MiB;

type BaseType = 'dynamic' | 'fixed';
const LEVEL_NAMES = ['base', 'child', 'grandchild', 'great-grandchild'];

/** Each level's writes: partial sectors of blocks, overlaps with the levels below, block boundaries, the end. */
function levelWrites(level: number, size: number): Array<{ offset: number; length: number }> {
  const S = 512;
  const last = lastBlockStart(size);
  switch (level) {
    case 0: return [
      { offset: 0, length: 3 * S },
      { offset: BLOCK - 1024, length: 2048 },
      { offset: 5 * MiB, length: MiB },
      { offset: last - S, length: 2 * S },
      { offset: size - S, length: S },
    ];
    case 1: return [
      { offset: S, length: S }, // the middle sector of the base's first run
      { offset: BLOCK - S, length: 2 * S }, // the middle of the base's run across the first boundary
      { offset: 6 * MiB + 7 * S, length: 9 * S }, // part of block 3, which the base never wrote
      { offset: 5 * MiB + 256 * 1024, length: 64 * 1024 }, // inside the base's run
      { offset: 4 * BLOCK, length: BLOCK }, // all of block 4
    ];
    case 2: return [
      { offset: 0, length: BLOCK + S }, // all of block 0 and the first sector of block 1
      { offset: size - 2 * S, length: 2 * S }, // the end, over the base's last sector
      { offset: 4 * BLOCK + 100 * S, length: S }, // one sector inside the child's whole block
      { offset: 7 * BLOCK - S, length: S }, // the last sector of block 6
      { offset: 6 * MiB, length: 4 * S }, // block 3, just before the child's run
    ];
    default: return [
      { offset: BLOCK - 3 * S, length: 5 * S }, // across the first boundary, over three levels' data
      { offset: 5 * MiB, length: S },
      { offset: 6 * MiB + 2 * S, length: 8 * S }, // bridging the grandchild's and the child's runs
      { offset: 8 * BLOCK + S, length: 4096 },
      { offset: last, length: size - last }, // the whole partial last block
    ];
  }
}

interface Chain {
  root: string;
  /** Base first. */
  files: string[];
  /** What each level reads as, base first. */
  models: ContentModel[];
}


function assertLevelReads(file: string, model: ContentModel, what: string): void {
  const disk = VhdDisk.open(file);
  try {
    assertSameContent(disk, model, what);
  } finally {
    disk.close();
  }
}

let chains = 0;

/**
 * Builds base -> child -> grandchild -> great-grandchild, writing each level in turn. "nested"
 * puts every level in its own folder, so only the relative locators can find the parents.
 * Along the way it asserts that a fresh child reads as its parent, that every level reads as its
 * model after each write, and that no write to a child changes a byte of any file below it.
 */
async function buildChain(baseType: BaseType, layout: 'flat' | 'nested'): Promise<Chain> {
  const root = path.join(dir, `chain-${++chains}-${baseType}-${layout}`);
  const folders = layout === 'flat' ? ['', '', '', ''] : ['base', 'l1', path.join('l1', 'l2'), 'top'];
  const files = LEVEL_NAMES.map((name, i) => path.join(root, folders[i], `${name}.vhd`));
  for (const f of files) fs.mkdirSync(path.dirname(f), { recursive: true });

  if (baseType === 'dynamic') await createDynamic(files[0], { size: REQUEST });
  else await createFixed(files[0], REQUEST);
  const size = sizeOf(files[0]);
  const models: ContentModel[] = [];

  for (let level = 0; level < files.length; level++) {
    const file = files[level];
    const below = files.slice(0, level);
    const model = level === 0 ? new ContentModel(size) : models[level - 1].clone();
    if (level > 0) {
      const hashes = below.map(sha256File);
      await createDifferencing(file, files[level - 1]);
      assertLevelReads(file, model, `${LEVEL_NAMES[level]} before any write reads as its parent`);
      const disk = VhdDisk.open(file, { writable: true, holder: 'vhd-chain test' });
      try {
        assert.equal(disk.type, DiskType.Differencing);
        assert.equal(disk.chain().length, level + 1);
        assert.equal(disk.size, size, 'a differencing disk has its parent\'s size');
        levelWrites(level, size).forEach(({ offset, length }, i) => {
          const data = patternBytes(level * 100 + i, length);
          disk.write(data, offset);
          model.write(offset, data);
        });
      } finally {
        disk.close();
      }
      assert.deepEqual(below.map(sha256File), hashes, `writing ${LEVEL_NAMES[level]} changed a file below it`);
    } else {
      const disk = VhdDisk.open(file, { writable: true, holder: 'vhd-chain test' });
      try {
        levelWrites(0, size).forEach(({ offset, length }, i) => {
          const data = patternBytes(i, length);
          disk.write(data, offset);
          model.write(offset, data);
        });
      } finally {
        disk.close();
      }
    }
    models.push(model);
    for (let l = 0; l <= level; l++) assertLevelReads(files[l], models[l], `${LEVEL_NAMES[l]} after writing ${LEVEL_NAMES[level]}`);
  }
  return { root, files, models };
}

for (const baseType of ['dynamic', 'fixed'] as const) {
  describe(`a differencing chain four deep over a ${baseType} base`, () => {
    test('every level reads as its parent overlaid with its own writes (partial sectors, overlaps, block boundaries, the end)', async () => {
      const chain = await buildChain(baseType, 'flat');
      for (let level = 0; level < chain.files.length; level++) {
        const report = await checkDisk(chain.files[level]);
        assert.deepEqual(report.errors, [], `${LEVEL_NAMES[level]}: check errors`);
        assert.equal(report.valid, true);
        assert.deepEqual(report.checked, chain.files.slice(0, level + 1).reverse(), 'check covers the whole chain below');
      }
      const info = inspectDisk(chain.files[3]);
      assert.deepEqual(info.chain.map((c) => c.file), [...chain.files].reverse());
      assert.deepEqual(info.chain.map((c) => c.type), ['differencing', 'differencing', 'differencing', baseType]);
      assert.equal(info.parent?.file, chain.files[2]);
    });

    test('writing any level never changes a byte of the disks below it (sha256 before and after)', async () => {
      // buildChain asserts this after each level; here the top is written again over every region below.
      const chain = await buildChain(baseType, 'flat');
      const below = chain.files.slice(0, 3);
      const hashes = below.map(sha256File);
      const model = chain.models[3].clone();
      const disk = VhdDisk.open(chain.files[3], { writable: true });
      try {
        const offsets = [];
        for (let offset = BLOCK / 2; offset + 1024 <= disk.size; offset += BLOCK) offsets.push(offset);
        offsets.push(disk.size - 1024);
        for (const offset of offsets) {
          const data = patternBytes(offset, 1024);
          disk.write(data, offset);
          model.write(offset, data);
        }
        disk.flush();
      } finally {
        disk.close();
      }
      assert.deepEqual(below.map(sha256File), hashes);
      assertLevelReads(chain.files[3], model, 'the top after writes to every block');
    });

    test('moving the whole folder elsewhere keeps the chain: each parent is found through its relative locator', async () => {
      const chain = await buildChain(baseType, 'nested');
      const moved = `${chain.root}-moved`;
      fs.renameSync(chain.root, moved);
      const files = chain.files.map((f) => path.join(moved, path.relative(chain.root, f)));
      for (const old of chain.files) assert.equal(fs.existsSync(old), false, 'the old absolute paths are gone');
      const disk = VhdDisk.open(files[3]);
      try {
        assert.deepEqual(disk.chain().map((d) => d.path), [...files].reverse(), 'parents found in the moved folder');
        assertSameContent(disk, chain.models[3], 'the moved chain');
      } finally {
        disk.close();
      }
      const report = await checkDisk(files[3]);
      assert.deepEqual(report.errors, []);
      assert.equal(report.valid, true);
    });

    test('converting the top of the chain flattens it into a standalone dynamic, fixed or raw image with the same content', async () => {
      const chain = await buildChain(baseType, 'flat');
      const top = chain.files[3];
      const expected = chain.models[3];
      const expectedRaw = path.join(chain.root, 'expected.raw');
      expected.writeRawFile(expectedRaw);
      for (const type of ['dynamic', 'fixed', 'raw'] as const) {
        const out = path.join(chain.root, `flat.${type === 'raw' ? 'raw' : `${type}.vhd`}`);
        await convertDisk(top, out, { type });
        if (type === 'raw') {
          const raw = rawFileReader(out);
          try {
            assertSameContent(raw, expected, 'flattened raw image');
          } finally {
            raw.close();
          }
          continue;
        }
        const disk = VhdDisk.open(out);
        try {
          assert.equal(disk.type, type === 'fixed' ? DiskType.Fixed : DiskType.Dynamic);
          assert.equal(disk.parent, null, 'the flattened disk stands alone');
          assertSameContent(disk, expected, `flattened ${type} disk`);
        } finally {
          disk.close();
        }
        // QEMU (which cannot follow chains) reads the flattened disk as the chain's content.
        assert.equal(qemuVirtualSize(out), expected.size);
        const qemuRaw = `${out}.qemu.raw`;
        qemuToRaw(out, qemuRaw);
        const raw = rawFileReader(qemuRaw);
        try {
          assertSameContent(raw, expected, `qemu-img convert of the flattened ${type} disk`);
        } finally {
          raw.close();
        }
        const compare = qemuCompare(out, 'vpc', expectedRaw, 'raw');
        assert.equal(compare.status, 0, `qemu-img compare: ${compare.stdout}${compare.stderr}`);
      }
      assert.deepEqual([0, 1, 2, 3].map((l) => sizeOf(chain.files[l])), Array(4).fill(expected.size));
    });
  });
}

describe('a child whose block size differs from its parent\'s', () => {
  test('a 512 KiB-block child over a 2 MiB-block parent reads as the overlay and merges back into the parent', async () => {
    const folder = path.join(dir, 'mixed-blocks');
    fs.mkdirSync(folder);
    const parent = path.join(folder, 'parent.vhd');
    const child = path.join(folder, 'child.vhd');
    await createDynamic(parent, { size: 10 * MiB });
    const model = new ContentModel(sizeOf(parent));
    const write = (file: string, writes: Array<[number, number]>, seed: number): void => {
      const disk = VhdDisk.open(file, { writable: true });
      try {
        for (const [offset, length] of writes) {
          const data = patternBytes(seed + offset, length);
          disk.write(data, offset);
          model.write(offset, data);
        }
      } finally {
        disk.close();
      }
    };
    write(parent, [[0, 3 * MiB], [model.size - 4096, 4096]], 1);
    const parentHash = sha256File(parent);
    await createDifferencing(child, parent, { blockSize: 512 * 1024 });
    write(child, [[512, 512], [512 * 1024 - 512, 1024], [BLOCK - 512, 1024], [5 * MiB + 512, 1536], [model.size - 1024, 512]], 2);
    assert.equal(sha256File(parent), parentHash);
    assertLevelReads(child, model, 'the 512 KiB-block child');
    await mergeIntoParent(child);
    assertLevelReads(parent, model, 'the parent after merging the 512 KiB-block child');
    const report = await checkDisk(parent);
    assert.deepEqual(report.errors, []);
  });
});

describe('a chain whose parent is wrong or missing is refused', () => {
  test('a parent replaced by a different disk with the same name gives VHD_E_PARENT_MISMATCH naming both unique ids', async () => {
    const chain = await buildChain('dynamic', 'nested');
    const [, child, grandchild, top] = chain.files;
    const original = inspectDisk(child).uniqueId;
    fs.renameSync(child, `${child}.original`);
    await createDynamic(child, { size: REQUEST });
    const impostor = inspectDisk(child).uniqueId;
    for (const file of [grandchild, top]) {
      const e = expectVhdError(() => VhdDisk.open(file), 'VHD_E_PARENT_MISMATCH', `opening ${path.basename(file)}`);
      assert.match(e.message, new RegExp(original), 'names the unique id the child expects');
      assert.match(e.message, new RegExp(impostor), 'names the unique id it found');
      assert.ok(e.message.includes(child), 'names the file that is not the parent');
    }
    const report = await checkDisk(top);
    assert.equal(report.valid, false);
    assert.equal(report.errors[0]?.code, 'VHD_E_PARENT_MISMATCH');
    // Putting the real parent back repairs the chain.
    fs.rmSync(child);
    fs.renameSync(`${child}.original`, child);
    assertLevelReads(top, chain.models[3], 'the chain with its real parent back');
  });

  test('a missing parent gives VHD_E_PARENT_NOT_FOUND naming every place it looked', async () => {
    const chain = await buildChain('dynamic', 'nested');
    const [base, child, , top] = chain.files;
    fs.renameSync(base, `${base}.away`);
    for (const file of [child, top]) {
      const e = expectVhdError(() => VhdDisk.open(file), 'VHD_E_PARENT_NOT_FOUND', `opening ${path.basename(file)}`);
      assert.ok(e.message.includes(child), 'names the disk whose parent is missing');
      assert.ok(e.message.includes(base), 'names where the locators point');
      assert.ok(e.message.includes(path.join(path.dirname(child), 'base.vhd')), 'names the parent\'s name beside the child');
      assert.match(e.message, /looked at/);
    }
    const report = await checkDisk(top);
    assert.equal(report.valid, false);
    assert.equal(report.errors[0]?.code, 'VHD_E_PARENT_NOT_FOUND');
    fs.renameSync(`${base}.away`, base);
    assertLevelReads(top, chain.models[3], 'the chain with its base back');
  });

  test('a child named like its missing parent is not taken for its own parent: VHD_E_PARENT_NOT_FOUND, not a loop', async () => {
    const baseDir = path.join(dir, 'same-name-base');
    const childDir = path.join(dir, 'same-name-child');
    fs.mkdirSync(baseDir);
    fs.mkdirSync(childDir);
    const parent = path.join(baseDir, 'disk.vhd');
    const child = path.join(childDir, 'disk.vhd');
    await createDynamic(parent, { size: REQUEST });
    await createDifferencing(child, parent);
    VhdDisk.open(child).close();
    fs.renameSync(parent, `${parent}.away`);
    const e = expectVhdError(() => VhdDisk.open(child), 'VHD_E_PARENT_NOT_FOUND', 'opening the child');
    assert.match(e.message, /is this disk itself or below it in the chain/);
    fs.renameSync(`${parent}.away`, parent);
    VhdDisk.open(child).close();
  });
});
