#!/usr/bin/env node
// The graft command. An installed package runs its built JavaScript (dist/, made by `npm run build` before packing);
// a checkout that was never built runs the TypeScript sources through tsx, a devDependency (`npm run graft` always does).
import { existsSync } from 'node:fs';

const built = new URL('../dist/cli/main.js', import.meta.url);
if (existsSync(built)) {
  await import(built.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
