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

/** Copy-paste snippets for this model; `folder` is the folder name inside the zip. */
export function snippets(m: ModelMetadata, folder: string, hasOnnx: boolean): Record<string, string> {
  const [h, w] = m.preprocessing.size;
  const crop = m.preprocessing.crop ?? 1;
  const fit = m.preprocessing.resize === 'fill' ? 'fill' : 'cover';
  const [rh, rw] = crop === 1 ? [h, w] : [Math.round(h / crop), Math.round(w / crop)];
  const sharpChain =
    `sharp(file).rotate().resize(${rw}, ${rh}, { fit: '${fit}', kernel: 'linear' })` +
    (crop === 1 ? '' : `.extract({ left: ${(rw - w) >> 1}, top: ${(rh - h) >> 1}, width: ${w}, height: ${h} })`) +
    '.removeAlpha().raw().toBuffer()';
  const out: Record<string, string> = {};
  out.browser = `// npm install graft @tensorflow/tfjs   (serve the ${folder}/ folder with your web app)
// graft/predict resizes${crop === 1 ? '' : ', crops'} and scales exactly as training did (${h}x${w}, ${fit}).
import * as tf from '@tensorflow/tfjs';
import { loadModel } from 'graft/predict';

const model = await loadModel('/${folder}/');
const top = await model.predict(document.querySelector('img')); // <img>, <canvas>, <video>, ImageData
console.log(top); // [{ label, probability }, …] best first`;
  out.node = `// npm install @tensorflow/tfjs sharp
import * as tf from '@tensorflow/tfjs';
import sharp from 'sharp';
import { readFileSync } from 'node:fs';

const dir = '${folder}';
const json = JSON.parse(readFileSync(\`\${dir}/model.json\`, 'utf8'));
const bin = readFileSync(\`\${dir}/weights.bin\`);
const model = await tf.loadLayersModel(tf.io.fromMemory({
  modelTopology: json.modelTopology,
  weightSpecs: json.weightsManifest[0].weights,
  weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
}));
const { labels } = JSON.parse(readFileSync(\`\${dir}/graft.json\`, 'utf8'));
const file = process.argv[2] ?? 'photo.jpg';
// Raw RGB 0..255, ${h}x${w}, fitted as in training (${fit}${crop === 1 ? '' : `, central ${crop}`}); scaling is inside the model.
const rgb = await ${sharpChain};
const probs = model.predict(tf.tensor4d(Float32Array.from(rgb), [1, ${h}, ${w}, 3])).dataSync();
console.log(labels.map((label, i) => ({ label, probability: probs[i] })));`;
  if (hasOnnx)
    out.onnx = `// npm install onnxruntime-node sharp
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';

const labels = ${JSON.stringify(m.labels)};
const session = await ort.InferenceSession.create('model.onnx');
const file = process.argv[2] ?? 'photo.jpg';
const rgb = await ${sharpChain};
const out = await session.run({ pixels: new ort.Tensor('float32', Float32Array.from(rgb), [1, ${h}, ${w}, 3]) });
const probs = out[session.outputNames[0]].data;
console.log(labels.map((label, i) => ({ label, probability: probs[i] })));`;
  return out;
}
