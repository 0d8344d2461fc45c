// Hostile files where a disk is expected. A differencing disk's parent locator that names a
// FIFO, a character device or a folder must not hang `vsctl vhd info/check/serve` (open() of a
// FIFO blocks until a writer comes): each fails at once with VHD_E_NOT_A_FILE. Every command
// is spawned with a time limit, and one that is killed by it fails the test.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { createDifferencing, createDynamic } from '../storage/vhd/index.js';
import { MiB, makeTempDir, removeDir, run, VSCTL } from './helpers/vhd-fixtures.js';

/** Far above what a refusal takes (under 1 s), far below "forever". */
const COMMAND_LIMIT_MS = 15_000;

const dir = makeTempDir('hostile');
after(() => removeDir(dir));

/** Makes `child.vhd` whose parent (by every locator and by name) is `parent.vhd`, then lets `replace` put something else there. */
async function childOf(name: string, replace: (parent: string) => void): Promise<string> {
  const folder = path.join(dir, name);
  fs.mkdirSync(folder);
  const parent = path.join(folder, 'parent.vhd');
  const child = path.join(folder, 'child.vhd');
  await createDynamic(parent, { size: 8 * MiB });
  await createDifferencing(child, parent);
  fs.rmSync(parent);
  replace(parent);
  return child;
}

function mkfifo(file: string): void {
  const r = run('mkfifo', [file]);
  assert.equal(r.status, 0, r.stderr);
}

const HOSTILE_PARENTS: Array<{ what: string; make: (parent: string) => void }> = [
  { what: 'a FIFO', make: mkfifo },
  // /dev/zero's own numbers (1, 5): a device made here, as a locator could name anywhere.
  { what: 'a character device', make: (p) => assert.equal(run('mknod', [p, 'c', '1', '5']).status, 0) },
  { what: 'a symlink to /dev/zero', make: (p) => fs.symlinkSync('/dev/zero', p) },
  { what: 'a folder', make: (p) => fs.mkdirSync(p) },
];

function vsctlBounded(args: string[]): ReturnType<typeof run> {
  const started = Date.now();
  const r = run(VSCTL, args, { timeout: COMMAND_LIMIT_MS, killSignal: 'SIGKILL' });
  assert.equal(r.signal, null, `vsctl ${args.join(' ')} did not answer within ${COMMAND_LIMIT_MS / 1000} s (hung on open?)`);
  assert.ok(Date.now() - started < COMMAND_LIMIT_MS);
  return r;
}

describe('the engine refuses a parent that is not a regular file, without blocking', () => {
  for (const { what, make } of HOSTILE_PARENTS) {
    test(`a parent that is ${what}: vhd info, check and serve fail fast with VHD_E_NOT_A_FILE`, async () => {
      const child = await childOf(what.replace(/\W+/g, '-'), make);
      const parent = path.join(path.dirname(child), 'parent.vhd');

      const info = vsctlBounded(['vhd', 'info', child, '--json']);
      assert.equal(info.status, 1, info.stdout + info.stderr);
      const error = (JSON.parse(info.stdout) as { error: { code: string; message: string; file: string } }).error;
      assert.equal(error.code, 'VHD_E_NOT_A_FILE');
      assert.equal(error.file, parent);
      assert.match(error.message, /a disk or image must be a regular file/);

      const check = vsctlBounded(['vhd', 'check', child, '--json']);
      assert.equal(check.status, 1, check.stdout + check.stderr);
      const report = JSON.parse(check.stdout) as { valid: boolean; errors: Array<{ code: string }> };
      assert.equal(report.valid, false);
      assert.deepEqual(report.errors.map((e) => e.code), ['VHD_E_NOT_A_FILE']);

      const serve = vsctlBounded(['vhd', 'serve', child, '--socket', path.join(path.dirname(child), 'nbd.sock'), '--read-only']);
      assert.equal(serve.status, 1, serve.stdout + serve.stderr);
      assert.match(serve.stderr, /VHD_E_NOT_A_FILE/);
      assert.ok(!fs.existsSync(path.join(path.dirname(child), 'nbd.sock')), 'serve listened although the disk was refused');
    });
  }

  test('a FIFO named directly, as the disk or as convert\'s source, is refused the same way', () => {
    const fifo = path.join(dir, 'direct.vhd');
    mkfifo(fifo);
    for (const args of [['vhd', 'info', fifo, '--json'], ['vhd', 'convert', fifo, path.join(dir, 'out.vhd'), '--json']]) {
      const r = vsctlBounded(args);
      assert.equal(r.status, 1, r.stdout + r.stderr);
      assert.equal((JSON.parse(r.stdout) as { error: { code: string } }).error.code, 'VHD_E_NOT_A_FILE', args.join(' '));
    }
    assert.ok(!fs.existsSync(path.join(dir, 'out.vhd')));
  });
});
