/**
 * Acceptance check for `graft export --format onnx`: runs the exported file with plain onnxruntime-node (the user's
 * side: sharp to decode, graft's resampler from graft/predict to resize, raw 0..255 pixels in) on every image of a folder of class folders, and compares with
 * `graft predict` on the same files: same top-1 everywhere, probabilities within 1e-4.
 *
 *   node --import tsx scripts/check-onnx-export.ts MODEL_DIR MODEL.onnx IMAGES_DIR [ENGINE]
 *
 * ENGINE (auto, onnx or wasm) is what `graft predict` runs on; wasm makes the comparison independent of ONNX Runtime.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { resizeImage } from '../src/predict/web.ts';

const [modelDir, onnxFile, images, engine = 'auto'] = process.argv.slice(2);
const meta = JSON.parse(readFileSync(path.join(modelDir, 'graft.json'), 'utf8'));
const [h, w] = meta.preprocessing.size;
const files = readdirSync(images, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .flatMap((d) => readdirSync(path.join(images, d.name)).map((f) => path.join(images, d.name, f)));

const session = await ort.InferenceSession.create(onnxFile);
const onnxProbs = new Map<string, Float32Array>();
for (const file of files) {
  let rgb: Uint8Array;
  try {
    const { data, info } = await sharp(file, { pages: 1 })
      .rotate()
      .flatten()
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    // The resize and central crop graft.json records, with the resampler training used.
    rgb = resizeImage({ data, width: info.width, height: info.height, channels: 3 }, meta.preprocessing);
  } catch {
    continue; // not an image: graft predict skips it too
  }
  const out = await session.run({ pixels: new ort.Tensor('float32', Float32Array.from(rgb), [1, h, w, 3]) });
  onnxProbs.set(file, out[session.outputNames[0]].data as Float32Array);
}

const r = spawnSync(
  process.execPath,
  [
    '--import',
    'tsx',
    'src/cli/main.ts',
    'predict',
    modelDir,
    ...files,
    '--top',
    String(meta.labels.length),
    '--engine',
    engine,
    '--json',
  ],
  {
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  },
);
const graft = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
  predictions: { file: string; top: { label: string; probability: number }[] }[];
};
let sameTop = 0;
let maxDiff = 0;
for (const p of graft.predictions) {
  const o = onnxProbs.get(p.file)!;
  const top = meta.labels[[...o.keys()].sort((a, b) => o[b] - o[a])[0]];
  if (top === p.top[0].label) sameTop++;
  for (const t of p.top) maxDiff = Math.max(maxDiff, Math.abs(o[meta.labels.indexOf(t.label)] - t.probability));
}
console.log(
  JSON.stringify({
    engine,
    images: graft.predictions.length,
    onnxImages: onnxProbs.size,
    sameTop1: sameTop,
    maxAbsProbDiff: maxDiff,
  }),
);
process.exit(
  sameTop === graft.predictions.length && graft.predictions.length === onnxProbs.size && maxDiff <= 1e-4 ? 0 : 1,
);
