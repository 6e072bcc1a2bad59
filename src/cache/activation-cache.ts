/**
 * Content-addressed store of trunk activations on disk. The key hashes everything that determines an activation
 * (image bytes, base weights, cut, preprocessing, augmentation view), never a file path, so renamed or copied images
 * hit, changed images miss, and caches computed on different machines or engines can be merged by copying files.
 *
 * Layout: `<dir>/<base id>/<cut>/<key[0:2]>/<key>.act`, so `graft cache` can count and prune per base and cut without
 * opening entries. Each entry carries a header (magic, format version, float count, CRC-32 over key and payload) that
 * is checked on every read: a truncated, zeroed or garbled entry, or a valid entry copied under another key, is never
 * served; it is deleted, reported once (`damaged`) and recomputed by the caller.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fstatSync,
  futimesSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import { makeDirsFor } from '../util/dirs.ts';
import { tempTag, writeFileAtomic } from '../util/files.ts';
import { cacheRoot } from '../util/paths.ts';

export interface ActivationKeyParts {
  /** SHA-256 of the image file's bytes (hex). */
  image: string;
  /** Base fingerprint (Base.id). */
  base: string;
  cut: string;
  /** preprocessingKey() of the base's preprocessing. */
  preprocessing: string;
  /** Augmentation view; 'orig' for the unaugmented image. */
  view?: string;
}

export function hashBytes(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function activationKey(p: ActivationKeyParts): string {
  return createHash('sha256')
    .update(['graft-activation-v1', p.image, p.base, p.cut, p.preprocessing, p.view ?? 'orig'].join('\0'))
    .digest('hex');
}

/** File name suffix of an entry; temporaries end in `.tmp` (see tempName). */
export const ENTRY_SUFFIX = '.act';
const MAGIC = 0x43416647; // 'GfAC' read as little-endian u32
const FORMAT = 1;
const HEADER_BYTES = 16;
/** Entries last used longer ago than this get their time stamp refreshed on a hit, so pruning by age spares them. */
const TOUCH_AFTER_MS = 24 * 3600 * 1000;

/** Folder name of a base id or cut name: readable where it can be, never a path separator or a dot-name. */
export function folderName(name: string): string {
  const safe = encodeURIComponent(name).replace(/\*/g, '%2A');
  return safe === '.' || safe === '..' ? `%2E${safe.slice(1)}` : safe;
}

/** A damaged entry: found, deleted, and recomputed by the caller. */
export interface DamagedEntry {
  file: string;
  reason: string;
}

/** Temporary file names name their writer, so a sweep can tell a dead writer's leftovers from a live one's. */
function tempName(target: string): string {
  return `${target}${tempTag()}.tmp`;
}

function checksum(key: string, payload: Uint8Array): number {
  return crc32(payload, crc32(key));
}

export class ActivationCache {
  readonly dir: string;
  hits = 0;
  misses = 0;
  /** Entries found damaged (and deleted) by this instance, each reported once. */
  readonly damaged: DamagedEntry[] = [];
  private readonly made = new Set<string>();

  constructor(dir: string = path.join(cacheRoot(), 'activations')) {
    this.dir = dir;
  }

  /** Where an entry lives. */
  file(p: ActivationKeyParts, key: string = activationKey(p)): string {
    return path.join(this.dir, folderName(p.base), folderName(p.cut), key.slice(0, 2), `${key}${ENTRY_SUFFIX}`);
  }

  /**
   * The stored activation of `size` floats, or undefined (a miss) when absent. An entry that fails its check (length,
   * header or checksum) is deleted, recorded in `damaged`, and is a miss.
   */
  get(p: ActivationKeyParts, size: number): Float32Array | undefined {
    const key = activationKey(p);
    const file = this.file(p, key);
    const r = readEntry(file, key, size);
    if (r.value) {
      this.hits++;
      return r.value;
    }
    this.misses++;
    if (r.problem) {
      this.damaged.push({ file, reason: r.problem });
      try {
        unlinkSync(file);
      } catch {
        // Gone already (another process repaired it) or read-only: the caller recomputes either way.
      }
    }
    return undefined;
  }

  /** Stores atomically (temporary name + rename) so a crash never leaves a half-written entry under its real name. */
  put(p: ActivationKeyParts, data: Float32Array): void {
    const key = activationKey(p);
    const target = this.file(p, key);
    const folder = path.dirname(target);
    if (!this.made.has(folder)) {
      makeDirsFor('cacheDir', folder);
      this.made.add(folder);
    }
    const payload = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32LE(MAGIC, 0);
    header.writeUInt32LE(FORMAT, 4);
    header.writeUInt32LE(data.length, 8);
    header.writeUInt32LE(checksum(key, payload), 12);
    const tmp = tempName(target);
    try {
      writeFileSync(tmp, Buffer.concat([header, payload]));
      renameSync(tmp, target);
    } catch (e) {
      rmSync(tmp, { force: true });
      // The folder may have been removed under us (graft cache clear in another process): make it again once.
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      makeDirsFor('cacheDir', folder);
      writeFileSync(tmp, Buffer.concat([header, payload]));
      renameSync(tmp, target);
    }
  }

  /** Records which base a folder holds (name and source), for `graft cache` listings. Written once per base. */
  describeBase(id: string, about: { name: string; source?: string }): void {
    const folder = path.join(this.dir, folderName(id));
    if (this.made.has(folder)) return;
    makeDirsFor('cacheDir', folder);
    this.made.add(folder);
    const file = path.join(folder, BASE_INFO);
    if (!existsSync(file)) writeFileAtomic(file, `${JSON.stringify({ id, ...about })}\n`);
  }

  resetStats(): void {
    this.hits = 0;
    this.misses = 0;
    this.damaged.length = 0;
  }
}

/** Beside each base's folder: which base it is (`{ id, name, source }`). */
export const BASE_INFO = 'base.json';

/**
 * Reads and checks one entry: `value` when whole, `problem` when present but damaged, neither when absent. `size`
 * (floats) is checked when given; otherwise the count in the header is used (for `graft cache verify`).
 */
export function readEntry(
  file: string,
  key: string = path.basename(file, ENTRY_SUFFIX),
  size?: number,
): { value?: Float32Array; problem?: string } {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return {};
  }
  try {
    const st = fstatSync(fd);
    if (size !== undefined && st.size !== HEADER_BYTES + size * 4)
      return { problem: `${st.size} bytes, expected ${HEADER_BYTES + size * 4}` };
    if (st.size < HEADER_BYTES || (st.size - HEADER_BYTES) % 4 !== 0) return { problem: `${st.size} bytes` };
    const buf = Buffer.allocUnsafe(st.size);
    let got = 0;
    while (got < st.size) {
      const n = readSync(fd, buf, got, st.size - got, got);
      if (n === 0) break;
      got += n;
    }
    if (got !== st.size) return { problem: `short read (${got} of ${st.size} bytes)` };
    const payload = buf.subarray(HEADER_BYTES);
    const count = payload.byteLength / 4;
    if (buf.readUInt32LE(0) !== MAGIC || buf.readUInt32LE(4) !== FORMAT) return { problem: 'not an activation entry' };
    if (buf.readUInt32LE(8) !== count) return { problem: `header says ${buf.readUInt32LE(8)} values, holds ${count}` };
    if (buf.readUInt32LE(12) !== checksum(key, payload)) return { problem: 'checksum mismatch' };
    const value = new Float32Array(count);
    new Uint8Array(value.buffer).set(payload);
    if (Date.now() - st.mtimeMs > TOUCH_AFTER_MS) {
      try {
        const now = new Date();
        futimesSync(fd, now, now);
      } catch {
        // A read-only cache still serves; only pruning by age loses precision.
      }
    }
    return { value };
  } finally {
    closeSync(fd);
  }
}
