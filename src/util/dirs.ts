/**
 * @file Creating folders, and checking up front that a folder can be created, without Node's recursive mkdir.
 *
 * `mkdir(p, { recursive: true })` in Node 20 loops forever at 100% CPU on file systems that answer ENOENT for a folder
 * that exists (/proc, /sys: `mkdir -p /proc/x/y`): it keeps retrying the parent. graft creates each missing level
 * itself instead, so such a path fails at once with the level that could not be made.
 */
import { mkdirSync, mkdtempSync, rmdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { errnoOf, opt, shown, UsageError, words } from './errors.ts';

/** A folder could not be created: `at` is the path that failed (the folder asked for, or an ancestor). */
export class MakeDirError extends Error {
  readonly at: string;
  /** errno code (ENOENT, EACCES, EROFS, ENOTDIR, …) or a short reason. */
  readonly code: string;
  constructor(at: string, code: string, cause?: unknown, what = `cannot create ${at}`) {
    super(
      code === 'ENOTDIR' ? `${at} is a file, not a folder` : `${what} (${describe(code)})`,
      cause === undefined ? undefined : { cause },
    );
    this.name = 'MakeDirError';
    this.at = at;
    this.code = code;
  }
}

function describe(code: string): string {
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return `${code}: permission denied`;
    case 'EROFS':
      return 'EROFS: read-only file system';
    case 'ENOENT':
      return 'ENOENT: this file system does not accept new folders here';
    case 'ENOSPC':
      return 'ENOSPC: no space left on device';
    default:
      return code;
  }
}

/** The closest existing ancestor of `p` (or `p` itself) and the missing levels below it, top first. */
function existingAncestor(p: string): { existing: string; missing: string[] } {
  const missing: string[] = [];
  let at = path.resolve(p);
  for (;;) {
    try {
      const st = statSync(at);
      if (!st.isDirectory()) throw new MakeDirError(at, 'ENOTDIR');
      return { existing: at, missing };
    } catch (e) {
      if (e instanceof MakeDirError) throw e;
      const code = errnoOf(e);
      // ENOTDIR: a file sits somewhere above; keep climbing to report the file itself.
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw new MakeDirError(at, code, e);
    }
    const up = path.dirname(at);
    if (up === at) throw new MakeDirError(at, 'ENOENT');
    missing.unshift(at);
    at = up;
  }
}

/** Creates `dir` and its missing ancestors (like `mkdir -p`), one level at a time; throws MakeDirError. */
export function makeDirs(dir: string): void {
  const { missing } = existingAncestor(dir);
  for (const level of missing) {
    try {
      mkdirSync(level);
    } catch (e) {
      const code = errnoOf(e);
      // Another process may have made it in the meantime.
      if (code === 'EEXIST' && isDir(level)) continue;
      throw new MakeDirError(level, code, e);
    }
  }
}

/** makeDirs for a folder an option names (`out`, `cacheDir`): failure is a UsageError naming the option. */
export function makeDirsFor(option: string, dir: string): void {
  try {
    makeDirs(dir);
  } catch (e) {
    if (!(e instanceof MakeDirError)) throw e;
    throw new UsageError('not-writable', words`${opt(option)} ${shown(dir)}: ${e.message}`, e);
  }
}

/**
 * Checks, without leaving anything behind, that `dir` exists as a folder or could be created: the closest existing
 * ancestor must be a folder in which a new folder can actually be made (a probe folder is created and removed, which
 * catches read-only and virtual file systems that permission bits do not show). Throws MakeDirError.
 */
export function checkCanCreateDir(dir: string): void {
  const { existing, missing } = existingAncestor(dir);
  let probe: string;
  try {
    probe = mkdtempSync(path.join(existing, '.graft-probe-'));
  } catch (e) {
    const at = missing[0] ?? existing;
    throw new MakeDirError(at, errnoOf(e), e, missing.length ? `cannot create ${at}` : `cannot write in ${at}`);
  }
  rmdirSync(probe);
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}
