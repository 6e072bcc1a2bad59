/**
 * Parameter transfer and fine-tuning, on cached activations.
 *
 * Stages, each starting from the weights the previous one left:
 *   1. head: a softmax head on the pooled output of the (pretrained) tail, as in feature transfer. A random head would
 *      send large gradients into the pretrained tail on the first steps; a fitted one does not.
 *   2. tail (parameter mode): the base layers between the cut and the head input train together with the head, fed
 *      the cut's cached spatial activations, so an epoch never reruns the frozen trunk.
 *   3. fine-tune (--fine-tune): the split moves down to the unfreeze point and everything above it trains again at a
 *      very low learning rate. What stays frozen is again served from the cache.
 * BatchNorm layers run in inference mode throughout (the Keras rule: moving statistics used, never updated; gamma and
 * beta still train) unless `trainBn` asks for fastai's behaviour (batch statistics, moving statistics updated).
 *
 * The tail layers are the base's own layer objects, trained in place, so stitching base + head exports them as
 * trained. The caller restores the pretrained weights afterwards with `restore()`.
 */
import type { LayersBase } from '../base/base.ts';
import { candidateCuts, layerIndex, poolIfSpatial, reapply, requireCutPoint, runSegment } from '../base/graph.ts';
import { cutForRetrainLayers } from '../base/inspect.ts';
import type { EngineChoice } from '../engines/engine-choice.ts';
import { tf, tfl } from '../tfjs/tf.ts';
import type { EpochLog, FeatureSet, TrainHeadOptions } from '../train/features.ts';
import type { DenseHead } from '../train/heads.ts';
import { accuracy, argmaxRows, confusionMatrix } from '../train/metrics.ts';
import {
  disposeJointHead,
  type JointHead,
  jointHeadFrom,
  reinitialiseLayers,
  restoreLayerWeights,
  saveLayerWeights,
  type Tail,
  type TailData,
  type TailEngine,
  toDenseHead,
  trainTail,
} from '../train/tail-trainer.ts';
import { trainHead } from '../train/trainer.ts';
import { InternalError, opt, UsageError, type Warning, words } from '../util/errors.ts';
import type { ProgressCallback } from '../util/progress.ts';
import { type Extracted, featureSet, trainingSet } from './extract.ts';
import { chooseTailEngine } from './tail-engine.ts';

export const PARAMETER_DEFAULTS = {
  /** One block below the head: the cheapest tail, and the one that moves the pretrained features least. */
  retrainLayers: 1,
  /** Adam. Below the head trainer's 1e-3 because the tail starts from pretrained weights that should only be nudged. */
  tailLr: 1e-4,
  /** A re-initialised tail has nothing to preserve and learns from scratch: the head trainer's rate. */
  tailLrReinit: 1e-3,
  tailEpochs: 30,
  tailPatience: 5,
  /** The Keras transfer-learning guide's value for Adam (its RMSprop/SGD recipes use about the same order). */
  fineTuneLr: 1e-5,
  /** The Keras guide's fine-tuning epochs; early stopping usually ends sooner. */
  fineTuneEpochs: 10,
  fineTunePatience: 3,
  /**
   * Default unfreeze point: the top third of the candidate cuts (by count, not by layer) is unfrozen. Upper blocks
   * hold the most task-specific features, and the spatial maps there are small, so an epoch stays affordable on a CPU.
   */
  unfreezeFraction: 1 / 3,
} as const;

/** The parameter-transfer and fine-tuning settings, as `train` and the CLI take them. */
export interface TransferSettings {
  /** mode 'parameter': how many candidate cuts below the head input the split lies (default 1). `cut` overrides it. */
  retrainLayers?: number;
  /** mode 'parameter': re-initialise the tail instead of starting from its pretrained weights. */
  reinit?: boolean;
  /** mode 'parameter': Adam learning rate of the tail stage (default 1e-4, 1e-3 with `reinit`). */
  tailLr?: number;
  /** mode 'parameter': maximum epochs of the tail stage (default 30). */
  tailEpochs?: number;
  /** After the head (and tail) converge, unfreeze more of the base and train again at a very low learning rate. */
  fineTune?: boolean;
  /** A cut point below the split, or 'all' (the whole base trains, images flow through it every step); default: the
   *  top third of the candidate cuts. */
  unfreezeFrom?: string;
  /** Adam learning rate of the fine-tune stage (default 1e-5). */
  fineTuneLr?: number;
  /** Maximum epochs of the fine-tune stage (default 10). */
  fineTuneEpochs?: number;
  /** BatchNorm layers that train run in training mode (batch statistics, moving statistics updated), as in fastai.
   *  Default false: inference mode, the Keras rule. */
  trainBn?: boolean;
}

export interface ParameterOptions extends TransferSettings {
  mode: 'feature' | 'parameter';
  /** parameter mode: the split (tail input). feature mode: the head input. */
  cut?: string;
  patience?: number;
  head: TrainHeadOptions;
  /** What trains the tails: 'auto' (ONNX Runtime when it loads and covers the tail, else TF.js on WASM, with the
   *  reason in `notes`), 'onnx' (an error instead of a fallback) or 'wasm'. Default 'auto'. */
  engine?: EngineChoice;
  /** ONNX Runtime intra-op threads; default every core. */
  threads?: number;
  onProgress?: ProgressCallback;
  signal?: AbortSignal;
}

/** Where the base is split for each stage. */
export interface ParameterPlan {
  /** The head reads the pooled output of this layer. */
  top: string;
  /** Stage 2's split: the tail is (cut, top]. Equal to `top` when there is no tail. */
  cut: string;
  /** Stage 3's split, when fine-tuning. */
  unfreezeFrom?: string;
  /** Cuts whose spatial activations the stages read, in this order: [cut, unfreezeFrom?]. */
  cuts: string[];
}

function splitIndex(base: LayersBase, name: string): number {
  return layerIndex(base.model, name, 'unfreezeFrom') === 0 ? 0 : requireCutPoint(base.model, name, 'unfreezeFrom');
}

/** The default unfreeze point for a split at `cutIndex` (see PARAMETER_DEFAULTS.unfreezeFraction). */
export function defaultUnfreezeFrom(base: LayersBase, top: string, cutIndex: number): string {
  const candidates = candidateCuts(base.model, top);
  const k = candidates.length - 1 - Math.round(candidates.length * PARAMETER_DEFAULTS.unfreezeFraction);
  const below = candidates.filter((c) => c.index < cutIndex);
  if (below.length === 0) return base.model.layers[0].name;
  const pick = candidates[Math.max(0, k)];
  return pick.index < cutIndex ? pick.name : below[below.length - 1].name;
}

export function planParameter(
  base: LayersBase,
  o: Pick<ParameterOptions, 'mode' | 'cut' | 'retrainLayers' | 'fineTune' | 'unfreezeFrom'>,
): ParameterPlan {
  const model = base.model;
  let top: string;
  let cut: string;
  if (o.mode === 'parameter') {
    top = base.defaultCut;
    cut = o.cut ?? cutForRetrainLayers(base, o.retrainLayers ?? PARAMETER_DEFAULTS.retrainLayers);
    requireCutPoint(model, cut);
    if (layerIndex(model, cut) > layerIndex(model, top)) {
      throw new UsageError(
        'cut-above-head',
        words`${opt('cut')} ${cut} lies above the head input ${top}: parameter transfer retrains the layers between them`,
      );
    }
  } else {
    top = cut = o.cut ?? base.defaultCut;
    requireCutPoint(model, cut);
  }
  const cutIdx = layerIndex(model, cut);
  if (!o.fineTune) {
    if (o.unfreezeFrom !== undefined)
      throw new UsageError('needs-option', words`${opt('unfreezeFrom')} needs ${opt('fineTune')}`);
    return { top, cut, cuts: [cut] };
  }
  let from = o.unfreezeFrom ?? defaultUnfreezeFrom(base, top, cutIdx);
  if (from === 'all') from = model.layers[0].name;
  const fromIdx = splitIndex(base, from);
  if (fromIdx >= cutIdx) {
    throw new UsageError(
      'invalid-value',
      words`${opt('unfreezeFrom')} ${from} must lie below the ${o.mode === 'parameter' ? 'retrained layers' : 'cut'} (${cut})`,
    );
  }
  return { top, cut, unfreezeFrom: from, cuts: [cut, from] };
}

/** A tail over the base layers (from, top], pooled at the top; BatchNorm in training mode only when `trainBn`. */
export function buildTail(base: LayersBase, from: string, top: string, trainBn: boolean): Tail {
  const model = base.model;
  const fromIdx = layerIndex(model, from);
  const topIdx = layerIndex(model, top);
  const layers = model.layers.slice(fromIdx + 1, topIdx + 1);
  const inputShape = (model.layers[fromIdx].outputShape as number[]).slice(1);
  return {
    layers,
    inputShape,
    toModel() {
      const input = tfl.input({ shape: inputShape, name: 'graft_cut' });
      const top = reapply(model, fromIdx, topIdx, input);
      const pooled = top.shape.length === 4 ? poolIfSpatial(top, 'graft_tail_pool') : top;
      if (pooled.shape.length !== 2)
        throw new InternalError(`the tail's output ${top.name} has rank ${top.shape.length}`);
      return tfl.model({ inputs: input, outputs: pooled, name: 'graft_tail' });
    },
    forward(x, training) {
      const y = runSegment(model, fromIdx, topIdx, x, (l) =>
        l.getClassName() === 'BatchNormalization' ? training && trainBn : training,
      );
      return (y.rank === 4 ? tf.mean(y, [1, 2]) : y.rank === 2 ? y : tf.reshape(y, [y.shape[0], -1])) as tf.Tensor2D;
    },
  };
}

export type StageName = 'head' | 'tail' | 'fine-tune';
export type StageLog = EpochLog & { stage: StageName };

export interface ParameterOutcome {
  plan: ParameterPlan;
  head: DenseHead;
  /** Every epoch of every stage, in order; `epoch` restarts at 1 for each stage. */
  history: StageLog[];
  stages: {
    stage: StageName;
    epochs: number;
    bestEpoch: number;
    lr: number;
    valAccuracy?: number;
    valLoss?: number;
    seconds: number;
    /** What ran the stage: 'onnx', 'wasm' or 'cpu'. */
    engine: string;
  }[];
  /** Why a stage trained on TF.js although ONNX Runtime was preferred (code 'trained-on-wasm'). */
  notes: Warning[];
  bestEpoch: number;
  trainAccuracy: number;
  valAccuracy: number | null;
  confusion?: number[][];
  /** Class probabilities of the validation images as the in-training model computed them. */
  valProbabilities?: Float32Array;
  /** Puts the base's pretrained weights (and trainable flags) back; call once the model is exported. */
  restore(): void;
}

/**
 * Runs the stages on prepared spatial activations (`train.features[i]` at `plan.cuts[i]`, extracted with pool: false).
 * Tail weights are changed in place; call `restore()` on the outcome (it is also called on error).
 */
export async function trainParameter(
  base: LayersBase,
  plan: ParameterPlan,
  data: { classes: string[]; train: Extracted; val?: Extracted; augmented?: Extracted[] },
  o: ParameterOptions,
): Promise<ParameterOutcome> {
  const model = base.model;
  const C = data.classes.length;
  const seed = o.head.seed ?? 42;
  const trainBn = o.trainBn ?? false;
  const lowest = layerIndex(model, plan.unfreezeFrom ?? plan.cut);
  const touched = model.layers.slice(lowest + 1, layerIndex(model, plan.top) + 1);
  const saved = saveLayerWeights(touched);
  const flags = touched.map((l) => l.trainable);
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    restoreLayerWeights(touched, saved);
    touched.forEach((l, i) => {
      l.trainable = flags[i];
    });
  };
  // The optimiser takes each layer's trainable weights; a base saved with frozen layers would otherwise train nothing.
  for (const l of touched) l.trainable = true;

  let joint: JointHead | undefined;
  const engines: TailEngine[] = [];
  const notes: Warning[] = [];
  const engineFor = async (t: Tail): Promise<TailEngine> => {
    const chosen = await chooseTailEngine(t, o.engine ?? 'auto', { trainBn, threads: o.threads });
    if (chosen.fallback && !notes.some((n) => n.message === chosen.fallback!.message)) notes.push(chosen.fallback);
    engines.push(chosen.engine);
    return chosen.engine;
  };
  try {
    const history: StageLog[] = [];
    const stages: ParameterOutcome['stages'] = [];
    const record = (
      stage: StageName,
      lr: number,
      logs: EpochLog[],
      bestEpoch: number,
      seconds: number,
      start?: { valLoss: number; valAccuracy: number },
      engine = 'wasm',
    ) => {
      history.push(...logs.map((l) => ({ ...l, stage })));
      // Best epoch 0: the stage kept the weights it started from.
      const b = bestEpoch === 0 ? start : logs[bestEpoch - 1];
      stages.push({
        stage,
        epochs: logs.length,
        bestEpoch,
        lr,
        valAccuracy: b?.valAccuracy,
        valLoss: b?.valLoss,
        seconds,
        engine,
      });
    };
    const progress = (phase: string) => (log: EpochLog, total: number) =>
      o.onProgress?.({
        phase,
        done: log.epoch,
        total,
        detail: `loss ${log.loss.toFixed(3)}${log.valAccuracy !== undefined ? ` val_acc ${log.valAccuracy.toFixed(3)}` : ''}`,
        metrics: { ...log },
      });

    const tail = buildTail(base, plan.cut, plan.top, trainBn);
    const train1 = trainingSet(data, 0);
    const val1 = data.val ? featureSet(data.val, 0, data.classes) : undefined;
    if (o.reinit) {
      if (tail.layers.length === 0)
        throw new UsageError(
          'needs-option',
          words`${opt('reinit')} needs layers to retrain (${opt('retrainLayers')} of 1 or more)`,
        );
      reinitialiseLayers(tail.layers, seed);
    }

    // Stage 1: the head on the tail's pooled output.
    let t = performance.now();
    const dim = (model.getLayer(plan.top).outputShape as number[]).slice(-1)[0];
    const engine1 = await engineFor(tail);
    const pooled = async (d: TailData): Promise<FeatureSet> => ({
      x: await engine1.features(d, dim),
      n: d.n,
      dim,
      y: d.y,
    });
    const headSet = await pooled(train1);
    const headVal = val1 ? await pooled(val1) : undefined;
    const fitted = await trainHead(headSet, headVal, C, {
      ...o.head,
      head: 'softmax',
      signal: o.signal,
      onEpoch: progress('train'),
    });
    record('head', o.head.lr ?? 1e-3, fitted.history, fitted.bestEpoch, (performance.now() - t) / 1000);
    try {
      joint = jointHeadFrom(fitted);
    } finally {
      fitted.dispose();
    }

    let last = { engine: engine1, cutPos: 0, val: val1 };
    const patience = (d: number) => o.patience ?? d;
    // Stage 2: tail + head.
    if (tail.layers.length > 0) {
      t = performance.now();
      const lr = o.tailLr ?? (o.reinit ? PARAMETER_DEFAULTS.tailLrReinit : PARAMETER_DEFAULTS.tailLr);
      const r = await trainTail(tail, joint, train1, val1, {
        engine: engine1,
        lr,
        epochs: o.tailEpochs ?? PARAMETER_DEFAULTS.tailEpochs,
        patience: patience(PARAMETER_DEFAULTS.tailPatience),
        batchSize: o.head.batchSize,
        seed: seed + 1,
        signal: o.signal,
        onEpoch: progress('tail'),
      });
      record('tail', lr, r.history, r.bestEpoch, (performance.now() - t) / 1000, r.start, r.engine);
    }
    // Stage 3: fine-tune from the unfreeze point.
    if (plan.unfreezeFrom) {
      t = performance.now();
      const deep = buildTail(base, plan.unfreezeFrom, plan.top, trainBn);
      const train2 = trainingSet(data, 1);
      const val2 = data.val ? featureSet(data.val, 1, data.classes) : undefined;
      const lr = o.fineTuneLr ?? PARAMETER_DEFAULTS.fineTuneLr;
      const engine2 = await engineFor(deep);
      const r = await trainTail(deep, joint, train2, val2, {
        engine: engine2,
        lr,
        epochs: o.fineTuneEpochs ?? PARAMETER_DEFAULTS.fineTuneEpochs,
        patience: patience(PARAMETER_DEFAULTS.fineTunePatience),
        batchSize: o.head.batchSize,
        seed: seed + 2,
        signal: o.signal,
        onEpoch: progress('fine-tune'),
      });
      record('fine-tune', lr, r.history, r.bestEpoch, (performance.now() - t) / 1000, r.start, r.engine);
      last = { engine: engine2, cutPos: 1, val: val2 };
    }

    // Training accuracy on the images as they are, not on their augmentation views.
    const plain = featureSet(data.train, last.cutPos, data.classes);
    const trainAccuracy = accuracy(await last.engine.predict(joint, plain), plain.y, C);
    let valAccuracy: number | null = null;
    let confusion: number[][] | undefined;
    let valProbabilities: Float32Array | undefined;
    if (last.val && last.val.n > 0) {
      valProbabilities = await last.engine.predict(joint, last.val);
      valAccuracy = accuracy(valProbabilities, last.val.y, C);
      confusion = confusionMatrix(argmaxRows(valProbabilities, last.val.n, C), last.val.y, C);
    }
    const lastStage = stages[stages.length - 1];
    const head = toDenseHead(joint, history, lastStage.bestEpoch);
    joint = undefined;
    return {
      plan,
      head,
      history,
      stages,
      bestEpoch: lastStage.bestEpoch,
      trainAccuracy,
      valAccuracy,
      confusion,
      valProbabilities,
      notes,
      restore,
    };
  } catch (e) {
    if (joint) disposeJointHead(joint);
    restore();
    throw e;
  } finally {
    for (const e of engines) await e.release();
  }
}
