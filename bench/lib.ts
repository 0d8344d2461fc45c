// Shared helpers for the benchmarks: the table a benchmark returns and its printing, timing
// (a clock, and a child process run to its end), medians, and temporary directories that are
// removed however the run ends.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** The checkout: this file runs as dist/bench/lib.js. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * One measured figure beside its peer's, as `npm run bench -- NAME --json` gives it: the ratio
 * ours/peer and whether it meets its goal (null where there is no peer or no goal).
 */
export interface Measure {
  name: string;
  ours: number;
  peer: number | null;
  unit: string;
  ratio: number | null;
  /** The goal, e.g. ">= 0.95x" or "<= 1.05x"; null for a figure without one. */
  goal: string | null;
  met: boolean | null;
}

/** A measure with a goal on the ratio ours/peer: at least `min`, or at most `max`. */
export function measured(name: string, ours: number, peer: number | null, unit: string, goal?: { min?: number; max?: number }): Measure {
  const ratio = peer ? ours / peer : null;
  if (!goal || ratio === null) return { name, ours, peer, unit, ratio, goal: null, met: null };
  const met = (goal.min === undefined || ratio >= goal.min) && (goal.max === undefined || ratio <= goal.max);
  const text = [goal.min !== undefined ? `>= ${goal.min}x` : '', goal.max !== undefined ? `<= ${goal.max}x` : ''].filter(Boolean).join(', ');
  return { name, ours, peer, unit, ratio, goal: text, met };
}

/** What a benchmark module's run() returns; run.ts prints it. */
export interface BenchTable {
  title: string;
  columns: string[];
  /** Per column; numbers read best right-aligned. Default: first column left, the rest right. */
  align?: Array<'left' | 'right'>;
  rows: string[][];
  /** Lines printed under the table: the goal, how the figures were taken, caveats. */
  notes: string[];
  /** The figures as numbers, for --json. */
  measures?: Measure[];
}

/** The contract every bench/<name>.ts module fulfils. */
export interface BenchModule {
  run(): Promise<BenchTable>;
}

/** Formats rows into aligned columns separated by " | ", with a rule under the header. */
export function formatTable(table: BenchTable): string {
  const all = [table.columns, ...table.rows];
  const widths = table.columns.map((_, c) => Math.max(...all.map((row) => (row[c] ?? '').length)));
  const align = (c: number): 'left' | 'right' => table.align?.[c] ?? (c === 0 ? 'left' : 'right');
  const line = (row: string[]): string =>
    widths.map((w, c) => (align(c) === 'left' ? (row[c] ?? '').padEnd(w) : (row[c] ?? '').padStart(w))).join(' | ').trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('-|-');
  const noteWidth = Math.max(rule.length, 100);
  return [table.title, '', line(table.columns), rule, ...table.rows.map(line), '', ...table.notes.flatMap((n) => wrap(n, noteWidth))].join('\n');
}

/** Breaks text into lines of at most `width` characters at spaces (a longer word keeps its own line). */
export function wrap(text: string, width: number): string[] {
  if (text.length <= width) return [text];
  const lines: string[] = [];
  let current = '';
  for (const word of text.split(' ')) {
    if (current && current.length + 1 + word.length > width) {
      lines.push(current);
      current = word;
    } else {
      current = current ? `${current} ${word}` : word;
    }
  }
  if (current) lines.push(current);
  return lines;
}

export function printTable(table: BenchTable): void {
  console.log(formatTable(table));
}

/** Milliseconds since an arbitrary origin, sub-microsecond resolution. */
export function now(): number {
  return performance.now();
}

export function median(values: number[]): number {
  if (values.length === 0) throw new Error('median of nothing');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export interface CommandResult {
  /** Wall time from spawn to exit, in milliseconds (process start-up and exit included). */
  ms: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion and times it; a non-zero exit or a signal is an error. */
export function runCommand(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): CommandResult {
  const start = now();
  const result = spawnSync(command, args, { cwd: options.cwd, env: options.env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const ms = now() - start;
  if (result.error) throw new Error(`${command}: ${result.error.message}`);
  if (result.status !== 0) {
    const how = result.signal ? `killed by ${result.signal}` : `exit status ${result.status}`;
    throw new Error(`${command} ${args.join(' ')}: ${how}\n${result.stderr.trim()}`);
  }
  return { ms, stdout: result.stdout, stderr: result.stderr };
}

/** True when the command can be run (found on PATH and starts). */
export function haveCommand(command: string, args: string[] = ['--version']): boolean {
  const result = spawnSync(command, args, { stdio: 'ignore' });
  return !result.error && result.status === 0;
}

const liveTempDirs = new Set<string>();
let signalHookInstalled = false;

function removeLiveTempDirs(): void {
  for (const dir of liveTempDirs) fs.rmSync(dir, { recursive: true, force: true });
  liveTempDirs.clear();
}

function installSignalHook(): void {
  if (signalHookInstalled) return;
  signalHookInstalled = true;
  process.on('exit', removeLiveTempDirs);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      removeLiveTempDirs();
      process.exit(130);
    });
  }
}

/** Runs fn with a fresh directory under os.tmpdir(), removed afterwards (also on Ctrl-C). */
export async function withTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  installSignalHook();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  liveTempDirs.add(dir);
  try {
    return await fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    liveTempDirs.delete(dir);
  }
}

export function formatMs(ms: number): string {
  if (ms < 1) return `${(ms * 1000).toFixed(0)} µs`;
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(1)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function formatCount(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** "2.35x", flagged when below a goal of 1.0. */
export function formatRatio(ratio: number, goal = 1): string {
  const text = ratio >= 100 ? `${ratio.toFixed(0)}x` : ratio >= 10 ? `${ratio.toFixed(1)}x` : `${ratio.toFixed(2)}x`;
  return ratio >= goal ? text : `${text} (below goal)`;
}

/** Resident and peak memory of a process, in bytes (VmRSS and VmHWM of /proc/PID/status). */
export function memoryOf(pid: number): { rss: number; peak: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}
