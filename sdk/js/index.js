'use strict';
// nodeos-vm: the client of `nodeos-vm serve`'s sandbox and function-host APIs (docs/openapi.yaml).
// CommonJS source; index.mjs re-exports it for ES modules (one implementation, one set of classes).

const errors = require('./lib/errors');
const { Client } = require('./lib/client');
const { Sandbox, Commands, CommandHandle, Files } = require('./lib/sandbox');
const { deploy, invoke } = require('./lib/apps');
const { pack } = require('./lib/pack');

module.exports = {
  Client,
  Sandbox,
  Commands,
  CommandHandle,
  Files,
  deploy,
  invoke,
  pack,
  NodeosVmError: errors.NodeosVmError,
  AuthError: errors.AuthError,
  ForbiddenError: errors.ForbiddenError,
  NotFoundError: errors.NotFoundError,
  InvalidArgumentError: errors.InvalidArgumentError,
  ConflictError: errors.ConflictError,
  PayloadTooLargeError: errors.PayloadTooLargeError,
  RateLimitError: errors.RateLimitError,
  ServerError: errors.ServerError,
  ConnectionError: errors.ConnectionError,
  CommandExitError: errors.CommandExitError,
};
