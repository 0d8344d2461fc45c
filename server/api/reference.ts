// docs/api.md is generated from the schema, so the manual and the API never disagree:
// "node dist/server/api/reference.js > docs/api.md" rewrites it, and a test checks it.

import { fileURLToPath } from 'node:url';
import { COMMON_ERRORS, EVENTS, SCHEMA } from './schema.js';
import type { MemberSpec, ParamSpec, TypeSpec } from './schema-types.js';

export function typeName(type: TypeSpec): string {
  return type.nullable ? `${plainTypeName(type)} or null` : plainTypeName(type);
}

function plainTypeName(type: TypeSpec): string {
  switch (type.type) {
    case 'string': return type.maxLength ? `string (≤ ${type.maxLength} characters)` : 'string';
    case 'integer': {
      const range = [type.min !== undefined ? `≥ ${type.min}` : '', type.max !== undefined ? `≤ ${type.max}` : ''].filter(Boolean).join(', ');
      return range ? `integer (${range})` : 'integer';
    }
    case 'boolean': return 'boolean';
    case 'enum': return type.values.map((v) => `"${v}"`).join(' \\| ');
    case 'ref': return `${type.interface} reference`;
    case 'array': return `array of ${typeName(type.items)}`;
    case 'object': return type.fields ? `object {${Object.entries(type.fields).map(([k, v]) => `${k}${v.optional ? '?' : ''}: ${typeName(v)} (${v.doc})`).join('; ')}}` : 'object';
    case 'null': return 'null';
  }
}

function paramLine(name: string, p: ParamSpec): string {
  return `| \`${name}\` | ${typeName(p)} | ${p.optional ? 'no' : 'yes'} | ${p.doc} |`;
}

function memberSection(iface: string, name: string, m: MemberSpec): string[] {
  const out = [`### ${iface}.${name}`, '', m.doc, ''];
  const needs = m.administratorsOnly ? 'administrators only' : `the \`${m.right}\` right on ${m.rightOn ? `the object given as \`${m.rightOn}\`` : iface === 'VirtualServer' ? 'the server' : '`this`'}`;
  out.push(`Needs ${needs}.${m.task ? ' Returns a Task at once; the work goes on in it.' : ''}`, '');
  const params = Object.entries(m.params ?? {});
  if (iface !== 'VirtualServer' || params.length) {
    out.push('| parameter | type | required | meaning |', '|---|---|---|---|');
    if (iface !== 'VirtualServer') out.push(`| \`this\` | ${iface} reference | yes | the object: \`${SCHEMA[iface].ref}\` |`);
    for (const [p, spec] of params) out.push(paramLine(p, spec));
    out.push('');
  }
  out.push(`Returns: ${typeName(m.returns)}.`, '');
  if (m.errors?.length) out.push(`Errors: ${m.errors.map((e) => `\`${e}\``).join(', ')}.`, '');
  out.push('```json', `→ ${JSON.stringify({ jsonrpc: '2.0', id: 1, method: `${iface}.${name}`, params: m.example.params })}`,
    `← ${JSON.stringify({ jsonrpc: '2.0', id: 1, result: m.example.result })}`, '```', '');
  return out;
}

export function apiReference(): string {
  const out = [
    '# The vserver API',
    '',
    '<!-- Generated from the member declarations (server/api/members/*) by `node dist/server/api/reference.js > docs/api.md`; do not edit by hand. -->',
    '',
    'Virtual Server 2005 R2\'s COM object model as JSON-RPC 2.0. `POST /api/rpc` takes one request or a batch;',
    'the WebSocket at `/api/ws` takes the same requests and also carries the events below. `GET /api/schema`',
    'returns this reference as JSON. `docs/api-guide.md` explains sign-in, tokens, permissions and errors with examples.',
    '',
    '- Methods are `Interface.Member`: properties are read with `get_Name` and written with `put_Name` (param `value`).',
    '- Parameters are by name. Every member except VirtualServer\'s takes `this`, an object reference such as',
    '  `VirtualMachine/<id>`. An object in a result is `{"$ref": "Interface/<id>"}`; collections are arrays of them.',
    '- Every call needs `Authorization: Bearer TOKEN` (or a browser session). `POST /api/login` with',
    '  `{"user", "password"}` returns a token.',
    `- Errors are JSON-RPC errors whose \`data.name\` is stable. Any member may return ${COMMON_ERRORS.map((e) => `\`${e}\``).join(', ')};`,
    '  the errors particular to a member are listed with it.',
    '- In a cluster, a call about a VM, a part of one, or a task of another host is forwarded to that host and',
    '  answered by it as its own; such a call may also return `VM_E_HOST_UNREACHABLE` or `VM_E_CLUSTER_NO_SECRET`',
    '  ([cluster.md](cluster.md#forwarding)).',
    '',
    '## Events',
    '',
    'Sent over the WebSocket as notifications (`{"jsonrpc": "2.0", "method", "params"}`), only to callers who may read the object concerned.',
    '',
    '| event | params | meaning |',
    '|---|---|---|',
    ...Object.entries(EVENTS).map(([name, e]) => `| \`${name}\` | ${Object.entries(e.params).map(([k, v]) => `\`${k}\`: ${v}`).join('; ')} | ${e.doc} |`),
    '',
  ];
  for (const [iface, spec] of Object.entries(SCHEMA)) {
    out.push(`## ${iface}`, '', spec.doc, '', `Reference: \`${spec.ref}\`.`, '');
    for (const [name, member] of Object.entries(spec.members)) out.push(...memberSection(iface, name, member));
  }
  return out.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.stdout.write(apiReference());
