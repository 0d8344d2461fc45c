// The child process of test/vhd-fuzz.test.ts: runs each damaged file it is given through the
// engine's info, check, reads and convert, and says on stdout when each case starts and how it
// ended, one JSON line each, so that the parent can time every case and name the one that hangs.
// An engine refusal (VhdError) is a fine ending; anything else thrown is a crash.
//
// usage: node fuzz-runner.js OUTPUT_DIR FILE...

import fs from 'node:fs';
import path from 'node:path';
import { VhdDisk, VhdError, checkDisk, convertDisk, inspectDisk } from '../../storage/vhd/index.js';

/** Convert copies the whole disk: bounded so that a damaged size field that passes validation cannot make a case slow for its size alone. */
const CONVERT_MAX_BYTES = 256 * 1024 * 1024;
const READ_BYTES = 64 * 1024;

export interface CaseLine {
  file: string;
  event: 'start' | 'done';
  /** For done: each step's ending: "ok", a VHD_E_* code, or "crash: message". */
  steps?: Record<string, string>;
}

function say(line: CaseLine): void {
  fs.writeSync(1, `${JSON.stringify(line)}\n`);
}

/** Runs one operation; its ending is what it returns ("ok" when nothing), its VhdError's code, or the crash. */
async function step(steps: Record<string, string>, name: string, work: () => unknown): Promise<void> {
  try {
    const ending = await work();
    steps[name] = typeof ending === 'string' ? ending : 'ok';
  } catch (e) {
    steps[name] = e instanceof VhdError ? e.code : `crash: ${(e as Error)?.stack ?? String(e)}`;
  }
}

function readSome(file: string): void {
  const disk = VhdDisk.open(file);
  try {
    const length = Math.min(READ_BYTES, disk.size);
    const ends = [0, Math.floor(disk.size / 2 / 512) * 512, disk.size - length];
    for (const offset of ends) disk.read(offset, length);
  } finally {
    disk.close();
  }
}

async function runCase(file: string, outputDir: string): Promise<void> {
  say({ file, event: 'start' });
  const steps: Record<string, string> = {};
  let size = 0;
  await step(steps, 'info', () => { size = inspectDisk(file).sizeInGuest; });
  await step(steps, 'check', async () => {
    const report = await checkDisk(file);
    if (!report.valid && report.errors.length === 0) throw new Error('check says invalid but lists no error');
    return report.valid ? 'valid' : `invalid ${report.errors[0].code}`;
  });
  await step(steps, 'read', () => readSome(file));
  const target = path.join(outputDir, `${path.basename(file)}.converted.vhd`);
  if (size > CONVERT_MAX_BYTES) steps.convert = `not run: ${size} bytes in the guest`;
  else await step(steps, 'convert', () => convertDisk(file, target, { type: 'dynamic' }));
  fs.rmSync(target, { force: true });
  say({ file, event: 'done', steps });
}

const [outputDir, ...files] = process.argv.slice(2);
for (const file of files) await runCase(file, outputDir);
