/**
 * The `scale` bench section: `graft train` on generated data sets of 1,000, 10,000 and 100,000 images (feature
 * mode) and 1,000 and 10,000 (parameter mode), with mobilenet_v2_0.35 (the default base before issue 16), each run in
 * a fresh process on a cold activation cache. Per row: images, wall time, time per image, peak RSS (GNU time's
 * maximum resident set size), cache size. The question it answers: does memory stay bounded and the cost per image
 * flat as data sets grow?
 *
 * The images (64x64 PNGs in 10 classes, upscaled by the normal resize) are generated once and kept between runs in
 * GRAFT_BENCH_DIR (default ~/.cache/graft-bench/scale-64px: about 1 GB at 100,000 images); a set of N is the first
 * N/10 images of each class, listed in a CSV. Generation resumes where it stopped.
 *
 *   npm run bench -- --sections=scale                      # 1k, 10k, 100k feature; 1k, 10k parameter
 *   npm run bench -- --sections=scale --scale=1000,10000   # only these sizes (other rows are kept)
 *   npm run bench -- --sections=scale --scale=feature:100000
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { cacheUsage } from '../src/cache/maintenance.ts';
import { mapLimit } from '../src/workflows/extract.ts';
import { haveGnuTime, parseTiming, timedNode } from './gnu-time.ts';

export interface ScaleRow {
  mode: 'feature' | 'parameter';
  images: number;
  trainImages: number;
  valImages: number;
  /** Wall seconds of the whole process (start, listing, extraction, training, export). */
  seconds: number;
  extractSeconds: number;
  trainSeconds: number;
  msPerImage: number;
  /** Process CPU time (user + sys, GNU time), seconds: comparable across runs on a shared machine where wall is not. */
  cpuSeconds?: number | null;
  /** cpuSeconds per image, ms. */
  cpuMsPerImage?: number | null;
  /** Maximum resident set size of the process, MB (10^6 bytes). */
  peakRssMB: number | null;
  /** Activation cache after the run, MB. */
  cacheMB: number;
  cacheEntries: number;
  epochs: number;
  valAccuracy: number | null;
  /** 1-minute load average before and after the run: these machines are shared. */
  load: [number, number];
  date: string;
  args: string;
}

const CLASSES = 10;
const SIZE = 64;
const MIRROR = path.resolve('../shared/models/mirror');
/** Fixed epochs (no early stop before them), so that time per image compares across sizes. */
const HEAD_EPOCHS = '10';
const DEFAULTS: { mode: ScaleRow['mode']; images: number }[] = [
  { mode: 'feature', images: 1000 },
  { mode: 'feature', images: 10000 },
  { mode: 'feature', images: 100000 },
  { mode: 'parameter', images: 1000 },
  { mode: 'parameter', images: 10000 },
];

export function scaleDataDir(): string {
  return path.resolve(process.env.GRAFT_BENCH_DIR ?? path.join(os.homedir(), '.cache', 'graft-bench'), 'scale-64px');
}

/** Deterministic per image: the class sets a hue and a stripe direction, the image adds noise and a bright square. */
function pixels(cls: number, i: number): Buffer {
  let s = (cls * 1_000_003 + i * 7919 + 1) >>> 0;
  const rnd = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const px = Buffer.alloc(SIZE * SIZE * 3);
  const hue = [(cls * 97) % 256, (cls * 53 + 80) % 256, (cls * 151 + 160) % 256];
  const [qx, qy, qs] = [Math.floor(rnd() * 48), Math.floor(rnd() * 48), 8 + Math.floor(rnd() * 12)];
  for (let y = 0; y < SIZE; y++) {
    for (let x = 0; x < SIZE; x++) {
      const stripe = ((cls % 2 ? x : y) >> (1 + (cls % 3))) & 1 ? 40 : -40;
      const inSquare = x >= qx && x < qx + qs && y >= qy && y < qy + qs;
      for (let c = 0; c < 3; c++) {
        const v = inSquare ? 255 - hue[c] : hue[c] + stripe + (rnd() - 0.5) * 50;
        px[(y * SIZE + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
    }
  }
  return px;
}

/** Makes sure the first `n / CLASSES` images of every class exist and returns the CSV that lists exactly those. */
export async function scaleDataset(n: number, log: (s: string) => void): Promise<string> {
  const dir = scaleDataDir();
  const per = Math.ceil(n / CLASSES);
  const csv = path.join(dir, `list-${n}.csv`);
  const done = path.join(dir, `complete-${per}`);
  if (existsSync(done) && existsSync(csv)) return csv;
  const t = performance.now();
  const todo: { cls: number; i: number; file: string }[] = [];
  for (let cls = 0; cls < CLASSES; cls++) {
    mkdirSync(path.join(dir, `class-${cls}`), { recursive: true });
    for (let i = 0; i < per; i++) {
      const file = path.join(dir, `class-${cls}`, `${String(i).padStart(6, '0')}.png`);
      if (!existsSync(file)) todo.push({ cls, i, file });
    }
  }
  if (todo.length) log(`scale: generating ${todo.length} images in ${dir}`);
  await mapLimit(todo, 4, async ({ cls, i, file }) => {
    // Written under a temporary name: an interrupted generation never leaves a truncated PNG behind.
    const tmp = `${file}.tmp`;
    await sharp(pixels(cls, i), { raw: { width: SIZE, height: SIZE, channels: 3 } })
      .png()
      .toFile(tmp);
    const { renameSync } = await import('node:fs');
    renameSync(tmp, file);
  });
  const rows = ['path,label'];
  for (let cls = 0; cls < CLASSES; cls++)
    for (let i = 0; i < per; i++) rows.push(`class-${cls}/${String(i).padStart(6, '0')}.png,class-${cls}`);
  writeFileSync(csv, `${rows.join('\n')}\n`);
  writeFileSync(done, '');
  if (todo.length) log(`scale: generated in ${((performance.now() - t) / 1000).toFixed(0)} s`);
  return csv;
}

/** Serves ../shared/models/mirror on loopback, standing in for storage.googleapis.com (the default base's zoo). */
function mirrorServer(): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    const file = path.join(MIRROR, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    if (!file.startsWith(MIRROR) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    const body = readFileSync(file);
    res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, server }),
    ),
  );
}

function run(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(...timedNode(args), { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += d;
    });
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** The rows asked for with --scale=N,mode:N,... (all of them by default). */
function wantedRows(): typeof DEFAULTS {
  const arg = process.argv.find((a) => a.startsWith('--scale='));
  if (!arg) return DEFAULTS;
  const asked = arg.slice('--scale='.length).split(',');
  return DEFAULTS.filter((d) => asked.includes(String(d.images)) || asked.includes(`${d.mode}:${d.images}`));
}

/**
 * Measures the rows asked for and returns them merged into `previous()`, which is called at the end: a 100,000-image
 * row takes hours, and rows stored meanwhile by another bench run must survive it.
 */
export async function scaleSection(previous: () => ScaleRow[], log: (s: string) => void): Promise<ScaleRow[]> {
  if (!haveGnuTime()) {
    log('scale: skipped (needs GNU time at /usr/bin/time for peak RSS)');
    return previous();
  }
  if (!existsSync(MIRROR)) {
    log(`scale: skipped (${MIRROR} not found: the default base's mirror)`);
    return previous();
  }
  const measured: ScaleRow[] = [];
  const { url, server } = await mirrorServer();
  try {
    for (const want of wantedRows()) {
      const csv = await scaleDataset(want.images, log);
      const cache = mkdtempSync(path.join(os.tmpdir(), 'graft-bench-scale-'));
      const extra =
        want.mode === 'parameter'
          ? ['--mode', 'parameter', '--tail-epochs', '2', '--epochs', HEAD_EPOCHS, '--patience', HEAD_EPOCHS]
          : ['--epochs', HEAD_EPOCHS, '--patience', HEAD_EPOCHS];
      const args = [
        '--import',
        'tsx',
        'src/cli/main.ts',
        'train',
        csv,
        '--base',
        'mobilenet_v2_0.35',
        '--json',
        ...extra,
      ];
      const load0 = os.loadavg()[0];
      const t = performance.now();
      log(`scale: ${want.mode} ${want.images} images (load ${load0.toFixed(1)})...`);
      const r = await run(args, { GRAFT_CACHE_DIR: cache, GRAFT_MODEL_MIRROR: url });
      const seconds = (performance.now() - t) / 1000;
      const { timing, stderr } = parseTiming(r.stderr);
      if (r.code !== 0) {
        // The whole stderr is kept: a run of 100,000 images is too long to repeat for its message.
        const saved = path.join(scaleDataDir(), `failed-${want.mode}-${want.images}-${Date.now()}.log`);
        writeFileSync(saved, r.stderr);
        log(
          `scale: ${want.mode} ${want.images} failed (exit ${r.code}; stderr in ${saved}): ${stderr.trim().split('\n').slice(-2).join(' / ')}`,
        );
        rmSync(cache, { recursive: true, force: true });
        continue;
      }
      const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
      const usage = cacheUsage(path.join(cache, 'activations'));
      rmSync(cache, { recursive: true, force: true });
      const images = out.trainImages + out.valImages;
      const row: ScaleRow = {
        mode: want.mode,
        images,
        trainImages: out.trainImages,
        valImages: out.valImages,
        seconds,
        extractSeconds: out.seconds.extract,
        trainSeconds: out.seconds.train,
        msPerImage: (seconds * 1000) / images,
        peakRssMB: timing?.peakRssMB ?? null,
        cpuSeconds: timing?.cpuSeconds ?? null,
        cpuMsPerImage: timing ? (timing.cpuSeconds * 1000) / images : null,
        cacheMB: usage.bytes / 1e6,
        cacheEntries: usage.entries,
        epochs: out.epochsRun,
        valAccuracy: out.valAccuracy,
        load: [load0, os.loadavg()[0]],
        date: new Date().toISOString(),
        args: extra.join(' '),
      };
      log(
        `scale: ${row.mode} ${images} images: ${seconds.toFixed(0)} s, ${row.msPerImage.toFixed(1)} ms/image, CPU ${row.cpuSeconds?.toFixed(0)} s (${row.cpuMsPerImage?.toFixed(1)} ms/image), peak RSS ${row.peakRssMB?.toFixed(0)} MB, cache ${row.cacheMB.toFixed(0)} MB`,
      );
      measured.push(row);
    }
  } finally {
    server.close();
  }
  const rows = [...previous()];
  for (const row of measured) {
    const at = rows.findIndex((x) => x.mode === row.mode && x.images === row.images);
    if (at >= 0) rows[at] = row;
    else rows.push(row);
  }
  return rows.sort((a, b) => (a.mode === b.mode ? a.images - b.images : a.mode === 'feature' ? -1 : 1));
}

export function renderScale(rows: ScaleRow[]): string[] {
  const lines = [
    '',
    '## Scale: `graft train` on 1,000 to 100,000 generated images (peak memory and cost per image)',
    '',
    `Generated 64x64 PNGs in ${CLASSES} classes (bench/scale.ts; kept in \`${path.join('$GRAFT_BENCH_DIR', 'scale-64px')}\`, default`,
    '`~/.cache/graft-bench`), upscaled to 224 px by the normal resize; base mobilenet_v2_0.35 from the mirror (the default',
    "base when these rows were first measured; kept so that all rows compare; today's default is mobilenet_v1_0.75_224),",
    `ONNX Runtime, \`--augment flip\` (each training image also mirrored), 20% held out, ${HEAD_EPOCHS} head epochs without early stop;`,
    'parameter rows retrain the default tail for 2 epochs. Each row is one fresh process on a cold activation cache;',
    'seconds are wall time including start-up; CPU s is the process user + sys time and peak RSS the maximum resident',
    'set size (both GNU time). On a shared machine wall time per image is not comparable between rows measured at',
    'different loads; CPU time per image is (less disturbed, though contention still inflates it somewhat).',
    'Load is the 1-minute load average before/after the row (the machine is shared).',
    '',
    '| mode | images | seconds | ms/image | CPU s | CPU ms/image | extract s | train s | peak RSS MB | cache MB | cache entries | val accuracy | load | measured |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows)
    lines.push(
      `| ${r.mode} | ${r.images} | ${r.seconds.toFixed(0)} | ${r.msPerImage.toFixed(1)} | ${r.cpuSeconds?.toFixed(0) ?? '?'} | ${r.cpuMsPerImage?.toFixed(1) ?? '?'} | ${r.extractSeconds.toFixed(0)} | ${r.trainSeconds.toFixed(0)} | ${r.peakRssMB?.toFixed(0) ?? '?'} | ${r.cacheMB.toFixed(0)} | ${r.cacheEntries} | ${r.valAccuracy?.toFixed(3) ?? ''} | ${r.load.map((l) => l.toFixed(1)).join(' / ')} | ${r.date.slice(0, 16).replace('T', ' ')} |`,
    );
  const f = (n: number) => rows.find((r) => r.mode === 'feature' && r.images >= n * 0.99 && r.images <= n * 1.01);
  const [k1, k100] = [f(1000), f(100000)];
  if (k1 && k100) {
    lines.push(
      '',
      `- Feature mode at 100,000 images: peak RSS ${k100.peakRssMB?.toFixed(0)} MB (goal: under 2,000); wall time per image ${(k100.msPerImage / k1.msPerImage).toFixed(2)}x that at 1,000${k1.cpuMsPerImage && k100.cpuMsPerImage ? `, CPU time per image ${(k100.cpuMsPerImage / k1.cpuMsPerImage).toFixed(2)}x` : ''} (goal: within 1.3x).`,
    );
  }
  return lines;
}
