'use strict';
// The builtins: cd, pwd, exit, export, unset, which, echo, history, true, false, `:`.
// Each is (sh, args, io) -> status, io = { out(text), err(text), inPipeline }. In a pipeline of
// more than one command they run as in a subshell: cd, exit, export and unset change nothing.

const fs = require('fs');
const path = require('path');
const { resolve, errorText } = require('./lookup.js');

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function quote(value) {
  return `"${value.replace(/["\\$`]/g, '\\$&')}"`;
}

const builtins = {
  cd(sh, args, io) {
    let target = args[0];
    let print = false;
    if (args.length > 1) { io.err('nsh: cd: too many arguments\n'); return 1; }
    if (target === undefined || target === '') {
      target = sh.vars.get('HOME');
      if (!target) { io.err('nsh: cd: HOME not set\n'); return 1; }
    } else if (target === '-') {
      target = sh.vars.get('OLDPWD');
      if (!target) { io.err('nsh: cd: OLDPWD not set\n'); return 1; }
      print = true;
    }
    const dir = path.resolve(process.cwd(), target);
    try {
      if (!fs.statSync(dir).isDirectory()) { io.err(`nsh: cd: ${target}: Not a directory\n`); return 1; }
      if (!io.inPipeline) {
        const old = process.cwd();
        process.chdir(dir);
        sh.setVar('OLDPWD', old);
        sh.setVar('PWD', process.cwd());
      } else {
        fs.accessSync(dir, fs.constants.X_OK);
      }
    } catch (err) {
      io.err(`nsh: cd: ${target}: ${errorText(err)}\n`);
      return 1;
    }
    if (print) io.out(`${io.inPipeline ? dir : process.cwd()}\n`);
    return 0;
  },

  pwd(sh, args, io) {
    io.out(`${process.cwd()}\n`);
    return 0;
  },

  exit(sh, args, io) {
    let status = sh.status;
    if (args.length > 0) {
      if (!/^[+-]?\d+$/.test(args[0])) {
        io.err(`nsh: exit: ${args[0]}: numeric argument required\n`);
        status = 2;
      } else if (args.length > 1) {
        io.err('nsh: exit: too many arguments\n');
        return 1;
      } else {
        status = Number(args[0]) & 255;
      }
    }
    if (!io.inPipeline) sh.exitRequest = status;
    return status;
  },

  export(sh, args, io) {
    const names = args.filter((a) => a !== '-p');
    if (names.length === 0) {
      for (const name of [...sh.exported].sort()) {
        if (sh.vars.has(name)) io.out(`export ${name}=${quote(sh.vars.get(name))}\n`);
      }
      return 0;
    }
    let status = 0;
    for (const arg of names) {
      const eq = arg.indexOf('=');
      const name = eq < 0 ? arg : arg.slice(0, eq);
      if (!NAME.test(name)) {
        io.err(`nsh: export: '${arg}': not a valid identifier\n`);
        status = 1;
        continue;
      }
      if (io.inPipeline) continue;
      if (eq >= 0) sh.setVar(name, arg.slice(eq + 1));
      sh.exported.add(name);
    }
    return status;
  },

  unset(sh, args, io) {
    let status = 0;
    for (const name of args.filter((a) => a !== '-v')) {
      if (!NAME.test(name)) {
        io.err(`nsh: unset: '${name}': not a valid identifier\n`);
        status = 1;
        continue;
      }
      if (io.inPipeline) continue;
      sh.vars.delete(name);
      sh.exported.delete(name);
    }
    return status;
  },

  which(sh, args, io) {
    const all = args.includes('-a');
    const names = args.filter((a) => a !== '-a');
    let status = names.length ? 0 : 1;
    for (const name of names) {
      if (Object.hasOwn(builtins, name) && !name.includes('/')) {
        io.out(`${name}: shell builtin\n`);
        if (!all) continue;
      }
      const found = all && !name.includes('/') ? everyMatch(sh, name) : [resolve(name, sh.vars.get('PATH'), process.cwd()).file].filter(Boolean);
      if (found.length === 0 && !Object.hasOwn(builtins, name)) status = 1;
      for (const file of found) io.out(`${name.includes('/') ? name : file}\n`);
    }
    return status;
  },

  echo(sh, args, io) {
    let newline = true;
    let escapes = false;
    let i = 0;
    for (; i < args.length && /^-[neE]+$/.test(args[i]); i++) {
      for (const flag of args[i].slice(1)) {
        if (flag === 'n') newline = false;
        else if (flag === 'e') escapes = true;
        else escapes = false;
      }
    }
    let text = args.slice(i).join(' ');
    if (escapes) {
      const cut = text.indexOf('\\c');
      if (cut >= 0) { text = text.slice(0, cut); newline = false; }
      text = text.replace(/\\(0[0-7]{0,3}|x[0-9A-Fa-f]{1,2}|.)/g, (m, e) => {
        if (e[0] === '0') return String.fromCharCode(parseInt(e.slice(1) || '0', 8));
        if (e[0] === 'x') return String.fromCharCode(parseInt(e.slice(1), 16));
        return { n: '\n', t: '\t', r: '\r', a: '\x07', b: '\b', e: '\x1b', f: '\f', v: '\v', '\\': '\\' }[e] ?? m;
      });
    }
    io.out(newline ? `${text}\n` : text);
    return 0;
  },

  history(sh, args, io) {
    const lines = sh.historyLines();
    const width = String(lines.length).length;
    lines.forEach((line, k) => io.out(`${String(k + 1).padStart(width + 2)}  ${line}\n`));
    return 0;
  },

  true() { return 0; },
  false() { return 1; },
  ':'() { return 0; },
};

function everyMatch(sh, name) {
  const out = [];
  for (const dir of (sh.vars.get('PATH') ?? '').split(':')) {
    const r = resolve(name, dir || '.', process.cwd());
    if (r.file && !out.includes(r.file)) out.push(r.file);
  }
  return out;
}

module.exports = { builtins };
