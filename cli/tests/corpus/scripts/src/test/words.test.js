'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const { count, top } = require('../lib/words');

test('counts words', () => assert.equal(count('  the quick  brown fox '), 4));
test('top words', () => assert.deepEqual(top('a b a c b a', 2), ['a', 'b']));
test('runs from the built copy', () => assert.match(__dirname, /\/dist\/test$/));
test('the build wrote its metadata with $(...)', () => {
  const meta = JSON.parse(fs.readFileSync(`${__dirname}/../meta/build.json`, 'utf8'));
  assert.deepEqual(meta, { version: '2.3.1', files: 2 });
});
