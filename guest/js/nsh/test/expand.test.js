'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { parse } = require('../parse.js');
const { expandWord, ExpansionError } = require('../expand.js');

function context(vars, extra = {}) {
  const map = new Map(Object.entries(vars));
  return {
    get: (n) => map.get(n),
    set: (n, v) => map.set(n, v),
    params: [],
    arg0: 'nsh',
    status: 0,
    pid: 42,
    cwd: process.cwd(),
    map,
    ...extra,
  };
}

/** The argv of `src`'s first command, expanded. */
function argv(src, ctx) {
  return parse(src)[0][0].pipeline.commands[0].words.flatMap((w) => expandWord(w, ctx));
}

test('variables, splitting and quotes', () => {
  const ctx = context({ X: 'a  b', E: '', HOME: '/home/node', S: ' lead trail ' });
  assert.deepEqual(argv('echo $X "$X" ${X}c $E "$E" $UNSET', ctx), ['echo', 'a', 'b', 'a  b', 'a', 'bc', '']);
  assert.deepEqual(argv('echo x$S"y"', ctx), ['echo', 'x', 'lead', 'trail', 'y']);
  assert.deepEqual(argv("echo '$X' \\$X", ctx), ['echo', '$X', '$X']);
  assert.deepEqual(argv('echo ~ ~/d a~ "~" ~x', ctx), ['echo', '/home/node', '/home/node/d', 'a~', '~', '~x']);
});

test('special parameters', () => {
  const ctx = context({}, { status: 3, params: ['p 1', 'p2'], arg0: 'script' });
  assert.deepEqual(argv('echo $? $$ $0 $# "$1" $2 $3', ctx), ['echo', '3', '42', 'script', '2', 'p 1', 'p2']);
  assert.deepEqual(argv('echo "$@"', ctx), ['echo', 'p 1', 'p2']);
  assert.deepEqual(argv('echo $@', ctx), ['echo', 'p', '1', 'p2']);
  assert.deepEqual(argv('echo "<$@>"', ctx), ['echo', '<p 1', 'p2>']);
  assert.deepEqual(argv('echo "$*"', ctx), ['echo', 'p 1 p2']);
  assert.deepEqual(argv('echo "$@"', context({})), ['echo']);
});

test('defaults and alternatives', () => {
  const ctx = context({ SET: 'v', EMPTY: '' });
  assert.deepEqual(argv('echo ${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${NO-d e} "${NO:-d e}"', ctx),
    ['echo', 'v', 'd', 'd', 'e', 'd e']);
  assert.deepEqual(argv('echo ${SET:+alt} ${EMPTY:+alt} ${EMPTY+alt}', ctx), ['echo', 'alt', 'alt']);
  assert.deepEqual(argv('echo ${NEW:=made} $NEW', ctx), ['echo', 'made', 'made']);
  assert.equal(ctx.map.get('NEW'), 'made');
  assert.throws(() => argv('echo ${NO:?missing here}', ctx), (e) => e instanceof ExpansionError && e.message === 'NO: missing here');
  assert.throws(() => argv('echo ${NO?}', ctx), /NO: parameter null or not set/);
});

test('globbing', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nsh-expand-'));
  try {
    for (const f of ['a.js', 'b.js', 'c.txt', '.hidden.js', 'sub/x.js', 'sub/y.md']) {
      fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
      fs.writeFileSync(path.join(dir, f), '');
    }
    const ctx = context({ P: '*.txt' }, { cwd: dir });
    assert.deepEqual(argv('echo *.js', ctx), ['echo', 'a.js', 'b.js']);
    assert.deepEqual(argv('echo "*.js" \'*\'.js \\*.js', ctx), ['echo', '*.js', '*.js', '*.js']);
    assert.deepEqual(argv('echo .*.js ?.txt [ab].js [!a].js', ctx), ['echo', '.hidden.js', 'c.txt', 'a.js', 'b.js', 'b.js']);
    assert.deepEqual(argv('echo */*.js sub/* */', ctx), ['echo', 'sub/x.js', 'sub/x.js', 'sub/y.md', 'sub/']);
    assert.deepEqual(argv('echo *.none', ctx), ['echo', '*.none']);
    assert.deepEqual(argv('echo $P "$P"', ctx), ['echo', 'c.txt', '*.txt']);
    assert.deepEqual(argv(`echo ${dir}/s*/*.md`, ctx), ['echo', `${dir}/sub/y.md`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
