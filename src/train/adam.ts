/**
 * @file Adam over plain Float32Arrays, with tf.train.adam's arithmetic (beta1 0.9, beta2 0.999, epsilon 1e-7, the bias
 * corrections applied to the moments), for weights that live outside TF.js: a step computed by ONNX Runtime returns
 * its gradients as arrays, and the update is a few flops per weight, far below the step itself.
 */
import { InternalError } from '../util/errors.ts';

export class FloatAdam {
  private readonly m: Float32Array[];
  private readonly v: Float32Array[];
  private accBeta1: number;
  private accBeta2: number;

  constructor(
    sizes: number[],
    readonly lr: number,
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    readonly epsilon = 1e-7,
  ) {
    this.m = sizes.map((n) => new Float32Array(n));
    this.v = sizes.map((n) => new Float32Array(n));
    this.accBeta1 = beta1;
    this.accBeta2 = beta2;
  }

  /** params[i] -= lr · m̂ / (√v̂ + ε), in place. */
  update(params: Float32Array[], grads: Float32Array[]): void {
    if (params.length !== this.m.length || grads.length !== this.m.length)
      throw new InternalError(
        `Adam: ${params.length} weights and ${grads.length} gradients for ${this.m.length} slots`,
      );
    const { beta1: b1, beta2: b2, epsilon, lr } = this;
    const c1 = 1 - this.accBeta1;
    const c2 = 1 - this.accBeta2;
    for (let k = 0; k < params.length; k++) {
      const p = params[k];
      const g = grads[k];
      const m = this.m[k];
      const v = this.v[k];
      if (g.length !== p.length)
        throw new InternalError(`Adam: gradient ${k} has ${g.length} values for ${p.length} weights`);
      for (let i = 0; i < p.length; i++) {
        const gi = g[i];
        const mi = b1 * m[i] + (1 - b1) * gi;
        const vi = b2 * v[i] + (1 - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= (lr * (mi / c1)) / (Math.sqrt(vi / c2) + epsilon);
      }
    }
    this.accBeta1 *= b1;
    this.accBeta2 *= b2;
  }
}
