/**
 * @file Small JPEG thumbnails as data URIs, so the report carries its images inside it. EXIF orientation is applied, as
 * for training; a file that is gone or does not decode gets no thumbnail (the report says so) rather than an error.
 *
 * Thumbnails are kept in graft's cache (`<cache>/thumbnails`), keyed by a hash of the image's bytes and the thumbnail
 * settings: decoding and resizing the report's ~70 images was a third of what the report adds to a warm-cache
 * `graft train` (bench --sections=overhead), and a rerun shows mostly the same images. A changed image has another
 * key, so the cache cannot show a stale picture; an entry that is not a whole JPEG is made again. The cache is a
 * convenience only: when it cannot be read or written, thumbnails are made as without it.
 */
import { createHash } from 'node:crypto';
import { type Dirent, readdirSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { makeDirs } from '../util/dirs.ts';
import { writeFileAtomic } from '../util/files.ts';
import { cacheRoot } from '../util/paths.ts';
import { mapLimit } from '../workflows/extract.ts';

/** Longest side in pixels: enough to recognise a photo, small enough for hundreds in one page. */
export const THUMBNAIL_SIZE = 96;
const QUALITY = 70;
/** Part of every key: a change to how thumbnails are made must not serve the old ones. */
const RECIPE = `graft-thumbnail-1 q${QUALITY} rotate flatten-white inside`;

/** Where thumbnails are kept by default: `<cache root>/thumbnails` (GRAFT_CACHE_DIR moves it with the rest). */
export const thumbnailsDir = () => path.join(cacheRoot(), 'thumbnails');

export interface ThumbnailOptions {
  size?: number;
  /** The thumbnail cache folder; null: no cache. Default `thumbnailsDir()`. */
  cacheDir?: string | null;
}

function makeJpeg(bytes: Buffer, size: number): Promise<Buffer> {
  return sharp(bytes, { animated: false })
    .rotate()
    .resize(size, size, { fit: 'inside', withoutEnlargement: true })
    .flatten({ background: '#ffffff' })
    .jpeg({ quality: QUALITY })
    .toBuffer();
}

/** A whole JPEG: starts with SOI, ends with EOI (a truncated or overwritten entry fails one or the other). */
const wholeJpeg = (b: Buffer) =>
  b.length > 4 && b[0] === 0xff && b[1] === 0xd8 && b[b.length - 2] === 0xff && b[b.length - 1] === 0xd9;

function cached(file: string): Buffer | undefined {
  try {
    const b = readFileSync(file);
    if (!wholeJpeg(b)) return undefined;
    const now = new Date();
    utimesSync(file, now, now); // last use, for `graft cache prune --older-than`
    return b;
  } catch {
    return undefined;
  }
}

export async function thumbnail(file: string, o: ThumbnailOptions = {}): Promise<string | undefined> {
  const size = o.size ?? THUMBNAIL_SIZE;
  const dir = o.cacheDir === undefined ? thumbnailsDir() : o.cacheDir;
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch {
    return undefined;
  }
  let entry: string | undefined;
  if (dir) {
    const key = createHash('sha256').update(`${RECIPE} ${size}\n`).update(bytes).digest('hex').slice(0, 40);
    entry = path.join(dir, key.slice(0, 2), `${key}.jpg`);
    const hit = cached(entry);
    if (hit) return `data:image/jpeg;base64,${hit.toString('base64')}`;
  }
  let jpeg: Buffer;
  try {
    jpeg = await makeJpeg(bytes, size);
  } catch {
    return undefined;
  }
  if (entry)
    try {
      makeDirs(path.dirname(entry));
      writeFileAtomic(entry, jpeg);
    } catch {
      // A read-only or full cache only costs the next report the same work again.
    }
  return `data:image/jpeg;base64,${jpeg.toString('base64')}`;
}

/** Thumbnails of many files, each made once, a few at a time. */
export async function thumbnails(files: string[], o: ThumbnailOptions = {}): Promise<Map<string, string | undefined>> {
  const unique = [...new Set(files)];
  const uris = await mapLimit(unique, 4, (f) => thumbnail(f, o));
  return new Map(unique.map((f, i) => [f, uris[i]]));
}

export interface ThumbnailUsage {
  files: number;
  bytes: number;
}

function shards(dir: string): { file: string; bytes: number; mtime: number }[] {
  const ls = (d: string): Dirent[] => {
    try {
      return readdirSync(d, { withFileTypes: true });
    } catch {
      return [];
    }
  };
  const out: { file: string; bytes: number; mtime: number }[] = [];
  for (const shard of ls(dir)) {
    if (!shard.isDirectory()) continue;
    for (const f of ls(path.join(dir, shard.name))) {
      if (!f.isFile()) continue;
      const file = path.join(dir, shard.name, f.name);
      try {
        const s = statSync(file);
        out.push({ file, bytes: s.size, mtime: s.mtimeMs });
      } catch {
        // removed meanwhile
      }
    }
  }
  return out;
}

/** What the thumbnail cache holds. */
export function thumbnailUsage(dir = thumbnailsDir()): ThumbnailUsage {
  const all = shards(dir);
  return { files: all.length, bytes: all.reduce((a, f) => a + f.bytes, 0) };
}

/** Removes thumbnails not used for longer than `olderThanMs` (all of them when undefined). */
export function pruneThumbnails(dir = thumbnailsDir(), olderThanMs?: number, now = Date.now()): ThumbnailUsage {
  const doomed = shards(dir).filter((f) => olderThanMs === undefined || f.mtime < now - olderThanMs);
  let bytes = 0;
  let files = 0;
  for (const f of doomed) {
    try {
      rmSync(f.file);
      bytes += f.bytes;
      files++;
    } catch {
      // removed meanwhile
    }
  }
  return { files, bytes };
}
