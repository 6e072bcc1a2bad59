/**
 * @file The choices the page offers: bases (bundled, zoo with its cache state, files uploaded into the project) and
 * training modes, each with a one-line explanation; and the check of settings sent by the page.
 */
import { existsSync, promises as fs, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { cacheStatus, ensureModelFiles } from '../base/download.ts';
import { ZOO } from '../base/zoo.ts';
import { BUNDLED, DEFAULT_BASE } from '../index.ts';
import type { Progress } from '../util/progress.ts';
import { checkName, type Project, ProjectError, type ProjectMode, type ProjectSettings, STATE_DIR } from './project.ts';

export interface BaseChoice {
  /** What goes into settings.base. */
  id: string;
  label: string;
  kind: 'bundled' | 'zoo' | 'file';
  description: string;
  /** Zoo bases: whether the files are in graft's download cache. */
  cached?: boolean;
  default?: boolean;
}

export const MODES: { id: ProjectMode; label: string; explain: string }[] = [
  {
    id: 'feature',
    label: 'Feature transfer',
    explain: 'Fastest. Keeps the whole pretrained network and trains only a new last layer on its features.',
  },
  {
    id: 'auto',
    label: 'Auto cut',
    explain: 'Tries several places to cut the network, measures each on held-out images and keeps the best.',
  },
  {
    id: 'parameter',
    label: 'Parameter transfer',
    explain: 'Also retrains the top block of the network, starting from its pretrained weights.',
  },
  {
    id: 'fine-tune',
    label: 'Fine-tune',
    explain: 'Feature transfer, then unfreezes the top third of the network and trains it at a very low rate.',
  },
];

/** Folder inside the project where uploaded bases are kept. */
export const BASES_DIR = `${STATE_DIR}/bases`;

export async function baseChoices(project: Project): Promise<BaseChoice[]> {
  const out: BaseChoice[] = [];
  for (const z of ZOO) {
    const st = await cacheStatus(z.url).catch(() => ({ cached: false }));
    out.push({
      id: z.name,
      label: z.name,
      kind: 'zoo',
      description: z.description,
      cached: st.cached,
      default: z.name === DEFAULT_BASE,
    });
  }
  for (const b of BUNDLED)
    out.push({ id: b.name, label: `${b.name} (bundled)`, kind: 'bundled', description: b.description });
  const dir = path.join(project.dir, ...BASES_DIR.split('/'));
  if (existsSync(dir)) {
    for (const name of readdirSync(dir).sort()) {
      const folder = `${BASES_DIR}/${name}`;
      const file = existsSync(path.join(dir, name, 'model.json'))
        ? `${folder}/model.json`
        : readdirSync(path.join(dir, name)).find((f) => f.endsWith('.onnx'));
      if (!file) continue;
      const id = file.startsWith(folder) ? file : `${folder}/${file}`;
      out.push({ id, label: `${name} (uploaded)`, kind: 'file', description: `a network uploaded into this project` });
    }
  }
  return out;
}

/** Checks settings sent by the page; unknown bases, modes and out-of-range numbers are 400s. */
export async function checkSettings(project: Project, s: Record<string, unknown>): Promise<ProjectSettings> {
  const out: ProjectSettings = { ...project.settings };
  if ('base' in s) {
    if (s.base === null || s.base === undefined || s.base === '') out.base = undefined;
    else {
      const ids = (await baseChoices(project)).map((b) => b.id);
      if (typeof s.base !== 'string' || !ids.includes(s.base))
        throw new ProjectError(400, `unknown base '${String(s.base)}'`);
      out.base = s.base;
    }
  }
  if ('mode' in s) {
    if (!MODES.some((m) => m.id === s.mode)) throw new ProjectError(400, `unknown mode '${String(s.mode)}'`);
    out.mode = s.mode as ProjectMode;
  }
  if ('valSplit' in s) {
    const v = Number(s.valSplit);
    if (!(v >= 0 && v <= 0.5)) throw new ProjectError(400, `valSplit must be between 0 and 0.5 (got ${s.valSplit})`);
    out.valSplit = v;
  }
  if ('epochs' in s) {
    if (s.epochs === null || s.epochs === '' || s.epochs === undefined) out.epochs = undefined;
    else {
      const v = Number(s.epochs);
      if (!Number.isInteger(v) || v < 1 || v > 10_000)
        throw new ProjectError(400, `epochs must be a whole number from 1 to 10000 (got ${s.epochs})`);
      out.epochs = v;
    }
  }
  if ('head' in s) {
    if (s.head === null || s.head === undefined || s.head === '') out.head = undefined;
    else if (s.head !== 'logistic' && s.head !== 'softmax')
      throw new ProjectError(400, `head must be logistic or softmax (got ${String(s.head)})`);
    else out.head = s.head;
  }
  if ('augment' in s) {
    if (s.augment !== 'flip' && s.augment !== 'none')
      throw new ProjectError(400, `augment must be flip or none (got ${String(s.augment)})`);
    out.augment = s.augment;
  }
  return out;
}

/**
 * Stores an uploaded base (a TF.js model.json with its weight files, or one .onnx file) under .graft/bases/NAME/.
 * Every weight file model.json names must be among the uploaded files. Returns the id to use as settings.base.
 */
export async function storeBase(project: Project, files: { name: string; bytes: Uint8Array }[]): Promise<string> {
  for (const f of files) checkName('file', f.name);
  const onnx = files.filter((f) => f.name.toLowerCase().endsWith('.onnx'));
  const json = files.find((f) => f.name === 'model.json');
  let stem: string;
  if (onnx.length === 1 && files.length === 1) stem = onnx[0].name.replace(/\.onnx$/i, '');
  else if (json) {
    let manifest: { weightsManifest?: { paths?: string[] }[] };
    try {
      manifest = JSON.parse(Buffer.from(json.bytes).toString('utf8'));
    } catch {
      throw new ProjectError(415, 'model.json is not valid JSON');
    }
    const wanted = (manifest.weightsManifest ?? []).flatMap((g) => g.paths ?? []);
    if (!wanted.length) throw new ProjectError(415, 'model.json has no weightsManifest: not a TF.js model');
    for (const w of wanted) {
      checkName('file', w);
      if (!files.some((f) => f.name === w))
        throw new ProjectError(400, `model.json names ${w}, which was not uploaded`);
    }
    stem = (
      typeof (manifest as { graft?: { name?: string } }).graft?.name === 'string'
        ? (manifest as { graft: { name: string } }).graft.name
        : 'uploaded-model'
    ).replace(/[^\w.-]+/g, '-');
  } else throw new ProjectError(400, 'upload one .onnx file, or a model.json together with its weight files');
  let name = stem;
  for (let i = 2; existsSync(path.join(project.dir, STATE_DIR, 'bases', name)); i++) name = `${stem}-${i}`;
  const dir = project.stateDir('bases', checkName('file', name));
  try {
    for (const f of files) await fs.writeFile(path.join(dir, f.name), f.bytes);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return json ? `${BASES_DIR}/${name}/model.json` : `${BASES_DIR}/${name}/${onnx[0].name}`;
}

/** Downloads a zoo base into graft's cache ahead of training, reporting progress. */
export async function pullBase(name: string, onProgress: (p: Progress) => void): Promise<void> {
  const z = ZOO.find((e) => e.name === name);
  if (!z) throw new ProjectError(404, `'${name}' is not a zoo base`);
  await ensureModelFiles(z.url, { name: z.name, sha256: z.sha256, onProgress });
}
