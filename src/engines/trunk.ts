/**
 * The trunk: the frozen base below one or more cuts, as a model from raw pixels (0..255, NHWC) to the activations
 * the heads read (globally average-pooled where spatial). Preprocessing lives inside the model as a Rescaling layer,
 * so every engine that runs the trunk, and every exported model, applies exactly the same arithmetic.
 */
import type { SymbolicTensor } from '@tensorflow/tfjs-layers';
import type { LayersBase } from '../base/base.ts';
import { layerIndex, poolIfSpatial, reapply, requireCutPoint } from '../base/graph.ts';
import { tf, tfl } from '../tfjs/tf.ts';
import { InternalError } from '../util/errors.ts';

/** Input tensor + Rescaling: the first two layers of every trunk and every exported model. */
export function pixelInput(base: Pick<LayersBase, 'preprocessing'>): { input: SymbolicTensor; scaled: SymbolicTensor } {
  const [h, w] = base.preprocessing.size;
  const input = tfl.input({ shape: [h, w, 3], name: 'pixels' });
  const scaled = tfl.layers
    .rescaling({ scale: base.preprocessing.scale, offset: base.preprocessing.offset, name: 'graft_preprocess' })
    .apply(input) as SymbolicTensor;
  return { input, scaled };
}

export interface TrunkOptions {
  /**
   * Default true: spatial outputs are globally average-pooled (what a head reads). false: outputs stay as they are
   * (what a tail reads), and the base's input layer may be named as a cut, standing for the preprocessed pixels.
   */
  pool?: boolean;
}

/** Builds pixels → [activation at each cut, pooled unless told otherwise]; one forward pass serves every cut. */
export function buildTrunkModel(base: LayersBase, cuts: string[], opts: TrunkOptions = {}): tfl.LayersModel {
  if (cuts.length === 0) throw new InternalError('a trunk needs at least one cut');
  const pool = opts.pool ?? true;
  const indices = cuts.map((c) => (!pool && layerIndex(base.model, c) === 0 ? 0 : requireCutPoint(base.model, c)));
  const { input, scaled } = pixelInput(base);
  // Re-apply segment by segment between consecutive cuts so each cut's tensor is available as an output.
  const order = [...indices.keys()].sort((a, b) => indices[a] - indices[b]);
  const outputs: SymbolicTensor[] = new Array(cuts.length);
  let from = 0; // model.layers[0] is the base's InputLayer
  let tensor = scaled;
  for (const k of order) {
    if (indices[k] !== from) tensor = reapply(base.model, from, indices[k], tensor);
    from = indices[k];
    outputs[k] = pool ? poolIfSpatial(tensor, `graft_pool_${k}`) : tensor;
  }
  return tfl.model({ inputs: input, outputs, name: 'graft_trunk' });
}

/** Something that runs a trunk on batches of pixels: TF.js here, ONNX Runtime in engines/onnx. */
export interface TrunkRunner {
  engine: 'wasm' | 'cpu' | 'onnx';
  /** Feature size of each output, in the order of the cuts. */
  featureSizes: number[];
  /** Images per call that runs fastest on this engine. */
  batchSize: number;
  /** pixels: n × h × w × 3 floats (0..255). Returns one n × featureSize array per cut. */
  run(pixels: Float32Array, n: number): Promise<Float32Array[]>;
  dispose(): void | Promise<void>;
}

export function tfjsTrunkRunner(model: tfl.LayersModel, batchSize = 16): TrunkRunner {
  const [, h, w, c] = model.inputs[0].shape as number[];
  const featureSizes = model.outputs.map((o) => (o.shape as number[]).slice(1).reduce((a, b) => a * b, 1));
  return {
    engine: tf.getBackend() as 'wasm' | 'cpu',
    featureSizes,
    batchSize,
    async run(pixels, n) {
      const outs = tf.tidy(() => {
        const x = tf.tensor4d(pixels, [n, h, w, c]);
        const y = model.predict(x);
        return Array.isArray(y) ? y : [y];
      });
      try {
        return (await Promise.all(outs.map((o) => o.data()))) as Float32Array[];
      } finally {
        tf.dispose(outs);
      }
    },
    dispose() {},
  };
}

/** The layer index of the highest cut: everything above it is tail or head, never trunk. */
export function topCutIndex(base: LayersBase, cuts: string[]): number {
  return Math.max(...cuts.map((c) => layerIndex(base.model, c)));
}
