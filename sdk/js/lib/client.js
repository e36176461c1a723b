'use strict';
// The connection to a serve: its two listeners, the admin token, and the one place requests go
// through (errors mapped to the classes of ./errors).

const {
  errorFor,
  ConnectionError,
  InvalidArgumentError,
  NodeosVmError,
} = require('./errors');

/** serve's default admin address (`--listen`). */
const DEFAULT_URL = 'http://127.0.0.1:8080';
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]']);

function env(name) {
  const value = typeof process !== 'undefined' && process.env ? process.env[name] : undefined;
  return value || undefined;
}

/** `url` checked, without its trailing slashes. */
function baseUrl(url, what) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidArgumentError(`${what} ${JSON.stringify(url)} is not a URL`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new InvalidArgumentError(`${what} ${JSON.stringify(url)}: give an http:// or https:// URL`);
  }
  if (parsed.search || parsed.hash) {
    throw new InvalidArgumentError(`${what} ${JSON.stringify(url)}: no query or fragment`);
  }
  return parsed.href.replace(/\/+$/, '');
}

/** serve's default apps' listener: the admin listener's port plus one. */
function nextPort(url) {
  const parsed = new URL(url);
  const port = Number(parsed.port || (parsed.protocol === 'https:' ? 443 : 80));
  parsed.port = String(port + 1);
  return parsed.href.replace(/\/+$/, '');
}

/**
 * The token serve saved in its data folder, for a server on this machine's loopback:
 * `${NODEOS_VM_DATA:-${XDG_DATA_HOME:-~/.local/share}/nodeos-vm}/serve-token`.
 */
function savedToken(url) {
  if (!LOOPBACK.has(new URL(url).hostname)) return undefined;
  try {
    const fs = require('node:fs');
    const path = require('node:path');
    const os = require('node:os');
    const xdg = env('XDG_DATA_HOME');
    const data =
      env('NODEOS_VM_DATA') ||
      path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), '.local/share'), 'nodeos-vm');
    return fs.readFileSync(path.join(data, 'serve-token'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function isBytes(value) {
  return value instanceof Uint8Array || value instanceof ArrayBuffer;
}

/** What went wrong in a fetch that got no answer, in one line. */
function reason(error) {
  const cause = error && error.cause;
  if (cause && cause.message) return cause.code ? `${cause.code}: ${cause.message}` : cause.message;
  return (error && error.message) || String(error);
}

/** A connection to one `nodeos-vm serve`: its admin API (with the token) and its apps' listener. */
class Client {
  #token;
  #tokenRead = false;

  /** @param {import('../index').ClientOptions} [options] */
  constructor(options = {}) {
    /** The admin API's URL (`--listen`). */
    this.url = baseUrl(options.url || env('NODEOS_VM_URL') || DEFAULT_URL, 'url');
    /** The apps' listener's URL (`--apps-listen`; by default the admin port plus one). */
    this.appsUrl = baseUrl(options.appsUrl || env('NODEOS_VM_APPS_URL') || nextPort(this.url), 'appsUrl');
    this.#token = options.token || env('NODEOS_VM_TOKEN');
    this.#tokenRead = Boolean(this.#token);
    /** @type {typeof fetch} */
    this.fetch = options.fetch || globalThis.fetch;
    if (typeof this.fetch !== 'function') {
      throw new NodeosVmError('no fetch function: use Node.js 18 or later, or give options.fetch');
    }
  }

  #bearer() {
    if (!this.#tokenRead) {
      this.#token = savedToken(this.url);
      this.#tokenRead = true;
    }
    return this.#token;
  }

  /**
   * One request; the response when it is a success, else the error for it.
   * @param {string} method
   * @param {string} path from the listener's root, its parts already encoded
   * @param {{to?: 'admin'|'apps', query?: Record<string, unknown>, body?: any, json?: unknown,
   *   contentType?: string, signal?: AbortSignal, headers?: Record<string, string>}} [options]
   * @returns {Promise<Response>}
   */
  async request(method, path, options = {}) {
    const { to = 'admin', query, signal } = options;
    let url = (to === 'apps' ? this.appsUrl : this.url) + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(query)) {
        if (value !== undefined && value !== null) params.set(key, String(value));
      }
      const text = params.toString();
      if (text) url += `?${text}`;
    }
    const headers = { ...options.headers };
    if (to === 'admin') {
      const token = this.#bearer();
      if (token) headers.authorization = `Bearer ${token}`;
    }
    let body = options.body;
    if (options.json !== undefined) {
      body = JSON.stringify(options.json);
      headers['content-type'] = 'application/json';
    } else if (options.contentType) {
      headers['content-type'] = options.contentType;
    }
    if (body instanceof ArrayBuffer) body = new Uint8Array(body);
    let response;
    try {
      const fetchFn = this.fetch; // called unbound: a browser's fetch refuses another `this`
      response = await fetchFn(url, { method, headers, body, signal });
    } catch (error) {
      if (signal && signal.aborted) throw signal.reason;
      throw new ConnectionError(`${method} ${url}: ${reason(error)}`, { cause: error });
    }
    if (!response.ok) {
      let text = '';
      try {
        text = await response.text();
      } catch {
        // The status says enough.
      }
      const error = errorFor(response.status, text, `${method} ${path}`);
      const invocation = response.headers.get('x-invocation-id');
      if (invocation) error.invocationId = invocation;
      throw error;
    }
    return response;
  }

  /** A request whose answer is JSON (or nothing: undefined). */
  async json(method, path, options) {
    const response = await this.request(method, path, options);
    const text = await readText(response, `${method} ${path}`, options && options.signal);
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch (error) {
      throw new NodeosVmError(`${method} ${path}: the answer is not JSON: ${text.slice(0, 200)}`, {
        status: response.status,
        cause: error,
      });
    }
  }

  // What the module's functions do, with this connection.

  /** Sandbox.create with this connection. */
  createSandbox(options = {}) {
    return require('./sandbox').Sandbox.create({ ...options, client: this });
  }

  /** Sandbox.connect with this connection. */
  connectSandbox(id, options = {}) {
    return require('./sandbox').Sandbox.connect(id, { ...options, client: this });
  }

  /** Sandbox.list with this connection. */
  listSandboxes(options = {}) {
    return require('./sandbox').Sandbox.list({ ...options, client: this });
  }

  /** deploy() with this connection. */
  deploy(name, source, options = {}) {
    return require('./apps').deploy(this, name, source, options);
  }

  /** invoke() on this connection's apps' listener. */
  invoke(app, event, options = {}) {
    return require('./apps').invokeWith(this, app, event, options);
  }

  /** The deployed apps. */
  async listApps(options = {}) {
    return (await this.json('GET', '/apps', { signal: options.signal })).apps;
  }

  /** One app; NotFoundError when there is none of that name. */
  getApp(name, options = {}) {
    return this.json('GET', `/apps/${encodeURIComponent(name)}`, { signal: options.signal });
  }

  /** Removes an app (its calls in flight finish). */
  async deleteApp(name, options = {}) {
    await this.json('DELETE', `/apps/${encodeURIComponent(name)}`, { signal: options.signal });
  }

  /** The app's recent log lines, oldest first (only one call's, with `invocation`). */
  async logs(name, options = {}) {
    const answer = await this.json('GET', `/apps/${encodeURIComponent(name)}/logs`, {
      query: { invocation: options.invocation },
      signal: options.signal,
    });
    return answer.lines;
  }

  /**
   * A request to the app's fetch(request) handler (`/run/{app}/{path}` on the apps' listener):
   * the app's Response as it is, whatever its status.
   * @param {string} app
   * @param {string} [path] with its query, if any
   * @param {RequestInit} [init]
   */
  fetchApp(app, path = '', init = {}) {
    const rest = String(path).replace(/^\/+/, '');
    const fetchFn = this.fetch;
    return fetchFn(`${this.appsUrl}/run/${encodeURIComponent(app)}/${rest}`, init);
  }
}

/** The whole body as bytes; a body cut short (the server failed mid-answer) is a ConnectionError. */
async function readBytes(response, what, signal) {
  try {
    return new Uint8Array(await response.arrayBuffer());
  } catch (error) {
    if (signal && signal.aborted) throw signal.reason;
    throw new ConnectionError(`${what}: the answer was cut: ${reason(error)}`, { cause: error });
  }
}

async function readText(response, what, signal) {
  return new TextDecoder().decode(await readBytes(response, what, signal));
}

/** The Client for call options: theirs (`client`), or one made of them (url, token, ...). */
function clientOf(options = {}) {
  if (options instanceof Client) return options;
  if (options.client) return options.client;
  return new Client(options);
}

module.exports = { Client, clientOf, readBytes, readText, reason, isBytes };
