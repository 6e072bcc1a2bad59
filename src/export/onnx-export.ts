/**
 * `graft export --format onnx`: a trained model folder → one .onnx file from raw pixels to class probabilities.
 * The base's scaling is inside the graph (the Rescaling layer becomes Mul + Add); resizing is recorded in the ONNX
 * metadata (graft.size, graft.resize) together with the labels, since it happens before the network.
 */
import { randomBytes } from 'node:crypto';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_OPSET, layersToOnnx } from '../onnx/convert.ts';
import { ensureTf, tf, tfl } from '../tfjs/tf.ts';
import { makeDirs } from '../util/dirs.ts';
import { DataError, opt, shown, UsageError, words } from '../util/errors.ts';
import { versions } from '../util/versions.ts';
import { checkFileOut, readModelFolder } from './model-files.ts';

export interface OnnxExportResult {
  out: string;
  bytes: number;
  opset: number;
  input: string;
  output: string;
  size: [number, number];
  labels: string[];
}

export async function exportOnnx(modelDir: string, out: string, o: { opset?: number } = {}): Promise<OnnxExportResult> {
  await ensureTf();
  checkFileOut(out);
  const files = readModelFolder(modelDir);
  const m = files.metadata;
  if (m.foreign) return (await import('./foreign-model.ts')).exportForeignOnnx(files.dir, m, out);
  if (m.headData)
    throw new DataError(
      'not-exportable',
      modelDir,
      words`a ${m.head.kind} head is not expressible as an ONNX graph; retrain with ${opt('head')} softmax or mlp`,
    );
  const model = await tfl.loadLayersModel(tf.io.fromMemory(files.artifacts));
  const opset = o.opset ?? DEFAULT_OPSET;
  try {
    const bytes = layersToOnnx(model, {
      opset,
      inputName: 'pixels',
      producerVersion: versions().graft,
      metadata: {
        'graft.labels': JSON.stringify(m.labels),
        'graft.size': JSON.stringify(m.preprocessing.size),
        'graft.resize': m.preprocessing.resize,
        'graft.crop': String(m.preprocessing.crop ?? 1),
        'graft.input': 'raw RGB pixel values 0..255, NHWC; scaling is inside the graph',
        'graft.base': m.base.name,
        'graft.cut': m.cut,
      },
    });
    const target = path.resolve(out);
    const tmp = `${target}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      makeDirs(path.dirname(target));
      writeFileSync(tmp, bytes);
      renameSync(tmp, target);
    } catch (e) {
      rmSync(tmp, { force: true });
      throw new UsageError(
        'out-not-writable',
        words`${opt('out')} ${shown(out)}: cannot write (${(e as Error).message})`,
        e,
      );
    }
    return {
      out: target,
      bytes: bytes.length,
      opset,
      input: 'pixels',
      output: model.outputNames[0],
      size: m.preprocessing.size,
      labels: m.labels,
    };
  } finally {
    model.dispose();
  }
}
