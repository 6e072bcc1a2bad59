/**
 * @file The page: `page/main.ts` and everything it imports (TF.js for in-browser prediction included) bundled by
 * esbuild into one script and one style sheet, in memory, once per server start (well under a second). A build
 * that ships a pre-bundled `page/app.js` beside this module skips the bundler.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PageBundle {
  js: string;
  css: string;
}

const here = path.dirname(fileURLToPath(import.meta.url));

let cached: Promise<PageBundle> | undefined;

export function bundlePage(): Promise<PageBundle> {
  cached ??= build();
  return cached;
}

async function build(): Promise<PageBundle> {
  const css = readFileSync(path.join(here, 'page', 'style.css'), 'utf8');
  const prebuilt = path.join(here, 'page', 'app.js');
  if (existsSync(prebuilt)) return { js: readFileSync(prebuilt, 'utf8'), css };
  const esbuild = await import('esbuild');
  const r = await esbuild.build({
    entryPoints: [path.join(here, 'page', 'main.ts')],
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
  return { js: r.outputFiles[0].text, css };
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
