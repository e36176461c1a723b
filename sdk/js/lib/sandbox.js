'use strict';
// Sandboxes: a microVM of their own each, with commands (NDJSON-streamed output) and files.

const { clientOf, readBytes, readText } = require('./client');
const { ndjson } = require('./ndjson');
const {
  CommandExitError,
  ConnectionError,
  InvalidArgumentError,
  NotFoundError,
  NodeosVmError,
} = require('./errors');

/** The create request's fields (docs/openapi.yaml, POST /sandboxes). */
const CREATE_FIELDS = ['memoryMib', 'cpus', 'user', 'net', 'timeoutMs', 'idleTimeoutMs', 'env'];
/** Most bytes the server takes in one stdin request. */
const STDIN_CHUNK_BYTES = 1 << 20;

/** How long a command whose stdin was refused may take to report its end. */
const END_WAIT_MS = 2000;

const encoder = new TextEncoder();

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms).unref?.());

/** `data` as bytes: a string is UTF-8. */
function toBytes(data, what) {
  if (typeof data === 'string') return encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new InvalidArgumentError(`${what}: give a string or a Uint8Array`);
}

function fromBase64(text) {
  if (typeof Buffer !== 'undefined') return Buffer.from(text, 'base64');
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const enc = encodeURIComponent;

/** A microVM of its own, created by `Sandbox.create` (or found again by `Sandbox.connect`). */
class Sandbox {
  /**
   * @param {import('./client').Client} client
   * @param {import('../index').SandboxInfo} info
   */
  constructor(client, info) {
    /** The sandbox's ID, as the server gave it. */
    this.id = info.id;
    Object.defineProperty(this, 'client', { value: client, enumerable: false });
    this.commands = new Commands(this);
    this.files = new Files(this);
  }

  /** The same as `id` (E2B's name). */
  get sandboxId() {
    return this.id;
  }

  /** `/sandboxes/{id}` */
  get path() {
    return `/sandboxes/${enc(this.id)}`;
  }

  /**
   * Creates a sandbox and waits until it takes commands.
   * @param {import('../index').SandboxCreateOptions} [options]
   */
  static async create(options = {}) {
    const client = clientOf(options);
    const request = {};
    for (const field of CREATE_FIELDS) {
      if (options[field] !== undefined) request[field] = options[field];
    }
    const info = await client.json('POST', '/sandboxes', { json: request, signal: options.signal });
    return new Sandbox(client, info);
  }

  /**
   * The sandbox `id` (created earlier, by this program or another); NotFoundError when it is gone.
   * @param {string} id
   * @param {import('../index').CallOptions} [options]
   */
  static async connect(id, options = {}) {
    const client = clientOf(options);
    const info = await client.json('GET', `/sandboxes/${enc(id)}`, { signal: options.signal });
    return new Sandbox(client, info);
  }

  /**
   * Every sandbox of the server, oldest first.
   * @param {import('../index').CallOptions} [options]
   */
  static async list(options = {}) {
    const client = clientOf(options);
    const answer = await client.json('GET', '/sandboxes', { signal: options.signal });
    return answer.sandboxes;
  }

  /**
   * Deletes the sandbox `id`: its commands killed, its VM stopped. NotFoundError when it is gone.
   * @param {string} id
   * @param {import('../index').CallOptions} [options]
   */
  static async kill(id, options = {}) {
    const client = clientOf(options);
    await client.request('DELETE', `/sandboxes/${enc(id)}`, { signal: options.signal });
  }

  /** The sandbox's state, limits and commands (running, and the last ended). */
  async info(options = {}) {
    return this.client.json('GET', this.path, { signal: options.signal });
  }

  /** Deletes it: its commands killed, its VM stopped. NotFoundError when it is gone already. */
  async kill(options = {}) {
    await this.client.request('DELETE', this.path, { signal: options.signal });
  }

  /**
   * Pauses it: its vCPUs stop, its memory and processes are kept (in the host's memory, not
   * saved to disk). Its running commands stall (their output streams stay open); new commands,
   * stdin, signals and file operations are refused with a ConflictError until `resume()`. Its
   * idle limit does not count while it is paused; its lifetime does. ConflictError when it is
   * paused already.
   * @returns {Promise<import('../index').SandboxInfo>} its state, paused
   */
  async pause(options = {}) {
    return this.client.json('POST', `${this.path}/pause`, { signal: options.signal });
  }

  /**
   * Resumes it where it stopped: its stalled commands go on. ConflictError when it is not paused.
   * @returns {Promise<import('../index').SandboxInfo>} its state, running
   */
  async resume(options = {}) {
    return this.client.json('POST', `${this.path}/resume`, { signal: options.signal });
  }
}

/** `sandbox.commands`: run commands as the guest's user (uid 1000). */
class Commands {
  constructor(sandbox) {
    Object.defineProperty(this, 'sandbox', { value: sandbox, enumerable: false });
  }

  /**
   * Runs `cmd` (a shell command line, run by `sh -c`, or an argv array) and resolves with its
   * result once it ends; with `background: true`, resolves with its handle once it started.
   * @param {string | string[]} cmd
   * @param {import('../index').RunOptions} [options]
   */
  async run(cmd, options = {}) {
    const handle = await this.start(cmd, options);
    return options.background ? handle : handle.wait();
  }

  /**
   * Starts `cmd` and resolves with its handle (its ID known) without waiting for its end.
   * @param {string | string[]} cmd
   * @param {import('../index').RunOptions} [options]
   * @returns {Promise<CommandHandle>}
   */
  async start(cmd, options = {}) {
    const request = {};
    if (typeof cmd === 'string') {
      request.cmd = cmd;
    } else if (Array.isArray(cmd) && cmd.length > 0 && cmd.every((a) => typeof a === 'string')) {
      request.argv = cmd;
    } else {
      throw new InvalidArgumentError('the command: give a shell command line or a non-empty array of strings');
    }
    if (options.env !== undefined) request.env = options.env;
    if (options.cwd !== undefined) request.cwd = options.cwd;
    if (options.timeoutMs !== undefined) request.timeoutMs = options.timeoutMs;
    const input =
      options.stdin === undefined || typeof options.stdin === 'boolean'
        ? undefined
        : toBytes(options.stdin, 'stdin');
    if (options.stdin) request.stdin = true;

    // Ours to abort on disconnect(); follows the caller's signal.
    const controller = new AbortController();
    const outer = options.signal;
    let follow;
    if (outer) {
      if (outer.aborted) throw outer.reason;
      follow = () => controller.abort(outer.reason);
      outer.addEventListener('abort', follow, { once: true });
    }
    const unfollow = () => outer && outer.removeEventListener('abort', follow);
    let response;
    try {
      response = await this.sandbox.client.request('POST', `${this.sandbox.path}/exec`, {
        json: request,
        signal: controller.signal,
      });
    } catch (error) {
      unfollow();
      throw error;
    }
    const handle = new CommandHandle(this.sandbox, response.body, controller, options, unfollow);
    await handle.started;
    if (input !== undefined) {
      try {
        await handle.sendStdin(input, { eof: true });
      } catch (error) {
        // A command that ended without reading all its input is no error of the caller's (its
        // end may come just after the refusal of its input).
        await Promise.race([handle._result.catch(() => {}), delay(END_WAIT_MS)]);
        if (!handle.ended) {
          handle.disconnect();
          throw error;
        }
      }
    }
    return handle;
  }

  _execPath(id, what) {
    return `${this.sandbox.path}/execs/${enc(id)}/${what}`;
  }

  /**
   * Sends bytes (a string: UTF-8) to the stdin of command `id`, started with `stdin: true`.
   * @param {string} id
   * @param {string | Uint8Array} data
   * @param {{eof?: boolean, signal?: AbortSignal}} [options] eof: close its stdin after them
   */
  async sendStdin(id, data, options = {}) {
    const bytes = toBytes(data, 'stdin');
    let offset = 0;
    do {
      const chunk = bytes.subarray(offset, offset + STDIN_CHUNK_BYTES);
      offset += chunk.length;
      const last = offset >= bytes.length;
      await this.sandbox.client.request('POST', this._execPath(id, 'stdin'), {
        query: { eof: last && options.eof ? 'true' : undefined },
        body: chunk,
        contentType: 'application/octet-stream',
        signal: options.signal,
      });
    } while (offset < bytes.length);
  }

  /** Closes the stdin of command `id` (it reads end of file). */
  async closeStdin(id, options = {}) {
    await this.sendStdin(id, new Uint8Array(0), { ...options, eof: true });
  }

  /**
   * Sends a signal (default SIGKILL) to the process group of command `id`: true when sent,
   * false when no such command runs (any more) in the sandbox.
   * @param {string} id
   * @param {number | string} [signal] a number, or a name: 'SIGTERM', 'TERM', ...
   */
  async kill(id, signal = 'SIGKILL', options = {}) {
    try {
      await this.sandbox.client.request('POST', this._execPath(id, 'signal'), {
        json: { signal },
        signal: options.signal,
      });
      return true;
    } catch (error) {
      if (!(error instanceof NodeosVmError) || (error.status !== 404 && error.status !== 410)) throw error;
      // 404 is also the answer for a sandbox that is gone: that one is an error.
      await this.sandbox.info(options);
      return false;
    }
  }
}

/** A command that runs (or ran): its output as it comes, stdin, signals and its end. */
class CommandHandle {
  /** @internal */
  constructor(sandbox, body, controller, options, unfollow) {
    Object.defineProperty(this, 'sandbox', { value: sandbox, enumerable: false });
    /** The command's ID in its sandbox (what /stdin and /signal take). */
    this.id = undefined;
    /** Its process ID in the guest, once it started. */
    this.pid = undefined;
    /** What it wrote so far, decoded as UTF-8. */
    this.stdout = '';
    this.stderr = '';
    /** Whether its end (or the end of its stream) came. */
    this.ended = false;
    this._controller = controller;
    this._throwOnError = Boolean(options.throwOnError);
    let started;
    /** Resolves once the server gave the command's ID. */
    this.started = new Promise((resolve, reject) => {
      started = { resolve, reject };
    });
    this._result = this._pump(body, options, started).finally(() => {
      this.ended = true;
      unfollow();
    });
    // Nobody may ever wait (a background command): its failure is theirs to ask for.
    this._result.catch(() => {});
    this.started.catch(() => {});
  }

  async _pump(body, options, started) {
    const stdout = new TextDecoder();
    const stderr = new TextDecoder();
    let exit;
    const output = (text, field, callback) => {
      if (!text) return;
      this[field] += text;
      if (callback) callback(text);
    };
    try {
      for await (const event of ndjson(body, this._controller.signal)) {
        switch (event && event.type) {
          case 'exec':
            this.id = event.id;
            started.resolve(this);
            break;
          case 'started':
            this.pid = event.pid;
            break;
          case 'stdout':
            output(stdout.decode(fromBase64(event.data), { stream: true }), 'stdout', options.onStdout);
            break;
          case 'stderr':
            output(stderr.decode(fromBase64(event.data), { stream: true }), 'stderr', options.onStderr);
            break;
          case 'exit':
            exit = event;
            break;
          default:
          // An event of a later version of the API.
        }
      }
      output(stdout.decode(), 'stdout', options.onStdout);
      output(stderr.decode(), 'stderr', options.onStderr);
      if (!exit) {
        throw new ConnectionError(
          "the command's output ended without its exit status (the sandbox's VM stopped, or was deleted)",
        );
      }
    } catch (error) {
      started.reject(error);
      throw error;
    }
    started.resolve(this);
    return {
      id: this.id,
      pid: this.pid ?? null,
      exitCode: typeof exit.exitCode === 'number' ? exit.exitCode : null,
      signal: typeof exit.signal === 'number' ? exit.signal : null,
      timedOut: exit.timedOut === true,
      error: typeof exit.error === 'string' ? exit.error : null,
      stdout: this.stdout,
      stderr: this.stderr,
    };
  }

  /**
   * Resolves with the command's result once it ends (rejects with CommandExitError for one that
   * did not exit 0, when started with throwOnError).
   */
  async wait() {
    const result = await this._result;
    if (this._throwOnError && result.exitCode !== 0) throw new CommandExitError(result);
    return result;
  }

  /**
   * Sends bytes (a string: UTF-8) to its stdin; it must have been started with `stdin: true`.
   * @param {string | Uint8Array} data
   * @param {{eof?: boolean, signal?: AbortSignal}} [options] eof: close its stdin after them
   */
  sendStdin(data, options = {}) {
    return this.sandbox.commands.sendStdin(this.id, data, options);
  }

  /** Closes its stdin (it reads end of file). */
  closeStdin(options = {}) {
    return this.sandbox.commands.closeStdin(this.id, options);
  }

  /**
   * Sends a signal to its process group (default SIGKILL); true when sent, false when the
   * command had ended already.
   * @param {number | string} [signal] a number, or a name: 'SIGTERM', 'TERM', ...
   */
  async kill(signal = 'SIGKILL', options = {}) {
    if (this.ended) return false;
    return this.sandbox.commands.kill(this.id, signal, options);
  }

  /**
   * Stops reading its output: the server kills the command (SIGKILL to its process group), as
   * for any client that goes away; `wait()` then rejects with an AbortError.
   */
  disconnect() {
    this._controller.abort();
  }
}

/** `sandbox.files`: the guest's files, read and written as the guest's user (uid 1000). */
class Files {
  constructor(sandbox) {
    Object.defineProperty(this, 'sandbox', { value: sandbox, enumerable: false });
  }

  _call(method, route, path, options = {}) {
    return this.sandbox.client.request(method, `${this.sandbox.path}/${route}`, {
      query: { path },
      body: options.body,
      contentType: options.contentType,
      signal: options.signal,
    });
  }

  /**
   * Reads a file: as text (UTF-8, the default), bytes, or a stream of its bytes.
   * @param {string} path absolute
   * @param {import('../index').ReadOptions} [options]
   */
  async read(path, options = {}) {
    const format = options.format || 'text';
    if (!['text', 'bytes', 'stream'].includes(format)) {
      throw new InvalidArgumentError(`format ${JSON.stringify(format)}: give 'text', 'bytes' or 'stream'`);
    }
    const response = await this._call('GET', 'files', path, options);
    if (format === 'stream') return response.body;
    const what = `reading ${path}`;
    return format === 'bytes'
      ? readBytes(response, what, options.signal)
      : readText(response, what, options.signal);
  }

  /**
   * Writes a file (created or replaced; the folders above it made): a string as UTF-8.
   * @param {string} path absolute
   * @param {string | Uint8Array | ArrayBuffer | Blob} data
   */
  async write(path, data, options = {}) {
    const body = typeof Blob !== 'undefined' && data instanceof Blob ? data : toBytes(data, 'the data');
    await this._call('PUT', 'files', path, {
      ...options,
      body,
      contentType: 'application/octet-stream',
    });
  }

  /**
   * A folder's entries, by name.
   * @param {string} path absolute
   */
  async list(path, options = {}) {
    const response = await this._call('GET', 'dirs', path, options);
    const answer = JSON.parse(await readText(response, `listing ${path}`, options.signal));
    const prefix = path.endsWith('/') ? path : `${path}/`;
    return answer.entries.map((entry) => ({ ...entry, path: prefix + entry.name }));
  }

  /** Makes a folder and those above it (nothing when it is there). */
  async makeDir(path, options = {}) {
    await this._call('POST', 'dirs', path, options);
  }

  /** Removes a file, or a folder and all in it. */
  async remove(path, options = {}) {
    await this._call('DELETE', 'files', path, options);
  }

  /**
   * Extracts a tar archive into a folder (made when missing), as the guest's user.
   * @param {string} path absolute
   * @param {Uint8Array | ArrayBuffer | Blob} tar
   */
  async uploadTar(path, tar, options = {}) {
    const body = typeof Blob !== 'undefined' && tar instanceof Blob ? tar : toBytes(tar, 'the archive');
    await this._call('PUT', 'tar', path, { ...options, body, contentType: 'application/x-tar' });
  }

  /**
   * A tar archive of a folder's contents (or of one file).
   * @param {string} path absolute
   */
  async downloadTar(path, options = {}) {
    const response = await this._call('GET', 'tar', path, options);
    return readBytes(response, `the archive of ${path}`, options.signal);
  }
}

module.exports = { Sandbox, Commands, CommandHandle, Files, toBytes };
