// A member's parameters as input fields, derived from their declaration in SCHEMA: what a
// website form or a vsctl argument needs to show and read one (kind, limits, choices, help), and
// the one function that turns typed text into the value the member takes. A new member gets its
// field and its parsing from its declaration alone.

import { typeProblem } from './type-check.js';
import { SCHEMA } from './schema.js';
import type { ParamSpec, TypeSpec } from './schema-types.js';

export type FieldKind = 'text' | 'integer' | 'boolean' | 'choice' | 'reference' | 'list' | 'object';

export interface Field {
  name: string;
  kind: FieldKind;
  optional: boolean;
  /** The parameter's doc. */
  help: string;
  min?: number;
  max?: number;
  maxLength?: number;
  pattern?: string;
  /** The values of a choice. */
  choices?: readonly string[];
  /** The interface a reference names. */
  interface?: string;
  type: TypeSpec;
}

const KINDS: Record<TypeSpec['type'], FieldKind> = {
  string: 'text', integer: 'integer', boolean: 'boolean', enum: 'choice', ref: 'reference', array: 'list', object: 'object', null: 'object',
};

/** The parameter `param` of `method` ("Interface.Member") as a field; throws when it is not declared. */
export function fieldOf(method: string, param: string): Field {
  const [iface, member] = method.split('.');
  const spec: ParamSpec | undefined = SCHEMA[iface]?.members[member]?.params?.[param];
  if (!spec) throw new Error(`${method} declares no parameter "${param}"`);
  const field: Field = { name: param, kind: KINDS[spec.type], optional: spec.optional ?? false, help: spec.doc, type: spec };
  if (spec.type === 'integer') Object.assign(field, { min: spec.min, max: spec.max });
  if (spec.type === 'string') Object.assign(field, { maxLength: spec.maxLength, pattern: spec.pattern });
  if (spec.type === 'enum') field.choices = spec.values;
  if (spec.type === 'ref') field.interface = spec.interface;
  return field;
}

/** Text that is not a value of the field's type; its message names the field. */
export class InputError extends Error {}

/** A reference to an object of `iface`: given whole, or as what follows "Interface/". */
export function refValue(iface: string, text: string): string {
  return text.startsWith(`${iface}/`) || text === iface ? text : `${iface}/${text}`;
}

function parseJson(key: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InputError(`${key}: "${text}" is not valid JSON (${(e as Error).message})`);
  }
}

/**
 * Typed text (a form field, a command-line argument) as the value `type` declares, refused with
 * an InputError naming `key`. Integers must be whole numbers within the declared limits, a
 * choice may be given in any case, a list comma-separated or as JSON; what the text's form does
 * not settle (lengths, patterns, list items) is checked by the dispatcher's own checker.
 */
export function parseInput(key: string, text: string, type: TypeSpec): unknown {
  const value = convert(key, text, type);
  const problem = typeProblem(type, value);
  if (problem) throw new InputError(`${key} ${problem}`);
  return value;
}

function convert(key: string, text: string, type: TypeSpec): unknown {
  switch (type.type) {
    case 'string':
      return text;
    case 'integer': {
      const value = Number(text);
      if (!/^-?\d+$/.test(text.trim()) || !Number.isSafeInteger(value)) throw new InputError(`${key}: "${text}" is not an integer`);
      if (type.min !== undefined && value < type.min) throw new InputError(`${key}: ${value} is below the least allowed, ${type.min}`);
      if (type.max !== undefined && value > type.max) throw new InputError(`${key}: ${value} is above the most allowed, ${type.max}`);
      return value;
    }
    case 'boolean':
      if (text === 'true') return true;
      if (text === 'false') return false;
      throw new InputError(`${key}: "${text}" is not true or false`);
    case 'enum': {
      const value = type.values.find((v) => v === text) ?? type.values.find((v) => v.toLowerCase() === text.toLowerCase());
      if (value === undefined) throw new InputError(`${key}: "${text}" is not one of ${type.values.join(', ')}`);
      return value;
    }
    case 'ref':
      return refValue(type.interface, text);
    case 'array': {
      if (text.trimStart().startsWith('[')) {
        const value = parseJson(key, text);
        if (!Array.isArray(value)) throw new InputError(`${key}: expected a list`);
        return value;
      }
      if (text === '') return [];
      return text.split(',').map((item, i) => convert(`${key}[${i}]`, item.trim(), type.items));
    }
    case 'object':
    case 'null':
      return /^\s*[[{]/.test(text) || text === 'null' ? parseJson(key, text) : text;
  }
}

/** What a class may not hold unescaped under the `v` flag, and may hold escaped under `u` too. */
const CLASS_SYNTAX = new Set(['(', ')', '[', '{', '}', '/', '|']);

/**
 * A declared pattern as an HTML `pattern` attribute: browsers compile that with the `v` flag, in
 * whose classes a literal "-" (and "(", "[", "/", "|" ...) must be escaped, or the browser ignores
 * the pattern. Ranges ("A-Z") stay; what the pattern matches does not change.
 */
export function htmlPattern(pattern: string): string {
  let out = '';
  let i = 0;
  while (i < pattern.length) {
    const c = pattern[i];
    if (c === '\\') {
      out += pattern.slice(i, i + 2);
      i += 2;
    } else if (c === '[') {
      const [cls, end] = htmlClass(pattern, i);
      out += cls;
      i = end;
    } else {
      out += c;
      i += 1;
    }
  }
  return out;
}

/** The class starting at `start` ("["), made safe for the `v` flag, and the index after its "]". */
function htmlClass(pattern: string, start: number): [string, number] {
  let i = start + 1;
  let out = '[';
  if (pattern[i] === '^') {
    out += '^';
    i += 1;
  }
  // The class's atoms up to its "]": an escape ("\d", "\-") is one atom.
  const atoms: string[] = [];
  while (i < pattern.length && pattern[i] !== ']') {
    const atom = pattern[i] === '\\' ? pattern.slice(i, i + 2) : pattern[i];
    atoms.push(atom);
    i += atom.length;
  }
  const safe = (atom: string): string => (atom === '-' || CLASS_SYNTAX.has(atom) ? `\\${atom}` : atom);
  for (let k = 0; k < atoms.length;) {
    // "a-z" is a range, its "-" stays; any other "-" is a literal.
    if (atoms[k + 1] === '-' && k + 2 < atoms.length) {
      out += `${safe(atoms[k])}-${safe(atoms[k + 2])}`;
      k += 3;
    } else {
      out += safe(atoms[k]);
      k += 1;
    }
  }
  return [`${out}]`, i + 1];
}
