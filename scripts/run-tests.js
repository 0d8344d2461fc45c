// Runs every compiled test file (dist/test/**/*.test.js) with node's test runner.
// Node 20's --test takes no globs, so the files are found here.
//
// A skipped test fails the run unless its reason is on the reviewed list in
// test/allowed-skips.json: a skip must never hide a test that could not run. The runner's spec
// output goes to stdout as before; a second reporter (skip-reporter.js) writes the skips, with
// their reasons, to a file read here afterwards.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const repo = path.resolve(import.meta.dirname, '..');
// VSERVER_TEST_DIR: another folder of compiled tests (test/run-tests.test.ts runs this script on its own).
const root = process.env.VSERVER_TEST_DIR ?? path.join(repo, 'dist', 'test');
const only = process.argv.slice(2);
const files = fs.readdirSync(root, { recursive: true })
  .map(String)
  .filter((f) => f.endsWith('.test.js'))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort()
  .map((f) => path.join(root, f));
if (files.length === 0) {
  console.error(`run-tests: no test files found under ${root}`);
  process.exit(1);
}

const allowList = path.join(repo, 'test', 'allowed-skips.json');
const allowed = JSON.parse(fs.readFileSync(allowList, 'utf8')).allowed
  .map((entry) => ({ file: entry.file, reason: new RegExp(entry.reason) }));

const skipsFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vserver-run-tests-')), 'skips.jsonl');
const result = spawnSync(process.execPath, [
  '--test',
  '--test-reporter=spec', '--test-reporter-destination=stdout',
  `--test-reporter=${path.join(import.meta.dirname, 'skip-reporter.js')}`, `--test-reporter-destination=${skipsFile}`,
  ...files,
  // No test's vserverd makes bridges or TAPs in the machine's own network namespace: the network
  // tests run theirs inside namespaces they make, with VSERVER_HOST_NETWORKS=1.
], { stdio: 'inherit', env: { ...process.env, VSERVER_HOST_NETWORKS: '0' } });

let skips;
try {
  skips = fs.readFileSync(skipsFile, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
} catch (e) {
  console.error(`run-tests: the skipped tests could not be read (${e.message}), so the run cannot pass`);
  process.exit(result.status || 1);
} finally {
  fs.rmSync(path.dirname(skipsFile), { recursive: true, force: true });
}

const unlisted = skips.filter((s) => !allowed.some((a) => (s.file ?? '').includes(a.file) && a.reason.test(s.reason)));
if (unlisted.length > 0) {
  console.error(`\nrun-tests: ${unlisted.length} test(s) skipped for a reason not on the list in ${path.relative(process.cwd(), allowList) || allowList}:`);
  for (const s of unlisted) {
    console.error(`  ${path.relative(root, s.file ?? '?')}: "${s.name}" (${s.kind}${s.reason ? `: ${s.reason}` : ', no reason given'})`);
  }
  console.error('A skip hides a test that did not run: make it run here, or add its reason to the list with why it is right.');
  process.exit(result.status || 1);
}
process.exit(result.status ?? 1);
