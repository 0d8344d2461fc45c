// The storage side of snapshots and backups, against qemu-img and `vsctl vhd check`: merging a
// layer into its child (onto the layer's parent, or to a standalone disk), completing one that a
// kill -9 interrupted, the full and the changed-block backup copies, and change maps that say
// when they cannot be trusted.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { copyChainToVhd, copyChangedToVhd } from '../storage/backup/copy.js';
import { ChangeMap, changeMapPath, readChangeMap, startChangeMap } from '../storage/nbd/change-map.js';
import { NbdExport } from '../storage/nbd/export.js';
import { DiskType, VhdDisk, checkDisk, convertDisk, createDifferencing, createDynamic, mergeIntoChild } from '../storage/vhd/index.js';
import {
  BLOCK, MiB, PROJECT_ROOT, expectVhdErrorAsync, makeTempDir, patternBytes, qemuCompare, qemuInfo, removeDir,
  sha256File, vsctl, writeVhd,
} from './helpers/vhd-fixtures.js';

const dir = makeTempDir('snapshot-engine');
after(() => removeDir(dir));

const SIZE = 40 * MiB;

/** base (dynamic) -> layer -> child, each written where the others overlap and where they do not. */
async function makeChain(name: string): Promise<{ base: string; layer: string; child: string }> {
  const base = path.join(dir, `${name}-base.vhd`);
  const layer = path.join(dir, `${name}-layer.vhd`);
  const child = path.join(dir, `${name}-child.vhd`);
  await createDynamic(base, { size: SIZE });
  writeVhd(base, patternBytes(1, 3 * MiB), 0);
  writeVhd(base, patternBytes(2, BLOCK), 10 * MiB);
  await createDifferencing(layer, base);
  writeVhd(layer, patternBytes(3, 4096), 512 * 1024 + 512); // inside the base's data
  writeVhd(layer, patternBytes(4, 3 * MiB), 20 * MiB + 1024); // where the base has nothing
  writeVhd(layer, patternBytes(5, 512), SIZE - 512);
  await createDifferencing(child, layer);
  writeVhd(child, patternBytes(6, 8192), 512 * 1024); // over part of the layer's write
  writeVhd(child, patternBytes(7, MiB), 21 * MiB);
  writeVhd(child, patternBytes(8, 512), 30 * MiB);
  return { base, layer, child };
}

function assertIdentical(a: string, aFormat: string, b: string, bFormat: string): void {
  const r = qemuCompare(a, aFormat, b, bFormat);
  assert.equal(r.status, 0, `qemu-img compare ${a} ${b}: ${r.stdout}${r.stderr}`);
}

let raws = 0;
/** The disk through its chain as a raw image, read by this engine (QEMU's vpc driver does not follow parents). */
async function chainRaw(file: string): Promise<string> {
  const raw = path.join(dir, `chain-${++raws}.raw`);
  await convertDisk(file, raw, { type: 'raw' });
  return raw;
}

/** `vsctl vhd check` finds nothing wrong (qemu-img check does not check vpc images), and QEMU reads a standalone disk as the engine does. */
async function assertValid(file: string): Promise<void> {
  const report = await checkDisk(file);
  assert.deepEqual(report.errors, [], `${file}: ${JSON.stringify(report.errors)}`);
  const v = vsctl(['vhd', 'check', file]);
  assert.equal(v.status, 0, `vsctl vhd check ${file}: ${v.stdout}${v.stderr}`);
  const disk = VhdDisk.open(file);
  const standalone = disk.type !== DiskType.Differencing;
  disk.close();
  if (standalone) assertIdentical(file, 'vpc', await chainRaw(file), 'raw');
}

function parentOf(file: string): string | null {
  const disk = VhdDisk.open(file);
  try {
    return disk.parent?.path ?? null;
  } finally {
    disk.close();
  }
}

describe('merging a layer into its child', () => {
  test('the child reads the same, sits on the layer\'s parent, and a second run finds nothing to do', async () => {
    const { base, layer, child } = await makeChain('up');
    const before = await chainRaw(child);
    const layerSum = sha256File(layer);
    const result = await mergeIntoChild(layer, child);
    assert.ok(result.bytesMerged > 2 * MiB, `bytes merged: ${result.bytesMerged}`);
    assert.equal(result.parent, base);
    assertIdentical(await chainRaw(child), 'raw', before, 'raw');
    assert.equal(parentOf(child), base);
    await assertValid(child);
    assert.equal(sha256File(layer), layerSum, 'the layer is left as it was');
    const again = await mergeIntoChild(layer, child);
    assert.equal(again.bytesMerged, 0);
    assertIdentical(await chainRaw(child), 'raw', before, 'raw');
  });

  test('a layer with no parent makes the child a standalone dynamic disk', async () => {
    const { base, layer, child } = await makeChain('flat');
    fs.rmSync(child);
    fs.rmSync(layer);
    const top = path.join(dir, 'flat-top.vhd');
    await createDifferencing(top, base);
    writeVhd(top, patternBytes(9, 5000 - 5000 % 512), 2 * MiB + 512); // part of a block the base holds
    writeVhd(top, patternBytes(10, 512), 33 * MiB + 512); // a block the base never wrote
    const before = await chainRaw(top);
    await mergeIntoChild(base, top);
    assert.equal(parentOf(top), null, 'no parent any more');
    const disk = VhdDisk.open(top);
    assert.equal(disk.type, DiskType.Dynamic);
    disk.close();
    assertIdentical(top, 'vpc', before, 'raw');
    await assertValid(top);
    assert.equal((await mergeIntoChild(base, top)).bytesMerged, 0, 'a second run finds it done');
  });

  test('killed between its journal and the header write, a second run completes it', async () => {
    const { base, layer, child } = await makeChain('crash');
    const before = await chainRaw(child);
    const script = `import { mergeIntoChild } from ${JSON.stringify(path.join(PROJECT_ROOT, 'dist/storage/vhd/index.js'))};
await mergeIntoChild(${JSON.stringify(layer)}, ${JSON.stringify(child)});`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      encoding: 'utf8', env: { ...process.env, VSERVER_CRASH_AT: 'reparent-journaled' }, timeout: 60_000,
    });
    assert.equal(r.signal, 'SIGKILL', `the merge was to die at its crash point: ${r.stderr}`);
    assert.match(r.stderr, /crash point reparent-journaled reached/);
    assert.ok(fs.existsSync(`${child}.reparent`), 'the journal was left');
    // The worst a crash can do there: the header torn halfway (its second sector from the new one, say).
    const fd = fs.openSync(child, 'r+');
    fs.writeSync(fd, Buffer.alloc(512, 0x5a), 0, 512, 512 + 512);
    fs.closeSync(fd);
    assert.throws(() => VhdDisk.open(child).close(), /checksum/);
    // What a worker does before serving a chain: the journal is applied, and the chain opens on the layer's parent.
    const saved = path.join(dir, 'crash-torn.vhd');
    fs.copyFileSync(child, saved);
    fs.copyFileSync(`${child}.reparent`, `${saved}.reparent`);
    const opened = VhdDisk.open(saved, { finishReparents: true });
    assert.equal(opened.parent?.path, base);
    opened.close();
    assert.ok(!fs.existsSync(`${saved}.reparent`));
    assertIdentical(await chainRaw(saved), 'raw', before, 'raw');
    const result = await mergeIntoChild(layer, child);
    assert.equal(result.parent, base);
    assert.ok(!fs.existsSync(`${child}.reparent`));
    assertIdentical(await chainRaw(child), 'raw', before, 'raw');
    await assertValid(child);
  });

  test('a disk that is not the layer\'s child is refused and left alone', async () => {
    const { base, child } = await makeChain('wrong');
    const sum = sha256File(child);
    await expectVhdErrorAsync(() => mergeIntoChild(base, child), 'VHD_E_PARENT_MISMATCH');
    assert.equal(sha256File(child), sum);
  });
});

describe('backup copies and change maps', () => {
  test('the chain at its top copies to one standalone disk, with the finished file\'s SHA-256', async () => {
    const { child } = await makeChain('full');
    const target = path.join(dir, 'full-backup.vhd');
    const result = await copyChainToVhd(child, target);
    assert.equal(result.sha256, sha256File(target));
    assert.equal(result.bytes, fs.statSync(target).size);
    assert.equal(qemuInfo(target)['backing-filename'], undefined);
    assertIdentical(target, 'vpc', await chainRaw(child), 'raw'); // QEMU reads the copy as the engine reads the chain
    await assertValid(target);
    assert.deepEqual(fs.readdirSync(dir).filter((n) => n.endsWith('.partial')), [], 'no draft left');
  });

  test('writes through the export are marked; the changed ranges over the full backup read as the top', async () => {
    const { child } = await makeChain('incr');
    const full = path.join(dir, 'incr-full.vhd');
    await copyChainToVhd(child, full);
    const disk = VhdDisk.open(child, { writable: true });
    startChangeMap(child, 'backup-1', disk.size);
    disk.close();
    // As the worker serves it: the map opened (and stored open) before the first write.
    const served = VhdDisk.open(child, { writable: true });
    const exp = new NbdExport(served, { name: 'd' });
    exp.changes = ChangeMap.openFor(child, served.size);
    assert.equal(exp.changes.generation, 'backup-1');
    assert.equal(readChangeMap(child).unsure, true, 'while served the stored map says open');
    exp.write(5 * MiB + 100, patternBytes(11, 1000));
    exp.writeZeroes(10 * MiB, BLOCK, false); // over base data: must read as zeros in the increment too
    exp.write(SIZE - 4096, patternBytes(12, 4096));
    exp.trim(36 * MiB, BLOCK);
    served.close();
    exp.changes.store(child, 'closed');
    const map = readChangeMap(child);
    assert.equal(map.unsure, false, map.reason);
    assert.equal(map.generation, 'backup-1');
    assert.equal(map.changedBytes, 64 * 1024 + BLOCK + 64 * 1024 + BLOCK);
    const increment = path.join(dir, 'incr-1.vhd');
    const result = await copyChangedToVhd(child, changeMapPath(child), full, increment);
    assert.equal(result.generation, 'backup-1');
    assert.equal(result.dataBytes, map.changedBytes);
    assert.equal(result.sha256, sha256File(increment));
    assert.equal(parentOf(increment), full);
    assertIdentical(await chainRaw(increment), 'raw', await chainRaw(child), 'raw');
    await assertValid(increment);
  });

  test('a map left open or a top changed after its close is unsure, and the increment is refused with the reason', async () => {
    const { child } = await makeChain('unsure');
    const full = path.join(dir, 'unsure-full.vhd');
    await copyChainToVhd(child, full);
    const size = SIZE;
    ChangeMap.openFor(child, size); // a worker that never closed it (killed)
    const open = readChangeMap(child);
    assert.equal(open.unsure, true);
    assert.match(open.reason!, /left open/);
    const reopened = ChangeMap.openFor(child, size);
    assert.equal(reopened.generation, null, 'reset: it counts from nothing sure');
    assert.match(reopened.unsureReason!, /left open/);
    startChangeMap(child, 'b1', size);
    assert.equal(readChangeMap(child).unsure, false);
    await new Promise((r) => setTimeout(r, 20));
    writeVhd(child, patternBytes(13, 512), 0); // written by someone who keeps no map
    const changed = readChangeMap(child);
    assert.equal(changed.unsure, true);
    assert.match(changed.reason!, /changed after its change map was closed/);
    const target = path.join(dir, 'unsure-incr.vhd');
    await expectVhdErrorAsync(() => copyChangedToVhd(child, changeMapPath(child), full, target), 'VHD_E_BAD_ARGUMENT');
    assert.ok(!fs.existsSync(target));
  });
});
