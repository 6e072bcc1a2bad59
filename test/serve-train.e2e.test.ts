/**
 * Training through `graft serve`'s API: progress over Server-Sent Events, one run at a time, Cancel that stops within
 * 2 s (during feature extraction and during training) and leaves the project as it was, a restart that shows the same
 * classes, images and last result, and a project folder that the CLI trains as it is.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { startServer } from '../src/web/server.ts';
import { runCli, tmpDir, writeColourDataset, writeTinyBase } from './helpers.ts';
import { client, uploadFromDisk } from './serve-helpers.ts';

type Server = Awaited<ReturnType<typeof startServer>>;
const servers: Server[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

let images: string;
let tinyBase: string;
let cacheDir: string;
before(async () => {
  const root = tmpDir('graft-serve-train-');
  images = await writeColourDataset(path.join(root, 'images'), ['red', 'blue'], 60, 64);
  tinyBase = path.dirname(await writeTinyBase(path.join(root, 'tiny')));
  cacheDir = path.join(root, 'cache');
  process.env.GRAFT_CACHE_DIR = cacheDir;
});

async function open(dir: string): Promise<{ server: Server; api: ReturnType<typeof client> }> {
  const server = await startServer({ dir });
  servers.push(server);
  const html = await (await fetch(server.url)).text();
  const token = /name="graft-token" content="([^"]+)"/.exec(html)![1];
  return { server, api: client(server.url, token) };
}

/** A project with two classes of `n` generated images each. */
async function fill(api: ReturnType<typeof client>, n: number): Promise<void> {
  for (const c of ['red', 'blue']) {
    assert.equal((await api('POST', '/api/classes', { name: c })).status, 201);
    const files = readdirSync(path.join(images, c))
      .sort()
      .slice(0, n)
      .map((f) => path.join(images, c, f));
    const r = await uploadFromDisk(api, c, files);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal((r.json.added as string[]).length, n);
  }
}

/** Every file under the project with its size and hash: what "left as it was" compares. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = path.join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out[path.relative(dir, p)] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

/** Reads the server's event stream until `until` accepts an event; returns every event read. */
async function events(
  url: string,
  token: string,
  until: (e: Record<string, unknown>) => boolean,
  ms: number,
): Promise<Record<string, unknown>[]> {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), ms);
  const res = await fetch(new URL(`/api/events?t=${token}`, url), { signal: ctrl.signal });
  const seen: Record<string, unknown>[] = [];
  const reader = res.body!.getReader();
  let buf = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += new TextDecoder().decode(value);
      let i = buf.indexOf('\n\n');
      while (i >= 0) {
        const chunk = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = chunk
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trim())
          .join('');
        if (data) {
          const e = JSON.parse(data);
          seen.push(e);
          if (until(e)) return seen;
        }
        i = buf.indexOf('\n\n');
      }
    }
  } finally {
    clearTimeout(timer);
    ctrl.abort();
  }
  throw new Error(`event stream ended without the awaited event; saw ${JSON.stringify(seen.slice(-3))}`);
}

function tokenOf(server: Server): Promise<string> {
  return fetch(server.url)
    .then((r) => r.text())
    .then((h) => /name="graft-token" content="([^"]+)"/.exec(h)![1]);
}

test('a run streams progress, refuses a second run, and survives a restart; the CLI trains the same folder', async () => {
  const dir = path.join(tmpDir(), 'project');
  const { server, api } = await open(dir);
  await fill(api, 12);
  // A base uploaded through the page (the tiny test network keeps this fast).
  const fd = new FormData();
  for (const f of ['model.json', 'weights.bin'])
    fd.append('files', new Blob([readFileSync(path.join(tinyBase, f))]), f);
  const up = await api('POST', '/api/bases', fd);
  assert.equal(up.status, 201, JSON.stringify(up.json));
  assert.equal((await api('PUT', '/api/settings', { base: up.json.base, epochs: 40, head: 'softmax' })).status, 200);

  const token = await tokenOf(server);
  const start = await api('POST', '/api/train');
  assert.equal(start.status, 202);
  const second = await api('POST', '/api/train');
  assert.equal(second.status, 409);
  assert.match(String(second.json.error), /already in progress/);
  const seen = await events(server.url, token, (e) => e.type === 'end', 300_000);
  const end = seen.at(-1)!;
  assert.equal(end.state, 'done', JSON.stringify(end));
  const phases = new Set(seen.filter((e) => e.type === 'progress').map((e) => e.phase));
  assert.ok(phases.has('extract') && phases.has('train'), [...phases].join(','));
  const extract = seen.filter((e) => e.type === 'progress' && e.phase === 'extract').at(-1)!;
  assert.deepEqual(Object.keys(extract.metrics as object).sort(), ['cacheHits', 'cacheMisses']);
  const epochs = seen.filter((e) => e.type === 'progress' && e.phase === 'train' && e.metrics);
  assert.ok(epochs.length > 1 && 'loss' in (epochs[0].metrics as object), 'per-epoch metrics reach the page');

  const before = await api('GET', '/api/project');
  const lastRun = before.json.lastRun as { result: { classes: string[]; valAccuracy: number } };
  assert.deepEqual(lastRun.result.classes, ['blue', 'red']);
  await server.close();

  // Restart on the same folder: same classes, images and last result.
  const again = await open(dir);
  const after = await again.api('GET', '/api/project');
  assert.deepEqual(after.json.classes, before.json.classes);
  assert.deepEqual(after.json.lastRun, before.json.lastRun);
  assert.deepEqual(after.json.settings, before.json.settings);
  const zip = await fetch(new URL(`/api/export/zip?t=${await tokenOf(again.server)}`, again.server.url));
  assert.equal(zip.status, 200);
  assert.equal(zip.headers.get('content-type'), 'application/zip');

  // The CLI reads the project as a plain data folder: two classes, no stray files reported.
  const cli = runCli(['train', dir, '--base', path.join(tinyBase, 'model.json'), '--epochs', '5', '--json']);
  assert.equal(cli.status, 0, cli.stderr);
  assert.deepEqual(cli.json?.classes, ['blue', 'red']);
  assert.deepEqual(cli.json?.skipped, []);
  assert.equal((cli.json?.trainImages as number) + (cli.json?.valImages as number), 24);
});

for (const phase of ['extract', 'train'] as const) {
  test(`Cancel during ${phase === 'extract' ? 'feature extraction' : 'training'} stops within 2 s and leaves the project as it was`, async () => {
    const dir = path.join(tmpDir(), 'project');
    const { server, api } = await open(dir);
    await fill(api, phase === 'extract' ? 60 : 20);
    // Extraction: the bundled base on a cold cache takes many seconds. Training: parameter transfer's tail epochs
    // run for seconds each on a small set.
    const settings =
      phase === 'extract'
        ? { base: 'nsfw-mobilenet-v2', mode: 'feature' }
        : { base: 'nsfw-mobilenet-v2', mode: 'parameter', epochs: 200 };
    assert.equal((await api('PUT', '/api/settings', settings)).status, 200);
    const token = await tokenOf(server);
    const before = snapshot(dir);
    const beforeProject = (await api('GET', '/api/project')).json;
    assert.equal((await api('POST', '/api/train')).status, 202);
    const wanted = (e: Record<string, unknown>) =>
      e.type === 'progress' &&
      (phase === 'extract'
        ? e.phase === 'extract' && (e.done as number) > 0 && (e.done as number) < (e.total as number)
        : e.phase === 'train' || e.phase === 'tail');
    const seen = await events(server.url, token, (e) => wanted(e) || e.type === 'end', 600_000);
    assert.ok(wanted(seen.at(-1)!), `the run ended before it could be cancelled: ${JSON.stringify(seen.at(-1))}`);
    const t0 = performance.now();
    const r = await api('POST', '/api/train/cancel');
    const ms = performance.now() - t0;
    assert.equal(r.status, 200);
    assert.equal(r.json.state, 'cancelled');
    assert.ok(ms <= 2000, `stopped in ${ms.toFixed(0)} ms (${String(r.json.stoppedBy)})`);
    // Training checks the signal between steps of milliseconds: it must stop through it. Extraction checks it between
    // decoded images and trunk batches, but one trunk batch (16 images, about half a second on a quiet machine) cannot
    // be interrupted; on a heavily loaded machine it can outlast the grace time, and the process is then killed, which
    // also leaves the project untouched.
    if (phase === 'train') assert.equal(r.json.stoppedBy, 'signal', 'stopped through the AbortSignal');
    const after = snapshot(dir);
    assert.deepEqual(after, before, 'the project folder is exactly as before the run');
    const afterProject = (await api('GET', '/api/project')).json;
    assert.deepEqual(afterProject.lastRun, beforeProject.lastRun);
    assert.equal((afterProject.run as { state: string }).state, 'cancelled');
    process.stdout.write(`# cancel during ${phase}: ${ms.toFixed(0)} ms (${String(r.json.stoppedBy)})\n`);
  });
}
