/**
 * @file The page: `page/main.ts` and everything it imports (graft/predict and TF.js for in-browser prediction
 * included) as one script and one style sheet, plus the TF.js WebAssembly binaries that script loads. An installed
 * package ships them prebuilt beside this module (`npm run build` → dist/web/page/: app.js, style.css, wasm/); a
 * checkout bundles the sources with esbuild (a devDependency) in memory, once per server start (about a second).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PageBundle {
  js: string;
  css: string;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const pageDir = path.join(here, 'page');

/** The TF.js WebAssembly binaries the page may ask for (threaded builds need cross-origin isolation, which it lacks). */
export const WASM_FILES = ['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm'];

let cached: Promise<PageBundle> | undefined;

export function bundlePage(): Promise<PageBundle> {
  cached ??= (async () => {
    const css = readFileSync(path.join(pageDir, 'style.css'), 'utf8');
    const prebuilt = path.join(pageDir, 'app.js');
    if (existsSync(prebuilt)) return { js: readFileSync(prebuilt, 'utf8'), css };
    if (!existsSync(path.join(pageDir, 'main.ts')))
      throw new Error(`graft serve: the page is missing from this installation (no ${prebuilt}); reinstall graft`);
    return { js: await bundleSources(), css };
  })();
  return cached;
}

/**
 * Where the WebAssembly binaries are read from: the copies built with the page (their JavaScript half is inside
 * app.js, so the two must come from one TF.js version), else the installed @tensorflow/tfjs-backend-wasm.
 */
export function wasmDir(): string {
  const shipped = path.join(pageDir, 'wasm');
  if (existsSync(shipped)) return shipped;
  return path.join(
    path.dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json')),
    'dist',
  );
}

async function bundleSources(): Promise<string> {
  const esbuild = await import('esbuild');
  const r = await esbuild.build({
    entryPoints: [path.join(pageDir, 'main.ts')],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'browser',
    target: ['chrome109', 'firefox115', 'safari16'],
    minify: true,
    legalComments: 'none',
    logLevel: 'silent',
    // TF.js reads process.env in a few places; the page has no process.
    define: { 'process.env.NODE_ENV': '"production"' },
  });
  return r.outputFiles[0].text;
}

/** Writes the prebuilt page into `outDir` (dist/web/page): what `npm run build` ships for `graft serve`. */
export async function writePage(outDir: string): Promise<string[]> {
  const js = await bundleSources();
  mkdirSync(path.join(outDir, 'wasm'), { recursive: true });
  const written: [string, string | Uint8Array][] = [
    ['app.js', js],
    ['style.css', readFileSync(path.join(pageDir, 'style.css'), 'utf8')],
    ...WASM_FILES.map((f): [string, Uint8Array] => [`wasm/${f}`, readFileSync(path.join(wasmDir(), f))]),
  ];
  for (const [name, data] of written) writeFileSync(path.join(outDir, name), data);
  return written.map(([name]) => name);
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[ch]!);

/** The page's HTML: the per-server token travels in a meta tag that only same-origin script can read. */
export function pageHtml(token: string, projectName: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="graft-token" content="${escapeHtml(token)}">
<title>${escapeHtml(projectName)} · graft</title>
<link rel="stylesheet" href="/app.css">
<link rel="icon" href="data:,">
</head>
<body>
<div id="app"><p class="loading">Loading…</p></div>
<script type="module" src="/app.js"></script>
</body>
</html>
`;
}
