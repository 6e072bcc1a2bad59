/**
 * @file Near-duplicate search on cached feature rows. Two images are near duplicates when the cosine similarity of their
 * centred feature vectors (each row minus the mean row) reaches a threshold. Centring matters: pooled ReLU activations
 * are all positive, so raw cosines between unrelated photos are already high; after centring, unrelated images sit near
 * 0 and re-encoded or resized copies of one photo stay close to 1 (see DUPLICATE_THRESHOLD).
 *
 * Small sets are searched exactly with blocked matrix products. Large ones use locality-sensitive hashing by random
 * hyperplanes (Charikar 2002): each row gets TABLES codes of BITS sign bits; rows sharing a code in any table become
 * candidates, and only candidates have their cosine computed. Two rows at cosine s agree on one bit with probability
 * 1 − arccos(s)/π, so a pair at 0.95 shares at least one of 16 codes of 16 bits with probability 0.96, a pair at 0.98
 * with probability 0.999, while unrelated rows almost never share a code.
 *
 * Sets of near-identical images (video frames, product shots on one background, generated images) put thousands of
 * rows in one bucket, and millions of pairs above the threshold. Work and memory stay bounded there: in a bucket of
 * more than WINDOW + 1 rows each row is compared only with its WINDOW neighbours along one more random direction
 * (copies project to nearly the same value, so they sit side by side), and at most DUPLICATE_MAX_PAIRS pairs are
 * kept, the most similar. 100,000 generated images of 10 classes once ran out of memory here, counting candidates.
 */
import { tf } from '../tfjs/tf.ts';
import { InternalError } from '../util/errors.ts';
import { gaussian, mulberry32 } from './random.ts';

/**
 * Default cosine threshold on centred features. Chosen on hymenoptera with the default base: a photo and its copy
 * re-encoded as PNG or resized to 80% score 0.97 to 1.00, while the closest pairs of different photos stay below
 * 0.9 (docs/BENCHMARKS.md, "Near duplicates").
 */
export const DUPLICATE_THRESHOLD = 0.95;
/** Up to this many rows the search is exact. */
export const EXACT_MAX_ROWS = 4096;
/** Pairs kept at most, the most similar: a report shows a few dozen, and a list of millions helps nobody. */
export const DUPLICATE_MAX_PAIRS = 20_000;
const TABLES = 16;
const BITS = 16;
const BLOCK = 1024;
/** Neighbours along the bucket's sort direction that a row of a large bucket is compared with. */
const WINDOW = 16;

export interface DuplicatePair {
  /** Row indices, a < b. */
  a: number;
  b: number;
  /** Cosine similarity of the centred rows. */
  similarity: number;
}

export interface DuplicateOptions {
  /** Default DUPLICATE_THRESHOLD. */
  threshold?: number;
  /** Force the exact search (true) or hashing (false); default: exact up to EXACT_MAX_ROWS rows. */
  exact?: boolean;
  /** Seed of the random hyperplanes. */
  seed?: number;
  /** Default DUPLICATE_MAX_PAIRS. */
  maxPairs?: number;
}

/**
 * The pairs found so far, at most `max` of them, the most similar: when twice as many have come in, the list is cut to
 * the best `max` and the bar rises to the lowest similarity kept, so that nothing below it is looked at again.
 */
class PairList {
  private pairs: DuplicatePair[] = [];
  private keys = new Set<number>();
  bar: number;
  constructor(
    threshold: number,
    private readonly n: number,
    private readonly max: number,
  ) {
    this.bar = threshold;
  }
  has(a: number, b: number): boolean {
    return this.keys.has(a * this.n + b);
  }
  add(a: number, b: number, similarity: number): void {
    if (similarity < this.bar || this.has(a, b)) return;
    this.pairs.push({ a, b, similarity: Math.min(1, similarity) });
    this.keys.add(a * this.n + b);
    if (this.pairs.length >= 2 * this.max) this.trim();
  }
  private trim(): void {
    this.pairs = sorted(this.pairs).slice(0, this.max);
    this.keys = new Set(this.pairs.map((p) => p.a * this.n + p.b));
    // Strictly above from now on would drop ties at the bar; keeping them costs at most another trim.
    this.bar = Math.max(this.bar, this.pairs[this.pairs.length - 1].similarity);
  }
  result(): DuplicatePair[] {
    return sorted(this.pairs).slice(0, this.max);
  }
}

const sorted = (pairs: DuplicatePair[]) => pairs.sort((p, q) => q.similarity - p.similarity || p.a - q.a || p.b - q.b);

/** Rows minus the mean row, scaled to unit length (an all-zero row stays zero and matches nothing). */
export function centredUnitRows(x: Float32Array, n: number, dim: number): Float32Array {
  const mean = new Float64Array(dim);
  for (let i = 0; i < n; i++) for (let d = 0; d < dim; d++) mean[d] += x[i * dim + d];
  for (let d = 0; d < dim; d++) mean[d] /= Math.max(1, n);
  const u = new Float32Array(n * dim);
  for (let i = 0; i < n; i++) {
    let norm = 0;
    for (let d = 0; d < dim; d++) {
      const v = x[i * dim + d] - mean[d];
      u[i * dim + d] = v;
      norm += v * v;
    }
    const inv = norm > 0 ? 1 / Math.sqrt(norm) : 0;
    for (let d = 0; d < dim; d++) u[i * dim + d] *= inv;
  }
  return u;
}

/**
 * Pairs of rows (n × dim, row-major) whose centred cosine similarity is at least the threshold, most similar first.
 * `x` may come in parts, each a whole number of rows, numbered on from part to part: the training and validation
 * images, which extraction keeps apart, are searched without a joined copy (100,000 images of 1,280 features would be
 * 0.5 GB more). Needs a TF.js backend (initTf) for the matrix products.
 */
export async function findDuplicates(
  x: Float32Array | readonly Float32Array[],
  n: number,
  dim: number,
  o: DuplicateOptions = {},
): Promise<DuplicatePair[]> {
  const parts = Array.isArray(x) ? (x as readonly Float32Array[]) : [x as Float32Array];
  const values = parts.reduce((a, p) => a + p.length, 0);
  if (values !== n * dim || parts.some((p) => p.length % dim !== 0))
    throw new InternalError(`findDuplicates: ${values} values for ${n} rows of ${dim}`);
  const threshold = o.threshold ?? DUPLICATE_THRESHOLD;
  if (n < 2) return [];
  const out = new PairList(threshold, n, o.maxPairs ?? DUPLICATE_MAX_PAIRS);
  if (o.exact ?? n <= EXACT_MAX_ROWS) await exactPairs(centredUnitRows(joined(parts, n * dim), n, dim), n, dim, out);
  else await hashedPairs(new RowParts(parts, dim), n, dim, out, o.seed ?? 7);
  return out.result();
}

/** The parts as one array: a copy only when there are several (the exact search, at most EXACT_MAX_ROWS rows). */
function joined(parts: readonly Float32Array[], length: number): Float32Array {
  if (parts.length === 1) return parts[0];
  const x = new Float32Array(length);
  let at = 0;
  for (const p of parts) {
    x.set(p, at);
    at += p.length;
  }
  return x;
}

/** Rows numbered across parts. */
class RowParts {
  /** First row of each part, then the row count. */
  readonly starts: number[] = [0];
  constructor(
    readonly parts: readonly Float32Array[],
    private readonly dim: number,
  ) {
    for (const p of parts) this.starts.push(this.starts[this.starts.length - 1] + p.length / dim);
  }
  /** Row i, in place. */
  row(i: number): Float32Array {
    let k = 0;
    while (i >= this.starts[k + 1]) k++;
    const r = i - this.starts[k];
    return this.parts[k].subarray(r * this.dim, (r + 1) * this.dim);
  }
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Rows [r0, r1) as a dim × (r1 - r0) matrix: WASM's matMul is many times slower with transposeB than without. */
function transposed(u: Float32Array, r0: number, r1: number, dim: number): Float32Array {
  const w = r1 - r0;
  const out = new Float32Array(dim * w);
  for (let r = r0; r < r1; r++) for (let d = 0; d < dim; d++) out[d * w + (r - r0)] = u[r * dim + d];
  return out;
}

/** Every pair, one BLOCK × BLOCK matrix product at a time (the upper triangle only). */
async function exactPairs(u: Float32Array, n: number, dim: number, out: PairList): Promise<void> {
  for (let i0 = 0; i0 < n; i0 += BLOCK) {
    const i1 = Math.min(n, i0 + BLOCK);
    const a = tf.tensor2d(u.subarray(i0 * dim, i1 * dim), [i1 - i0, dim]);
    try {
      for (let j0 = i0; j0 < n; j0 += BLOCK) {
        const j1 = Math.min(n, j0 + BLOCK);
        const sims = tf.tidy(() => tf.matMul(a, tf.tensor2d(transposed(u, j0, j1, dim), [dim, j1 - j0])));
        const s = (await sims.data()) as Float32Array;
        sims.dispose();
        const w = j1 - j0;
        for (let i = i0; i < i1; i++) {
          for (let j = Math.max(j0, i + 1); j < j1; j++) {
            const v = s[(i - i0) * w + (j - j0)];
            if (v >= out.bar) out.add(i, j, v);
          }
        }
        await tick();
      }
    } finally {
      a.dispose();
    }
  }
}

/**
 * Hashing without building the centred copy (n × dim floats more): the sign of (x − m)·r is the sign of x·r − m·r, and
 * a candidate's centred cosine follows from x_a·x_b, x·m and m·m.
 */
async function hashedPairs(x: RowParts, n: number, dim: number, out: PairList, seed: number): Promise<void> {
  const mean = new Float64Array(dim);
  for (const part of x.parts)
    for (let o = 0; o < part.length; o += dim) for (let d = 0; d < dim; d++) mean[d] += part[o + d];
  for (let d = 0; d < dim; d++) mean[d] /= n;
  let mm = 0;
  for (let d = 0; d < dim; d++) mm += mean[d] * mean[d];
  // x_i·m and |x_i − m| per row.
  const xm = new Float64Array(n);
  const norm = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const xi = x.row(i);
    let a = 0;
    let b = 0;
    for (let d = 0; d < dim; d++) {
      const v = xi[d];
      a += v * mean[d];
      b += v * v;
    }
    xm[i] = a;
    norm[i] = Math.sqrt(Math.max(0, b - 2 * a + mm));
  }
  const rng = mulberry32(seed);
  // Per table BITS hashing planes, then one direction that orders the rows of a large bucket.
  const H = TABLES * BITS;
  const K = H + TABLES;
  const planes = Float32Array.from({ length: dim * K }, () => gaussian(rng));
  const offsets = new Float64Array(K);
  for (let k = 0; k < K; k++) for (let d = 0; d < dim; d++) offsets[k] += mean[d] * planes[d * K + k];
  const codes = new Uint32Array(n * TABLES);
  const along = new Float32Array(n * TABLES);
  const r = tf.tensor2d(planes, [dim, K]);
  try {
    // Blocks of BLOCK rows within each part.
    const blocks = x.parts.flatMap((part, k) => {
      const rows = part.length / dim;
      return Array.from({ length: Math.ceil(rows / BLOCK) }, (_, b) => ({
        part,
        i0: x.starts[k] + b * BLOCK,
        r0: b * BLOCK,
        r1: Math.min(rows, (b + 1) * BLOCK),
      }));
    });
    for (const { part, i0: start, r0, r1 } of blocks) {
      const [i0, i1] = [start, start + r1 - r0];
      const proj = tf.tidy(() => tf.matMul(tf.tensor2d(part.subarray(r0 * dim, r1 * dim), [r1 - r0, dim]), r));
      const p = (await proj.data()) as Float32Array;
      proj.dispose();
      for (let i = i0; i < i1; i++) {
        for (let t = 0; t < TABLES; t++) {
          let code = 0;
          for (let b = 0; b < BITS; b++) {
            const k = t * BITS + b;
            if (p[(i - i0) * K + k] > offsets[k]) code |= 1 << b;
          }
          codes[i * TABLES + t] = code;
          along[i * TABLES + t] = p[(i - i0) * K + H + t];
        }
      }
      await tick();
    }
  } finally {
    r.dispose();
  }
  const buckets = 1 << BITS;
  const start = new Int32Array(buckets + 1);
  const order = new Int32Array(n);
  const compare = (i: number, j: number) => {
    const a = Math.min(i, j);
    const b = Math.max(i, j);
    if (norm[a] === 0 || norm[b] === 0 || out.has(a, b)) return;
    let dot = 0;
    const [xa, xb] = [x.row(a), x.row(b)];
    for (let d = 0; d < dim; d++) dot += xa[d] * xb[d];
    out.add(a, b, (dot - xm[a] - xm[b] + mm) / (norm[a] * norm[b]));
  };
  for (let t = 0; t < TABLES; t++) {
    // Counting sort by code: rows sharing a code sit together and are candidates of each other.
    start.fill(0);
    for (let i = 0; i < n; i++) start[codes[i * TABLES + t] + 1]++;
    for (let c = 0; c < buckets; c++) start[c + 1] += start[c];
    const fill = start.slice(0, buckets);
    for (let i = 0; i < n; i++) order[fill[codes[i * TABLES + t]]++] = i;
    for (let c = 0; c < buckets; c++) {
      const [s0, s1] = [start[c], start[c + 1]];
      if (s1 - s0 > WINDOW + 1) {
        // A crowded bucket: along its direction, each row meets only its next WINDOW rows.
        const rows = Array.from(order.subarray(s0, s1)).sort((i, j) => along[i * TABLES + t] - along[j * TABLES + t]);
        for (let p = 0; p < rows.length; p++)
          for (let q = p + 1; q < Math.min(rows.length, p + 1 + WINDOW); q++) compare(rows[p], rows[q]);
      } else for (let p = s0; p < s1; p++) for (let q = p + 1; q < s1; q++) compare(order[p], order[q]);
    }
    await tick();
  }
}
