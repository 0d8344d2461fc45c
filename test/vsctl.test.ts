// vsctl as a user runs it (bin/vsctl in a child process): help for every command, JSON
// output scripts can rely on, check's exit status, usage errors (exit 2) and engine errors
// (exit 1, with the error code).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { VhdDisk, createDynamic } from '../storage/vhd/index.js';
import { BLOCK, MiB, type RunResult, flipByte, makeTempDir, patternBytes, removeDir, vsctl } from './helpers/vhd-fixtures.js';

const dir = makeTempDir('vsctl');
after(() => removeDir(dir));

let counter = 0;
function fresh(name: string): string {
  return path.join(dir, `${++counter}-${name}`);
}

/** Runs vsctl in the temp folder; asserts the exit status, naming the output when it differs. */
function expectExit(args: string[], status: number): RunResult {
  const r = vsctl(args, { cwd: dir });
  assert.equal(r.status, status, `vsctl ${args.join(' ')} exited ${r.status}, expected ${status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

function json<T = Record<string, unknown>>(args: string[], status = 0): T {
  const r = expectExit([...args, '--json'], status);
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    assert.fail(`vsctl ${args.join(' ')} --json printed something that is not JSON:\n${r.stdout}`);
  }
}

const COMMANDS = ['create', 'info', 'check', 'convert', 'compact', 'merge', 'map', 'serve', 'expand'];

describe('vsctl --help', () => {
  for (const command of COMMANDS) {
    test(`vsctl vhd ${command} --help exits 0 and prints its usage and options`, () => {
      const r = expectExit(['vhd', command, '--help'], 0);
      assert.match(r.stdout, new RegExp(`^usage: vsctl vhd ${command}\\b`));
      assert.match(r.stdout, /--json/);
      assert.match(r.stdout, /--help/);
      assert.equal(r.stderr, '');
      assert.equal(expectExit(['vhd', command, '-h'], 0).stdout, r.stdout, '-h is --help');
    });
  }

  test('vsctl --help lists the groups and vsctl vhd --help lists every vhd command', () => {
    assert.match(expectExit(['--help'], 0).stdout, /^\s+vhd\s/m);
    const r = expectExit(['vhd', '--help'], 0);
    for (const command of COMMANDS) assert.match(r.stdout, new RegExp(`^\\s+${command}\\s`, 'm'), command);
  });
});

describe('vsctl --json output', () => {
  test('create --json describes the new disk: type, sizes, geometry, blocks, unique id, chain', () => {
    const file = fresh('new.vhd');
    const info = json(['vhd', 'create', file, '--size', '33M']);
    assert.equal(info.file, file);
    assert.equal(info.type, 'dynamic');
    assert.equal(info.originalSize, 34607104, 'original size == current size: 33M rounded up to its geometry');
    assert.equal(info.sizeInGuest, 34607104);
    assert.equal(info.currentSize, 34607104);
    assert.deepEqual(info.geometry, { cylinders: 994, heads: 4, sectorsPerTrack: 17 });
    assert.equal(info.addressableSize, 34607104);
    assert.equal(info.sizeRule, 'chs');
    assert.deepEqual(info.blocks, { allocated: 0, total: 17 });
    assert.equal(info.blockSize, BLOCK);
    assert.match(String(info.uniqueId), /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.deepEqual(info.chain, [{ file, type: 'dynamic' }]);
    assert.equal(info.parent, null);
    assert.deepEqual(info.warnings, []);
    assert.equal(fs.existsSync(file), true);
  });

  test('create without --size makes a 127 GiB dynamic disk; --type fixed writes the whole disk', () => {
    const dynamic = json(['vhd', 'create', fresh('default.vhd')]);
    assert.equal(dynamic.originalSize, 136365219840);
    assert.equal(dynamic.sizeInGuest, 136365219840);
    const fixedFile = fresh('fixed.vhd');
    const fixed = json(['vhd', 'create', fixedFile, '--type', 'fixed', '--size', '4M']);
    assert.equal(fixed.type, 'fixed');
    assert.equal(fixed.blocks, null);
    assert.equal(fs.statSync(fixedFile).size, (fixed.sizeInGuest as number) + 512);
  });

  test('create --parent makes a differencing disk; info --json shows its parent and chain', () => {
    const parent = fresh('parent.vhd');
    expectExit(['vhd', 'create', parent, '--size', '8M'], 0);
    const child = fresh('child.vhd');
    const created = json(['vhd', 'create', child, '--parent', parent]);
    assert.equal(created.type, 'differencing');
    const info = json<{ type: string; parent: { file: string; name: string }; chain: Array<{ file: string; type: string }> }>(['vhd', 'info', child]);
    assert.equal(info.type, 'differencing');
    assert.equal(info.parent.file, parent);
    assert.equal(info.parent.name, path.basename(parent));
    assert.deepEqual(info.chain, [{ file: child, type: 'differencing' }, { file: parent, type: 'dynamic' }]);
  });

  test('check --json reports valid, errors, warnings and the files checked', () => {
    const parent = fresh('check-parent.vhd');
    expectExit(['vhd', 'create', parent, '--size', '8M'], 0);
    const child = fresh('check-child.vhd');
    expectExit(['vhd', 'create', child, '--parent', parent], 0);
    const report = json(['vhd', 'check', child]);
    assert.deepEqual(report, { file: child, valid: true, errors: [], warnings: [], checked: [child, parent] });
  });

  test('convert, compact, merge, merge --to and expand --json report what they did', async () => {
    const source = fresh('ops.vhd');
    await createDynamic(source, { size: 12 * MiB });
    const disk = VhdDisk.open(source, { writable: true });
    try {
      disk.write(patternBytes(1, 4096), 0);
      disk.write(Buffer.alloc(4096), 2 * BLOCK); // a block of nothing but zeros, for compact
    } finally {
      disk.close();
    }
    const fixed = fresh('ops-fixed.vhd');
    assert.deepEqual(json(['vhd', 'convert', source, fixed, '--type', 'fixed']), { source, target: fixed, type: 'fixed' });
    assert.equal(json(['vhd', 'info', fixed]).type, 'fixed');

    const compacted = json(['vhd', 'compact', source]);
    assert.equal(compacted.blocksDropped, 1);
    assert.equal(compacted.blocksMoved, 0);
    assert.ok((compacted.bytesAfter as number) < (compacted.bytesBefore as number));
    assert.equal(fs.statSync(source).size, compacted.bytesAfter);

    const child = fresh('ops-child.vhd');
    expectExit(['vhd', 'create', child, '--parent', source], 0);
    const childDisk = VhdDisk.open(child, { writable: true });
    try {
      childDisk.write(patternBytes(2, 1024), BLOCK);
    } finally {
      childDisk.close();
    }
    const flat = fresh('ops-flat.vhd');
    assert.deepEqual(json(['vhd', 'merge', child, '--to', flat]), { file: child, target: flat, type: 'dynamic' });
    assert.deepEqual(json(['vhd', 'merge', child]), { file: child, parent: source, bytesMerged: 1024 });
    assert.equal(fs.existsSync(child), false);

    const expanded = json(['vhd', 'expand', source, '--size', '1G']);
    assert.equal(expanded.size, json(['vhd', 'info', source]).sizeInGuest);
    assert.ok((expanded.size as number) >= 1024 ** 3);
  });

  test('sizes take binary units or bare bytes: 1.5G is 1.5 GiB, 100000 is 100000 bytes (each rounded up to its geometry)', () => {
    const units = json(['vhd', 'create', fresh('units.vhd'), '--size', '1.5G']);
    assert.equal(units.sizeInGuest, 1610735616, '1.5 GiB rounded up to its geometry');
    const bytes = json(['vhd', 'create', fresh('bytes.vhd'), '--size', '100000']);
    assert.equal(bytes.originalSize, 104448);
    assert.equal(bytes.sizeInGuest, 104448);
  });

  test('relative paths are taken from the current folder, and a child in a subfolder finds its parent after the folder moves', () => {
    const folder = fresh('relative');
    fs.mkdirSync(path.join(folder, 'sub'), { recursive: true });
    const inFolder = (args: string[], status: number): RunResult => {
      const r = vsctl(args, { cwd: folder });
      assert.equal(r.status, status, `vsctl ${args.join(' ')}: ${r.stdout}${r.stderr}`);
      return r;
    };
    inFolder(['vhd', 'create', 'base.vhd', '--size', '8M'], 0);
    inFolder(['vhd', 'create', path.join('sub', 'child.vhd'), '--parent', 'base.vhd'], 0);
    const info = JSON.parse(inFolder(['vhd', 'info', path.join('sub', 'child.vhd'), '--json'], 0).stdout) as { file: string; parent: { file: string } };
    assert.equal(info.file, path.join(folder, 'sub', 'child.vhd'));
    assert.equal(info.parent.file, path.join(folder, 'base.vhd'));
    const moved = `${folder}-moved`;
    fs.renameSync(folder, moved);
    expectExit(['vhd', 'check', path.join(moved, 'sub', 'child.vhd')], 0);
  });

  test('without --json each command prints one readable line or table', () => {
    const file = fresh('plain.vhd');
    assert.match(expectExit(['vhd', 'create', file, '--size', '4M'], 0).stdout, /^created dynamic disk .*plain\.vhd, /);
    const info = expectExit(['vhd', 'info', file], 0).stdout;
    for (const row of ['File:', 'Type:', 'Size in guest:', 'Original size:', 'Geometry:', 'Unique id:']) assert.ok(info.includes(row), row);
    assert.match(expectExit(['vhd', 'check', file], 0).stdout, /: valid$/m);
  });
});

describe('vsctl vhd check exit status', () => {
  test('check exits 0 on a good disk', () => {
    const file = fresh('good.vhd');
    expectExit(['vhd', 'create', file, '--size', '8M'], 0);
    expectExit(['vhd', 'check', file], 0);
  });

  test('check exits 1 on a disk whose footer is corrupted, naming the fault', () => {
    const file = fresh('bad-footer.vhd');
    expectExit(['vhd', 'create', file, '--size', '8M'], 0);
    flipByte(file, fs.statSync(file).size - 512 + 64); // the footer's checksum
    const r = expectExit(['vhd', 'check', file], 1);
    assert.match(r.stdout, /NOT valid/);
    assert.match(r.stdout, /checksum/);
    const report = json<{ valid: boolean; errors: Array<{ code: string }> }>(['vhd', 'check', file], 1);
    assert.equal(report.valid, false);
    assert.equal(report.errors[0].code, 'VHD_E_BAD_FOOTER');
  });

  test('check exits 1 on a disk whose block table points past the end of the file', async () => {
    const file = fresh('bad-bat.vhd');
    await createDynamic(file, { size: 8 * MiB });
    const disk = VhdDisk.open(file, { writable: true });
    try {
      disk.write(patternBytes(3, 512), 0);
    } finally {
      disk.close();
    }
    flipByte(file, 1536, 0x7f); // BAT entry 0, most significant byte
    const report = json<{ valid: boolean; errors: Array<{ code: string; offset: number }> }>(['vhd', 'check', file], 1);
    assert.equal(report.valid, false);
    assert.equal(report.errors[0].code, 'VHD_E_BAD_BAT');
    assert.equal(report.errors[0].offset, 1536);
  });

  test('check exits 1 on a differencing disk whose parent is missing', () => {
    const parent = fresh('gone-parent.vhd');
    expectExit(['vhd', 'create', parent, '--size', '8M'], 0);
    const child = fresh('orphan.vhd');
    expectExit(['vhd', 'create', child, '--parent', parent], 0);
    fs.rmSync(parent);
    const report = json<{ valid: boolean; errors: Array<{ code: string }> }>(['vhd', 'check', child], 1);
    assert.equal(report.errors[0].code, 'VHD_E_PARENT_NOT_FOUND');
  });
});

describe('vsctl usage errors exit 2 with a clear message', () => {
  const cases: Array<[string, string[], RegExp]> = [
    ['no arguments at all', [], /usage: vsctl GROUP COMMAND/],
    ['an unknown group', ['frob'], /unknown group "frob"/],
    ['an unknown command', ['vhd', 'frobnicate'], /unknown command "vhd frobnicate"/],
    ['a size that is not a size ("12X")', ['vhd', 'create', 'x.vhd', '--size', '12X'], /--size: "12X" is not a size/],
    ['a size of zero', ['vhd', 'create', 'x.vhd', '--size', '0'], /--size: "0" is not a positive size/],
    ['create without a file', ['vhd', 'create'], /usage: vsctl vhd create FILE/],
    ['info without a file', ['vhd', 'info'], /usage: vsctl vhd info FILE/],
    ['info with two files', ['vhd', 'info', 'a.vhd', 'b.vhd'], /usage: vsctl vhd info FILE/],
    ['convert without a target', ['vhd', 'convert', 'a.vhd'], /usage: vsctl vhd convert SRC DST/],
    ['expand without --size', ['vhd', 'expand', 'a.vhd'], /expand needs --size/],
    ['an unknown option', ['vhd', 'info', 'a.vhd', '--frob'], /--frob/],
    ['an unknown --type', ['vhd', 'create', 'x.vhd', '--type', 'bogus'], /--type must be one of dynamic, fixed, not "bogus"/],
    ['convert --type that is not an image type', ['vhd', 'convert', 'a.vhd', 'b.vhd', '--type', 'qcow2'], /--type must be one of dynamic, fixed, raw/],
    ['a fixed disk without --size', ['vhd', 'create', 'x.vhd', '--type', 'fixed'], /a fixed disk needs --size/],
    ['--parent with --size', ['vhd', 'create', 'x.vhd', '--parent', 'p.vhd', '--size', '1G'], /--parent makes a differencing disk/],
    ['merge --type without --to', ['vhd', 'merge', 'a.vhd', '--type', 'fixed'], /--type goes with --to/],
    ['serve with neither --socket nor --tcp', ['vhd', 'serve', 'a.vhd'], /exactly one of --socket PATH and --tcp PORT/],
    ['serve with both --socket and --tcp', ['vhd', 'serve', 'a.vhd', '--socket', 's', '--tcp', '0'], /exactly one of --socket PATH and --tcp PORT/],
    ['serve --tcp that is not a port', ['vhd', 'serve', 'a.vhd', '--tcp', '70000'], /--tcp must be a port number/],
    ['--size without a value', ['vhd', 'create', 'x.vhd', '--size'], /--size/],
    ['a negative size', ['vhd', 'create', 'x.vhd', '--size=-5'], /--size: "-5" is not a size/],
  ];
  for (const [what, args, message] of cases) {
    test(`${what} exits 2 and says what is wrong`, () => {
      const r = expectExit(args, 2);
      assert.match(r.stdout + r.stderr, message);
      if (args.length) {
        assert.match(r.stderr, /^vsctl: /, 'the message goes to stderr, prefixed "vsctl:"');
        assert.equal(r.stdout, '');
      }
      assert.equal(fs.existsSync(path.join(dir, 'x.vhd')), false, 'nothing was created');
    });
  }
});

describe('vsctl engine errors exit 1 with the error code in the message', () => {
  test('a missing file: VHD_E_NOT_FOUND, naming the file', () => {
    const file = fresh('missing.vhd');
    const r = expectExit(['vhd', 'info', file], 1);
    assert.match(r.stderr, /^vsctl: .*missing\.vhd.*\[VHD_E_NOT_FOUND\]$/m);
  });

  test('an existing target: VHD_E_EXISTS', () => {
    const file = fresh('there.vhd');
    expectExit(['vhd', 'create', file, '--size', '4M'], 0);
    assert.match(expectExit(['vhd', 'create', file, '--size', '4M'], 1).stderr, /\[VHD_E_EXISTS\]/);
  });

  test('a size over 2040 GiB: VHD_E_SIZE_LIMIT', () => {
    const file = fresh('huge.vhd');
    assert.match(expectExit(['vhd', 'create', file, '--size', '2041G'], 1).stderr, /2040 GiB.*\[VHD_E_SIZE_LIMIT\]/);
    assert.equal(fs.existsSync(file), false);
  });

  test('a file that is not a VHD: VHD_E_BAD_FOOTER', () => {
    const file = fresh('text.vhd');
    fs.writeFileSync(file, 'x'.repeat(4096));
    assert.match(expectExit(['vhd', 'info', file], 1).stderr, /\[VHD_E_BAD_FOOTER\]/);
  });

  test('an operation the disk type does not allow: VHD_E_WRONG_TYPE (compact a fixed disk, merge a dynamic one)', () => {
    const fixed = fresh('wrong-fixed.vhd');
    expectExit(['vhd', 'create', fixed, '--type', 'fixed', '--size', '4M'], 0);
    assert.match(expectExit(['vhd', 'compact', fixed], 1).stderr, /\[VHD_E_WRONG_TYPE\]/);
    const dynamic = fresh('wrong-dynamic.vhd');
    expectExit(['vhd', 'create', dynamic, '--size', '4M'], 0);
    assert.match(expectExit(['vhd', 'merge', dynamic], 1).stderr, /\[VHD_E_WRONG_TYPE\]/);
  });

  test('expanding to a smaller size: VHD_E_SIZE_LIMIT', () => {
    const file = fresh('shrink.vhd');
    expectExit(['vhd', 'create', file, '--size', '8M'], 0);
    assert.match(expectExit(['vhd', 'expand', file, '--size', '4M'], 1).stderr, /\[VHD_E_SIZE_LIMIT\]/);
  });

  test('a disk another writer holds: VHD_E_LOCKED, naming the holder', async () => {
    const file = fresh('held.vhd');
    await createDynamic(file, { size: 4 * MiB });
    const disk = VhdDisk.open(file, { writable: true, holder: 'the vsctl test' });
    try {
      const r = expectExit(['vhd', 'compact', file], 1);
      assert.match(r.stderr, /the vsctl test.*\[VHD_E_LOCKED\]/);
    } finally {
      disk.close();
    }
    expectExit(['vhd', 'compact', file], 0);
  });

  test('with --json an engine error is a JSON object on stdout with code, message and file', () => {
    const file = fresh('missing-json.vhd');
    const r = json<{ error: { code: string; message: string; file: string } }>(['vhd', 'info', file], 1);
    assert.equal(r.error.code, 'VHD_E_NOT_FOUND');
    assert.equal(r.error.file, file);
    assert.match(r.error.message, /missing-json\.vhd/);
  });
});
