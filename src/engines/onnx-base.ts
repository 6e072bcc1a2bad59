/**
 * The ONNX Runtime engine for ONNX-file bases (base/onnx-base.ts) and for model folders trained on them: pixels are
 * normalised in JS as the base says, the file runs with the cut tensors added as outputs (onnx/wire.ts), and rank-4
 * activations are pooled.
 */
import os from 'node:os';
import { guessLayout, poolRows } from '../base/foreign.ts';
import type { OnnxTrunkSpec } from '../base/onnx-base.ts';
import { normalisePixels } from '../base/preprocessing.ts';
import { requireOrt } from '../onnx/runtime.ts';
import { withOutputs } from '../onnx/wire.ts';
import { InternalError, opt, shown, UsageError, words } from '../util/errors.ts';
import type { TrunkRunner } from './trunk.ts';

/** Pixels (NHWC 0..255) → normalised input → ONNX Runtime → pooled activations at `cuts`. */
export async function onnxBaseRunner(
  spec: OnnxTrunkSpec,
  cuts: string[],
  featureSizes?: number[],
  batch = 16,
): Promise<TrunkRunner> {
  const o = await requireOrt('ONNX bases');
  const added = [...new Set(cuts.filter((c) => !spec.outputs.includes(c)))];
  const session = await o.InferenceSession.create(withOutputs(spec.bytes, added), {
    intraOpNumThreads: os.availableParallelism(),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const [h, w] = spec.preprocessing.size;
  const perImage = h * w * 3;
  const batchSize = spec.fixedBatch > 0 ? spec.fixedBatch : batch;
  const inputLayout = spec.layout;
  const runChunk = async (pixels: Float32Array, n: number): Promise<Float32Array[]> => {
    const x = normalisePixels(pixels, n, spec.preprocessing, inputLayout);
    const dims = inputLayout === 'nchw' ? [n, 3, h, w] : [n, h, w, 3];
    const res = await session.run({ [spec.inputName]: new o.Tensor('float32', x, dims) }, cuts);
    return cuts.map((c) => {
      const t = res[c];
      const q = spec.quantized?.[c];
      let data: Float32Array;
      if (t.type === 'float32') data = t.data as Float32Array;
      else if (q && (t.type === 'uint8' || t.type === 'int8')) data = dequantize(t.data as Uint8Array | Int8Array, q);
      else
        throw new UsageError(
          'not-a-cut-point',
          words`${opt('cut')} ${shown(c)} is a ${t.type} tensor; graft reads float32 (or dequantisable) activations`,
        );
      const d = [...t.dims];
      return poolRows(data, d, d.length === 4 ? guessLayout(d.slice(1), inputLayout) : inputLayout);
    });
  };
  let sizes = featureSizes;
  const runner: TrunkRunner = {
    engine: 'onnx',
    get featureSizes() {
      return sizes ?? [];
    },
    batchSize,
    async run(pixels, n) {
      if (pixels.length !== n * perImage)
        throw new InternalError(`trunk input: expected ${n * perImage} values, got ${pixels.length}`);
      // A file with a fixed batch dimension takes exactly that many images per call: pad the last chunk.
      const step = batchSize;
      const parts: Float32Array[][] = [];
      for (let i = 0; i < n; i += step) {
        const m = Math.min(step, n - i);
        let chunk = pixels.subarray(i * perImage, (i + m) * perImage);
        if (spec.fixedBatch > 0 && m < spec.fixedBatch) {
          const padded = new Float32Array(spec.fixedBatch * perImage);
          padded.set(chunk);
          chunk = padded;
        }
        const out = await runChunk(chunk, spec.fixedBatch > 0 ? spec.fixedBatch : m);
        sizes ??= out.map((r) => r.length / (spec.fixedBatch > 0 ? spec.fixedBatch : m));
        parts.push(out.map((r, k) => r.subarray(0, m * sizes![k])));
      }
      if (parts.length === 1) return parts[0];
      return cuts.map((_, k) => {
        const all = new Float32Array(n * sizes![k]);
        let off = 0;
        for (const p of parts) {
          all.set(p[k], off);
          off += p[k].length;
        }
        return all;
      });
    },
    async dispose() {
      await session.release();
    },
  };
  return runner;
}

/** (q - zeroPoint) * scale in float32: what an ONNX DequantizeLinear node computes. */
export function dequantize(q: Uint8Array | Int8Array, p: { scale: number; zeroPoint: number }): Float32Array {
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = (q[i] - p.zeroPoint) * p.scale;
  return out;
}
