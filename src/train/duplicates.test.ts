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
  // The same rows given in parts of uneven sizes (as training and validation rows are): the same pairs, both ways,
  // including copies in different parts (rows 1000 and 1101, 2200 and 2301).
  const parts = [x.subarray(0, 1100 * 128), x.subarray(1100 * 128, 2250 * 128), x.subarray(2250 * 128)];
  for (const exactly of [true, false]) {
    const split = await findDuplicates(parts, 3000, 128, { exact: exactly });
    assert.deepEqual(split, exactly ? exact : hashed);
  }
  await assert.rejects(findDuplicates([x.subarray(0, 130), x.subarray(130)], 3000, 128), /rows of 128/);
});

test('no pairs among unrelated rows; bad sizes are refused', async () => {
  assert.deepEqual(await findDuplicates(planted(300, 32, [], 0, 4), 300, 32), []);
  assert.deepEqual(await findDuplicates(new Float32Array(8), 1, 8), []);
  await assert.rejects(findDuplicates(new Float32Array(10), 3, 4), /10 values for 3 rows of 4/);
});

/** Rows in a few tight clusters (near-identical images: video frames, generated sets): most same-cluster pairs pass. */
function clustered(n: number, dim: number, clusters: number, spread: number, seed: number): Float32Array {
  const rng = mulberry32(seed);
  const centres = Array.from({ length: clusters }, () => Float32Array.from({ length: dim }, () => rng()));
  const x = new Float32Array(n * dim);
  for (let i = 0; i < n; i++)
    for (let d = 0; d < dim; d++) x[i * dim + d] = centres[i % clusters][d] + spread * gaussian(rng);
  return x;
}

test('near-identical sets: the exact search keeps the most similar pairs, up to maxPairs', async () => {
  const n = 900;
  const dim = 32;
  const x = clustered(n, dim, 3, 0.02, 5);
  const all = bruteForce(x, n, dim, 0.95);
  assert.ok(all.length > 100_000, `most same-cluster pairs are duplicates: ${all.length}`);
  const kept = await findDuplicates(x, n, dim, { exact: true, maxPairs: 500 });
  assert.equal(kept.length, 500);
  // The 500 kept are the 500 most similar of all pairs (brute force, by similarity).
  const u = centredUnitRows(x, n, dim);
  const sim = (a: number, b: number) => {
    let s = 0;
    for (let d = 0; d < dim; d++) s += u[a * dim + d] * u[b * dim + d];
    return s;
  };
  const best = all
    .map((k) => k.split('-').map(Number))
    .map(([a, b]) => sim(a, b))
    .sort((p, q) => q - p);
  assert.ok(Math.abs(kept[499].similarity - best[499]) < 1e-5, `${kept[499].similarity} against ${best[499]}`);
  for (let i = 1; i < kept.length; i++) assert.ok(kept[i - 1].similarity >= kept[i].similarity);
  assert.equal(new Set(kept.map((p) => `${p.a}-${p.b}`)).size, 500, 'no pair twice');
});

test('near-identical sets: hashing stays bounded and still finds exact copies inside a crowded cluster', async () => {
  const n = 20_000;
  const dim = 64;
  const x = clustered(n, dim, 4, 0.02, 6);
  // Ten exact copies planted inside the clusters: the most similar pairs of all (similarity 1).
  const copies = Array.from({ length: 10 }, (_, k) => [k * 1000 + 3, k * 1000 + 503] as const);
  for (const [a, b] of copies) x.copyWithin(b * dim, a * dim, a * dim + dim);
  const t = performance.now();
  const kept = await findDuplicates(x, n, dim, { exact: false, maxPairs: 2000 });
  const seconds = (performance.now() - t) / 1000;
  assert.equal(kept.length, 2000);
  const keys = new Set(kept.map((p) => `${p.a}-${p.b}`));
  assert.equal(keys.size, 2000, 'no pair twice');
  for (const [a, b] of copies) assert.ok(keys.has(`${a}-${b}`), `exact copy ${a}-${b} found`);
  for (const p of kept) assert.ok(p.similarity >= 0.95);
  // Every pair of a cluster of 5,000 would be 12.5 million candidates per table; the window keeps it to seconds.
  process.stdout.write(`# 20,000 clustered rows: ${seconds.toFixed(1)} s\n`);
});
