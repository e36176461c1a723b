export function total(items) {
  return items.reduce((sum, { price, qty = 1 }) => sum + price * qty, 0);
}

export function applyDiscount(amount, percent) {
  if (percent < 0 || percent > 100) throw new RangeError(`bad discount ${percent}`);
  return Math.round(amount * (100 - percent)) / 100;
}
