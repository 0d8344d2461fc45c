// Task (IVMTask), a long operation, declared member by member with its handler.

import { boolean, field, integer, type InterfaceRecord, listOf, membersOf, nothing, object, orNull, param, string, TASK_EXAMPLE, anyObject } from '../member-types.js';
import { VM_EXAMPLE } from './shared.js';

const { get, method } = membersOf<'Task'>(TASK_EXAMPLE);

export const task: InterfaceRecord = {
  doc: 'A long operation (IVMTask). Tasks are kept with their log after they finish; the caller needs read on the object the task acts on.',
  ref: 'Task/<id>',
  members: {
    get_Description: get('What the task does.', string, 'Startup of web', ({ self }) => self.description),
    get_PercentCompleted: get('0 to 100.', integer, 100, ({ self }) => self.percent),
    get_IsComplete: get('Whether it has finished (done, failed or cancelled).', boolean, true, ({ self }) => self.finished !== null),
    get_IsCancelable: get('Whether Cancel can stop it.', boolean, false, ({ self }) => self.cancelable && self.finished === null),
    get_Result: get('Its result once done: an object reference, a value, or null.', orNull(anyObject), null,
      ({ self }) => (typeof self.result === 'object' ? self.result : null)),
    get_Error: get('Why it failed, or null.', orNull(object({ name: field(string, 'The error\'s name'), message: field(string, 'What went wrong') })), null, ({ self }) => self.error),
    get_Log: get('Its log lines, with times.', listOf(string), ['2026-11-27T10:00:00.000Z Startup of web', '2026-11-27T10:00:03.000Z Running'], ({ self }) => self.log),
    get_Object: get('The object it acts on.', orNull(string), VM_EXAMPLE, ({ self }) => self.object),
    get_Started: get('When it started.', string, '2026-11-27T10:00:00.000Z', ({ self }) => self.started),
    WaitForCompletion: method('Waits up to timeoutMs (at most 10 minutes) for the task; returns IsComplete.', {
      params: { timeoutMs: param({ type: 'integer', min: 0, max: 600_000 }, 'How long to wait.') }, returns: boolean, right: 'read',
      example: { params: { timeoutMs: 60000 }, result: true },
      handler: ({ services, self, params }) => services.tasks.wait(self.id, params.timeoutMs),
    }),
    Cancel: method('Stops a cancelable task; what it did is undone where the operation allows.', {
      returns: nothing, right: 'control', errors: ['VM_E_TASK_NOT_CANCELABLE'], example: { params: {}, result: null },
      handler: ({ services, self }) => services.tasks.cancel(self.id),
    }),
  },
};
