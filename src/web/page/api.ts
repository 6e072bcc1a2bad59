/** @file Talking to the server: the per-server token from the page's meta tag goes with every request. */

export const token = document.querySelector<HTMLMetaElement>('meta[name="graft-token"]')?.content ?? '';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function api<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method, headers: { 'X-Graft-Token': token } };
  if (body instanceof FormData || body instanceof Blob) init.body = body;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    (init.headers as Record<string, string>)['Content-Type'] = 'application/json';
  }
  const r = await fetch(path, init);
  const text = await r.text();
  let data: unknown;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { error: text };
  }
  if (!r.ok) throw new ApiError(r.status, (data as { error?: string }).error ?? `${r.status} ${r.statusText}`);
  return data as T;
}

/** A GET URL for <img>, <a download> and EventSource, which cannot send headers: the token rides in `t`. */
export function url(path: string, params: Record<string, string> = {}): string {
  const q = new URLSearchParams({ ...params, t: token });
  return `${path}?${q}`;
}

export interface Limits {
  fileBytes: number;
  filesPerRequest: number;
  requestBytes: number;
}

/**
 * Uploads files to a class in as few requests as the limits allow. Returns what was added and what was refused
 * (with the server's reason); files over the size limit are refused here without sending them.
 */
export async function uploadFiles(
  cls: string,
  files: File[],
  limits: Limits,
  onProgress?: (done: number, total: number) => void,
): Promise<{ added: string[]; refused: { name: string; reason: string }[] }> {
  const added: string[] = [];
  const refused: { name: string; reason: string }[] = [];
  let batch: File[] = [];
  let bytes = 0;
  let done = 0;
  const send = async () => {
    if (!batch.length) return;
    const fd = new FormData();
    for (const f of batch) fd.append('files', f, f.name);
    try {
      const r = await api<{ added: string[]; refused: { name: string; reason: string }[] }>(
        'POST',
        `/api/images?class=${encodeURIComponent(cls)}`,
        fd,
      );
      added.push(...r.added);
      refused.push(...r.refused);
    } catch (e) {
      const body = e as ApiError;
      refused.push(...batch.map((f) => ({ name: f.name, reason: body.message })));
    }
    done += batch.length;
    onProgress?.(done, files.length);
    batch = [];
    bytes = 0;
  };
  // Leave room for the multipart framing in each request.
  const budget = limits.requestBytes - 1024 * 1024;
  for (const f of files) {
    if (f.size > limits.fileBytes) {
      refused.push({ name: f.name, reason: `larger than ${limits.fileBytes / 1024 / 1024} MiB` });
      done++;
      continue;
    }
    if (batch.length >= Math.min(limits.filesPerRequest, 50) || bytes + f.size > budget) await send();
    batch.push(f);
    bytes += f.size;
  }
  await send();
  return { added, refused };
}
