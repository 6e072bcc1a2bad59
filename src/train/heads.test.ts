import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initTf, tf, tfl } from '../tfjs/tf.ts';
import type { FeatureSet, HeadJson, TrainedHead } from './features.ts';
import { computeStandardisation, denseGradients, headFromJSON, KnnHead } from './heads.ts';
import { gaussian, glorotUniform, mulberry32 } from './random.ts';
import { trainHead } from './trainer.ts';

before(async () => {
  await initTf();
});

/** Gaussian clusters with a nonzero offset per dimension, so standardisation folding has work to do. */
function clusters(n: number, dim: number, classes: number, seed: number, spread = 0.5): FeatureSet {
  const rng = mulberry32(seed);
  const centres = Array.from({ length: classes }, () => Array.from({ length: dim }, () => gaussian(rng) * 2));
  const x = new Float32Array(n * dim);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = i % classes;
    for (let d = 0; d < dim; d++)
      x[i * dim + d] = 3 + (d % 5) + (centres[y[i]][d] + gaussian(rng) * spread) * (1 + (d % 3));
  }
  return { x, y, n, dim };
}

const maxDiff = (a: Float32Array, b: Float32Array) => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

test('hand-written gradients match tf.variableGrads (softmax and mlp, both kernel layouts, dropout mask, weight decay)', () => {
  const rng = mulberry32(7);
  const b = 6;
  const dim = 5;
  const C = 3;
  const hidden = 4;
  const wd = 0.01;
  const xa = Float32Array.from({ length: b * dim }, () => gaussian(rng));
  const xT = new Float32Array(dim * b);
  for (let r = 0; r < b; r++) for (let d = 0; d < dim; d++) xT[d * b + r] = xa[r * dim + d];
  const labels = Int32Array.from({ length: b }, (_, i) => i % C);
  const w = Float32Array.from({ length: b }, () => (0.5 + rng()) / b);
  const yw = new Float32Array(b * C);
  for (let r = 0; r < b; r++) yw[r * C + labels[r]] = w[r];
  const mask = Float32Array.from({ length: b * hidden }, () => (rng() < 0.3 ? 0 : 1 / 0.7));
  for (const [mlp, transposed] of [
    [false, false],
    [false, true],
    [true, false],
    [true, true],
  ]) {
    const units = mlp ? hidden : C;
    const arrays = [glorotUniform(units, dim, rng), Float32Array.from({ length: units }, () => gaussian(rng))];
    if (mlp) arrays.push(glorotUniform(hidden, C, rng), new Float32Array(C).fill(0.1));
    const shapes = [transposed ? [units, dim] : [dim, units], [units], [hidden, C], [C]];
    const vars = arrays.map((a, i) => tf.variable(tf.tensor(a, shapes[i])));
    tf.tidy(() => {
      const batch = {
        x: tf.tensor2d(xa, [b, dim]),
        xT: tf.tensor2d(xT, [dim, b]),
        yw: tf.tensor2d(yw, [b, C]),
        w: tf.tensor2d(w, [b, 1]),

        mask: mlp ? tf.tensor2d(mask, [b, hidden]) : undefined,
      };
      const mine = denseGradients(vars, batch, wd, transposed);
      const ref = tf.variableGrads(() => {
        let h: tf.Tensor = tf.add(tf.matMul(batch.x, transposed ? tf.transpose(vars[0]) : vars[0]), vars[1]);
        if (mlp) h = tf.add(tf.matMul(tf.mul(tf.relu(h), batch.mask as tf.Tensor), vars[2]), vars[3]);
        const ce = tf.neg(tf.sum(tf.mul(batch.yw, tf.logSoftmax(h))));
        let pen: tf.Tensor = tf.sum(tf.square(vars[0]));
        if (mlp) pen = tf.add(pen, tf.sum(tf.square(vars[2])));
        return tf.add(ce, tf.mul(pen, wd / 2)) as tf.Scalar;
      }, vars);
      for (const [i, v] of vars.entries()) {
        const d = maxDiff(mine[i].dataSync() as Float32Array, ref.grads[v.name].dataSync() as Float32Array);
        assert.ok(
          d < 1e-5,
          `${mlp ? 'mlp' : 'softmax'} (transposed: ${transposed}) param ${i}: gradient differs by ${d}`,
        );
      }
    });
    tf.dispose(vars);
  }
});

test('constant dimensions are ignored rather than amplified', () => {
  const x = Float32Array.from([1, 5, 2, 5, 3, 5]);
  const s = computeStandardisation(x, 3, 2);
  assert.ok(Math.abs(s.mean[0] - 2) < 1e-6 && s.mean[1] === 5);
  assert.ok(Math.abs(s.invStd[0] - 1 / Math.sqrt(2 / 3)) < 1e-5);
  assert.equal(s.invStd[1], 0);
});

for (const head of ['logistic', 'softmax', 'mlp'] as const) {
  test(`${head}: apply() as TF.js Dense layers matches predictProba`, async () => {
    const train = clusters(90, 12, 3, 1, 1.5);
    const h = await trainHead(train, undefined, 3, { head, epochs: 15, hidden: 16, lr: 1e-2 });
    const input = tfl.input({ shape: [12] });
    const output = h.apply(input, 'myhead_');
    const model = tfl.model({ inputs: input, outputs: output });
    try {
      for (const layer of model.layers.slice(1)) {
        assert.ok(layer.name.startsWith('myhead_'), layer.name);
        assert.equal(layer.getClassName(), 'Dense');
      }
      const test = clusters(40, 12, 3, 2, 1.5);
      const p = h.predictProba(test.x, test.n);
      const out = model.predict(tf.tensor2d(test.x, [test.n, 12])) as tf.Tensor;
      const q = out.dataSync() as Float32Array;
      out.dispose();
      const d = maxDiff(p, q);
      assert.ok(d < 1e-5, `apply and predictProba differ by ${d}`);
      // Make sure the comparison is not between two constant outputs.
      assert.ok(maxDiff(p, new Float32Array(p.length).fill(1 / 3)) > 0.2);
    } finally {
      model.dispose();
      h.dispose();
    }
  });
}

for (const head of ['logistic', 'softmax', 'mlp', 'knn'] as const) {
  test(`${head}: toJSON / headFromJSON round trip reproduces predictions`, async () => {
    const train = clusters(60, 8, 3, 3, 2);
    const h = await trainHead(train, undefined, 3, { head, epochs: 5, hidden: 8, k: 3 });
    const json = JSON.parse(JSON.stringify(h.toJSON())) as HeadJson;
    const back: TrainedHead = headFromJSON(json);
    try {
      assert.equal(back.kind, head);
      assert.equal(back.numClasses, 3);
      assert.equal(back.dim, 8);
      assert.equal(back.bestEpoch, h.bestEpoch);
      assert.deepEqual(back.history, h.history);
      assert.deepEqual(back.fit, h.fit);
      if (head === 'logistic') assert.ok(back.fit?.search?.rows.length);
      const q = clusters(30, 8, 3, 4, 2);
      assert.deepEqual(back.predictProba(q.x, q.n), h.predictProba(q.x, q.n));
      assert.throws(() => headFromJSON({ ...json, dim: 9 }), /holds|expected/);
    } finally {
      h.dispose();
      back.dispose();
    }
  });
}

test('knn votes with the labels of the nearest stored rows by cosine similarity', async () => {
  // Stored rows point in distinct directions; scale must not matter (cosine).
  const x = Float32Array.from([1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0]);
  const y = Int32Array.from([0, 1, 2, 1]);
  const h = await trainHead({ x, y, n: 4, dim: 3 }, undefined, 3, { head: 'knn', k: 1 });
  try {
    const q = Float32Array.from([5, 0.1, 0, 0, 0.2, 9, 0.1, 3, 0, 2, 2.2, 0]);
    const p = h.predictProba(q, 4);
    const pred = [0, 1, 2, 3].map((i) => Array.from(p.subarray(i * 3, i * 3 + 3)).indexOf(1));
    assert.deepEqual(pred, [0, 2, 1, 1]);
    assert.throws(() => h.apply(tfl.input({ shape: [3] })), /knn/);
  } finally {
    h.dispose();
  }
  // k=3: two neighbours of class 1 outvote a slightly nearer one of class 0.
  const x3 = Float32Array.from([1, 0, 0.98, 0.2, 0.97, 0.24, -1, 0]);
  const h3 = new KnnHead(2, 2, KnnHead.normalise(x3, 4, 2), Int32Array.from([0, 1, 1, 0]), 3);
  try {
    const p = h3.predictProba(Float32Array.from([1, 0.05]), 1);
    assert.ok(p[1] > p[0], `expected class 1, got ${Array.from(p)}`);
    assert.ok(Math.abs(p[0] + p[1] - 1) < 1e-6);
  } finally {
    h3.dispose();
  }
});
