// Checked by `tsc -p typecheck` (never run): the CommonJS entry's types, as a user writes them.
import nodeos = require('nodeos-vm');

export async function example(): Promise<void> {
  const client = new nodeos.Client({ token: 't' });
  const sandbox = await client.createSandbox({ idleTimeoutMs: 60_000 });
  const result = await sandbox.commands.run('node -v');
  const out: string = result.stdout;
  const apps = await client.listApps();
  const lines = await client.logs('hello', { invocation: 'i1' });
  try {
    await sandbox.files.read('/etc/shadow');
  } catch (error) {
    if (error instanceof nodeos.ForbiddenError) void error.message;
  }
  void [out, apps, lines];
}
