'use strict';
// nsh's lexer and parser: one line (or several, with continuations) of shell text to a tree.
//
//   list      := and_or ((';' | newline) and_or)* [';']
//   and_or    := pipeline (('&&' | '||') newline* pipeline)*
//   pipeline  := ['!'] command ('|' newline* command)*
//   command   := (NAME=word)* (word | redirect)+
//   redirect  := [N] ('<' | '>' | '>>' | '>&' | '<&') word  |  ('&>' | '&>>') word
//
// A word is a list of parts: { t: 'lit', v, q } (q: quoted, so no globbing or splitting) and
// { t: 'var', name, q, op, arg } ($NAME, ${NAME}, ${NAME:-word}, $?, $$, $#, $@, $*, $0-$9).
// Input that could go on (an open quote, a trailing `\`, `|`, `&&` or `||`) throws
// IncompleteError; anything else wrong throws ShellSyntaxError.

class ShellSyntaxError extends Error {}
class IncompleteError extends ShellSyntaxError {}

const OPERATOR_CHARS = '|&;<>()';
const SPECIAL_PARAMS = '?$#@*!0123456789-';

function isNameStart(c) { return /[A-Za-z_]/.test(c); }
function isNameChar(c) { return /[A-Za-z0-9_]/.test(c); }

class Lexer {
  constructor(src) {
    this.s = src;
    this.i = 0;
  }

  peek(n = 0) { return this.s[this.i + n]; }

  /** All tokens: { type: 'word', parts } | { type: 'op', v } | { type: 'redir', fd, op }. */
  tokens() {
    const out = [];
    for (;;) {
      const c = this.peek();
      if (c === undefined) break;
      if (c === ' ' || c === '\t' || c === '\r') { this.i++; continue; }
      if (c === '\\' && this.peek(1) === '\n') { this.i += 2; continue; }
      if (c === '\n') { this.i++; out.push({ type: 'op', v: '\n' }); continue; }
      if (c === '#') { // a comment, up to the end of the line
        while (this.peek() !== undefined && this.peek() !== '\n') this.i++;
        continue;
      }
      // An IO number: digits right before < or >.
      const ioNumber = /^(\d+)(?=[<>])/.exec(this.s.slice(this.i));
      if (ioNumber) {
        this.i += ioNumber[1].length;
        out.push(this.redirection(Number(ioNumber[1])));
        continue;
      }
      if (OPERATOR_CHARS.includes(c)) {
        out.push(this.operator());
        continue;
      }
      out.push({ type: 'word', parts: this.word() });
    }
    return out;
  }

  operator() {
    const two = this.s.slice(this.i, this.i + 2);
    const three = this.s.slice(this.i, this.i + 3);
    if (three === '&>>') { this.i += 3; return { type: 'redir', fd: 1, op: '&>>' }; }
    if (two === '&>') { this.i += 2; return { type: 'redir', fd: 1, op: '&>' }; }
    if (two === '&&' || two === '||') { this.i += 2; return { type: 'op', v: two }; }
    const c = this.peek();
    if (c === '<' || c === '>') return this.redirection(null);
    if (c === '|' || c === ';') {
      if (two === ';;') throw new ShellSyntaxError("unexpected token ';;'");
      this.i++;
      return { type: 'op', v: c };
    }
    if (c === '&') throw new ShellSyntaxError('background jobs (&) are not supported');
    throw new ShellSyntaxError(`subshells and groups ('${c}') are not supported`);
  }

  redirection(fd) {
    const rest = this.s.slice(this.i, this.i + 2);
    let op;
    if (rest === '>>' || rest === '>&' || rest === '<&') op = rest;
    else if (rest === '<<') throw new ShellSyntaxError('here-documents (<<) are not supported');
    else if (rest === '<>') throw new ShellSyntaxError("'<>' is not supported");
    else if (rest === '>|') op = '>';
    else op = rest[0];
    this.i += rest === '>|' ? 2 : op.length;
    return { type: 'redir', fd: fd ?? (op[0] === '<' ? 0 : 1), op };
  }

  /** One word, up to an unquoted blank or operator. */
  word() {
    const parts = [];
    const lit = literals(parts);
    for (;;) {
      const c = this.peek();
      if (c === undefined || c === ' ' || c === '\t' || c === '\n' || c === '\r' ||
          OPERATOR_CHARS.includes(c)) break;
      this.part(c, parts, lit, false);
    }
    return parts;
  }

  /** After an opening `"`: up to the closing one. An empty "" still leaves a (quoted) part. */
  doubleQuoted(parts, lit) {
    lit('', true);
    for (;;) {
      const c = this.peek();
      if (c === undefined) throw new IncompleteError('unexpected end of input: unmatched "');
      if (c === '"') { this.i++; return; }
      if (c === '\\') {
        const next = this.peek(1);
        if (next === undefined) throw new IncompleteError('unexpected end of input: unmatched "');
        this.i += 2;
        if (next === '\n') continue;
        lit('$`"\\'.includes(next) ? next : `\\${next}`, true);
      } else if (c === '$') {
        const part = this.dollar(true);
        if (part) parts.push(part); else lit('$', true);
      } else if (c === '`') {
        throw new ShellSyntaxError('command substitution (`...`) is not supported');
      } else {
        lit(c, true);
        this.i++;
      }
    }
  }

  /** At a `$`: a parameter part, or null when the `$` is a plain character. */
  dollar(q) {
    const next = this.peek(1);
    if (next === '(') throw new ShellSyntaxError('command substitution $(...) is not supported');
    if (next === '{') {
      const start = this.i;
      this.i += 2;
      let name = '';
      if (this.peek() !== undefined && SPECIAL_PARAMS.includes(this.peek()) && this.peek() !== '-') {
        name = this.peek();
        this.i++;
      } else {
        while (this.peek() !== undefined && isNameChar(this.peek())) name += this.s[this.i++];
      }
      if (this.peek() === undefined) throw new IncompleteError('unexpected end of input: unmatched ${');
      if (!name) throw new ShellSyntaxError(`bad substitution: ${this.s.slice(start, this.s.indexOf('}', start) + 1 || undefined)}`);
      if (this.peek() === '}') { this.i++; return { t: 'var', name, q }; }
      const op = /^(:?[-+=?])/.exec(this.s.slice(this.i));
      if (!op) throw new ShellSyntaxError(`bad substitution: \${${name}${this.peek()}...}`);
      this.i += op[1].length;
      const arg = this.braceWord(q);
      return { t: 'var', name, q, op: op[1], arg };
    }
    if (next !== undefined && SPECIAL_PARAMS.includes(next) && next !== '-') {
      this.i += 2;
      return { t: 'var', name: next, q };
    }
    if (next !== undefined && isNameStart(next)) {
      this.i++;
      let name = '';
      while (this.peek() !== undefined && isNameChar(this.peek())) name += this.s[this.i++];
      return { t: 'var', name, q };
    }
    this.i++;
    return null;
  }

  /** The word of ${NAME:-word}, up to the closing brace. */
  braceWord(q) {
    const parts = [];
    const lit = literals(parts);
    for (;;) {
      const c = this.peek();
      if (c === undefined) throw new IncompleteError('unexpected end of input: unmatched ${');
      if (c === '}') { this.i++; return parts; }
      this.part(c, parts, lit, q);
    }
  }

  /**
   * Takes what starts at `c` into `parts`: an escape, a quoted string, a `$` expansion, or one
   * plain character. `q`: inside double quotes (a `${...}` word there), where `'` is plain.
   */
  part(c, parts, lit, q) {
    if (c === '\\') {
      const next = this.peek(1);
      if (next === undefined) throw new IncompleteError('unexpected end of input after \\');
      this.i += 2;
      if (next !== '\n') lit(next, true); // backslash-newline: the line goes on
    } else if (c === "'" && !q) {
      const end = this.s.indexOf("'", this.i + 1);
      if (end < 0) throw new IncompleteError("unexpected end of input: unmatched '");
      lit(this.s.slice(this.i + 1, end), true);
      this.i = end + 1;
    } else if (c === '"') {
      this.i++;
      this.doubleQuoted(parts, lit);
    } else if (c === '$') {
      const part = this.dollar(q);
      if (part) parts.push(part); else lit('$', q);
    } else if (c === '`') {
      throw new ShellSyntaxError('command substitution (`...`) is not supported');
    } else {
      lit(c, q);
      this.i++;
    }
  }
}

/** Adds literal text to `parts`, joined to the last part when it is literal and quoted alike. */
function literals(parts) {
  return (v, q) => {
    const last = parts[parts.length - 1];
    if (last && last.t === 'lit' && last.q === q) last.v += v;
    else parts.push({ t: 'lit', v, q });
  };
}

/** The text of a word that is all unquoted literal (for `!` and assignments), else null. */
function plainText(parts) {
  return parts.length === 1 && parts[0].t === 'lit' && !parts[0].q ? parts[0].v : null;
}

/** `NAME=...` at the start of a word: { name, value parts }, else null. */
function assignment(parts) {
  const first = parts[0];
  if (!first || first.t !== 'lit' || first.q) return null;
  const m = /^([A-Za-z_][A-Za-z0-9_]*)=/.exec(first.v);
  if (!m) return null;
  const rest = first.v.slice(m[0].length);
  const value = rest ? [{ ...first, v: rest }, ...parts.slice(1)] : parts.slice(1);
  return { name: m[1], value };
}

function describe(token) {
  if (!token) return 'end of input';
  if (token.type === 'op') return token.v === '\n' ? "'newline'" : `'${token.v}'`;
  if (token.type === 'redir') return `'${token.op}'`;
  return 'word';
}

/** Parses shell text. Returns a list of and-or lists: [[{ op, pipeline }, ...], ...]. */
function parse(src) {
  const tokens = new Lexer(src).tokens();
  let i = 0;
  const peek = () => tokens[i];
  const isOp = (v) => peek() && peek().type === 'op' && peek().v === v;
  const skipNewlines = () => { while (isOp('\n')) i++; };

  function command() {
    const cmd = { assigns: [], words: [], redirects: [] };
    for (;;) {
      const t = peek();
      if (!t || t.type === 'op') break;
      i++;
      if (t.type === 'redir') {
        const target = peek();
        if (!target || target.type !== 'word') {
          if (!target || (target.type === 'op' && target.v === '\n')) {
            throw new ShellSyntaxError(`unexpected ${describe(target)} after '${t.op}'`);
          }
          throw new ShellSyntaxError(`unexpected token ${describe(target)} after '${t.op}'`);
        }
        i++;
        cmd.redirects.push({ fd: t.fd, op: t.op, target: target.parts });
        continue;
      }
      const assign = cmd.words.length === 0 ? assignment(t.parts) : null;
      if (assign) cmd.assigns.push(assign);
      else cmd.words.push(t.parts);
    }
    return cmd;
  }

  function pipeline() {
    let negate = false;
    while (peek() && peek().type === 'word' && plainText(peek().parts) === '!') {
      negate = !negate;
      i++;
    }
    const commands = [];
    for (;;) {
      const cmd = command();
      if (!cmd.words.length && !cmd.assigns.length && !cmd.redirects.length) {
        const t = peek();
        if (!t && (commands.length || negate)) throw new IncompleteError('unexpected end of input');
        throw new ShellSyntaxError(`unexpected token ${describe(t)}`);
      }
      commands.push(cmd);
      if (!isOp('|')) break;
      i++;
      skipNewlines();
      if (!peek()) throw new IncompleteError("unexpected end of input after '|'");
    }
    return { negate, commands };
  }

  function andOr() {
    const items = [{ op: null, pipeline: pipeline() }];
    while (isOp('&&') || isOp('||')) {
      const op = peek().v;
      i++;
      skipNewlines();
      if (!peek()) throw new IncompleteError(`unexpected end of input after '${op}'`);
      items.push({ op, pipeline: pipeline() });
    }
    return items;
  }

  const list = [];
  for (;;) {
    while (isOp('\n')) i++;
    if (!peek()) break;
    if (isOp(';')) throw new ShellSyntaxError("unexpected token ';'");
    list.push(andOr());
    if (!peek()) break;
    if (isOp(';') || isOp('\n')) { i++; continue; }
    throw new ShellSyntaxError(`unexpected token ${describe(peek())}`);
  }
  return list;
}

module.exports = { parse, Lexer, ShellSyntaxError, IncompleteError };
