'use strict';
// NDJSON: one JSON value a line, over a streamed response body.

const { ConnectionError, NodeosVmError } = require('./errors');
const { reason } = require('./client');

/** Longest line accepted: an event holds at most one output chunk, far less than this. */
const MAX_LINE_BYTES = 64 << 20;

/**
 * The JSON values of `body`'s lines, as they come. Lines may be split anywhere across chunks
 * (inside a UTF-8 sequence too); blank lines and `\r\n` endings are allowed. A body that breaks
 * is a ConnectionError (or the signal's reason when it was aborted); a line that is not JSON, a
 * NodeosVmError.
 * @param {ReadableStream<Uint8Array>} body
 * @param {AbortSignal} [signal]
 * @returns {AsyncGenerator<any>}
 */
async function* ndjson(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let pending = '';
  let finished = false;
  const parse = (line) => {
    try {
      return JSON.parse(line);
    } catch (error) {
      throw new NodeosVmError(`a line of the stream is not JSON: ${line.slice(0, 200)}`, { cause: error });
    }
  };
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (signal && signal.aborted) throw signal.reason;
        const silent = error && error.cause && error.cause.code === 'UND_ERR_BODY_TIMEOUT';
        const why = silent
          ? "nothing came for fetch's body timeout (undici's bodyTimeout, 300 s by default), though the server sends a keepalive line every 30 s: a proxy between may hold them back"
          : reason(error);
        throw new ConnectionError(`the stream broke: ${why}`, { cause: error });
      }
      const text = chunk.done ? decoder.decode() : decoder.decode(chunk.value, { stream: true });
      let start = 0;
      let end;
      const lines = [];
      const all = pending + text;
      while ((end = all.indexOf('\n', start)) !== -1) {
        lines.push(all.slice(start, end));
        start = end + 1;
      }
      pending = all.slice(start);
      if (chunk.done && pending) {
        lines.push(pending);
        pending = '';
      }
      if (pending.length > MAX_LINE_BYTES) {
        throw new NodeosVmError(`a line of the stream is longer than ${MAX_LINE_BYTES >> 20} MiB`);
      }
      for (const line of lines) {
        const trimmed = line.trim();
        if (trimmed) yield parse(trimmed);
      }
      if (chunk.done) {
        finished = true;
        return;
      }
    }
  } finally {
    // Ended early (the consumer stopped, or threw): the rest is not wanted.
    if (!finished) reader.cancel().catch(() => {});
  }
}

module.exports = { ndjson };
