'use strict';
// Pathname expansion: `*`, `?` and `[...]` (`[!...]` / `[^...]` negated), matched one path
// component at a time. A backslash makes the next character literal (quoted characters reach
// here escaped). Names starting with `.` match only a pattern component that starts with `.`.

const fs = require('fs');
const path = require('path');

/** Whether `pattern` has an unescaped glob character. */
function hasGlob(pattern) {
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') i++;
    else if (c === '*' || c === '?' || c === '[') return true;
  }
  return false;
}

/** Escapes the glob characters (and backslashes) of literal text. */
function escapeGlob(text) {
  return text.replace(/[\\*?[\]]/g, '\\$&');
}

function unescapeGlob(text) {
  return text.replace(/\\(.)/g, '$1');
}

/** A RegExp matching one path component against a pattern component. */
function componentRegExp(pattern) {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\' && i + 1 < pattern.length) {
      re += escapeRegExp(pattern[++i]);
    } else if (c === '*') {
      re += '.*';
    } else if (c === '?') {
      re += '.';
    } else if (c === '[') {
      const cls = bracket(pattern, i);
      if (cls) {
        re += cls.re;
        i = cls.end;
      } else {
        re += '\\[';
      }
    } else {
      re += escapeRegExp(c);
    }
  }
  return new RegExp(`^${re}$`, 's');
}

/** A bracket expression starting at pattern[start] === '[': { re, end } or null if unclosed. */
function bracket(pattern, start) {
  let i = start + 1;
  let negate = false;
  if (pattern[i] === '!' || pattern[i] === '^') { negate = true; i++; }
  let body = '';
  let first = true;
  for (; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === ']' && !first) {
      return { re: `[${negate ? '^' : ''}${body}]`, end: i };
    }
    first = false;
    if (c === '\\' && i + 1 < pattern.length) {
      body += escapeClassChar(pattern[++i]);
    } else if (c === '-' && body && pattern[i + 1] !== ']' && i + 1 < pattern.length) {
      body += '-';
    } else {
      body += escapeClassChar(c);
    }
  }
  return null;
}

function escapeRegExp(c) {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

function escapeClassChar(c) {
  return c.replace(/[\\\]^-]/g, '\\$&');
}

/** Whether `name` matches the pattern component (hidden names only by a leading `.`). */
function matchComponent(pattern, name) {
  if (name.startsWith('.') && !pattern.startsWith('.') && !pattern.startsWith('\\.')) return false;
  return componentRegExp(pattern).test(name);
}

/**
 * Expands `pattern` relative to `cwd`: the matching paths, sorted, in the pattern's form
 * (relative stays relative); [] when nothing matches.
 */
function glob(pattern, cwd = process.cwd()) {
  const absolute = pattern.startsWith('/');
  const components = pattern.split('/').filter((c, i) => c !== '' || i === 0);
  if (absolute) components.shift();
  const trailingSlash = pattern.length > 1 && pattern.endsWith('/');
  // Each candidate: [shown path, real path].
  let candidates = [[absolute ? '/' : '', absolute ? '/' : cwd]];
  for (let k = 0; k < components.length; k++) {
    const comp = components[k];
    const last = k === components.length - 1;
    const next = [];
    for (const [shown, real] of candidates) {
      const join = (name) => [shown === '' ? name : shown === '/' ? `/${name}` : `${shown}/${name}`,
        path.join(real, name)];
      if (!hasGlob(comp)) {
        const name = unescapeGlob(comp);
        const entry = join(name);
        if (!last || exists(entry[1], trailingSlash)) next.push(entry);
        continue;
      }
      let names;
      try {
        names = fs.readdirSync(real);
      } catch {
        continue;
      }
      for (const name of names.sort()) {
        if (!matchComponent(comp, name)) continue;
        const entry = join(name);
        if ((!last || trailingSlash) && !exists(entry[1], true)) continue;
        next.push(entry);
      }
    }
    candidates = next;
  }
  const results = candidates.map(([shown]) => (trailingSlash ? `${shown}/` : shown));
  return results.filter((r) => r !== '').sort(compare);
}

function exists(p, mustBeDir) {
  try {
    const st = fs.statSync(p);
    return !mustBeDir || st.isDirectory();
  } catch {
    return false;
  }
}

function compare(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

module.exports = { glob, hasGlob, escapeGlob, unescapeGlob, matchComponent };
