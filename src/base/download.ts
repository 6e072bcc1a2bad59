/**
 * A verified, resumable download cache for TF.js model files.
 *
 * The cache key is the canonical URL: `<cacheDir>/<host>/<url path>`, so bytes fetched through a mirror and bytes
 * fetched from the real bucket land in the same place. Every file goes to `<file>.partial` first, resumes with an HTTP
 * Range request, is checked against Content-Length and (when known ahead) SHA-256, and only then is renamed into
 * place. Sizes and SHA-256 are recorded in `graft-files.json` beside the files and re-checked on every call, so a file
 * damaged on disk is noticed and fetched again instead of silently producing wrong features.
 */
import { createHash } from 'node:crypto';
import { createReadStream, type Dirent, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { open, readFile, rename, rm, stat, utimes } from 'node:fs/promises';
import path from 'node:path';
import { makeDirsFor } from '../util/dirs.ts';
import { BaseError, DownloadError, opt, shown, words } from '../util/errors.ts';
import { hostName, processAlive, tempTag, writeFileAtomic } from '../util/files.ts';
import { cacheRoot } from '../util/paths.ts';
import type { ProgressCallback } from '../util/progress.ts';
import { parseModelJson } from './artifacts.ts';

/** The prefix a mirror replaces: where the zoo's files are published. */
export const CANONICAL_PREFIX = 'https://storage.googleapis.com/';

/** Record of sizes and hashes kept beside the cached files. */
export const FILES_MANIFEST = 'graft-files.json';

export interface EnsureOptions {
  /** Default `<cacheRoot()>/models`. */
  cacheDir?: string;
  /** Base URL standing in for https://storage.googleapis.com/; default the GRAFT_MODEL_MIRROR environment variable. */
  mirror?: string;
  /** Never touch the network: use the cache or fail. */
  offline?: boolean;
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
  /** Name used in error messages (a zoo name); default the URL. */
  name?: string;
  /** SHA-256 per file (relative to model.json) known ahead of download, e.g. from the zoo. */
  sha256?: Record<string, string>;
  /** Give up when no byte arrives for this long. Default 30 s. */
  stallTimeoutMs?: number;
}

export interface EnsureResult {
  modelJsonPath: string;
  /** Files (relative to model.json) fetched by this call. */
  downloaded: string[];
  /** Files that were in the cache but failed the size or SHA-256 check, and were fetched again. */
  repaired: string[];
  /** True when nothing had to be downloaded. */
  fromCache: boolean;
  /** Every file of the model, relative to model.json, model.json first. */
  files: string[];
}

interface FileRecord {
  size: number;
  sha256: string;
  /** The URL the bytes actually came from (a mirror or the canonical one). */
  from?: string;
  fetchedAt?: string;
}

interface FilesManifest {
  url: string;
  files: Record<string, FileRecord>;
}

/** The URL bytes are fetched from: the canonical one, or its mirror. */
export function mirrorUrl(url: string, mirror?: string): string {
  const m = mirror ?? process.env.GRAFT_MODEL_MIRROR;
  if (!m || !url.startsWith(CANONICAL_PREFIX)) return url;
  return `${m.replace(/\/+$/, '')}/${url.slice(CANONICAL_PREFIX.length)}`;
}

export function defaultModelCacheDir(): string {
  return path.join(cacheRoot(), 'models');
}

/** Where a URL's file lives in the cache: `<cacheDir>/<host>/<path>`. */
export function cachePathFor(url: string, cacheDir: string = defaultModelCacheDir()): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new DownloadError('invalid-url', url, `${url}: not a valid URL`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:')
    throw new DownloadError('invalid-url', url, `${url}: only http(s) URLs can be downloaded`);
  const segments = u.pathname.split('/').map((s) => decodeURIComponent(s));
  if (segments[segments.length - 1] === '')
    throw new DownloadError('invalid-url', url, `${url}: expected the URL of a model.json file, not a folder`);
  const parts = segments.filter((s) => s !== '');
  for (const s of parts) {
    if (s === '.' || s === '..' || /[\\/\0]/.test(s))
      throw new DownloadError('invalid-url', url, `${url}: unusable path segment '${s}' for the cache`);
  }
  return path.join(cacheDir, u.host.replace(/:/g, '_'), ...parts);
}

/** Weight paths come from a downloaded file: refuse any that would land outside the model's folder. */
function checkRelPath(rel: string, where: string): void {
  const bad =
    rel === '' || rel.includes('\\') || rel.includes('\0') || /^[a-z][a-z0-9+.-]*:/i.test(rel) || rel.startsWith('/');
  if (bad || rel.split('/').some((s) => s === '..' || s === '.' || s === '')) {
    throw new BaseError('not-a-model', where, `weightsManifest path ${shown(rel)} is not a plain relative file name`);
  }
}

function weightPaths(jsonText: string, where: string): string[] {
  const json = parseModelJson(jsonText, where);
  const out: string[] = [];
  for (const group of json.weightsManifest) {
    for (const p of group.paths ?? []) {
      checkRelPath(p, where);
      if (!out.includes(p)) out.push(p);
    }
  }
  return out;
}

function readManifest(dir: string, url: string): FilesManifest {
  const file = path.join(dir, FILES_MANIFEST);
  if (existsSync(file)) {
    try {
      const m = JSON.parse(readFileSync(file, 'utf8')) as FilesManifest;
      if (m && typeof m === 'object' && m.files && typeof m.files === 'object') return { url, files: m.files };
    } catch {
      // A damaged record only costs re-downloads; it must not make the cache unusable.
    }
  }
  return { url, files: {} };
}

async function writeManifest(dir: string, m: FilesManifest): Promise<void> {
  writeFileAtomic(path.join(dir, FILES_MANIFEST), `${JSON.stringify(m, null, 2)}\n`);
}

/** Beside a model's files while one process downloads or repairs them: `{ host, pid, since }`. */
export const LOCK_FILE = '.graft-download.lock';
/** The holder touches its lock this often; a lock untouched for LOCK_STALE_MS belongs to a process that is gone. */
const LOCK_HEARTBEAT_MS = 5_000;
const LOCK_STALE_MS = 60_000;
const LOCK_POLL_MS = 150;

interface LockInfo {
  host: string;
  pid: number;
  since: string;
}

/** Whether the lock at `file` was left by a process that is gone: dead pid on this host, or no heartbeat for long. */
async function lockIsStale(file: string): Promise<boolean> {
  let s: Awaited<ReturnType<typeof stat>>;
  let info: Partial<LockInfo> = {};
  try {
    s = await stat(file);
    info = JSON.parse(await readFile(file, 'utf8'));
  } catch {
    // Vanished (released) or half-written by its holder this instant: not stale; the next poll sees more.
    return false;
  }
  if (Date.now() - s.mtimeMs > LOCK_STALE_MS) return true;
  return info.host === hostName() && typeof info.pid === 'number' && !processAlive(info.pid);
}

/**
 * Runs `fn` holding the download lock of one model folder. Waits (polling, abortable) while another live process
 * holds it; takes over a lock whose holder died (kill -9 leaves one behind).
 */
export async function withDownloadLock<T>(
  dir: string,
  o: { signal?: AbortSignal; onProgress?: ProgressCallback; name?: string },
  fn: () => Promise<T>,
): Promise<T> {
  makeDirsFor('cacheDir', dir);
  const file = path.join(dir, LOCK_FILE);
  const mine: LockInfo = { host: hostName(), pid: process.pid, since: new Date().toISOString() };
  let waited = false;
  for (;;) {
    checkAbortSignal(o.signal);
    try {
      const fh = await open(file, 'wx');
      try {
        await fh.writeFile(JSON.stringify(mine));
      } finally {
        await fh.close();
      }
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    if (await lockIsStale(file)) {
      // Renamed aside first, so of several waiters that judged it stale only one removes it.
      const aside = `${file}${tempTag()}.tmp`;
      try {
        await rename(file, aside);
        await rm(aside, { force: true });
      } catch {}
      continue;
    }
    if (!waited) {
      waited = true;
      o.onProgress?.({ phase: 'download', done: 0, total: 1, detail: 'waiting for another graft process' });
    }
    await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
  }
  const beat = setInterval(() => {
    const now = new Date();
    utimes(file, now, now).catch(() => {});
  }, LOCK_HEARTBEAT_MS);
  beat.unref();
  try {
    return await fn();
  } finally {
    clearInterval(beat);
    await rm(file, { force: true });
  }
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

type FileState = 'ok' | 'missing' | 'damaged' | 'unrecorded';

async function checkFile(file: string, rec: FileRecord | undefined, knownSha: string | undefined): Promise<FileState> {
  let size: number;
  try {
    const s = await stat(file);
    if (!s.isFile()) return 'missing';
    size = s.size;
  } catch {
    return 'missing';
  }
  const want = knownSha ?? rec?.sha256;
  if (!want) return 'unrecorded';
  if (rec && rec.size !== size) return 'damaged';
  return (await sha256File(file)) === want.toLowerCase() ? 'ok' : 'damaged';
}

/**
 * Makes sure a TF.js model.json and every weight file its weightsManifest names are in the cache and intact,
 * downloading (or resuming) what is missing or damaged. Returns the local model.json path.
 */
export async function ensureModelFiles(url: string, opts: EnsureOptions = {}): Promise<EnsureResult> {
  const cacheDir = opts.cacheDir ?? defaultModelCacheDir();
  const modelJsonPath = cachePathFor(url, cacheDir);
  const dir = path.dirname(modelJsonPath);
  // Most calls find everything in place: checked without the lock, so concurrent runs never wait on each other then.
  const intact = await intactFiles(dir, modelJsonPath, url, opts.sha256);
  if (intact) return { modelJsonPath, downloaded: [], repaired: [], fromCache: true, files: intact };
  // Something is missing or damaged: one process at a time repairs a model's folder (shared .partial files and
  // graft-files.json); a waiter re-checks afterwards and usually finds the other's download complete.
  return withDownloadLock(dir, opts, () => ensureLocked(url, modelJsonPath, opts));
}

/** The model's files (model.json first) when every one is present and passes its check; undefined otherwise. */
async function intactFiles(
  dir: string,
  modelJsonPath: string,
  url: string,
  sha256?: Record<string, string>,
): Promise<string[] | undefined> {
  const manifest = readManifest(dir, url);
  const jsonName = path.basename(modelJsonPath);
  const ok = async (rel: string) => (await checkFile(path.join(dir, rel), manifest.files[rel], sha256?.[rel])) === 'ok';
  if (!(await ok(jsonName))) return undefined;
  let rels: string[];
  try {
    rels = weightPaths(await readFile(modelJsonPath, 'utf8'), modelJsonPath);
  } catch {
    return undefined;
  }
  for (const rel of rels) if (!(await ok(rel))) return undefined;
  return [jsonName, ...rels];
}

async function ensureLocked(url: string, modelJsonPath: string, opts: EnsureOptions): Promise<EnsureResult> {
  const dir = path.dirname(modelJsonPath);
  const jsonName = path.basename(modelJsonPath);
  const source = mirrorUrl(url, opts.mirror);
  const name = opts.name ?? url;
  const manifest = readManifest(dir, url);
  const downloaded: string[] = [];
  const repaired: string[] = [];

  const ensure = async (rel: string): Promise<void> => {
    checkAbortSignal(opts.signal);
    const file = path.join(dir, rel);
    const known = opts.sha256?.[rel];
    const state = await checkFile(file, manifest.files[rel], known);
    if (state === 'ok') return;
    if (opts.offline) {
      if (state === 'missing')
        throw new DownloadError('offline', url, words`${name}: not in the cache and ${opt('offline')} is set`);
      if (state === 'damaged')
        throw new DownloadError(
          'offline',
          url,
          words`${name}: cached file ${file} is damaged (size or SHA-256 differs) and ${opt('offline')} is set`,
        );
      // Only files that passed the Content-Length check are ever renamed into place, so an unrecorded one (its
      // record lost, e.g. a crash between rename and record) is complete: adopt it rather than fail offline.
      const s = await stat(file);
      manifest.files[rel] = { size: s.size, sha256: await sha256File(file) };
      await writeManifest(dir, manifest);
      return;
    }
    if (state === 'damaged') repaired.push(rel);
    const from = new URL(rel, source).toString();
    const got = await downloadFile(from, file, {
      sha256: known,
      onProgress: opts.onProgress,
      signal: opts.signal,
      label: rel,
      stallTimeoutMs: opts.stallTimeoutMs ?? 30_000,
    });
    manifest.files[rel] = { size: got.size, sha256: got.sha256, from, fetchedAt: new Date().toISOString() };
    await writeManifest(dir, manifest);
    downloaded.push(rel);
  };

  await ensure(jsonName);
  const rels = weightPaths(await readFile(modelJsonPath, 'utf8'), modelJsonPath);
  for (const rel of rels) await ensure(rel);
  return { modelJsonPath, downloaded, repaired, fromCache: downloaded.length === 0, files: [jsonName, ...rels] };
}

export interface CacheStatus {
  modelJsonPath: string;
  /** model.json and every weight file present (sizes match the record when there is one); no hashing. */
  cached: boolean;
  /** Absolute paths of the model's files present in the cache. */
  cachedFiles: string[];
  /** Total bytes of the files present. */
  bytes: number;
}

/** A cheap look at the cache for listings: existence and sizes only. `ensureModelFiles` does the real check. */
export async function cacheStatus(url: string, cacheDir: string = defaultModelCacheDir()): Promise<CacheStatus> {
  const modelJsonPath = cachePathFor(url, cacheDir);
  const dir = path.dirname(modelJsonPath);
  const manifest = readManifest(dir, url);
  const cachedFiles: string[] = [];
  let bytes = 0;
  let complete = true;
  const look = async (rel: string) => {
    const file = path.join(dir, rel);
    try {
      const s = await stat(file);
      const rec = manifest.files[rel];
      if (!s.isFile() || (rec && rec.size !== s.size)) complete = false;
      cachedFiles.push(file);
      bytes += s.size;
    } catch {
      complete = false;
    }
  };
  await look(path.basename(modelJsonPath));
  if (!complete) return { modelJsonPath, cached: false, cachedFiles, bytes };
  let rels: string[];
  try {
    rels = weightPaths(await readFile(modelJsonPath, 'utf8'), modelJsonPath);
  } catch {
    return { modelJsonPath, cached: false, cachedFiles, bytes };
  }
  for (const rel of rels) await look(rel);
  return { modelJsonPath, cached: complete, cachedFiles, bytes };
}

function checkAbortSignal(signal?: AbortSignal): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
}

function reasonOf(e: unknown): string {
  const err = e as Error & { cause?: Error & { code?: string } };
  const cause = err.cause;
  const text = cause?.message || cause?.code || err.message || String(e);
  return text.split('\n')[0];
}

interface DownloadOptions {
  sha256?: string;
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
  label: string;
  stallTimeoutMs: number;
}

/**
 * Streams one URL into `dest` through `dest.partial`, resuming a partial file with a Range request. The final name
 * only ever holds a complete, checked file.
 */
async function downloadFile(url: string, dest: string, o: DownloadOptions): Promise<{ size: number; sha256: string }> {
  const partial = `${dest}.partial`;
  makeDirsFor('cacheDir', path.dirname(dest));
  const stall = new AbortController();
  const signal = o.signal ? AbortSignal.any([o.signal, stall.signal]) : stall.signal;
  let timer: NodeJS.Timeout | undefined;
  const kick = () => {
    clearTimeout(timer);
    const wait = o.stallTimeoutMs >= 1000 ? `${Math.round(o.stallTimeoutMs / 1000)} s` : `${o.stallTimeoutMs} ms`;
    timer = setTimeout(() => stall.abort(new Error(`no data for ${wait}`)), o.stallTimeoutMs);
  };
  // A user abort keeps its own reason; everything else becomes one line naming the URL.
  const fail = (e: unknown, what?: string): Error => {
    if (o.signal?.aborted) return o.signal.reason instanceof Error ? o.signal.reason : new Error('aborted');
    const why = stall.signal.aborted ? (stall.signal.reason as Error).message : reasonOf(e);
    return new DownloadError('network', url, `cannot download ${url}: ${what ? `${what} (${why})` : why}`, e);
  };
  const request = async (from: number): Promise<Response> => {
    kick();
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (from > 0) headers.range = `bytes=${from}-`;
    try {
      return await fetch(url, { headers, signal });
    } catch (e) {
      throw fail(e);
    }
  };

  try {
    let have = 0;
    try {
      have = (await stat(partial)).size;
    } catch {}
    let res = await request(have);
    if (res.status === 416 && have > 0) {
      // The partial file is no prefix of what the server has now (or already complete but unverified): start over.
      await res.body?.cancel();
      have = 0;
      res = await request(0);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new DownloadError(
        'http-status',
        url,
        `cannot download ${url}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`,
      );
    }
    const encoded = !!res.headers.get('content-encoding') && res.headers.get('content-encoding') !== 'identity';
    const length = res.headers.get('content-length');
    let append = false;
    let total: number | undefined;
    if (res.status === 206 && have > 0) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
      if (m && Number(m[1]) === have && !encoded) {
        append = true;
        total = m[3] !== '*' ? Number(m[3]) : length !== null ? have + Number(length) : undefined;
      } else {
        await res.body?.cancel();
        res = await request(0);
        if (!res.ok) {
          await res.body?.cancel();
          throw new DownloadError(
            'http-status',
            url,
            `cannot download ${url}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`,
          );
        }
      }
    }
    if (!append) {
      have = 0;
      // Content-Length counts encoded bytes; fetch hands us decoded ones, so it is no size check then.
      const len = res.headers.get('content-length');
      total = len !== null && !encoded ? Number(len) : undefined;
    }

    let done = have;
    let lastReport = 0;
    const report = (force: boolean) => {
      if (!o.onProgress || total === undefined) return;
      const now = Date.now();
      if (!force && now - lastReport < 100) return;
      lastReport = now;
      o.onProgress({ phase: 'download', done, total, detail: o.label });
    };
    const fh = await open(partial, append ? 'a' : 'w');
    try {
      report(true);
      if (res.body) {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          kick();
          await fh.write(chunk);
          done += chunk.length;
          report(false);
        }
      }
    } catch (e) {
      // An encoded stream cannot be resumed by byte offset, so its partial file is useless.
      if (encoded) await rm(partial, { force: true });
      throw fail(
        e,
        `connection lost after ${done}${total !== undefined ? ` of ${total}` : ''} bytes; run again to resume`,
      );
    } finally {
      await fh.close();
    }
    if (total !== undefined && done !== total) {
      if (done > total) await rm(partial, { force: true });
      throw new DownloadError(
        'incomplete',
        url,
        `cannot download ${url}: received ${done} bytes, expected ${total}${done < total ? '; run again to resume' : ''}`,
      );
    }
    report(true);
    const sha256 = await sha256File(partial);
    if (o.sha256 && sha256 !== o.sha256.toLowerCase()) {
      await rm(partial, { force: true });
      throw new DownloadError('checksum', url, `cannot download ${url}: SHA-256 is ${sha256}, expected ${o.sha256}`);
    }
    await rename(partial, dest);
    return { size: done, sha256 };
  } finally {
    clearTimeout(timer);
  }
}

export interface DownloadedModel {
  /** The canonical URL the files were downloaded for. */
  url: string;
  dir: string;
  files: number;
  bytes: number;
}

/** Every downloaded model under `cacheDir` (folders holding a graft-files.json record). */
export function listDownloads(cacheDir: string = defaultModelCacheDir()): DownloadedModel[] {
  const out: DownloadedModel[] = [];
  const visit = (dir: string) => {
    let names: Dirent[];
    try {
      names = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    if (names.some((n) => n.isFile() && n.name === FILES_MANIFEST)) {
      const m = readManifest(dir, '');
      let url = '';
      try {
        url = JSON.parse(readFileSync(path.join(dir, FILES_MANIFEST), 'utf8')).url ?? '';
      } catch {}
      let bytes = 0;
      let files = 0;
      for (const n of names) {
        if (!n.isFile()) continue;
        files++;
        bytes += statSync(path.join(dir, n.name), { throwIfNoEntry: false })?.size ?? 0;
      }
      out.push({ url: url || m.url || dir, dir, files, bytes });
    }
    for (const n of names) if (n.isDirectory()) visit(path.join(dir, n.name));
  };
  visit(cacheDir);
  return out.sort((a, b) => a.url.localeCompare(b.url));
}

/** Removes a downloaded model's files, holding its lock so that no concurrent download is cut short. */
export async function removeDownload(dir: string): Promise<void> {
  await withDownloadLock(dir, {}, async () => {
    for (const n of readdirSync(dir))
      if (n !== LOCK_FILE) await rm(path.join(dir, n), { recursive: true, force: true });
  });
  await rm(dir, { recursive: true, force: true }).catch(() => {});
}
