// The manuals that are generated from code must match the code.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { cliReference } from '../bin/cli/reference.js';
import { apiReference } from '../server/api/reference.js';

const root = path.resolve(import.meta.dirname, '..', '..');

test('docs/cli.md is the reference generated from the command declarations', () => {
  const written = fs.readFileSync(path.join(root, 'docs', 'cli.md'), 'utf8');
  assert.equal(written, cliReference(), 'docs/cli.md is stale: run "node dist/bin/cli/reference.js > docs/cli.md"');
});

test('docs/api.md is the reference generated from the API schema', () => {
  const written = fs.readFileSync(path.join(root, 'docs', 'api.md'), 'utf8');
  assert.equal(written, apiReference(), 'docs/api.md is stale: run "node dist/server/api/reference.js > docs/api.md"');
});

test('the README gives the two commands: npm start and npm test', () => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  assert.match(readme, /^npm start\b/m);
  assert.match(readme, /^npm test\b/m);
});
