import { describe, expect, it, vi } from 'vitest';
import { applyDiscount, total } from './cart.js';

describe('total', () => {
  it('sums prices', () => expect(total([{ price: 2 }, { price: 3, qty: 2 }])).toBe(8));
  it('is 0 for no items', () => expect(total([])).toBe(0));
});

describe('applyDiscount', () => {
  it('takes a percentage off', () => expect(applyDiscount(200, 25)).toBe(150));
  it('rejects a bad percentage', () => expect(() => applyDiscount(10, 120)).toThrow(RangeError));
  it('works with fake timers', () => {
    vi.useFakeTimers();
    const fn = vi.fn();
    setTimeout(fn, 1000);
    vi.advanceTimersByTime(1000);
    expect(fn).toHaveBeenCalledOnce();
    vi.useRealTimers();
  });
  // Deliberately failing: the expected counts are 5 passed, 1 failed.
  it('FAILS ON PURPOSE: rounds to whole units', () => expect(applyDiscount(9.99, 10)).toBe(9));
});
