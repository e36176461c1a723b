'use strict';
// Routes every child process of PID 1 (the REPL) through the spawn shim, so that the command
// runs under the supervisor, a child subreaper that reaps orphans. Node as PID 1 reaps only the
// children it started itself; without this, processes orphaned by its children would stay
// zombies for ever. See guest/src/spawn.rs for what the shim does and how it differs from a
// plain spawn.
//
// Loaded by repl.js in PID 1 only (not through NODE_OPTIONS or --require, which children would
// inherit through the environment or process.execArgv).
//
// Two places cover every child_process API:
// - ChildProcess.prototype.spawn(options): spawn, exec, execFile and fork (options.file,
//   options.args with args[0] = argv0).
// - process.binding('spawn_sync').spawn(options): spawnSync, execSync, execFileSync; Node's
//   lib/internal/child_process.js calls this binding object's `spawn` property at each call.

const SHIM = process.env.NODEOS_SPAWN_SHIM || '/sbin/nodeos-init';
const SHIM_ARGV0 = 'nodeos-spawn';

function shimArgs(file, args) {
  const argv = Array.isArray(args) && args.length > 0 ? args : [file];
  return [SHIM_ARGV0, '--argv0', String(argv[0]), '--', file, ...argv.slice(1)];
}

function isShim(file, args) {
  return file === SHIM && Array.isArray(args) && args[0] === SHIM_ARGV0;
}

const { ChildProcess } = require('child_process');
const originalSpawn = ChildProcess.prototype.spawn;
ChildProcess.prototype.spawn = function spawn(options) {
  if (options === null || typeof options !== 'object' || typeof options.file !== 'string' ||
      isShim(options.file, options.args)) {
    return originalSpawn.call(this, options);
  }
  const { file, args } = options;
  options.file = SHIM;
  options.args = shimArgs(file, args);
  try {
    return originalSpawn.call(this, options);
  } finally {
    // Callers (and error messages, emitted later) see what they asked for.
    options.file = file;
    options.args = args;
    this.spawnfile = file;
    this.spawnargs = args === undefined ? [] : args;
  }
};

try {
  const spawnSync = process.binding('spawn_sync');
  const originalSync = spawnSync.spawn;
  if (typeof originalSync === 'function') {
    spawnSync.spawn = function spawn(options) {
      if (options === null || typeof options !== 'object' || typeof options.file !== 'string' ||
          isShim(options.file, options.args)) {
        return originalSync.call(this, options);
      }
      return originalSync.call(this, { ...options, file: SHIM, args: shimArgs(options.file, options.args) });
    };
  }
} catch {
  // No process.binding (a future Node): sync spawns then run without the shim.
}
