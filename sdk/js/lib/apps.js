'use strict';
// The function host's side: deploy an app (a folder, a tarball file, or its bytes) and call it.

const { clientOf, readText } = require('./client');
const { pack } = require('./pack');
const { InvalidArgumentError, NodeosVmError } = require('./errors');

const enc = encodeURIComponent;

/** A size for `memory`: a number is MiB. */
function size(value) {
  return typeof value === 'number' ? `${value}M` : value;
}

/** A duration for `timeout` and `idle`: a number is milliseconds. */
function duration(value) {
  return typeof value === 'number' ? `${value}ms` : value;
}

/** The package's bytes: `source` as given, or read from a file, or a folder packed. */
async function packageBytes(source) {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (typeof source !== 'string') {
    throw new InvalidArgumentError('the app: give a folder, a .tgz file or the tarball\'s bytes');
  }
  const fs = require('node:fs/promises');
  let stat;
  try {
    stat = await fs.stat(source);
  } catch (error) {
    throw new InvalidArgumentError(`the app ${source}: ${error.message}`, { cause: error });
  }
  return stat.isDirectory() ? pack(source) : new Uint8Array(await fs.readFile(source));
}

/**
 * Deploys (or redeploys) app `name`: a folder (packed as npm pack would, see pack()), a
 * gzipped tarball file, or a tarball's bytes. Resolves with the app once an instance loaded it.
 * @param {import('../index').ConnectionOptions | import('./client').Client} connection
 * @param {string} name
 * @param {string | Uint8Array | ArrayBuffer} source
 * @param {import('../index').DeployOptions} [options]
 */
async function deploy(connection, name, source, options = {}) {
  const client = clientOf(connection);
  const body = await packageBytes(source);
  return client.json('PUT', `/apps/${enc(name)}`, {
    query: {
      memory: size(options.memory),
      cpus: options.cpus,
      timeout: duration(options.timeout),
      min: options.min,
      max: options.max,
      idle: duration(options.idle),
      queue: options.queue,
    },
    body,
    contentType: 'application/gzip',
    signal: options.signal,
  });
}

/**
 * Calls app `app`'s handler(event, context) on the apps' listener (no token): its result.
 * `connection.url` is taken as the apps' listener's URL here (or `appsUrl`, if given).
 * @param {import('../index').ConnectionOptions | import('./client').Client} connection
 * @param {string} app
 * @param {unknown} [event] any JSON value
 * @param {import('../index').InvokeOptions} [options]
 */
async function invoke(connection, app, event, options = {}) {
  const { Client } = require('./client');
  let client;
  if (connection instanceof Client) {
    client = connection;
  } else if (connection && connection.client) {
    client = connection.client;
  } else {
    const given = connection || {};
    client = new Client({ ...given, appsUrl: given.appsUrl || given.url });
  }
  return invokeWith(client, app, event, options);
}

async function invokeWith(client, app, event, options = {}) {
  const path = `/apps/${enc(app)}/invoke`;
  const response = await client.request('POST', path, {
    to: 'apps',
    json: event === undefined ? null : event,
    signal: options.signal,
  });
  const text = await readText(response, `POST ${path}`, options.signal);
  let result = null;
  if (text) {
    try {
      result = JSON.parse(text);
    } catch (error) {
      throw new NodeosVmError(`POST ${path}: the answer is not JSON: ${text.slice(0, 200)}`, { cause: error });
    }
  }
  if (!options.details) return result;
  return {
    result,
    invocationId: response.headers.get('x-invocation-id'),
    coldStart: response.headers.get('x-cold-start') === '1',
  };
}

module.exports = { deploy, invoke, invokeWith, packageBytes };
