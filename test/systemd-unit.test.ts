// The systemd unit docs/operations.md gives: systemd's own checker accepts it without a word,
// and it stops vserverd alone (KillMode=process, so that the VMs' workers survive a crash and
// are reattached), with time to save the VMs.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { PROJECT_ROOT } from './helpers/vhd-fixtures.js';

function documentedUnit(): string {
  const doc = fs.readFileSync(path.join(PROJECT_ROOT, 'docs', 'operations.md'), 'utf8');
  const unit = /```ini\n([^]*?)```/.exec(doc)?.[1];
  assert.ok(unit, 'docs/operations.md has the unit in an ```ini block');
  return unit;
}

function setting(unit: string, key: string): string | undefined {
  return new RegExp(`^${key}=(.*)$`, 'm').exec(unit)?.[1];
}

test('the documented systemd unit passes systemd-analyze verify without a warning', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-unit-'));
  try {
    const file = path.join(dir, 'vserverd.service');
    fs.writeFileSync(file, documentedUnit());
    const verify = (unitFile: string): string => {
      const run = spawnSync('systemd-analyze', ['verify', unitFile], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(run.error, undefined, `systemd-analyze: ${run.error?.message}`);
      return `${run.stdout}${run.stderr}`.trim();
    };
    assert.equal(verify(file), '');
    // The checker does speak up: a wrong setting is reported.
    fs.writeFileSync(file, documentedUnit().replace('KillMode=process', 'KillMode=bogus'));
    assert.match(verify(file), /kill mode/i);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the unit runs node on dist/ (not npm), stops vserverd alone with SIGTERM, and gives it minutes to save the VMs', () => {
  const unit = documentedUnit();
  assert.match(setting(unit, 'ExecStart') ?? '', /^\/usr\/bin\/node \S+\/dist\/server\/main\.js$/);
  assert.equal(setting(unit, 'KillMode'), 'process');
  assert.equal(setting(unit, 'KillSignal'), 'SIGTERM');
  assert.ok(Number(setting(unit, 'TimeoutStopSec')) >= 120, 'TimeoutStopSec leaves time for saving and for Shutdown\'s minute');
  assert.equal(setting(unit, 'Restart'), 'on-failure');
  assert.equal(setting(unit, 'RuntimeDirectory'), undefined, 'systemd would empty /run/vserver, the running workers\' folders, on each stop');
});
