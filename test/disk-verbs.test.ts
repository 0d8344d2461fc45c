// The disk verbs vsctl has in two forms (offline "vsctl vhd ..." and through vserverd "vsctl disk
// ...") come from one declaration: their --help lists the same options with the same help.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CONNECTION_OPTIONS } from '../bin/cli/api-call.js';
import { vsctl } from './helpers/vhd-fixtures.js';

/** The option rows of a --help output: option name to its help text. */
function optionsOf(args: string[]): Map<string, string> {
  const r = vsctl([...args, '--help']);
  assert.equal(r.status, 0, `vsctl ${args.join(' ')} --help exited ${r.status}: ${r.stderr}`);
  const rows = r.stdout.split('\n').flatMap((line) => {
    const match = /^ {2}--(\S+)(?: \S+)?\s+(.*)$/.exec(line);
    return match ? [[match[1], match[2]] as [string, string]] : [];
  });
  return new Map(rows.filter(([name]) => !(name in CONNECTION_OPTIONS)));
}

describe('disk verbs declared once', () => {
  test('vhd create and disk create --help list the same options with the same help', () => {
    const offline = optionsOf(['vhd', 'create']);
    const api = optionsOf(['disk', 'create']);
    assert.deepEqual([...api.keys()].sort(), [...offline.keys()].sort());
    for (const [name, help] of offline) assert.equal(api.get(name), help, `--${name}`);
    for (const name of ['size', 'type', 'parent', 'json', 'help']) assert.ok(offline.has(name), `--${name} listed`);
  });

  test('vhd info and disk inspect --help take the same FILE and list the same options', () => {
    const usage = (args: string[]): string => vsctl([...args, '--help']).stdout.split('\n')[0];
    assert.equal(usage(['vhd', 'info']), 'usage: vsctl vhd info FILE');
    assert.equal(usage(['disk', 'inspect']), 'usage: vsctl disk inspect FILE');
    assert.deepEqual([...optionsOf(['disk', 'inspect'])], [...optionsOf(['vhd', 'info'])]);
  });
});
