/**
 * Model folders trained on a graph-model or ONNX base. They cannot be stitched into one TF.js Layers model, so the
 * folder keeps the base file as it was given (base.onnx, or base-model.json + base-weights.bin), the head as JSON in
 * graft.json (headData) and what graft applies around the base (preprocessing, layout, cut). `graft predict` and
 * `evaluate` run them; a model on an ONNX base exports to ONNX only, as ONE graph: raw pixels → preprocessing → base →
 * pooling → head → probabilities.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ForeignBase } from '../base/base.ts';
import { formatWords } from '../base/foreign.ts';
import type { Preprocessing } from '../base/preprocessing.ts';
import type { EngineChoice } from '../engines/engine-choice.ts';
import type { TrunkRunner } from '../engines/trunk.ts';
import {
  type Attribute,
  AttrType,
  DataType,
  decodeModel,
  encodeModel,
  type NodeMsg,
  type TensorMsg,
} from '../onnx/proto.ts';
import { lenField, wireFields } from '../onnx/wire.ts';
import type { HeadJson } from '../train/features.ts';
import { makeDirs } from '../util/dirs.ts';
import { DataError, opt, shown, UsageError, words } from '../util/errors.ts';
import { fileDigests, METADATA_FILE, type ModelMetadata, writeModelFolder } from './model-files.ts';
import type { OnnxExportResult } from './onnx-export.ts';

export interface ForeignRecord {
  format: 'graph' | 'onnx';
  file: string;
  /** ONNX: the graph input graft feeds, its layout, a fixed batch size (0 when symbolic), the graph's own outputs. */
  inputName?: string;
  layout?: 'nchw' | 'nhwc';
  fixedBatch?: number;
  outputs?: string[];
  /** The cut activation's shape without batch, and its layout when rank 4 (what the exported graph pools). */
  cutShape?: number[];
  cutLayout?: 'nchw' | 'nhwc';
  /** A cut holding quantised values (ONNX QOperator files): how to read them as floats. */
  cutQuant?: { scale: number; zeroPoint: number; scaleName: string; zeroPointName: string };
}

export async function saveForeignModel(
  out: string,
  base: ForeignBase,
  metadata: ModelMetadata,
  signal?: AbortSignal,
): Promise<void> {
  const { files, record } = base.trunk.modelFiles();
  const cutInfo = base.trunk.cutInfo(metadata.cut);
  const full: ModelMetadata = {
    ...metadata,
    foreign: {
      ...record,
      cutShape: cutInfo.shape,
      cutLayout: cutInfo.layout,
      ...(cutInfo.quant ? { cutQuant: cutInfo.quant } : {}),
    },
  };
  writeModelFolder(
    out,
    { ...files, [METADATA_FILE]: `${JSON.stringify({ ...full, files: fileDigests(files) }, null, 2)}\n` },
    signal,
  );
}

/** The runner a Predictor uses for a folder written by saveForeignModel: pixels → pooled features at the cut. */
export async function openForeignRunner(
  dir: string,
  m: ModelMetadata,
  engine: EngineChoice = 'auto',
): Promise<TrunkRunner> {
  const rec = m.foreign as ForeignRecord;
  const p = m.preprocessing as Preprocessing;
  if (rec.format === 'onnx') {
    if (engine === 'wasm')
      throw new UsageError(
        'conflict',
        words`${dir}: a model on an ONNX base runs on ONNX Runtime only (${opt('engine')} auto or onnx, not wasm)`,
      );
    const { onnxBaseRunner } = await import('../engines/onnx-base.ts');
    const bytes = readFileSync(path.join(dir, rec.file));
    return onnxBaseRunner(
      {
        bytes,
        inputName: rec.inputName!,
        layout: rec.layout ?? 'nchw',
        preprocessing: p,
        fixedBatch: rec.fixedBatch ?? 0,
        outputs: rec.outputs ?? [],
        ...(rec.cutQuant ? { quantized: { [m.cut]: rec.cutQuant } } : {}),
      },
      [m.cut],
    );
  }
  if (engine === 'onnx')
    throw new UsageError(
      'conflict',
      words`${dir}: a model on a TF.js graph-model base runs on TF.js only (${opt('engine')} auto or wasm, not onnx)`,
    );
  const { openSavedGraphTrunk } = await import('../engines/graph-model.ts');
  return openSavedGraphTrunk(dir, p, m.cut);
}

// ---------------------------------------------------------------------------------------------------------------------
// ONNX export: the base file's graph, rewritten field by field (never re-encoded through graft's proto subset)

const f32 = (name: string, values: ArrayLike<number>, dims: number[]): TensorMsg => {
  const a = Float32Array.from(values);
  return { name, dims, data_type: DataType.FLOAT, raw_data: new Uint8Array(a.buffer, a.byteOffset, a.byteLength) };
};
const node = (op: string, input: string[], output: string, attribute: Attribute[] = []): NodeMsg => ({
  op_type: op,
  input,
  output: [output],
  name: output,
  attribute,
});
const ints = (name: string, v: number[]): Attribute => ({ name, type: AttrType.INTS, ints: v });
const int = (name: string, i: number): Attribute => ({ name, type: AttrType.INT, i });

function fromBase64(s: string): Float32Array {
  const b = Buffer.from(s, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

export async function exportForeignOnnx(dir: string, m: ModelMetadata, out: string): Promise<OnnxExportResult> {
  const rec = m.foreign as ForeignRecord;
  if (rec.format !== 'onnx') {
    throw new DataError(
      'not-exportable',
      dir,
      `trained on ${formatWords(rec.format)}, which graft cannot convert to ONNX; the model folder itself (graft predict) is its only form`,
    );
  }
  const head = m.headData as HeadJson & {
    mean?: string;
    invStd?: string;
    layers?: { units: number; kernel: string; bias: string }[];
  };
  if (head.kind === 'knn')
    throw new DataError(
      'not-exportable',
      dir,
      words`a knn head is not expressible as an ONNX graph; retrain with ${opt('head')} softmax or mlp`,
    );
  if (!rec.cutShape)
    throw new DataError(
      'not-exportable',
      dir,
      "graft.json lacks the cut's shape (written by an older graft); retrain to export",
    );
  const p = m.preprocessing as Preprocessing;
  const [h, w] = p.size;
  const bytes = readFileSync(path.join(dir, rec.file));

  // Raw NHWC pixels 0..255 → the base's input, with exactly the arithmetic of preprocessing.normalisePixels.
  const mean = p.mean ?? [0, 0, 0];
  const std = p.std ?? [1, 1, 1];
  const inits: TensorMsg[] = [
    f32(
      'graft_pre_mul',
      std.map((s) => p.scale / s),
      [3],
    ),
    f32(
      'graft_pre_add',
      std.map((s, c) => (p.offset - mean[c]) / s),
      [3],
    ),
  ];
  const nchw = rec.layout === 'nchw';
  // The new input keeps the name every graft export uses, unless the base already uses it.
  const input = rec.inputName === 'pixels' ? 'graft_pixels' : 'pixels';
  const pre: NodeMsg[] = [
    node('Mul', [input, 'graft_pre_mul'], 'graft_pre_scaled'),
    node('Add', ['graft_pre_scaled', 'graft_pre_add'], nchw ? 'graft_pre_nhwc' : rec.inputName!),
  ];
  if (nchw) pre.push(node('Transpose', ['graft_pre_nhwc'], rec.inputName!, [ints('perm', [0, 3, 1, 2])]));

  // The cut activation → pooled features → standardisation → Dense layers → softmax.
  const post: NodeMsg[] = [];
  let x = m.cut;
  if (rec.cutQuant) {
    const q = rec.cutQuant;
    post.push(
      node('DequantizeLinear', [x, q.scaleName, ...(q.zeroPointName ? [q.zeroPointName] : [])], 'graft_cut_float'),
    );
    x = 'graft_cut_float';
  }
  if (rec.cutShape.length === 3) {
    if (rec.cutLayout === 'nhwc') {
      post.push(node('Transpose', [x], 'graft_pool_nchw', [ints('perm', [0, 3, 1, 2])]));
      x = 'graft_pool_nchw';
    }
    post.push(
      node('GlobalAveragePool', [x], 'graft_pool'),
      node('Flatten', ['graft_pool'], 'graft_features', [int('axis', 1)]),
    );
    x = 'graft_features';
  }
  inits.push(
    f32('graft_head_mean', fromBase64(head.mean!), [head.dim]),
    f32('graft_head_inv_std', fromBase64(head.invStd!), [head.dim]),
  );
  post.push(
    node('Sub', [x, 'graft_head_mean'], 'graft_head_centred'),
    node('Mul', ['graft_head_centred', 'graft_head_inv_std'], 'graft_head_std'),
  );
  x = 'graft_head_std';
  let inDim = head.dim;
  head.layers!.forEach((l, k) => {
    inits.push(
      f32(`graft_head_kernel_${k}`, fromBase64(l.kernel), [inDim, l.units]),
      f32(`graft_head_bias_${k}`, fromBase64(l.bias), [l.units]),
    );
    const last = k === head.layers!.length - 1;
    post.push(
      node(
        'Gemm',
        [x, `graft_head_kernel_${k}`, `graft_head_bias_${k}`],
        last ? 'graft_head_logits' : `graft_head_dense_${k}`,
      ),
    );
    x = last ? 'graft_head_logits' : `graft_head_relu_${k}`;
    if (!last) post.push(node('Relu', [`graft_head_dense_${k}`], x));
    inDim = l.units;
  });
  post.push(node('Softmax', [x], 'probabilities', [int('axis', 1)]));

  const batch = rec.fixedBatch ? { dim_value: rec.fixedBatch } : { dim_param: 'N' };
  const info = (name: string, dims: ({ dim_value: number } | { dim_param: string })[]) => ({
    name,
    type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: dims } } },
  });
  const metadata: Record<string, string> = {
    'graft.labels': JSON.stringify(m.labels),
    'graft.size': JSON.stringify(p.size),
    'graft.resize': p.resize,
    // Cropping, like resizing, happens before the graph: code serving the model reads it here.
    'graft.crop': String(p.crop ?? 1),
    'graft.input': 'raw RGB pixel values 0..255, NHWC; scaling, normalisation and layout are inside the graph',
    'graft.base': m.base.name,
    'graft.cut': m.cut,
  };
  // The new pieces are encoded with graft's own writer as a throw-away model, then spliced in as raw fields.
  const piece = (nodes: NodeMsg[], extra = false) =>
    wireFields(
      wireFields(
        encodeModel({
          ir_version: 8,
          producer_name: 'graft',
          producer_version: '',
          opset_import: [],
          metadata_props: [],
          graph: {
            name: '',
            node: nodes,
            initializer: extra ? inits : [],
            input: extra ? [info(input, [batch, { dim_value: h }, { dim_value: w }, { dim_value: 3 }])] : [],
            output: extra ? [info('probabilities', [batch, { dim_value: m.labels.length }])] : [],
          },
        }),
      ).find((f) => f.field === 7)!.payload!,
    );
  const extraModel = wireFields(
    encodeModel({
      ir_version: 8,
      producer_name: '',
      producer_version: '',
      opset_import: [],
      metadata_props: Object.entries(metadata).map(([key, value]) => ({ key, value })),
      graph: { name: '', node: [], initializer: [], input: [], output: [] },
    }),
  ).filter((f) => f.field === 14);
  const preFields = piece(pre).filter((f) => f.field === 1);
  const postFields = piece(post, true).filter((f) => f.field !== 2);

  const top = wireFields(bytes);
  const graphPayload = Buffer.concat(top.filter((f) => f.field === 7).map((f) => f.payload!));
  const nameOf = (payload: Uint8Array) =>
    new TextDecoder().decode(wireFields(payload).find((f) => f.field === 1)?.payload ?? new Uint8Array());
  const kept = wireFields(graphPayload).filter(
    (f) => f.field !== 12 && !(f.field === 11 && nameOf(f.payload!) === rec.inputName),
  );
  const graph = Buffer.concat([...preFields, ...kept, ...postFields].map((f) => f.bytes));
  const isGraftKey = (f: { payload?: Uint8Array }) => nameOf(f.payload!).startsWith('graft.');
  const model = Buffer.concat([
    ...top.filter((f) => f.field !== 7 && !(f.field === 14 && isGraftKey(f))).map((f) => f.bytes),
    lenField(7, graph),
    ...extraModel.map((f) => f.bytes),
  ]);

  const target = path.resolve(out);
  const tmp = `${target}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    makeDirs(path.dirname(target));
    writeFileSync(tmp, model);
    renameSync(tmp, target);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new UsageError(
      'out-not-writable',
      words`${opt('out')} ${shown(out)}: cannot write (${(e as Error).message})`,
      e,
    );
  }
  const opset = Number(decodeModel(bytes).opset_import.find((o) => !o.domain)?.version ?? 0);
  return { out: target, bytes: model.length, opset, input, output: 'probabilities', size: p.size, labels: m.labels };
}
