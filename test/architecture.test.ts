/**
 * docs/architecture.md lists graft's folders from the top (surfaces) to the bottom (shared low-level code) and says a
 * lower folder never imports a higher one. This test reads that list and the imports of every module under src/
 * (static, dynamic and type-only, found by TypeScript's own pre-processor) and fails on any import that climbs, so the
 * statement stays true. Unit tests (*.test.ts) are left out: they may reach up for fixtures and engines.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';

const ROOT = path.resolve(import.meta.dirname, '..');
const SRC = path.join(ROOT, 'src');

/** The folder order written in docs/architecture.md: the entries of its "Layers" block, top first. */
export function layerOrder(markdown: string): string[] {
  const section = markdown.split(/^## /m).find((s) => s.startsWith('Layers'));
  if (!section) throw new Error('docs/architecture.md has no "## Layers" section');
  const block = /```\n([\s\S]*?)```/.exec(section);
  if (!block) throw new Error('the Layers section of docs/architecture.md has no code block');
  return block[1]
    .split('\n')
    .map((line) => /^ {2}([a-z0-9-]+\/|[a-z0-9-]+\.ts)(?:\s|$)/.exec(line)?.[1])
    .filter((name): name is string => name !== undefined)
    .map((name) => name.replace(/\/$/, ''));
}

/** The layer of a path relative to src/: its top folder, or the file itself at the top level. */
const layerOf = (rel: string) => rel.split('/')[0];

export interface Violation {
  from: string;
  to: string;
}

/** Imports (relative to src/) whose target's layer sits above the importer's. */
export function climbingImports(imports: { from: string; to: string }[], order: string[]): Violation[] {
  const rank = new Map(order.map((name, i) => [name, i]));
  return imports.filter(({ from, to }) => {
    const a = rank.get(layerOf(from));
    const b = rank.get(layerOf(to));
    if (a === undefined) throw new Error(`src/${from}: its folder is not listed in docs/architecture.md's Layers`);
    if (b === undefined) throw new Error(`src/${to}: its folder is not listed in docs/architecture.md's Layers`);
    return b < a;
  });
}

/** Every relative import of every non-test module under src/, as paths relative to src/. */
function sourceImports(): { from: string; to: string }[] {
  const files = (readdirSync(SRC, { recursive: true }) as string[])
    .map((f) => f.split(path.sep).join('/'))
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'));
  return files.flatMap((from) => {
    const info = ts.preProcessFile(readFileSync(path.join(SRC, from), 'utf8'), true, true);
    return info.importedFiles
      .map((f) => f.fileName)
      .filter((spec) => spec.startsWith('.'))
      .map((spec) => {
        const target = path.resolve(SRC, path.dirname(from), spec);
        assert.ok(existsSync(target), `src/${from} imports ${spec}, which does not exist`);
        return { from, to: path.relative(SRC, target).split(path.sep).join('/') };
      });
  });
}

test('no module under src/ imports from a folder above its own (docs/architecture.md, Layers)', () => {
  const order = layerOrder(readFileSync(path.join(ROOT, 'docs', 'architecture.md'), 'utf8'));
  assert.ok(order.length >= 10, `expected the whole folder list, read [${order.join(', ')}]`);
  const imports = sourceImports();
  assert.ok(imports.length > 100, `expected graft's imports, found ${imports.length}`);
  const climbing = climbingImports(imports, order);
  assert.deepEqual(
    climbing.map((v) => `src/${v.from} -> src/${v.to}`),
    [],
    `imports from a higher folder (order, top first: ${order.join(', ')})`,
  );
});

test('the layer check itself: a climbing import and an unlisted folder are caught', () => {
  const order = layerOrder('# x\n## Layers\n```\nsrc/\n  cli/   commands\n  index.ts  api\n  base/\n```\n');
  assert.deepEqual(order, ['cli', 'index.ts', 'base']);
  assert.deepEqual(
    climbingImports(
      [
        { from: 'cli/main.ts', to: 'base/base.ts' },
        { from: 'base/base.ts', to: 'index.ts' },
        { from: 'base/a.ts', to: 'base/b.ts' },
      ],
      order,
    ),
    [{ from: 'base/base.ts', to: 'index.ts' }],
  );
  assert.throws(() => climbingImports([{ from: 'web/x.ts', to: 'base/b.ts' }], order), /web\/x.ts: its folder/);
});
