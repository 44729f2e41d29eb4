// The API's schema validator: each keyword, the field named in the error, query parsing, unknown keywords as bugs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkSchema, parseQuery, validate, type Schema } from '../../src/api/schema.js';
import { isLockstepError } from '../../src/util/errors.js';
import { BugError } from '../../src/util/assert.js';

const S: Schema = {
  type: 'object',
  required: ['name', 'nic'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', pattern: '^[a-z]+$', maxLength: 5 },
    n: { type: 'integer', minimum: 1, maximum: 3 },
    x: { type: ['number', 'null'] },
    level: { enum: ['a', 'b'] },
    tags: { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 2, uniqueItems: true },
    nic: { type: 'object', required: ['mac'], properties: { mac: { type: 'string' } } },
  },
};

function refused(value: unknown, field: string, message: RegExp): void {
  assert.throws(
    () => validate(S, value, 'INVALID_SPEC'),
    (e) => isLockstepError(e, 'INVALID_SPEC') && e.fields['field'] === field && message.test(e.message),
    `→ ${field} ${message}`,
  );
}

test('valid values pass; each broken rule is named with its field', () => {
  validate(S, { name: 'web', n: 2, x: null, level: 'a', tags: ['p', 'q'], nic: { mac: 'm', extra: 1 } }, 'INVALID_SPEC');
  validate(S, { name: 'web', x: 1.5, nic: { mac: 'm' } }, 'INVALID_SPEC');
  refused([], '', /must be an object/);
  refused({ nic: { mac: 'm' } }, 'name', /'name' is required/);
  refused({ name: 'web' }, 'nic', /'nic' is required/);
  refused({ name: 'WEB', nic: { mac: 'm' } }, 'name', /must match/);
  refused({ name: 'abcdef', nic: { mac: 'm' } }, 'name', /at most 5/);
  refused({ name: 'web', n: 4, nic: { mac: 'm' } }, 'n', /from 1 to 3/);
  refused({ name: 'web', n: 1.5, nic: { mac: 'm' } }, 'n', /an integer/);
  refused({ name: 'web', x: 'y', nic: { mac: 'm' } }, 'x', /a number or null/);
  refused({ name: 'web', level: 'c', nic: { mac: 'm' } }, 'level', /one of a, b/);
  refused({ name: 'web', tags: ['p', 'p'], nic: { mac: 'm' } }, 'tags', /twice/);
  refused({ name: 'web', tags: ['p', 'q', 'r'], nic: { mac: 'm' } }, 'tags', /at most 2/);
  refused({ name: 'web', tags: ['p', ''], nic: { mac: 'm' } }, 'tags[1]', /must not be empty/);
  refused({ name: 'web', nic: { mac: 5 } }, 'nic.mac', /a string/);
  refused({ name: 'web', nic: { mac: 'm' }, more: 1 }, 'more', /not a known field/);
  refused({ name: 'web', nic: { mac: 'm' }, n: Infinity }, 'n', /an integer/);
});

test('a value nested too deep to print is still refused, not a crash', () => {
  let deep: unknown = 1;
  for (let i = 0; i < 200_000; i++) deep = [deep];
  refused(deep, '', /must be an object/);
});

test('query strings: scalars converted by type, each key once, unknown keys refused', () => {
  const q: Schema = { type: 'object', additionalProperties: false, properties: { limit: { type: 'integer', minimum: 1 }, on: { type: 'boolean' }, kind: { type: 'string' } } };
  assert.deepEqual(parseQuery(q, new URLSearchParams('limit=5&on=true&kind=x'), 'INVALID_ARGUMENT'), { limit: 5, on: true, kind: 'x' });
  assert.deepEqual(parseQuery(q, new URLSearchParams(''), 'INVALID_ARGUMENT'), {});
  for (const [text, field] of [['limit=0', 'limit'], ['limit=1e3', 'limit'], ['limit=', 'limit'], ['on=yes', 'on'], ['kind=a&kind=b', 'kind'], ['other=1', 'other']] as const) {
    assert.throws(() => parseQuery(q, new URLSearchParams(text), 'INVALID_ARGUMENT'), (e) => isLockstepError(e, 'INVALID_ARGUMENT') && e.fields['field'] === field, text);
  }
  assert.throws(() => parseQuery(undefined, new URLSearchParams('a=1'), 'INVALID_ARGUMENT'), (e) => isLockstepError(e, 'INVALID_ARGUMENT'));
});

test('a schema with a keyword the validator does not enforce is a bug', () => {
  checkSchema(S);
  assert.throws(() => checkSchema({ type: 'object', properties: { a: { oneOf: [] } as unknown as Schema } }), BugError);
  assert.throws(() => checkSchema({ type: 'object', required: ['a'] }), BugError);
});
