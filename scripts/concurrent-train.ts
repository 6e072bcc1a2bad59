/**
 * Two `graft train` processes at once on hymenoptera with ONE cache folder (activations and the default base's
 * download, fetched from a local mirror of ../shared/models/mirror): both must succeed with the same validation
 * accuracy and bit-identical models, and the shared cache must hold only whole entries.
 *
 *   node --import tsx scripts/concurrent-train.ts [--keep]
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { cacheUsage, verifyCache } from '../src/cache/maintenance.ts';

const HYM = path.resolve('../shared/data/hymenoptera');
const MIRROR = path.resolve('../shared/models/mirror');
if (!existsSync(HYM) || !existsSync(MIRROR)) {
  console.log(`skipped: needs ${HYM} and ${MIRROR}`);
  process.exit(0);
}

const fetched: string[] = [];
const server = createServer((req, res) => {
  fetched.push(req.url ?? '');
  const file = path.join(MIRROR, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
  if (!file.startsWith(MIRROR) || !existsSync(file) || !statSync(file).isFile()) {
    res.writeHead(404).end();
    return;
  }
  const body = readFileSync(file);
  res.writeHead(200, { 'content-length': body.length }).end(body);
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
const mirror = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;

const work = mkdtempSync(path.join(os.tmpdir(), 'graft-concurrent-'));
const cache = path.join(work, 'cache');
const run = (name: string) =>
  new Promise<{ name: string; code: number; json: Record<string, unknown>; stderr: string; seconds: number }>(
    (resolve) => {
      const t = performance.now();
      const args = ['train', path.join(HYM, 'train'), '--val', path.join(HYM, 'val')];
      const p = spawn(
        process.execPath,
        ['--import', 'tsx', 'src/cli/main.ts', ...args, '--out', path.join(work, name), '--json'],
        {
          env: { ...process.env, GRAFT_CACHE_DIR: cache, GRAFT_MODEL_MIRROR: mirror },
        },
      );
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => {
        out += d;
      });
      p.stderr.on('data', (d) => {
        err += d;
      });
      p.on('close', (code) => {
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(out.trim().split('\n').pop() ?? '');
        } catch {}
        resolve({ name, code: code ?? -1, json, stderr: err, seconds: (performance.now() - t) / 1000 });
      });
    },
  );

console.log(`two concurrent graft train runs on ${HYM}, one cache folder ${cache}`);
const results = await Promise.all([run('a'), run('b')]);
server.close();
let ok = true;
for (const r of results) {
  const c = r.json.cache as { hits: number; misses: number; damaged: unknown[] } | undefined;
  console.log(
    `run ${r.name}: exit ${r.code}, base ${r.json.base}, cut ${r.json.cut}, validation accuracy ${r.json.valAccuracy}, cache ${c?.hits} hits / ${c?.misses} misses / ${c?.damaged.length} damaged, ${r.seconds.toFixed(0)} s`,
  );
  if (r.code !== 0) {
    ok = false;
    console.log(r.stderr.trim());
  }
}
const [a, b] = results;
const same = a.json.valAccuracy === b.json.valAccuracy && a.json.valAccuracy !== undefined;
const identical =
  a.code === 0 &&
  b.code === 0 &&
  readFileSync(path.join(work, 'a', 'weights.bin')).equals(readFileSync(path.join(work, 'b', 'weights.bin')));
const v = verifyCache(path.join(cache, 'activations'));
const u = cacheUsage(path.join(cache, 'activations'));
console.log(
  `mirror requests: ${fetched.length} (${fetched.filter((u) => u.endsWith('weights.bin')).length} for weights.bin: one process downloads, the other waits on the lock)`,
);
console.log(`same validation accuracy: ${same ? 'yes' : 'NO'}; bit-identical weights.bin: ${identical ? 'yes' : 'NO'}`);
console.log(
  `shared cache: ${u.entries} entries, ${v.checked} checked, ${v.damaged.length} damaged, ${u.temporaries.live + u.temporaries.stale} temporaries`,
);
ok &&= same && identical && v.damaged.length === 0 && u.temporaries.live + u.temporaries.stale === 0;
if (!process.argv.includes('--keep')) rmSync(work, { recursive: true, force: true });
console.log(ok ? 'PASS' : 'FAIL');
process.exit(ok ? 0 : 1);
