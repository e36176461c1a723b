'use strict';
// Word expansion, in the shell's order: tilde, parameters ($VAR, ${VAR}, ${VAR:-word}, $?,
// ...), field splitting of unquoted expansions (on blanks), pathname expansion (globbing) of
// unquoted text, quote removal.
//
// `vars` is what the words are expanded against:
//   get(name) -> string | undefined; set(name, value); params: string[] ($1...);
//   arg0 ($0); status ($?); pid ($$); cwd (for globbing).

const { glob, escapeGlob } = require('./glob.js');

class ExpansionError extends Error {}

const IFS = /[ \t\n]+/;

function lookup(name, vars) {
  switch (name) {
    case '?': return String(vars.status);
    case '$': return String(vars.pid);
    case '#': return String(vars.params.length);
    case '0': return vars.arg0;
    case '@':
    case '*': return vars.params.length ? vars.params.join(' ') : undefined;
    case '!': return undefined;
    default:
      if (/^[1-9]$/.test(name)) return vars.params[Number(name) - 1];
      return vars.get(name);
  }
}

/**
 * Expands one word to its fields. Options: split (default true), glob (default true).
 */
function expandWord(parts, vars, options = {}) {
  const split = options.split !== false;
  const globbing = options.glob !== false;
  // "$@" with no parameters is no field at all, even inside quotes.
  if (parts.some((p) => p.t === 'var' && p.name === '@' && p.q && !p.op) && vars.params.length === 0 &&
      parts.every((p) => (p.t === 'lit' && p.v === '') || (p.t === 'var' && p.name === '@'))) {
    return [];
  }
  const fields = [];
  let cur = null; // { segs: [{ text, quoted }], kept }
  const add = (text, quoted, keep = quoted) => {
    if (!cur) cur = { segs: [], kept: false };
    if (keep) cur.kept = true;
    if (text) cur.segs.push({ text, quoted });
  };
  const end = () => {
    if (cur && (cur.kept || cur.segs.length)) fields.push(cur);
    cur = null;
  };
  const addUnquoted = (value) => {
    if (!split) { add(value, false); return; }
    value.split(IFS).forEach((piece, k) => {
      if (k > 0) end();
      if (piece) add(piece, false);
    });
  };

  const walk = (list, top) => {
    list.forEach((p, idx) => {
      if (p.t === 'lit') {
        if (top && idx === 0 && !p.q && p.v.startsWith('~') &&
            (p.v === '~' ? list.length === 1 : p.v.startsWith('~/'))) {
          const home = vars.get('HOME') ?? '';
          add(home, true, false);
          add(p.v.slice(1), false);
        } else if (!top && !p.q) {
          addUnquoted(p.v); // the word of an unquoted ${X:-word} is split like its value
        } else {
          add(p.v, p.q);
        }
        return;
      }
      // A parameter.
      let value = lookup(p.name, vars);
      if (p.op) {
        const colon = p.op[0] === ':';
        const kind = p.op[p.op.length - 1];
        const missing = value === undefined || (colon && value === '');
        if (kind === '-' && missing) { walk(p.arg, false); return; }
        if (kind === '+') {
          if (!missing) walk(p.arg, false);
          return;
        }
        if (kind === '=' && missing) {
          if (!/^[A-Za-z_]\w*$/.test(p.name)) throw new ExpansionError(`$${p.name}: cannot assign in this way`);
          value = expandString(p.arg, vars);
          vars.set(p.name, value);
        }
        if (kind === '?' && missing) {
          const msg = p.arg.length ? expandString(p.arg, vars) : 'parameter null or not set';
          throw new ExpansionError(`${p.name}: ${msg}`);
        }
      }
      if (p.name === '@' && p.q) {
        vars.params.forEach((param, k) => {
          if (k > 0) end();
          add(param, true);
        });
        return;
      }
      if (value === undefined) value = '';
      if (p.q) add(value, true);
      else addUnquoted(value);
    });
  };
  walk(parts, true);
  end();

  const out = [];
  for (const field of fields) {
    const unquotedGlob = field.segs.some((s) => !s.quoted && /[*?[]/.test(s.text));
    if (globbing && unquotedGlob) {
      const pattern = field.segs.map((s) => (s.quoted ? escapeGlob(s.text) : s.text)).join('');
      const matches = glob(pattern, vars.cwd);
      if (matches.length) {
        out.push(...matches);
        continue;
      }
    }
    out.push(field.segs.map((s) => s.text).join(''));
  }
  return out;
}

/** Expands a word to one string: no splitting, no globbing (assignments, `${X:-word}`). */
function expandString(parts, vars) {
  return expandWord(parts, vars, { split: false, glob: false }).join(' ');
}

module.exports = { expandWord, expandString, ExpansionError };
