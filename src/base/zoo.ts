/**
 * The model zoo: public TF.js Layers-format networks graft can download by name. Only networks whose URL, file
 * format, preprocessing and licence are known belong here; the files are fetched and verified by download.ts, and an
 * entry's weights are pinned when their SHA-256 is known.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { io } from '@tensorflow/tfjs-core';
import { DownloadError } from '../util/errors.ts';
import { readLocalModel, weightsDigest } from './artifacts.ts';
import { type EnsureOptions, type EnsureResult, ensureModelFiles } from './download.ts';

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
  /**
   * Pin: `weightsDigest` of the published weights. Files whose weights differ are refused (and removed from the cache).
   * It holds the values, not the file layout, so a mirror that re-shards or re-saves the same weights passes.
   */
  weightsSha256?: string;
  /** Central fraction kept by default (Preprocessing.crop) when it measured better than the whole image; `--crop`
   *  overrides it. */
  crop?: number;
  /** How images are fitted by default when it is not `cover` (measured); `--resize` overrides it. */
  resize?: 'cover' | 'fill';
  /** Parameter count, when known. */
  params?: number;
}

const TM_BUCKET = 'https://storage.googleapis.com/teachable-machine-models';
const TFJS_BUCKET = 'https://storage.googleapis.com/tfjs-models/tfjs';

const TM_WIDTHS = ['0.35', '0.50', '0.75', '1.00'];
const TM_PARAMS: Record<string, number> = { '0.35': 410_208 };

/**
 * Pinned weights (weightsDigest), for the entries whose published weights graft has verified copies of: the copies in
 * ../shared/models/mirror (Teachable Machine's MobileNetV2 0.35 re-saved as one weights file with untouched values;
 * the tfjs-models MobileNet v1 0.75 in the bucket's own layout).
 */
const PINS: Record<string, string> = {
  'mobilenet_v2_0.35': '040c3ba9c8ed85a39e422c5d5e0ab17e6cb03dd4cd39a0af6f5eb5efc6facedf',
  'mobilenet_v1_0.75_224': 'cd45f3c334e55ca4429b81a4dfe7bb2f274af551e4d4edb4cb2210e86d64d1c3',
};
const pin = (name: string) => (PINS[name] ? { weightsSha256: PINS[name] } : {});

/**
 * Preprocessing measured better than the plain crop 1 + cover on hymenoptera, on both the validation images and the
 * cross-validated training images (`npm run bench -- --sections=bases`, docs/BENCHMARKS.md). Entries not measured keep
 * the plain setting, and so do both measured entries: no other setting beat it on both figures (mobilenet_v1_0.75_224
 * with crop 0.875: 0.952 cross-validated against 0.936, but 0.928 on the validation images against 0.935).
 */
const MEASURED: Record<string, Pick<ZooEntry, 'crop' | 'resize'>> = {};

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
  ...pin(`mobilenet_v2_${w}`),
  ...MEASURED[`mobilenet_v2_${w}`],
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
    ...pin(`mobilenet_v1_${w}_${size}`),
    ...MEASURED[`mobilenet_v1_${w}_${size}`],
  })),
);

export const ZOO: ZooEntry[] = [...mobilenetV2, ...mobilenetV1];

/**
 * The zoo base used when the user names none; it falls back to a bundled base when it cannot be had. Chosen by the rule
 * of `npm run bench -- --sections=bases`: the most accurate zoo base whose extraction costs at most 1.5x that of
 * mobilenet_v2_0.35 (the default before) and whose exported model is at most 20 MB (docs/BENCHMARKS.md, Bases).
 */
export const DEFAULT_ZOO_BASE = 'mobilenet_v1_0.75_224';

export function findZooEntry(name: string): ZooEntry | undefined {
  return ZOO.find((z) => z.name === name);
}

/**
 * Downloads (or finds in the cache) an entry's files and reads them, refusing weights that differ from the entry's pin:
 * the cached copy is removed, so the next try fetches it again rather than reusing it offline.
 */
export async function loadZooFiles(
  entry: ZooEntry,
  opts: Omit<EnsureOptions, 'name' | 'sha256'> = {},
): Promise<EnsureResult & { artifacts: io.ModelArtifacts }> {
  const got = await ensureModelFiles(entry.url, { ...opts, name: entry.name, sha256: entry.sha256 });
  const { artifacts } = await readLocalModel(got.modelJsonPath);
  if (entry.weightsSha256) {
    const digest = weightsDigest(artifacts);
    if (digest !== entry.weightsSha256) {
      await rm(path.dirname(got.modelJsonPath), { recursive: true, force: true });
      throw new DownloadError(
        'checksum',
        entry.url,
        `${entry.name}: the downloaded weights differ from the pinned SHA-256 (${digest.slice(0, 12)}…, expected ${entry.weightsSha256.slice(0, 12)}…); refused and removed from the cache`,
      );
    }
  }
  return { ...got, artifacts };
}
