// The partition table reader (storage/mount/partitions.ts) against tables written by sfdisk,
// the reference: primary, extended with logical partitions, GPT; and damaged tables.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PartitionTableError, readPartitionTable } from '../storage/mount/partitions.js';
import { MiB, makeTempDir, mustRun, removeDir, run } from './helpers/vhd-fixtures.js';

let work: string;

function image(name: string, layout: string, size = 64 * MiB): string {
  const file = path.join(work, name);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, size);
  const r = run('sfdisk', ['-q', file], { input: layout });
  assert.equal(r.status, 0, r.stderr);
  return file;
}

function readTable(file: string): ReturnType<typeof readPartitionTable> {
  const fd = fs.openSync(file, 'r');
  try {
    return readPartitionTable((offset, length) => {
      const buf = Buffer.alloc(length);
      fs.readSync(fd, buf, 0, length, offset);
      return buf;
    }, fs.fstatSync(fd).size);
  } finally {
    fs.closeSync(fd);
  }
}

/** What sfdisk itself reports: [number, offset, size] per partition, extended containers left out. */
function sfdiskView(file: string): Array<[number, number, number]> {
  const json = JSON.parse(mustRun('sfdisk', ['--json', file])) as { partitiontable: { partitions: Array<{ node: string; start: number; size: number; type: string }> } };
  return json.partitiontable.partitions
    .filter((p) => !['5', 'f', '85'].includes(p.type.toLowerCase()))
    .map((p) => [Number(p.node.slice(file.length)), p.start * 512, p.size * 512]);
}

describe('partition tables', () => {
  before(() => { work = makeTempDir('partitions'); });
  after(() => removeDir(work));

  it('reads MBR primaries and the logical partitions of an extended partition as sfdisk wrote them', () => {
    const file = image('mbr.raw', 'label: dos\n,8M,83\n,4M,7\n,,5\n,10M,83\n,6M,82\n,,83\n');
    const table = readTable(file);
    assert.equal(table.scheme, 'mbr');
    assert.deepEqual(table.partitions.map((p) => [p.number, p.offset, p.size]), sfdiskView(file));
    assert.deepEqual(table.partitions.map((p) => p.number), [1, 2, 5, 6, 7]);
    assert.deepEqual(table.partitions.map((p) => p.type), ['83', '07', '83', '82', '83']);
  });

  it('reads GPT entries with their names and type GUIDs', () => {
    const file = image('gpt.raw', 'label: gpt\nsize=8M, type=L, name=boot\nsize=16M, type=S, name=swap\ntype=L, name=root\n');
    const table = readTable(file);
    assert.equal(table.scheme, 'gpt');
    assert.deepEqual(table.partitions.map((p) => [p.number, p.offset, p.size]), sfdiskView(file));
    assert.deepEqual(table.partitions.map((p) => p.name), ['boot', 'swap', 'root']);
    const linux = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
    const swap = '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F';
    assert.deepEqual(table.partitions.map((p) => p.type), [linux, swap, linux]);
  });

  it('sees no table on a blank disk or a whole-disk filesystem', () => {
    const blank = path.join(work, 'blank.raw');
    fs.writeFileSync(blank, Buffer.alloc(MiB));
    assert.deepEqual(readTable(blank), { scheme: 'none', partitions: [] });
    const ext4 = path.join(work, 'ext4.raw');
    fs.writeFileSync(ext4, '');
    fs.truncateSync(ext4, 8 * MiB);
    mustRun('mkfs.ext4', ['-q', '-F', ext4]);
    assert.deepEqual(readTable(ext4), { scheme: 'none', partitions: [] });
  });

  it('refuses partitions past the end of the disk, and a loop of extended boot records', () => {
    const big = image('big.raw', 'label: dos\n,8M,83\n,20M,83\n', 64 * MiB);
    fs.truncateSync(big, 16 * MiB); // the disk shrank under its table
    assert.throws(() => readTable(big), (e: unknown) => e instanceof PartitionTableError && /partition 2 .* runs past the end of the disk/.test(e.message));

    const looped = image('loop.raw', 'label: dos\n,,5\n,4M,83\n,4M,83\n', 32 * MiB);
    // Point the second logical partition's link back at the first EBR.
    const extendedStart = Buffer.alloc(4);
    const fd = fs.openSync(looped, 'r+');
    fs.readSync(fd, extendedStart, 0, 4, 446 + 8);
    const firstEbr = extendedStart.readUInt32LE(0) * 512;
    const link = Buffer.alloc(16);
    fs.readSync(fd, link, 0, 16, firstEbr + 446 + 16);
    const secondEbr = (extendedStart.readUInt32LE(0) + link.readUInt32LE(8)) * 512;
    const back = Buffer.from(link);
    back.writeUInt32LE(0, 8); // relative to the extended partition: the first EBR again
    fs.writeSync(fd, back, 0, 16, secondEbr + 446 + 16);
    fs.closeSync(fd);
    assert.throws(() => readTable(looped), (e: unknown) => e instanceof PartitionTableError && /loop/.test(e.message));
  });
});
