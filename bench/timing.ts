/** Timing helpers shared by the benchmark sections. */
import type { TrunkRunner } from '../src/engines/trunk.ts';

/** Median ms per image of `reps` trunk calls on one fixed batch of pseudo-random pixels, after one warm-up call. */
export async function timeRunner(runner: TrunkRunner, size: number, batch: number, reps: number): Promise<number> {
  const px = new Float32Array(batch * size * size * 3);
  let s = 1;
  for (let i = 0; i < px.length; i++) {
    s = (s * 16807) % 2147483647;
    px[i] = (s / 2147483647) * 255;
  }
  await runner.run(px, batch); // warm-up: first calls compile kernels / plan memory
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    await runner.run(px, batch);
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] / batch;
}
