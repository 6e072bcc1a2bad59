/**
 * @file Checks of option values, worded once: each throws a UsageError that names the option (as the options object
 * does; the CLI shows its flag) and the value it got. `undefined` always passes: the caller's default applies.
 */
import { opt, shown, UsageError, words } from './errors.ts';

function bad(name: string, what: string, v: unknown): UsageError {
  return new UsageError('invalid-value', words`${opt(name)} must be ${what} (got ${shown(v)})`);
}

/** An integer ≥ `min` (default 1). */
export function checkInteger(name: string, v: number | undefined, min = 1): number | undefined {
  if (v === undefined) return v;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
    throw bad(name, min === 1 ? 'a positive integer' : min === 0 ? 'a non-negative integer' : `an integer ≥ ${min}`, v);
  return v;
}

/** A finite number > 0. */
export function checkPositive(name: string, v: number | undefined): number | undefined {
  if (v === undefined) return v;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw bad(name, 'a positive number', v);
  return v;
}

/** A number in [lo, hi) (or [lo, hi] with `closed`). */
export function checkRange(
  name: string,
  v: number | undefined,
  lo: number,
  hi: number,
  closed = false,
): number | undefined {
  if (v === undefined) return v;
  const ok = typeof v === 'number' && v >= lo && (closed ? v <= hi : v < hi);
  if (!ok) throw bad(name, `a number in [${lo}, ${hi}${closed ? ']' : ')'}`, v);
  return v;
}

/** One of the listed strings. */
export function checkOneOf<T extends string>(name: string, v: T | undefined, values: readonly T[]): T | undefined {
  if (v === undefined) return v;
  if (!values.includes(v)) {
    const list = values.length > 1 ? `${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}` : values[0];
    throw bad(name, list, v);
  }
  return v;
}
