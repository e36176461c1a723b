import test from 'node:test';
import assert from 'node:assert/strict';
import { identity, multiply, transpose, type Matrix } from '../src/matrix';

const m: Matrix = [
  [1, 2],
  [3, 4],
];

test('identity is neutral', () => assert.deepEqual(multiply(m, identity(2)), m));
test('multiply', () => assert.deepEqual(multiply(m, m), [[7, 10], [15, 22]]));
test('transpose', () => assert.deepEqual(transpose(m), [[1, 3], [2, 4]]));
test('shape mismatch throws', () => assert.throws(() => multiply(m, [[1, 2, 3]]), /cannot multiply 2x2 by 1x3/));
// Deliberately failing: the expected counts are 4 pass, 1 fail.
test('FAILS ON PURPOSE: multiplication commutes', () => assert.deepEqual(multiply(m, transpose(m)), multiply(transpose(m), m)));
