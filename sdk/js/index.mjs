// The ES module entry: the CommonJS implementation's exports, re-exported by name.
import sdk from './index.js';

export const {
  Client,
  Sandbox,
  Commands,
  CommandHandle,
  Files,
  deploy,
  invoke,
  pack,
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
} = sdk;
export default sdk;
