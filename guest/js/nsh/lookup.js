'use strict';
// Finding commands: PATH search with the shell's answers for what cannot run, and the list of
// command names for completion.

const fs = require('fs');
const path = require('path');

/** Error texts for the errno codes a shell user meets. */
const MESSAGES = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  EEXIST: 'File exists',
  ENOEXEC: 'Exec format error',
  ELOOP: 'Too many levels of symbolic links',
  ENAMETOOLONG: 'File name too long',
  EROFS: 'Read-only file system',
  ENOSPC: 'No space left on device',
  EMFILE: 'Too many open files',
  E2BIG: 'Argument list too long',
  ETXTBSY: 'Text file busy',
  EBADF: 'Bad file descriptor',
};

function errorText(err) {
  return MESSAGES[err && err.code] || (err && err.message) || String(err);
}

function isExecutableFile(file) {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) return false;
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function pathDirs(PATH) {
  return (PATH ?? '').split(':').map((d) => d || '.');
}

/**
 * Resolves a command name: { file } to run, or { status, message } (127 not found, 126 cannot
 * run) with the shell's error text (without the `nsh: ` prefix).
 */
function resolve(name, PATH, cwd) {
  if (name.includes('/')) {
    const file = path.resolve(cwd, name);
    let st;
    try {
      st = fs.statSync(file);
    } catch (err) {
      return { status: err.code === 'ENOENT' || err.code === 'ENOTDIR' ? 127 : 126, message: `${name}: ${errorText(err)}` };
    }
    if (st.isDirectory()) return { status: 126, message: `${name}: Is a directory` };
    try {
      fs.accessSync(file, fs.constants.X_OK);
    } catch (err) {
      return { status: 126, message: `${name}: ${errorText(err)}` };
    }
    return { file };
  }
  if (name === '') return { status: 127, message: ': command not found' };
  let denied = null;
  for (const dir of pathDirs(PATH)) {
    const file = path.resolve(cwd, dir, name);
    let st;
    try {
      st = fs.statSync(file);
    } catch {
      continue;
    }
    if (!st.isFile()) continue;
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return { file };
    } catch (err) {
      denied = denied || { status: 126, message: `${name}: ${errorText(err)}` };
    }
  }
  return denied || { status: 127, message: `${name}: command not found` };
}

/** Every executable name in PATH's directories (for completion), sorted, unique. */
function commandNames(PATH, cwd) {
  const names = new Set();
  for (const dir of pathDirs(PATH)) {
    const full = path.resolve(cwd, dir);
    let entries;
    try {
      entries = fs.readdirSync(full);
    } catch {
      continue;
    }
    for (const name of entries) {
      if (!names.has(name) && isExecutableFile(path.join(full, name))) names.add(name);
    }
  }
  return [...names].sort();
}

module.exports = { resolve, commandNames, errorText, isExecutableFile };
