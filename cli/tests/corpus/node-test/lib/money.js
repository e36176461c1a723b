'use strict';

function cents(amount) {
  return Math.round(Number(amount) * 100);
}

function format(cents, currency = 'EUR') {
  return `${(cents / 100).toFixed(2)} ${currency}`;
}

function split(total, parts) {
  const base = Math.floor(total / parts);
  return Array.from({ length: parts }, (_, i) => base + (i < total % parts ? 1 : 0));
}

module.exports = { cents, format, split };
