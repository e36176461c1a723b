'use strict';
// An app's runner, inside the app's own microVM: started by `nodeos-vm serve` through the
// guest agent, it loads the app's main module once and then serves calls, one JSON line per
// call on stdin, one JSON line per answer on stdout. Whatever the app writes to stdout or
// stderr (console.log, ...) goes to stderr as JSON lines tagged with the call's ID.
const { AsyncLocalStorage } = require('node:async_hooks');
const { pathToFileURL } = require('node:url');

const APP_DIR = '/app';
const call = new AsyncLocalStorage();
const writeOut = process.stdout.write.bind(process.stdout);
const writeErr = process.stderr.write.bind(process.stderr);
const send = (message) => writeOut(JSON.stringify(message) + '\n');

const tagged = (stream) => (chunk, encoding, callback) => {
  const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
  writeErr(JSON.stringify({ id: call.getStore() ?? null, stream, text }) + '\n');
  const done = typeof encoding === 'function' ? encoding : callback;
  if (typeof done === 'function') process.nextTick(done);
  return true;
};
process.stdout.write = tagged('stdout');
process.stderr.write = tagged('stderr');

const describe = (error) => ({
  name: error?.name ?? 'Error',
  message: error?.message ?? String(error),
  stack: error?.stack ?? null,
});

// require() loads CommonJS and ES modules alike without starting Node's ESM loader, which
// costs a cold start ~50 ms under emulation; an ES module graph with top-level await needs
// import().
async function load() {
  const main = require.resolve(APP_DIR);
  let mod;
  try {
    mod = require(main);
  } catch (error) {
    if (error?.code !== 'ERR_REQUIRE_ASYNC_MODULE') throw error;
    mod = await import(pathToFileURL(main).href);
  }
  const pick = (name) =>
    typeof mod[name] === 'function' ? mod[name]
      : typeof mod.default?.[name] === 'function' ? mod.default[name].bind(mod.default)
        : undefined;
  return { main, handler: pick('handler'), fetch: pick('fetch') };
}

async function invoke(app, request) {
  if (request.fetch) {
    if (!app.fetch) throw new TypeError(`${app.main} exports no fetch(request)`);
    const { method, url, headers, body } = request.fetch;
    const init = { method, headers };
    if (method !== 'GET' && method !== 'HEAD') init.body = Buffer.from(body, 'base64');
    const response = await app.fetch(new Request(url, init));
    if (!(response instanceof Response)) {
      throw new TypeError('fetch(request) must return a Response');
    }
    const bytes = Buffer.from(await response.arrayBuffer());
    return {
      response: { status: response.status, headers: [...response.headers], body: bytes.toString('base64') },
    };
  }
  if (!app.handler) throw new TypeError(`${app.main} exports no handler(event, context)`);
  const result = await app.handler(request.event, { invocationId: request.id, app: process.env.NODEOS_APP });
  return { result: result === undefined ? null : result };
}

// Calls `online` with each line `input` brings (without its newline). Not node:readline,
// whose loading costs a cold start ~30 ms under emulation.
function onLines(input, online) {
  let pending = '';
  input.setEncoding('utf8');
  input.on('data', (chunk) => {
    let start = 0;
    for (let end = chunk.indexOf('\n'); end >= 0; end = chunk.indexOf('\n', start)) {
      const line = pending + chunk.slice(start, end);
      pending = '';
      start = end + 1;
      online(line);
    }
    pending += chunk.slice(start);
  });
}

// The largest answer sent back (serialized); the host reads lines up to a little more.
const MAX_ANSWER_BYTES = 6 * 1024 * 1024;

function serve(app, line) {
  const request = JSON.parse(line);
  call.run(request.id, async () => {
    let answer;
    try {
      answer = JSON.stringify({ id: request.id, ok: true, ...(await invoke(app, request)) });
      if (Buffer.byteLength(answer) > MAX_ANSWER_BYTES) {
        throw new RangeError(`the answer is ${Buffer.byteLength(answer)} bytes serialized; the limit is ${MAX_ANSWER_BYTES}`);
      }
    } catch (error) {
      answer = JSON.stringify({ id: request.id, ok: false, error: describe(error) });
    }
    writeOut(answer + '\n');
  });
}

load().then(
  (app) => {
    if (!app.handler && !app.fetch) {
      send({ fatal: { name: 'TypeError', message: `${app.main} exports neither handler(event, context) nor fetch(request)`, stack: null } });
      process.exit(1);
    }
    send({ ready: { handler: !!app.handler, fetch: !!app.fetch } });
    onLines(process.stdin, (line) => serve(app, line));
    process.stdin.on('end', () => process.exit(0));
  },
  (error) => {
    send({ fatal: describe(error) });
    process.exit(1);
  },
);
