/**
 * Augmentation views: fixed, deterministic transforms of a decoded image whose activations are cached like the
 * original's. A view is part of the activation cache key, so each view is computed once per image and reused by every
 * later run, which is what keeps augmentation compatible with "never rerun the frozen trunk".
 *
 * Only the horizontal flip ships. It is the one transform every anchor applies by default (Keras' RandomFlip, fastai's
 * aug_transforms, torchvision's RandomHorizontalFlip, Teachable Machine's flipped webcam samples) and it changes no
 * pixel statistics; random crops and rotations need a fresh draw per epoch to help, which a cache cannot give.
 */
import { InternalError, opt, shown, UsageError, words } from '../util/errors.ts';
export type View = 'orig' | 'flip';

/** `--augment` values: which extra views of each training image are added to the training rows. */
export type Augment = 'flip' | 'none';

export const DEFAULT_AUGMENT: Augment = 'flip';

/** The extra training views an `--augment` setting asks for (the original is always used). */
export function augmentViews(augment: Augment = DEFAULT_AUGMENT): View[] {
  if (augment === 'flip') return ['flip'];
  if (augment === 'none') return [];
  throw new UsageError('invalid-value', words`${opt('augment')} must be flip or none (got ${shown(String(augment))})`);
}

export function parseAugment(text: string | undefined): Augment {
  const a = (text ?? DEFAULT_AUGMENT) as Augment;
  augmentViews(a);
  return a;
}

/** Applies a view to HWC RGB pixels ([height, width]); 'orig' returns the input itself. */
export function applyView(rgb: Uint8Array, size: [number, number], view: View): Uint8Array {
  if (view === 'orig') return rgb;
  if (view !== 'flip') throw new InternalError(`unknown view '${String(view)}'`);
  const [h, w] = size;
  if (rgb.length !== h * w * 3) throw new RangeError(`applyView: ${rgb.length} values for a ${h}x${w}x3 image`);
  return mirrorImages(rgb, 1, size);
}

/** Horizontal mirror of n HWC RGB images stored one after another (bytes or floats), into a new array. */
export function mirrorImages<T extends Uint8Array | Float32Array>(px: T, n: number, size: [number, number]): T {
  const [h, w] = size;
  if (px.length !== n * h * w * 3)
    throw new RangeError(`mirrorImages: ${px.length} values for ${n} ${h}x${w}x3 images`);
  const out = new (px.constructor as { new (n: number): T })(px.length);
  for (let y = 0; y < n * h; y++) {
    const row = y * w * 3;
    for (let x = 0; x < w; x++) {
      const from = row + (w - 1 - x) * 3;
      const to = row + x * 3;
      out[to] = px[from];
      out[to + 1] = px[from + 1];
      out[to + 2] = px[from + 2];
    }
  }
  return out;
}
