'use strict';
// The NodeOS shell: PID 1 runs `node /usr/lib/nodeos/repl.js` as the unprivileged user.
//
// When the REPL ends (.exit, Ctrl-D, process.exit(n), an uncaught exception) PID 1 must not
// exit (the kernel would panic) and cannot end the VM itself: it writes the exit code to the
// control pipe (NODEOS_CONTROL_FD) for the supervisor, which ends the VM, and waits for ever.
// Keep this file small: it is on the boot path.

const fs = require('fs');

const pipeMode = process.env.NODEOS_CONSOLE === 'pipe';
const control = takeControlFd();
delete process.env.NODEOS_CONSOLE;
delete process.env.NODEOS_CONTROL_FD;

if (process.pid === 1) require('./spawn-preload.js');

// The control pipe was inherited without close-on-exec, so every child would inherit it too.
// Reopen it (Node opens everything close-on-exec) and close the inherited descriptor.
function takeControlFd() {
  const inherited = Number.parseInt(process.env.NODEOS_CONTROL_FD, 10);
  if (!Number.isInteger(inherited) || inherited < 0) return -1;
  try {
    const fd = fs.openSync(`/proc/self/fd/${inherited}`, 'w');
    fs.closeSync(inherited);
    return fd;
  } catch {
    return inherited;
  }
}

let finished = false;
function finish(code) {
  if (finished || control < 0) return;
  finished = true;
  let n = Number(code);
  if (!Number.isInteger(n)) n = 0;
  try {
    fs.writeSync(control, `${n}\n`);
  } catch {
    return; // No supervisor to tell: let Node exit the normal way.
  }
  // The supervisor ends the VM within moments; PID 1 must not get there first.
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (;;) Atomics.wait(cell, 0, 0);
}

if (control >= 0) {
  // After every 'exit' listener (the user's included) has run: both process.exit() and a fatal
  // exception emit 'exit' through process.emit before the process ends.
  const emit = process.emit;
  process.emit = function (event, ...args) {
    if (event !== 'exit') return emit.call(this, event, ...args);
    try {
      return emit.call(this, event, ...args);
    } finally {
      finish(process.exitCode ?? args[0]);
    }
  };
  const reallyExit = process.reallyExit;
  process.reallyExit = function (code) {
    finish(code);
    return reallyExit.call(this, code);
  };
}

const repl = require('repl');
if (!pipeMode) {
  process.stdout.write(`Welcome to Node.js ${process.version} on NodeOS.\nType ".help" for more information.\n`);
}
const server = repl.start(pipeMode
  ? { prompt: '', terminal: false, useColors: false, useGlobal: true, ignoreUndefined: false }
  : { prompt: '> ', useGlobal: true, breakEvalOnSigint: true });
if (pipeMode) {
  // No "... " continuation prompts either: output is only what the code prints and returns.
  server.displayPrompt = function (preserveCursor) { this.prompt(preserveCursor); };
}
server.on('exit', () => process.exit());
// Tell the host (through the supervisor) that input is read from now on.
if (control >= 0) {
  try { fs.writeSync(control, 'ready\n'); } catch { /* no supervisor: nobody to tell */ }
}
