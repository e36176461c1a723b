'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const { parse, IncompleteError, ShellSyntaxError } = require('../parse.js');

/** A word's parts as text, quotes shown as q(...), parameters as $(...). */
function show(parts) {
  return parts.map((p) => (p.t === 'lit' ? (p.q ? `q(${p.v})` : p.v)
    : `$(${p.name}${p.op ?? ''}${p.arg ? show(p.arg) : ''}${p.q ? ',q' : ''})`)).join('');
}

/** The first simple command of the first pipeline. */
function cmd(src) {
  return parse(src)[0][0].pipeline.commands[0];
}

function words(src) {
  return cmd(src).words.map(show);
}

test('words and quoting', () => {
  assert.deepEqual(words('echo  a\tb'), ['echo', 'a', 'b']);
  assert.deepEqual(words("echo 'a b' \"c d\" e\\ f"), ['echo', 'q(a b)', 'q(c d)', 'eq( )f']);
  assert.deepEqual(words("echo '$X' \"\\$X \\\\ \\a\""), ['echo', 'q($X)', 'q($X \\ \\a)']);
  assert.deepEqual(words('echo "" \'\''), ['echo', 'q()', 'q()']);
  assert.deepEqual(words('echo a"b"c'), ['echo', 'aq(b)c']);
  assert.deepEqual(words('echo a\\\nb'), ['echo', 'ab']);
  assert.deepEqual(words('echo a # a comment'), ['echo', 'a']);
  assert.deepEqual(words('echo a#b'), ['echo', 'a#b']);
});

test('parameters', () => {
  assert.deepEqual(words('echo $HOME ${X}y "$A-$?" $$ $1 $@ "$@" $'), [
    'echo', '$(HOME)', '$(X)y', 'q()$(A,q)q(-)$(?,q)', '$($)', '$(1)', '$(@)', 'q()$(@,q)', '$',
  ]);
  assert.deepEqual(words('echo ${X:-a b} "${Y-$Z}" ${W:+set}'), [
    'echo', '$(X:-a b)', 'q()$(Y-$(Z,q),q)', '$(W:+set)',
  ]);
  assert.throws(() => parse('echo $(ls)'), /command substitution/);
  assert.throws(() => parse('echo `ls`'), /command substitution/);
  assert.throws(() => parse('echo ${}'), /bad substitution/);
});

test('pipelines, and-or lists and lists', () => {
  const list = parse('a | b | c && d || e; f\ng;');
  assert.equal(list.length, 3);
  assert.deepEqual(list[0].map((x) => x.op), [null, '&&', '||']);
  assert.deepEqual(list[0][0].pipeline.commands.map((c) => show(c.words[0])), ['a', 'b', 'c']);
  assert.equal(show(list[1][0].pipeline.commands[0].words[0]), 'f');
  assert.equal(show(list[2][0].pipeline.commands[0].words[0]), 'g');
  const negated = parse('! a | b')[0][0].pipeline;
  assert.equal(negated.negate, true);
  assert.equal(negated.commands.length, 2);
  assert.deepEqual(parse('a &&\n b')[0].map((x) => x.op), [null, '&&']);
  assert.deepEqual(parse(''), []);
  assert.deepEqual(parse('  # only a comment'), []);
});

test('redirections', () => {
  const c = cmd('cmd <in >out 2>err >>app 2>&1 &>both 3>x >&2 a2>b');
  assert.deepEqual(c.redirects.map((r) => [r.fd, r.op, show(r.target)]), [
    [0, '<', 'in'], [1, '>', 'out'], [2, '>', 'err'], [1, '>>', 'app'], [2, '>&', '1'],
    [1, '&>', 'both'], [3, '>', 'x'], [1, '>&', '2'], [1, '>', 'b'],
  ]);
  assert.deepEqual(c.words.map(show), ['cmd', 'a2']);
  assert.deepEqual(cmd('>f').redirects.map((r) => r.op), ['>']);
});

test('assignments', () => {
  const c = cmd('A=1 B="x y" cmd C=2');
  assert.deepEqual(c.assigns.map((a) => [a.name, show(a.value)]), [['A', '1'], ['B', 'q(x y)']]);
  assert.deepEqual(c.words.map(show), ['cmd', 'C=2']);
  assert.deepEqual(cmd('X=').assigns.map((a) => [a.name, show(a.value)]), [['X', '']]);
  assert.deepEqual(cmd('1X=a').words.map(show), ['1X=a']);
});

test('incomplete input asks for more', () => {
  for (const src of ["echo 'a", 'echo "a', 'echo a\\', 'a |', 'a &&', 'a ||', 'echo ${X', '! ']) {
    assert.throws(() => parse(src), IncompleteError, src);
  }
  assert.equal(words("echo 'a\nb'")[1], 'q(a\nb)');
});

test('syntax errors', () => {
  for (const [src, re] of [
    ['| a', /unexpected token '\|'/],
    ['a ;; b', /';;'/],
    ['; a', /unexpected token ';'/],
    ['a && || b', /unexpected token '\|\|'/],
    ['a >', /after '>'/],
    ['a > | b', /unexpected token '\|' after '>'/],
    ['a &', /background jobs/],
    ['(a)', /not supported/],
    ['cat <<EOF', /here-documents/],
  ]) {
    assert.throws(() => parse(src), (err) => err instanceof ShellSyntaxError && !(err instanceof IncompleteError) && re.test(err.message), src);
  }
});
