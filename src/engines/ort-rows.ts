/**
 * @file The two products of a linear model with a block of data rows, on ONNX Runtime: logits Z = (X - m) K and the
 * kernel gradient (X - m)^T G. The logistic head's fit (train/logistic.ts) runs them block by block over rows that
 * stay where the caller keeps them: ONNX Runtime reads each block in place, and the centring happens in the graph, so a
 * fit holds no copy of its data. (On TF.js the data would be held twice more: as a tensor, and as XNNPACK's packed copy
 * of the right-hand operand; 100,000 images of 1,280 features are 0.8 GB per copy.) Both products read the block as
 * their left operand: Gemm's transA reads it transposed without a transpose of its own.
 */
import os from 'node:os';
import { AttrType, encodeGraph, floatInfo as info, type NodeMsg, type ValueInfoMsg } from '../onnx/proto.ts';
import { loadOrt, type Ort } from '../onnx/runtime.ts';
import { InternalError } from '../util/errors.ts';

type Session = import('onnxruntime-node').InferenceSession;

function model(nodes: NodeMsg[], inputs: ValueInfoMsg[], output: ValueInfoMsg): Uint8Array {
  return encodeGraph({ name: 'rows', node: nodes, initializer: [], input: inputs, output: [output] });
}

const node = (op_type: string, input: string[], output: string, attribute: NodeMsg['attribute'] = []): NodeMsg => ({
  op_type,
  input,
  output: [output],
  name: output,
  attribute,
});

/** Products of blocks of `dim`-feature rows with a `dim` x `classes` kernel, centred on a fixed mean. */
export class OrtRowProducts {
  private constructor(
    private readonly ort: Ort,
    private readonly logitsSession: Session,
    private readonly gradientSession: Session,
    private readonly mean: import('onnxruntime-node').Tensor,
    readonly dim: number,
    readonly classes: number,
  ) {}

  /** `mean` (dim values) is subtracted from every row inside the graph; `threads` defaults to every core. */
  static async create(
    mean: Float32Array,
    classes: number,
    threads = os.availableParallelism(),
  ): Promise<OrtRowProducts> {
    const ort = await loadOrt();
    const dim = mean.length;
    const options = {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential' as const,
      graphOptimizationLevel: 'all' as const,
      logSeverityLevel: 3 as const,
    };
    const rows = info('x', ['rows', dim]);
    const centre = node('Sub', ['x', 'mean'], 'centred');
    const logits = await ort.InferenceSession.create(
      model(
        [centre, node('MatMul', ['centred', 'kernel'], 'z')],
        [rows, info('mean', [dim]), info('kernel', [dim, classes])],
        info('z', ['rows', classes]),
      ),
      options,
    );
    let gradient: Session;
    try {
      gradient = await ort.InferenceSession.create(
        model(
          [centre, node('Gemm', ['centred', 'g'], 'dk', [{ name: 'transA', type: AttrType.INT, i: 1 }])],
          [rows, info('mean', [dim]), info('g', ['rows', classes])],
          info('dk', [dim, classes]),
        ),
        options,
      );
    } catch (e) {
      await logits.release();
      throw e;
    }
    return new OrtRowProducts(ort, logits, gradient, new ort.Tensor('float32', mean, [dim]), dim, classes);
  }

  private block(x: Float32Array, rows: number) {
    if (x.length !== rows * this.dim)
      throw new InternalError(`row products: ${x.length} values for ${rows} rows of ${this.dim}`);
    return new this.ort.Tensor('float32', x, [rows, this.dim]);
  }

  /** (x - mean) kernel: rows x classes, for `rows` rows in `x`; kernel is [dim][classes]. */
  async logits(x: Float32Array, rows: number, kernel: Float32Array): Promise<Float32Array> {
    const out = await this.logitsSession.run({
      x: this.block(x, rows),
      mean: this.mean,
      kernel: new this.ort.Tensor('float32', kernel, [this.dim, this.classes]),
    });
    return out.z.data as Float32Array;
  }

  /** (x - mean)^T g: [dim][classes], for `rows` rows in `x` and g [rows][classes]. */
  async gradient(x: Float32Array, rows: number, g: Float32Array): Promise<Float32Array> {
    const out = await this.gradientSession.run({
      x: this.block(x, rows),
      mean: this.mean,
      g: new this.ort.Tensor('float32', g, [rows, this.classes]),
    });
    return out.dk.data as Float32Array;
  }

  async release(): Promise<void> {
    await Promise.all([this.logitsSession.release(), this.gradientSession.release()]);
  }
}
