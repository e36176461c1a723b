'use strict';
const { setTimeout: sleep } = require('node:timers/promises');

test('awaits a timer', async () => {
  await sleep(10);
  expect(1 + 1).toBe(2);
});

test('mocks a module function', () => {
  const fs = require('node:fs');
  const spy = jest.spyOn(fs, 'existsSync').mockReturnValue(true);
  expect(fs.existsSync('/nowhere')).toBe(true);
  spy.mockRestore();
  expect(fs.existsSync('/nowhere')).toBe(false);
});
