'use strict';
// What the tests share: the server to talk to (from the environment), a tar reader, polling.

const zlib = require('node:zlib');

/**
 * The server under test: NODEOS_VM_URL (admin), NODEOS_VM_APPS_URL, NODEOS_VM_TOKEN; null when
 * they are not set (the tests that need a server are then skipped: cli/tests/sdk.rs sets them).
 */
function server() {
  const { NODEOS_VM_URL: url, NODEOS_VM_APPS_URL: appsUrl, NODEOS_VM_TOKEN: token } = process.env;
  return url && token ? { url, appsUrl, token } : null;
}

const SKIP = server() ? false : 'no server: set NODEOS_VM_URL, NODEOS_VM_APPS_URL and NODEOS_VM_TOKEN';

/** The entries of an uncompressed tar: [{name, type, data}] (ustar names and PAX paths). */
function readTar(bytes) {
  const buf = Buffer.from(bytes);
  const entries = [];
  let pax = {};
  for (let offset = 0; offset + 512 <= buf.length; ) {
    const block = buf.subarray(offset, offset + 512);
    if (block.every((b) => b === 0)) break;
    const field = (start, len) => block.subarray(start, start + len).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const type = field(156, 1) || '0';
    const prefix = field(257, 6).startsWith('ustar') ? field(345, 155) : '';
    const data = buf.subarray(offset + 512, offset + 512 + size);
    offset += 512 + Math.ceil(size / 512) * 512;
    if (type === 'x') {
      for (const record of data.toString('utf8').split('\n').filter(Boolean)) {
        const [, key, value] = record.match(/^\d+ ([^=]+)=(.*)$/s);
        pax[key] = value;
      }
      continue;
    }
    const name = pax.path || (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    pax = {};
    entries.push({ name, type, data, mode: parseInt(field(100, 8).trim() || '0', 8) });
  }
  return entries;
}

/** The entries of a gzipped tar. */
function readTgz(bytes) {
  return readTar(zlib.gunzipSync(bytes));
}

/** Waits (at most `ms`) until `check()` resolves truthy; its last value. */
async function until(ms, check) {
  const end = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value || Date.now() > end) return value;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

module.exports = { server, SKIP, readTar, readTgz, until };
