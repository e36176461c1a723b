'use strict';
// Running parsed commands: the shell's state (variables, exported names, $?, positional
// parameters) and the executor of lists, and-or lists, pipelines and simple commands.
//
// A pipeline's commands are started right to left, so that each command's stdout can be the
// stdin stream of the one after it: the child gets the descriptor itself (an OS socket pair
// that libuv made for the next child's stdin), and the shell closes its own copy. Redirections
// open files and hand the descriptors to the child; `N>&M` copies an entry of the table.
// Builtins run in the shell, writing to the same descriptors or streams.

const fs = require('fs');
const os = require('os');
const { spawn } = require('child_process');
const { parse, ShellSyntaxError, IncompleteError } = require('./parse.js');
const { expandWord, expandString, ExpansionError } = require('./expand.js');
const { resolve, errorText } = require('./lookup.js');
const { builtins } = require('./builtins.js');

/** Writes all of `text` to fd, waiting out EAGAIN (a non-blocking descriptor). */
function writeFd(fd, text) {
  let buf = Buffer.from(text);
  while (buf.length) {
    try {
      const n = fs.writeSync(fd, buf);
      buf = buf.subarray(n);
    } catch (err) {
      if (err.code === 'EAGAIN') {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
        continue;
      }
      if (err.code === 'EPIPE' || err.code === 'EBADF') return;
      throw err;
    }
  }
}

/** A word's text, near enough to what was typed (for error messages). */
function source(parts) {
  return parts.map((p) => (p.t === 'lit' ? p.v : p.op ? `\${${p.name}${p.op}${source(p.arg)}}` : `$${p.name}`)).join('');
}

class Shell {
  constructor({ env = process.env, params = [], arg0 = 'nsh', interactive = false } = {}) {
    this.vars = new Map(Object.entries(env).filter(([, v]) => v !== undefined));
    this.exported = new Set(this.vars.keys());
    this.params = params;
    this.arg0 = arg0;
    this.status = 0;
    this.interactive = interactive;
    /** Set by `exit`: the status to exit with. */
    this.exitRequest = null;
    /** Children running now (Ctrl-C is theirs then, not the shell's). */
    this.running = 0;
    /** Whether a SIGINT reached the shell while children ran. */
    this.interrupted = false;
    this.historyLines = () => [];
    if (!this.vars.has('PWD')) this.vars.set('PWD', process.cwd());
  }

  setVar(name, value) {
    this.vars.set(name, value);
  }

  /** What words are expanded against. */
  expansionContext() {
    const sh = this;
    return {
      get: (name) => sh.vars.get(name),
      set: (name, value) => sh.setVar(name, value),
      params: this.params,
      arg0: this.arg0,
      status: this.status,
      pid: process.pid,
      cwd: process.cwd(),
    };
  }

  childEnv(assigns) {
    const env = {};
    for (const name of this.exported) {
      if (this.vars.has(name)) env[name] = this.vars.get(name);
    }
    for (const [name, value] of assigns) env[name] = value;
    return env;
  }

  /**
   * Parses `text`. `{ list }` to run; with `lines`, `{ more: true }` when the text goes on
   * past its last line (an open quote, a trailing `&&`); a syntax error is printed
   * (`nsh: syntax error: ...`), sets `$?` to 2 and gives `{ list: null }`.
   */
  parseInput(text, { lines = false } = {}) {
    try {
      return { list: parse(text) };
    } catch (err) {
      if (lines && err instanceof IncompleteError) return { more: true };
      if (!(err instanceof ShellSyntaxError)) throw err;
      writeFd(2, `nsh: syntax error: ${err.message}\n`);
      this.status = 2;
      return { list: null };
    }
  }

  /** Parses and runs a whole script: a syntax error anywhere means nothing runs, status 2. */
  async runText(text) {
    const { list } = this.parseInput(text);
    return list ? this.run(list) : this.status;
  }

  /** Runs a parsed list; returns the last status. Stops early after `exit`. */
  async run(list) {
    for (const andOr of list) {
      for (const { op, pipeline } of andOr) {
        if (op === '&&' && this.status !== 0) continue;
        if (op === '||' && this.status === 0) continue;
        this.status = await this.runPipeline(pipeline);
        if (this.exitRequest !== null) return this.exitRequest;
        if (this.interrupted && !this.interactive && this.status === 130) {
          // Like other shells: a script whose command was stopped by Ctrl-C stops too.
          this.exitRequest = 130;
          return 130;
        }
        this.interrupted = false;
      }
    }
    return this.status;
  }

  /** Expands one simple command: { argv, assigns, redirects } or { error }. */
  expand(cmd) {
    const ctx = this.expansionContext();
    try {
      const assigns = cmd.assigns.map((a) => [a.name, expandString(a.value, ctx)]);
      const argv = cmd.words.flatMap((w) => expandWord(w, ctx));
      const redirects = cmd.redirects.map((r) => {
        if ((r.op === '>&' || r.op === '<&')) {
          const text = expandString(r.target, ctx);
          return { ...r, target: text };
        }
        const fields = expandWord(r.target, ctx, { split: false });
        if (fields.length !== 1) throw new ExpansionError(`${source(r.target)}: ambiguous redirect`);
        return { ...r, target: fields[0] };
      });
      return { argv, assigns, redirects };
    } catch (err) {
      if (!(err instanceof ExpansionError)) throw err;
      return { error: err.message };
    }
  }

  async runPipeline(pipeline) {
    const n = pipeline.commands.length;
    const expanded = pipeline.commands.map((cmd) => this.expand(cmd));
    const results = new Array(n);
    const opened = [];
    const passed = [];
    let downstream = 1;
    for (let i = n - 1; i >= 0; i--) {
      const c = expanded[i];
      const out = downstream;
      const table = [i === 0 ? 0 : 'pipe', out, 2];
      downstream = 'ignore';
      // The next command's stdin: handed to this command's child or written by the builtin;
      // otherwise closed, so that the next command sees end of input.
      if (typeof out === 'object') passed.push(out);
      if (c.error) {
        writeFd(2, `nsh: ${c.error}\n`);
        results[i] = 1;
        continue;
      }
      try {
        this.redirect(table, c.redirects, opened);
      } catch (err) {
        writeFd(2, `nsh: ${err.message}\n`);
        results[i] = 1;
        continue;
      }
      if (c.argv.length === 0) {
        if (n === 1) for (const [name, value] of c.assigns) this.setVar(name, value);
        results[i] = 0;
        continue;
      }
      const name = c.argv[0];
      if (Object.hasOwn(builtins, name)) {
        results[i] = this.runBuiltin(name, c.argv.slice(1), table, n > 1);
        if (out === table[1] || out === table[2]) passed.splice(passed.indexOf(out), 1);
        continue;
      }
      const assigned = new Map(c.assigns);
      const PATH = assigned.has('PATH') ? assigned.get('PATH') : this.vars.get('PATH');
      const found = resolve(name, PATH, process.cwd());
      if (!found.file) {
        this.writeTo(table[2], `nsh: ${found.message}\n`);
        results[i] = found.status;
        continue;
      }
      const stdio = table.map((e) => (e === undefined ? 'ignore' : e));
      let child;
      try {
        child = spawn(found.file, c.argv.slice(1), {
          argv0: name,
          env: this.childEnv(c.assigns),
          stdio,
        });
      } catch (err) {
        this.writeTo(table[2], `nsh: ${name}: ${errorText(err)}\n`);
        results[i] = 126;
        continue;
      }
      results[i] = this.wait(child, name, table[2]);
      if (table[0] === 'pipe' && child.stdin) downstream = child.stdin;
    }
    for (const fd of opened) {
      try { fs.closeSync(fd); } catch { /* already closed */ }
    }
    for (const stream of new Set(passed)) stream.destroy();
    const statuses = await Promise.all(results);
    let status = statuses[n - 1];
    if (pipeline.negate) status = status === 0 ? 1 : 0;
    return status;
  }

  /** Applies redirections to a stdio table (fd -> fd number | stream | 'pipe' | 'ignore'). */
  redirect(table, redirects, opened) {
    const open = (file, flags) => {
      let fd;
      try {
        fd = fs.openSync(file, flags, 0o666);
      } catch (err) {
        throw new Error(`${file}: ${errorText(err)}`);
      }
      opened.push(fd);
      return fd;
    };
    for (const r of redirects) {
      switch (r.op) {
        case '<': table[r.fd] = open(r.target, 'r'); break;
        case '>': table[r.fd] = open(r.target, 'w'); break;
        case '>>': table[r.fd] = open(r.target, 'a'); break;
        case '&>': table[1] = table[2] = open(r.target, 'w'); break;
        case '&>>': table[1] = table[2] = open(r.target, 'a'); break;
        case '>&':
        case '<&':
          if (r.target === '-') {
            table[r.fd] = 'ignore';
          } else if (/^\d+$/.test(r.target)) {
            const from = Number(r.target);
            if (table[from] === undefined && from > 2) throw new Error(`${from}: Bad file descriptor`);
            table[r.fd] = table[from] ?? from;
          } else if (r.op === '>&' && r.fd === 1) {
            table[1] = table[2] = open(r.target, 'w');
          } else {
            throw new Error(`${r.target}: ambiguous redirect`);
          }
          break;
        default:
          throw new Error(`unsupported redirection ${r.op}`);
      }
    }
  }

  /** Writes shell output to a stdio-table entry. */
  writeTo(target, text) {
    if (typeof target === 'number') writeFd(target, text);
    else if (target && typeof target === 'object' && !target.destroyed) target.write(text);
  }

  runBuiltin(name, args, table, inPipeline) {
    const io = {
      out: (text) => this.writeTo(table[1], text),
      err: (text) => this.writeTo(table[2], text),
      inPipeline,
    };
    let status;
    try {
      status = builtins[name](this, args, io);
    } catch (err) {
      io.err(`nsh: ${name}: ${err.message}\n`);
      status = 1;
    }
    for (const entry of new Set([table[1], table[2]])) {
      if (entry && typeof entry === 'object') {
        entry.on('error', () => {});
        entry.end();
      }
    }
    return status;
  }

  /** The status of a child: its exit code, or 128+N when signal N ended it. */
  wait(child, name, errTarget) {
    this.running++;
    return new Promise((done) => {
      let settled = false;
      const finish = (status) => {
        if (settled) return;
        settled = true;
        this.running--;
        done(status);
      };
      child.on('error', (err) => {
        if (settled) return;
        this.writeTo(typeof errTarget === 'number' ? errTarget : 2, `nsh: ${name}: ${errorText(err)}\n`);
        finish(err.code === 'ENOENT' ? 127 : 126);
      });
      child.on('exit', (code, signal) => {
        if (signal) {
          const number = os.constants.signals[signal] || 0;
          if (this.interactive && signal !== 'SIGINT' && signal !== 'SIGPIPE') {
            writeFd(2, `nsh: ${name}: killed by ${signal}\n`);
          } else if (this.interactive && signal === 'SIGINT') {
            writeFd(2, '\n');
          }
          finish(128 + number);
        } else {
          finish(code ?? 0);
        }
      });
    });
  }
}

module.exports = { Shell, writeFd };
