// The SDK's costs against `nodeos-vm run`, on one host and backend: a serve of its own is started.
//
//   node sdk/js/bench/sdk.mjs [RUNS] [SANDBOXES]      (after cargo build --release)
//
// 1. Create a sandbox and run `node -e 'console.log(1)'` in it through the SDK, to its first
//    output and to the end (sandbox deleted), against the same on a serve that keeps no standby
//    VM (`--no-sandbox-standby`: each create restores a VM) and against
//    `nodeos-vm run -- node -e 'console.log(1)'` from spawning it to its first output and to
//    its exit; RUNS rounds (default 5) interleaved after one uncounted warm-up of each, each
//    once the first serve's standby sandbox VM has booted (the create takes it); medians,
//    min-max, and the ratios to run.
// 2. 20 concurrent SDK clients, each running 50 commands (`echo`) one after the other, in
//    SANDBOXES sandboxes (default 1): errors (a rejection, a status other than 0 or the wrong
//    output), latency p50/p99, and commands per second.
// 3. Pause and resume: RUNS rounds of `sandbox.pause()` then `sandbox.resume()` on a sandbox
//    whose command prints every 10 ms, each timed to its answer, and from the resume's answer
//    to the command's next line (the guest running again).
//
// NODEOS_VM_BIN names the binary (default target/release/nodeos-vm of this repository).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { Client, Sandbox } from '../index.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const bin = process.env.NODEOS_VM_BIN || path.join(here, '../../../target/release/nodeos-vm');
const runs = Number(process.argv[2] || 5);
const sandboxes = Number(process.argv[3] || 1);
const CLIENTS = 20;
const EXECS = 50;
const COMMAND = ['node', '-e', 'console.log(1)'];

const median = (v) => percentile(v, 50);
function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
}
const ms = (v) => `${v.toFixed(1)} ms`;
const spread = (v) => `${ms(median(v))} (${Math.min(...v).toFixed(1)}–${Math.max(...v).toFixed(1)})`;

/** A serve of the bench's own; its client. */
async function startServe(dir, ...args) {
  const child = spawn(bin, ['serve', '--listen', '127.0.0.1:0', ...args], {
    env: { ...process.env, NODEOS_VM_DATA: path.join(dir, 'data'), XDG_RUNTIME_DIR: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderr.on('data', (d) => {
    if (process.env.BENCH_VERBOSE) process.stderr.write(d);
  });
  const lines = readline.createInterface({ input: child.stdout });
  const urls = {};
  for await (const line of lines) {
    const [what, url] = line.split(': ');
    urls[what] = url;
    if (urls.admin && urls.apps) break;
  }
  const token = fs.readFileSync(path.join(dir, 'data/serve-token'), 'utf8').trim();
  return { child, token, client: new Client({ url: urls.admin, appsUrl: urls.apps, token }) };
}

/** The SDK: create, run, first output, end, delete; [to first output, to the end] in ms. */
async function sdkRound(client) {
  const start = performance.now();
  let first;
  const sandbox = await Sandbox.create({ client });
  const result = await sandbox.commands.run(COMMAND, {
    onStdout: () => {
      first ??= performance.now() - start;
    },
  });
  await sandbox.kill();
  if (result.stdout !== '1\n') throw new Error(`the SDK's command printed ${JSON.stringify(result.stdout)}`);
  return [first, performance.now() - start];
}

/**
 * Waits until serve's standby sandbox VM (kept once a sandbox of the default shape was made)
 * has booted, so that each round's create finds it as a user's create spaced out from the last
 * one would, and no `nodeos-vm run` round shares the host with its boot.
 */
async function standbyBooted(client) {
  for (let i = 0; i < 600; i++) {
    const { standby } = await client.json('GET', '/sandboxes');
    if (standby === 'booted') return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error("serve's standby sandbox VM did not boot within 60 s");
}

/** `nodeos-vm run`: [to first output, to its exit] in ms. */
function runRound() {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    let first;
    let out = '';
    const child = spawn(bin, ['run', '--', ...COMMAND], { stdio: ['ignore', 'pipe', 'inherit'] });
    child.stdout.on('data', (d) => {
      first ??= performance.now() - start;
      out += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0 || out !== '1\n') reject(new Error(`nodeos-vm run: ${code} ${JSON.stringify(out)}`));
      else resolve([first, performance.now() - start]);
    });
  });
}

async function load(client, token) {
  const boxes = await Promise.all(Array.from({ length: sandboxes }, () => Sandbox.create({ client })));
  // One command in each first: what is measured is commands, not a sandbox's first one.
  await Promise.all(boxes.map((b) => b.commands.run('true')));
  const latencies = [];
  const errors = [];
  const start = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, n) => {
      const own = new Client({ url: client.url, appsUrl: client.appsUrl, token });
      const sandbox = await Sandbox.connect(boxes[n % boxes.length].id, { client: own });
      for (let i = 0; i < EXECS; i++) {
        const t = performance.now();
        try {
          const r = await sandbox.commands.run(['echo', `client ${n} exec ${i}`]);
          if (r.exitCode !== 0 || r.stdout !== `client ${n} exec ${i}\n`) {
            errors.push(`client ${n} exec ${i}: ${JSON.stringify(r)}`);
          }
        } catch (error) {
          errors.push(`client ${n} exec ${i}: ${error}`);
        }
        latencies.push(performance.now() - t);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  await Promise.all(boxes.map((b) => b.kill()));
  return { latencies, errors, throughput: latencies.length / seconds };
}

/** [pause, resume, resume to the next line] in ms, `runs` times, on one sandbox. */
async function pauses(client) {
  const sandbox = await Sandbox.create({ client });
  let lines = 0;
  let onLine = () => {};
  const ticking = sandbox.commands.run(['node', '-e', 'setInterval(() => console.log(1), 10)'], {
    onStdout: () => {
      lines++;
      onLine();
    },
  });
  ticking.catch(() => {});
  while (lines === 0) await new Promise((resolve) => setTimeout(resolve, 10));
  const times = { pause: [], resume: [], next: [] };
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    await sandbox.pause();
    times.pause.push(performance.now() - t);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const held = lines;
    t = performance.now();
    const next = new Promise((resolve) => {
      onLine = () => lines > held && resolve(performance.now());
    });
    await sandbox.resume();
    const resumed = performance.now();
    times.resume.push(resumed - t);
    times.next.push(Math.max(0, (await next) - resumed));
    onLine = () => {};
  }
  await sandbox.kill();
  return times;
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nodeos-vm-sdk-bench-'));
const bare = fs.mkdtempSync(path.join(os.tmpdir(), 'nodeos-vm-sdk-bench-'));
const { child, client, token } = await startServe(dir);
const noStandby = await startServe(bare, '--no-sandbox-standby');
try {
  await sdkRound(client);
  await sdkRound(noStandby.client);
  await runRound();
  const sdk = { first: [], end: [] };
  const cold = { first: [], end: [] };
  const run = { first: [], end: [] };
  const rounds = [
    [sdk, () => sdkRound(client)],
    [cold, () => sdkRound(noStandby.client)],
    [run, runRound],
  ];
  for (let i = 0; i < runs; i++) {
    for (const [times, round] of rounds) {
      await standbyBooted(client);
      const [first, end] = await round();
      times.first.push(first);
      times.end.push(end);
    }
  }
  const result = await load(client, token);
  const paused = await pauses(client);

  console.log(`## The SDK against \`nodeos-vm run\` (${os.cpus().length} cores, backend auto, ${runs} rounds)\n`);
  const ratio = (a, b) => (median(a) / median(b)).toFixed(2);
  console.log('| what | SDK (Sandbox.create + commands.run) | SDK, no standby VM | nodeos-vm run | SDK / run | no standby / run |');
  console.log('|---|---|---|---|---|---|');
  for (const [what, key] of [["to the first output of `node -e 'console.log(1)'`", 'first'], ['to the end (SDK: sandbox deleted; run: exited)', 'end']]) {
    console.log(`| ${what} | ${spread(sdk[key])} | ${spread(cold[key])} | ${spread(run[key])} | ${ratio(sdk[key], run[key])} | ${ratio(cold[key], run[key])} |`);
  }
  console.log(`\n## ${CLIENTS} SDK clients × ${EXECS} commands (\`echo\`) in ${sandboxes} sandbox(es)\n`);
  console.log('| commands | errors | p50 | p99 | commands/s |');
  console.log('|---|---|---|---|---|');
  console.log(`| ${result.latencies.length} | ${result.errors.length} | ${ms(percentile(result.latencies, 50))} | ${ms(percentile(result.latencies, 99))} | ${result.throughput.toFixed(1)} |`);
  console.log(`\n## Pause and resume (${runs} rounds)\n`);
  console.log('| sandbox.pause() | sandbox.resume() | resume answered → next output |');
  console.log('|---|---|---|');
  console.log(`| ${spread(paused.pause)} | ${spread(paused.resume)} | ${spread(paused.next)} |`);
  for (const error of result.errors.slice(0, 10)) console.error(error);
  process.exitCode = result.errors.length ? 1 : 0;
} finally {
  for (const serve of [child, noStandby.child]) {
    serve.kill('SIGTERM');
    await new Promise((resolve) => serve.once('close', resolve));
  }
  for (const folder of [dir, bare]) fs.rmSync(folder, { recursive: true, force: true });
}
