'use strict';
// The interactive shell: a prompt, line editing and history (node:readline), history kept in
// ~/.nsh_history (the last HISTORY_SIZE lines), tab completion of commands (first word) and
// paths (other words).
//
// While a command runs, readline is paused (stdin is not read: the command reads the terminal)
// and the terminal is out of raw mode, so that Ctrl-C makes the terminal send SIGINT to the
// foreground process group: the command ends, the shell (which handles SIGINT) goes on.

const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { builtins } = require('./builtins.js');
const { commandNames } = require('./lookup.js');
const { writeFd } = require('./exec.js');

const HISTORY_SIZE = 1000;

function historyFile(sh) {
  return path.join(sh.vars.get('HOME') || os.homedir(), '.nsh_history');
}

/** The saved history, newest first (readline's order); trims the file when it has grown. */
function loadHistory(file) {
  let lines;
  try {
    lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim());
  } catch {
    return [];
  }
  if (lines.length > 2 * HISTORY_SIZE) {
    lines = lines.slice(-HISTORY_SIZE);
    try { fs.writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 }); } catch { /* read-only */ }
  }
  return lines.slice(-HISTORY_SIZE).reverse();
}

function saveLine(file, line) {
  try {
    fs.appendFileSync(file, `${line.replace(/\n/g, ' ')}\n`, { mode: 0o600 });
  } catch {
    // No writable home: history for this session only.
  }
}

/** `user@host:dir$ `, the home directory shown as ~. */
function prompt(sh) {
  const user = sh.vars.get('USER') || os.userInfo().username;
  let host = os.hostname();
  if (!host || host === '(none)') host = 'nodeos';
  const home = sh.vars.get('HOME');
  let dir = process.cwd();
  if (home && (dir === home || dir.startsWith(`${home}/`))) dir = `~${dir.slice(home.length)}`;
  return `${user}@${host}:${dir}$ `;
}

const SPECIAL = /([\s'"\\$`|&;<>()*?[\]#!{}])/g;

/**
 * readline's completer: [candidates, the text they replace]. `line` is the text before the
 * cursor.
 */
function complete(line, sh) {
  const word = /[^\s|&;<>()]*$/.exec(line)[0];
  const before = line.slice(0, line.length - word.length).trimEnd();
  const commandPosition = before === '' || /[|&;(]$/.test(before);
  if (commandPosition && !word.includes('/')) {
    const names = new Set([...Object.keys(builtins), ...commandNames(sh.vars.get('PATH'), process.cwd())]);
    const hits = [...names].filter((n) => n.startsWith(word)).sort();
    return [hits.length === 1 ? [`${hits[0]} `] : hits, word];
  }
  const home = sh.vars.get('HOME') || '';
  const expanded = word.startsWith('~/') ? home + word.slice(1) : word;
  const slash = expanded.lastIndexOf('/');
  const dirText = slash >= 0 ? word.slice(0, word.lastIndexOf('/') + 1) : '';
  const dir = slash >= 0 ? expanded.slice(0, slash + 1) || '/' : '.';
  const base = expanded.slice(slash + 1).replace(/\\(.)/g, '$1');
  let entries;
  try {
    entries = fs.readdirSync(path.resolve(process.cwd(), dir), { withFileTypes: true });
  } catch {
    return [[], word];
  }
  const hits = entries
    .filter((e) => e.name.startsWith(base) && (base.startsWith('.') || !e.name.startsWith('.')))
    .map((e) => {
      let isDir = e.isDirectory();
      if (e.isSymbolicLink()) {
        try { isDir = fs.statSync(path.resolve(process.cwd(), dir, e.name)).isDirectory(); } catch { /* dangling */ }
      }
      return `${dirText}${e.name.replace(SPECIAL, '\\$1')}${isDir ? '/' : ''}`;
    })
    .sort();
  if (hits.length === 1 && !hits[0].endsWith('/')) hits[0] += ' ';
  return [hits, word];
}

/** Runs the interactive shell; resolves with the exit status. */
function interactive(sh, ready) {
  return new Promise((done) => {
    const file = historyFile(sh);
    const input = process.stdin;
    const rl = readline.createInterface({
      input,
      output: process.stdout,
      terminal: true,
      history: loadHistory(file),
      historySize: HISTORY_SIZE,
      removeHistoryDuplicates: true,
      completer: (line) => complete(line, sh),
      tabSize: 4,
    });
    sh.historyLines = () => rl.history.slice().reverse();
    let pending = '';
    let closing = false;
    const showPrompt = () => {
      rl.setPrompt(pending ? '> ' : prompt(sh));
      rl.prompt();
    };
    const finish = (status) => {
      closing = true;
      rl.close();
      done(status);
    };

    rl.on('line', async (line) => {
      const text = pending ? `${pending}\n${line}` : line;
      const { list, more } = sh.parseInput(text, { lines: true });
      pending = more ? text : '';
      if (more) {
        showPrompt();
        return;
      }
      if (text.trim()) saveLine(file, text);
      if (!list || list.length === 0) {
        showPrompt();
        return;
      }
      rl.pause();
      if (input.isTTY) input.setRawMode(false);
      try {
        await sh.run(list);
      } catch (err) {
        writeFd(2, `nsh: internal error: ${err && err.stack ? err.stack : err}\n`);
        sh.status = 70;
      }
      if (sh.exitRequest !== null) {
        finish(sh.exitRequest);
        return;
      }
      if (input.isTTY) input.setRawMode(true);
      rl.resume();
      showPrompt();
    });

    rl.on('SIGINT', () => {
      // Ctrl-C at the prompt: drop the line, new prompt.
      rl.line = '';
      rl.cursor = 0;
      pending = '';
      writeFd(1, '^C\n');
      sh.status = 130;
      showPrompt();
    });

    rl.on('close', () => {
      if (closing) return;
      // Ctrl-D on an empty line.
      writeFd(1, 'exit\n');
      done(sh.status);
    });

    showPrompt();
    ready();
  });
}

module.exports = { interactive, complete, prompt, loadHistory };
