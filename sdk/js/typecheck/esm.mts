// Checked by `tsc -p typecheck` (never run): the ES module entry's types, as a user writes them.
import sdk, {
  Client,
  Sandbox,
  CommandHandle,
  NotFoundError,
  ConflictError,
  CommandExitError,
  NodeosVmError,
  deploy,
  invoke,
  pack,
  type CommandResult,
  type EntryInfo,
  type SandboxInfo,
} from 'nodeos-vm';

export async function example(): Promise<void> {
  const sandbox = await Sandbox.create({ url: 'http://127.0.0.1:8080', token: 't', memoryMib: 256, env: { A: '1' } });
  const id: string = sandbox.id;
  const result: CommandResult = await sandbox.commands.run('echo hi', {
    onStdout: (text: string) => void text,
    cwd: '/tmp',
    timeoutMs: 1000,
  });
  const code: number | null = result.exitCode;
  const handle: CommandHandle = await sandbox.commands.run(['cat'], { background: true, stdin: true });
  await handle.sendStdin('x');
  await handle.closeStdin();
  const sent: boolean = await handle.kill('SIGTERM');
  const ended: CommandResult = await handle.wait();
  const started = await sandbox.commands.start('sleep 1', { signal: AbortSignal.timeout(10) });
  started.disconnect();
  const text: string = await sandbox.files.read('/home/node/a');
  const bytes: Uint8Array = await sandbox.files.read('/home/node/a', { format: 'bytes' });
  const stream: ReadableStream<Uint8Array> = await sandbox.files.read('/home/node/a', { format: 'stream' });
  await sandbox.files.write('/home/node/a', new Uint8Array([1]));
  const entries: EntryInfo[] = await sandbox.files.list('/home/node');
  await sandbox.files.uploadTar('/home/node/x', await sandbox.files.downloadTar('/home/node'));
  const info: SandboxInfo = await sandbox.info();
  const paused: SandboxInfo = await sandbox.pause();
  const pausedAt: number | null = paused.pausedAt;
  const state: 'running' | 'paused' = (await sandbox.resume()).state;
  const all: SandboxInfo[] = await Sandbox.list();
  const again: Sandbox = await Sandbox.connect(id, { client: new Client() });
  await again.kill();
  try {
    await sandbox.commands.run('false', { throwOnError: true });
  } catch (error) {
    if (error instanceof CommandExitError) void error.result.stderr;
    if (error instanceof NotFoundError) void error.status;
    if (error instanceof ConflictError) void error.message;
    if (error instanceof NodeosVmError) void error.body;
  }
  const app = await deploy({ url: 'http://127.0.0.1:8080' }, 'hello', './hello', { max: 4, timeout: 10_000, memory: '256M' });
  const answer = await invoke<{ greeting: string }>({ url: 'http://127.0.0.1:8081' }, 'hello', { who: 'w' });
  const details = await invoke({ url: 'http://127.0.0.1:8081' }, 'hello', null, { details: true });
  const tgz: Uint8Array = await pack('./hello');
  const client = new Client({ url: 'http://127.0.0.1:8080', token: 't', appsUrl: 'http://127.0.0.1:8081' });
  const response: Response = await client.fetchApp('hello', '/x?y=1', { method: 'POST', body: '{}' });
  void [code, sent, ended, text, bytes, stream, entries, info, pausedAt, state, all, app, answer.greeting, details.coldStart, tgz, response];
  void sdk.Sandbox.create;
}
