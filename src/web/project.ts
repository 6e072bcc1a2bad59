/**
 * @file A graft project: a folder with one sub-folder per class of images (the layout `graft train` reads) plus
 * `graft-project.json` (settings and the last run). The server's own state lives under `.graft/` (the last model,
 * the trash that makes deletions undoable, staging folders of runs); hidden folders are not classes to the data set
 * lister, so the same folder still trains from the CLI.
 *
 * Every path that comes from a request goes through `checkName` and `inside`: one path segment per name, no `..`, no
 * separators, no absolute paths, and a symbolic link is only followed when its target stays inside the project.
 */
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  promises as fs,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';

export const PROJECT_FILE = 'graft-project.json';
/** The server's own folder inside a project (hidden, so never a class). */
export const STATE_DIR = '.graft';
/** Where the last successful run's model folder lives, relative to the project. */
export const MODEL_DIR = `${STATE_DIR}/model`;
export const ONNX_FILE = `${STATE_DIR}/model.onnx`;

/** Actions kept undoable; older trash entries are removed when a new action is recorded. */
const UNDO_DEPTH = 100;

export type ProjectMode = 'feature' | 'auto' | 'parameter' | 'fine-tune';

export interface ProjectSettings {
  /** Base name, zoo name, or a project-relative path of an uploaded base; undefined: graft's default base. */
  base?: string;
  mode: ProjectMode;
  /** Fraction of each class held out for validation (by a hash of the path, as `graft train --val-split`). */
  valSplit: number;
  epochs?: number;
  /** The head: undefined for graft's default (logistic, fitted once); 'softmax' trains by epochs, whose curves stream. */
  head?: 'logistic' | 'softmax';
  augment: 'flip' | 'none';
}

export const DEFAULT_SETTINGS: ProjectSettings = { mode: 'feature', valSplit: 0.2, augment: 'flip' };

export interface LastRun {
  finishedAt: string;
  /** Project-relative model folder. */
  model: string;
  /** Project-relative ONNX file, when the model could be exported as one. */
  onnx?: string;
  /** Why there is no ONNX file. */
  onnxError?: string;
  /** The training result without its bulky parts (see training.ts). */
  result: Record<string, unknown>;
}

export interface ProjectFile {
  format: 'graft-project';
  version: 1;
  settings: ProjectSettings;
  lastRun?: LastRun;
}

/** A request the project refuses; `status` is the HTTP status the server answers with. */
export class ProjectError extends Error {
  readonly status: 400 | 403 | 404 | 409 | 413 | 415;
  constructor(status: ProjectError['status'], message: string) {
    super(message);
    this.name = 'ProjectError';
    this.status = status;
  }
}

const FORBIDDEN = /[/\\\0:*?"<>|]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what is refused here.
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Checks one path segment named by a request (a class or a file name). Refused: empty, longer than 200 characters,
 * `.` and `..`, anything with a path separator, a drive colon or a character Windows forbids, control characters,
 * and names starting with a dot (hidden names are ignored by the data set lister, and `.graft` is the server's).
 */
export function checkName(kind: 'class' | 'file', name: unknown): string {
  const what = kind === 'class' ? 'class name' : 'file name';
  if (typeof name !== 'string' || name.length === 0) throw new ProjectError(400, `${what} is missing`);
  if (name.length > 200) throw new ProjectError(400, `${what} is longer than 200 characters`);
  if (name === '.' || name === '..' || name.includes('..'))
    throw new ProjectError(400, `${what} '${name}' contains '..'`);
  if (path.isAbsolute(name) || path.win32.isAbsolute(name))
    throw new ProjectError(400, `${what} '${name}' is an absolute path`);
  if (FORBIDDEN.test(name) || CONTROL.test(name))
    throw new ProjectError(400, `${what} '${name}' contains a path separator or a forbidden character`);
  if (name.startsWith('.')) throw new ProjectError(400, `${what} '${name}' starts with a dot`);
  if (name.trim() !== name) throw new ProjectError(400, `${what} '${name}' starts or ends with a space`);
  if (kind === 'class' && name === '__MACOSX') throw new ProjectError(400, `class name '${name}' is reserved`);
  return name;
}

/** Image file names inside a class may contain sub-folders ('a/b.jpg'): each segment is checked. */
export function checkImagePath(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) throw new ProjectError(400, 'file name is missing');
  return name
    .split('/')
    .map((s) => checkName('file', s))
    .join('/');
}

export interface ImageEntry {
  /** Path inside the class folder, '/'-separated. */
  name: string;
  bytes: number;
  mtimeMs: number;
}

export interface ClassEntry {
  name: string;
  images: ImageEntry[];
}

export interface Problem {
  /** Project-relative path. */
  path: string;
  reason: string;
}

export interface Listing {
  classes: ClassEntry[];
  /** Entries the server will not read (links out of the project, special files). Training refuses while any exist. */
  problems: Problem[];
}

const IGNORED_FILES = new Set(['thumbs.db', 'ehthumbs.db', 'desktop.ini']);

export class Project {
  readonly dir: string;
  /** The project folder with every link resolved: what `inside` compares against. */
  private readonly real: string;
  private file: ProjectFile;

  private constructor(dir: string, real: string, file: ProjectFile) {
    this.dir = dir;
    this.real = real;
    this.file = file;
  }

  /** Opens (creating when needed) a project folder. A folder of class folders without a project file becomes one. */
  static open(dir: string): Project {
    const abs = path.resolve(dir);
    mkdirSync(abs, { recursive: true });
    const real = realpathOrSelf(abs);
    const f = path.join(abs, PROJECT_FILE);
    let file: ProjectFile;
    if (existsSync(f)) {
      try {
        file = JSON.parse(readFileSync(f, 'utf8'));
      } catch (e) {
        throw new Error(`${f}: not valid JSON (${(e as Error).message})`);
      }
      if (file.format !== 'graft-project') throw new Error(`${f}: not a graft project file`);
      file.settings = { ...DEFAULT_SETTINGS, ...file.settings };
    } else {
      file = { format: 'graft-project', version: 1, settings: { ...DEFAULT_SETTINGS } };
    }
    const p = new Project(abs, real, file);
    p.save();
    p.cleanStaging();
    return p;
  }

  get name(): string {
    return path.basename(this.dir);
  }

  get settings(): ProjectSettings {
    return this.file.settings;
  }

  get lastRun(): LastRun | undefined {
    return this.file.lastRun;
  }

  updateSettings(s: ProjectSettings): void {
    this.file.settings = s;
    this.save();
  }

  setLastRun(run: LastRun): void {
    this.file.lastRun = run;
    this.save();
  }

  /** Writes graft-project.json through a temporary name, so a crash never leaves half a file. */
  private save(): void {
    const f = path.join(this.dir, PROJECT_FILE);
    const tmp = `${f}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(this.file, null, 2)}\n`);
    renameSync(tmp, f);
  }

  /** The server's folder, created on demand. */
  stateDir(...parts: string[]): string {
    const d = path.join(this.dir, STATE_DIR, ...parts);
    mkdirSync(d, { recursive: true });
    return d;
  }

  /** Runs interrupted by a crash leave staging folders behind; they never hold anything the project needs. */
  private cleanStaging(): void {
    const state = path.join(this.dir, STATE_DIR);
    if (!existsSync(state)) return;
    for (const name of readdirSafe(state))
      if (name.startsWith('staging-')) rmSync(path.join(state, name), { recursive: true, force: true });
  }

  /**
   * The absolute path of `rel` (project-relative, '/'-separated, already checked segment by segment). When the path
   * exists, every link on it is resolved and the result must still lie inside the project: 403 otherwise.
   */
  inside(rel: string): string {
    const abs = path.resolve(this.dir, ...rel.split('/'));
    if (!isWithin(this.dir, abs)) throw new ProjectError(403, `${rel}: outside the project folder`);
    let real: string;
    try {
      real = realpathSyncNative(abs);
    } catch {
      // Does not exist (yet): its parent decides.
      const parent = path.dirname(abs);
      if (parent !== abs && existsSync(parent) && !isWithin(this.real, realpathSyncNative(parent)))
        throw new ProjectError(403, `${rel}: its folder is a link pointing outside the project`);
      return abs;
    }
    if (!isWithin(this.real, real)) throw new ProjectError(403, `${rel}: a link pointing outside the project`);
    return abs;
  }

  classPath(name: string): string {
    return this.inside(checkName('class', name));
  }

  imagePath(cls: string, file: string): string {
    return this.inside(`${checkName('class', cls)}/${checkImagePath(file)}`);
  }

  /** Classes and their images, and what the server refuses to read. */
  async list(): Promise<Listing> {
    const classes: ClassEntry[] = [];
    const problems: Problem[] = [];
    for (const entry of await fs.readdir(this.dir, { withFileTypes: true })) {
      const name = entry.name;
      if (name.startsWith('.') || name === '__MACOSX' || name === PROJECT_FILE) continue;
      const kind = await this.kindOf(name, problems);
      if (kind === 'dir') {
        const images: ImageEntry[] = [];
        await this.walk(name, '', images, problems);
        images.sort((a, b) => b.mtimeMs - a.mtimeMs || (a.name < b.name ? -1 : 1));
        classes.push({ name, images });
      } else if (kind === 'file' && !IGNORED_FILES.has(name.toLowerCase())) {
        problems.push({ path: name, reason: 'a file outside any class folder (not used for training)' });
      }
    }
    classes.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { classes, problems };
  }

  private async walk(cls: string, sub: string, out: ImageEntry[], problems: Problem[]): Promise<void> {
    const dirRel = sub ? `${cls}/${sub}` : cls;
    for (const entry of await fs.readdir(path.join(this.dir, ...dirRel.split('/')), { withFileTypes: true })) {
      const name = entry.name;
      // As the trainer's listing (dataset.ts): hidden files and folders, OS litter and __MACOSX are not images.
      if (IGNORED_FILES.has(name.toLowerCase()) || name.startsWith('.') || name === '__MACOSX') continue;
      const rel = sub ? `${sub}/${name}` : name;
      const kind = await this.kindOf(`${cls}/${rel}`, problems);
      if (kind === 'dir') {
        await this.walk(cls, rel, out, problems);
      } else if (kind === 'file') {
        const st = await fs.stat(path.join(this.dir, cls, ...rel.split('/')));
        out.push({ name: rel, bytes: st.size, mtimeMs: Math.round(st.mtimeMs) });
      }
    }
  }

  /** 'dir' | 'file' for entries the server may read; anything else is recorded as a problem. */
  private async kindOf(rel: string, problems: Problem[]): Promise<'dir' | 'file' | 'other'> {
    const abs = path.join(this.dir, ...rel.split('/'));
    let st = await fs.lstat(abs);
    if (st.isSymbolicLink()) {
      let real: string;
      try {
        real = await fs.realpath(abs);
      } catch {
        problems.push({ path: rel, reason: 'a broken link' });
        return 'other';
      }
      if (!isWithin(this.real, real)) {
        problems.push({ path: rel, reason: 'a link pointing outside the project (the server will not follow it)' });
        return 'other';
      }
      st = await fs.stat(abs);
    }
    if (st.isDirectory()) return 'dir';
    if (st.isFile()) return 'file';
    problems.push({ path: rel, reason: 'not a regular file' });
    return 'other';
  }

  // --- changes; each one that removes something is undoable ---

  async createClass(name: string): Promise<void> {
    const dir = this.classPath(name);
    if (existsSync(dir)) throw new ProjectError(409, `class '${name}' already exists`);
    await fs.mkdir(dir);
  }

  async renameClass(from: string, to: string): Promise<void> {
    const src = this.classPath(from);
    const dst = this.classPath(to);
    if (!existsSync(src)) throw new ProjectError(404, `class '${from}' does not exist`);
    if (existsSync(dst)) throw new ProjectError(409, `class '${to}' already exists`);
    await fs.rename(src, dst);
  }

  /** Moves the class folder to the trash; returns the undo id. */
  async deleteClass(name: string): Promise<string> {
    const src = this.classPath(name);
    if (!existsSync(src)) throw new ProjectError(404, `class '${name}' does not exist`);
    return this.record(`delete class '${name}'`, [{ from: name, to: null }]);
  }

  /** A free file name in a class folder: `name`, else `stem-2.ext`, `stem-3.ext`, … */
  freeName(cls: string, name: string): string {
    const ext = path.extname(name);
    const stem = name.slice(0, name.length - ext.length);
    let candidate = name;
    for (let i = 2; existsSync(this.imagePath(cls, candidate)); i++) candidate = `${stem}-${i}${ext}`;
    return candidate;
  }

  /** Writes an image (already checked to decode) under a free name; returns the name used. */
  async addImage(cls: string, name: string, bytes: Uint8Array): Promise<string> {
    const dir = this.classPath(cls);
    if (!existsSync(dir)) throw new ProjectError(404, `class '${cls}' does not exist`);
    const free = this.freeName(cls, checkName('file', name));
    const target = this.imagePath(cls, free);
    const tmp = path.join(this.stateDir('incoming'), randomBytes(8).toString('hex'));
    await fs.writeFile(tmp, bytes);
    await fs.rename(tmp, target);
    return free;
  }

  async deleteImages(items: { class: string; file: string }[]): Promise<string> {
    const moves = items.map((i) => {
      const rel = `${checkName('class', i.class)}/${checkImagePath(i.file)}`;
      if (!existsSync(this.inside(rel))) throw new ProjectError(404, `${rel} does not exist`);
      return { from: rel, to: null };
    });
    return this.record(`delete ${items.length} image(s)`, moves);
  }

  async moveImages(items: { class: string; file: string }[], to: string): Promise<string> {
    const dest = this.classPath(to);
    if (!existsSync(dest)) throw new ProjectError(404, `class '${to}' does not exist`);
    const moves = items.map((i) => {
      const rel = `${checkName('class', i.class)}/${checkImagePath(i.file)}`;
      if (!existsSync(this.inside(rel))) throw new ProjectError(404, `${rel} does not exist`);
      const base = path.posix.basename(rel);
      return { from: rel, to: `${to}/${this.freeName(to, base)}` };
    });
    return this.record(`move ${items.length} image(s) to '${to}'`, moves);
  }

  /**
   * Performs moves (to === null: into the trash) and records them so `undo` can put everything back. Returns the id.
   */
  private async record(what: string, moves: { from: string; to: string | null }[]): Promise<string> {
    const id = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
    const trash = this.stateDir('trash', id);
    const done: { from: string; to: string }[] = [];
    try {
      for (const [k, m] of moves.entries()) {
        const to = m.to ?? `${STATE_DIR}/trash/${id}/${k}`;
        const dst = m.to ? this.inside(m.to) : path.join(trash, String(k));
        await fs.rename(this.inside(m.from), dst);
        done.push({ from: m.from, to });
      }
    } catch (e) {
      // Put back what was already moved: an action happens whole or not at all.
      for (const m of done.reverse()) await fs.rename(this.inside(m.to), this.inside(m.from)).catch(() => {});
      throw e;
    }
    const log = this.readActions();
    log.push({ id, what, at: new Date().toISOString(), moves: done });
    for (const old of log.splice(0, Math.max(0, log.length - UNDO_DEPTH)))
      rmSync(path.join(this.dir, STATE_DIR, 'trash', old.id), { recursive: true, force: true });
    this.writeActions(log);
    return id;
  }

  /** Reverses a recorded action; 404 when it is unknown, 409 when its files are in the way. */
  async undo(id: string): Promise<string> {
    const log = this.readActions();
    const i = log.findIndex((a) => a.id === id);
    if (i < 0) throw new ProjectError(404, `nothing to undo for '${id}'`);
    const action = log[i];
    for (const m of action.moves) {
      if (existsSync(this.inside(m.from))) throw new ProjectError(409, `cannot undo: ${m.from} exists again`);
    }
    for (const m of [...action.moves].reverse()) {
      const back = this.inside(m.from);
      await fs.mkdir(path.dirname(back), { recursive: true });
      await fs.rename(this.inside(m.to), back);
    }
    log.splice(i, 1);
    this.writeActions(log);
    rmSync(path.join(this.dir, STATE_DIR, 'trash', id), { recursive: true, force: true });
    return action.what;
  }

  private readActions(): Action[] {
    const f = path.join(this.dir, STATE_DIR, 'actions.json');
    if (!existsSync(f)) return [];
    try {
      return JSON.parse(readFileSync(f, 'utf8'));
    } catch {
      return [];
    }
  }

  private writeActions(log: Action[]): void {
    const f = path.join(this.stateDir(), 'actions.json');
    const tmp = `${f}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, JSON.stringify(log));
    renameSync(tmp, f);
  }
}

interface Action {
  id: string;
  what: string;
  at: string;
  moves: { from: string; to: string }[];
}

export function isWithin(root: string, p: string): boolean {
  const rel = path.relative(root, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

function realpathOrSelf(p: string): string {
  try {
    return realpathSyncNative(p);
  } catch {
    return p;
  }
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

const realpathSyncNative = (p: string) => realpathSync.native(p);
