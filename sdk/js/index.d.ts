// Types of nodeos-vm, the client of `nodeos-vm serve` (docs/openapi.yaml in the repository).
// Written by hand beside the CommonJS source (index.js); index.d.mts re-exports them for ESM.

/** Where the server is, and its admin token. */
export interface ConnectionOptions {
  /** The admin API (`--listen`). Default: $NODEOS_VM_URL, else http://127.0.0.1:8080. */
  url?: string;
  /**
   * The admin token (`Authorization: Bearer`). Default: $NODEOS_VM_TOKEN, else, for a server on
   * the loopback, the serve-token file in serve's data folder on this machine.
   */
  token?: string;
  /** The apps' listener (`--apps-listen`). Default: $NODEOS_VM_APPS_URL, else the admin port + 1. */
  appsUrl?: string;
  /** The fetch to use (default: the global one), e.g. undici's with other timeouts. */
  fetch?: typeof fetch;
}

/** A connection given on each call: its options, or a Client made once. */
export interface CallOptions extends ConnectionOptions {
  client?: Client;
  signal?: AbortSignal;
}

export type ClientOptions = ConnectionOptions;

/** A connection to one `nodeos-vm serve`. */
export declare class Client {
  constructor(options?: ClientOptions);
  readonly url: string;
  readonly appsUrl: string;
  readonly fetch: typeof fetch;
  createSandbox(options?: SandboxCreateOptions): Promise<Sandbox>;
  connectSandbox(id: string, options?: { signal?: AbortSignal }): Promise<Sandbox>;
  listSandboxes(options?: { signal?: AbortSignal }): Promise<SandboxInfo[]>;
  deploy(name: string, source: string | Uint8Array | ArrayBuffer, options?: DeployOptions): Promise<AppInfo>;
  invoke<T = unknown>(app: string, event?: unknown, options?: InvokeOptions & { details?: false }): Promise<T>;
  invoke<T = unknown>(app: string, event: unknown, options: InvokeOptions & { details: true }): Promise<InvokeDetails<T>>;
  listApps(options?: { signal?: AbortSignal }): Promise<AppInfo[]>;
  getApp(name: string, options?: { signal?: AbortSignal }): Promise<AppInfo>;
  deleteApp(name: string, options?: { signal?: AbortSignal }): Promise<void>;
  logs(name: string, options?: { invocation?: string; signal?: AbortSignal }): Promise<LogLine[]>;
  /** The app's fetch(request) handler: its Response as it is, whatever its status. */
  fetchApp(app: string, path?: string, init?: RequestInit): Promise<Response>;
  /** One request to the admin API (or `to: 'apps'`); the response when 2xx, else a typed error. */
  request(method: string, path: string, options?: RequestOptions): Promise<Response>;
  /** request(), its answer parsed as JSON (undefined when empty). */
  json<T = any>(method: string, path: string, options?: RequestOptions): Promise<T>;
}

export interface RequestOptions {
  to?: 'admin' | 'apps';
  query?: Record<string, string | number | boolean | undefined | null>;
  body?: string | Uint8Array | ArrayBuffer | Blob;
  json?: unknown;
  contentType?: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

/** POST /sandboxes: the sandbox's resources and limits. */
export interface SandboxCreateOptions extends CallOptions {
  /** Guest memory in MiB (default 512; at least 128). */
  memoryMib?: number;
  /** vCPUs (default 1). */
  cpus?: number;
  /** A persistent user (`nodeos-vm users`): their disk is the writable layer, kept after. */
  user?: string;
  /** A network interface: NAT to the host's network (not to its loopback). */
  net?: boolean;
  /** Lifetime in ms (default 1 h, at most 24 h). */
  timeoutMs?: number;
  /** Deleted after this long without a command or transfer (default 5 min). */
  idleTimeoutMs?: number;
  /** Added to every command's environment. */
  env?: Record<string, string>;
}

export interface ExecInfo {
  id: string;
  /** A file operation shows as ["(read)", PATH] and the like. */
  argv: string[];
  startedMs: number;
  state: 'running' | 'exited' | 'signaled' | 'timedOut' | 'notFound' | 'failed';
  exitCode: number | null;
  signal: number | null;
}

export interface SandboxInfo {
  id: string;
  /** 'paused' between pause() and resume(). */
  state: 'running' | 'paused';
  /** ms since the epoch: when it was paused; null while it runs. */
  pausedAt: number | null;
  memoryMib: number;
  cpus: number;
  user: string | null;
  net: boolean;
  timeoutMs: number;
  idleTimeoutMs: number;
  /** ms since the epoch */
  createdAt: number;
  /** ms since the epoch: the last command or transfer's start or end */
  lastActivityAt: number;
  /** Running, and the last 16 ended. */
  execs: ExecInfo[];
}

/** A microVM of its own. */
export declare class Sandbox {
  /** Creates a sandbox and waits until it takes commands. */
  static create(options?: SandboxCreateOptions): Promise<Sandbox>;
  /** The sandbox `id`; NotFoundError when it is gone. */
  static connect(id: string, options?: CallOptions): Promise<Sandbox>;
  /** Every sandbox of the server, oldest first. */
  static list(options?: CallOptions): Promise<SandboxInfo[]>;
  /** Deletes the sandbox `id`; NotFoundError when it is gone. */
  static kill(id: string, options?: CallOptions): Promise<void>;

  readonly id: string;
  /** The same as `id`. */
  readonly sandboxId: string;
  readonly client: Client;
  readonly commands: Commands;
  readonly files: Files;
  info(options?: { signal?: AbortSignal }): Promise<SandboxInfo>;
  /** Deletes it: its commands killed, its VM stopped. NotFoundError when it is gone. */
  kill(options?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Stops its vCPUs, its memory and processes kept (not saved to disk): running commands stall;
   * new commands, stdin, signals and file operations are a ConflictError until resume(). Its
   * idle limit does not count meanwhile, its lifetime does. ConflictError when it is paused
   * already.
   */
  pause(options?: { signal?: AbortSignal }): Promise<SandboxInfo>;
  /** Goes on where it stopped. ConflictError when it is not paused. */
  resume(options?: { signal?: AbortSignal }): Promise<SandboxInfo>;
}

export interface RunOptions {
  /** Called with the output decoded as UTF-8, as it comes (a character is never split). */
  onStdout?: (data: string) => void;
  onStderr?: (data: string) => void;
  /** Added to the sandbox's environment. */
  env?: Record<string, string>;
  /** An absolute guest path (default: the user's home). */
  cwd?: string;
  /** Killed after this long: the result has timedOut. */
  timeoutMs?: number;
  /**
   * true: its stdin stays open for sendStdin() (on a background handle); a string (UTF-8) or
   * bytes: sent, then its stdin closed. Default: it reads /dev/null.
   */
  stdin?: boolean | string | Uint8Array;
  /** Aborting disconnects: the server kills the command (SIGKILL); the sandbox lives on. */
  signal?: AbortSignal;
  /** Resolve with a handle once it started, instead of its result once it ended. */
  background?: boolean;
  /** Reject with CommandExitError when it did not exit 0. */
  throwOnError?: boolean;
}

export interface CommandResult {
  /** The command's ID in its sandbox. */
  id: string;
  pid: number | null;
  /** Its exit status; 127 for a program not found, 126 for one that cannot run; null if killed. */
  exitCode: number | null;
  /** The signal that ended it, if one did. */
  signal: number | null;
  /** Whether its timeoutMs killed it. */
  timedOut: boolean;
  /** The server's word on why it did not run or end by itself, if any. */
  error: string | null;
  stdout: string;
  stderr: string;
}

export declare class Commands {
  private constructor();
  run(cmd: string | string[], options: RunOptions & { background: true }): Promise<CommandHandle>;
  run(cmd: string | string[], options?: RunOptions & { background?: false }): Promise<CommandResult>;
  run(cmd: string | string[], options?: RunOptions): Promise<CommandResult | CommandHandle>;
  /** Starts it; resolves with its handle once the server gave its ID. */
  start(cmd: string | string[], options?: Omit<RunOptions, 'background'>): Promise<CommandHandle>;
  /** Bytes for the stdin of command `id` (started with stdin: true), by its ID. */
  sendStdin(id: string, data: string | Uint8Array, options?: { eof?: boolean; signal?: AbortSignal }): Promise<void>;
  closeStdin(id: string, options?: { signal?: AbortSignal }): Promise<void>;
  /** A signal to the process group of command `id` (default SIGKILL); false when none such runs. */
  kill(id: string, signal?: number | string, options?: { signal?: AbortSignal }): Promise<boolean>;
}

/** A command that runs (or ran). */
export declare class CommandHandle {
  private constructor();
  /** Its ID in its sandbox. */
  readonly id: string;
  /** Its process ID in the guest, once it started. */
  readonly pid: number | undefined;
  /** What it wrote so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** Whether its end came. */
  readonly ended: boolean;
  /** Its result once it ended. */
  wait(): Promise<CommandResult>;
  /** Bytes (a string: UTF-8) for its stdin; it must have been started with stdin: true. */
  sendStdin(data: string | Uint8Array, options?: { eof?: boolean; signal?: AbortSignal }): Promise<void>;
  closeStdin(options?: { signal?: AbortSignal }): Promise<void>;
  /** A signal to its process group (default SIGKILL); false when it had ended already. */
  kill(signal?: number | string, options?: { signal?: AbortSignal }): Promise<boolean>;
  /** Stops reading its output: the server kills it; wait() rejects with an AbortError. */
  disconnect(): void;
}

export interface EntryInfo {
  name: string;
  /** The folder's path joined with the name. */
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  modifiedMs: number;
}

export interface ReadOptions {
  /** 'text' (UTF-8, the default), 'bytes', or 'stream' (its bytes as they come). */
  format?: 'text' | 'bytes' | 'stream';
  signal?: AbortSignal;
}

/** The guest's files, as the guest's user (uid 1000); paths absolute and plain. */
export declare class Files {
  private constructor();
  read(path: string, options?: { format?: 'text'; signal?: AbortSignal }): Promise<string>;
  read(path: string, options: { format: 'bytes'; signal?: AbortSignal }): Promise<Uint8Array>;
  read(path: string, options: { format: 'stream'; signal?: AbortSignal }): Promise<ReadableStream<Uint8Array>>;
  read(path: string, options?: ReadOptions): Promise<string | Uint8Array | ReadableStream<Uint8Array>>;
  /** Created or replaced, the folders above it made; a string is written as UTF-8. */
  write(path: string, data: string | Uint8Array | ArrayBuffer | Blob, options?: { signal?: AbortSignal }): Promise<void>;
  list(path: string, options?: { signal?: AbortSignal }): Promise<EntryInfo[]>;
  makeDir(path: string, options?: { signal?: AbortSignal }): Promise<void>;
  /** A file, or a folder and all in it. */
  remove(path: string, options?: { signal?: AbortSignal }): Promise<void>;
  /** Extracts a tar archive into the folder (made when missing). */
  uploadTar(path: string, tar: Uint8Array | ArrayBuffer | Blob, options?: { signal?: AbortSignal }): Promise<void>;
  /** A tar archive of the folder's contents (or of one file). */
  downloadTar(path: string, options?: { signal?: AbortSignal }): Promise<Uint8Array>;
}

/** PUT /apps/{name}'s options. */
export interface DeployOptions {
  /** Per instance: a number is MiB, or a size like '256M' (default 256M). */
  memory?: number | string;
  cpus?: number;
  /** Per call: a number is ms, or a duration like '30s' (default 30s). */
  timeout?: number | string;
  /** Instances kept warm (default 0). */
  min?: number;
  /** Most instances (default 2). */
  max?: number;
  /** Idle time before an instance beyond min stops: ms, or '5m' (default 5m). */
  idle?: number | string;
  /** Calls that may wait for an instance (default 64; beyond it, 429). */
  queue?: number;
  signal?: AbortSignal;
}

export interface AppInfo {
  name: string;
  version: number;
  deployed_at_ms: number;
  exports: { handler: boolean; fetch: boolean };
  instances: number;
  warm: number;
  options: {
    memory_mib: number;
    cpus: number;
    timeout: number;
    min: number;
    max: number;
    idle: number;
    queue: number;
  };
}

export interface LogLine {
  time_ms: number;
  invocation: string | null;
  stream: 'stdout' | 'stderr' | 'system';
  text: string;
}

export interface InvokeOptions {
  /** Resolve with the result and the call's ID and cold-start flag. */
  details?: boolean;
  signal?: AbortSignal;
}

export interface InvokeDetails<T = unknown> {
  result: T;
  invocationId: string | null;
  /** Whether the call booted the microVM it ran on. */
  coldStart: boolean;
}

/**
 * Deploys app `name`: a folder (packed as npm pack would, see pack()), a .tgz file, or a
 * tarball's bytes; resolves once an instance loaded it.
 */
export declare function deploy(
  connection: CallOptions | Client,
  name: string,
  source: string | Uint8Array | ArrayBuffer,
  options?: DeployOptions,
): Promise<AppInfo>;

/**
 * Calls app `app`'s handler(event, context) on the apps' listener (no token). Here
 * `connection.url` is the apps' listener (or give `appsUrl`); a Client uses its appsUrl.
 */
export declare function invoke<T = unknown>(
  connection: CallOptions | Client,
  app: string,
  event?: unknown,
  options?: InvokeOptions & { details?: false },
): Promise<T>;
export declare function invoke<T = unknown>(
  connection: CallOptions | Client,
  app: string,
  event: unknown,
  options: InvokeOptions & { details: true },
): Promise<InvokeDetails<T>>;

/**
 * A folder as an npm package: a gzipped tar of its files under `package/` (node_modules only
 * when package.json bundles dependencies; VCS folders, .npmrc, lock files and links left out).
 */
export declare function pack(dir: string): Promise<Uint8Array>;

/** Base of the SDK's errors. */
export declare class NodeosVmError extends Error {
  constructor(message: string, extra?: { status?: number; body?: unknown; cause?: unknown });
  /** The HTTP status; undefined when no answer came. */
  readonly status: number | undefined;
  /** The server's JSON error ({error, ...}), when it gave one. */
  readonly body: unknown;
  /** invoke's errors: the call's ID (x-invocation-id). */
  invocationId?: string;
}
/** 401 */
export declare class AuthError extends NodeosVmError {}
/** 403: through a symlink, or not the guest user's to read or write. */
export declare class ForbiddenError extends NodeosVmError {}
/** 404 */
export declare class NotFoundError extends NodeosVmError {}
/** 400, and 422 (a package that does not load); also bad arguments found before sending. */
export declare class InvalidArgumentError extends NodeosVmError {}
/** 409: a paused sandbox (resume it first), a folder where a file is needed or the other way round. */
export declare class ConflictError extends NodeosVmError {}
/** 413 */
export declare class PayloadTooLargeError extends NodeosVmError {}
/** 429 */
export declare class RateLimitError extends NodeosVmError {}
/** 5xx */
export declare class ServerError extends NodeosVmError {}
/** No answer: not reachable, or the answer broke off. */
export declare class ConnectionError extends NodeosVmError {}
/** From run(..., { throwOnError: true }): the command did not exit 0. */
export declare class CommandExitError extends NodeosVmError {
  constructor(result: CommandResult);
  readonly result: CommandResult;
  readonly exitCode: number | null;
  readonly signal: number | null;
  readonly timedOut: boolean;
  readonly stdout: string;
  readonly stderr: string;
}
