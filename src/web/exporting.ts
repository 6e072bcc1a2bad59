/**
 * @file What the Export panel hands out: the model folder as one zip, the ONNX file, and snippets that load and run
 * each with stock libraries (browser TF.js, Node TF.js, onnxruntime-node), written for this model's input size,
 * resize mode and crop.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { zipSync } from 'fflate';
import type { ModelMetadata } from '../export/model-files.ts';

/** A zip holding `<folder>/<file>` for every file of the model folder (no sub-folders are written by graft). */
export function zipModel(modelDir: string, folder: string): Uint8Array {
  const files: Record<string, [Uint8Array, { level: 0 | 6 }]> = {};
  for (const name of readdirSync(modelDir).sort()) {
    const p = path.join(modelDir, name);
    if (!statSync(p).isFile()) continue;
    // Weights barely compress; storing them keeps the zip quick to make.
    files[`${folder}/${name}`] = [readFileSync(p), { level: name.endsWith('.bin') ? 0 : 6 }];
  }
  return zipSync(files);
}

export function readMetadata(modelDir: string): ModelMetadata | undefined {
  const f = path.join(modelDir, 'graft.json');
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as ModelMetadata) : undefined;
}

/**
 * sharp's half of training's preprocessing in a user's Node code: the whole image decoded as graft's decoder does it
 * (dataset/decode.ts: EXIF rotation, transparency onto black, sRGB); graft's resampler does the rest.
 */
const DECODE = `await sharp(file).rotate().flatten({ background: '#000000' }).toColourspace('srgb')
  .raw().toBuffer({ resolveWithObject: true })`;

/**
 * Copy-paste snippets for this model; `folder` is the folder name inside the zip (and the ONNX file's name). Each one
 * prepares images as training did: graft/predict resizes with graft's own resampler (dataset/resize.ts), so the
 * snippets agree with `graft predict` (test/package.e2e.test.ts runs them from an installed package).
 */
export function snippets(m: ModelMetadata, folder: string, hasOnnx: boolean): Record<string, string> {
  const { size, resize, crop } = m.preprocessing;
  const [h, w] = size;
  const fit = `${h}x${w}, ${resize}${crop === undefined || crop === 1 ? '' : `, central ${crop}`}`;
  const out: Record<string, string> = {};
  out.browser = `// npm install graft @tensorflow/tfjs   (serve the ${folder}/ folder with your web app)
import '@tensorflow/tfjs'; // a TF.js backend (WebGL here); graft/predict runs on whichever you load
import { loadModel } from 'graft/predict';

const model = await loadModel('/${folder}/');
const img = document.querySelector('img'); // or a <canvas>, <video>, ImageBitmap, ImageData
await img.decode();
// Resized as in training (${fit}) by graft's own resampler; scaling is inside the model.
const top = await model.predict(img);
console.log(top); // [{ label, probability }, …] best first`;
  out.node = `// npm install graft sharp
import '@tensorflow/tfjs-backend-wasm'; // a TF.js backend (or '@tensorflow/tfjs-node')
import sharp from 'sharp';
import { loadModel } from 'graft/predict';

const model = await loadModel('./${folder}');
const file = process.argv[2] ?? 'photo.jpg';
// Decoded whole as in training; graft/predict resizes it (${fit}) with training's resampler.
const { data, info } = ${DECODE};
const top = await model.predict({ data, width: info.width, height: info.height });
console.log(top); // [{ label, probability }, …] best first`;
  // graft.json's tta: flip (training measured that averaging with the mirror image helps; graft predict and
  // graft/predict do it), so the ONNX snippet, which has no graft predictor, averages the two views itself.
  const flip =
    m.tta === 'flip'
      ? `const mirror = new Float32Array(x.length); // the image mirrored left-right
for (let y = 0; y < ${h}; y++)
  for (let i = 0; i < ${w}; i++) for (let c = 0; c < 3; c++) mirror[(y * ${w} + i) * 3 + c] = x[(y * ${w} + ${w - 1} - i) * 3 + c];
const [a, b] = [await run(x), await run(mirror)]; // this model averages the image with its mirror (graft.json: tta flip)
const probs = Array.from(a, (p, i) => (p + b[i]) / 2);
`
      : `const probs = await run(x);
`;
  if (hasOnnx)
    out.onnx = `// npm install graft onnxruntime-node sharp
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { resizeImage } from 'graft/predict';

const labels = ${JSON.stringify(m.labels)};
const session = await ort.InferenceSession.create('./${folder}.onnx');
const file = process.argv[2] ?? 'photo.jpg';
// Decoded whole as in training, then training's resampler: raw RGB 0..255, ${fit}; scaling is inside the model.
const { data, info } = ${DECODE};
const rgb = resizeImage({ data, width: info.width, height: info.height, channels: info.channels },
  { size: [${h}, ${w}], resize: '${resize}'${crop === undefined ? '' : `, crop: ${crop}`} });
const run = async (px) =>
  (await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', px, [1, ${h}, ${w}, 3]) }))[session.outputNames[0]].data;
const x = Float32Array.from(rgb);
${flip}console.log(labels.map((label, i) => ({ label, probability: probs[i] })).sort((a, b) => b.probability - a.probability));`;
  return out;
}
