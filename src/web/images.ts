/**
 * @file Images coming in and going out: an upload is kept only when it decodes exactly as training will decode it
 * (graft's own decoder: JPEG, PNG, WebP, GIF), after a pixel-count check that stops decompression bombs before
 * decoding; thumbnails are made on request and never stored.
 */
import sharp from 'sharp';
import { decodeImage, ImageDecodeError } from '../dataset/decode.ts';
import { LIMITS } from './security.ts';

export class ImageRefused extends Error {
  readonly status: 413 | 415;
  constructor(status: 413 | 415, message: string) {
    super(message);
    this.status = status;
  }
}

/** Throws ImageRefused with a one-line reason unless `bytes` is an image graft can train on. */
export async function checkImage(name: string, bytes: Uint8Array): Promise<void> {
  if (bytes.length > LIMITS.fileBytes)
    throw new ImageRefused(413, `${name}: larger than the limit of ${LIMITS.fileBytes / 1024 / 1024} MiB per image`);
  let pixels = 0;
  try {
    const m = await sharp(bytes).metadata();
    pixels = (m.width ?? 0) * (m.height ?? 0);
  } catch {
    // Not something sharp recognises: the decoder below gives the precise reason.
  }
  if (pixels > LIMITS.imagePixels)
    throw new ImageRefused(
      413,
      `${name}: ${(pixels / 1e6).toFixed(0)} megapixels, over the limit of ${LIMITS.imagePixels / 1e6} megapixels`,
    );
  try {
    await decodeImage(bytes, name, { size: [8, 8], resize: 'cover' });
  } catch (e) {
    const reason = e instanceof ImageDecodeError ? e.reason : (e as Error).message;
    throw new ImageRefused(415, `${name}: not accepted (${reason})`);
  }
}

/** A square JPEG thumbnail (EXIF orientation applied), `size` pixels a side. */
export async function thumbnail(file: string, size = 96): Promise<Buffer> {
  return sharp(file, { failOn: 'none', pages: 1 })
    .rotate()
    .resize(size, size, { fit: 'cover' })
    .flatten({ background: '#ffffff' })
    .jpeg({ quality: 75 })
    .toBuffer();
}
