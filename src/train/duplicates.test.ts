import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initTf } from '../tfjs/tf.ts';
import { centredUnitRows, findDuplicates } from './duplicates.ts';
import { gaussian, mulberry32 } from './random.ts';

before(async () => {
  await initTf();
});

/** Positive random rows (like pooled ReLU features) with known near copies planted: row b = row a + small noise. */
function planted(n: number, dim: number, copies: [number, number][], noise: number, seed: number): Float32Array {
  const rng = mulberry32(seed);
  const x = Float32Array.from({ length: n * dim }, () => rng());
  for (const [a, b] of copies) for (let d = 0; d < dim; d++) x[b * dim + d] = x[a * dim + d] + noise * gaussian(rng);
  return x;
}

/** Every pair's centred cosine, the slow obvious way. */
function bruteForce(x: Float32Array, n: number, dim: number, threshold: number): string[] {
  const u = centredUnitRows(x, n, dim);
  const out: string[] = [];
  for (let a = 0; a < n; a++)
    for (let b = a + 1; b < n; b++) {
      let s = 0;
      for (let d = 0; d < dim; d++) s += u[a * dim + d] * u[b * dim + d];
      if (s >= threshold) out.push(`${a}-${b}`);
    }
  return out.sort();
}

test('centred rows: unrelated positive rows are near 0, a row and its noisy copy near 1', () => {
  const x = planted(50, 64, [[3, 9]], 0.02, 1);
  const u = centredUnitRows(x, 50, 64);
  const cos = (a: number, b: number) => u.subarray(a * 64, a * 64 + 64).reduce((s, v, d) => s + v * u[b * 64 + d], 0);
  assert.ok(cos(3, 9) > 0.99, `copy ${cos(3, 9)}`);
  assert.ok(Math.abs(cos(1, 2)) < 0.4, `unrelated ${cos(1, 2)}`);
});

test('exact search finds exactly the planted pairs, most similar first, and agrees with brute force', async () => {
  const copies: [number, number][] = [
    [0, 5],
    [7, 130],
    [42, 199],
  ];
  const x = planted(200, 48, copies, 0.03, 2);
  // one weaker copy: still a duplicate at 0.95, not at 0.999
  for (let d = 0; d < 48; d++) x[150 * 48 + d] = x[60 * 48 + d] + 0.04 * ((d % 5) - 2);
  const found = await findDuplicates(x, 200, 48, { exact: true });
  const keys = found.map((p) => `${p.a}-${p.b}`);
  assert.deepEqual([...keys].sort(), bruteForce(x, 200, 48, 0.95));
  assert.deepEqual([...keys].sort(), ['0-5', '42-199', '60-150', '7-130'].sort());
  for (let i = 1; i < found.length; i++) assert.ok(found[i - 1].similarity >= found[i].similarity);
  for (const p of found) assert.ok(p.a < p.b && p.similarity <= 1);
  const strict = await findDuplicates(x, 200, 48, { exact: true, threshold: 0.9999 });
  assert.ok(!strict.some((p) => p.a === 60 && p.b === 150));
});

test('hashing finds the same pairs as the exact search on planted copies among 3000 rows', async () => {
  const copies: [number, number][] = Array.from({ length: 12 }, (_, k) => [k * 200, k * 200 + 101]);
  const x = planted(3000, 128, copies, 0.03, 3);
  const exact = await findDuplicates(x, 3000, 128, { exact: true });
  const hashed = await findDuplicates(x, 3000, 128, { exact: false });
  assert.equal(exact.length, 12);
  assert.deepEqual(
    hashed.map((p) => `${p.a}-${p.b}`),
    exact.map((p) => `${p.a}-${p.b}`),
  );
  for (const [i, p] of hashed.entries()) assert.ok(Math.abs(p.similarity - exact[i].similarity) < 1e-4);
});

test('no pairs among unrelated rows; bad sizes are refused', async () => {
  assert.deepEqual(await findDuplicates(planted(300, 32, [], 0, 4), 300, 32), []);
  assert.deepEqual(await findDuplicates(new Float32Array(8), 1, 8), []);
  await assert.rejects(findDuplicates(new Float32Array(10), 3, 4), /10 values for 3 rows of 4/);
});
