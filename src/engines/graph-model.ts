/**
 * The TF.js engine for graph-model bases (base/graph-model.ts) and for model folders trained on them: pixels are
 * normalised in JS as the base says, the graph runs up to the cut nodes, and rank-4 outputs are pooled (TF graphs are
 * NHWC).
 */
import path from 'node:path';
import { type GraphModel, loadGraphModel } from '@tensorflow/tfjs-converter';
import { readLocalModel } from '../base/artifacts.ts';
import { poolRows } from '../base/foreign.ts';
import { executeGraph } from '../base/graph-model.ts';
import { normalisePixels, type Preprocessing } from '../base/preprocessing.ts';
import { tf } from '../tfjs/tf.ts';
import type { TrunkRunner } from './trunk.ts';

/** Pixels (NHWC 0..255) → JS preprocessing → the graph up to `cuts` → pooled activations, on the TF.js backend. */
export function graphRunner(
  model: GraphModel,
  inputName: string,
  p: Preprocessing,
  cuts: string[],
  featureSizes: number[],
  batchSize = 16,
): TrunkRunner {
  const [h, w] = p.size;
  return {
    engine: tf.getBackend() as 'wasm' | 'cpu',
    featureSizes,
    batchSize,
    async run(pixels, n) {
      const x = tf.tensor4d(normalisePixels(pixels, n, p, 'nhwc'), [n, h, w, 3]);
      let list: tf.Tensor[] = [];
      try {
        const ys = await executeGraph(model, { [inputName]: x }, cuts);
        list = Array.isArray(ys) ? ys : [ys];
        return await Promise.all(list.map(async (t) => poolRows((await t.data()) as Float32Array, t.shape, 'nhwc')));
      } finally {
        x.dispose();
        tf.dispose(list);
      }
    },
    dispose() {},
  };
}

/** Reopens the graph model a trained model folder keeps (see ForeignBase.modelFiles) as a runner at `cut`. */
export async function openSavedGraphTrunk(dir: string, p: Preprocessing, cut: string): Promise<TrunkRunner> {
  const { json, artifacts } = await readLocalModel(path.join(dir, 'base-model.json'));
  const model = await loadGraphModel(
    tf.io.fromMemory({
      ...artifacts,
      signature: json.signature as object | undefined,
      modelInitializer: json.modelInitializer as object | undefined,
    }),
  );
  const inputName = model.inputs[0].name;
  const runner = graphRunner(model, inputName, p, [cut], []);
  return { ...runner, dispose: () => model.dispose() };
}
