'use strict';
const test = require('tape');
const Queue = require('../lib/queue');

test('first in, first out', (t) => {
  const q = new Queue().push(1).push(2).push(3);
  t.equal(q.shift(), 1);
  t.equal(q.shift(), 2);
  t.equal(q.size, 1);
  t.end();
});

test('empty queue', (t) => {
  const q = new Queue();
  t.equal(q.shift(), undefined);
  t.equal(q.size, 0);
  t.end();
});
