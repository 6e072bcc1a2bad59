/** Types shared by the head trainer, the heads and their callers. */
import type { SymbolicTensor } from '@tensorflow/tfjs-layers';

/** Cached trunk activations: one feature vector per image. */
export interface FeatureSet {
  /** n*dim, row-major. */
  x: Float32Array;
  n: number;
  dim: number;
  /** Class index per row. */
  y: Int32Array;
  /**
   * Rows that are augmentation views of another row: source[r] is the row of the image that row r shows (r itself for
   * an image). Cross-validation keeps an image and its views in one fold and scores images only. Absent: every row is
   * an image of its own.
   */
  source?: Int32Array;
}

/**
 * logistic: multinomial logistic regression fitted to convergence, its L2 strength chosen by cross-validation on the
 * training rows; softmax: the same model trained by Adam with early stopping on the validation loss; mlp: one hidden
 * ReLU layer with dropout; knn: cosine k-nearest-neighbours.
 */
export type HeadKind = 'logistic' | 'softmax' | 'mlp' | 'knn';

/** One line per epoch; `epoch` counts from 1. */
export interface EpochLog {
  epoch: number;
  /** Class-weighted mean cross-entropy on the whole training set after the epoch (dropout off, L2 penalty not included).
   *  knn: leave-one-out on the stored rows. */
  loss: number;
  /** Training-set accuracy, measured like `loss`. */
  accuracy: number;
  /** Cross-entropy on the validation set, weighted with the training class weights. Reported only: the logistic head
   *  never reads the validation set, the others stop early on it. */
  valLoss?: number;
  valAccuracy?: number;
  seconds: number;
}

export interface TrainHeadOptions {
  /** Default HEAD_DEFAULTS.head. */
  head?: HeadKind;
  /** Maximum number of epochs; default 100. */
  epochs?: number;
  /** Adam learning rate; default 1e-3 (features are standardised, so one rate suits most trunks). */
  lr?: number;
  /** Default 32. */
  batchSize?: number;
  /** Default 42; the same seed and data give bit-identical weights. The logistic head's only randomness is the folds
   *  of its lambda search. */
  seed?: number;
  /** Epochs without improvement of the validation loss (training loss when there is no validation set) before
   *  stopping; default 10. The best epoch's weights are restored. */
  patience?: number;
  /** mlp hidden units; default 256. */
  hidden?: number;
  /** mlp dropout rate on the hidden layer; default 0.5. */
  dropout?: number;
  /** L2 penalty weightDecay/2 * sum(kernel^2) added to the mean loss (biases are not penalised); default 1e-4.
   *  softmax and mlp only: the logistic head chooses its own by cross-validation. */
  weightDecay?: number;
  /** Default true: stop after `patience` epochs without improvement and keep the best epoch's weights. false: run
   *  exactly `epochs` epochs and keep the last weights (the epoch count was chosen elsewhere, e.g. by cross-validation,
   *  so `val` only measures); `bestEpoch` is then the last epoch. */
  earlyStopping?: boolean;
  /** logistic: fit this L2 strength instead of choosing one by cross-validation. */
  lambda?: number;
  /** logistic with `lambda`: the parameters to start from (a TrainedHead's `solution` on the same rows at that
   *  strength, e.g. cross-validation's); the fit then only confirms convergence instead of starting from zero. */
  start?: Float64Array;
  /** logistic: the fold (0..k-1) of each training row for the search of its L2 strength, an augmentation view in its
   *  image's fold (train/cross-validate.ts passes its own). Default: stratified folds of the images (folds.imageFolds). */
  folds?: Int32Array;
  /** knn neighbours; default 5. */
  k?: number;
  /** Default 'balanced': sample weight n / (numClasses * count_c). */
  classWeights?: 'balanced' | 'none';
  /** Checked between steps; training throws the signal's reason. */
  signal?: AbortSignal;
  onEpoch?: (log: EpochLog, total: number) => void;
}

/** Plain JSON form of a head: saving and loading it needs no TF.js Layers. */
export type HeadJson = { kind: HeadKind; numClasses: number; dim: number; [k: string]: unknown };

export interface TrainedHead {
  kind: HeadKind;
  numClasses: number;
  dim: number;
  /** One entry per epoch; a head fitted in one go (logistic, knn) has one entry, epoch 1. */
  history: EpochLog[];
  /** The `epoch` of the history entry whose weights the head holds. */
  bestEpoch: number;
  /** How a logistic head was fitted: its lambda search and the final fit (absent for the other heads). */
  fit?: LogisticFitInfo;
  /**
   * Out-of-fold probabilities of the training rows (n*numClasses, the rows of the FeatureSet it was trained on), when
   * training computed them anyway (the logistic head's lambda search): each row from a fit that did not see its image.
   * Only on a freshly trained head, never saved.
   */
  outOfFold?: Float32Array;
  /** logistic: the fitted parameters as the fit left them (kernel [dim][C] then biases, on standardised rows, float64),
   *  for a later fit of the same rows to start from. Only on a freshly trained head, never saved. */
  solution?: Float64Array;
  /** Probabilities, n*numClasses row-major. */
  predictProba(x: Float32Array, n: number): Float32Array;
  /** For softmax/mlp: appends plain Dense layers (trained weights, standardisation folded into the first kernel and
   *  bias, softmax on the last) to `input` and returns the probabilities; layer names start with `prefix`.
   *  Throws for knn, which is not expressible as layers. */
  apply(input: SymbolicTensor, prefix?: string): SymbolicTensor;
  toJSON(): HeadJson;
  /** Frees the head's tensors; the head is unusable afterwards. */
  dispose(): void;
}

/** What a logistic head records about its fit (saved with the head). */
export interface LogisticFitInfo {
  /** The L2 strength of the final fit. */
  lambda: number;
  /** The lambda search (absent when lambda was given): folds, and per lambda the held-out log loss and accuracy over the
   *  training images. */
  search?: {
    folds: number;
    rows: { lambda: number; logLoss: number; accuracy: number }[];
    /** Accuracy on each fold's held-out images at the chosen lambda. */
    foldScores?: number[];
  };
  /** L-BFGS iterations, search included. */
  iterations: number;
  /** The final fit met its gradient tolerance. */
  converged: boolean;
}
