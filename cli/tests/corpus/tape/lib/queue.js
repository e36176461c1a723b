'use strict';

class Queue {
  constructor() {
    this.items = [];
  }
  push(item) {
    this.items.push(item);
    return this;
  }
  shift() {
    return this.items.shift();
  }
  get size() {
    return this.items.length;
  }
}

module.exports = Queue;
