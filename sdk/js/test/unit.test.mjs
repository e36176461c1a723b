// The SDK against a stand-in server on the loopback (no VM): the NDJSON stream cut anywhere,
// errors by status, a server that is not there; and pack()'s tarball. Runs anywhere.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import * as sdk from 'nodeos-vm';
import helpers from './helpers.cjs';

const { Sandbox, Client, pack } = sdk;
let server;
let url;
/** What the stand-in answers to the next exec: the bytes of its body, written one piece at a time. */
let execPieces = [];
let lastRequest;

before(async () => {
  server = http.createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    lastRequest = { method: req.method, url: req.url, headers: req.headers, body };
    const status = /\/status\/(\d+)/.exec(req.url);
    if (status) {
      res.writeHead(Number(status[1]), { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: `answered ${status[1]}` }));
    } else if (req.url === '/sandboxes/s1') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 's1', state: 'running', execs: [] }));
    } else if (req.method === 'POST' && /^\/sandboxes\/s1\/(pause|resume)$/.test(req.url)) {
      const paused = req.url.endsWith('/pause');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 's1', state: paused ? 'paused' : 'running', pausedAt: paused ? 1234 : null, execs: [] }));
    } else if (req.url === '/sandboxes/s1/exec') {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      for (const piece of execPieces) {
        res.write(piece);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      res.end();
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not json');
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${server.address().port}`;
});

after(() => server.close());

const b64 = (bytes) => Buffer.from(bytes).toString('base64');

/** `text`'s bytes cut into pieces of `size` bytes. */
function cut(text, size) {
  const bytes = Buffer.from(text);
  const pieces = [];
  for (let i = 0; i < bytes.length; i += size) pieces.push(bytes.subarray(i, i + size));
  return pieces;
}

test('NDJSON lines and UTF-8 characters cut anywhere are put back together', async () => {
  const euro = Buffer.from('€é\n'); // 3 + 2 + 1 bytes
  const lines = [
    { type: 'exec', id: 'e7' },
    { type: 'started', pid: 42 },
    { type: 'stdout', data: b64(euro.subarray(0, 1)) },
    { type: 'stdout', data: b64(euro.subarray(1, 4)) },
    { type: 'something-new', x: 1 },
    { type: 'stderr', data: b64(Buffer.from('warn')) },
    { type: 'stdout', data: b64(euro.subarray(4)) },
    { type: 'exit', exitCode: 0 },
  ];
  const stream = lines.map((l) => JSON.stringify(l)).join('\r\n\n') + '\n';
  const sandbox = await Sandbox.connect('s1', { url, token: 't' });
  for (const size of [1, 2, 3, 7, 64, stream.length]) {
    execPieces = cut(stream, size);
    const seen = [];
    const result = await sandbox.commands.run('x', { onStdout: (t) => seen.push(t) });
    assert.equal(result.stdout, '€é\n', `pieces of ${size}`);
    assert.ok(!seen.join('').includes('\ufffd'));
    assert.deepEqual([result.id, result.pid, result.exitCode, result.stderr], ['e7', 42, 0, 'warn']);
  }
  assert.equal(lastRequest.headers.authorization, 'Bearer t');
  assert.deepEqual(JSON.parse(lastRequest.body), { cmd: 'x' });
});

test('a stream that ends without the exit: ConnectionError', async () => {
  execPieces = [JSON.stringify({ type: 'exec', id: 'e1' }) + '\n'];
  const sandbox = await Sandbox.connect('s1', { url, token: 't' });
  await assert.rejects(sandbox.commands.run(['x']), sdk.ConnectionError);
  execPieces = ['{"type": "exec", "id": "e1"}\n{not json}\n'];
  await assert.rejects(sandbox.commands.run(['x']), sdk.NodeosVmError);
});

test('errors by status, with the server\'s message', async () => {
  const client = new Client({ url, token: 't' });
  const cases = {
    400: sdk.InvalidArgumentError,
    401: sdk.AuthError,
    403: sdk.ForbiddenError,
    404: sdk.NotFoundError,
    409: sdk.ConflictError,
    413: sdk.PayloadTooLargeError,
    422: sdk.InvalidArgumentError,
    429: sdk.RateLimitError,
    500: sdk.ServerError,
    502: sdk.ServerError,
    410: sdk.NodeosVmError,
  };
  for (const [status, Class] of Object.entries(cases)) {
    const error = await client.json('GET', `/status/${status}`).catch((e) => e);
    assert.ok(error instanceof Class, `${status}: ${error}`);
    assert.ok(error instanceof sdk.NodeosVmError);
    assert.equal(error.status, Number(status));
    assert.equal(error.message, `answered ${status}`);
    assert.deepEqual(error.body, { error: `answered ${status}` });
  }
  const plain = await client.json('GET', '/elsewhere').catch((e) => e);
  assert.ok(plain instanceof sdk.NotFoundError);
  assert.match(plain.message, /HTTP 404: not json/);
});

test('no server there: ConnectionError; a bad URL: InvalidArgumentError', async () => {
  const closed = http.createServer();
  await new Promise((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = closed.address().port;
  await new Promise((resolve) => closed.close(resolve));
  const error = await Sandbox.list({ url: `http://127.0.0.1:${port}`, token: 't' }).catch((e) => e);
  assert.ok(error instanceof sdk.ConnectionError, String(error));
  assert.equal(error.status, undefined);
  assert.throws(() => new Client({ url: 'not a url' }), sdk.InvalidArgumentError);
  const saved = process.env.NODEOS_VM_APPS_URL;
  delete process.env.NODEOS_VM_APPS_URL;
  try {
    assert.equal(new Client({ url: 'http://127.0.0.1:8080/' }).appsUrl, 'http://127.0.0.1:8081');
  } finally {
    if (saved !== undefined) process.env.NODEOS_VM_APPS_URL = saved;
  }
});

test('pack(): an npm-pack-like tarball, node_modules and litter left out', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodeos-vm-pack-'));
  const write = (file, text, mode = 0o644) => {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), text, { mode });
  };
  const long = `${'deep/'.repeat(30)}file.js`;
  write('package.json', '{"name": "a", "version": "1.0.0"}');
  write('index.js', 'module.exports = 1;\n');
  write('bin/run', '#!/bin/sh\n', 0o755);
  write(long, 'long');
  write('ünï.txt', 'x');
  write('node_modules/dep/index.js', 'dep');
  write('.git/HEAD', 'ref');
  write('.npmrc', '//registry/:_authToken=secret');
  write('package-lock.json', '{}');
  fs.symlinkSync('/etc/passwd', path.join(dir, 'link'));
  const entries = helpers.readTgz(await pack(dir));
  const names = entries.map((e) => e.name).sort();
  assert.deepEqual(names, ['package/bin/run', `package/${long}`, 'package/index.js', 'package/package.json', 'package/ünï.txt'].sort());
  const byName = Object.fromEntries(entries.map((e) => [e.name, e]));
  assert.equal(byName['package/bin/run'].mode, 0o755);
  assert.equal(byName['package/index.js'].mode, 0o644);
  assert.equal(byName[`package/${long}`].data.toString(), 'long');
  assert.deepEqual(helpers.readTgz(await pack(dir)).map((e) => e.name), entries.map((e) => e.name), 'the same twice');

  write('package.json', '{"name": "a", "version": "1.0.0", "bundleDependencies": ["dep"]}');
  write('node_modules/dep/node_modules/sub/index.js', 'sub');
  const bundled = helpers.readTgz(await pack(dir)).map((e) => e.name);
  assert.ok(bundled.includes('package/node_modules/dep/index.js'), bundled.join());
  assert.ok(bundled.includes('package/node_modules/dep/node_modules/sub/index.js'), bundled.join());
  fs.rmSync(dir, { recursive: true });
  await assert.rejects(pack(os.tmpdir() + '/nodeos-vm-no-such-dir'), sdk.InvalidArgumentError);
});

test('pause and resume: a POST each, the sandbox as the server describes it after', async () => {
  const sandbox = await Sandbox.connect('s1', { url, token: 't' });
  const paused = await sandbox.pause();
  assert.deepEqual([lastRequest.method, lastRequest.url], ['POST', '/sandboxes/s1/pause']);
  assert.deepEqual([paused.state, paused.pausedAt], ['paused', 1234]);
  const running = await sandbox.resume();
  assert.deepEqual([lastRequest.method, lastRequest.url], ['POST', '/sandboxes/s1/resume']);
  assert.deepEqual([running.state, running.pausedAt], ['running', null]);
});

test('the ES module and CommonJS entries are one implementation', async () => {
  const { createRequire } = await import('node:module');
  const cjs = createRequire(import.meta.url)('nodeos-vm');
  assert.equal(cjs.Sandbox, Sandbox);
  assert.equal(cjs.NotFoundError, sdk.NotFoundError);
  assert.equal(sdk.default, cjs);
});
