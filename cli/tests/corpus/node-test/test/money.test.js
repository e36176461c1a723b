'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { cents, format, split } = require('../lib/money');

test('cents rounds', () => assert.equal(cents('10.005'), 1001));
test('format', () => assert.equal(format(1234), '12.34 EUR'));
test('split spreads the remainder', () => assert.deepEqual(split(100, 3), [34, 33, 33]));
test('split sums to the total', () => {
  for (const n of [1, 7, 99]) assert.equal(split(1000, n).reduce((a, b) => a + b), 1000);
});
test('currency code', { skip: 'not implemented yet' }, () => {});
