// The failover test harness's CI set (docs/cluster-test.md): `npm run cluster-test -- --short
// --json` builds three hosts in network namespaces with real etcd, real vserverds and a real
// test guest, then kills the VM's host, partitions it one way, freezes it past the lease and
// kills its vserverd. Every fault must be measured and hold its invariant.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import type { Report } from '../harness/runner.js';
import { PROJECT_ROOT } from './helpers/vhd-fixtures.js';

const MOVING = new Set(['host-kill', 'link-cut', 'one-way-partition', 'host-freeze']);

test('the short scenario: host kill, one-way partition, SIGSTOP past the lease and vserverd kill, each measured, no double start, nothing lost', { timeout: 1_500_000 }, () => {
  const run = spawnSync(process.execPath, [path.join(PROJECT_ROOT, 'dist', 'harness', 'cli.js'), '--short', '--json'], { encoding: 'utf8', timeout: 1_400_000 });
  assert.equal(run.status, 0, `cluster-test exited ${run.status ?? run.signal}:\n${run.stderr.slice(-6000)}`);
  const report = JSON.parse(run.stdout) as Report;
  assert.equal(report.scenario, 'short');
  assert.equal(report.hosts, 3);
  assert.deepEqual(report.faults.map((f) => f.fault), ['host-kill', 'one-way-partition', 'host-freeze', 'vserverd-kill']);
  assert.equal(report.invariantsHeld, true, run.stderr.slice(-6000));
  for (const f of report.faults) {
    assert.equal(f.ok, true, `${f.fault}: ${JSON.stringify(f)}`);
    assert.equal(f.doubleStarts, 0, `${f.fault}: two QEMUs ran at once`);
    assert.equal(f.recordsLost, 0, `${f.fault}: acknowledged records lost`);
    assert.match(f.host, /^h[1-3]$/);
    if (MOVING.has(f.fault)) {
      assert.ok(typeof f.detectionSeconds === 'number' && f.detectionSeconds > 0 && f.detectionSeconds < 30, `${f.fault}: detected in ${f.detectionSeconds} s`);
      assert.ok(typeof f.failoverSeconds === 'number' && f.failoverSeconds >= f.detectionSeconds && f.failoverSeconds < 90, `${f.fault}: running again in ${f.failoverSeconds} s`);
    } else {
      assert.equal(f.failoverSeconds, null, `${f.fault}: nothing may move`);
    }
  }
});
