'use strict';
// nsh end to end on this host: `nsh -c`, scripts on stdin, pipes, redirections, statuses.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync, spawn } = require('child_process');

const NSH = path.join(__dirname, '..', 'nsh.js');
const NODE = process.execPath;
// Node first on PATH: the commands in these tests are node scripts, the same on every host.
const PATH = `${path.dirname(NODE)}:/usr/bin:/bin`;

let dir;
test.before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsh-run-')); });
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

function nsh(args, { input, env = {}, cwd = dir } = {}) {
  const r = spawnSync(NODE, [NSH, ...args], {
    cwd,
    input: input ?? '',
    env: { PATH, HOME: dir, ...env },
    encoding: 'utf8',
    timeout: 20000,
  });
  return { status: r.status, signal: r.signal, out: r.stdout, err: r.stderr };
}
const sh = (script, options) => nsh(['-c', script], options);

// Small node "commands".
const CAT = 'node -e "process.stdin.pipe(process.stdout)"';
const UPPER = 'node -e "process.stdin.on(\'data\', d => process.stdout.write(String(d).toUpperCase()))"';
const read = (f) => fs.readFileSync(path.join(dir, f), 'utf8');

test('pipes connect children, builtins included', () => {
  assert.deepEqual(sh(`echo hello | ${CAT} | ${UPPER}`), { status: 0, signal: null, out: 'HELLO\n', err: '' });
  const big = sh(`node -e "process.stdout.write('x'.repeat(3 << 20))" | ${CAT} | node -e "let n = 0; process.stdin.on('data', d => n += d.length).on('end', () => console.log(n))"`);
  assert.equal(big.out, `${3 << 20}\n`);
  // The status of a pipeline is its last command's; ! negates it.
  assert.equal(sh('node -e "process.exit(3)" | node -e ""; echo $?').out, '0\n');
  assert.equal(sh('node -e "" | node -e "process.exit(4)"; echo $?').out, '4\n');
  assert.equal(sh('! node -e "process.exit(4)"; echo $?; ! true; echo $?').out, '0\n1\n');
  // A builtin at the end: the command before it still ends.
  assert.equal(sh(`${CAT} | echo end`, { input: 'ignored' }).out, 'end\n');
  // Stderr into the pipe.
  assert.equal(sh(`node -e "console.error('to stderr')" 2>&1 | ${UPPER}`).out, 'TO STDERR\n');
});

test('redirections', () => {
  const r = sh(`echo one > f1; echo two >> f1; ${CAT} < f1 > f2; node -e "console.error('e')" 2> f3; ` +
    'node -e "console.log(1); console.error(2)" > f4 2>&1; node -e "console.log(1); console.error(2)" 2>&1 > f5; ' +
    'node -e "console.log(3); console.error(4)" &> f6; pwd > f7; echo err >&2');
  assert.equal(r.status, 0);
  assert.equal(read('f1'), 'one\ntwo\n');
  assert.equal(read('f2'), 'one\ntwo\n');
  assert.equal(read('f3'), 'e\n');
  assert.equal(read('f4'), '1\n2\n');
  assert.equal(read('f5'), '1\n');
  assert.equal(read('f6'), '3\n4\n');
  assert.equal(read('f7'), `${fs.realpathSync(dir)}\n`);
  assert.equal(r.out, '2\n'); // 2>&1 >f5: stderr to where stdout was
  assert.equal(r.err, 'err\n');
  const missing = sh('node -e "" < nothing-here; echo $?');
  assert.equal(missing.err, 'nsh: nothing-here: No such file or directory\n');
  assert.equal(missing.out, '1\n');
  assert.equal(sh('> "a b"; echo x > $NOPE').err, 'nsh: $NOPE: ambiguous redirect\n');
  assert.ok(fs.existsSync(path.join(dir, 'a b')));
});

test('and-or lists, lists and $?', () => {
  assert.equal(sh('true && echo a; false && echo b; false || echo c; true || echo d; false && echo e || echo f').out, 'a\nc\nf\n');
  assert.equal(sh('node -e "process.exit(7)"; echo $?; echo $?').out, '7\n0\n');
});

test('exit statuses and error messages', () => {
  let r = sh('nope; echo $?');
  assert.equal(r.err, 'nsh: nope: command not found\n');
  assert.equal(r.out, '127\n');
  fs.writeFileSync(path.join(dir, 'noexec'), '#!/bin/sh\n', { mode: 0o644 });
  r = sh('./noexec; echo $?; ./missing; echo $?; /; echo $?');
  assert.equal(r.out, '126\n127\n126\n');
  assert.equal(r.err, 'nsh: ./noexec: Permission denied\nnsh: ./missing: No such file or directory\nnsh: /: Is a directory\n');
  assert.equal(sh('node -e "process.kill(process.pid, \'SIGTERM\')"; echo $?').out, '143\n');
  assert.equal(sh('exit 5; echo no').status, 5);
  assert.equal(sh('node -e "process.exit(9)"').status, 9);
  assert.equal(sh('node -e "process.exit(9)"; exit').status, 9);
  r = sh('exit abc');
  assert.equal(r.status, 2);
  assert.equal(r.err, 'nsh: exit: abc: numeric argument required\n');
  // A syntax error: nothing runs, status 2.
  r = sh('echo ran; echo a | | b');
  assert.deepEqual([r.status, r.out, r.err], [2, '', "nsh: syntax error: unexpected token '|'\n"]);
  r = sh("echo 'open");
  assert.deepEqual([r.status, r.err], [2, "nsh: syntax error: unexpected end of input: unmatched '\n"]);
});

test('variables: export, unset, prefix assignments', () => {
  const show = 'node -e "console.log(process.env.V ?? \'unset\')"';
  assert.equal(sh(`V=local; ${show}; echo $V; export V; ${show}; export V=2; ${show}; unset V; ${show}; echo "[$V]"`).out,
    'unset\nlocal\nlocal\n2\nunset\n[]\n');
  assert.equal(sh(`V=only ${show}; ${show}`).out, 'only\nunset\n');
  assert.equal(sh('export A=1 B; export | node -e "process.stdin.pipe(process.stdout)"', { env: { B: 'b c"' } }).out
    .split('\n').filter((l) => /^export [AB]=/.test(l)).join('\n'), 'export A="1"\nexport B="b c\\""');
  assert.equal(sh('export 1x').err, "nsh: export: '1x': not a valid identifier\n");
  assert.equal(sh('echo "$1-$2-$#-$0"', {}).out, '--0-nsh\n');
  assert.equal(nsh(['-c', 'echo "$0:$1:$2:$#"', 'name', 'a b', 'c']).out, 'name:a b:c:2\n');
});

test('cd, pwd, which, echo', () => {
  fs.mkdirSync(path.join(dir, 'sub dir'), { recursive: true });
  const real = fs.realpathSync(dir);
  let r = sh('cd "sub dir" && pwd && cd .. && pwd; cd -; cd; pwd; cd /nonexistent; echo $?');
  assert.equal(r.out, `${real}/sub dir\n${real}\n${real}/sub dir\n${dir}\n1\n`);
  assert.equal(r.err, 'nsh: cd: /nonexistent: No such file or directory\n');
  // which finds commands on PATH, npm-installed bins included (npm's global bin dir on PATH).
  const bin = path.join(dir, '.npm-global', 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.writeFileSync(path.join(bin, 'hello-cli'), '#!/usr/bin/env node\nconsole.log("hi from", process.argv.slice(2).join(","))\n', { mode: 0o755 });
  r = sh('which hello-cli cd; hello-cli a "b c"; which nothing-such; echo $?', { env: { PATH: `${bin}:${PATH}` } });
  assert.equal(r.out, `${bin}/hello-cli\ncd: shell builtin\nhi from a,b c\n1\n`);
  assert.equal(sh('echo -n a; echo " b" c; echo -e "x\\ty"; echo -- -n').out, 'a b c\nx\ty\n-- -n\n');
});

test('globbing', () => {
  const g = path.join(dir, 'g');
  fs.mkdirSync(g);
  for (const f of ['b.js', 'a.js', 'c.md']) fs.writeFileSync(path.join(g, f), '');
  assert.equal(sh('echo *.js "*.js" *.none', { cwd: g }).out, 'a.js b.js *.js *.none\n');
});

test('commands from stdin: line by line, children read the rest, last status at the end', () => {
  const readLine = 'node -e "const b = Buffer.alloc(1); let s = \'\'; while (require(\'fs\').readSync(0, b) && b[0] !== 10) s += b; console.log(\'child got \' + s)"';
  let r = nsh([], { input: `echo first\n${readLine}\nfor the child\necho "two\nlines"\nnode -e "process.exit(6)"\n` });
  assert.equal(r.out, 'first\nchild got for the child\ntwo\nlines\n');
  assert.equal(r.status, 6);
  r = nsh([], { input: 'echo a | | b\necho still here\nexit 3\necho not here\n' });
  assert.deepEqual([r.status, r.out, r.err], [3, 'still here\n', "nsh: syntax error: unexpected token '|'\n"]);
  r = nsh([], { input: 'echo "unterminated\n' });
  assert.equal(r.status, 2);
  // A script file, with its arguments.
  fs.writeFileSync(path.join(dir, 'script.nsh'), '#!/usr/bin/env nsh\necho "$0" "$1"\nexit 4\n');
  r = nsh(['script.nsh', 'arg']);
  assert.deepEqual([r.status, r.out], [4, 'script.nsh arg\n']);
});

test('SIGINT stops the running command, not the shell (then a script stops too)', async () => {
  const child = spawn(NODE, [NSH, '-c', 'node -e "setInterval(() => {}, 1000); console.log(\'started\')"; echo "status $?"; echo after'], {
    cwd: dir, env: { PATH, HOME: dir }, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  });
  let out = '';
  const exited = new Promise((resolve) => child.on('close', (code) => resolve(code)));
  await new Promise((resolve) => child.stdout.on('data', (d) => { out += d; if (out.includes('started')) resolve(); }));
  process.kill(-child.pid, 'SIGINT'); // the whole group, as a terminal does
  const code = await exited;
  assert.equal(code, 130);
  assert.equal(out, 'started\n');
});
