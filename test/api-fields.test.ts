// server/api/fields.ts's htmlPattern: a declared pattern as an HTML `pattern` attribute, which
// browsers compile as ^(?:pattern)$ with the v flag, where a class's literal "-" must be escaped.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { htmlPattern } from '../server/api/fields.js';
import { SCHEMA } from '../server/api/schema.js';

/** The pattern as a browser compiles the attribute. */
const asBrowser = (pattern: string): RegExp => new RegExp(`^(?:${pattern})$`, 'v');

describe('htmlPattern', () => {
  test('CreateUser\'s name pattern, which the v flag refuses as declared, compiles and matches the same names', () => {
    const declared = SCHEMA.VirtualServer.members.CreateUser.params!.name;
    assert.equal(declared.type, 'string');
    const pattern = (declared as { pattern: string }).pattern;
    assert.throws(() => asBrowser(pattern), SyntaxError, 'as declared, a browser ignores it');
    const html = htmlPattern(pattern);
    assert.equal(html, '^[A-Za-z0-9._\\-]+$');
    const browser = asBrowser(html);
    for (const name of ['ops', 'a-b', 'x.y_z-1', '-', 'a b', 'a/b', '', 'é', 'a\\b']) {
      assert.equal(browser.test(name), new RegExp(pattern).test(name), name);
    }
  });

  test('a class\'s literal "-" (first, last, after a range) and its v-reserved characters are escaped; ranges and what is outside classes stay', () => {
    assert.equal(htmlPattern('[-a]'), '[\\-a]');
    assert.equal(htmlPattern('[^-a]'), '[^\\-a]');
    assert.equal(htmlPattern('[a-]'), '[a\\-]');
    assert.equal(htmlPattern('[a-z-0]'), '[a-z\\-0]');
    assert.equal(htmlPattern('[(|)/{}]'), '[\\(\\|\\)\\/\\{\\}]');
    assert.equal(htmlPattern('a-b\\[x-'), 'a-b\\[x-');
    assert.equal(htmlPattern('[\\-\\]]'), '[\\-\\]]');
    for (const pattern of ['[-a]', '[a-]', '[a-z-0]', '[(|)/{}]', '[--/]']) asBrowser(htmlPattern(pattern));
  });

  test('every pattern the members declare compiles as a browser compiles it', () => {
    const patterns: string[] = [];
    const collect = (spec: unknown): void => {
      if (typeof spec !== 'object' || spec === null) return;
      const { pattern } = spec as { pattern?: unknown };
      if (typeof pattern === 'string') patterns.push(pattern);
      for (const value of Object.values(spec)) collect(value);
    };
    collect(SCHEMA);
    assert.ok(patterns.length >= 1, 'CreateUser declares one');
    for (const pattern of patterns) assert.doesNotThrow(() => asBrowser(htmlPattern(pattern)), pattern);
  });
});
