import test from 'node:test';
import assert from 'node:assert/strict';
// The package imports itself by name, through its "exports".
import { humanize, parseDuration, version } from 'corpus-esm';
import { parseDuration as direct } from 'corpus-esm/parse';

test('parses units', () => assert.deepEqual(['5ms', '2s', '3m', '1h'].map(parseDuration), [5, 2000, 180000, 3600000]));
test('the subpath export is the same function', () => assert.equal(direct, parseDuration));
test('rejects junk', () => assert.throws(() => parseDuration('soon'), SyntaxError));
test('version from top-level await', () => assert.equal(version, '1.0.0'));
test('dynamic import', async () => {
  const { humanize: again } = await import('../src/index.js');
  assert.equal(again(90_000), '90s');
});
// Deliberately failing: the expected counts are 5 pass, 1 fail.
test('FAILS ON PURPOSE: humanize picks minutes for 90 s', () => assert.equal(humanize(90_000), '1.5m'));
