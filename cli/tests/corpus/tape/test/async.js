'use strict';
const test = require('tape');
const Queue = require('../lib/queue');

test('async producer', async (t) => {
  const q = new Queue();
  await Promise.all([1, 2].map((n) => new Promise((r) => setTimeout(() => r(q.push(n)), n))));
  t.deepEqual(q.items, [1, 2]);
  // Deliberately failing: the expected counts are 6 pass, 1 fail.
  t.equal(q.size, 3, 'FAILS ON PURPOSE: size after two pushes');
});
