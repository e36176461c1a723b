// The function host's side: a folder deployed (packed by the SDK) and called, against a real serve.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { Client, deploy, invoke, InvalidArgumentError, NotFoundError, ServerError } from 'nodeos-vm';
import helpers from './helpers.cjs';

const { server, SKIP } = helpers;
const options = { skip: SKIP };
const dirs = [];

after(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

/** An app folder of `files` (path: text). */
function appDir(files) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodeos-vm-app-'));
  dirs.push(dir);
  for (const [file, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), text);
  }
  return dir;
}

test('a folder deployed and invoked, then removed', options, async () => {
  const dir = appDir({
    'package.json': JSON.stringify({ name: 'sdk-hello', version: '1.0.0', main: 'src/main.js', nodeos: { env: { GREETING: 'hi' } } }),
    'src/main.js': `const { shout } = require('../lib/shout');
exports.handler = async (event, context) => {
  if (event && event.fail) throw new TypeError('asked to fail');
  console.log('called by', event && event.who);
  return { greeting: shout(process.env.GREETING), event, app: context.app };
};`,
    'lib/shout.js': 'exports.shout = (s) => s.toUpperCase();\n',
    'node_modules/left-out/index.js': 'throw new Error("not bundled")',
  });
  const { url, appsUrl, token } = server();
  const app = await deploy({ url, token }, 'sdk-hello', dir, { max: 1, timeout: 20_000, memory: 256 });
  assert.equal(app.name, 'sdk-hello');
  assert.equal(app.version, 1);
  assert.equal(app.exports.handler, true);
  assert.equal(app.options.memory_mib, 256);
  assert.equal(app.options.timeout, 20_000);

  const answer = await invoke({ url: appsUrl }, 'sdk-hello', { who: 'world' });
  assert.deepEqual(answer, { greeting: 'HI', event: { who: 'world' }, app: 'sdk-hello' });

  const client = new Client(server());
  const details = await client.invoke('sdk-hello', { who: 'again' }, { details: true });
  assert.equal(details.result.event.who, 'again');
  assert.match(details.invocationId, /\S/);
  assert.equal(details.coldStart, false);

  const thrown = await client.invoke('sdk-hello', { fail: true }).catch((e) => e);
  assert.ok(thrown instanceof ServerError, String(thrown));
  assert.equal(thrown.status, 500);
  assert.equal(thrown.body.name, 'TypeError');
  assert.equal(thrown.body.message, 'asked to fail');

  const lines = await client.logs('sdk-hello', { invocation: details.invocationId });
  assert.ok(lines.some((l) => l.text.includes('called by again')), JSON.stringify(lines));
  assert.ok((await client.listApps()).some((a) => a.name === 'sdk-hello'));
  await client.deleteApp('sdk-hello');
  await assert.rejects(client.getApp('sdk-hello'), NotFoundError);
  await assert.rejects(invoke({ url: appsUrl }, 'sdk-hello', {}), NotFoundError);
});

test('a package that does not load, or a folder that is no package: InvalidArgumentError', options, async () => {
  const broken = appDir({
    'package.json': '{"name": "sdk-broken", "version": "1.0.0"}',
    'index.js': 'throw new Error("broken at load");',
  });
  const error = await deploy(server(), 'sdk-broken', broken).catch((e) => e);
  assert.ok(error instanceof InvalidArgumentError, String(error));
  assert.equal(error.status, 422);
  assert.match(JSON.stringify(error.body), /broken at load/);

  const bare = appDir({ 'index.js': 'exports.handler = () => 1;' });
  await assert.rejects(deploy(server(), 'sdk-bare', bare), (e) => e instanceof InvalidArgumentError && e.status === undefined);
});
