'use strict';
const assert = require('node:assert');
const { slug, truncate } = require('../lib/slug');

describe('slug', () => {
  it('lowercases and joins words', () => assert.strictEqual(slug('Hello World'), 'hello-world'));
  it('drops accents', () => assert.strictEqual(slug('Crème Brûlée'), 'creme-brulee'));
  it('trims separators', () => assert.strictEqual(slug('  --a b--  '), 'a-b'));
  it('waits for an async source', async () => {
    const text = await new Promise((resolve) => setTimeout(() => resolve('Async Title'), 5));
    assert.strictEqual(slug(text), 'async-title');
  });
});

describe('truncate', () => {
  it('keeps short text', () => assert.strictEqual(truncate('abc', 5), 'abc'));
  // Deliberately failing: the expected counts are 5 passing, 1 failing.
  it('FAILS ON PURPOSE: ellipsis counted as three dots', () => assert.strictEqual(truncate('abcdef', 4), 'a...'));
});
