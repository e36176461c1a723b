'use strict';
const Inventory = require('./inventory');

describe('Inventory', () => {
  test('adds stock', () => {
    const inv = new Inventory();
    inv.add('apple', 3);
    inv.add('apple', 2);
    expect(inv.count('apple')).toBe(5);
  });
  test('refuses to go negative', () => {
    const inv = new Inventory();
    inv.add('pear', 1);
    expect(() => inv.remove('pear', 2)).toThrow('only 1 of pear');
  });
  test('uses the clock it is given', () => {
    const clock = { now: jest.fn(() => 42) };
    expect(new Inventory(clock).add('fig', 1)).toEqual({ sku: 'fig', qty: 1, at: 42 });
    expect(clock.now).toHaveBeenCalledTimes(1);
  });
  test('inline snapshot', () => {
    const inv = new Inventory({ now: () => 0 });
    expect(inv.add('kiwi', 4)).toMatchInlineSnapshot(`
{
  "at": 0,
  "qty": 4,
  "sku": "kiwi",
}
`);
  });
});
