// Shared fixtures for the VHD tests: temporary folders, deterministic data, a model of what a
// disk should contain, byte-for-byte comparisons that name the first differing offset, and
// thin wrappers around qemu-img, qemu-io and bin/vsctl.

import assert from 'node:assert/strict';
import { type SpawnSyncOptions, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VhdDisk, VhdError } from '../../storage/vhd/index.js';

export const KiB = 1024;
export const MiB = 1024 ** 2;
export const GiB = 1024 ** 3;
export const SECTOR = 512;
export const BLOCK = 2 * MiB;

/** The checkout: this file runs as dist/test/helpers/vhd-fixtures.js. */
export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const VSCTL = path.join(PROJECT_ROOT, 'bin', 'vsctl');
/** The compiled engine, for scripts run in another process. */
export const ENGINE_MODULE = path.join(PROJECT_ROOT, 'dist', 'storage', 'vhd', 'index.js');

// ---------------------------------------------------------------------------------------------
// Temporary folders

export function makeTempDir(label: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `vserver-${label}-`));
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// Processes

export interface RunResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function run(command: string, args: string[], options: SpawnSyncOptions = {}): RunResult {
  const result = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * MiB, ...options });
  if (result.error) throw result.error;
  return {
    status: result.status,
    signal: result.signal,
    stdout: String(result.stdout ?? ''),
    stderr: String(result.stderr ?? ''),
  };
}

/** Runs a command that must succeed; returns its stdout. */
export function mustRun(command: string, args: string[]): string {
  const r = run(command, args);
  assert.equal(r.status, 0, `${command} ${args.join(' ')} exited ${r.status}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

export function qemuImg(...args: string[]): string {
  return mustRun('qemu-img', args);
}

/** `qemu-img create -f vpc`; size may be a number of bytes or qemu's own notation ("10M"). */
export function qemuCreate(file: string, size: number | string, options: string[] = []): void {
  qemuImg('create', '-q', '-f', 'vpc', ...(options.length ? ['-o', options.join(',')] : []), file, String(size));
}

export function qemuInfo(file: string, format = 'vpc'): Record<string, unknown> {
  return JSON.parse(qemuImg('info', '--output=json', '-f', format, file)) as Record<string, unknown>;
}

export function qemuVirtualSize(file: string, format = 'vpc'): number {
  return qemuInfo(file, format)['virtual-size'] as number;
}

/** The disk's size as libvhdi (and the tools built on it) reads it: vhdiinfo's media size. */
export function vhdiMediaSize(file: string): number {
  const size = /Media size\s*:.*\((\d+) bytes\)/.exec(mustRun('vhdiinfo', [file]))?.[1];
  assert.ok(size, `vhdiinfo ${file} printed no media size`);
  return Number(size);
}

/** `qemu-img convert -f FORMAT -O raw`: the whole disk as QEMU reads it. */
export function qemuToRaw(file: string, rawFile: string, format = 'vpc'): void {
  qemuImg('convert', '-f', format, '-O', 'raw', file, rawFile);
}

export function qemuCompare(a: string, aFormat: string, b: string, bFormat: string): RunResult {
  return run('qemu-img', ['compare', '-f', aFormat, '-F', bFormat, a, b]);
}

/** Ranges QEMU reports as holding data (`qemu-img map`), for comparing huge sparse images. */
export function qemuDataRanges(file: string, format: string): Array<[number, number]> {
  const map = JSON.parse(qemuImg('map', '--output=json', '-f', format, file)) as Array<{ start: number; length: number; data: boolean }>;
  return map.filter((e) => e.data).map((e) => [e.start, e.start + e.length]);
}

/** A run of one byte value, as qemu-io's `-P` writes and verifies. */
export interface PatternWrite {
  pattern: number;
  offset: number;
  length: number;
}

function ioCommands(verb: 'write' | 'read', writes: PatternWrite[]): string[] {
  return writes.flatMap((w) => ['-c', `${verb} -P 0x${w.pattern.toString(16).padStart(2, '0')} ${w.offset} ${w.length}`]);
}

/** qemu-io writes each pattern run, in order. */
export function qemuIoWrite(file: string, writes: PatternWrite[], format = 'vpc'): void {
  const r = run('qemu-io', ['-f', format, ...ioCommands('write', writes), file]);
  assert.equal(r.status, 0, `qemu-io write exited ${r.status}:\n${r.stdout}${r.stderr}`);
  assert.doesNotMatch(r.stdout + r.stderr, /fail|error/i, `qemu-io write reported a failure:\n${r.stdout}${r.stderr}`);
}

/** qemu-io reads each run read-only and verifies every byte holds its pattern. */
export function qemuIoVerify(file: string, runs: PatternWrite[], format = 'vpc'): void {
  const r = run('qemu-io', ['-r', '-f', format, ...ioCommands('read', runs), file]);
  assert.doesNotMatch(r.stdout, /Pattern verification failed/, `qemu-io read back something else:\n${r.stdout}`);
  assert.equal(r.status, 0, `qemu-io read exited ${r.status}:\n${r.stdout}${r.stderr}`);
}

/** Runs bin/vsctl as a user would. */
export function vsctl(args: string[], options: SpawnSyncOptions = {}): RunResult {
  return run(VSCTL, args, options);
}

// ---------------------------------------------------------------------------------------------
// Data

/** Deterministic, position-dependent bytes: misplaced or stale data never matches by chance. */
export function patternBytes(seed: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let x = (seed * 0x9e3779b1 + 0x7f4a7c15) >>> 0 || 1;
  let i = 0;
  for (; i + 4 <= length; i += 4) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  for (; i < length; i++) buf[i] = (seed + i) & 0xff;
  return buf;
}

export function constBytes(value: number, length: number): Buffer {
  return Buffer.alloc(length, value);
}

export function sha256File(file: string): string {
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 * MiB);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/**
 * What a disk of any size should contain: zeros, overlaid by the writes in order. Kept as the
 * list of writes so a 127 GiB disk costs only what was written.
 */
export class ContentModel {
  readonly writes: Array<{ offset: number; data: Buffer }> = [];

  constructor(readonly size: number) {}

  write(offset: number, data: Buffer): this {
    assert.ok(offset >= 0 && offset + data.length <= this.size, `model write at ${offset}+${data.length} outside ${this.size}`);
    this.writes.push({ offset, data: Buffer.from(data) });
    return this;
  }

  writePattern(w: PatternWrite): this {
    return this.write(w.offset, constBytes(w.pattern, w.length));
  }

  read(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    this.readInto(out, offset);
    return out;
  }

  readInto(target: Buffer, offset: number): void {
    target.fill(0);
    const length = target.length;
    for (const w of this.writes) {
      const start = Math.max(offset, w.offset);
      const end = Math.min(offset + length, w.offset + w.data.length);
      if (start < end) w.data.copy(target, start - offset, start - w.offset, end - w.offset);
    }
  }

  clone(): ContentModel {
    const copy = new ContentModel(this.size);
    copy.writes.push(...this.writes);
    return copy;
  }

  /** The written ranges, merged, in order. */
  ranges(): Array<[number, number]> {
    return mergeRanges(this.writes.map((w) => [w.offset, w.offset + w.data.length]));
  }

  /** A raw image of the model (sparse where nothing was written). */
  writeRawFile(file: string, size = this.size): void {
    const fd = fs.openSync(file, 'wx');
    try {
      fs.ftruncateSync(fd, size);
      for (const w of this.writes) fs.writeSync(fd, w.data, 0, w.data.length, w.offset);
    } finally {
      fs.closeSync(fd);
    }
  }
}

export function mergeRanges(ranges: Array<[number, number]>): Array<[number, number]> {
  const sorted = ranges.filter(([a, b]) => b > a).sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const [a, b] of sorted) {
    const last = out[out.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Comparisons

/** Anything read like a disk: our VhdDisk, a raw file, a model. */
export interface Readable {
  size: number;
  readInto(target: Buffer, offset: number): void;
}

export function rawFileReader(file: string): Readable & { close(): void } {
  const fd = fs.openSync(file, 'r');
  return {
    size: fs.fstatSync(fd).size,
    readInto(target, offset) {
      let done = 0;
      while (done < target.length) {
        const n = fs.readSync(fd, target, done, target.length - done, offset + done);
        if (n === 0) break;
        done += n;
      }
      target.fill(0, done);
    },
    close: () => fs.closeSync(fd),
  };
}

/** Fails naming the first differing byte, without dumping megabytes of buffer. */
export function assertSameBytes(actual: Buffer, expected: Buffer, at: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length}, expected ${expected.length}`);
  if (actual.equals(expected)) return;
  let i = 0;
  while (actual[i] === expected[i]) i++;
  assert.fail(`${what}: first difference at disk offset ${at + i} (sector ${Math.floor((at + i) / SECTOR)}): ` +
    `0x${actual[i].toString(16)}, expected 0x${expected[i].toString(16)}`);
}

/** Above this, comparing every byte takes too long: callers pass the ranges that may hold data. */
export const FULL_COMPARE_LIMIT = 2 * GiB;
const COMPARE_CHUNK = 4 * MiB;

/**
 * Compares two images of the same size byte for byte: every byte, or only `ranges` (widened
 * to whole sectors) when given, for huge sparse images whose other bytes are known holes.
 */
export function assertSameContent(actual: Readable, expected: Readable, what: string, ranges?: Array<[number, number]>): void {
  assert.equal(actual.size, expected.size, `${what}: size ${actual.size}, expected ${expected.size}`);
  if (!ranges) assert.ok(actual.size <= FULL_COMPARE_LIMIT, `${what}: pass the ranges to compare for a ${actual.size}-byte image`);
  const spans = ranges ? mergeRanges(ranges) : [[0, actual.size] as [number, number]];
  const a = Buffer.allocUnsafe(COMPARE_CHUNK);
  const b = Buffer.allocUnsafe(COMPARE_CHUNK);
  for (const [start, end] of spans) {
    const from = Math.floor(start / SECTOR) * SECTOR;
    const to = Math.min(actual.size, Math.ceil(end / SECTOR) * SECTOR);
    for (let at = from; at < to; at += COMPARE_CHUNK) {
      const n = Math.min(COMPARE_CHUNK, to - at);
      actual.readInto(a.subarray(0, n), at);
      expected.readInto(b.subarray(0, n), at);
      assertSameBytes(a.subarray(0, n), b.subarray(0, n), at, what);
    }
  }
}

/** Ranges worth comparing on a huge disk: what the model wrote, widened by a block each side. */
export function modelSpans(model: ContentModel, margin = BLOCK): Array<[number, number]> {
  return model.ranges().map(([a, b]) => [Math.max(0, a - margin), Math.min(model.size, b + margin)]);
}

/** Asserts `fn` throws a VhdError with this code; returns it for further checks. */
export function expectVhdError(fn: () => unknown, code: string, what?: string): VhdError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof VhdError, `${what ?? 'call'}: expected VhdError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, `${what ?? 'call'}: expected ${code}, got ${e.code}: ${e.message}`);
    return e;
  }
  assert.fail(`${what ?? 'call'}: expected VhdError ${code}, but it succeeded`);
}

export async function expectVhdErrorAsync(fn: () => Promise<unknown>, code: string, what?: string): Promise<VhdError> {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof VhdError, `${what ?? 'call'}: expected VhdError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, `${what ?? 'call'}: expected ${code}, got ${e.code}: ${e.message}`);
    return e;
  }
  assert.fail(`${what ?? 'call'}: expected VhdError ${code}, but it succeeded`);
}

/** XORs one byte of a file in place (to corrupt a structure). */
export function flipByte(file: string, offset: number, mask = 0xff): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, offset);
    b[0] ^= mask;
    fs.writeSync(fd, b, 0, 1, offset);
  } finally {
    fs.closeSync(fd);
  }
}

/** Where the last (possibly partial) block of a disk of this size starts. */
export function lastBlockStart(size: number, blockSize = BLOCK): number {
  return Math.floor((size - 1) / blockSize) * blockSize;
}

/** The size a guest sees of a disk, as this engine reads it. */
export function sizeOf(file: string): number {
  const disk = VhdDisk.open(file);
  try {
    return disk.size;
  } finally {
    disk.close();
  }
}

/** Writes `data` at `offset` of a VHD through the engine (opened and closed for this one write). */
export function writeVhd(file: string, data: Buffer, offset: number): void {
  const disk = VhdDisk.open(file, { writable: true });
  try {
    disk.write(data, offset);
  } finally {
    disk.close();
  }
}
