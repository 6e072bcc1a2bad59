/**
 * Stitching: base layers up to the top of the tail (or the cut) + pooling + head, into ONE Layers model from raw
 * pixels to class probabilities. The base's layers are shared, not copied, so whatever training changed in a tail is
 * what gets exported.
 */
import type { SymbolicTensor } from '@tensorflow/tfjs-layers';
import type { LayersBase } from '../base/base.ts';
import { layerIndex, poolIfSpatial, reapply } from '../base/graph.ts';
import { pixelInput } from '../engines/trunk.ts';
import { tfl } from '../tfjs/tf.ts';

export interface HeadLike {
  /** Appends the head's layers to the features tensor and returns class probabilities. */
  apply(input: SymbolicTensor, prefix?: string): SymbolicTensor;
}

/** pixels → base up to `top` → global average pooling (if spatial) → head. */
export function stitchModel(
  base: LayersBase,
  top: string,
  head: HeadLike | undefined,
  name = 'graft_model',
): tfl.LayersModel {
  const { input, scaled } = pixelInput(base);
  const features = poolIfSpatial(reapply(base.model, 0, layerIndex(base.model, top), scaled), 'graft_pool');
  const output = head ? head.apply(features, 'graft_head') : features;
  return tfl.model({ inputs: input, outputs: output, name });
}
