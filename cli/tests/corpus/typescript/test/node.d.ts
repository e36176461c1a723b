// The few Node APIs the tests use, declared here instead of pulling in @types/node (2 MB of
// declarations that tsc would parse on every build).
declare module 'node:test' {
  export default function test(name: string, fn: () => void | Promise<void>): Promise<void>;
}
declare module 'node:assert/strict' {
  const assert: {
    deepEqual(actual: unknown, expected: unknown): void;
    throws(fn: () => unknown, expected: RegExp): void;
  };
  export default assert;
}
