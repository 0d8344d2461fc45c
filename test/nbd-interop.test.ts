// The NBD server ("vsctl vhd serve") with real clients from Debian packages: qemu-img and
// qemu-io (qemu-utils), nbdinfo and nbdcopy (libnbd-bin). Whole disks read over NBD equal what
// was written; writes, flushes, trims and zeroing through NBD land in a VHD that "vsctl vhd
// check" and QEMU's own vpc driver accept; the base:allocation map equals "vsctl vhd map";
// differencing children take every write and parents none; read-only exports and write locks
// hold; several connections write at once; TCP serves on loopback.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { VhdDisk, createDifferencing, createDynamic, createFixed } from '../storage/vhd/index.js';
import { Cmd, Err, NbdClient, TFlag } from './helpers/nbd-client.js';
import {
  type ServedVhd, nbdTcpUri, nbdUnixUri, runAsync, serveVhd, serveVhdFailure, stopAllServers, stopServer,
} from './helpers/nbd-fixtures.js';
import {
  BLOCK, ContentModel, KiB, MiB, SECTOR, assertSameContent, constBytes, flipByte, lastBlockStart, makeTempDir, mergeRanges, patternBytes,
  type RunResult, VSCTL, rawFileReader, removeDir, sha256File, sizeOf, vsctl,
} from './helpers/vhd-fixtures.js';

const dir = makeTempDir('nbd-interop');
after(async () => {
  await stopAllServers();
  removeDir(dir);
});

/** 20 MiB requested: ten whole 2 MiB blocks and a partial eleventh (CHS rounding adds 22 KiB). */
const REQUEST = 20 * MiB;

let counter = 0;
function fresh(name: string): string {
  return path.join(dir, `${++counter}-${name}`);
}

let guestSize = 0;

/** The size in the guest of a dynamic disk of REQUEST bytes (CHS rounding), from a probe disk made once. */
async function diskSize(): Promise<number> {
  if (!guestSize) {
    const probe = fresh('size-probe.vhd');
    await createDynamic(probe, { size: REQUEST });
    guestSize = sizeOf(probe);
  }
  return guestSize;
}

/** Every client here finishes in a few seconds; one waiting for a reply the server never sends is killed after this. */
const CLIENT_TIMEOUT_MS = 20_000;

/** A client tool run to completion, or killed after CLIENT_TIMEOUT_MS (status null): a hung request fails the test, not the suite. */
function tool(command: string, args: string[]): RunResult {
  const r = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * MiB, timeout: CLIENT_TIMEOUT_MS, killSignal: 'SIGKILL' });
  if (r.error && (r.error as NodeJS.ErrnoException).code !== 'ETIMEDOUT') throw r.error;
  return { status: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** "killed after N ms" for a client that hung, else its output. */
function why(r: RunResult): string {
  return r.status === null ? `killed (${r.signal}) after waiting ${CLIENT_TIMEOUT_MS} ms: ${r.stdout}${r.stderr}` : `${r.stdout}${r.stderr}`;
}

function compare(a: string, aFormat: string, b: string, bFormat: string): RunResult {
  return tool('qemu-img', ['compare', '-f', aFormat, '-F', bFormat, a, b]);
}

function socketFor(file: string): string {
  return `${file}.sock`;
}

function serve(file: string, options: { readOnly?: boolean; exportName?: string; lockChain?: boolean } = {}): Promise<ServedVhd> {
  return serveVhd(file, { socket: socketFor(file), ...options });
}

// ---------------------------------------------------------------------------------------------
// Writing and checking content

interface Span {
  offset: number;
  length: number;
}

/** Writes distinct pattern data through the engine (sector-aligned spans) and into the model. */
function engineWrite(file: string, model: ContentModel, spans: Span[], seed: number): void {
  const disk = VhdDisk.open(file, { writable: true, holder: 'nbd-interop test' });
  try {
    spans.forEach(({ offset, length }, i) => {
      const data = patternBytes(seed * 100 + i, length);
      disk.write(data, offset);
      model.write(offset, data);
    });
    disk.flush();
  } finally {
    disk.close();
  }
}

/** The model as a (sparse) raw image in the test folder. */
function rawOf(model: ContentModel, name: string): string {
  const raw = fresh(`${name}.expected.raw`);
  model.writeRawFile(raw);
  return raw;
}

/** Runs a qemu-io script (-f raw over NBD, or -f vpc on a file) that must succeed with every pattern check passing. */
function qemuIo(target: string, commands: string[], options: { format?: string; readOnly?: boolean } = {}): string {
  const args = [...(options.readOnly ? ['-r'] : []), '-f', options.format ?? 'raw', ...commands.flatMap((c) => ['-c', c]), target];
  const r = tool('qemu-io', args);
  const out = r.stdout + r.stderr;
  assert.doesNotMatch(out, /Pattern verification failed|fail|error/i, `qemu-io reported a failure:\n${out}`);
  assert.equal(r.status, 0, `qemu-io exited ${r.status}: ${why(r)}`);
  return out;
}

/** `read -P` checks for a model's content: one per run of a constant byte value in [offset, offset+length). */
function patternChecks(model: ContentModel, offset: number, length: number): string[] {
  const data = model.read(offset, length);
  const checks: string[] = [];
  let start = 0;
  for (let i = 1; i <= data.length; i++) {
    if (i < data.length && data[i] === data[start]) continue;
    checks.push(`read -P 0x${data[start].toString(16)} ${offset + start} ${i - start}`);
    start = i;
  }
  assert.ok(checks.length <= 1000, `patternChecks: ${checks.length} runs; this is for ranges of constant patterns`);
  return checks;
}

/**
 * Reads the whole export with qemu-img and compares it with the model: `convert -f raw -O raw URI`
 * byte for byte, and `compare -f raw URI expected.raw`, which must also notice a single changed byte.
 */
function assertExportReads(uri: string, model: ContentModel, name: string): void {
  const out = fresh(`${name}.nbd.raw`);
  const r = tool('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri, out]);
  assert.equal(r.status, 0, `qemu-img convert ${uri}: ${why(r)}`);
  const reader = rawFileReader(out);
  try {
    assertSameContent(reader, model, `${name}: qemu-img convert over NBD vs what was written`);
  } finally {
    reader.close();
    fs.rmSync(out);
  }
  const expected = rawOf(model, name);
  const same = compare(uri, 'raw', expected, 'raw');
  assert.equal(same.status, 0, `${name}: qemu-img compare over NBD: ${why(same)}`);
  // The same comparison must fail when one byte of the reference differs (in the first data, then near the end).
  const [firstStart] = model.ranges()[0];
  for (const at of [firstStart + 1, model.size - 2 * MiB - 1]) {
    flipByte(expected, at, 0x5a);
    const differs = compare(uri, 'raw', expected, 'raw');
    assert.equal(differs.status, 1, `${name}: qemu-img compare missed a changed byte at ${at}: ${why(differs)}`);
    // qemu-img names the sector (at least) where the images first differ.
    const reported = Number(/Content mismatch at offset (\d+)/.exec(differs.stdout)?.[1]);
    assert.ok(reported <= at && at - reported < SECTOR, `${name}: qemu-img compare reported offset ${reported} for a change at ${at}`);
    flipByte(expected, at, 0x5a);
  }
  fs.rmSync(expected);
}

/**
 * The file after serving: "vsctl vhd check" passes, our engine reads the model and, for a
 * standalone disk, so does QEMU's vpc driver. (QEMU's vpc driver does not follow a differencing
 * disk's parent, so a chain's top is checked with qemu-io on the ranges it holds instead.)
 */
function assertFileHolds(file: string, model: ContentModel, name: string): void {
  const check = vsctl(['vhd', 'check', file]);
  assert.equal(check.status, 0, `vsctl vhd check ${file}:\n${check.stdout}${check.stderr}`);
  assert.match(check.stdout, /: valid/);
  const disk = VhdDisk.open(file);
  try {
    assertSameContent(disk, model, `${name}: the engine's read of the file`);
    if (disk.parent) return;
  } finally {
    disk.close();
  }
  const expected = rawOf(model, name);
  const same = compare(file, 'vpc', expected, 'raw');
  assert.equal(same.status, 0, `${name}: qemu-img compare -f vpc ${file} with what was written: ${why(same)}`);
  fs.rmSync(expected);
}

// ---------------------------------------------------------------------------------------------
// Allocation maps

interface Run {
  offset: number;
  length: number;
  allocated: boolean;
}

/** Merges adjacent runs of the same kind, checking they tile [from, end) with no gap or overlap. */
function mergeRuns(runs: Run[], from = 0): Run[] {
  const out: Run[] = [];
  for (const r of runs) {
    const last = out[out.length - 1];
    assert.equal(r.offset, last ? last.offset + last.length : from, `runs leave a gap or overlap at ${r.offset}: ${JSON.stringify(runs)}`);
    if (last && last.allocated === r.allocated) last.length += r.length;
    else out.push({ ...r });
  }
  return out;
}

/** nbdinfo --map --json over the export: base:allocation, "data" or "hole,zero". */
function nbdinfoMap(uri: string): Run[] {
  const r = tool('nbdinfo', ['--map', '--json', uri]);
  assert.equal(r.status, 0, `nbdinfo --map ${uri}: ${why(r)}`);
  const extents = JSON.parse(r.stdout) as Array<{ offset: number; length: number; type: number; description: string }>;
  for (const e of extents) assert.ok(e.type === 0 || e.type === 3, `extent type ${e.type} (${e.description}) is neither data nor hole,zero`);
  return mergeRuns(extents.map((e) => ({ offset: e.offset, length: e.length, allocated: e.type === 0 })));
}

/** qemu-img map over the export (another client of base:allocation). */
function qemuImgMap(uri: string, extra: string[] = []): Run[] {
  const r = tool('qemu-img', ['map', '--output=json', '-f', 'raw', ...extra, uri]);
  assert.equal(r.status, 0, `qemu-img map ${uri}: ${why(r)}`);
  const entries = JSON.parse(r.stdout) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
  for (const e of entries) assert.notEqual(e.data, e.zero, `qemu-img map entry ${JSON.stringify(e)}: data and zero must differ`);
  return mergeRuns(entries.map((e) => ({ offset: e.start, length: e.length, allocated: e.data })), entries[0]?.start ?? 0);
}

function vsctlMap(file: string): Run[] {
  const r = vsctl(['vhd', 'map', file, '--json']);
  assert.equal(r.status, 0, `vsctl vhd map ${file}: ${r.stdout}${r.stderr}`);
  return mergeRuns(JSON.parse(r.stdout) as Run[]);
}

/** Runs from the allocated ranges of a disk of `size` bytes. */
function runsFrom(allocated: Array<[number, number]>, size: number): Run[] {
  const runs: Run[] = [];
  let at = 0;
  for (const [a, b] of mergeRanges(allocated)) {
    if (a > at) runs.push({ offset: at, length: a - at, allocated: false });
    runs.push({ offset: a, length: b - a, allocated: true });
    at = b;
  }
  if (at < size) runs.push({ offset: at, length: size - at, allocated: false });
  return runs;
}

/** The blocks (whole, clipped to the disk) that a set of spans touch: what a dynamic disk allocates. */
function blocksOf(spans: Span[], size: number): Array<[number, number]> {
  return spans.map(({ offset, length }) => {
    const a = Math.floor(offset / BLOCK) * BLOCK;
    return [a, Math.min(size, Math.ceil((offset + length) / BLOCK) * BLOCK)] as [number, number];
  });
}

/** Spans widened to whole sectors: what a differencing disk holds after byte-granular writes. */
function sectorsOf(spans: Span[]): Array<[number, number]> {
  return spans.map(({ offset, length }) => [
    Math.floor(offset / SECTOR) * SECTOR, Math.ceil((offset + length) / SECTOR) * SECTOR,
  ] as [number, number]);
}

function ownExtents(file: string): Array<[number, number]> {
  const disk = VhdDisk.open(file);
  try {
    return mergeRanges([...disk.ownExtents()].map((e) => [e.offset, e.offset + e.length]));
  } finally {
    disk.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Disks

/** Sector-aligned spans scattered over a 20 MiB disk: the start, across a block boundary, mid-block, several blocks, the end. */
function scattered(size: number): Span[] {
  return [
    { offset: 0, length: 64 * KiB },
    { offset: BLOCK - 4 * KiB, length: 8 * KiB },
    { offset: 5 * MiB + 7 * SECTOR, length: 100 * KiB },
    { offset: 9 * MiB, length: 3 * MiB },
    { offset: size - 2 * KiB, length: 2 * KiB },
  ];
}

async function filledDisk(type: 'dynamic' | 'fixed'): Promise<{ file: string; model: ContentModel }> {
  const file = fresh(`${type}.vhd`);
  if (type === 'fixed') await createFixed(file, REQUEST);
  else await createDynamic(file, { size: REQUEST });
  const model = new ContentModel(sizeOf(file));
  engineWrite(file, model, scattered(model.size), type === 'fixed' ? 2 : 1);
  return { file, model };
}

interface Chain {
  files: string[];
  models: ContentModel[];
  /** Each level's own spans, base first. */
  spans: Span[][];
}

/** A dynamic base and a differencing disk over it for each further entry of `levels`, each level written through the engine. */
async function buildChain(name: string, levels: Span[][]): Promise<Chain> {
  const files: string[] = [];
  const models: ContentModel[] = [];
  for (let level = 0; level < levels.length; level++) {
    const file = fresh(`${name}-level${level}.vhd`);
    if (level === 0) await createDynamic(file, { size: REQUEST });
    else await createDifferencing(file, files[level - 1]);
    const model = level === 0 ? new ContentModel(sizeOf(file)) : models[level - 1].clone();
    engineWrite(file, model, levels[level], 10 + level);
    files.push(file);
    models.push(model);
  }
  return { files, models, spans: levels };
}

/** Three levels whose data lies in different places: some blocks only the base holds, some only a child, some several. */
function chainLevels(size: number): Span[][] {
  return [
    [{ offset: 0, length: 1 * MiB }, { offset: 6 * MiB, length: 2 * MiB }, { offset: 12 * MiB + 64 * KiB, length: 8 * KiB }],
    [
      { offset: 2 * MiB + 3 * SECTOR, length: 5 * SECTOR }, // block 1, which the base never wrote
      { offset: 6 * MiB + 512 * KiB, length: 64 * KiB }, // over the base's data
      { offset: 16 * MiB, length: BLOCK }, // a whole block of its own
    ],
    [
      { offset: 1 * MiB - 2 * SECTOR, length: 4 * SECTOR }, // across the end of the base's first run
      { offset: 2 * MiB + 6 * SECTOR, length: 4 * SECTOR }, // overlapping the child's run in block 1
      { offset: 10 * MiB + 9 * SECTOR, length: SECTOR }, // a lone sector where nobody wrote
      { offset: size - SECTOR, length: SECTOR }, // the last sector
    ],
  ];
}

// =============================================================================================

describe('qemu-img reads whole disks over NBD (convert -O raw, compare)', () => {
  for (const type of ['dynamic', 'fixed'] as const) {
    test(`a ${type} disk filled with known patterns reads back byte for byte`, async () => {
      const { file, model } = await filledDisk(type);
      const served = await serve(file, { readOnly: type === 'fixed' });
      assert.equal(served.ready.readOnly, type === 'fixed');
      assert.equal(served.ready.file, path.resolve(file));
      assert.equal(served.ready.export, path.basename(file));
      assert.equal(served.uri, nbdUnixUri(socketFor(file), path.basename(file)));
      assert.equal(fs.statSync(socketFor(file)).mode & 0o777, 0o600, 'the unix socket is only its owner\'s');
      assertExportReads(served.uri, model, `${type} over NBD`);
      assert.equal(await stopServer(served), '', 'the server logged no failure');
      assert.equal(fs.existsSync(socketFor(file)), false, 'the socket is removed at stop');
      assert.equal(fs.existsSync(`${file}.lock`), false, 'the write lock is released at stop');
    });
  }

  test('a differencing chain three deep (base -> child -> grandchild) reads as the overlay of all three', async () => {
    const chain = await buildChain('read-chain', chainLevels(await diskSize()));
    const top = chain.files[2];
    const hashes = chain.files.map(sha256File);
    const served = await serve(top);
    assertExportReads(served.uri, chain.models[2], 'grandchild over NBD');
    // A parent may be served read-only at the same time (no one holds its write lock).
    const parent = await serve(chain.files[1], { readOnly: true });
    assertExportReads(parent.uri, chain.models[1], 'child over NBD, read-only, alongside');
    await stopServer(parent);
    await stopServer(served);
    assert.deepEqual(chain.files.slice(0, 2).map(sha256File), hashes.slice(0, 2), 'serving changed a parent');
  });
});

// =============================================================================================

describe('qemu-io over NBD: byte-granular writes and reads, flush, FUA, discard, write zeroes', () => {
  test('every operation lands in the VHD: vsctl vhd check, qemu-img -f vpc and the engine agree with the model', async () => {
    const file = fresh('qemu-io.vhd');
    await createDynamic(file, { size: REQUEST });
    const size = sizeOf(file);
    const model = new ContentModel(size);
    const served = await serve(file);

    // Writes, each checked right after with read -P (and its neighbours), on one connection.
    const writes: Array<{ pattern: number; offset: number; length: number; fua?: boolean }> = [
      { pattern: 0x11, offset: 0, length: 1 * MiB },
      { pattern: 0x22, offset: 100, length: 1000 }, // unaligned both ends, inside the first write
      { pattern: 0x33, offset: 2 * MiB - 300, length: 700 }, // unaligned across a block boundary, onto a new block
      { pattern: 0x44, offset: 3 * MiB, length: 2 * MiB, fua: true },
      { pattern: 0x55, offset: 6 * MiB, length: 2 * MiB }, // all of block 3: discarded below
      { pattern: 0x66, offset: 10 * MiB, length: 2 * MiB }, // all of block 5: zeroed with unmap below
      { pattern: 0x77, offset: 12 * MiB, length: 1 * MiB },
      { pattern: 0x88, offset: size - 700, length: 700 }, // the end, unaligned start
      { pattern: 0x99, offset: 4 * MiB + 1, length: 1 }, // one byte
    ];
    const first: string[] = [];
    for (const w of writes) {
      model.write(w.offset, constBytes(w.pattern, w.length));
      first.push(`write ${w.fua ? '-f ' : ''}-P 0x${w.pattern.toString(16)} ${w.offset} ${w.length}`);
      const from = Math.max(0, w.offset - 600);
      first.push(...patternChecks(model, from, Math.min(size, w.offset + w.length + 600) - from));
    }
    first.push('flush');
    qemuIo(served.uri, first);

    // A second connection: the data is there; then trim and zero.
    const second = [...patternChecks(model, 0, 2 * MiB + 1024), ...patternChecks(model, size - 4096, 4096)];
    second.push(`discard ${6 * MiB} ${BLOCK}`); // the whole block 3: dropped
    model.write(6 * MiB, constBytes(0, 2 * MiB));
    second.push(`discard ${3 * MiB + 512} 4096`); // part of a block: left as it is
    second.push(`write -z ${12 * MiB + 4096} 65536`); // NO_HOLE: zeros written
    model.write(12 * MiB + 4096, constBytes(0, 65536));
    second.push(`write -z -u ${10 * MiB} ${2 * MiB}`); // may unmap a whole block with nothing beneath: dropped
    model.write(10 * MiB, constBytes(0, 2 * MiB));
    second.push(`write -z ${14 * MiB} ${2 * MiB}`); // NO_HOLE over a hole: allocated, zeros
    second.push(`write -z -u ${16 * MiB} ${2 * MiB}`); // over a hole, may unmap: stays a hole
    second.push('write -z 500 100'); // unaligned zeros inside the 0x22 run
    model.write(500, constBytes(0, 100));
    second.push(`write -z -u ${2 * MiB - 200} 300`); // unaligned, may unmap, across the boundary: written
    model.write(2 * MiB - 200, constBytes(0, 300));
    second.push(...patternChecks(model, 0, 2 * MiB + 1024));
    second.push(...patternChecks(model, 3 * MiB, 15 * MiB));
    second.push('flush');
    qemuIo(served.uri, second);

    // The allocation seen over NBD while served, then the file's own once stopped.
    const expectedMap = runsFrom([[0, 6 * MiB], [12 * MiB, 16 * MiB], [lastBlockStart(size), size]], size);
    assert.deepEqual(nbdinfoMap(served.uri), expectedMap, 'nbdinfo --map after discard and write zeroes');
    assert.equal(await stopServer(served), '', 'the server logged no failure');
    assert.deepEqual(vsctlMap(file), expectedMap, 'vsctl vhd map of the file');
    assertFileHolds(file, model, 'qemu-io over NBD');
    // QEMU's vpc driver on the file itself, at the byte-granular edges.
    qemuIo(file, [
      'read -P 0x11 0 100', 'read -P 0x22 100 400', 'read -P 0 500 100', 'read -P 0x22 600 500', 'read -P 0x11 1100 1000',
      `read -P 0x33 ${2 * MiB - 300} 100`, `read -P 0 ${2 * MiB - 200} 300`, `read -P 0x33 ${2 * MiB + 100} 300`,
      `read -P 0x44 ${4 * MiB} 1`, `read -P 0x99 ${4 * MiB + 1} 1`, `read -P 0x44 ${4 * MiB + 2} 1022`,
      `read -P 0x88 ${size - 700} 700`, `read -P 0 ${size - 1024} 324`,
    ], { format: 'vpc', readOnly: true });
  });
});

// =============================================================================================

describe('nbdinfo: export properties, the export list and the base:allocation map', () => {
  test('a writable export offers flush, FUA, trim, zero and multi-conn; --list names it; the default export reaches it', async () => {
    const file = fresh('info.vhd');
    await createDynamic(file, { size: REQUEST });
    const served = await serve(file, { exportName: 'disk one' });
    assert.equal(served.ready.export, 'disk one');
    assert.equal(served.uri, nbdUnixUri(socketFor(file), 'disk one'));
    const info = JSON.parse(tool('nbdinfo', ['--json', served.uri]).stdout) as { exports: Array<Record<string, unknown>> };
    assert.equal(info.exports.length, 1);
    const e = info.exports[0];
    assert.equal(e['export-name'], 'disk one');
    assert.equal(e['export-size'], sizeOf(file));
    for (const flag of ['can_flush', 'can_fua', 'can_trim', 'can_zero', 'can_multi_conn']) assert.equal(e[flag], true, flag);
    assert.equal(e.is_read_only, false);
    assert.deepEqual(e.contexts, ['base:allocation']);
    assert.equal(e.block_size_minimum, 1, 'byte-granular requests are accepted');

    const list = tool('nbdinfo', ['--list', '--json', nbdUnixUri(socketFor(file))]);
    assert.equal(list.status, 0, list.stderr);
    const listed = (JSON.parse(list.stdout) as { exports: Array<Record<string, unknown>> }).exports;
    assert.deepEqual(listed.map((x) => x['export-name']), ['disk one']);
    assert.equal(listed[0].description, path.resolve(file));
    assert.equal(listed[0]['export-size'], sizeOf(file));

    const byDefault = JSON.parse(tool('nbdinfo', ['--json', nbdUnixUri(socketFor(file), '')]).stdout) as { exports: Array<Record<string, unknown>> };
    assert.equal(byDefault.exports[0]['export-size'], sizeOf(file), 'the default export "" is the served disk');
    const unknown = tool('nbdinfo', ['--json', nbdUnixUri(socketFor(file), 'no such export')]);
    assert.notEqual(unknown.status, 0, 'an unknown export name is refused');
    await stopServer(served);
  });

  test('a read-only export says is_read_only and offers neither trim nor zero', async () => {
    const file = fresh('info-ro.vhd');
    await createDynamic(file, { size: REQUEST });
    const served = await serve(file, { readOnly: true });
    const e = (JSON.parse(tool('nbdinfo', ['--json', served.uri]).stdout) as { exports: Array<Record<string, unknown>> }).exports[0];
    assert.equal(e.is_read_only, true);
    assert.equal(e.can_trim, false);
    assert.equal(e.can_zero, false);
    assert.equal(e.can_flush, true);
    assert.equal(e.can_multi_conn, true);
    assert.equal(e['export-size'], sizeOf(file));
    await stopServer(served);
  });

  test('nbdinfo --map of a dynamic disk with scattered writes equals vsctl vhd map (and qemu-img map agrees)', async () => {
    const file = fresh('map-dynamic.vhd');
    await createDynamic(file, { size: REQUEST });
    const size = sizeOf(file);
    const spans = [
      { offset: 0, length: SECTOR },
      { offset: 5 * MiB, length: 4 * KiB },
      { offset: 6 * MiB - SECTOR, length: 2 * SECTOR }, // touches blocks 2 and 3
      { offset: 14 * MiB + 33 * SECTOR, length: SECTOR },
      { offset: size - SECTOR, length: SECTOR },
    ];
    engineWrite(file, new ContentModel(size), spans, 3);
    const expected = runsFrom(blocksOf(spans, size), size);
    assert.deepEqual(vsctlMap(file), expected, 'vsctl vhd map: the touched blocks');
    const served = await serve(file, { readOnly: true });
    assert.deepEqual(nbdinfoMap(served.uri), expected, 'nbdinfo --map');
    assert.deepEqual(qemuImgMap(served.uri), expected, 'qemu-img map over NBD');
    // A map from an unaligned offset: block status for a byte-granular start.
    const tail = qemuImgMap(served.uri, ['--start-offset=100', `--max-length=${6 * MiB}`]);
    assert.deepEqual(tail, [
      { offset: 100, length: 2 * MiB - 100, allocated: true },
      { offset: 2 * MiB, length: 2 * MiB, allocated: false },
      { offset: 4 * MiB, length: 2 * MiB + 100, allocated: true },
    ], 'qemu-img map --start-offset=100');
    await stopServer(served);
  });

  test('nbdinfo --map of a differencing chain equals vsctl vhd map, sector by sector where parent and child differ', async () => {
    const size = await diskSize();
    const chain = await buildChain('map-chain', chainLevels(size).slice(0, 2));
    const [base, child] = chain.spans;
    // The base is dynamic (whole blocks); the child holds sectors.
    const expected = runsFrom([...blocksOf(base, size), ...sectorsOf(child)], size);
    assert.deepEqual(vsctlMap(chain.files[1]), expected, 'vsctl vhd map of the child');
    assert.ok(expected.length >= 6, 'the map has several runs of each kind');
    const served = await serve(chain.files[1], { readOnly: true });
    assert.deepEqual(nbdinfoMap(served.uri), expected, 'nbdinfo --map of the child');
    assert.deepEqual(qemuImgMap(served.uri), expected, 'qemu-img map of the child over NBD');
    await stopServer(served);
  });
});

// =============================================================================================

describe('differencing chains served and written through NBD', () => {
  test('writes through the grandchild\'s export land in the grandchild only, sector by sector; parents keep every byte', async () => {
    const size = await diskSize();
    const chain = await buildChain('write-chain', chainLevels(size));
    const [, , top] = chain.files;
    const parents = chain.files.slice(0, 2);
    const hashes = parents.map(sha256File);
    const model = chain.models[2].clone();
    const own: Span[] = [...chain.spans[2]];

    const served = await serve(top, { lockChain: true });
    // --lock-chain: the parents are locked too, so nobody can write them while the child is served.
    for (const p of parents) {
      assert.equal(fs.existsSync(`${p}.lock`), true, `${path.basename(p)} is locked`);
      const refused = await serveVhdFailure(p, { socket: `${p}.sock2` });
      assert.equal(refused.exit.code, 1);
      assert.equal(refused.jsonError?.code, 'VHD_E_LOCKED', refused.message);
    }

    const nbdWrites: Array<{ pattern: number; offset: number; length: number }> = [
      { pattern: 0xa1, offset: 100, length: 1000 }, // unaligned, over the base's data
      { pattern: 0xa2, offset: 2 * MiB + 4 * SECTOR + 17, length: 3000 }, // unaligned, over the child's and the grandchild's runs in block 1
      { pattern: 0xa3, offset: 4 * MiB, length: BLOCK }, // a whole block nobody holds
      { pattern: 0xa4, offset: 8 * MiB - 256, length: 512 }, // across a boundary, from the base's data into a hole
      { pattern: 0xa5, offset: size - 1, length: 1 }, // the very last byte
    ];
    const commands: string[] = [];
    for (const w of nbdWrites) {
      commands.push(`write -P 0x${w.pattern.toString(16)} ${w.offset} ${w.length}`);
      model.write(w.offset, constBytes(w.pattern, w.length));
      own.push(w);
    }
    // Zeroing where the parents hold data must write zeros (the child then holds them) ...
    commands.push(`write -z -u ${6 * MiB} ${BLOCK}`); // a whole block of the base's data: cannot be dropped
    model.write(6 * MiB, constBytes(0, BLOCK));
    own.push({ offset: 6 * MiB, length: BLOCK });
    commands.push(`write -z ${12 * MiB + 64 * KiB + 1000} 3000`); // part of the base's run, NO_HOLE
    model.write(12 * MiB + 64 * KiB + 1000, constBytes(0, 3000));
    own.push({ offset: 12 * MiB + 64 * KiB + 1000, length: 3000 });
    // ... while zeroing where no level holds data writes nothing.
    commands.push(`write -z -u ${18 * MiB} ${BLOCK}`);
    commands.push(`write -z -u ${14 * MiB + 1000} 5000`);
    commands.push('flush');
    // Read back what was just written (constant patterns and zeros); the rest is compared whole below.
    for (const w of nbdWrites) commands.push(...patternChecks(model, w.offset, w.length));
    commands.push(`read -P 0 ${6 * MiB} ${BLOCK}`, `read -P 0 ${12 * MiB + 64 * KiB + 1000} 3000`, `read -P 0 ${18 * MiB} ${BLOCK}`);
    qemuIo(served.uri, commands);
    assertExportReads(served.uri, model, 'grandchild over NBD after the writes');
    assert.equal(await stopServer(served), '', 'the server logged no failure');

    assert.deepEqual(parents.map(sha256File), hashes, 'a parent changed');
    for (const p of parents) assert.equal(fs.existsSync(`${p}.lock`), false, `${path.basename(p)}'s lock is released`);
    assert.deepEqual(ownExtents(top), mergeRanges(sectorsOf(own)), 'the grandchild holds exactly the sectors written to it');
    for (let level = 0; level < 2; level++) {
      const disk = VhdDisk.open(chain.files[level]);
      try {
        assertSameContent(disk, chain.models[level], `level ${level} after writes through its child`);
      } finally {
        disk.close();
      }
    }
    assertFileHolds(top, model, 'the grandchild');
    // QEMU's vpc driver reads the sectors the grandchild holds from the file itself.
    qemuIo(top, [
      ...nbdWrites.flatMap((w) => patternChecks(model, w.offset, w.length)),
      `read -P 0 ${6 * MiB} ${BLOCK}`, `read -P 0 ${12 * MiB + 64 * KiB + 1000} 3000`,
    ], { format: 'vpc', readOnly: true });
    // And served again, read-only, the data read back over NBD is still the overlay.
    const again = await serve(top, { readOnly: true });
    assertExportReads(again.uri, model, 'grandchild served again');
    await stopServer(again);
  });
});

// =============================================================================================

describe('read-only exports and write locks', () => {
  test('a --read-only export refuses writes (qemu-io: permission denied; raw requests: EPERM) and leaves the file as it was', async () => {
    const { file, model } = await filledDisk('dynamic');
    const hash = sha256File(file);
    const served = await serve(file, { readOnly: true });
    assert.equal(served.ready.readOnly, true);
    assert.equal(fs.existsSync(`${file}.lock`), false, 'a read-only server takes no write lock');

    const write = tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0xee 0 4096', served.uri]);
    assert.notEqual(write.status, 0, 'qemu-io opened a read-only export for writing');
    assert.match(write.stdout + write.stderr, /Permission denied|read-only/i);
    const autoReadOnly = tool('qemu-io', ['--image-opts', '-c', 'write -P 0xee 0 4096',
      `driver=raw,file.driver=nbd,file.path=${socketFor(file)},file.export=${path.basename(file)},auto-read-only=on`]);
    assert.match(autoReadOnly.stdout + autoReadOnly.stderr, /Permission denied|Operation not permitted|read-only/i, 'a write through an auto-read-only open fails');
    qemuIo(served.uri, ['read 0 65536', `read ${5 * MiB + 100} 1000`], { readOnly: true });

    // A client that ignores the READ_ONLY flag gets EPERM (1) for every kind of write, and can still read and flush.
    const raw = await NbdClient.connect(socketFor(file));
    raw.sendClientFlags();
    const info = await raw.go(path.basename(file));
    assert.equal(info.size, model.size);
    assert.ok(info.flags & TFlag.READ_ONLY, 'NBD_FLAG_READ_ONLY is set');
    assert.equal((await raw.request(Cmd.WRITE, 0, 4096, Buffer.alloc(4096, 0xee))).error, Err.EPERM, 'WRITE');
    assert.equal((await raw.request(Cmd.WRITE, 100, 10, Buffer.alloc(10, 0xee))).error, Err.EPERM, 'unaligned WRITE');
    assert.equal((await raw.request(Cmd.WRITE_ZEROES, 0, BLOCK)).error, Err.EPERM, 'WRITE_ZEROES');
    assert.equal((await raw.request(Cmd.TRIM, 0, BLOCK)).error, Err.EPERM, 'TRIM');
    assert.equal((await raw.request(Cmd.FLUSH, 0, 0)).error, 0, 'FLUSH');
    const read = await raw.request(Cmd.READ, 100, 1000);
    assert.equal(read.error, 0);
    assert.ok(read.data!.equals(model.read(100, 1000)), 'an unaligned raw READ returns the data');
    assert.ok(await raw.disconnect(), 'the server closes after DISC');

    assert.equal(await stopServer(served), '', 'the server logged no failure');
    assert.equal(sha256File(file), hash, 'the file changed under a read-only export');
  });

  test('a file served writable cannot be served again: read-only is refused naming the holder, writable with VHD_E_LOCKED', async () => {
    const { file, model } = await filledDisk('dynamic');
    const served = await serve(file);
    const holder = `vsctl vhd serve (pid ${served.pid})`;

    const readOnly = await serveVhdFailure(file, { socket: `${file}.ro.sock`, readOnly: true });
    assert.equal(readOnly.exit.code, 1);
    assert.equal(readOnly.jsonError?.code, 'VHD_E_LOCKED', readOnly.message);
    assert.ok(readOnly.jsonError!.message.includes(holder), `the error names the holder "${holder}": ${readOnly.jsonError!.message}`);
    assert.ok(readOnly.jsonError!.message.includes(path.resolve(file)), 'the error names the file');
    assert.equal(fs.existsSync(`${file}.ro.sock`), false, 'the refused server left no socket');

    const writable = await serveVhdFailure(file, { socket: `${file}.rw.sock` });
    assert.equal(writable.exit.code, 1);
    assert.equal(writable.jsonError?.code, 'VHD_E_LOCKED', writable.message);
    assert.ok(writable.jsonError!.message.includes(`pid ${served.pid}`), writable.jsonError!.message);

    // Without --json the refusal is one line on stderr with the code.
    const plain = vsctl(['vhd', 'serve', file, '--socket', `${file}.plain.sock`, '--read-only']);
    assert.equal(plain.status, 1);
    assert.match(plain.stderr, /^vsctl: .*is open for writing by vsctl vhd serve \(pid \d+\).*\[VHD_E_LOCKED\]\n$/);

    // Serving the same socket again is refused too, and the first server still serves.
    const sameSocket = await serveVhdFailure(file, { socket: socketFor(file), readOnly: true });
    assert.equal(sameSocket.exit.code, 1);
    assertExportReads(served.uri, model, 'the first server after the refusals');
    await stopServer(served);

    // Once stopped, the lock is gone and the file can be served again.
    const next = await serve(file);
    assertExportReads(next.uri, model, 'served again');
    await stopServer(next);
  });
});

// =============================================================================================

describe('starting and stopping', () => {
  test('a server sent SIGTERM as soon as it prints its ready line still stops cleanly: exit 0, socket and lock removed', async () => {
    // A supervisor (a test, vhdmount, a service manager) may stop the server the moment it is
    // ready; the ready line promises that SIGTERM then means "flush, release and exit 0".
    const file = fresh('quick-stop.vhd');
    await createDynamic(file, { size: REQUEST });
    const outcomes: string[] = [];
    for (let i = 0; i < 20; i++) {
      // SIGTERM from the very callback that receives the ready line, as a supervisor reacting at once would.
      const child = spawn(VSCTL, ['vhd', 'serve', file, '--socket', socketFor(file), '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        if (!stdout.includes('\n') && chunk.includes('\n')) child.kill('SIGTERM');
        stdout += chunk;
      });
      const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('close', (c, sig) => resolve([c, sig])));
      assert.match(stdout, /"uri":/, `#${i}: no ready line`);
      const left = [`${file}.lock`, socketFor(file)].filter((f) => fs.existsSync(f)).map((f) => path.basename(f));
      if (code !== 0 || left.length) outcomes.push(`#${i}: exit ${code ?? signal}${left.length ? `, left ${left.join(' and ')}` : ''}`);
    }
    assert.deepEqual(outcomes, [], 'servers stopped right after their ready line did not stop cleanly');
    const check = vsctl(['vhd', 'check', file]);
    assert.equal(check.status, 0, check.stdout + check.stderr);
  });
});

// =============================================================================================

describe('several connections at once', () => {
  test('two qemu-io processes write the same sectors at once, byte-granular and interleaved; a flush on a third covers both', async () => {
    const file = fresh('multi-qemu-io.vhd');
    await createDynamic(file, { size: REQUEST });
    const size = sizeOf(file);
    const model = new ContentModel(size);
    const served = await serve(file);
    // In [1 MiB, 1 MiB + 256 KiB) A writes bytes 0-199 and 400-511 of every sector, B bytes 200-399:
    // each write reads, patches and writes back a sector the other connection writes too, so a
    // lost update shows. A walks up, B walks down, so for half the sectors A comes first and for
    // the other half B does. In [4 MiB, 4 MiB + 128 KiB) both write whole sectors, A walking up
    // and B down: the later write wins, so the sectors must read as B's up to one point and A's
    // after it, proving the connections ran at once and each one's writes took effect in order.
    // Each also writes every other 64 KiB chunk of [8 MiB, 12 MiB).
    const region = 1 * MiB;
    const sectors = 512;
    const race = 4 * MiB;
    const raced = 256;
    const scripts: string[][] = [['sleep 200'], ['sleep 200']]; // both connect, then start together
    for (let i = 0; i < sectors; i++) {
      const a = region + i * SECTOR;
      const b = region + (sectors - 1 - i) * SECTOR;
      scripts[0].push(`write -q -P 0x5a ${a} 200`, `write -q -P 0x5b ${a + 400} 112`);
      scripts[1].push(`write -q -P 0xa5 ${b + 200} 200`);
      if (i < raced) {
        scripts[0].push(`write -q -P 0xc1 ${race + i * SECTOR} ${SECTOR}`);
        scripts[1].push(`write -q -P 0xc2 ${race + (raced - 1 - i) * SECTOR} ${SECTOR}`);
      }
      model.write(a, constBytes(0x5a, 200)).write(a + 200, constBytes(0xa5, 200)).write(a + 400, constBytes(0x5b, 112));
    }
    for (let c = 0; c < 64; c++) {
      const at = 8 * MiB + c * 64 * KiB;
      scripts[c % 2].push(`write -q -P 0x${(0x30 + c).toString(16)} ${at} ${64 * KiB}`);
      model.write(at, constBytes(0x30 + c, 64 * KiB));
    }
    const results = await Promise.all(scripts.map((script) => runAsync('qemu-io', ['-f', 'raw', ...script.flatMap((c) => ['-c', c]), served.uri], CLIENT_TIMEOUT_MS)));
    for (const r of results) {
      assert.equal(r.status, 0, `concurrent qemu-io exited ${r.status ?? r.signal}: ${r.stdout}${r.stderr}`);
      assert.doesNotMatch(r.stdout + r.stderr, /fail|error/i);
    }
    qemuIo(served.uri, ['flush']);
    assert.equal(await stopServer(served), '', 'the server logged no failure');

    // Who won each raced sector: all B's (0xc2), then all A's (0xc1).
    const disk = VhdDisk.open(file);
    let winners: string;
    try {
      const data = disk.read(race, raced * SECTOR);
      winners = Array.from({ length: raced }, (_, i) => {
        const sector = data.subarray(i * SECTOR, (i + 1) * SECTOR);
        if (sector.equals(constBytes(0xc1, SECTOR))) return 'A';
        if (sector.equals(constBytes(0xc2, SECTOR))) return 'B';
        return '?';
      }).join('');
    } finally {
      disk.close();
    }
    assert.match(winners, /^B+A+$/, `raced sectors, by the connection whose write each holds: ${winners}`);
    const switchAt = winners.indexOf('A');
    model.write(race, constBytes(0xc2, switchAt * SECTOR)).write(race + switchAt * SECTOR, constBytes(0xc1, (raced - switchAt) * SECTOR));
    assertFileHolds(file, model, 'two concurrent qemu-io');
  });

  test('nbdcopy --connections=4 copies a sparse raw image into an export and back out', async () => {
    const file = fresh('multi-nbdcopy.vhd');
    await createDynamic(file, { size: REQUEST });
    const size = sizeOf(file);
    const model = new ContentModel(size);
    for (let i = 0; i < 12; i++) {
      // Data in every other MiB-and-a-bit, unaligned to blocks, so the copy mixes data and holes.
      const offset = i * (MiB + 300 * SECTOR) + 7 * SECTOR;
      model.write(offset, patternBytes(500 + i, 512 * KiB + i * SECTOR));
    }
    model.write(size - 4096, patternBytes(600, 4096));
    const source = rawOf(model, 'nbdcopy-source');
    const served = await serve(file);
    // Into the export, then out again, with nbdcopy's defaults: up to 64 requests of 256 KiB in flight on each connection.
    const into = tool('nbdcopy', ['--connections=4', '--flush', source, served.uri]);
    assert.equal(into.status, 0, `nbdcopy into the export: ${why(into)}`);
    const back = fresh('nbdcopy-back.raw');
    const out = tool('nbdcopy', ['--connections=4', served.uri, back]);
    assert.equal(out.status, 0, `nbdcopy out of the export: ${why(out)}`);
    const reader = rawFileReader(back);
    try {
      assertSameContent(reader, model, 'nbdcopy round trip');
    } finally {
      reader.close();
    }
    assert.equal(await stopServer(served), '', 'the server logged no failure');
    assertFileHolds(file, model, 'nbdcopy --connections=4');
  });
});

// =============================================================================================

describe('TCP on loopback', () => {
  test('--tcp 0 serves on 127.0.0.1 at a free port that qemu-img and nbdinfo read; nothing listens elsewhere', async () => {
    const { file, model } = await filledDisk('dynamic');
    const served = await serveVhd(file, { tcp: 0, readOnly: true, exportName: 'tcp-disk' });
    const port = served.ready.port!;
    assert.ok(Number.isInteger(port) && port > 0, `a port was chosen: ${port}`);
    assert.equal(served.ready.socket, undefined);
    assert.equal(served.uri, nbdTcpUri(port, 'tcp-disk'));
    assertExportReads(served.uri, model, 'over TCP');
    const info = JSON.parse(tool('nbdinfo', ['--json', served.uri]).stdout) as { exports: Array<Record<string, unknown>> };
    assert.equal(info.exports[0]['export-size'], model.size);

    // Only loopback: another address of this host refuses the connection.
    const other = Object.values(os.networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal);
    if (other) {
      const outcome = await new Promise<string>((resolve) => {
        const s = net.connect(port, other.address);
        s.setTimeout(3000, () => {
          s.destroy();
          resolve('timed out');
        });
        s.once('connect', () => {
          s.destroy();
          resolve('connected');
        });
        s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      });
      assert.notEqual(outcome, 'connected', `${other.address}:${port} accepted a connection`);
    }
    await stopServer(served);
    const afterStop = tool('nbdinfo', ['--json', served.uri]);
    assert.notEqual(afterStop.status, 0, 'the port is closed once the server stopped');
  });
});
