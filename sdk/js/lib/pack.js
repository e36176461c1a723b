'use strict';
// A folder packed as `npm pack` packs it: a gzipped tar whose entries are under `package/`,
// written here (ustar headers, PAX records for long or non-ASCII names) instead of running npm.
//
// What goes in: every regular file under the folder, but
// - version-control folders and editor/OS litter: .git .svn .hg CVS .DS_Store ._* .*.swp *.orig
//   npm-debug.log, and .npmrc (it may hold registry credentials);
// - node_modules, anywhere, unless package.json bundles dependencies (`bundleDependencies` or
//   `bundledDependencies`): then the top node_modules goes in whole;
// - the top folder's package-lock.json, yarn.lock and pnpm-lock.yaml (npm pack leaves them out);
// - symbolic links and special files (npm pack leaves those out too).
// `files` in package.json and .npmignore are not read: for npm's exact selection, run npm pack
// and deploy the tarball it writes.

const fs = require('node:fs/promises');
const path = require('node:path');
const zlib = require('node:zlib');
const { promisify } = require('node:util');
const { InvalidArgumentError } = require('./errors');

const gzip = promisify(zlib.gzip);
const BLOCK = 512;
/** npm pack's fixed time for every entry (1985-10-26T08:15:00Z): the same folder packs the same. */
const MTIME = 499162500;
const LITTER = new Set(['.git', '.svn', '.hg', 'CVS', '.DS_Store', '.npmrc', 'npm-debug.log']);
const TOP_LOCKS = new Set(['package-lock.json', 'yarn.lock', 'pnpm-lock.yaml']);

const encoder = new TextEncoder();

function left(name) {
  return LITTER.has(name) || name.startsWith('._') || name.endsWith('.orig') || /^\..*\.swp$/.test(name);
}

/** Writes `text` (ASCII) at `offset` of `block`, within `size` bytes. */
function put(block, offset, size, text) {
  const bytes = encoder.encode(text);
  block.set(bytes.subarray(0, size), offset);
}

function octal(value, digits) {
  return value.toString(8).padStart(digits, '0');
}

/** A ustar header block for `name` (when it fits) of `type` ('0' file, 'x' PAX records). */
function header(name, size, mode, type) {
  const block = new Uint8Array(BLOCK);
  put(block, 0, 100, name);
  put(block, 100, 8, `${octal(mode, 7)}\0`);
  put(block, 108, 8, `${octal(0, 7)}\0`);
  put(block, 116, 8, `${octal(0, 7)}\0`);
  put(block, 124, 12, `${octal(size, 11)}\0`);
  put(block, 136, 12, `${octal(MTIME, 11)}\0`);
  put(block, 148, 8, '        ');
  put(block, 156, 1, type);
  put(block, 257, 6, 'ustar\0');
  put(block, 263, 2, '00');
  let sum = 0;
  for (const byte of block) sum += byte;
  put(block, 148, 8, `${octal(sum, 6)}\0 `);
  return block;
}

/** A PAX record `LEN key=value\n`, LEN counting itself. */
function paxRecord(key, value) {
  const body = encoder.encode(` ${key}=${value}\n`).length;
  let length = body + 1;
  while (String(length).length + body !== length) length = String(length).length + body;
  return encoder.encode(`${length} ${key}=${value}\n`);
}

function padding(size) {
  return new Uint8Array((BLOCK - (size % BLOCK)) % BLOCK);
}

/** The entries for one file: a PAX header first when its name is long or not ASCII. */
function fileEntries(name, data, mode) {
  const blocks = [];
  const nameBytes = encoder.encode(name);
  if (nameBytes.length > 100 || /[^\x20-\x7e]/.test(name)) {
    const records = paxRecord('path', name);
    blocks.push(header(`PaxHeader/${name.slice(-80).replace(/[^\x20-\x7e]/g, '_')}`, records.length, 0o644, 'x'), records, padding(records.length));
    name = name.slice(0, 100).replace(/[^\x20-\x7e]/g, '_');
  }
  blocks.push(header(name, data.length, mode, '0'), data, padding(data.length));
  return blocks;
}

async function bundles(dir) {
  let manifest;
  try {
    manifest = JSON.parse(await fs.readFile(path.join(dir, 'package.json'), 'utf8'));
  } catch (error) {
    throw new InvalidArgumentError(
      `${dir}: no readable package.json at its top (an app is an npm package): ${error.message}`,
    );
  }
  const bundled = manifest.bundleDependencies ?? manifest.bundledDependencies;
  return bundled === true || (Array.isArray(bundled) && bundled.length > 0);
}

/**
 * The regular files under `dir`, as paths relative to `top` with '/', sorted.
 * @param {{withModules: boolean, inModules: boolean}} state
 */
async function walk(top, dir, state, out) {
  const entries = await fs.readdir(dir, { withFileTypes: true });
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    if (left(entry.name)) continue;
    const atTop = dir === top;
    if (atTop && TOP_LOCKS.has(entry.name)) continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      let inModules = state.inModules;
      if (entry.name === 'node_modules' && !inModules) {
        if (!(atTop && state.withModules)) continue;
        inModules = true;
      }
      await walk(top, full, { ...state, inModules }, out);
    } else if (entry.isFile()) {
      out.push(path.relative(top, full).split(path.sep).join('/'));
    }
  }
  return out;
}

/**
 * `dir` packed as an npm package: a gzipped tar of its files under `package/`.
 * @param {string} dir
 * @returns {Promise<Uint8Array>}
 */
async function pack(dir) {
  const withModules = await bundles(dir);
  const files = await walk(dir, dir, { withModules, inModules: false }, []);
  const blocks = [];
  for (const file of files) {
    const full = path.join(dir, ...file.split('/'));
    const [data, stat] = await Promise.all([fs.readFile(full), fs.stat(full)]);
    const mode = stat.mode & 0o111 ? 0o755 : 0o644;
    blocks.push(...fileEntries(`package/${file}`, data, mode));
  }
  blocks.push(new Uint8Array(BLOCK * 2));
  const size = blocks.reduce((n, b) => n + b.length, 0);
  const tar = new Uint8Array(size);
  let offset = 0;
  for (const block of blocks) {
    tar.set(block, offset);
    offset += block.length;
  }
  return new Uint8Array(await gzip(tar));
}

module.exports = { pack };
