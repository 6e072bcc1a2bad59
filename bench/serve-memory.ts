/**
 * The `serve` bench section: a 2,000-image project (generated, two classes) collected and trained through the page
 * in headless Chromium, with the memory of both sides sampled every 250 ms: the resident set of the server process
 * and of the training process it starts (each one's peak also read from the kernel's VmHWM), and the page's
 * JavaScript heap and DOM size (Chrome DevTools Protocol metrics). `MEMORY_BUDGET` is the documented figure; the
 * section fails when a run exceeds it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { artifactPath, browserSkipReason, launchBrowser } from '../test/browser.ts';
import { HAVE_SHARED, SHARED, tmpDir, writeColourDataset } from '../test/helpers.ts';
import { serveMirror, startServe } from '../test/serve-helpers.ts';

/** The figures README.md states for a 2,000-image project: a run over either fails the section. */
export const MEMORY_BUDGET = { serverMiB: 1200, pageHeapMiB: 64 };

export interface ServeMemoryRow {
  images: number;
  base: string;
  /** Peak resident memory of the server process and its training process together, MiB. */
  serverPeakMiB: number;
  /** Peak of the server process alone (it answers the page, makes thumbnails, runs the server-side prediction). */
  serverMainPeakMiB: number;
  /** Peak of the training process alone. */
  trainPeakMiB: number;
  /** Resident memory of the server before the run (page served, images uploaded), MiB. */
  serverIdleMiB: number;
  /** Peak JavaScript heap used by the page, MiB. */
  pagePeakHeapMiB: number;
  /** Peak DOM node count of the page. */
  pagePeakNodes: number;
  uploadSeconds: number;
  trainSeconds: number;
  valAccuracy: number | null;
}

function statusKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

export async function serveMemoryBench(log: (s: string) => void, perClass = 1000): Promise<ServeMemoryRow[]> {
  const skip = browserSkipReason();
  if (skip) {
    log(`serve: skipped (${skip})`);
    return [];
  }
  const root = tmpDir('graft-serve-bench-');
  log(`serve: writing ${2 * perClass} images`);
  const data = await writeColourDataset(path.join(root, 'data'), ['red', 'blue'], perClass, 96);
  const env: Record<string, string> = { GRAFT_CACHE_DIR: path.join(root, 'cache') };
  let mirror: Awaited<ReturnType<typeof serveMirror>> | undefined;
  let base = 'nsfw-mobilenet-v2';
  if (HAVE_SHARED) {
    mirror = await serveMirror(path.join(SHARED, 'models', 'mirror'));
    env.GRAFT_MODEL_MIRROR = mirror.url;
    base = 'mobilenet_v2_0.35';
  }
  const serve = await startServe(path.join(root, 'project'), env);
  const pid = serve.child.pid!;
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Performance.enable');
    let pagePeakHeap = 0;
    let pagePeakNodes = 0;
    let serverPeakRss = 0;
    let mainPeak = 0;
    let trainPeak = 0;
    const sample = async () => {
      const main = statusKiB(pid, 'VmRSS');
      // The training process's peak is read just before it ends too, from its own high-water mark.
      const kids = childrenOf(pid).map((c) => Math.max(statusKiB(c, 'VmRSS'), statusKiB(c, 'VmHWM')));
      const kid = Math.max(0, ...kids);
      mainPeak = Math.max(mainPeak, main);
      trainPeak = Math.max(trainPeak, kid);
      serverPeakRss = Math.max(serverPeakRss, main + kid);
      const { metrics } = (await cdp.send('Performance.getMetrics')) as { metrics: { name: string; value: number }[] };
      const get = (n: string) => metrics.find((m) => m.name === n)?.value ?? 0;
      pagePeakHeap = Math.max(pagePeakHeap, get('JSHeapUsedSize'));
      pagePeakNodes = Math.max(pagePeakNodes, get('Nodes'));
    };
    const timer = setInterval(() => void sample().catch(() => {}), 250);
    await page.goto(serve.url);
    await page.waitForSelector('body[data-ready="true"]');
    const t0 = performance.now();
    for (const c of ['red', 'blue']) {
      await page.fill('#new-class', c);
      await page.click('#add-class-btn');
      await page.waitForSelector(`.class-card[data-class="${c}"]`);
      const files = readdirSync(path.join(data, c)).map((f) => path.join(data, c, f));
      await page.setInputFiles(`.class-card[data-class="${c}"] input.upload`, files);
      await page.waitForFunction(
        ([cls, n]) => document.querySelector(`.class-card[data-class="${cls}"] .count`)?.textContent === `${n} images`,
        [c, files.length] as const,
        { timeout: 600_000, polling: 500 },
      );
    }
    const uploadSeconds = (performance.now() - t0) / 1000;
    const serverIdle = statusKiB(pid, 'VmRSS');
    log(`serve: uploaded in ${uploadSeconds.toFixed(0)} s; server ${(serverIdle / 1024).toFixed(0)} MiB`);
    await page.selectOption('#base-select', base);
    await page.waitForFunction((b) => (document.querySelector('#base-select') as HTMLSelectElement).value === b, base);
    const t1 = performance.now();
    await page.click('#train-btn');
    await page.waitForSelector('#val-accuracy', { timeout: 3_600_000 });
    const trainSeconds = (performance.now() - t1) / 1000;
    await sample();
    clearInterval(timer);
    await page.screenshot({ path: artifactPath('serve-bench-2000.png'), fullPage: false });
    const acc = await page.getAttribute('#val-accuracy', 'data-value');
    const row: ServeMemoryRow = {
      images: 2 * perClass,
      base,
      serverPeakMiB: Math.round(serverPeakRss / 1024),
      serverMainPeakMiB: Math.round(Math.max(mainPeak, statusKiB(pid, 'VmHWM')) / 1024),
      trainPeakMiB: Math.round(trainPeak / 1024),
      serverIdleMiB: Math.round(serverIdle / 1024),
      pagePeakHeapMiB: Math.round((pagePeakHeap / 1024 / 1024) * 10) / 10,
      pagePeakNodes,
      uploadSeconds: Math.round(uploadSeconds),
      trainSeconds: Math.round(trainSeconds),
      valAccuracy: acc ? Number(acc) : null,
    };
    log(`serve: ${JSON.stringify(row)}`);
    if (row.serverPeakMiB > MEMORY_BUDGET.serverMiB || row.pagePeakHeapMiB > MEMORY_BUDGET.pageHeapMiB)
      throw new Error(
        `serve: over the documented memory figure (server ${row.serverPeakMiB} MiB of ${MEMORY_BUDGET.serverMiB}, page ${row.pagePeakHeapMiB} MiB of ${MEMORY_BUDGET.pageHeapMiB})`,
      );
    return [row];
  } finally {
    await browser.close();
    await serve.stop();
    mirror?.server.close();
  }
}

// `node --import tsx bench/serve-memory.ts [PER_CLASS]` runs the section alone and prints its row.
if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = await serveMemoryBench((s) => process.stderr.write(`${s}\n`), Number(process.argv[2] ?? 1000));
  process.stdout.write(`${JSON.stringify(rows)}\n`);
}
