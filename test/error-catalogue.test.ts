// The error catalogue and the code agree: every error name the sources give is declared in
// server/error-catalogue.ts, every declared name is asserted by some other test (or is on the
// short list below, with why no test provokes it), and docs/errors.md is the catalogue's table.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ERRORS, type ErrorName, isErrorName } from '../server/error-catalogue.js';
import { errorReference } from '../server/api/error-table.js';
import { PROJECT_ROOT } from './helpers/vhd-fixtures.js';

const NAME = /\b(?:VM|VHD)_E_[A-Z_]+\b/g;
const THIS_FILE = path.join('test', 'error-catalogue.test.ts');

/**
 * Declared names no test provokes, and why: each needs a failure this machine cannot make on
 * demand. A name that some test comes to assert must leave this list (the last test checks).
 */
const NOT_PROVOKED: Partial<Record<ErrorName, string>> = {
  VM_E_QEMU_REFUSED: 'QEMU refusing a QMP command that vserverd sends well-formed',
  VM_E_TASK_TIMEOUT: 'a website task still running after a minute',
};

/** The .ts files under `dir`, as paths from the project's root. */
function sources(dir: string): string[] {
  return fs.readdirSync(path.join(PROJECT_ROOT, dir), { recursive: true }).map(String)
    .filter((f) => f.endsWith('.ts')).map((f) => path.join(dir, f));
}

/** Each error name (or name prefix, ending in "_") the files mention, with the first file that does. */
function namesIn(files: string[]): Map<string, string> {
  const found = new Map<string, string>();
  for (const file of files) {
    for (const [name] of fs.readFileSync(path.join(PROJECT_ROOT, file), 'utf8').matchAll(NAME)) {
      if (!found.has(name)) found.set(name, file);
    }
  }
  return found;
}

const declared = Object.keys(ERRORS) as ErrorName[];

describe('the error catalogue', () => {
  test('every error name the sources of server/, vmm/, storage/ and bin/ give is declared in the catalogue', () => {
    const given = namesIn(['server', 'vmm', 'storage', 'bin'].flatMap(sources));
    assert.ok(given.size > 50, `only ${given.size} names found: the scan is broken`);
    const undeclared = [...given].filter(([name]) => (name.endsWith('_') ? !declared.some((d) => d.startsWith(name)) : !isErrorName(name)));
    assert.deepEqual(undeclared.map(([name, file]) => `${name} (${file})`), []);
  });

  test('every declared name is asserted by a test other than this one, or is listed with why no test provokes it', () => {
    const tested = namesIn(sources('test').filter((f) => f !== THIS_FILE));
    const unreached = declared.filter((name) => !tested.has(name) && !NOT_PROVOKED[name]);
    assert.deepEqual(unreached, [], 'names no test asserts');
    const listedButTested = Object.keys(NOT_PROVOKED).filter((name) => tested.has(name));
    assert.deepEqual(listedButTested, [], 'names a test now asserts: take them off NOT_PROVOKED');
    assert.deepEqual(Object.keys(NOT_PROVOKED).filter((name) => !isErrorName(name)), []);
  });

  test('the JSON-RPC protocol errors travel under JSON-RPC 2.0\'s own codes, and every other name under -32000', () => {
    const protocol: Partial<Record<ErrorName, number>> = {
      VM_E_PARSE_ERROR: -32700, VM_E_INVALID_REQUEST: -32600, VM_E_METHOD_NOT_FOUND: -32601, VM_E_INVALID_PARAMS: -32602, VM_E_INTERNAL: -32603,
      // Refusals of the request as a whole, before any call: JSON-RPC's "invalid request".
      VM_E_REQUEST_TOO_LARGE: -32600, VM_E_CSRF: -32600,
    };
    for (const name of declared) assert.equal(ERRORS[name].rpc, protocol[name] ?? -32000, name);
  });

  test('every entry has an HTTP error status and a meaning', () => {
    for (const name of declared) {
      assert.ok(ERRORS[name].http >= 400 && ERRORS[name].http <= 599, `${name}: ${ERRORS[name].http}`);
      assert.ok(ERRORS[name].doc.length > 10, name);
    }
  });

  test('docs/errors.md is the table generated from the catalogue', () => {
    const written = fs.readFileSync(path.join(PROJECT_ROOT, 'docs', 'errors.md'), 'utf8');
    assert.equal(written, errorReference(), 'docs/errors.md is stale: run "node dist/server/api/error-table.js > docs/errors.md"');
  });
});
