/**
 * @file The ONNX Runtime tail engine: a TailEngine over a tail compiled by engines/ort-train.ts. Each step's graph
 * returns the gradients; Adam (train/adam.ts, tf.train.adam's arithmetic) updates the weights as Float32Arrays in
 * JavaScript. In the graph it would need every weight and both moments fed in and copied out each step; here it is a
 * few flops per weight, about 1% of a MobileNetV2 tail step.
 */
import type { OrtTail } from '../engines/ort-train.ts';
import { tf } from '../tfjs/tf.ts';
import { FloatAdam } from './adam.ts';
import { type JointHead, TAIL_DEFAULTS, type TailData, type TailEngine, type TailRunner } from './tail-trainer.ts';

/** Runs `fn` over the rows in batches and concatenates its per-row outputs. */
async function mapRows(
  d: TailData,
  rowSize: number,
  width: number,
  fn: (x: Float32Array, n: number) => Promise<Float32Array>,
  batch = TAIL_DEFAULTS.evalBatchSize,
): Promise<Float32Array> {
  const out = new Float32Array(d.n * width);
  for (let s = 0; s < d.n; s += batch) {
    const m = Math.min(batch, d.n - s);
    out.set(await fn(d.x.slice(s * rowSize, (s + m) * rowSize), m), s * width);
  }
  return out;
}

function headValues(head: JointHead) {
  return {
    mean: head.mean.dataSync() as Float32Array,
    invStd: head.invStd.dataSync() as Float32Array,
    numClasses: head.numClasses,
    kernel: head.kernel.dataSync() as Float32Array,
    bias: head.bias.dataSync() as Float32Array,
  };
}

export function ortTailEngine(tail: OrtTail): TailEngine {
  const rowSize = tail.inputShape.reduce((a, b) => a * b, 1);
  const engine: TailEngine = {
    name: 'onnx',
    features: (d, dim) => mapRows(d, rowSize, dim, (x, n) => tail.features(x, n)),
    release: () => tail.release(),
    async predict(head, d) {
      const stage = await tail.stage(headValues(head), false);
      try {
        return await mapRows(d, rowSize, head.numClasses, (x, n) => stage.predict(stage.initial, x, n));
      } finally {
        await stage.release();
      }
    },
    async runner(head: JointHead, lr: number): Promise<TailRunner> {
      const C = head.numClasses;
      const stage = await tail.stage(headValues(head));
      const params = stage.initial;
      const adam = new FloatAdam(
        params.map((p) => p.length),
        lr,
      );
      return {
        engine: 'onnx',
        async step(x, n, labels, mask) {
          const { loss, logits, grads } = await stage.step(params, x, n, labels, mask);
          adam.update(params, grads);
          const pred = new Int32Array(n);
          for (let i = 0; i < n; i++)
            for (let c = 1; c < C; c++) if (logits[i * C + c] > logits[i * C + pred[i]]) pred[i] = c;
          return { loss, pred };
        },
        predict: (d) => mapRows(d, rowSize, C, (x, n) => stage.predict(params, x, n)),
        save: () => params.map((p) => p.slice()),
        restore(saved) {
          (saved as Float32Array[]).forEach((s, i) => {
            params[i].set(s);
          });
        },
        discard() {},
        async finish() {
          const { kernel, bias } = stage.writeBack(params);
          tf.tidy(() => {
            head.kernel.assign(tf.tensor2d(kernel, [head.dim, C]));
            head.bias.assign(tf.tensor1d(bias));
          });
          await stage.release();
        },
        release: () => stage.release(),
      };
    },
  };
  return engine;
}
