/**
 * @file Small JPEG thumbnails as data URIs, so the report carries its images inside it. EXIF orientation is applied, as
 * for training; a file that is gone or does not decode gets no thumbnail (the report says so) rather than an error.
 */
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { mapLimit } from '../workflows/extract.ts';

/** Longest side in pixels: enough to recognise a photo, small enough for hundreds in one page. */
export const THUMBNAIL_SIZE = 96;
const QUALITY = 70;

export async function thumbnail(file: string, size = THUMBNAIL_SIZE): Promise<string | undefined> {
  try {
    const jpeg = await sharp(await readFile(file), { animated: false })
      .rotate()
      .resize(size, size, { fit: 'inside', withoutEnlargement: true })
      .flatten({ background: '#ffffff' })
      .jpeg({ quality: QUALITY })
      .toBuffer();
    return `data:image/jpeg;base64,${jpeg.toString('base64')}`;
  } catch {
    return undefined;
  }
}

/** Thumbnails of many files, each made once, a few at a time. */
export async function thumbnails(files: string[]): Promise<Map<string, string | undefined>> {
  const unique = [...new Set(files)];
  const uris = await mapLimit(unique, 4, (f) => thumbnail(f));
  return new Map(unique.map((f, i) => [f, uris[i]]));
}
