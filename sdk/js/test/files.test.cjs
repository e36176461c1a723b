'use strict';
// A sandbox's files through the CommonJS entry, against a real serve.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');

const {
  Sandbox,
  ForbiddenError,
  InvalidArgumentError,
  NotFoundError,
  ConflictError,
  pack,
} = require('nodeos-vm');
const { server, SKIP, readTar } = require('./helpers.cjs');

const options = { skip: SKIP };
let sandbox;

before(async () => {
  if (SKIP) return;
  sandbox = await Sandbox.create({ ...server(), idleTimeoutMs: 600_000 });
});

after(async () => {
  if (sandbox) await sandbox.kill().catch(() => {});
});

test('write, read (text, bytes, stream), list, make a folder, remove', options, async () => {
  const { files } = sandbox;
  await files.write('/home/node/work/notes.txt', 'first line, é\n');
  assert.equal(await files.read('/home/node/work/notes.txt'), 'first line, é\n');
  const all = new Uint8Array(256).map((_, i) => i);
  await files.write('/home/node/work/bytes.bin', all);
  assert.deepEqual(await files.read('/home/node/work/bytes.bin', { format: 'bytes' }), all);
  const stream = await files.read('/home/node/work/bytes.bin', { format: 'stream' });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.deepEqual(new Uint8Array(Buffer.concat(chunks)), all);
  const owner = await sandbox.commands.run("stat -c '%u %s' /home/node/work/notes.txt");
  assert.equal(owner.stdout, '1000 15\n');

  await files.makeDir('/home/node/work/sub/deeper');
  const entries = await files.list('/home/node/work');
  const shown = entries.map((e) => [e.name, e.type, e.path]);
  assert.deepEqual(shown, [
    ['bytes.bin', 'file', '/home/node/work/bytes.bin'],
    ['notes.txt', 'file', '/home/node/work/notes.txt'],
    ['sub', 'dir', '/home/node/work/sub'],
  ]);
  assert.equal(entries[0].size, 256);
  assert.equal(typeof entries[0].modifiedMs, 'number');

  await files.remove('/home/node/work/notes.txt');
  await assert.rejects(files.read('/home/node/work/notes.txt'), (e) => e instanceof NotFoundError && e.status === 404);
  await files.remove('/home/node/work');
  await assert.rejects(files.list('/home/node/work'), NotFoundError);
});

test('refused: through a symlink the guest made, not the user\'s, relative, the wrong kind', options, async () => {
  const { files } = sandbox;
  await sandbox.commands.run('ln -s /etc /home/node/etc && ln -s /tmp /home/node/tmp-link', { throwOnError: true });
  for (const attempt of [
    () => files.read('/home/node/etc/passwd'),
    () => files.write('/home/node/tmp-link/x', 'x'),
    () => files.uploadTar('/home/node/tmp-link', new Uint8Array(1024)),
  ]) {
    const error = await attempt().catch((e) => e);
    assert.ok(error instanceof ForbiddenError, String(error));
    assert.equal(error.status, 403);
    assert.match(error.message, /symlink/);
  }
  const denied = await files.write('/usr/bin/node', 'x').catch((e) => e);
  assert.ok(denied instanceof ForbiddenError, String(denied));
  const relative = await files.read('home/node/x').catch((e) => e);
  assert.ok(relative instanceof InvalidArgumentError, String(relative));
  assert.equal(relative.status, 400);
  await assert.rejects(files.list('/home/../etc'), InvalidArgumentError);
  await assert.rejects(files.read('/home/node'), (e) => e instanceof ConflictError && e.status === 409);
  // Nothing of that reached the files.
  assert.equal((await sandbox.commands.run('test -e /tmp/x; echo $?')).stdout, '1\n');
});

test('a tar archive up, run, and the same tree down', options, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodeos-vm-tar-'));
  fs.writeFileSync(path.join(dir, 'package.json'), '{"name": "up", "version": "1.0.0"}');
  fs.mkdirSync(path.join(dir, 'lib'));
  fs.writeFileSync(path.join(dir, 'lib/answer.js'), 'module.exports = 42;\n');
  fs.writeFileSync(path.join(dir, 'index.js'), "console.log(require('./lib/answer'));\n");
  const tar = zlib.gunzipSync(await pack(dir));
  fs.rmSync(dir, { recursive: true });

  await sandbox.files.uploadTar('/home/node/up', tar);
  const ran = await sandbox.commands.run(['node', 'index.js'], { cwd: '/home/node/up/package' });
  assert.equal(ran.stdout, '42\n');
  const down = readTar(await sandbox.files.downloadTar('/home/node/up/package'));
  const names = down.map((e) => e.name).sort();
  assert.deepEqual(names, ['./', './index.js', './lib/', './lib/answer.js', './package.json']);
  const answer = down.find((e) => e.name === './lib/answer.js');
  assert.equal(answer.data.toString(), 'module.exports = 42;\n');
});
