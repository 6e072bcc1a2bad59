import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

function versionOf(packageJson: string): string {
  try {
    return JSON.parse(readFileSync(packageJson, 'utf8')).version;
  } catch {
    return 'unknown';
  }
}

const dep = (name: string) => versionOf(require.resolve(`${name}/package.json`));

/** Versions recorded in every model's metadata, so a result can be traced to the code that made it. */
export function versions(): Record<string, string> {
  return {
    graft: versionOf(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json')),
    node: process.versions.node,
    'tfjs-core': dep('@tensorflow/tfjs-core'),
    'tfjs-layers': dep('@tensorflow/tfjs-layers'),
  };
}
