// What the vsctl commands that talk to vserverd share: printing (--json or text, tables),
// parsing sizes and counts given on the command line, and reading object references.

import { ApiCallError, isRef } from './api-client.js';
import { printJson } from './api-call.js';
import type { ParsedArgs } from './command.js';
import { UsageError } from './terminal.js';

/** Prints the value as JSON with --json, else runs `text`. */
export function print(args: ParsedArgs, json: unknown, text: () => void): void {
  if (args.json) printJson(json);
  else text();
}

/** Columns padded to their widest cell, under a header. */
export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ').trimEnd();
  console.log(line(header));
  for (const row of rows) console.log(line(row));
}

/** A whole number of MB: "512", "512M", "2G", "1T". */
export function parseMegabytes(text: unknown, option: string): number {
  const match = /^(\d+)\s*([MGT]?)(?:i?B)?$/i.exec(String(text).trim());
  const value = match ? Number(match[1]) * { '': 1, M: 1, G: 1024, T: 1024 ** 2 }[match[2].toUpperCase() as '' | 'M' | 'G' | 'T'] : NaN;
  if (!Number.isSafeInteger(value) || value <= 0) throw new UsageError(`${option}: "${String(text)}" is not a size in MB (for example 512, or 2G)`);
  return value;
}

/** A whole number of at least `min`, given for `option`. */
export function parseCount(text: unknown, option: string, min = 0): number {
  const value = Number(text);
  if (!/^\d+$/.test(String(text)) || !Number.isSafeInteger(value) || value < min) throw new UsageError(`${option}: "${String(text)}" is not a whole number${min ? ` of at least ${min}` : ''}`);
  return value;
}

/** The reference in an answer that must be an object reference ({ $ref }); `what` names the call for the error. */
export function refOf(value: unknown, what: string): string {
  if (!isRef(value)) throw new ApiCallError('VSCTL_E_BAD_RESPONSE', `vserverd answered ${what} with ${JSON.stringify(value)}, not an object reference`);
  return value.$ref;
}

/** The id part of a reference: "VirtualMachine/<uuid>" gives "<uuid>". */
export const idOf = (ref: string): string => ref.slice(ref.indexOf('/') + 1);
