'use strict';

class Inventory {
  constructor(clock = Date) {
    this.clock = clock;
    this.stock = new Map();
  }
  add(sku, qty) {
    this.stock.set(sku, (this.stock.get(sku) || 0) + qty);
    return { sku, qty: this.stock.get(sku), at: this.clock.now() };
  }
  remove(sku, qty) {
    const have = this.stock.get(sku) || 0;
    if (qty > have) throw new Error(`only ${have} of ${sku}`);
    this.stock.set(sku, have - qty);
  }
  count(sku) {
    return this.stock.get(sku) || 0;
  }
}

module.exports = Inventory;
