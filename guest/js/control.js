'use strict';
// What PID 1's program (repl.js, or nsh with nodeos.shell=nsh) owes the supervisor, through the
// control pipe NODEOS_CONTROL_FD (docs/guest-contract.md):
// - `ready` once it reads its input (the host holds console input back until then);
// - its exit status when it ends (.exit, Ctrl-D, process.exit(n), an uncaught exception).
// PID 1 must not exit (the kernel would panic) and cannot end the VM itself: it writes the
// status for the supervisor, which ends the VM, and waits for ever.
// Keep this file small: it is on the boot path.

const fs = require('fs');

/**
 * Takes the control pipe (if this process was given one) and the console mode out of the
 * environment, so that children inherit neither; hooks process exit; loads the spawn preload
 * in PID 1. Returns { pipeMode, ready() }.
 */
function setup() {
  const pipeMode = process.env.NODEOS_CONSOLE === 'pipe';
  const control = takeControlFd();
  delete process.env.NODEOS_CONSOLE;
  delete process.env.NODEOS_CONTROL_FD;

  if (process.pid === 1) require('./spawn-preload.js');

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
    // After every 'exit' listener (the user's included) has run: both process.exit() and a
    // fatal exception emit 'exit' through process.emit before the process ends.
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

  return {
    pipeMode,
    /** Tells the host (through the supervisor) that input is read from now on. */
    ready() {
      if (control < 0) return;
      try { fs.writeSync(control, 'ready\n'); } catch { /* no supervisor: nobody to tell */ }
    },
  };
}

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

module.exports = { setup };
