/**
 * `npm run build`'s second step: the `graft serve` page bundled into dist/web/page/ (app.js, style.css and the TF.js
 * WebAssembly binaries), so an installed package serves it without esbuild or the TypeScript sources. It reports on
 * stderr: `npm pack --json` prints its JSON on stdout.
 */
import path from 'node:path';
import { writePage } from '../src/web/page-bundle.ts';

const out = path.resolve(import.meta.dirname, '..', 'dist', 'web', 'page');
const files = await writePage(out);
process.stderr.write(`graft serve page: ${files.join(', ')} → ${path.relative(process.cwd(), out)}\n`);
