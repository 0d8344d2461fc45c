// server/site/forms.ts: where an API refusal is shown on a form, and the whole-number fields
// checked against a member's declared limits before the API is asked.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ApiError } from '../server/errors.js';
import { fieldOf } from '../server/api/fields.js';
import { Refusal, refusalErrors, wholeNumberWithin } from '../server/site/forms.js';
import { memoryOf } from '../server/site/vm-configure.js';

describe('site forms', () => {
  test('a VM_E_INVALID_PARAMS naming its parameter (data.param) is shown beside the field the form maps it to, else beside the step\'s field', () => {
    const refused = new ApiError('VM_E_INVALID_PARAMS', 'VirtualMachine.put_Memory: "value" must be at most 3686 (4000 given)', { param: 'value' });
    assert.deepEqual(refusalErrors(refused, 'memory'), { memory: refused.message });
    assert.deepEqual(refusalErrors(refused, 'general', { value: 'memory' }), { memory: refused.message });
  });

  test('memoryOf reads put_Memory\'s declared limits: inside them the number, outside them a refusal beside "memory" in the site\'s words', () => {
    const { min, max } = fieldOf('VirtualMachine.put_Memory', 'value');
    assert.ok(min !== undefined && max !== undefined, 'put_Memory declares min and max');
    assert.equal(memoryOf({ memory: String(min) }), min);
    assert.equal(memoryOf({ memory: ` ${max} ` }), max);
    for (const value of [min - 1, max + 1]) {
      assert.throws(() => memoryOf({ memory: String(value) }), (e: unknown) => {
        assert.ok(e instanceof Refusal);
        assert.equal(e.field, 'memory');
        assert.equal(e.message, `${value} MB is outside the limits of ${min} to ${max} MB per VM`);
        return true;
      });
    }
    assert.throws(() => memoryOf({ memory: 'lots' }), /Memory is a whole number; "lots" is not one/);
  });

  test('wholeNumberWithin leaves an undeclared limit open', () => {
    assert.equal(wholeNumberWithin({ n: '99999' }, 'n', 'N', { min: 1 }, () => 'outside'), 99999);
    assert.throws(() => wholeNumberWithin({ n: '0' }, 'n', 'N', { min: 1 }, () => 'outside'), /outside/);
  });
});
