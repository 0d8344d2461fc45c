// host/: the durable write and the time limit every layer uses.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { writeFileDurably } from '../host/files.js';
import { cpuTicks, isAlive, processStartTicks } from '../host/process.js';
import { finishesWithin } from '../host/time.js';

describe('host utilities', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-host-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('writeFileDurably replaces a file whole, with the mode asked for even over a leftover draft, and leaves no draft', async () => {
    const file = path.join(dir, 'settings.json');
    const draft = path.join(dir, '.settings.json.tmp');
    fs.writeFileSync(file, 'old');
    fs.writeFileSync(draft, 'leftover', { mode: 0o666 });
    fs.chmodSync(draft, 0o666);
    await writeFileDurably(file, 'new', { draft, mode: 0o600 });
    assert.equal(fs.readFileSync(file, 'utf8'), 'new');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.existsSync(draft), false);
  });

  test('writeFileDurably that cannot rename keeps the old file and removes its draft', async () => {
    const file = path.join(dir, 'kept.txt');
    fs.writeFileSync(file, 'old');
    fs.mkdirSync(path.join(dir, 'in-the-way'));
    const draft = path.join(dir, '.kept.txt.tmp');
    // Renaming a file over a folder fails (EISDIR): the target here is the folder.
    await assert.rejects(writeFileDurably(path.join(dir, 'in-the-way'), 'new', { draft }), /EISDIR/);
    assert.equal(fs.readFileSync(file, 'utf8'), 'old');
    assert.equal(fs.existsSync(draft), false);
  });

  test('finishesWithin says whether a promise fulfilled in time, and passes a rejection on', async () => {
    assert.equal(await finishesWithin(Promise.resolve('done'), 1_000), true);
    assert.equal(await finishesWithin(new Promise(() => {}), 50), false);
    await assert.rejects(finishesWithin(Promise.reject(new Error('broke')), 1_000), /broke/);
  });

  test('this process is alive, with a start time and CPU time; a pid past the kernel maximum is not', () => {
    assert.equal(isAlive(process.pid), true);
    assert.match(processStartTicks(process.pid) ?? '', /^\d+$/);
    assert.ok((cpuTicks(process.pid) ?? -1) >= 0);
    const beyond = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8')) + 1;
    assert.equal(isAlive(beyond), false);
    assert.equal(processStartTicks(beyond), null);
    assert.equal(cpuTicks(beyond), null);
  });
});
