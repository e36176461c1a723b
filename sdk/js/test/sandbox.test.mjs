// Sandboxes and their commands through the ES module entry, against a real serve.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import {
  Sandbox,
  Client,
  AuthError,
  NotFoundError,
  InvalidArgumentError,
  ConflictError,
  CommandExitError,
  CommandHandle,
} from 'nodeos-vm';
import helpers from './helpers.cjs';

const { server, SKIP, until } = helpers;
const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const options = { skip: SKIP };
let sandbox;

before(async () => {
  if (SKIP) return;
  sandbox = await Sandbox.create({ ...server(), env: { GREETING: 'hello' }, idleTimeoutMs: 600_000 });
});

after(async () => {
  if (sandbox) await sandbox.kill().catch(() => {});
});

test('create: a sandbox with an ID, listed, found again', options, async () => {
  assert.match(sandbox.id, /\S/);
  assert.equal(sandbox.sandboxId, sandbox.id);
  const info = await sandbox.info();
  assert.equal(info.state, 'running');
  assert.equal(info.memoryMib, 512);
  const listed = await Sandbox.list(server());
  assert.ok(listed.some((s) => s.id === sandbox.id));
  const again = await Sandbox.connect(sandbox.id, { client: new Client(server()) });
  assert.equal(again.id, sandbox.id);
});

test('output streams as it comes, stdout and stderr apart', options, async () => {
  const start = Date.now();
  const pieces = [];
  const errs = [];
  const result = await sandbox.commands.run('for i in 1 2 3; do echo $i; sleep 0.4; done; echo oops >&2', {
    onStdout: (text) => pieces.push({ text, at: Date.now() - start }),
    onStderr: (text) => errs.push(text),
  });
  const took = Date.now() - start;
  assert.equal(result.stdout, '1\n2\n3\n');
  assert.equal(pieces.map((p) => p.text).join(''), '1\n2\n3\n');
  assert.ok(pieces.length >= 3, JSON.stringify(pieces));
  assert.ok(pieces[0].at < took - 600, `the first line came at ${pieces[0].at} ms of ${took} ms`);
  assert.equal(result.stderr, 'oops\n');
  assert.equal(errs.join(''), 'oops\n');
  assert.deepEqual(
    [result.exitCode, result.signal, result.timedOut, result.error],
    [0, null, false, null],
  );
});

test('exit codes, and throwOnError', options, async () => {
  assert.equal((await sandbox.commands.run('exit 3')).exitCode, 3);
  assert.equal((await sandbox.commands.run(['node', '-e', 'process.exit(42)'])).exitCode, 42);
  const error = await sandbox.commands.run('echo out; exit 5', { throwOnError: true }).catch((e) => e);
  assert.ok(error instanceof CommandExitError, String(error));
  assert.equal(error.exitCode, 5);
  assert.equal(error.stdout, 'out\n');
});

test('a missing program: 127 and the guest\'s message', options, async () => {
  const result = await sandbox.commands.run(['no-such-program', 'x']);
  assert.equal(result.exitCode, 127);
  assert.match(result.error, /no-such-program/);
});

test('environment (the sandbox\'s and the command\'s) and working folder', options, async () => {
  const result = await sandbox.commands.run(['sh', '-c', 'echo $GREETING $EXTRA; pwd; id -u'], {
    env: { EXTRA: 'world' },
    cwd: '/tmp',
  });
  assert.equal(result.stdout, 'hello world\n/tmp\n1000\n');
  const home = await sandbox.commands.run('pwd');
  assert.equal(home.stdout, '/home/node\n');
});

test('UTF-8 split across output chunks is decoded whole', options, async () => {
  const pieces = [];
  const result = await sandbox.commands.run("printf '\\303'; sleep 0.3; printf '\\251\\342\\202'; sleep 0.3; printf '\\254\\n'", {
    onStdout: (text) => pieces.push(text),
  });
  assert.equal(result.stdout, 'é€\n');
  assert.ok(!pieces.join('').includes('\ufffd'), JSON.stringify(pieces));
  const big = await sandbox.commands.run(['node', '-e', "process.stdout.write('a€'.repeat(100000))"]);
  assert.equal(big.stdout.length, 200000);
  assert.equal(big.stdout, 'a€'.repeat(100000));
});

test('timeoutMs kills the command', options, async () => {
  const start = Date.now();
  const result = await sandbox.commands.run('sleep 30', { timeoutMs: 500 });
  assert.equal(result.timedOut, true);
  assert.equal(result.exitCode, null);
  assert.ok(Date.now() - start < 20_000);
});

test('stdin data for a command, closed after', options, async () => {
  const result = await sandbox.commands.run('tr a-z A-Z', { stdin: 'typed in\n' });
  assert.equal(result.stdout, 'TYPED IN\n');
});

test('a background command: stdin by its ID, a signal, its end', options, async () => {
  let seen = '';
  const handle = await sandbox.commands.run('cat; sleep 1000', {
    background: true,
    stdin: true,
    onStdout: (text) => {
      seen += text;
    },
  });
  assert.ok(handle instanceof CommandHandle);
  assert.match(handle.id, /\S/);
  await handle.sendStdin('line one\n');
  await sandbox.commands.sendStdin(handle.id, new TextEncoder().encode('line two\n'));
  await until(20_000, () => seen === 'line one\nline two\n');
  assert.equal(seen, 'line one\nline two\n');
  await handle.closeStdin();
  const info = await sandbox.info();
  assert.equal(info.execs.find((e) => e.id === handle.id).state, 'running');
  assert.equal(await handle.kill('SIGTERM'), true);
  const result = await handle.wait();
  assert.equal(result.signal, 15);
  assert.equal(handle.stdout, 'line one\nline two\n');
  assert.equal(await handle.kill(), false, 'a command that ended');
  assert.equal(await sandbox.commands.kill(handle.id), false, 'by its ID');
  assert.equal(await sandbox.commands.kill('e999999', 'SIGTERM'), false, 'no such command');
});

test('commands.start, then an abort: the command is killed, the sandbox lives on', options, async () => {
  const controller = new AbortController();
  const run = sandbox.commands.run('echo ready; sleep 1000', {
    signal: controller.signal,
    onStdout: () => controller.abort(),
  });
  await assert.rejects(run, (error) => error.name === 'AbortError');
  const execs = async () => (await sandbox.info()).execs;
  const killed = await until(20_000, async () =>
    (await execs()).some((e) => e.argv.includes('echo ready; sleep 1000') && e.state === 'signaled' && e.signal === 9),
  );
  assert.ok(killed, JSON.stringify(await execs()));

  const handle = await sandbox.commands.start(['sleep', '1000']);
  handle.disconnect();
  await assert.rejects(handle.wait(), (error) => error.name === 'AbortError');
  assert.ok(
    await until(20_000, async () => (await execs()).some((e) => e.id === handle.id && e.signal === 9)),
  );
  assert.equal((await sandbox.commands.run(['echo', 'still here'])).stdout, 'still here\n');
});

test('pause stops the guest, commands and files wait for resume, which goes on', options, async () => {
  // A line every 100 ms.
  let lines = 0;
  const counter = await sandbox.commands.start('while :; do echo tick; sleep 0.1; done', {
    onStdout: (text) => {
      lines += text.split('\n').length - 1;
    },
  });
  const refusedAsPaused = (error) => error instanceof ConflictError && error.status === 409 && /paused/.test(error.message);
  try {
    assert.ok(await until(20_000, () => lines >= 3), `${lines} lines`);
    const info = await sandbox.pause();
    assert.equal(info.state, 'paused');
    assert.equal(typeof info.pausedAt, 'number');
    // What the guest wrote before it stopped may still be on its way.
    await delay(300);
    const atPause = lines;
    await delay(1000);
    assert.equal(lines, atPause, 'the command went on while paused');
    assert.equal(counter.ended, false);
    assert.equal((await sandbox.info()).state, 'paused');
    await assert.rejects(sandbox.commands.run('true'), refusedAsPaused);
    await assert.rejects(sandbox.files.read('/etc/hostname'), refusedAsPaused);
    await assert.rejects(sandbox.pause(), ConflictError);

    const resumed = await sandbox.resume();
    assert.deepEqual([resumed.state, resumed.pausedAt], ['running', null]);
    assert.ok(await until(20_000, () => lines > atPause), `still ${lines} lines`);
    assert.equal((await sandbox.commands.run(['echo', 'after'])).stdout, 'after\n');
    await assert.rejects(sandbox.resume(), ConflictError);
  } finally {
    if ((await sandbox.info()).state === 'paused') await sandbox.resume();
    await counter.kill();
  }
  assert.equal((await counter.wait()).signal, 9);
});

test('bad input: InvalidArgumentError, from the server or before sending', options, async () => {
  const error = await sandbox.commands.run('true', { cwd: 'relative' }).catch((e) => e);
  assert.ok(error instanceof InvalidArgumentError, String(error));
  assert.equal(error.status, 400);
  assert.match(error.message, /cwd/);
  await assert.rejects(sandbox.commands.run([]), InvalidArgumentError);
  await assert.rejects(Sandbox.create({ ...server(), memoryMib: 1 }), (e) => e instanceof InvalidArgumentError && /memoryMib/.test(e.message));
});

test('a wrong token: AuthError, nothing changes', options, async () => {
  const wrong = { ...server(), token: 'not-the-token' };
  for (const call of [() => Sandbox.list(wrong), () => Sandbox.connect(sandbox.id, wrong), () => Sandbox.create(wrong)]) {
    const error = await call().catch((e) => e);
    assert.ok(error instanceof AuthError, String(error));
    assert.equal(error.status, 401);
  }
  assert.equal((await sandbox.info()).id, sandbox.id);
});

test('killed: NotFoundError after', options, async () => {
  const doomed = await Sandbox.create(server());
  await doomed.kill();
  await assert.rejects(doomed.info(), NotFoundError);
  await assert.rejects(doomed.commands.run('true'), NotFoundError);
  await assert.rejects(doomed.commands.kill('e1'), NotFoundError);
  await assert.rejects(doomed.kill(), (e) => e instanceof NotFoundError && e.status === 404);
  await assert.rejects(Sandbox.connect(doomed.id, server()), NotFoundError);
});
