/** Progress reported by long library calls; the CLI turns it into bars, a web page into curves. */
export interface Progress {
  /** e.g. 'extract', 'train', 'download'. */
  phase: string;
  done: number;
  total: number;
  /** Free text such as 'val_acc 0.91'. */
  detail?: string;
  /** Structured per-epoch numbers during training. */
  metrics?: Record<string, number>;
}

export type ProgressCallback = (p: Progress) => void;

/** Throws the signal's reason when aborted, so long loops stop promptly between steps. */
export function checkAbort(signal?: AbortSignal): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
}
