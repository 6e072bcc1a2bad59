/**
 * @file ReportData → one self-contained HTML page: inline CSS, charts as inline SVG, images as data-URI thumbnails, no
 * script and no link to anything outside the file. Each section is rendered on its own (`reportSections`) so that
 * another page (graft serve) can place them in its own frame.
 */
import path from 'node:path';
import { DUPLICATE_MAX_PAIRS } from '../train/duplicates.ts';
import { confusionSpec, curvesSpec, renderSvg, sweepSpec } from './charts.ts';
import type { ReportData } from './data.ts';
import { thumbnails } from './thumbnails.ts';

/** At most this many images per section; the rest are counted. */
export const SHOWN_PER_SECTION = 48;

export interface ReportSection {
  id: 'summary' | 'curves' | 'cut-search' | 'confusion' | 'mistakes' | 'label-issues' | 'duplicates';
  title: string;
  html: string;
}

const esc = (s: unknown) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
const num = (v: number | null | undefined, digits = 3) =>
  v === null || v === undefined || Number.isNaN(v) ? '–' : v.toFixed(digits);

function table(head: string[], rows: (string | number)[][], cls = ''): string {
  return `<table${cls ? ` class="${cls}"` : ''}><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${typeof c === 'number' ? c : c}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
}

/** A file shown by its last two path parts (class folder and name), the full path on hover. */
function shortName(file: string): string {
  return `<span class="name" title="${esc(file)}">${esc(path.join(path.basename(path.dirname(file)), path.basename(file)))}</span>`;
}

function figure(thumbs: Map<string, string | undefined>, file: string, caption: string): string {
  const uri = thumbs.get(file);
  const img = uri
    ? `<img src="${uri}" alt="${esc(path.basename(file))}">`
    : '<div class="missing">image not readable</div>';
  return `<figure>${img}<figcaption>${shortName(file)}<br>${caption}</figcaption></figure>`;
}

function more(total: number, shown: number, what: string): string {
  return total > shown
    ? `<p class="note">… and ${total - shown} more ${what} (all of them are in report.json and in <code>--json</code>).</p>`
    : '';
}

function summary(d: ReportData): string {
  const s = d.summary;
  const parts: string[] = [];
  const a = d.accuracy;
  if (a) {
    const claim = a.usedForSelection
      ? '<strong>Optimistic:</strong> these images also chose the stopping epoch (see below).'
      : d.kind === 'evaluate'
        ? 'An unbiased estimate only if the model neither trained on these images nor chose anything with them.'
        : 'These images chose nothing: the figure is an unbiased estimate.';
    parts.push(
      `<p class="headline">Accuracy on the ${esc(a.split)} images: <strong>${pct(a.value)}</strong> (${a.correct} of ${a.total}), 95% interval ${pct(a.low)} – ${pct(a.high)} (Wilson). ${claim}</p>`,
    );
  }
  const sel = d.selection;
  if (sel) {
    parts.push(
      `<p>Choices (${esc(sel.chose.join(', '))}) were made on: ${esc(sel.method)}, score ${num(sel.score)}${sel.sd !== undefined ? ` ± ${num(sel.sd)} (sd over folds)` : ''}. ${
        sel.usedValidation
          ? 'That score is the validation accuracy itself.'
          : 'That score did the choosing, so it flatters; the validation accuracy above did not.'
      }</p>`,
    );
  }
  if (d.trainAccuracy !== undefined)
    parts.push(`<p>Accuracy on the training images: ${pct(d.trainAccuracy)} (seen in training: not an estimate).</p>`);
  const data = Object.entries(s.data)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${esc(k)} <code>${esc(v)}</code>`)
    .join(', ');
  const model: [string, string][] = [
    ['data', data],
    ['base', `${esc(s.base)}${s.baseFallback ? ` (fallback: ${esc(s.baseFallback)})` : ''}`],
    ['cut', `<code>${esc(s.cut)}</code>`],
    ['mode', esc(s.mode)],
    ['head', esc(s.head)],
    ['engine', esc(s.engine)],
  ];
  if (s.model) model.unshift(['model', `<code>${esc(s.model)}</code>`]);
  const settings = Object.entries(s.settings)
    .filter(([, v]) => v !== null)
    .map(([k, v]) => `${esc(k)} ${esc(v)}`)
    .join(', ');
  if (settings) model.push(['settings', settings]);
  const seconds = Object.entries(s.seconds)
    .map(([k, v]) => `${esc(k)} ${v.toFixed(1)} s`)
    .join(', ');
  model.push(['seconds', seconds]);
  parts.push(`<dl>${model.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join('')}</dl>`);
  parts.push(
    table(
      ['split', ...s.classes, 'total'],
      s.counts.map((c) => [esc(c.split), ...c.perClass, c.perClass.reduce((a, b) => a + b, 0)]),
      'counts',
    ),
  );
  if (s.skipped.length)
    parts.push(
      `<details><summary>${s.skipped.length} file${s.skipped.length > 1 ? 's' : ''} skipped</summary>${table(
        ['file', 'reason'],
        s.skipped.map((k) => [shortName(k.file), esc(k.reason)]),
      )}</details>`,
    );
  if (d.command) parts.push(`<p>Reproduce: <code class="cmd">${esc(d.command)}</code></p>`);
  return parts.join('\n');
}

async function curves(d: ReportData): Promise<string | undefined> {
  if (!d.history?.length || !d.stages?.length) return undefined;
  const svg = await renderSvg(curvesSpec(d.history, d.stages, d.selection?.curve));
  const rows = d.stages.map((s) => [
    esc(s.stage),
    s.epochs,
    s.bestEpoch,
    s.lr,
    num(s.valAccuracy),
    num(s.valLoss),
    s.seconds.toFixed(1),
  ]);
  const note = d.selection?.usedValidation
    ? 'Each stage stopped early on the validation loss; the dashed line marks the epoch whose weights were kept.'
    : d.selection?.chose.includes('L2 strength')
      ? 'The logistic head has no epochs: it was fitted in one go, to convergence, at the L2 strength chosen by cross-validation on the training images. The validation figures are shown for information and chose nothing.'
      : d.selection?.curve
        ? "The number of epochs was chosen by cross-validation on the training images: the green curve is the folds' pooled held-out loss and accuracy, the dashed line its lowest loss, the epochs the head then trained on all training images. The validation curve is shown for information and chose nothing."
        : 'The number of epochs was chosen by cross-validation on the training images (the dashed line); the validation curve is shown for information and chose nothing.';
  return `<div class="chart">${svg}</div><p class="note">${note}</p>${table(['stage', 'epochs', 'kept epoch', 'lr', 'val accuracy', 'val loss', 'seconds'], rows)}`;
}

async function cutSearch(d: ReportData): Promise<string | undefined> {
  if (!d.sweep?.rows.length) return undefined;
  const svg = await renderSvg(sweepSpec(d.sweep.rows));
  const rows = [...d.sweep.rows]
    .sort((a, b) => b.depth - a.depth)
    .map((r) => [
      `${r.chosen ? '<strong>' : ''}<code>${esc(r.cut)}</code>${r.chosen ? ' (chosen)</strong>' : ''}`,
      r.depth,
      r.featureSize,
      `${num(r.score)} ± ${num(r.sd)}`,
      r.seconds.toFixed(1),
    ]);
  return `<p>Each cut scored by ${esc(d.sweep.method)} cross-validation on the training images (ties within 0.005 go to the higher, cheaper cut). Differences within about one sd are noise.</p><div class="chart">${svg}</div>${table(['cut', 'depth', 'features', 'score ± sd', 'seconds'], rows)}`;
}

async function confusion(d: ReportData): Promise<string | undefined> {
  if (!d.confusion || !d.perClass) return undefined;
  const svg = await renderSvg(confusionSpec(d.confusion, d.summary.classes));
  const per = table(
    ['class', 'precision', 'recall', 'F1', 'support'],
    d.perClass.map((c) => [esc(c.label), num(c.precision), num(c.recall), num(c.f1), c.support]),
  );
  const pairs = d.confusedPairs?.length
    ? `<h3>Most confused</h3>${table(
        ['true class', 'predicted as', 'images'],
        d.confusedPairs.map((p) => [esc(p.actual), esc(p.predicted), p.count]),
      )}`
    : '';
  return `<p>On the ${esc(d.accuracy?.split ?? 'held-out')} images; rows are the true class.</p><div class="row"><div class="chart">${svg}</div><div>${per}${pairs}</div></div>`;
}

function mistakes(d: ReportData, thumbs: Map<string, string | undefined>): string | undefined {
  if (!d.mistakes) return undefined;
  if (d.mistakes.length === 0) return `<p>No ${esc(d.accuracy?.split ?? 'held-out')} image is misclassified.</p>`;
  const shown = d.mistakes.slice(0, SHOWN_PER_SECTION);
  return `<p>${d.mistakes.length} ${esc(d.accuracy?.split ?? 'held-out')} image${d.mistakes.length > 1 ? 's' : ''} misclassified, the most confident mistakes first.</p><div class="grid">${shown
    .map((m) =>
      figure(
        thumbs,
        m.file,
        `true <b>${esc(m.label)}</b>, predicted <b class="bad">${esc(m.predicted)}</b> ${pct(m.probability)}`,
      ),
    )
    .join('')}</div>${more(d.mistakes.length, shown.length, 'mistakes')}`;
}

function labelIssues(d: ReportData, thumbs: Map<string, string | undefined>): string | undefined {
  if (!d.labelIssues) return undefined;
  const intro =
    'Training images whose label a model that never saw them contradicts with confidence (out-of-fold probabilities, confident learning). Worth a look; graft moves and deletes nothing.';
  if (d.labelIssues.length === 0) return `<p>${intro}</p><p><strong>None found.</strong></p>`;
  const shown = d.labelIssues.slice(0, SHOWN_PER_SECTION);
  return `<p>${intro}</p><p>${d.labelIssues.length} likely label problem${d.labelIssues.length > 1 ? 's' : ''}, most likely first.</p><div class="grid">${shown
    .map((i) =>
      figure(
        thumbs,
        i.file,
        `labelled <b class="bad">${esc(i.given)}</b> (${pct(i.givenProbability)}), looks like <b>${esc(i.suggested)}</b> (${pct(i.confidence)})`,
      ),
    )
    .join('')}</div>${more(d.labelIssues.length, shown.length, 'issues')}`;
}

function duplicates(d: ReportData, thumbs: Map<string, string | undefined>): string | undefined {
  if (!d.duplicates) return undefined;
  const intro = `Pairs of images whose features are nearly identical (cosine similarity of centred features ≥ ${num(d.duplicateThreshold, 2)}) among ${d.duplicateImages ?? 'the'} images. A <b class="bad">leak</b> is a pair split between training and validation: it flatters the validation score. A <b class="bad">conflict</b> is a pair with two different labels.`;
  if (d.duplicates.length === 0)
    return `<p>${intro}</p><p><strong>None found: no leak between training and validation.</strong></p>`;
  const leaks = d.duplicates.filter((p) => p.leak).length;
  const conflicts = d.duplicates.filter((p) => p.conflict).length;
  const shown = d.duplicates.slice(0, SHOWN_PER_SECTION);
  const capped =
    d.duplicates.length >= DUPLICATE_MAX_PAIRS ? ` (the ${DUPLICATE_MAX_PAIRS} most similar: there are more)` : '';
  return `<p>${intro}</p><p>${d.duplicates.length} pair${d.duplicates.length > 1 ? 's' : ''}${capped}: ${leaks} leak${leaks === 1 ? '' : 's'}, ${conflicts} conflict${conflicts === 1 ? '' : 's'}.</p><div class="pairs">${shown
    .map((p) => {
      const tags = [p.leak ? '<b class="bad">leak</b>' : '', p.conflict ? '<b class="bad">conflict</b>' : '']
        .filter(Boolean)
        .join(' ');
      return `<div class="pair">${figure(thumbs, p.a, `${esc(p.splits[0])}, ${esc(p.labels[0])}`)}${figure(thumbs, p.b, `${esc(p.splits[1])}, ${esc(p.labels[1])}`)}<p>similarity ${num(p.similarity)} ${tags}</p></div>`;
    })
    .join('')}</div>${more(d.duplicates.length, shown.length, 'pairs')}`;
}

/** The sections that have something to show, in page order. */
export async function reportSections(d: ReportData): Promise<ReportSection[]> {
  const files = [
    ...(d.mistakes ?? []).slice(0, SHOWN_PER_SECTION).map((m) => m.file),
    ...(d.labelIssues ?? []).slice(0, SHOWN_PER_SECTION).map((i) => i.file),
    ...(d.duplicates ?? []).slice(0, SHOWN_PER_SECTION).flatMap((p) => [p.a, p.b]),
  ];
  const thumbs = await thumbnails(files);
  const parts: [ReportSection['id'], string, string | undefined][] = [
    ['summary', 'Summary', summary(d)],
    ['curves', 'Training curves', await curves(d)],
    ['cut-search', 'Cut search', await cutSearch(d)],
    ['confusion', 'Confusion matrix and per-class scores', await confusion(d)],
    ['mistakes', 'Mistakes', mistakes(d, thumbs)],
    ['label-issues', 'Label problems', labelIssues(d, thumbs)],
    ['duplicates', 'Near duplicates and leaks', duplicates(d, thumbs)],
  ];
  return parts
    .filter((p): p is [ReportSection['id'], string, string] => p[2] !== undefined)
    .map(([id, title, html]) => ({ id, title, html }));
}

const CSS = `
:root{color-scheme:light}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa;line-height:1.45}
header{background:#233;color:#fff;padding:14px 24px}
header h1{font-size:20px;margin:0 0 4px}
header p{margin:0;color:#cdd;font-size:13px}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:8px 24px;z-index:1}
nav a{margin-right:16px;color:#246;text-decoration:none;font-size:14px}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:4px 20px 16px;margin:18px 0}
h2{font-size:18px;border-bottom:1px solid #eee;padding-bottom:6px}
h3{font-size:15px}
table{border-collapse:collapse;margin:10px 0;font-size:13px}
th,td{border:1px solid #e2e2e2;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f4f6f8}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;font-size:14px}
dt{color:#666}dd{margin:0}
code{font-size:12.5px;background:#f3f3f3;padding:1px 4px;border-radius:3px;word-break:break-all}
.cmd{display:block;padding:8px;margin-top:4px}
.headline{font-size:16px}
.note{color:#666;font-size:13px}
.bad{color:#b22}
.chart{overflow-x:auto;margin:8px 0}
.chart svg{max-width:none}
.row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px}
figure{margin:0;font-size:12px;text-align:center}
figure img,.missing{width:96px;height:96px;object-fit:contain;background:#f0f0f0;border-radius:3px}
.missing{display:inline-flex;align-items:center;justify-content:center;color:#999;font-size:11px}
figcaption{margin-top:4px}
figcaption .name{overflow-wrap:anywhere;color:#555}
.pairs{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:14px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:6px;border:1px solid #eee;border-radius:4px;padding:8px}
.pair p{grid-column:1/3;margin:2px 0 0;font-size:13px;text-align:center}
details{margin:8px 0}
`;

/** The whole page. */
export async function renderReport(d: ReportData): Promise<string> {
  const sections = await reportSections(d);
  const nav = sections.map((s) => `<a href="#${s.id}">${esc(s.title)}</a>`).join('');
  const body = sections.map((s) => `<section id="${s.id}"><h2>${esc(s.title)}</h2>\n${s.html}\n</section>`).join('\n');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>${esc(d.title)}</title><style>${CSS}</style></head>
<body><header><h1>${esc(d.title)}</h1><p>graft report, ${esc(d.createdAt.slice(0, 19).replace('T', ' '))} UTC</p></header>
<nav>${nav}</nav>
<main>
${body}
</main></body></html>
`;
}
