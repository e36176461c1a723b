#!/usr/bin/env node
'use strict';
// nsh, the Node shell.
//
//   nsh                      interactive on a terminal (prompt, line editing, history in
//                            ~/.nsh_history, tab completion); otherwise reads commands from
//                            stdin, one line at a time, no prompt, exits with the last status
//   nsh -c 'CMD' [ARG0 ARG...]   runs CMD ($0 = ARG0, $1... = ARGs)
//   nsh FILE [ARG...]        runs the commands in FILE
//
// With NODEOS_CONSOLE=pipe (nodeos.shell=nsh on a piped console, or .nsh in the REPL then) it
// reads stdin the non-interactive way even from a terminal. As PID 1 (nodeos.shell=nsh) it
// keeps the control-pipe contract of repl.js (../control.js).

const fs = require('fs');
const path = require('path');
const tty = require('tty');

const { pipeMode, ready } = require(path.join(__dirname, '..', 'control.js')).setup();
const { Shell, writeFd } = require('./exec.js');

const USAGE = 'usage: nsh [-c COMMAND [ARG0 [ARG...]]] [FILE [ARG...]]\n';

async function main(argv) {
  if (argv[0] === '-h' || argv[0] === '--help') {
    writeFd(1, USAGE);
    return 0;
  }
  if (argv[0] === '-c') {
    if (argv.length < 2) {
      writeFd(2, 'nsh: -c: option requires an argument\n');
      return 2;
    }
    const sh = newShell({ arg0: argv[2] ?? 'nsh', params: argv.slice(3) });
    return sh.runText(argv[1]);
  }
  if (argv[0] === '-s') argv = argv.slice(1);
  else if (argv.length > 0 && argv[0] !== '-') {
    let text;
    try {
      text = fs.readFileSync(argv[0], 'utf8');
    } catch (err) {
      writeFd(2, `nsh: ${argv[0]}: ${require('./lookup.js').errorText(err)}\n`);
      return 127;
    }
    const sh = newShell({ arg0: argv[0], params: argv.slice(1) });
    return sh.runText(text.replace(/^#!.*\n/, '\n'));
  }
  const interactive = !pipeMode && tty.isatty(0);
  const sh = newShell({ arg0: 'nsh', params: argv.filter((a) => a !== '-'), interactive });
  if (interactive) return require('./editor.js').interactive(sh, ready);
  ready();
  return readStdin(sh);
}

function newShell(options) {
  const sh = new Shell({ env: process.env, ...options });
  installSigint(sh);
  return sh;
}

/** Ctrl-C: the running command's. Between commands it ends a non-interactive shell. */
function installSigint(sh) {
  process.on('SIGINT', () => {
    if (sh.running > 0) {
      sh.interrupted = true;
      return;
    }
    if (!sh.interactive) process.exit(130);
  });
  if (sh.interactive) process.on('SIGQUIT', () => {});
}

/**
 * Commands from stdin, read without reading ahead (a line at a time from a terminal, a byte
 * at a time from a pipe), so that the commands run can read the rest of the input.
 */
async function readStdin(sh) {
  const reader = new LineReader(0);
  let pending = '';
  for (;;) {
    const line = reader.next();
    if (line === null) {
      if (pending) {
        writeFd(2, 'nsh: syntax error: unexpected end of input\n');
        return 2;
      }
      return sh.status;
    }
    const text = pending ? `${pending}\n${line}` : line;
    const { list, more } = sh.parseInput(text, { lines: true });
    pending = more ? text : '';
    if (!list) continue;
    await sh.run(list);
    if (sh.exitRequest !== null) return sh.exitRequest;
  }
}

class LineReader {
  constructor(fd) {
    this.fd = fd;
    this.chunk = tty.isatty(fd) ? 4096 : 1;
    this.buffer = Buffer.alloc(0);
    this.eof = false;
  }

  /** The next line without its newline, or null at end of input. */
  next() {
    for (;;) {
      const nl = this.buffer.indexOf(10);
      if (nl >= 0) {
        const line = this.buffer.subarray(0, nl).toString('utf8');
        this.buffer = this.buffer.subarray(nl + 1);
        return line;
      }
      if (this.eof) {
        if (this.buffer.length === 0) return null;
        const line = this.buffer.toString('utf8');
        this.buffer = Buffer.alloc(0);
        return line;
      }
      const buf = Buffer.alloc(this.chunk);
      let n;
      try {
        n = fs.readSync(this.fd, buf, 0, buf.length, null);
      } catch (err) {
        if (err.code === 'EAGAIN' || err.code === 'EINTR') {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
          continue;
        }
        if (err.code === 'EOF' || err.code === 'EIO' || err.code === 'EBADF') n = 0;
        else throw err;
      }
      if (n === 0) this.eof = true;
      else this.buffer = Buffer.concat([this.buffer, buf.subarray(0, n)]);
    }
  }
}

main(process.argv.slice(2)).then(
  (status) => process.exit(status & 255),
  (err) => {
    writeFd(2, `nsh: internal error: ${err && err.stack ? err.stack : err}\n`);
    process.exit(70);
  },
);
