/**
 * Looking after the activation store: what it holds per base and cut, pruning by age or total size, clearing, and
 * removing temporaries that killed writers left behind. Entries are only ever removed whole (one file each), so a
 * concurrent training run that loses an entry to a prune just recomputes it.
 */
import { type Dirent, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { UsageError } from '../util/errors.ts';
import { isStaleTemp } from '../util/files.ts';
import { BASE_INFO, type DamagedEntry, ENTRY_SUFFIX, readEntry } from './activation-cache.ts';

export interface CutUsage {
  /** The cut as the key names it; spatial activations (parameter transfer) end in ':spatial'. */
  cut: string;
  entries: number;
  bytes: number;
  /** Last use (file time) of the least and most recently used entry, ms since the epoch. */
  oldest: number;
  newest: number;
}

export interface BaseUsage {
  id: string;
  /** From the base's base.json, when it was written (graft writes it with the first entry). */
  name?: string;
  source?: string;
  cuts: CutUsage[];
  entries: number;
  bytes: number;
}

export interface CacheUsage {
  dir: string;
  bases: BaseUsage[];
  entries: number;
  bytes: number;
  /** Files of older graft versions (unchecked format): never read, removed by prune and clear. */
  legacy: { files: number; bytes: number };
  /** Temporaries of running writers (kept) and of dead ones (removed by prune and clear). */
  temporaries: { live: number; stale: number; bytes: number };
}

interface FileInfo {
  file: string;
  bytes: number;
  mtime: number;
}

function list(dir: string): Dirent[] {
  try {
    return readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
}

function info(file: string): FileInfo | undefined {
  try {
    const s = statSync(file);
    return { file, bytes: s.size, mtime: s.mtimeMs };
  } catch {
    return undefined; // removed meanwhile by another process
  }
}

interface Walk {
  /** Entries per base folder, then per cut folder. */
  entries: Map<string, Map<string, FileInfo[]>>;
  legacy: FileInfo[];
  temps: (FileInfo & { stale: boolean })[];
}

/** Old layout: `<dir>/<2 hex>/<key>.f32`, headerless and unchecked. */
const LEGACY_SHARD = /^[0-9a-f]{2}$/;

function walk(dir: string, now: number): Walk {
  const out: Walk = { entries: new Map(), legacy: [], temps: [] };
  const file = (f: string, into: FileInfo[]) => {
    const name = path.basename(f);
    const i = info(f);
    if (!i) return;
    if (name.endsWith('.tmp')) out.temps.push({ ...i, stale: isStaleTemp(name, i.mtime, now) });
    else into.push(i);
  };
  for (const top of list(dir)) {
    const topPath = path.join(dir, top.name);
    if (!top.isDirectory()) {
      if (top.name.endsWith('.tmp')) file(topPath, []);
      continue;
    }
    if (LEGACY_SHARD.test(top.name)) {
      for (const f of list(topPath)) if (f.isFile()) file(path.join(topPath, f.name), out.legacy);
      continue;
    }
    const cuts = new Map<string, FileInfo[]>();
    out.entries.set(top.name, cuts);
    for (const cut of list(topPath)) {
      const cutPath = path.join(topPath, cut.name);
      if (!cut.isDirectory()) {
        if (cut.name.endsWith('.tmp')) file(cutPath, []);
        continue;
      }
      const files: FileInfo[] = [];
      cuts.set(cut.name, files);
      for (const shard of list(cutPath)) {
        if (!shard.isDirectory()) continue;
        const shardPath = path.join(cutPath, shard.name);
        for (const f of list(shardPath)) {
          if (f.isFile() && (f.name.endsWith(ENTRY_SUFFIX) || f.name.endsWith('.tmp')))
            file(path.join(shardPath, f.name), files);
        }
      }
    }
  }
  return out;
}

function readBaseInfo(folder: string): { name?: string; source?: string } {
  try {
    const j = JSON.parse(readFileSync(path.join(folder, BASE_INFO), 'utf8'));
    return { name: typeof j.name === 'string' ? j.name : undefined, source: j.source };
  } catch {
    return {};
  }
}

const sum = (files: FileInfo[]) => files.reduce((a, f) => a + f.bytes, 0);

/** What the store at `dir` holds, per base and cut. */
export function cacheUsage(dir: string, now = Date.now()): CacheUsage {
  const w = walk(dir, now);
  const bases: BaseUsage[] = [];
  for (const [folder, cuts] of w.entries) {
    const rows: CutUsage[] = [];
    for (const [cutFolder, files] of cuts) {
      if (!files.length) continue;
      rows.push({
        cut: decodeURIComponent(cutFolder),
        entries: files.length,
        bytes: sum(files),
        oldest: files.reduce((a, f) => Math.min(a, f.mtime), Number.POSITIVE_INFINITY),
        newest: files.reduce((a, f) => Math.max(a, f.mtime), 0),
      });
    }
    if (!rows.length) continue;
    rows.sort((a, b) => a.cut.localeCompare(b.cut));
    bases.push({
      id: decodeURIComponent(folder),
      ...readBaseInfo(path.join(dir, folder)),
      cuts: rows,
      entries: rows.reduce((a, r) => a + r.entries, 0),
      bytes: rows.reduce((a, r) => a + r.bytes, 0),
    });
  }
  bases.sort((a, b) => b.bytes - a.bytes);
  return {
    dir,
    bases,
    entries: bases.reduce((a, b) => a + b.entries, 0),
    bytes: bases.reduce((a, b) => a + b.bytes, 0),
    legacy: { files: w.legacy.length, bytes: sum(w.legacy) },
    temporaries: {
      live: w.temps.filter((t) => !t.stale).length,
      stale: w.temps.filter((t) => t.stale).length,
      bytes: sum(w.temps),
    },
  };
}

export interface PruneOptions {
  /** Remove entries not used for longer than this many milliseconds. */
  olderThanMs?: number;
  /** Then remove the least recently used entries until the store holds at most this many bytes. */
  maxBytes?: number;
  now?: number;
}

export interface PruneResult {
  removed: number;
  freedBytes: number;
  /** Left by killed writers (and legacy-format files): always removed. */
  temporaries: number;
  legacy: number;
  remaining: { entries: number; bytes: number };
}

function remove(files: FileInfo[]): number {
  let freed = 0;
  for (const f of files) {
    try {
      rmSync(f.file);
      freed += f.bytes;
    } catch {
      // removed meanwhile
    }
  }
  return freed;
}

/** Removes entries by age and/or total size (least recently used first), stale temporaries and legacy files. */
export function pruneCache(dir: string, o: PruneOptions = {}): PruneResult {
  const now = o.now ?? Date.now();
  const w = walk(dir, now);
  const stale = w.temps.filter((t) => t.stale);
  remove(stale);
  remove(w.legacy);
  removeEmptyLegacyShards(dir);
  let all = [...w.entries.values()].flatMap((cuts) => [...cuts.values()].flat());
  const doomed: FileInfo[] = [];
  if (o.olderThanMs !== undefined) {
    const limit = now - o.olderThanMs;
    doomed.push(...all.filter((f) => f.mtime < limit));
    all = all.filter((f) => f.mtime >= limit);
  }
  if (o.maxBytes !== undefined) {
    all.sort((a, b) => a.mtime - b.mtime);
    let total = sum(all);
    let k = 0;
    while (total > o.maxBytes && k < all.length) total -= all[k++].bytes;
    doomed.push(...all.slice(0, k));
    all = all.slice(k);
  }
  const freedBytes = remove(doomed);
  return {
    removed: doomed.length,
    freedBytes,
    temporaries: stale.length,
    legacy: w.legacy.length,
    remaining: { entries: all.length, bytes: sum(all) },
  };
}

function removeEmptyLegacyShards(dir: string): void {
  for (const top of list(dir)) {
    if (top.isDirectory() && LEGACY_SHARD.test(top.name) && list(path.join(dir, top.name)).length === 0)
      rmSync(path.join(dir, top.name), { recursive: true, force: true });
  }
}

/** Removes every entry (and temporaries of dead writers); a running writer's own temporaries are left to it. */
export function clearCache(dir: string): PruneResult {
  return pruneCache(dir, { maxBytes: 0 });
}

/** Reads and checks every entry (header and checksum); damaged ones are removed (they would be, on their next read). */
export function verifyCache(dir: string): { checked: number; damaged: DamagedEntry[] } {
  const w = walk(dir, Date.now());
  const damaged: DamagedEntry[] = [];
  let checked = 0;
  for (const cuts of w.entries.values()) {
    for (const files of cuts.values()) {
      for (const f of files) {
        const r = readEntry(f.file);
        if (r.value || r.problem) checked++;
        if (r.problem) {
          damaged.push({ file: f.file, reason: r.problem });
          rmSync(f.file, { force: true });
        }
      }
    }
  }
  return { checked, damaged };
}

const UNITS: Record<string, number> = { b: 1, kb: 1e3, k: 1e3, mb: 1e6, m: 1e6, gb: 1e9, g: 1e9, tb: 1e12, t: 1e12 };
const DURATIONS: Record<string, number> = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 };

/** '5GB', '500MB', '1.5g', '123' (bytes); KiB-style suffixes (KiB, MiB, GiB) are powers of 1024. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$/i.exec(text);
  if (!m) throw new UsageError('invalid-value', `'${text}' is not a size (e.g. 5GB, 500MB)`);
  const unit = (m[2] ?? 'b').toLowerCase();
  const factor = unit.includes('i') ? 1024 ** ' kmgt'.indexOf(unit[0]) : UNITS[unit];
  return Math.round(Number(m[1]) * factor);
}

/** '30d', '12h', '90m', '2w', '45s'. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$/i.exec(text);
  if (!m) throw new UsageError('invalid-value', `'${text}' is not a duration (e.g. 30d, 12h, 2w)`);
  return Number(m[1]) * DURATIONS[m[2].toLowerCase()];
}
