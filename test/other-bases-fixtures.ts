/**
 * Fixtures for graph-model and ONNX bases. No JS tool writes TF.js graph models, so the tiny one here is a GraphDef
 * written by hand: Placeholder → Conv2D → Relu → [Conv2D → Relu] + skip → AddV2 → Conv2D → Relu → Mean (a feature
 * vector of 16, as TF Hub feature-vector models end). ONNX fixtures come from graft's own converter, or by hand where a
 * layout or dynamic size is the point.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadLayersBase } from '../src/base/base.ts';
import { layersToOnnx } from '../src/onnx/convert.ts';
import { DataType, encodeModel } from '../src/onnx/proto.ts';
import { tfl } from '../src/tfjs/tf.ts';
import { writeTinyBase } from './helpers.ts';

export { tmpDir } from './helpers.ts';

const b64 = (s: string) => Buffer.from(s).toString('base64');
const f32 = { type: 'DT_FLOAT' };

function conv(name: string, input: string, strides: number) {
  return {
    name,
    op: 'Conv2D',
    input: [input, `${name}/kernel`],
    attr: {
      T: f32,
      strides: { list: { i: ['1', String(strides), String(strides), '1'] } },
      padding: { s: b64('SAME') },
      data_format: { s: b64('NHWC') },
      dilations: { list: { i: ['1', '1', '1', '1'] } },
    },
  };
}

const constNode = (name: string, dtype: string) => ({
  name,
  op: 'Const',
  attr: { dtype: { type: dtype }, value: { tensor: { dtype } } },
});

/** Writes dir/model.json + weights.bin (graph-model format, input 'images' [-1, size, size, 3]); returns model.json. */
export function writeTinyGraphModel(
  dir: string,
  opts: { size?: number; dynamic?: boolean; seed?: number } = {},
): string {
  const size = opts.size ?? 32;
  let rnd = opts.seed ?? 7;
  const next = () => {
    rnd = (rnd * 1103515245 + 12345) & 0x7fffffff;
    return (rnd / 0x7fffffff - 0.5) * 0.6;
  };
  const kernels: [string, number[]][] = [
    ['stem', [3, 3, 3, 8]],
    ['block', [3, 3, 8, 8]],
    ['top', [3, 3, 8, 16]],
  ];
  const dim = opts.dynamic ? ['-1', '-1', '-1', '3'] : ['-1', String(size), String(size), '3'];
  const nodes = [
    {
      name: 'images',
      op: 'Placeholder',
      attr: { dtype: f32, shape: { shape: { dim: dim.map((s) => ({ size: s })) } } },
    },
    ...kernels.map(([n]) => constNode(`${n}/kernel`, 'DT_FLOAT')),
    constNode('pool/axes', 'DT_INT32'),
    conv('stem', 'images', 2),
    { name: 'stem/relu', op: 'Relu', input: ['stem'], attr: { T: f32 } },
    conv('block', 'stem/relu', 1),
    { name: 'block/relu', op: 'Relu', input: ['block'], attr: { T: f32 } },
    { name: 'block/add', op: 'AddV2', input: ['stem/relu', 'block/relu'], attr: { T: f32 } },
    conv('top', 'block/add', 2),
    { name: 'top/relu', op: 'Relu', input: ['top'], attr: { T: f32 } },
    {
      name: 'features',
      op: 'Mean',
      input: ['top/relu', 'pool/axes'],
      attr: { T: f32, Tidx: { type: 'DT_INT32' }, keep_dims: { b: false } },
    },
  ];
  const weights = kernels.map(([n, shape]) => ({ name: `${n}/kernel`, shape, dtype: 'float32' }));
  const data = kernels.map(([, shape]) => Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, next));
  const axes = Int32Array.of(1, 2);
  const bytes = Buffer.concat([...data.map((d) => Buffer.from(d.buffer)), Buffer.from(axes.buffer)]);
  const json = {
    format: 'graph-model',
    generatedBy: 'graft test',
    convertedBy: 'hand',
    modelTopology: { node: nodes, library: {}, versions: { producer: 1 } },
    weightsManifest: [
      { paths: ['weights.bin'], weights: [...weights, { name: 'pool/axes', shape: [2], dtype: 'int32' }] },
    ],
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
  writeFileSync(path.join(dir, 'weights.bin'), bytes);
  return path.join(dir, 'model.json');
}

/** The tiny Layers base of helpers.ts converted to ONNX up to `top` (NHWC input 32x32, no preprocessing inside). */
export async function writeTinyOnnx(
  dir: string,
  top = 'top_relu',
  metadata: Record<string, string> = {},
): Promise<{ onnx: string; layers: string }> {
  const layers = await writeTinyBase(path.join(dir, 'layers'));
  const base = await loadLayersBase(layers);
  const trunk = tfl.model({ inputs: base.model.inputs, outputs: base.model.getLayer(top).output as never });
  const onnx = path.join(dir, 'tiny.onnx');
  writeFileSync(onnx, layersToOnnx(trunk, { metadata }));
  base.model.dispose();
  return { onnx, layers };
}

/** y = Relu(x) on an NCHW image [N, 3, H, W] (H, W symbolic when `dynamic`): pooled y is the normalised colour. */
export function writeNchwReluOnnx(
  file: string,
  o: { size?: number; dynamic?: boolean; metadata?: Record<string, string> } = {},
): string {
  const s = o.size ?? 8;
  const d = (v: number | string) => (typeof v === 'number' ? { dim_value: v } : { dim_param: v });
  const dims = [d('N'), d(3), o.dynamic ? d('H') : d(s), o.dynamic ? d('W') : d(s)];
  const info = (name: string) => ({ name, type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: dims } } } });
  writeFileSync(
    file,
    encodeModel({
      ir_version: 8,
      producer_name: 'graft test',
      producer_version: '',
      opset_import: [{ domain: '', version: 17 }],
      metadata_props: Object.entries(o.metadata ?? {}).map(([key, value]) => ({ key, value })),
      graph: {
        name: 'relu',
        node: [{ op_type: 'Relu', input: ['x'], output: ['y'], name: 'relu', attribute: [] }],
        initializer: [],
        input: [info('x')],
        output: [info('y')],
      },
    }),
  );
  return file;
}
