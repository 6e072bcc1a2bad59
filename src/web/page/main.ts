/**
 * @file The `graft serve` page: classes and images on the left, training in the middle, trying and exporting the
 * model on the right, the last run's results below. Plain DOM: each panel is rebuilt from the server's state when
 * that state changes, which is simple and fast enough for thousands of images (thumbnails load lazily and a class
 * shows its newest images first, more on request).
 */
import { api, type Limits, token, uploadFiles, url } from './api.ts';
import { lineChart, type Series } from './chart.ts';
import { type Child, confirmDialog, fill, fmtPct, h, toast } from './dom.ts';
import { type BrowserModel, decodeFile, loadBrowserModel } from './predict.ts';
import { grabSquare, openCamera, recorder, stopCamera } from './webcam.ts';

interface ImageEntry {
  name: string;
  bytes: number;
  mtimeMs: number;
}
interface ClassEntry {
  name: string;
  images: ImageEntry[];
}
interface Settings {
  base?: string;
  mode: string;
  valSplit: number;
  epochs?: number;
  /** undefined: graft's default head (logistic regression, fitted once). */
  head?: 'logistic' | 'softmax';
  augment: 'flip' | 'none';
}
interface EpochLog {
  epoch: number;
  loss: number;
  accuracy: number;
  valLoss?: number;
  valAccuracy?: number;
}
interface TrainResult {
  mode: string;
  valAccuracy: number | null;
  trainAccuracy: number;
  trainImages: number;
  valImages: number;
  classes: string[];
  base: string;
  baseFallback?: { wanted: string; reason: string };
  cut: string;
  head: string;
  /** A logistic head's fit: its L2 strength and the cross-validated search that chose it. */
  headFit?: {
    lambda: number;
    iterations: number;
    converged: boolean;
    search?: { folds: number; rows: { lambda: number; logLoss: number; accuracy: number }[] };
  };
  engine: string;
  epochs: number;
  bestEpoch: number;
  seconds: { total: number; extract: number; train: number; export: number };
  cache: { hits: number; misses: number };
  skipped: { file: string; reason: string }[];
  history: EpochLog[];
  sweep?: { cut: string; depth: number; featureSize: number; score: number; sd: number; chosen?: boolean }[];
  parameter?: { stages: { stage: string; epochs: number; bestEpoch: number; valAccuracy?: number }[] };
  labelIssues?: { file: string; given: string; suggested: string; confidence: number }[];
  duplicates?: { a: string; b: string; similarity: number; splits?: string; kind?: string }[];
}
interface LastRun {
  finishedAt: string;
  /** The model folder holds report.html / report.json. */
  report?: boolean;
  reportData?: boolean;
  model: string;
  onnx?: string;
  onnxError?: string;
  result: TrainResult;
}
interface ProjectInfo {
  name: string;
  dir: string;
  classes: ClassEntry[];
  problems: { path: string; reason: string }[];
  settings: Settings;
  lastRun?: LastRun;
  run?: { id: string; state: string; startedAt: string };
  limits: Limits & { projectImages: number };
}
interface Choices {
  bases: { id: string; label: string; kind: string; description: string; cached?: boolean; default?: boolean }[];
  modes: { id: string; label: string; explain: string }[];
}
type RunEvent =
  | { type: 'start'; id: string; startedAt: string }
  | { type: 'progress'; phase: string; done: number; total: number; detail?: string; metrics?: Record<string, number> }
  | { type: 'end'; state: string; error?: string; stoppedMs?: number; stoppedBy?: string }
  | { type: 'download'; name: string; done?: number; total?: number; error?: string; finished?: boolean };

const PHASES: Record<string, string> = {
  download: 'Downloading the base',
  extract: 'Extracting features',
  sweep: 'Measuring cut points',
  train: 'Training',
  tail: 'Training the top layers',
  'fine-tune': 'Fine-tuning',
  onnx: 'Exporting ONNX',
};

/** Thumbnails shown per class before "Show all". */
const SHOWN = 48;

let project: ProjectInfo;
let choices: Choices;
const showAll = new Set<string>();
const live = {
  running: false,
  phase: '',
  done: 0,
  total: 0,
  detail: '',
  hits: 0,
  misses: 0,
  history: [] as { phase: string; log: EpochLog }[],
  message: '',
};

const root = document.getElementById('app')!;
const panels = {
  classes: h('section', { id: 'classes', class: 'panel classes' }),
  train: h('section', { id: 'train', class: 'panel' }),
  side: h('div', { class: 'side' }),
  results: h('section', { id: 'results', class: 'panel results' }),
};
const tryPanel = h('section', { id: 'try', class: 'panel' });
const exportPanel = h('section', { id: 'export', class: 'panel' });

async function refresh(): Promise<void> {
  project = await api<ProjectInfo>('GET', '/api/project');
  renderHeader();
  renderClasses();
  renderTrain();
  graftJson = project.lastRun
    ? await fetch(`${(await api<{ base: string }>('GET', '/api/model-token')).base}graft.json`).then((r) => r.json())
    : undefined;
  await renderResults();
  await renderExport();
  // Try it keeps its last prediction until a new model arrives.
  const key = project.lastRun?.finishedAt ?? '';
  if (key !== tryKey) {
    tryKey = key;
    fill(tryResult);
    renderTry();
  }
}
let tryKey: string | undefined;

// ---------------------------------------------------------------- header

const header = h('header', { class: 'top' });
function renderHeader(): void {
  const n = project.classes.reduce((a, c) => a + c.images.length, 0);
  fill(
    header,
    h('div', { class: 'brand' }, h('span', { class: 'logo' }, 'graft'), h('span', { class: 'project' }, project.name)),
    h(
      'div',
      { class: 'muted path', title: project.dir },
      `${project.dir} · ${project.classes.length} classes · ${n} images`,
    ),
  );
}

// ---------------------------------------------------------------- classes

function thumbUrl(cls: string, file: string): string {
  return url('/api/thumb', { class: cls, file });
}

async function addFiles(cls: string, files: File[]): Promise<void> {
  if (!files.length) return;
  const note = h('div', { class: 'uploading' }, `Uploading ${files.length} file(s) to ${cls}…`);
  panels.classes.prepend(note);
  try {
    const r = await uploadFiles(cls, files, project.limits, (d, t) => {
      note.textContent = `Uploading to ${cls}: ${d} of ${t}`;
    });
    const msg = `${r.added.length} image(s) added to ${cls}`;
    if (r.refused.length)
      toast(
        `${msg}; ${r.refused.length} refused: ${r.refused
          .slice(0, 3)
          .map((x) => x.reason)
          .join('; ')}`,
        {
          error: true,
        },
      );
    else toast(msg);
  } finally {
    note.remove();
    await refresh();
  }
}

/** Every file under dropped items, folders walked (webkitGetAsEntry), with the top folder's name kept. */
async function droppedFiles(dt: DataTransfer): Promise<{ folder?: string; sub?: string; file: File }[]> {
  const out: { folder?: string; sub?: string; file: File }[] = [];
  const readAll = (dir: FileSystemDirectoryEntry) =>
    new Promise<FileSystemEntry[]>((resolve) => {
      const reader = dir.createReader();
      const all: FileSystemEntry[] = [];
      const next = () =>
        reader.readEntries(
          (batch) => {
            if (!batch.length) resolve(all);
            else {
              all.push(...batch);
              next();
            }
          },
          () => resolve(all),
        );
      next();
    });
  const walk = async (e: FileSystemEntry, folder?: string, sub?: string): Promise<void> => {
    if (e.isFile) {
      const file = await new Promise<File>((res, rej) => (e as FileSystemFileEntry).file(res, rej));
      out.push({ folder, sub, file });
    } else if (e.isDirectory) {
      for (const c of await readAll(e as FileSystemDirectoryEntry))
        await walk(c, folder ?? e.name, folder === undefined ? undefined : (sub ?? e.name));
    }
  };
  const entries = [...dt.items].map((i) => i.webkitGetAsEntry?.()).filter((e): e is FileSystemEntry => !!e);
  if (entries.length) for (const e of entries) await walk(e);
  else for (const f of dt.files) out.push({ file: f });
  return out.filter((x) => !x.file.name.startsWith('.'));
}

function dropTarget(el: HTMLElement, onDrop: (dt: DataTransfer) => void): void {
  el.addEventListener('dragover', (e) => {
    e.preventDefault();
    el.classList.add('dragging');
  });
  el.addEventListener('dragleave', () => el.classList.remove('dragging'));
  el.addEventListener('drop', (e) => {
    e.preventDefault();
    e.stopPropagation();
    el.classList.remove('dragging');
    if (e.dataTransfer) onDrop(e.dataTransfer);
  });
}

function classCard(c: ClassEntry): HTMLElement {
  const nameInput = h('input', {
    class: 'class-name',
    value: c.name,
    'aria-label': 'class name',
    onChange: async () => {
      const to = nameInput.value.trim();
      if (!to || to === c.name) return;
      try {
        await api('POST', '/api/classes/rename', { from: c.name, to });
        toast(`Renamed ${c.name} to ${to}`);
      } catch (e) {
        toast((e as Error).message, { error: true });
      }
      await refresh();
    },
  });
  const picker = h('input', {
    type: 'file',
    multiple: true,
    accept: 'image/jpeg,image/png,image/webp,image/gif',
    class: 'upload hidden',
    onChange: () => addFiles(c.name, [...(picker.files ?? [])]),
  });
  const folderPicker = h('input', {
    type: 'file',
    multiple: true,
    webkitdirectory: true,
    class: 'upload-folder hidden',
    onChange: () => addFiles(c.name, [...(folderPicker.files ?? [])]),
  });
  const shown = showAll.has(c.name) ? c.images : c.images.slice(0, SHOWN);
  const thumbs = h(
    'div',
    { class: 'thumbs' },
    shown.map((im) =>
      h(
        'figure',
        { class: 'thumb', title: `${im.name} (${Math.round(im.bytes / 1024)} KB)` },
        h('img', { src: thumbUrl(c.name, im.name), loading: 'lazy', alt: im.name, width: 64, height: 64 }),
        h(
          'button',
          {
            class: 'remove',
            title: 'remove this image',
            'aria-label': `remove ${im.name}`,
            onClick: async () => {
              const r = await api<{ undo: string }>('POST', '/api/images/delete', {
                items: [{ class: c.name, file: im.name }],
              });
              toast(`Removed ${im.name}`, { undo: () => undo(r.undo) });
              await refresh();
            },
          },
          '×',
        ),
      ),
    ),
  );
  const card = h(
    'article',
    { class: 'class-card', 'data-class': c.name },
    h(
      'div',
      { class: 'row' },
      nameInput,
      h('span', { class: 'count' }, `${c.images.length} image${c.images.length === 1 ? '' : 's'}`),
      h(
        'button',
        {
          class: 'icon delete-class',
          title: `delete class ${c.name}`,
          onClick: async () => {
            if (!(await confirmDialog(`Delete the class "${c.name}" and its ${c.images.length} images?`, 'Delete')))
              return;
            const r = await api<{ undo: string }>('POST', '/api/classes/delete', { name: c.name });
            toast(`Deleted class ${c.name}`, { undo: () => undo(r.undo) });
            await refresh();
          },
        },
        'Delete',
      ),
    ),
    h(
      'div',
      { class: 'row actions' },
      h('button', { class: 'secondary webcam-btn', onClick: () => webcamFor(c.name) }, 'Webcam'),
      h('button', { class: 'secondary upload-btn', onClick: () => picker.click() }, 'Upload'),
      h('button', { class: 'secondary folder-btn', onClick: () => folderPicker.click() }, 'Folder…'),
      picker,
      folderPicker,
    ),
    c.images.length
      ? thumbs
      : h('p', { class: 'drop-hint' }, 'Drop images or a folder here, upload them, or record with the webcam.'),
    c.images.length > shown.length
      ? h(
          'button',
          {
            class: 'link',
            onClick: () => {
              showAll.add(c.name);
              renderClasses();
            },
          },
          `Show all ${c.images.length}`,
        )
      : null,
  );
  dropTarget(card, async (dt) =>
    addFiles(
      c.name,
      (await droppedFiles(dt)).map((x) => x.file),
    ),
  );
  return card;
}

async function undo(id: string): Promise<void> {
  try {
    const r = await api<{ undone: string }>('POST', '/api/undo', { id });
    toast(`Undone: ${r.undone}`);
  } catch (e) {
    toast((e as Error).message, { error: true });
  }
  await refresh();
}

async function webcamFor(cls: string): Promise<void> {
  try {
    await recorder(cls, async (files) => {
      const r = await uploadFiles(cls, files, project.limits);
      if (r.refused.length) toast(`${r.refused.length} frame(s) refused: ${r.refused[0].reason}`, { error: true });
      await refresh();
    });
  } catch (e) {
    toast((e as Error).message, { error: true });
  }
}

function renderClasses(): void {
  const input = h('input', { id: 'new-class', placeholder: 'New class name', 'aria-label': 'new class name' });
  const add = async () => {
    const name = input.value.trim() || `Class ${project.classes.length + 1}`;
    try {
      await api('POST', '/api/classes', { name });
    } catch (e) {
      toast((e as Error).message, { error: true });
    }
    await refresh();
  };
  input.addEventListener('keydown', (e) => e.key === 'Enter' && add());
  const importZone = h(
    'div',
    { class: 'import-zone' },
    'Drop a folder of class folders here to import every class at once.',
  );
  dropTarget(importZone, async (dt) => {
    const files = await droppedFiles(dt);
    const byClass = new Map<string, File[]>();
    for (const f of files) {
      const cls = f.sub ?? f.folder;
      if (!cls) continue;
      byClass.set(cls, [...(byClass.get(cls) ?? []), f.file]);
    }
    if (!byClass.size) return toast('Drop folders (one per class), not single files', { error: true });
    for (const [cls, list] of byClass) {
      if (!project.classes.some((c) => c.name === cls))
        await api('POST', '/api/classes', { name: cls }).catch(() => {});
      await addFiles(cls, list);
    }
  });
  fill(
    panels.classes,
    h('h2', null, '1 · Classes and images'),
    project.problems.length
      ? h(
          'div',
          { class: 'problems' },
          h('strong', null, 'Not used:'),
          h(
            'ul',
            null,
            project.problems.slice(0, 10).map((p) => h('li', null, `${p.path}: ${p.reason}`)),
          ),
        )
      : null,
    ...project.classes.map(classCard),
    h(
      'div',
      { class: 'row add-class' },
      input,
      h('button', { id: 'add-class-btn', class: 'primary', onClick: add }, '+ Add a class'),
    ),
    importZone,
  );
}

// ---------------------------------------------------------------- training

function saveSettings(patch: Partial<Settings>): Promise<void> {
  return api<{ settings: Settings }>('PUT', '/api/settings', patch).then(
    (r) => {
      project.settings = r.settings;
      renderTrain();
    },
    (e) => toast((e as Error).message, { error: true }),
  );
}

const downloads = new Map<string, { done: number; total: number; error?: string; finished?: boolean }>();

/** Whether the user opened the train panel's Advanced section. */
let advancedOpen = false;

function renderTrain(): void {
  const st = project.settings;
  const selected = st.base ?? choices.bases.find((b) => b.default)?.id ?? '';
  const choice = choices.bases.find((b) => b.id === selected);
  const group = (kind: string, label: string) => {
    const items = choices.bases.filter((b) => b.kind === kind);
    return items.length
      ? h(
          'optgroup',
          { label },
          items.map((b) =>
            h(
              'option',
              { value: b.id, selected: b.id === selected },
              `${b.label}${b.default ? ' (default)' : ''}${b.kind === 'zoo' ? (b.cached ? ' ✓' : ' ↓') : ''}`,
            ),
          ),
        )
      : null;
  };
  const baseSelect = h(
    'select',
    { id: 'base-select', onChange: () => saveSettings({ base: baseSelect.value }) },
    group('zoo', 'Model zoo (downloaded once)'),
    group('bundled', 'Bundled (offline)'),
    group('file', 'Uploaded into this project'),
  );
  const dl = choice ? downloads.get(choice.id) : undefined;
  const baseFiles = h('input', {
    type: 'file',
    multiple: true,
    class: 'hidden',
    id: 'base-file',
    accept: '.json,.bin,.onnx',
    onChange: async () => {
      const fd = new FormData();
      for (const f of baseFiles.files ?? []) fd.append('files', f, f.name);
      try {
        const r = await api<{ base: string }>('POST', '/api/bases', fd);
        choices = await api<Choices>('GET', '/api/choices');
        await saveSettings({ base: r.base });
        toast('Network uploaded');
      } catch (e) {
        toast((e as Error).message, { error: true });
      }
    },
  });
  const baseInfo = h(
    'div',
    { class: 'base-info muted' },
    choice?.description ?? '',
    choice?.kind === 'zoo' && !choice.cached
      ? h(
          'div',
          { class: 'row' },
          dl && !dl.finished
            ? h('progress', { id: 'download-progress', max: dl.total || 1, value: dl.done })
            : h(
                'button',
                {
                  class: 'link',
                  id: 'download-btn',
                  onClick: () =>
                    api('POST', '/api/bases/pull', { name: choice.id }).catch((e) => toast(e.message, { error: true })),
                },
                'Download now',
              ),
          dl?.error ? h('span', { class: 'error' }, dl.error) : ' (or it downloads when you train)',
        )
      : null,
  );
  const modes = h(
    'fieldset',
    { class: 'modes' },
    h('legend', null, 'Method'),
    choices.modes.map((m) =>
      h(
        'label',
        { class: 'mode' },
        h('input', {
          type: 'radio',
          name: 'mode',
          value: m.id,
          checked: st.mode === m.id,
          onChange: () => saveSettings({ mode: m.id }),
        }),
        h('span', null, h('strong', null, m.label), h('br'), h('span', { class: 'muted' }, m.explain)),
      ),
    ),
  );
  const epochs = h('input', {
    type: 'number',
    min: 1,
    max: 10000,
    placeholder: 'auto',
    value: st.epochs ?? '',
    id: 'epochs',
    onChange: () => saveSettings({ epochs: epochs.value ? Number(epochs.value) : undefined }),
  });
  const valSplit = h('input', {
    type: 'number',
    min: 0,
    max: 0.5,
    step: 0.05,
    value: st.valSplit,
    id: 'val-split',
    onChange: () => saveSettings({ valSplit: Number(valSplit.value) }),
  });
  const augment = h('input', {
    type: 'checkbox',
    checked: st.augment === 'flip',
    id: 'augment',
    onChange: () => saveSettings({ augment: augment.checked ? 'flip' : 'none' }),
  });
  const head = h(
    'select',
    {
      id: 'head-select',
      // An empty string, not a missing key: JSON drops undefined, and the server would keep the old choice.
      onChange: () => saveSettings({ head: (head.value || '') as Settings['head'] }),
    },
    h('option', { value: '', selected: st.head !== 'softmax' }, 'Logistic regression, fitted once (default)'),
    h('option', { value: 'softmax', selected: st.head === 'softmax' }, 'Softmax layer trained by epochs (live curves)'),
  );
  const advanced = h(
    'details',
    {
      class: 'advanced',
      // Every saved setting re-renders this panel: the section stays open while the user works in it.
      open: advancedOpen,
      onToggle: () => {
        advancedOpen = advanced.open;
      },
    },
    h('summary', null, 'Advanced'),
    h('label', null, 'Classifier on the features (feature transfer and auto cut) ', head),
    h('label', null, 'Epochs (maximum; training stops early when validation loss stops improving) ', epochs),
    h('label', null, 'Validation fraction (held out per class, by a hash of the file name) ', valSplit),
    h('label', null, augment, ' Also train on mirrored images'),
  );
  const total = project.classes.reduce((a, c) => a + c.images.length, 0);
  const trainBtn = h(
    'button',
    {
      id: 'train-btn',
      class: 'primary big',
      disabled: live.running,
      onClick: async () => {
        try {
          await api('POST', '/api/train');
        } catch (e) {
          toast((e as Error).message, { error: true });
        }
      },
    },
    live.running ? 'Training…' : project.lastRun ? 'Train again' : 'Train model',
  );
  const cancelBtn = live.running
    ? h(
        'button',
        {
          id: 'cancel-btn',
          class: 'secondary',
          onClick: async () => {
            cancelBtn!.setAttribute('disabled', '');
            try {
              await api('POST', '/api/train/cancel');
            } catch (e) {
              toast((e as Error).message, { error: true });
            }
          },
        },
        'Cancel',
      )
    : null;
  fill(
    panels.train,
    h('h2', null, '2 · Train'),
    h('label', { class: 'field' }, h('span', null, 'Base network'), baseSelect),
    baseInfo,
    h(
      'button',
      { class: 'link', onClick: () => baseFiles.click() },
      'Upload a network (model.json + weights, or .onnx)…',
    ),
    baseFiles,
    modes,
    advanced,
    h(
      'div',
      { class: 'row' },
      trainBtn,
      cancelBtn,
      h('span', { class: 'muted' }, `${total} images in ${project.classes.length} classes`),
    ),
    progressView(),
  );
}

function progressView(): HTMLElement {
  const box = h('div', { id: 'progress', class: live.running || live.message ? 'progress' : 'progress empty' });
  if (live.running) {
    const name = PHASES[live.phase] ?? live.phase ?? 'Starting';
    const what =
      live.phase === 'extract'
        ? `${live.done} of ${live.total} images · cache hits ${live.hits}`
        : live.phase === 'download'
          ? `${(live.done / 1e6).toFixed(1)} of ${(live.total / 1e6).toFixed(1)} MB`
          : live.total
            ? `${live.done} of ${live.total}${live.detail ? ` · ${live.detail}` : ''}`
            : '';
    box.append(
      h('div', { class: 'stage', id: 'stage' }, h('strong', null, live.phase ? name : 'Starting…'), ' ', what),
      h('progress', { id: 'progress-bar', max: live.total || 1, value: live.done }),
    );
  } else if (live.message) box.append(h('div', { class: 'stage', id: 'stage' }, live.message));
  if (live.history.length)
    box.append(
      curves(
        live.history.map((x) => x.log),
        'live',
      ),
    );
  return box;
}

/** A logistic head fitted once has no epochs to tell of: its one setting is the L2 strength the folds chose. */
const fittedOnce = (r: TrainResult) => r.head === 'logistic' && !r.parameter && r.headFit !== undefined;

function headRows(r: TrainResult): HTMLElement[] {
  const fit = r.headFit;
  if (!fittedOnce(r) || !fit) return [h('dt', null, 'Epochs'), h('dd', null, `best ${r.bestEpoch} of ${r.epochs}`)];
  const how = fit.search
    ? `chosen by ${fit.search.folds}-fold cross-validation on the training images among ${fit.search.rows.length} values`
    : 'as given';
  return [
    h('dt', null, 'Head'),
    h(
      'dd',
      { id: 'head-fit', 'data-lambda': fit.lambda },
      `logistic regression, L2 strength ${fmtLambda(fit.lambda)} (${how}); ${fit.iterations} L-BFGS iterations${fit.converged ? '' : ', not converged'}`,
    ),
  ];
}

const fmtLambda = (x: number) => (x >= 0.01 && x < 100 ? String(+x.toPrecision(3)) : x.toExponential(1));

/** Held-out loss and accuracy per L2 strength (x: log10 of it), the chosen one marked. */
function lambdaSearch(fit: NonNullable<TrainResult['headFit']>): HTMLElement {
  const rows = [...(fit.search?.rows ?? [])].sort((a, b) => a.lambda - b.lambda);
  const x = (l: number) => Math.log10(l);
  const marker = { x: x(fit.lambda), label: 'chosen' };
  return h(
    'div',
    { class: 'curves', id: 'result-lambda' },
    lineChart([{ name: 'held-out', color: '#16a34a', points: rows.map((r) => [x(r.lambda), r.logLoss]) }], {
      title: 'Held-out log loss by L2 strength',
      xLabel: 'log10 L2 strength',
      marker,
    }),
    lineChart([{ name: 'held-out', color: '#16a34a', points: rows.map((r) => [x(r.lambda), r.accuracy]) }], {
      title: 'Held-out accuracy by L2 strength',
      xLabel: 'log10 L2 strength',
      yRange: [0, 1],
      marker,
    }),
  );
}

function resultChart(r: TrainResult): HTMLElement | null {
  if (fittedOnce(r) && r.headFit?.search && r.headFit.search.rows.length > 1) return lambdaSearch(r.headFit);
  if (fittedOnce(r)) return null;
  return r.history.length ? curves(r.history, 'result', r.bestEpoch) : null;
}

function curves(history: EpochLog[], id: string, best?: number): HTMLElement {
  const pts = (f: (l: EpochLog) => number | undefined) =>
    history
      .map((l, i) => [i + 1, f(l)] as [number, number | undefined])
      .filter((p): p is [number, number] => p[1] !== undefined);
  const marker = best ? { x: history.findIndex((l) => l.epoch === best) + 1, label: 'best' } : undefined;
  const loss: Series[] = [
    { name: 'train', color: '#2563eb', points: pts((l) => l.loss) },
    { name: 'validation', color: '#ea580c', points: pts((l) => l.valLoss), dashed: true },
  ];
  const acc: Series[] = [
    { name: 'train', color: '#2563eb', points: pts((l) => l.accuracy) },
    { name: 'validation', color: '#ea580c', points: pts((l) => l.valAccuracy), dashed: true },
  ];
  return h(
    'div',
    { class: 'curves', id: `${id}-curves` },
    lineChart(loss, { title: 'Loss', marker }),
    lineChart(acc, { title: 'Accuracy', yRange: [0, 1], marker }),
  );
}

function onEvent(e: RunEvent): void {
  if (e.type === 'download') {
    downloads.set(e.name, { done: e.done ?? 0, total: e.total ?? 0, error: e.error, finished: e.finished });
    if (e.finished && !e.error)
      void api<Choices>('GET', '/api/choices').then((c) => {
        choices = c;
        renderTrain();
      });
    else renderTrain();
    return;
  }
  if (e.type === 'start') {
    Object.assign(live, {
      running: true,
      phase: '',
      done: 0,
      total: 0,
      detail: '',
      hits: 0,
      misses: 0,
      history: [],
      message: '',
    });
  } else if (e.type === 'progress') {
    live.phase = e.phase;
    live.done = e.done;
    live.total = e.total;
    live.detail = e.detail ?? '';
    if (e.phase === 'extract' && e.metrics) {
      live.hits = e.metrics.cacheHits ?? live.hits;
      live.misses = e.metrics.cacheMisses ?? live.misses;
    }
    if (e.metrics && 'loss' in e.metrics) live.history.push({ phase: e.phase, log: e.metrics as unknown as EpochLog });
  } else if (e.type === 'end') {
    live.running = false;
    // A finished run's curves move to the results; a cancelled or failed one keeps what it drew.
    if (e.state === 'done') live.history = [];
    live.message =
      e.state === 'done'
        ? 'Training finished.'
        : e.state === 'cancelled'
          ? `Cancelled (stopped in ${((e.stoppedMs ?? 0) / 1000).toFixed(1)} s); the project is as it was before.`
          : `Training failed: ${e.error}`;
    if (e.state === 'failed') toast(live.message, { error: true });
    void api<Choices>('GET', '/api/choices').then((c) => {
      choices = c;
      return refresh();
    });
    return;
  }
  // Progress arrives often: only the training panel is redrawn.
  const old = document.getElementById('progress');
  if (old && panels.train.contains(old)) old.replaceWith(progressView());
  else renderTrain();
  const btn = document.getElementById('train-btn');
  if (live.running && btn && !btn.hasAttribute('disabled')) renderTrain();
}

// ---------------------------------------------------------------- results

/** 95% Wilson score interval of a proportion. */
function wilson(p: number, n: number): [number, number] {
  if (!n) return [0, 1];
  const z = 1.96;
  const d = 1 + (z * z) / n;
  const c = (p + (z * z) / (2 * n)) / d;
  const w = (z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / d;
  return [Math.max(0, c - w), Math.min(1, c + w)];
}

function imageLink(rel: string): HTMLElement {
  const [cls, ...rest] = rel.split('/');
  const file = rest.join('/');
  return h('img', { src: thumbUrl(cls, file), width: 64, height: 64, loading: 'lazy', alt: rel, title: rel });
}

function labelIssues(r: TrainResult, d?: ReportData): HTMLElement | null {
  const found = d?.labelIssues ?? r.labelIssues;
  if (!found) return null;
  // Images moved or deleted since the run drop out of the list.
  const present = new Set(project.classes.flatMap((c) => c.images.map((i) => `${c.name}/${i.name}`)));
  const issues = found.filter((i) => present.has(i.file) && i.file.startsWith(`${i.given}/`));
  return h(
    'div',
    { class: 'label-issues', id: 'label-issues' },
    h('h3', null, `Possible label problems (${issues.length})`),
    issues.length
      ? h(
          'p',
          { class: 'muted' },
          'Images whose label the model, trained without them, finds unlikely. Check each one: move it to the suggested class or delete it (you can undo either).',
        )
      : h('p', { class: 'muted' }, 'None found.'),
    h(
      'div',
      { class: 'issue-list' },
      issues.slice(0, 60).map((i) => {
        const [cls, ...rest] = i.file.split('/');
        const file = rest.join('/');
        return h(
          'div',
          { class: 'issue', 'data-file': i.file },
          imageLink(i.file),
          h(
            'div',
            null,
            h('div', null, file),
            h('div', { class: 'muted' }, `labelled ${i.given}, looks like ${i.suggested} (${fmtPct(i.confidence, 0)})`),
          ),
          h(
            'button',
            {
              class: 'secondary move-issue',
              onClick: async () => {
                if (!(await confirmDialog(`Move ${file} from ${cls} to ${i.suggested}?`, 'Move'))) return;
                const res = await api<{ undo: string }>('POST', '/api/images/move', {
                  items: [{ class: cls, file }],
                  to: i.suggested,
                });
                toast(`Moved ${file} to ${i.suggested}`, { undo: () => undo(res.undo) });
                await refresh();
              },
            },
            `Move to ${i.suggested}`,
          ),
          h(
            'button',
            {
              class: 'secondary delete-issue',
              onClick: async () => {
                if (!(await confirmDialog(`Delete ${i.file}?`, 'Delete'))) return;
                const res = await api<{ undo: string }>('POST', '/api/images/delete', {
                  items: [{ class: cls, file }],
                });
                toast(`Deleted ${file}`, { undo: () => undo(res.undo) });
                await refresh();
              },
            },
            'Delete',
          ),
        );
      }),
    ),
  );
}

async function renderResults(): Promise<void> {
  const run = project.lastRun;
  const d = await loadReportData();
  if (!run) {
    fill(panels.results);
    panels.results.classList.add('hidden');
    return;
  }
  panels.results.classList.remove('hidden');
  const r = run.result;
  const [lo, hi] = d?.accuracy
    ? [d.accuracy.low, d.accuracy.high]
    : r.valAccuracy !== null
      ? wilson(r.valAccuracy, r.valImages)
      : [0, 0];
  const summary = h(
    'div',
    { class: 'summary' },
    h(
      'div',
      { class: 'big-number', id: 'val-accuracy', 'data-value': r.valAccuracy ?? '' },
      r.valAccuracy !== null ? fmtPct(r.valAccuracy) : 'n/a',
      h(
        'span',
        { class: 'muted' },
        r.valAccuracy !== null
          ? ` validation accuracy (95% interval ${fmtPct(lo, 0)}–${fmtPct(hi, 0)}, ${r.valImages} images)`
          : ' no validation images',
      ),
    ),
    h(
      'dl',
      null,
      h('dt', null, 'Training accuracy'),
      h('dd', null, fmtPct(r.trainAccuracy), ` on ${r.trainImages} images`),
      h('dt', null, 'Base · cut · method'),
      h('dd', null, `${r.base} · ${r.cut} · ${r.mode}${r.parameter ? ' (with retrained layers)' : ''}`),
      ...headRows(r),
      h('dt', null, 'Time'),
      h(
        'dd',
        null,
        `${r.seconds.total.toFixed(1)} s (features ${r.seconds.extract.toFixed(1)} s, cache hits ${r.cache.hits} of ${r.cache.hits + r.cache.misses})`,
      ),
      h('dt', null, 'Finished'),
      h('dd', null, new Date(run.finishedAt).toLocaleString()),
    ),
    d?.selection
      ? h(
          'p',
          { class: 'muted', id: 'selection' },
          `Chosen by ${d.selection.method} (${d.selection.chose.join(', ')}; score ${fmtPct(d.selection.score)}). `,
          d.selection.usedValidation
            ? 'The validation images took part in that choice, so the accuracy above is optimistic.'
            : 'The validation images chose nothing: the accuracy above is an honest estimate.',
        )
      : null,
    r.baseFallback ? h('p', { class: 'warn' }, `Note: ${r.baseFallback.reason}; used ${r.base} instead.`) : null,
    r.skipped.length
      ? h(
          'details',
          null,
          h('summary', null, `${r.skipped.length} file(s) skipped`),
          h(
            'ul',
            null,
            r.skipped.slice(0, 50).map((s) => h('li', null, `${s.file}: ${s.reason}`)),
          ),
        )
      : null,
  );
  const sweep = r.sweep
    ? h(
        'table',
        { class: 'sweep' },
        h('caption', null, 'Cut search (held-out accuracy per cut point)'),
        h('tr', null, h('th', null, 'cut'), h('th', null, 'depth'), h('th', null, 'features'), h('th', null, 'score')),
        r.sweep.map((row) =>
          h(
            'tr',
            { class: row.chosen ? 'chosen' : '' },
            h('td', null, row.chosen ? `★ ${row.cut}` : row.cut),
            h('td', null, row.depth),
            h('td', null, row.featureSize),
            h('td', null, `${row.score.toFixed(3)} ± ${row.sd.toFixed(3)}`),
          ),
        ),
      )
    : null;
  const report = run.report
    ? h(
        'details',
        { class: 'report', open: true },
        h('summary', null, 'Full report (report.html in the model folder)'),
        h('iframe', { id: 'report-frame', src: url('/api/report'), title: 'training report', sandbox: '' }),
        h('a', { href: url('/api/report'), target: '_blank', rel: 'noopener' }, 'Open the report in a new tab'),
      )
    : null;
  fill(
    panels.results,
    h('h2', null, '3 · Results of the last run'),
    h('div', { class: 'results-grid' }, summary, resultChart(r)),
    sweep,
    confusionView(r),
    mistakesView(d),
    labelIssues(r, d),
    duplicatesView(d),
    report,
  );
}

/** The subset of report.json (src/report/data.ts) the page shows natively; paths are project-relative. */
interface ReportData {
  accuracy?: {
    split: string;
    correct: number;
    total: number;
    value: number;
    low: number;
    high: number;
    usedForSelection: boolean;
  };
  selection?: { method: string; chose: string[]; score: number; sd?: number; usedValidation: boolean };
  mistakes?: { file: string; label: string; predicted: string; probability: number }[];
  labelIssues?: TrainResult['labelIssues'];
  duplicates?: {
    a: string;
    b: string;
    similarity: number;
    splits: string[];
    labels: string[];
    leak: boolean;
    conflict: boolean;
  }[];
  perClass?: { label: string; precision: number; recall: number; f1: number; support: number }[];
}
let reportData: { key: string; data?: ReportData } | undefined;

async function loadReportData(): Promise<ReportData | undefined> {
  const key = project.lastRun?.finishedAt ?? '';
  if (reportData?.key !== key)
    reportData = {
      key,
      data: project.lastRun?.reportData
        ? await api<ReportData>('GET', '/api/report-data').catch(() => undefined)
        : undefined,
    };
  return reportData.data;
}

function mistakesView(d?: ReportData): HTMLElement | null {
  if (!d?.mistakes?.length) return null;
  return h(
    'div',
    { class: 'mistakes', id: 'mistakes' },
    h('h3', null, `Mistakes on the validation images (${d.mistakes.length})`),
    h(
      'div',
      { class: 'tiles' },
      d.mistakes
        .slice(0, 48)
        .map((m) =>
          h(
            'figure',
            { class: 'tile' },
            imageLink(m.file),
            h(
              'figcaption',
              null,
              `${m.label} → ${m.predicted}`,
              h('br'),
              h('span', { class: 'muted' }, fmtPct(m.probability, 0)),
            ),
          ),
        ),
    ),
  );
}

function duplicatesView(d?: ReportData): HTMLElement | null {
  if (!d?.duplicates?.length) return null;
  return h(
    'div',
    { class: 'duplicates', id: 'duplicates' },
    h('h3', null, `Near duplicates (${d.duplicates.length})`),
    h(
      'p',
      { class: 'muted' },
      'Pairs of images the network sees as nearly the same. A pair across training and validation flatters the validation score (a leak); a pair with two labels is a conflict.',
    ),
    h(
      'div',
      { class: 'pairs' },
      d.duplicates
        .slice(0, 24)
        .map((p) =>
          h(
            'div',
            { class: 'pair' },
            imageLink(p.a),
            imageLink(p.b),
            h(
              'div',
              null,
              h('div', null, `${p.a}`),
              h('div', null, `${p.b}`),
              h(
                'div',
                { class: p.leak || p.conflict ? 'warn' : 'muted' },
                `similarity ${p.similarity.toFixed(3)}${p.leak ? ' · leak' : ''}${p.conflict ? ' · conflict' : ''}`,
              ),
            ),
          ),
        ),
    ),
  );
}

let graftJson: { metrics?: { confusion?: number[][] }; labels?: string[] } | undefined;
function confusionView(r: TrainResult): HTMLElement | null {
  const m = graftJson?.metrics?.confusion;
  const labels = graftJson?.labels ?? r.classes;
  if (!m) return null;
  const max = Math.max(1, ...m.flat());
  return h(
    'table',
    { class: 'confusion', id: 'confusion' },
    h('caption', null, 'Confusion matrix (validation; rows: true class, columns: predicted)'),
    h(
      'tr',
      null,
      h('th', null, ''),
      labels.map((l) => h('th', null, l)),
    ),
    m.map((row, i) =>
      h(
        'tr',
        null,
        h('th', null, labels[i]),
        row.map((v, j) =>
          h(
            'td',
            { style: `background: rgba(${i === j ? '37,99,235' : '234,88,12'}, ${(v / max) * 0.6 + (v ? 0.08 : 0)})` },
            v,
          ),
        ),
      ),
    ),
  );
}

// ---------------------------------------------------------------- try it

let browserModel: { key: string; model: Promise<BrowserModel> } | undefined;
function modelInBrowser(): Promise<BrowserModel> {
  const key = project.lastRun?.finishedAt ?? '';
  if (browserModel?.key !== key) {
    void browserModel?.model.then((m) => m.dispose()).catch(() => {});
    browserModel = {
      key,
      model: api<{ base: string }>('GET', '/api/model-token').then((r) => loadBrowserModel(r.base)),
    };
  }
  return browserModel.model;
}

/** Largest difference between browser and server probabilities that still counts as agreement. */
const AGREE = 0.01;

function bars(labels: string[], probs: number[], cls: string): HTMLElement {
  const best = probs.indexOf(Math.max(...probs));
  return h(
    'div',
    { class: `bars ${cls}`, 'data-probs': JSON.stringify(probs), 'data-top': labels[best] },
    labels.map((l, i) =>
      h(
        'div',
        { class: `bar${i === best ? ' best' : ''}` },
        h('span', { class: 'label' }, l),
        h('span', { class: 'track' }, h('span', { class: 'fill', style: `width:${(probs[i] * 100).toFixed(1)}%` })),
        h('span', { class: 'pct' }, fmtPct(probs[i])),
      ),
    ),
  );
}

const tryResult = h('div', { id: 'try-result' });
let tryCam: { stream: MediaStream; video: HTMLVideoElement; timer: number } | undefined;

async function predictBoth(
  src: ImageBitmap | HTMLCanvasElement,
  blob: Blob | (() => Promise<Blob>),
  source: string,
  preview?: HTMLElement,
): Promise<void> {
  const model = await modelInBrowser();
  const t0 = performance.now();
  const browser = await model.predict(src);
  const ms = performance.now() - t0;
  let server: { labels: string[]; probabilities: number[] } | undefined;
  let serverError: string | undefined;
  try {
    server = await api('POST', '/api/predict', typeof blob === 'function' ? await blob() : blob);
  } catch (e) {
    serverError = (e as Error).message;
  }
  const diff = server ? Math.max(...browser.map((p, i) => Math.abs(p - server!.probabilities[i]))) : NaN;
  const agree = server && diff <= AGREE;
  const top = (p: number[]) => model.labels[p.indexOf(Math.max(...p))];
  tryResult.dataset.source = source;
  fill(
    tryResult,
    preview ?? '',
    h(
      'h4',
      null,
      `In this browser (TF.js ${model.backend}, ${ms.toFixed(0)} ms): `,
      h('strong', { id: 'browser-top' }, top(browser)),
    ),
    bars(model.labels, browser, 'browser-probs'),
    h('h4', null, 'On the server: ', h('strong', null, server ? top(server.probabilities) : '–')),
    server ? bars(model.labels, server.probabilities, 'server-probs') : h('p', { class: 'error' }, serverError ?? ''),
    server
      ? h(
          'p',
          { id: 'agree', class: agree ? 'ok' : 'warn', 'data-diff': diff },
          agree
            ? `✓ Browser and server agree (largest difference ${diff.toFixed(4)}).`
            : `⚠ Browser and server disagree: probabilities differ by up to ${diff.toFixed(3)}${top(browser) !== top(server.probabilities) ? ', and so does the top label' : ''}.`,
        )
      : null,
  );
}

async function tryFile(f: File): Promise<void> {
  stopTryCam();
  const src = URL.createObjectURL(f);
  try {
    // The file's own pixels at full resolution go to the model; the <img> is only the preview.
    const pixels = await decodeFile(f).catch(() => {
      throw new Error(`${f.name}: this browser cannot decode it as an image`);
    });
    try {
      await predictBoth(pixels, f, 'file', h('img', { src, class: 'try-preview', alt: f.name }));
    } finally {
      pixels.close();
    }
  } catch (e) {
    fill(tryResult, h('p', { class: 'error' }, (e as Error).message));
  }
}

function stopTryCam(): void {
  if (!tryCam) return;
  clearTimeout(tryCam.timer);
  stopCamera(tryCam.stream);
  tryCam = undefined;
  renderTry();
}

async function startTryCam(): Promise<void> {
  const stream = await openCamera();
  const video = h('video', { autoplay: true, muted: true, playsinline: true, class: 'cam' });
  video.srcObject = stream;
  await video.play().catch(() => {});
  tryCam = { stream, video, timer: 0 };
  renderTry();
  const loop = async () => {
    if (!tryCam) return;
    if (video.videoWidth) {
      const frame = grabSquare(video, 256);
      await predictBoth(
        frame,
        // PNG: the server gets the very pixels the browser predicted on (a JPEG would add its own error).
        () => new Promise<Blob>((res) => frame.toBlob((b) => res(b!), 'image/png')),
        'webcam',
      ).catch(() => {});
    }
    if (tryCam) tryCam.timer = window.setTimeout(loop, 700);
  };
  void loop();
}

function renderTry(): void {
  if (!project?.lastRun) {
    fill(tryPanel, h('h2', null, '4 · Try it'), h('p', { class: 'muted' }, 'Train a model first.'));
    return;
  }
  const input = h('input', {
    type: 'file',
    accept: 'image/*',
    id: 'try-file',
    class: 'hidden',
    onChange: () => input.files?.[0] && tryFile(input.files[0]),
  });
  const drop = h(
    'div',
    { class: 'drop', id: 'try-drop', onClick: () => input.click() },
    tryCam ? tryCam.video : 'Drop an image here or click to choose one',
  );
  dropTarget(drop, (dt) => dt.files[0] && tryFile(dt.files[0]));
  fill(
    tryPanel,
    h('h2', null, '4 · Try it'),
    h(
      'p',
      { class: 'muted' },
      'The model runs in this page with TF.js, as it will in your own web app; the server runs the same image for comparison.',
    ),
    drop,
    input,
    h(
      'div',
      { class: 'row' },
      tryCam
        ? h('button', { class: 'secondary', onClick: stopTryCam }, 'Stop webcam')
        : h(
            'button',
            {
              class: 'secondary',
              id: 'try-webcam',
              onClick: () => startTryCam().catch((e) => toast(e.message, { error: true })),
            },
            'Use the webcam',
          ),
    ),
    tryResult,
  );
}

// ---------------------------------------------------------------- export

async function renderExport(): Promise<void> {
  if (!project.lastRun) {
    fill(exportPanel, h('h2', null, '5 · Export'), h('p', { class: 'muted' }, 'Train a model first.'));
    return;
  }
  const { folder, snippets } = await api<{ folder: string; snippets: Record<string, string> }>(
    'GET',
    '/api/export/snippets',
  );
  const tabs: Child[] = [];
  const names: Record<string, string> = { browser: 'Browser (TF.js)', node: 'Node (TF.js)', onnx: 'onnxruntime' };
  const pre = h('pre', { class: 'snippet' });
  const show = (k: string) => {
    pre.textContent = snippets[k];
    pre.dataset.kind = k;
    for (const b of exportPanel.querySelectorAll('.tab'))
      b.classList.toggle('active', (b as HTMLElement).dataset.kind === k);
  };
  for (const k of Object.keys(snippets))
    tabs.push(h('button', { class: 'tab', 'data-kind': k, onClick: () => show(k) }, names[k] ?? k));
  fill(
    exportPanel,
    h('h2', null, '5 · Export'),
    h(
      'div',
      { class: 'row' },
      h(
        'a',
        { class: 'button primary', id: 'export-zip', href: url('/api/export/zip'), download: `${folder}.zip` },
        'Download model (.zip)',
      ),
      project.lastRun.onnx
        ? h(
            'a',
            { class: 'button secondary', id: 'export-onnx', href: url('/api/export/onnx'), download: `${folder}.onnx` },
            'Download ONNX',
          )
        : h('span', { class: 'muted', title: project.lastRun.onnxError }, 'No ONNX file for this model'),
    ),
    h('div', { class: 'tabs' }, tabs),
    pre,
    h(
      'button',
      {
        class: 'link',
        onClick: () => navigator.clipboard?.writeText(pre.textContent ?? '').then(() => toast('Copied')),
      },
      'Copy',
    ),
  );
  show('browser');
}

// ---------------------------------------------------------------- start

async function main(): Promise<void> {
  if (!token) {
    root.textContent = 'This page must be opened from the address graft serve printed.';
    return;
  }
  [project, choices] = await Promise.all([
    api<ProjectInfo>('GET', '/api/project'),
    api<Choices>('GET', '/api/choices'),
  ]);
  live.running = project.run?.state === 'running';
  fill(
    root,
    header,
    h('main', { class: 'grid' }, panels.classes, panels.train, h('div', { class: 'side' }, tryPanel, exportPanel)),
    panels.results,
  );
  await refresh();
  const events = new EventSource(url('/api/events'));
  events.onmessage = (m) => onEvent(JSON.parse(m.data));
  document.body.dataset.ready = 'true';
}

main().catch((e) => {
  fill(root, h('p', { class: 'error' }, `graft: ${(e as Error).message}`));
});
