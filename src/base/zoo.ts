/**
 * The model zoo: public TF.js Layers-format networks graft can download by name. Only networks whose URL, file
 * format, preprocessing and licence are known belong here; the files are fetched and verified by download.ts.
 */

export interface ZooEntry {
  /** graft's name for the base, e.g. `mobilenet_v2_0.35`. */
  name: string;
  architecture: string;
  /** Width multiplier (alpha) of MobileNet-style networks. */
  width?: number;
  /** Input height and width in pixels. */
  inputSize: number;
  /** Layer cut at when the user names none: the last feature layer below any classifier. */
  defaultCut: string;
  /** Pixel range the network expects, for display and for building the preprocessing when no override is given. */
  inputRange: [number, number];
  /**
   * Exact pixel * scale + offset when it is not a clean linear map of 0..255 onto `inputRange`: Teachable Machine
   * feeds its MobileNetV2 x/127 - 1, which reaches 1.0079 at 255, and features must match it bit for bit.
   */
  preprocessing?: { scale: number; offset: number };
  /** Canonical model.json URL; it is also the cache key, whatever mirror the bytes come from. */
  url: string;
  licence: string;
  description: string;
  /** SHA-256 per file name (relative to model.json), when known ahead of download. */
  sha256?: Record<string, string>;
  /** Parameter count, when known. */
  params?: number;
}

const TM_BUCKET = 'https://storage.googleapis.com/teachable-machine-models';
const TFJS_BUCKET = 'https://storage.googleapis.com/tfjs-models/tfjs';

const TM_WIDTHS = ['0.35', '0.50', '0.75', '1.00'];
const TM_PARAMS: Record<string, number> = { '0.35': 410_208 };

const mobilenetV2: ZooEntry[] = TM_WIDTHS.map((w) => ({
  name: `mobilenet_v2_${w}`,
  architecture: 'MobileNetV2',
  width: Number(w),
  inputSize: 224,
  defaultCut: 'out_relu',
  inputRange: [-1, 1],
  preprocessing: { scale: 1 / 127, offset: -1 },
  url: `${TM_BUCKET}/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_${w}_224_no_top/model.json`,
  licence: 'Apache-2.0 (Keras Applications weights)',
  description: `ImageNet MobileNetV2 ${w}, 224 px, no top (ends at out_relu): the trunk Teachable Machine trains on`,
  ...(TM_PARAMS[w] ? { params: TM_PARAMS[w] } : {}),
}));

const V1_WIDTHS = ['0.25', '0.50', '0.75', '1.0'];
const V1_SIZES = [128, 160, 192, 224];

const mobilenetV1: ZooEntry[] = V1_WIDTHS.flatMap((w) =>
  V1_SIZES.map((size) => ({
    name: `mobilenet_v1_${w}_${size}`,
    architecture: 'MobileNet v1',
    width: Number(w),
    inputSize: size,
    defaultCut: 'conv_pw_13_relu',
    // Keras 'tf' preprocessing, x/127.5 - 1: exactly the linear map onto [-1, 1].
    inputRange: [-1, 1] as [number, number],
    url: `${TFJS_BUCKET}/mobilenet_v1_${w}_${size}/model.json`,
    licence: 'Apache-2.0',
    description: `ImageNet MobileNet v1 ${w}, ${size} px, with its classifier (cut at conv_pw_13_relu); the TF.js examples' network`,
  })),
);

export const ZOO: ZooEntry[] = [...mobilenetV2, ...mobilenetV1];

/** The zoo base used when the user names none; it falls back to a bundled base when it cannot be had. */
export const DEFAULT_ZOO_BASE = 'mobilenet_v2_0.35';

export function findZooEntry(name: string): ZooEntry | undefined {
  return ZOO.find((z) => z.name === name);
}
