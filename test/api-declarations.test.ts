// The member declarations hold: every member's example parameters and result fit the types it
// declares (so docs/api.md shows calls that would pass), and the dispatcher refuses to send a
// result that does not fit its declared type (VM_E_INTERNAL, the cause logged), which makes every
// API test that calls a member check its result's type too.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Principal } from '../server/auth/users.js';
import { handleRequest } from '../server/api/dispatch.js';
import { SCHEMA } from '../server/api/schema.js';
import type { Services } from '../server/api/services.js';
import { typeProblem } from '../server/api/type-check.js';

describe('member declarations', () => {
  for (const [iface, spec] of Object.entries(SCHEMA)) {
    for (const [name, member] of Object.entries(spec.members)) {
      test(`${iface}.${name}: the example fits its declaration`, () => {
        const given = { ...member.example.params };
        if (iface !== 'VirtualServer') {
          assert.ok(typeof given.this === 'string' && given.this.startsWith(`${iface}/`), `"this" is a ${iface} reference: ${String(given.this)}`);
        }
        delete given.this;
        for (const [param, p] of Object.entries(member.params ?? {})) {
          if (given[param] === undefined) {
            assert.ok(p.optional, `the example gives the required "${param}"`);
            continue;
          }
          assert.equal(typeProblem(p, given[param]), null, `"${param}" = ${JSON.stringify(given[param])}`);
        }
        assert.deepEqual(Object.keys(given).filter((k) => !Object.hasOwn(member.params ?? {}, k)), [], 'the example gives only declared parameters');
        assert.equal(typeProblem(member.returns, member.example.result, 'result'), null, `the result ${JSON.stringify(member.example.result)}`);
      });
    }
  }

  test('a result that breaks its declared type', () => {
    // Results are checked with the same checker: a wrong field type, an undeclared field, a missing field, a bare string for a reference.
    const hostInfo = SCHEMA.VirtualServer.members.get_HostInfo;
    const fits = { ...hostInfo.example.result as Record<string, unknown> };
    assert.equal(typeProblem(hostInfo.returns, fits, 'result'), null);
    assert.match(typeProblem(hostInfo.returns, { ...fits, memoryMB: '24000' }, 'result') ?? '', /\.memoryMB must be a whole number/);
    assert.match(typeProblem(hostInfo.returns, { ...fits, secret: 1 }, 'result') ?? '', /has no field "secret"/);
    const { engine: _engine, ...lacking } = fits;
    assert.match(typeProblem(hostInfo.returns, lacking, 'result') ?? '', /lacks the field "engine"/);
    assert.match(typeProblem(SCHEMA.VirtualServer.members.get_VirtualMachines.returns, ['VirtualMachine/1'], 'result') ?? '', /\[0\] must be a VirtualMachine reference/);
    assert.match(typeProblem(SCHEMA.VirtualMachine.members.get_Uptime.returns, null, 'result') ?? 'fits', /fits/);
  });

  test('the dispatcher answers VM_E_INTERNAL for a result that does not fit, and the result when it does', async () => {
    const principal: Principal = { user: 'admin', role: 'Administrator', userRole: 'Administrator', tokenId: null };
    // Only what get_Name reaches: the caller's rights and the host's name, which here is not always a string.
    const services = (hostName: unknown): Services => ({ hostName, access: { rightsOn: () => new Set(['read']) } }) as unknown as Services;
    const request = { jsonrpc: '2.0', method: 'VirtualServer.get_Name', id: 1 };
    assert.deepEqual(await handleRequest(request, principal, services('vhost1')), { jsonrpc: '2.0', id: 1, result: 'vhost1' });
    const logged: string[] = [];
    const error = console.error;
    console.error = (...args: unknown[]) => { logged.push(args.join(' ')); };
    let answer;
    try {
      answer = await handleRequest(request, principal, services(42));
    } finally {
      console.error = error;
    }
    assert.equal(answer?.result, undefined, 'the bad result is not sent');
    assert.equal(answer?.error?.data.name, 'VM_E_INTERNAL');
    assert.match(logged.join('\n'), /VirtualServer\.get_Name returned a result that does not fit its declaration: must be a string, not number 42/);
  });
});
