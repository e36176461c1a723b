'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');

test('a child node process', () => {
  const out = execFileSync(process.execPath, ['-p', 'require("./lib/money").format(5)']);
  assert.equal(out.toString().trim(), '0.05 EUR');
});
