'use strict';

function count(text) {
  return text.split(/\s+/).filter(Boolean).length;
}

function top(text, n) {
  const freq = new Map();
  for (const w of text.toLowerCase().match(/[a-z']+/g) || []) freq.set(w, (freq.get(w) || 0) + 1);
  return [...freq].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, n).map(([w]) => w);
}

module.exports = { count, top };
