'use strict';
// The NodeOS shell: PID 1 runs `node /usr/lib/nodeos/repl.js` as the unprivileged user.
// control.js holds what PID 1 owes the supervisor (the exit status, `ready`).
// Keep this file small: it is on the boot path.

const { pipeMode, ready } = require('./control.js').setup();

const repl = require('repl');
if (!pipeMode) {
  process.stdout.write(`Welcome to Node.js ${process.version} on NodeOS.\nType ".help" for more information.\n`);
}
const server = repl.start(pipeMode
  ? { prompt: '', terminal: false, useColors: false, useGlobal: true, ignoreUndefined: false }
  : { prompt: '> ', useGlobal: true, breakEvalOnSigint: true });
if (pipeMode) {
  // No "... " continuation prompts either: output is only what the code prints and returns.
  server.displayPrompt = function (preserveCursor) { this.prompt(preserveCursor); };
}
server.on('exit', () => process.exit());

// `.nsh`: the Node shell on this terminal; its `exit` comes back here.
server.defineCommand('nsh', {
  help: 'Start nsh, the Node shell (its exit returns to the REPL)',
  action(args) {
    const raw = process.stdin.isTTY && process.stdin.isRaw;
    this.pause();
    if (raw) process.stdin.setRawMode(false);
    // The terminal's Ctrl-C reaches us too while nsh runs: it is nsh's.
    const ignore = () => {};
    process.on('SIGINT', ignore);
    const env = { ...process.env };
    if (pipeMode) env.NODEOS_CONSOLE = 'pipe';
    const argv = args.trim() ? ['-c', args.trim()] : [];
    const child = require('child_process').spawn(process.execPath,
      [require('path').join(__dirname, 'nsh', 'nsh.js'), ...argv], { stdio: 'inherit', env });
    const back = () => {
      process.removeListener('SIGINT', ignore);
      if (raw) process.stdin.setRawMode(true);
      this.resume();
      this.displayPrompt();
    };
    child.on('error', (err) => { console.error(`nsh: ${err.message}`); back(); });
    child.on('exit', back);
  },
});

ready();
