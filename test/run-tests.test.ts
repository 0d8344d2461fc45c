// scripts/run-tests.js holds every skip to test/allowed-skips.json: a test skipped for a reason
// not on that list fails the run, named with its reason; the listed reason passes.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeTempDir, PROJECT_ROOT, removeDir } from './helpers/vhd-fixtures.js';

/** The vm-engine skip on a host with VT-x or AMD-V, as test/vm-engine.test.ts gives it. */
const ENGINE_SKIP = 'this host\'s CPU has vmx or svm: the engine may rightly choose KVM here, and these tests are about a host without them';

let dir: string;

/** Runs scripts/run-tests.js on the fixture test files whose names contain `only`. */
function runTests(only: string): { status: number | null; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, VSERVER_TEST_DIR: dir };
  // Set by the runner running this file; a nested runner given it would report to us, not run.
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, [path.join(PROJECT_ROOT, 'scripts', 'run-tests.js'), only], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function fixture(name: string, body: string): void {
  fs.writeFileSync(path.join(dir, `${name}.test.js`), `const { test } = require('node:test');\n${body}\n`);
}

describe('scripts/run-tests.js and skipped tests', { timeout: 120_000 }, () => {
  before(() => {
    dir = makeTempDir('run-tests');
    fixture('plain', `test('runs', () => {});`);
    fixture('unlisted', `test('runs', () => {});\ntest('needs a thing', { skip: 'no thing here' }, () => {});`);
    fixture('in-body', `test('skips itself', (t) => { t.skip('decided inside'); });`);
    fixture('bare', `test('skips without a reason', { skip: true }, () => {});`);
    fixture('vm-engine', `test('engine decision without VT-x', { skip: ${JSON.stringify(ENGINE_SKIP)} }, () => {});`);
    fixture('other-engine', `test('engine decision without VT-x', { skip: ${JSON.stringify(ENGINE_SKIP)} }, () => {});`);
  });
  after(() => removeDir(dir));

  test('a run without skips passes, and the spec report is on stdout', () => {
    const r = runTests('plain');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /✔ runs/);
  });

  test('a test skipped for an unlisted reason fails the run, naming the file, the test and the reason', () => {
    const r = runTests('unlisted');
    assert.notEqual(r.status, 0);
    assert.match(r.stdout, /needs a thing/, 'the spec report still shows the run');
    assert.match(r.stderr, /1 test\(s\) skipped for a reason not on the list in .*allowed-skips\.json/);
    assert.match(r.stderr, /unlisted\.test\.js: "needs a thing" \(skip: no thing here\)/);
  });

  test('t.skip() inside a test, and a skip with no reason, fail the run too', () => {
    const inBody = runTests('in-body');
    assert.notEqual(inBody.status, 0);
    assert.match(inBody.stderr, /"skips itself" \(skip: decided inside\)/);
    const bare = runTests('bare');
    assert.notEqual(bare.status, 0);
    assert.match(bare.stderr, /"skips without a reason" \(skip, no reason given\)/);
  });

  test('the listed reason passes in the listed file only', () => {
    const listed = runTests('vm-engine');
    assert.equal(listed.status, 0, listed.stderr);
    assert.match(listed.stdout, /engine decision without VT-x/);
    const elsewhere = runTests('other-engine');
    assert.notEqual(elsewhere.status, 0);
    assert.match(elsewhere.stderr, /other-engine\.test\.js/);
  });
});
