// "vsctl call Interface.Member key=value ...": any member of vserverd's object model, with its
// help, its parameter types and its checks read from the schema (server/api/schema.ts), and
// results printed for people (references, lists one per line, objects as "key: value").

import type { InterfaceSpec, MemberSpec, ParamSpec, TypeSpec } from '../../server/api/schema-types.js';
import { InputError, parseInput, refValue } from '../../server/api/fields.js';
import { SCHEMA } from '../../server/api/schema.js';
import { ApiClient, followTask, isRef, type Params } from './api-client.js';
import type { Command } from './command.js';
import { printRows, UsageError } from './terminal.js';

export const CONNECTION_OPTIONS: Command['options'] = {
  url: { type: 'string', valueName: 'URL', description: 'vserverd\'s address (default: $VSERVER_URL, else the credentials file\'s default, else http://127.0.0.1:8080)' },
  token: { type: 'string', valueName: 'TOKEN', description: 'API token (default: $VSERVER_TOKEN, else the one vsctl login stored for the URL)' },
};

/** The server (and token) the command's --url and --token, the environment and the credentials file name. */
export function clientFor(values: Record<string, unknown>): ApiClient {
  return ApiClient.fromFlags({ url: values.url, token: values.token });
}

// ---------------------------------------------------------------------------------------------
// Members

export interface Member {
  method: string;
  iface: string;
  name: string;
  spec: MemberSpec;
  interfaceSpec: InterfaceSpec;
}

export function allMembers(): Member[] {
  return Object.entries(SCHEMA).flatMap(([iface, interfaceSpec]) =>
    Object.entries(interfaceSpec.members).map(([name, spec]) => ({ method: `${iface}.${name}`, iface, name, spec, interfaceSpec })));
}

/** Edit distance, ignoring case, for "did you mean". */
function distance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = row;
  }
  return previous[b.length];
}

/** Members whose name is close to what was typed: a typo, another case, a missing interface. */
export function closeMatches(text: string, limit = 5): string[] {
  const [iface, name] = text.includes('.') ? text.split('.', 2) : ['', text];
  const wanted = name.toLowerCase();
  const scored = allMembers().map((m) => {
    const otherInterface = iface && iface.toLowerCase() !== m.iface.toLowerCase() ? 2 : 0;
    const lowered = m.name.toLowerCase();
    const contained = wanted.length >= 3 && lowered.startsWith(wanted) ? 0.5 : wanted.length >= 3 && lowered.includes(wanted) ? 1 : Infinity;
    const score = Math.min(distance(text, m.method), distance(name, m.name) + otherInterface, contained + otherInterface);
    return { method: m.method, score };
  });
  const threshold = Math.max(2, Math.floor(name.length / 3));
  return scored.filter((s) => s.score <= threshold).sort((a, b) => a.score - b.score || a.method.localeCompare(b.method)).slice(0, limit).map((s) => s.method);
}

export function findMember(text: string): Member {
  const [iface, name] = text.split('.', 2);
  const interfaceSpec = Object.hasOwn(SCHEMA, iface) ? SCHEMA[iface] : undefined;
  const spec = interfaceSpec && name !== undefined && Object.hasOwn(interfaceSpec.members, name) ? interfaceSpec.members[name] : undefined;
  if (interfaceSpec && spec) return { method: text, iface, name, spec, interfaceSpec };
  const close = closeMatches(text);
  const hint = close.length ? `; did you mean ${close.join(', ')}?` : '';
  throw new UsageError(`no member "${text}" in vserverd's API${hint} ("vsctl call --help" lists them all)`);
}

/** Whether calls to the member take "this": all but VirtualServer's. */
export function takesThis(member: Member): boolean {
  return member.iface !== 'VirtualServer';
}

// ---------------------------------------------------------------------------------------------
// Types, in words and from the command line

export function typeText(type: TypeSpec): string {
  switch (type.type) {
    case 'string': return `string${type.maxLength ? ` (at most ${type.maxLength} characters)` : ''}${type.pattern ? ` matching ${type.pattern}` : ''}`;
    case 'integer': return `integer${type.min !== undefined || type.max !== undefined ? ` (${type.min ?? ''}..${type.max ?? ''})` : ''}`;
    case 'boolean': return 'true|false';
    case 'enum': return type.values.join('|');
    case 'ref': return `${type.interface} reference`;
    case 'array': return `list of ${typeText(type.items)}`;
    case 'object': return type.fields ? `object {${Object.entries(type.fields).map(([k, v]) => `${k}: ${typeText(v)}`).join(', ')}}` : 'object';
    case 'null': return 'nothing';
  }
}

/** One command-line value as the type the schema declares (server/api/fields.ts reads it). */
export function parseValue(key: string, text: string, type: TypeSpec): unknown {
  try {
    return parseInput(key, text, type);
  } catch (e) {
    throw e instanceof InputError ? new UsageError(e.message) : e;
  }
}

/** The params of a call from key=value arguments (and --this), checked against the member's declaration. */
export function buildParams(member: Member, assignments: string[], thisRef: string | undefined): Params {
  const declared: Record<string, ParamSpec> = member.spec.params ?? {};
  const names = [...(takesThis(member) ? ['this'] : []), ...Object.keys(declared)];
  const known = names.length ? `its parameters are ${names.join(', ')}` : 'it takes no parameters';
  const params: Params = {};
  for (const assignment of assignments) {
    const at = assignment.indexOf('=');
    if (at <= 0) throw new UsageError(`"${assignment}" is not key=value (${member.method}: ${known})`);
    const key = assignment.slice(0, at);
    const text = assignment.slice(at + 1);
    if (Object.hasOwn(params, key)) throw new UsageError(`${key} is given twice`);
    if (key === 'this' && takesThis(member)) params.this = refValue(member.iface, text);
    else if (Object.hasOwn(declared, key)) params[key] = parseValue(key, text, declared[key]);
    else throw new UsageError(`${member.method} has no parameter "${key}": ${known}`);
  }
  if (thisRef !== undefined) {
    if (!takesThis(member)) throw new UsageError(`${member.method} takes no --this: VirtualServer's members act on the server itself`);
    if (Object.hasOwn(params, 'this')) throw new UsageError('this is given twice (this= and --this)');
    params.this = refValue(member.iface, thisRef);
  }
  if (takesThis(member) && !Object.hasOwn(params, 'this')) {
    throw new UsageError(`${member.method} acts on an object: give --this ${member.interfaceSpec.ref}`);
  }
  const missing = Object.entries(declared).filter(([key, spec]) => !spec.optional && !Object.hasOwn(params, key)).map(([key]) => key);
  if (missing.length) throw new UsageError(`${member.method} needs ${missing.map((k) => `${k}=${typeText(declared[k]).split(' (')[0]}`).join(' ')}`);
  return params;
}

// ---------------------------------------------------------------------------------------------
// Help

function firstSentence(text: string): string {
  const match = /^.*?[.!?](?=\s|$)/.exec(text);
  return match ? match[0] : text;
}

const LINE = 120;

/** Text cut to `width` characters, with an ellipsis when it was longer. */
function clip(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 1)).trimEnd()}…`;
}

function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, '\'\\\'\'')}'`;
}

/** The example's params as vsctl arguments. */
function exampleArguments(params: Record<string, unknown>): string[] {
  const words: string[] = [];
  for (const [key, value] of Object.entries(params)) {
    let text: string;
    if (Array.isArray(value) && value.every((v) => typeof v === 'string' && !v.includes(','))) text = value.join(',');
    else if (typeof value === 'object' && value !== null) text = JSON.stringify(value);
    else text = String(value);
    words.push(...(key === 'this' ? ['--this', shellWord(text)] : [shellWord(`${key}=${text}`)]));
  }
  return words;
}

/** "vsctl call --help": the command's own help, then every interface and member with its first sentence. */
export function membersHelp(standard: string): string {
  const lines = [standard, '', 'members ("vsctl call Interface.Member --help" describes one; (task) marks those that return a Task):'];
  for (const [iface, spec] of Object.entries(SCHEMA)) {
    lines.push('', `${iface}${spec.ref === iface ? '' : `  (this: ${spec.ref})`}`, `  ${clip(firstSentence(spec.doc), LINE - 2)}`);
    const width = Math.max(...Object.keys(spec.members).map((m) => m.length)) + 2;
    for (const [name, member] of Object.entries(spec.members)) {
      lines.push(`    ${name.padEnd(width)}${clip(`${member.task ? '(task) ' : ''}${firstSentence(member.doc)}`, LINE - 4 - width)}`);
    }
  }
  return lines.join('\n');
}

/** "vsctl call Interface.Member --help": its doc, parameters, result, right, errors and example. */
export function memberHelp(member: Member): string {
  const { spec } = member;
  const declared = Object.entries(spec.params ?? {});
  const synopsis = [
    `vsctl call ${member.method}`,
    ...(takesThis(member) ? [`--this ${member.interfaceSpec.ref}`] : []),
    ...declared.map(([key, p]) => {
      const word = `${key}=${p.type === 'enum' ? p.values.join('|') : p.type.toUpperCase()}`;
      return p.optional ? `[${word}]` : word;
    }),
    ...(spec.task ? ['[--wait]'] : []),
  ].join(' ');
  const lines = [`usage: ${synopsis}`, '', spec.doc, ''];
  const rows: Array<[string, string]> = [];
  if (takesThis(member)) rows.push(['this', `${member.iface} reference, ${member.interfaceSpec.ref} (or --this); the object the call acts on`]);
  for (const [key, p] of declared) rows.push([key, `${typeText(p)}${p.optional ? ', optional' : ''}. ${p.doc}`]);
  if (rows.length) {
    lines.push('parameters:');
    const width = Math.max(...rows.map(([k]) => k.length)) + 2;
    for (const [key, text] of rows) lines.push(`  ${key.padEnd(width)}${text}`);
  } else {
    lines.push('parameters: none');
  }
  lines.push(
    '',
    `returns: ${spec.task ? 'Task reference: the call returns at once and the work goes on in the task (--wait follows it and prints its result)' : typeText(spec.returns)}`,
    `right:   ${spec.right} on ${takesThis(member) ? `the ${member.iface}` : 'the server'}${spec.administratorsOnly ? ' (administrators only)' : ''}`,
  );
  if (spec.errors?.length) lines.push(`errors:  ${spec.errors.join(', ')}`);
  lines.push('', 'example:', `  vsctl call ${member.method} ${exampleArguments(spec.example.params).join(' ')}`.trimEnd(), `  => ${JSON.stringify(spec.example.result)}`);
  lines.push('', 'Values are read as the parameter\'s type: integers, true|false, lists comma-separated or as JSON ([...]), objects as JSON ({...}).',
    'References are given whole (VirtualMachine/<id>) or as what follows "Interface/".');
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Results, for people

/** One value on one line: a reference as the reference, a scalar as itself, anything else as JSON. */
export function oneLine(value: unknown): string {
  if (isRef(value)) return value.$ref;
  if (value === null || value === undefined) return '-';
  if (typeof value === 'object') {
    if (Array.isArray(value) && value.every((v) => isRef(v) || typeof v !== 'object' || v === null)) return value.map(oneLine).join(', ');
    return JSON.stringify(value);
  }
  return String(value);
}

/** A result as text: a reference as the ref, a list one item per line, an object as "key: value" rows. */
export function printResult(value: unknown): void {
  if (value === undefined) return;
  if (Array.isArray(value)) {
    if (value.some((v) => typeof v === 'object' && v !== null && !isRef(v) && !Array.isArray(v))) {
      value.forEach((v, i) => {
        if (i > 0) console.log('');
        printResult(v);
      });
    } else {
      for (const item of value) console.log(oneLine(item));
    }
  } else if (typeof value === 'object' && value !== null && !isRef(value)) {
    const rows = Object.entries(value).map(([k, v]): [string, string] => [k, oneLine(v)]);
    if (rows.length) printRows(rows);
  } else {
    console.log(value === null ? 'null' : oneLine(value));
  }
}

export function printJson(value: unknown): void {
  console.log(JSON.stringify(value ?? null, null, 2));
}

// ---------------------------------------------------------------------------------------------
// The command

export const callCommand: Command = {
  name: 'call',
  usage: 'call Interface.Member [key=value ...] [--this REF] [--wait]',
  summary: 'Call any member of vserverd\'s API (Interface.Member, as in Virtual Server\'s COM interfaces) and print its result.',
  details: [
    'Parameters are given by name as key=value and read as the schema declares them: integers, true|false, lists',
    'comma-separated or as JSON, objects as JSON; references whole ("VirtualMachine/<id>") or as what follows "Interface/".',
    '--this names the object a member acts on (every member but VirtualServer\'s takes one). A member that starts long',
    'work returns a Task reference; --wait follows the task with a progress bar and prints its result instead.',
    '"vsctl call --help" lists every interface and member; "vsctl call Interface.Member --help" describes one: its',
    'parameters, result, the right it needs and an example. Results print as text (a reference as itself, a list one',
    'item per line, an object as "key: value" rows), or as JSON with --json.',
  ].join('\n'),
  positionals: { min: 1, max: Infinity },
  options: {
    this: { type: 'string', valueName: 'REF', description: 'the object the member acts on (the same as this=REF)' },
    wait: { type: 'boolean', description: 'for a member that returns a Task: wait for it and print its result' },
    ...CONNECTION_OPTIONS,
  },
  help(positionals, standard) {
    return positionals.length ? memberHelp(findMember(positionals[0])) : membersHelp(standard);
  },
  async run(args) {
    const [method, ...assignments] = args.positionals;
    const member = findMember(method);
    const params = buildParams(member, assignments, args.values.this as string | undefined);
    if (args.values.wait && !member.spec.task) throw new UsageError(`--wait: ${member.method} does not return a Task`);
    const client = clientFor(args.values);
    let result = await client.call(member.method, params);
    if (args.values.wait && isRef(result)) result = await followTask(client, result.$ref, { progress: !args.json });
    if (args.json) printJson(result);
    // Nothing to say for a member that returns nothing, nor for a task that has no result.
    else if (!(result === null && (member.spec.returns.type === 'null' || args.values.wait))) printResult(result);
    return 0;
  },
};
