import { readFile } from 'node:fs/promises';
import { parseDuration } from './parse.js';

export { parseDuration };

// Top-level await: the package's own manifest, found next to this module.
const manifest = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'));
export const version = manifest.version;

export function humanize(ms) {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
