/**
 * Dataset listing and splitting.
 *
 * Listing only finds files and labels; it never opens images. Whether a file is a usable image is decided later by
 * decoding (see decode.ts), so a broken file is reported as skipped with the decoder's reason instead of being
 * filtered out here by its extension.
 */
import { createHash } from 'node:crypto';
import type { Dirent, Stats } from 'node:fs';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { DataError, errnoOf, opt, shown, UsageError, words } from '../util/errors.ts';

export interface Sample {
  /** Absolute path. */
  file: string;
  label: string;
}

export interface Skipped {
  file: string;
  reason: string;
}

export interface DatasetListing {
  /** Absolute folder that relative paths (and therefore the split) are computed from: the data folder, or the CSV's folder. */
  root: string;
  /** Sorted by code unit, independent of locale. */
  classes: string[];
  /** Sorted by file. */
  samples: Sample[];
  skipped: Skipped[];
}

// Files that operating systems and tools drop into folders are never meant as data, so listing them as skipped would
// only be noise: hidden files (a leading '.': .DS_Store, '._x' AppleDouble forks that macOS writes next to every file
// copied to a non-Mac volume, editor lock files such as '.#x', .gitignore) and the Windows litter below are ignored
// silently (fastai's get_files skips names with a leading '.' too). A CSV that names such a file still reads it.
const SYSTEM_FILES = new Set([
  'thumbs.db',
  'ehthumbs.db',
  'desktop.ini',
  'icon\r',
  // A `graft serve` project's settings file sits beside its class folders.
  'graft-project.json',
]);
function isSystemFile(name: string): boolean {
  return name.startsWith('.') || SYSTEM_FILES.has(name.toLowerCase());
}

// Hidden folders (.git, .ipynb_checkpoints, …) and macOS archive debris are tool state, not classes or class content;
// treating '.ipynb_checkpoints' as a class is a classic way to get a silently wrong model.
function isIgnoredFolder(name: string): boolean {
  return name.startsWith('.') || name === '__MACOSX';
}

const byString = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function describeClasses(source: string, kind: string, names: string[]): DataError {
  const list = names.length ? names.join(', ') : 'none';
  return new DataError('too-few-classes', source, `found ${names.length} ${kind}(s) (${list}); need at least 2`);
}

/** The file's stats; null when it does not exist; a string (the reason) when it cannot be read. */
async function statOrReason(p: string): Promise<Stats | null | string> {
  try {
    return await fs.stat(p);
  } catch (e) {
    const code = errnoOf(e);
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    if (code === 'ELOOP') return 'symbolic link loop';
    return `cannot read (${code})`;
  }
}

// A folder holding a graft model (e.g. an earlier run's --out inside the data folder) is never a class or class data.
const MODEL_METADATA = 'graft.json';
async function isModelFolder(dir: string): Promise<boolean> {
  try {
    const text = await fs.readFile(path.join(dir, MODEL_METADATA), 'utf8');
    return JSON.parse(text)?.format === 'graft-model';
  } catch {
    return false;
  }
}

/**
 * Lists a data set. `source` is a folder with one sub-folder per class, or a .csv file of `path,label` rows
 * (optional header row such as `path,label`; relative paths are relative to the CSV's folder; fields may be quoted).
 * Throws a one-line Error naming `source` when it is missing or has fewer than 2 classes.
 */
export async function listDataset(source: string): Promise<DatasetListing> {
  const isCsv = source.toLowerCase().endsWith('.csv');
  const st = await statOrReason(source);
  if (st === null) throw new DataError('not-found', source, `${isCsv ? 'CSV file' : 'data folder'} does not exist`);
  if (typeof st === 'string') throw new DataError('unreadable', source, st);
  if (st.isDirectory()) return listFolder(source);
  if (isCsv) return listCsv(source);
  throw new DataError('not-a-data-set', source, 'not a folder or a .csv file');
}

/** True when `p` is `dir` or lies inside it. */
function within(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith(path.sep) ? dir : dir + path.sep);
}

/**
 * Class folders, walked recursively: nested folders inside a class are part of it. Symbolic links are followed, with
 * three exceptions that are skipped and listed: a link loop, a folder link back into the data folder outside its own
 * class (it would read another class's images, or the data set again, under the wrong label), and a real folder
 * reached twice (read once). Folders holding a graft model are skipped too.
 */
async function listFolder(source: string): Promise<DatasetListing> {
  const root = path.resolve(source);
  const realRoot = await fs.realpath(root);
  const classes: string[] = [];
  const samples: Sample[] = [];
  const skipped: Skipped[] = [];
  // Real paths of folders already walked, across all classes.
  const seen = new Set<string>();
  const walk = async (dir: string, label: string, realClass: string): Promise<void> => {
    let real: string;
    try {
      real = await fs.realpath(dir);
    } catch (e) {
      skipped.push({
        file: dir,
        reason: errnoOf(e) === 'ELOOP' ? 'symbolic link loop' : `cannot read (${errnoOf(e)})`,
      });
      return;
    }
    if (within(realRoot, real) && real !== realClass) {
      skipped.push({ file: dir, reason: 'link to a folder that contains the data set (a loop); not followed' });
      return;
    }
    if (within(real, realRoot) && !within(real, realClass)) {
      const other = path.relative(realRoot, real).split(path.sep)[0];
      skipped.push({ file: dir, reason: `link to class '${other}' from class '${label}'; not followed` });
      return;
    }
    if (seen.has(real)) {
      skipped.push({ file: dir, reason: 'folder already read (a link to it, or a link loop); not read twice' });
      return;
    }
    seen.add(real);
    if (await isModelFolder(dir)) {
      skipped.push({ file: dir, reason: 'a graft model folder, not images' });
      return;
    }
    for (const entry of await readDir(dir)) {
      const p = path.join(dir, entry.name);
      const kind = await entryKind(entry, p);
      if (kind === 'dir') {
        if (!isIgnoredFolder(entry.name)) await walk(p, label, realClass);
      } else if (kind === 'file') {
        if (!isSystemFile(entry.name)) samples.push({ file: p, label });
      } else if (!isSystemFile(entry.name)) {
        skipped.push({ file: p, reason: kind });
      }
    }
  };
  // Real folders before links to folders, so that of a folder and a link to it, the folder is the class.
  const top = (await readDir(root)).sort(
    (a, b) => Number(a.isSymbolicLink()) - Number(b.isSymbolicLink()) || byString(a.name, b.name),
  );
  const classOf = new Map<string, string>();
  for (const entry of top) {
    const p = path.join(root, entry.name);
    const kind = await entryKind(entry, p);
    if (kind === 'dir') {
      if (isIgnoredFolder(entry.name)) continue;
      if (await isModelFolder(p)) {
        skipped.push({ file: p, reason: 'a graft model folder, not a class' });
        continue;
      }
      let realClass: string;
      try {
        realClass = await fs.realpath(p);
      } catch (e) {
        skipped.push({ file: p, reason: `cannot read (${errnoOf(e)})` });
        continue;
      }
      if (within(realRoot, realClass)) {
        skipped.push({ file: p, reason: 'link to a folder that contains the data set (a loop); not a class' });
        continue;
      }
      const same = classOf.get(realClass);
      if (same !== undefined) {
        skipped.push({ file: p, reason: `the same folder as class '${same}' (a link); not a second class` });
        continue;
      }
      classOf.set(realClass, entry.name);
      classes.push(entry.name);
      await walk(p, entry.name, realClass);
    } else if (!isSystemFile(entry.name)) {
      skipped.push({ file: p, reason: kind === 'file' ? 'not inside a class folder' : kind });
    }
  }
  classes.sort(byString);
  if (classes.length < 2) throw describeClasses(source, 'class folder', classes);
  samples.sort((a, b) => byString(a.file, b.file));
  skipped.sort((a, b) => byString(a.file, b.file));
  return { root, classes, samples, skipped };
}

async function readDir(dir: string): Promise<Dirent[]> {
  try {
    return await fs.readdir(dir, { withFileTypes: true });
  } catch (e) {
    throw new DataError('unreadable', dir, `cannot read folder (${errnoOf(e)})`, e);
  }
}

/** 'dir', 'file', or the reason the entry cannot be a sample. Symbolic links are followed. */
async function entryKind(entry: Dirent, p: string): Promise<string> {
  if (entry.isDirectory()) return 'dir';
  if (entry.isFile()) return 'file';
  if (entry.isSymbolicLink()) {
    const st = await statOrReason(p);
    if (st === null) return 'broken symbolic link';
    if (typeof st === 'string') return st;
    if (st.isDirectory()) return 'dir';
    if (st.isFile()) return 'file';
  }
  return 'not a regular file';
}

interface CsvRecord {
  line: number;
  fields: string[] | null; // null: the record could not be parsed (unterminated quote)
}

/**
 * RFC 4180-style parsing: fields separated by commas, optionally double-quoted, '""' inside quotes is a literal quote,
 * and quoted fields may span lines. Unquoted fields are trimmed, since 'a.jpg, cat' is a common hand-written form.
 */
function parseCsv(text: string): CsvRecord[] {
  const records: CsvRecord[] = [];
  let i = 0;
  let line = 1;
  const n = text.length;
  while (i < n) {
    const startLine = line;
    const fields: string[] = [];
    let ok = true;
    for (;;) {
      // One field.
      let j = i;
      while (j < n && (text[j] === ' ' || text[j] === '\t')) j++;
      if (text[j] === '"') {
        const quoteAt = j;
        const quoteLine = line;
        let value = '';
        j++;
        let closed = false;
        while (j < n) {
          const c = text[j];
          if (c === '"') {
            if (text[j + 1] === '"') {
              value += '"';
              j += 2;
              continue;
            }
            closed = true;
            j++;
            break;
          }
          if (c === '\n') line++;
          value += c;
          j++;
        }
        while (j < n && (text[j] === ' ' || text[j] === '\t')) j++;
        if (!closed || (j < n && text[j] !== ',' && text[j] !== '\n' && text[j] !== '\r')) {
          ok = false;
          // Resynchronise at the next line end so one bad row costs only itself; an unterminated quote would
          // otherwise swallow the rest of the file.
          if (!closed) {
            j = quoteAt;
            line = quoteLine;
          }
          while (j < n && text[j] !== '\n') j++;
          if (text[j - 1] === '\r') j--;
          i = j;
          break;
        }
        fields.push(value);
        i = j;
      } else {
        while (j < n && text[j] !== ',' && text[j] !== '\n' && text[j] !== '\r') j++;
        fields.push(text.slice(i, j).trim());
        i = j;
      }
      if (text[i] === ',') {
        i++;
        continue;
      }
      break;
    }
    // End of record: skip '\r\n', '\n' or a lone '\r'.
    if (text[i] === '\r') i++;
    if (text[i] === '\n') i++;
    line++;
    const blank = ok && fields.length === 1 && fields[0] === '';
    if (!blank) records.push({ line: startLine, fields: ok ? fields : null });
  }
  return records;
}

const HEADER_PATH = new Set(['path', 'file', 'filename', 'filepath', 'image', 'image_path']);
const HEADER_LABEL = new Set(['label', 'class', 'category']);

async function listCsv(source: string): Promise<DatasetListing> {
  const csvPath = path.resolve(source);
  const root = path.dirname(csvPath);
  let text: string;
  try {
    text = await fs.readFile(csvPath, 'utf8');
  } catch (e) {
    throw new DataError('unreadable', source, `cannot read CSV file (${errnoOf(e)})`, e);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // BOM written by Excel

  const records = parseCsv(text);
  const first = records[0]?.fields;
  if (
    first &&
    first.length === 2 &&
    HEADER_PATH.has(first[0].toLowerCase()) &&
    HEADER_LABEL.has(first[1].toLowerCase())
  ) {
    records.shift();
  }

  const skipped: Skipped[] = [];
  const labels = new Set<string>();
  const rows: { file: string; label: string; line: number }[] = [];
  const firstLine = new Map<string, { line: number; label: string }>();
  for (const r of records) {
    const where = `${csvPath}:${r.line}`;
    if (r.fields === null) {
      skipped.push({ file: where, reason: `malformed row on line ${r.line} (unterminated or misplaced quote)` });
      continue;
    }
    if (r.fields.length !== 2 || r.fields[0] === '' || r.fields[1] === '') {
      skipped.push({
        file: where,
        reason: `malformed row on line ${r.line} (expected 2 non-empty fields path,label, got ${r.fields.length} field(s))`,
      });
      continue;
    }
    const [rel, label] = r.fields;
    const file = path.resolve(root, rel);
    // Labels of rows whose file is missing still count as classes, so that a class whose files are all missing is
    // reported by checkClasses rather than vanishing.
    labels.add(label);
    const prev = firstLine.get(file);
    if (prev) {
      const detail = prev.label === label ? '' : ` with label '${prev.label}'`;
      skipped.push({ file, reason: `line ${r.line}: already listed on line ${prev.line}${detail}` });
      continue;
    }
    firstLine.set(file, { line: r.line, label });
    rows.push({ file, label, line: r.line });
  }

  const samples: Sample[] = [];
  const BATCH = 64;
  for (let k = 0; k < rows.length; k += BATCH) {
    const batch = rows.slice(k, k + BATCH);
    const stats = await Promise.all(batch.map((r) => statOrReason(r.file)));
    batch.forEach((r, idx) => {
      const st = stats[idx];
      if (st === null) skipped.push({ file: r.file, reason: 'file does not exist' });
      else if (typeof st === 'string') skipped.push({ file: r.file, reason: st });
      else if (!st.isFile()) skipped.push({ file: r.file, reason: 'not a regular file' });
      else samples.push({ file: r.file, label: r.label });
    });
  }

  const classes = [...labels].sort(byString);
  if (classes.length < 2) throw describeClasses(source, 'class label', classes);
  samples.sort((a, b) => byString(a.file, b.file));
  skipped.sort((a, b) => byString(a.file, b.file));
  return { root, classes, samples, skipped };
}

/** Position of a sample in [0, 1), from the first 8 bytes of sha256 of its '/'-separated path relative to root. */
function hashUnit(root: string, file: string): number {
  const rel = path.relative(root, file).split(path.sep).join('/');
  const digest = createHash('sha256').update(rel, 'utf8').digest();
  // The top 53 of the 64 bits: exactly representable as a double, so the result is strictly below 1.
  return Number(digest.readBigUInt64BE(0) >> 11n) / 2 ** 53;
}

/**
 * Stable split: a sample goes to validation iff the hash of its relative path, mapped to [0, 1), is below valFraction.
 * Each file's side depends on its own path only, so adding or removing files never moves another file, and moving the
 * whole data set elsewhere does not change the split.
 */
export function splitByHash(listing: DatasetListing, valFraction: number): { train: Sample[]; val: Sample[] } {
  if (!(valFraction >= 0 && valFraction <= 1)) {
    throw new UsageError('invalid-value', words`${opt('valFraction')} must be between 0 and 1 (got ${valFraction})`);
  }
  const train: Sample[] = [];
  const val: Sample[] = [];
  for (const s of listing.samples) {
    (hashUnit(listing.root, s.file) < valFraction ? val : train).push(s);
  }
  return { train, val };
}

/**
 * Throws a one-line DataError naming `source` when a class has no usable images or fewer than 2 classes do.
 * `counts` maps class name to the number of images that decoded; a class absent from it counts as 0.
 */
export function checkClasses(
  source: string,
  classes: string[],
  counts: Map<string, number>,
  example?: (label: string) => Skipped | undefined,
): void {
  const empty = classes.filter((c) => (counts.get(c) ?? 0) === 0);
  if (empty.length) {
    const names = empty.map((c) => shown(c)).join(', ');
    const e = example?.(empty[0]);
    throw new DataError(
      'class-unusable',
      source,
      `${empty.length === 1 ? `class ${names} has` : `classes ${names} have`} no usable images: every training file was skipped${e ? ` (e.g. ${e.file}: ${e.reason})` : ''}`,
    );
  }
  if (classes.length < 2) {
    const list = classes.length ? classes.map((c) => shown(c)).join(', ') : 'none';
    throw new DataError(
      'too-few-classes',
      source,
      `only ${classes.length} class(es) with usable images (${list}); need at least 2`,
    );
  }
}
