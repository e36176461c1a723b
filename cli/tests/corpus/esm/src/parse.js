export function parseDuration(text) {
  const match = /^(\d+)(ms|s|m|h)$/.exec(text.trim());
  if (!match) throw new SyntaxError(`not a duration: ${text}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2]];
  return Number(match[1]) * unit;
}
