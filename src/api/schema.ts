/**
 * The API's input schemas and their validator: a small subset of JSON Schema (2020-12, as OpenAPI 3.1 uses
 * it), enough for the API's bodies, query strings and path parameters. The same objects validate requests
 * and go verbatim into `GET /api/openapi.json`, so what is documented is what is checked.
 *
 * The subset: `type` (one or a list), `enum`, `const`, `properties`, `required`, `additionalProperties`,
 * `items`, `minItems`, `maxItems`, `uniqueItems`, `minLength`, `maxLength`, `pattern`, `minimum`, `maximum`, and
 * the annotations `description`, `title`, `format`, `examples`, `default`, `readOnly`, `writeOnly`. A schema
 * with any other keyword is a bug (`checkSchema` says which): it would be documented and not enforced.
 * A failed check throws `LockstepError(code)` naming the field (`fields.field`, e.g. `nic.mac`, `groups[1]`).
 */
import { LockstepError, type ErrorCode } from '../util/errors.js';
import { assert } from '../util/assert.js';

export type JsonType = 'string' | 'integer' | 'number' | 'boolean' | 'object' | 'array' | 'null';

export interface Schema {
  type?: JsonType | readonly JsonType[];
  enum?: readonly unknown[];
  const?: unknown;
  properties?: Readonly<Record<string, Schema>>;
  required?: readonly string[];
  additionalProperties?: boolean | Schema;
  items?: Schema;
  minItems?: number;
  maxItems?: number;
  uniqueItems?: boolean;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  minimum?: number;
  maximum?: number;
  description?: string;
  title?: string;
  format?: string;
  examples?: readonly unknown[];
  default?: unknown;
  readOnly?: boolean;
  writeOnly?: boolean;
}

const KEYWORDS = new Set([
  'type', 'enum', 'const', 'properties', 'required', 'additionalProperties', 'items', 'minItems', 'maxItems', 'uniqueItems',
  'minLength', 'maxLength', 'pattern', 'minimum', 'maximum', 'description', 'title', 'format', 'examples', 'default', 'readOnly', 'writeOnly',
]);

/** Asserts that `schema` uses only the keywords the validator enforces (a bug otherwise: documented, not checked). */
export function checkSchema(schema: Schema, at = '#'): void {
  for (const key of Object.keys(schema)) assert(KEYWORDS.has(key), `schema ${at} uses '${key}', which the API's validator does not enforce`);
  if (schema.pattern !== undefined) new RegExp(schema.pattern, 'u');
  for (const [name, sub] of Object.entries(schema.properties ?? {})) checkSchema(sub, `${at}/properties/${name}`);
  for (const name of schema.required ?? []) assert(schema.properties?.[name] !== undefined, `schema ${at} requires '${name}', which it does not describe`);
  if (typeof schema.additionalProperties === 'object') checkSchema(schema.additionalProperties, `${at}/additionalProperties`);
  if (schema.items) checkSchema(schema.items, `${at}/items`);
}

const patterns = new Map<string, RegExp>();
function regex(pattern: string): RegExp {
  let re = patterns.get(pattern);
  if (!re) {
    re = new RegExp(pattern, 'u');
    patterns.set(pattern, re);
  }
  return re;
}

function typeOf(v: unknown): JsonType | 'undefined' | 'other' {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  switch (typeof v) {
    case 'string':
      return 'string';
    case 'boolean':
      return 'boolean';
    case 'number':
      return Number.isInteger(v) ? 'integer' : Number.isFinite(v) ? 'number' : 'other';
    case 'object':
      return 'object';
    case 'undefined':
      return 'undefined';
    default:
      return 'other';
  }
}

function matchesType(v: unknown, type: JsonType): boolean {
  const t = typeOf(v);
  return t === type || (type === 'number' && t === 'integer');
}

function describeValue(v: unknown): string {
  const text = safeJson(v);
  if (text === undefined) return Array.isArray(v) ? 'an array' : typeof v;
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** JSON text of a value from a request, or undefined: a body nested too deep for JSON.stringify is still an answer. */
function safeJson(v: unknown): string | undefined {
  try {
    return JSON.stringify(v);
  } catch {
    return undefined;
  }
}

/**
 * Checks `value` against `schema`; throws `LockstepError(code)` at the first mismatch, naming the field
 * (`field` is the path below the checked value: '' for the value itself).
 */
export function validate(schema: Schema, value: unknown, code: ErrorCode, field = ''): void {
  const name = field === '' ? 'the value' : `'${field}'`;
  const fail = (why: string, shown = true): never => {
    throw new LockstepError(code, `${name} ${why}${shown && value !== undefined ? ` (got ${describeValue(value)})` : ''}`, { field });
  };
  if (schema.type !== undefined) {
    const types = typeof schema.type === 'string' ? [schema.type] : schema.type;
    if (!types.some((t) => matchesType(value, t as JsonType))) fail(`must be ${types.map((t) => (t === 'null' ? 'null' : t === 'integer' || t === 'array' || t === 'object' ? `an ${t}` : `a ${t}`)).join(' or ')}`);
  }
  if (schema.const !== undefined && !sameJson(value, schema.const)) fail(`must be ${describeValue(schema.const)}`);
  if (schema.enum !== undefined && !schema.enum.some((e) => sameJson(value, e))) fail(`must be one of ${schema.enum.map((e) => (typeof e === 'string' ? e : describeValue(e))).join(', ')}`);
  if (typeof value === 'string') {
    const length = [...value].length;
    if (schema.minLength !== undefined && length < schema.minLength) fail(schema.minLength === 1 ? 'must not be empty' : `must be at least ${schema.minLength} characters long`, false);
    if (schema.maxLength !== undefined && length > schema.maxLength) fail(`must be at most ${schema.maxLength} characters long`, false);
    if (schema.pattern !== undefined && !regex(schema.pattern).test(value)) fail(`must match ${schema.pattern}`);
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) fail(rangeRule(schema));
    if (schema.maximum !== undefined && value > schema.maximum) fail(rangeRule(schema));
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) fail(`must have at least ${schema.minItems} items`, false);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) fail(`must have at most ${schema.maxItems} items`, false);
    if (schema.items) value.forEach((item, i) => validate(schema.items!, item, code, `${field}[${i}]`));
    if (schema.uniqueItems && new Set(value.map((v) => safeJson(v))).size !== value.length) fail('must not list an item twice', false);
  }
  if (typeOf(value) === 'object') {
    const o = value as Record<string, unknown>;
    const below = (key: string): string => (field === '' ? key : `${field}.${key}`);
    for (const key of schema.required ?? []) {
      if (!Object.hasOwn(o, key)) throw new LockstepError(code, `'${below(key)}' is required`, { field: below(key) });
    }
    for (const [key, v] of Object.entries(o)) {
      const sub = schema.properties !== undefined && Object.hasOwn(schema.properties, key) ? schema.properties[key] : undefined;
      if (sub !== undefined) validate(sub, v, code, below(key));
      else if (schema.additionalProperties === false) throw new LockstepError(code, `'${below(key)}' is not a known field`, { field: below(key) });
      else if (typeof schema.additionalProperties === 'object') validate(schema.additionalProperties, v, code, below(key));
    }
  }
}

function rangeRule(schema: Schema): string {
  const what = schema.type === 'integer' ? 'an integer' : 'a number';
  if (schema.minimum !== undefined && schema.maximum !== undefined) return `must be ${what} from ${schema.minimum} to ${schema.maximum}`;
  if (schema.minimum !== undefined) return `must be ${what} of at least ${schema.minimum}`;
  return `must be ${what} of at most ${schema.maximum}`;
}

function sameJson(a: unknown, b: unknown): boolean {
  const text = safeJson(a);
  return text !== undefined && text === safeJson(b);
}

/**
 * A query string as the object `schema` (an object schema of scalar properties) describes: each parameter at
 * most once, integers and booleans converted from their text, then validated like a body.
 */
export function parseQuery(schema: Schema | undefined, query: URLSearchParams, code: ErrorCode): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const props = schema?.properties ?? {};
  for (const key of new Set(query.keys())) {
    const values = query.getAll(key);
    if (values.length > 1) throw new LockstepError(code, `'${key}' is given more than once`, { field: key });
    const raw = values[0]!;
    const sub = Object.hasOwn(props, key) ? props[key] : undefined;
    if (sub === undefined) throw new LockstepError(code, `'${key}' is not a known parameter`, { field: key });
    out[key] = scalarOf(raw, sub);
  }
  validate(schema ?? { type: 'object', additionalProperties: false }, out, code);
  return out;
}

/** Text of a query or path parameter as the schema's type; left as text (and then refused) when it is not one. */
export function scalarOf(raw: string, schema: Schema): unknown {
  const type = typeof schema.type === 'string' ? schema.type : undefined;
  if ((type === 'integer' || type === 'number') && /^-?\d{1,16}$/.test(raw)) return Number(raw);
  if (type === 'boolean' && (raw === 'true' || raw === 'false')) return raw === 'true';
  return raw;
}
