/**
 * Content-addressed store of trunk activations on disk. The key hashes everything that determines an activation
 * (image bytes, base weights, cut, preprocessing, augmentation view), never a file path, so renamed or copied images
 * hit, changed images miss, and caches computed on different machines or engines can be merged by copying files.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
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

export class ActivationCache {
  readonly dir: string;
  hits = 0;
  misses = 0;

  constructor(dir: string = path.join(cacheRoot(), 'activations')) {
    this.dir = dir;
  }

  private file(key: string): string {
    return path.join(this.dir, key.slice(0, 2), `${key}.f32`);
  }

  /** The stored activation, or undefined (counted as a miss) when absent or of the wrong size. */
  get(key: string, size: number): Float32Array | undefined {
    let buf: Buffer;
    try {
      buf = readFileSync(this.file(key));
    } catch {
      this.misses++;
      return undefined;
    }
    if (buf.byteLength !== size * 4) {
      // A truncated or foreign file: recompute rather than feed garbage to a head.
      this.misses++;
      return undefined;
    }
    this.hits++;
    const out = new Float32Array(size);
    new Uint8Array(out.buffer).set(buf);
    return out;
  }

  /** Stores atomically (temporary name + rename) so a crash never leaves a half-written activation. */
  put(key: string, data: Float32Array): void {
    const target = this.file(key);
    mkdirSync(path.dirname(target), { recursive: true });
    const tmp = `${target}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    renameSync(tmp, target);
  }

  resetStats(): void {
    this.hits = 0;
    this.misses = 0;
  }
}
