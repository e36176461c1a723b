'use strict';
// nsh on a terminal (a pseudo-terminal from util-linux `script`; skipped without it): prompt,
// tab completion, Ctrl-C for the running command only, history file, exit status.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, spawnSync } = require('child_process');

const NSH = path.join(__dirname, '..', 'nsh.js');
const hasScript = spawnSync('script', ['--version']).status === 0;

class Terminal {
  constructor(home) {
    // exec: no sh of script's between it and nsh (it would get the Ctrl-C too).
    const cmd = `exec ${JSON.stringify(process.execPath)} ${JSON.stringify(NSH)}`;
    this.child = spawn('script', ['-qfec', cmd, '/dev/null'], {
      cwd: home,
      env: { PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin`, HOME: home, USER: 'node', TERM: 'xterm' },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.seen = '';
    this.child.stdout.on('data', (d) => { this.seen += d; });
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
  }

  /** Waits until `text` shows up after what was seen before; returns the new output. */
  async waitFor(text, from = this.mark ?? 0) {
    const deadline = Date.now() + 10000;
    while (!this.seen.slice(from).includes(text)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${JSON.stringify(text)}; saw ${JSON.stringify(this.seen.slice(from))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const at = this.seen.indexOf(text, from) + text.length;
    this.mark = at;
    return this.seen.slice(from, at);
  }

  type(keys) { this.child.stdin.write(keys); }
}

test('interactive session on a terminal', { skip: !hasScript && 'no `script` here' }, async () => {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'nsh-tty-'));
  try {
    fs.mkdirSync(path.join(home, 'projects'));
    const term = new Terminal(home);
    await term.waitFor(`@${os.hostname()}:~$ `);
    term.type('echo hi there\r');
    await term.waitFor('hi there\r\n');
    await term.waitFor(':~$ ');
    // Completion: a builtin as the first word, a directory after it.
    term.type('ech\t');
    await term.waitFor('echo ');
    term.type('proj\t');
    await term.waitFor('projects/');
    term.type('\r');
    await term.waitFor('projects/\r\n');
    // Ctrl-C ends the running command; the shell goes on, $? is 130.
    term.type('node -e "setInterval(() => {}, 1000); console.log(\'run\' + \'ning\')"\r');
    await term.waitFor('running');
    term.type('\x03');
    await term.waitFor(':~$ ');
    term.type('echo "status $?"\r');
    await term.waitFor('status 130');
    await term.waitFor(':~$ ');
    // Ctrl-C at the prompt drops the line.
    term.type('echo dropped\x03');
    await term.waitFor('^C');
    await term.waitFor(':~$ ');
    term.type('cd projects; exit 3\r');
    assert.equal(await term.exited, 3, JSON.stringify(term.seen));
    const history = fs.readFileSync(path.join(home, '.nsh_history'), 'utf8');
    assert.match(history, /^echo hi there\necho projects\/\nnode -e .*\necho "status \$\?"\ncd projects; exit 3\n$/);
  } finally {
    fs.rmSync(home, { recursive: true, force: true });
  }
});
