// Whether a value fits a TypeSpec: the dispatcher checks every call's parameters with it, and
// every result before it is sent, so that the declarations stay true.

import type { TypeSpec } from './schema-types.js';

/** Parameters name objects by reference strings; results give them as {"$ref": "..."}. */
export type Side = 'param' | 'result';

/** Why a value does not fit its type, or null when it does. */
export function typeProblem(type: TypeSpec, value: unknown, side: Side = 'param'): string | null {
  if (value === null && type.nullable) return null;
  switch (type.type) {
    case 'string':
      if (typeof value !== 'string') return `must be a string, not ${describe(value)}`;
      if (type.maxLength !== undefined && value.length > type.maxLength) return `is at most ${type.maxLength} characters (${value.length} given)`;
      if (type.pattern && !new RegExp(type.pattern).test(value)) return `must match ${type.pattern}`;
      return value.includes('\0') ? 'must not contain NUL characters' : null;
    case 'integer':
      if (typeof value !== 'number' || !Number.isInteger(value)) return `must be a whole number, not ${describe(value)}`;
      if (type.min !== undefined && value < type.min) return `must be at least ${type.min} (${value} given)`;
      if (type.max !== undefined && value > type.max) return `must be at most ${type.max} (${value} given)`;
      return null;
    case 'boolean': return typeof value === 'boolean' ? null : `must be true or false, not ${describe(value)}`;
    case 'enum': return typeof value === 'string' && type.values.includes(value) ? null : `must be one of ${type.values.join(', ')}, not ${describe(value)}`;
    case 'ref': {
      const given = side === 'result' && isObject(value) ? value.$ref : value;
      const fits = typeof given === 'string' && given.startsWith(`${type.interface}/`) && (side === 'param' || (isObject(value) && Object.keys(value).length === 1));
      return fits ? null : `must be a ${type.interface} reference (${side === 'result' ? '{"$ref": "' : ''}${type.interface}/...${side === 'result' ? '"}' : ''}), not ${describe(value)}`;
    }
    case 'array': {
      if (!Array.isArray(value)) return `must be a list, not ${describe(value)}`;
      for (const [i, item] of value.entries()) {
        const problem = typeProblem(type.items, item, side);
        if (problem) return `[${i}] ${problem}`;
      }
      return null;
    }
    case 'object': {
      if (!isObject(value)) return `must be an object, not ${describe(value)}`;
      if (!type.fields) return null;
      const fields = type.fields;
      const unknown = Object.keys(value).filter((k) => !Object.hasOwn(fields, k));
      if (unknown.length) return `has no field ${unknown.map((k) => `"${k}"`).join(', ')}`;
      for (const [name, field] of Object.entries(fields)) {
        if (value[name] === undefined) {
          if (field.optional) continue;
          return `lacks the field "${name}"`;
        }
        const problem = typeProblem(field, value[name], side);
        if (problem) return `.${name} ${problem}`;
      }
      return null;
    }
    case 'null': return value === null ? null : 'must be null';
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === 'object') return 'an object';
  return `${typeof value} ${String(value)}`;
}
