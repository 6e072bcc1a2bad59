/**
 * The training report end to end: `graft train --out` writes report.html; headless Chromium opens it with no console
 * error and no request of any kind; every section is there and every chart has marks; `graft report` re-renders it;
 * `graft evaluate --report` writes one for any labelled data. A full-page screenshot goes to test-artifacts/.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { artifactPath, browserSkipReason, launchBrowser, watchPage } from './browser.ts';
import { HAVE_SHARED, HYMENOPTERA, runCli, tmpDir, writeColourDataset, writeTinyBase } from './helpers.ts';

const skipBrowser = browserSkipReason();
let base: string;
let data: string;
let val: string;
let work: string;

before(async () => {
  work = tmpDir('graft-report-');
  base = await writeTinyBase(path.join(work, 'base'));
  data = await writeColourDataset(path.join(work, 'data'), ['blue', 'green', 'red'], 16);
  // Validation: the last 4 images of each class, moved out of the training folder.
  val = path.join(work, 'val');
  for (const c of ['blue', 'green', 'red']) {
    mkdirSync(path.join(val, c), { recursive: true });
    for (let i = 12; i < 16; i++) renameSync(path.join(data, c, `${c}-${i}.png`), path.join(val, c, `${c}-${i}.png`));
  }
  // A leak (a training image copied into validation) and a label problem (a red image filed under green).
  copyFileSync(path.join(data, 'blue', 'blue-0.png'), path.join(val, 'blue', 'copy-of-blue-0.png'));
  renameSync(path.join(data, 'red', 'red-3.png'), path.join(data, 'green', 'red-3.png'));
});

const ALL_SECTIONS = ['summary', 'curves', 'cut-search', 'confusion', 'mistakes', 'label-issues', 'duplicates'];

/** Opens a report in Chromium and checks what a self-contained page must do; returns the section ids found. */
async function checkPage(html: string, screenshot: string): Promise<string[]> {
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const url = pathToFileURL(html).href;
    // The page's own file is the one request allowed.
    const seen = watchPage(page, [url]);
    await page.goto(url, { waitUntil: 'load' });
    const facts = await page.evaluate(() => ({
      sections: [...document.querySelectorAll('main > section')].map((s) => s.id),
      charts: [...document.querySelectorAll('.chart svg')].map((svg) => ({
        width: svg.getBoundingClientRect().width,
        height: svg.getBoundingClientRect().height,
        // Data marks (lines, points, rules, rects) with a drawn shape; axes, legends and titles do not count.
        marks: [...svg.querySelectorAll('g.role-mark path, g.role-mark line')].filter(
          (e) => e.tagName === 'line' || (e.getAttribute('d') ?? '').length > 3,
        ).length,
      })),
      images: [...document.querySelectorAll('img')].map((i) => ({
        src: i.getAttribute('src')?.slice(0, 23),
        ok: (i as HTMLImageElement).complete && (i as HTMLImageElement).naturalWidth > 0,
      })),
    }));
    await page.screenshot({ path: artifactPath(screenshot), fullPage: true });
    assert.deepEqual(seen.errors, [], 'console errors');
    assert.deepEqual(seen.requests, [], 'requests leaving the file');
    assert.ok(facts.charts.length > 0, 'no chart');
    for (const [i, c] of facts.charts.entries()) {
      assert.ok(c.width > 50 && c.height > 50, `chart ${i} is ${c.width}x${c.height}`);
      assert.ok(c.marks > 0, `chart ${i} has no marks`);
    }
    for (const img of facts.images) {
      assert.equal(img.src, 'data:image/jpeg;base64,');
      assert.ok(img.ok, 'an inlined thumbnail does not decode');
    }
    return facts.sections;
  } finally {
    await browser.close();
  }
}

test('graft train --out writes a report with every section, and graft report renders it again', {
  skip: skipBrowser,
}, async () => {
  const out = path.join(work, 'model');
  const env = { GRAFT_CACHE_DIR: path.join(work, 'cache') };
  const r = runCli(
    [
      'train',
      data,
      '--val',
      val,
      '--base',
      base,
      '--mode',
      'auto',
      '--engine',
      'wasm',
      '--epochs',
      '30',
      '--out',
      out,
      '--json',
    ],
    env,
  );
  assert.equal(r.status, 0, r.stderr);
  const json = r.json as Record<string, unknown> & {
    labelIssues: { file: string; given: string; suggested: string }[];
    duplicates: { a: string; b: string; leak: boolean; splits: string[] }[];
    selection: { method: string; usedValidation: boolean; score: number };
    history: { stage: string; epoch: number; loss: number; valLoss?: number }[];
  };
  assert.equal(json.report, path.join(out, 'report.html'));
  assert.ok(readdirSync(out).includes('report.json'));
  // The planted label problem and the planted leak are found and named.
  assert.ok(
    json.labelIssues.some(
      (i) => i.file.endsWith(path.join('green', 'red-3.png')) && i.given === 'green' && i.suggested === 'red',
    ),
    JSON.stringify(json.labelIssues),
  );
  const leak = json.duplicates.find((d) => [d.a, d.b].some((f) => f.endsWith('copy-of-blue-0.png')));
  assert.ok(leak?.leak, JSON.stringify(json.duplicates));
  assert.ok([leak.a, leak.b].some((f) => f.endsWith(path.join('blue', 'blue-0.png'))));
  assert.equal(json.selection.usedValidation, false);
  assert.match(json.selection.method, /cross-validation on the training images/);
  // Per-epoch history of every stage, in --json and in graft.json: feature transfer has one stage, the head, trained
  // for the cross-validated number of epochs with the validation loss measured at each.
  const stages = json.stages as { stage: string; epochs: number; bestEpoch: number }[];
  assert.deepEqual(
    stages.map((s) => s.stage),
    ['head'],
  );
  assert.equal(json.history.length, stages[0].epochs);
  assert.equal(stages[0].bestEpoch, stages[0].epochs);
  assert.deepEqual(
    json.history.map((h) => h.epoch),
    Array.from({ length: stages[0].epochs }, (_, i) => i + 1),
  );
  assert.ok(json.history.every((h) => h.stage === 'head' && Number.isFinite(h.loss) && h.valLoss !== undefined));
  const meta = JSON.parse(readFileSync(path.join(out, 'graft.json'), 'utf8'));
  assert.deepEqual(meta.training.history, json.history);
  assert.deepEqual(meta.training.stages, json.stages);
  assert.deepEqual(meta.metrics.selection, json.selection);

  const html = path.join(out, 'report.html');
  const sections = await checkPage(html, 'report-tiny.png');
  assert.deepEqual(sections, ALL_SECTIONS);
  const page = readFileSync(html, 'utf8');
  assert.match(page, /copy-of-blue-0\.png/);
  assert.match(page, /graft train /);
  // No reference to anything outside the file.
  assert.doesNotMatch(page, /(src|href)="(?!data:|#)/);

  // graft report renders the same content again from report.json.
  rmSync(html);
  const again = runCli(['report', out, '--json']);
  assert.equal(again.status, 0, again.stderr);
  assert.equal(again.json?.report, html);
  assert.deepEqual(await checkPage(html, 'report-tiny-again.png'), ALL_SECTIONS);

  // --no-report: a model folder without a report.
  const bare = path.join(work, 'bare');
  const nr = runCli(
    ['train', data, '--val', val, '--base', base, '--engine', 'wasm', '--epochs', '5', '--out', bare, '--no-report'],
    env,
  );
  assert.equal(nr.status, 0, nr.stderr);
  assert.deepEqual(readdirSync(bare).sort(), ['graft.json', 'model.json', 'weights.bin']);
  const missing = runCli(['report', bare]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /no report\.json/);

  // graft evaluate --report: accuracy, confusion and mistakes for any labelled data.
  const evalHtml = path.join(work, 'eval.html');
  const ev = runCli(['evaluate', out, val, '--engine', 'wasm', '--report', evalHtml]);
  assert.equal(ev.status, 0, ev.stderr);
  assert.deepEqual(await checkPage(evalHtml, 'report-evaluate.png'), ['summary', 'confusion', 'mistakes']);
});

test('hymenoptera: the auto-mode report on the bundled base opens cleanly and stays under 2 MB', {
  skip: skipBrowser ?? (HAVE_SHARED ? undefined : '../shared/data/hymenoptera not found'),
}, async () => {
  const out = path.join(work, 'hym');
  const r = runCli(
    [
      'train',
      path.join(HYMENOPTERA, 'train'),
      '--val',
      path.join(HYMENOPTERA, 'val'),
      '--base',
      'nsfw-mobilenet-v2',
      '--mode',
      'auto',
      '--out',
      out,
      '--json',
    ],
    { GRAFT_CACHE_DIR: process.env.GRAFT_CACHE_DIR ?? path.join(work, 'hym-cache') },
  );
  assert.equal(r.status, 0, r.stderr);
  const html = path.join(out, 'report.html');
  const size = statSync(html).size;
  assert.ok(size < 2 * 1024 * 1024, `report.html is ${size} bytes`);
  const sections = await checkPage(html, 'report-hymenoptera.png');
  assert.deepEqual(sections, ALL_SECTIONS);
  const page = readFileSync(html, 'utf8');
  assert.match(page, /95% interval/);
  assert.match(page, /chose nothing|These images chose nothing/);
  // The default head is logistic: the settings give its L2 strength, not epochs it never trained.
  const settings = JSON.parse(readFileSync(path.join(out, 'report.json'), 'utf8')).summary.settings;
  assert.equal(typeof settings['L2 strength'], 'number', JSON.stringify(settings));
  assert.equal(settings['epochs trained'], undefined);
  assert.match(page, /L2 strength/);
});
