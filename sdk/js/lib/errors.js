'use strict';
// Errors: one class per kind of answer, each with the HTTP status and the server's message.

/** Base of every error the SDK throws (an AbortError from the caller's signal aside). */
class NodeosVmError extends Error {
  /**
   * @param {string} message what failed (the server's own message when it gave one)
   * @param {{status?: number, body?: unknown, cause?: unknown}} [extra]
   */
  constructor(message, extra = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = new.target.name;
    /** The HTTP status, or undefined when no answer came (a connection error). */
    this.status = extra.status;
    /** The server's JSON error body ({error, ...}), when there was one. */
    this.body = extra.body;
  }
}

/** 401: no token, or not this server's. */
class AuthError extends NodeosVmError {}
/** 403: through a symlink, or not allowed to the guest's user. */
class ForbiddenError extends NodeosVmError {}
/** 404: no such sandbox, command, file or app. */
class NotFoundError extends NodeosVmError {}
/** 400 (bad request) and 422 (a package that does not load). */
class InvalidArgumentError extends NodeosVmError {}
/**
 * 409: a paused sandbox (a command, stdin, signal or file operation before `resume()`; `pause()` of one paused
 * already, `resume()` of one that is not), a folder where a file is needed (or the other way
 * round), a user's VM already running.
 */
class ConflictError extends NodeosVmError {}
/** 413: an upload or package over the server's limits. */
class PayloadTooLargeError extends NodeosVmError {}
/** 429: too many sandboxes, commands, or calls queued. */
class RateLimitError extends NodeosVmError {}
/** 5xx: the server or the guest failed (for invoke: the handler threw, 500; timed out, 504). */
class ServerError extends NodeosVmError {}
/** No HTTP answer at all: the server is not reachable, or the connection broke mid-answer. */
class ConnectionError extends NodeosVmError {}
/** A command that did not exit 0, from `commands.run(..., { throwOnError: true })`. */
class CommandExitError extends NodeosVmError {
  /** @param {import('../index').CommandResult} result */
  constructor(result) {
    const how = result.timedOut
      ? 'timed out'
      : result.signal != null
        ? `was killed by signal ${result.signal}`
        : `exited with ${result.exitCode}`;
    super(`the command ${how}${result.error ? `: ${result.error}` : ''}`);
    this.result = result;
    this.exitCode = result.exitCode;
    this.signal = result.signal;
    this.timedOut = result.timedOut;
    this.stdout = result.stdout;
    this.stderr = result.stderr;
  }
}

const BY_STATUS = {
  400: InvalidArgumentError,
  401: AuthError,
  403: ForbiddenError,
  404: NotFoundError,
  409: ConflictError,
  413: PayloadTooLargeError,
  422: InvalidArgumentError,
  429: RateLimitError,
};

/**
 * The error for an answer with `status` and body `text`.
 * @param {number} status
 * @param {string} text
 * @param {string} what the request, for an answer that is not JSON
 */
function errorFor(status, text, what) {
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const message =
    body && typeof body.error === 'string'
      ? body.error
      : `${what}: HTTP ${status}${text ? `: ${text.slice(0, 500)}` : ''}`;
  const Class = BY_STATUS[status] || (status >= 500 ? ServerError : NodeosVmError);
  return new Class(message, { status, body });
}

module.exports = {
  NodeosVmError,
  AuthError,
  ForbiddenError,
  NotFoundError,
  InvalidArgumentError,
  ConflictError,
  PayloadTooLargeError,
  RateLimitError,
  ServerError,
  ConnectionError,
  CommandExitError,
  errorFor,
};
