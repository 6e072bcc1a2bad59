/**
 * @file graft's typed errors, in one low folder so that every layer throws the same kinds.
 *
 * The library words its errors for library callers: options by their names in the options objects (`valSplit`), files
 * by path. A surface renders them in its own words: the CLI names flags (`--val-split`) through `GraftError.render`,
 * a web page could name form fields. Every GraftError except InternalError is a problem with what the caller gave
 * (an option, a file, a base, a download); InternalError, and anything that is not a GraftError at all (a TypeError, a
 * TF.js assertion), is a bug in graft.
 *
 * Messages are written with the `words` tag, options marked with `opt()`:
 *   new UsageError('out-of-range', words`${opt('valSplit')} must be in [0, 1) (got ${v})`)
 * so a surface can name each option its own way while paths and values stay literal text.
 *
 * Each error has a stable `code` (kebab-case, e.g. 'out-of-range', 'not-a-model') for callers that branch on the reason,
 * and one-line messages: no stack trace or multi-line third-party text is part of a message.
 */

export type ErrorKind = 'usage' | 'data' | 'base' | 'download' | 'internal';

/** An option named in a message; surfaces show it their own way (the CLI as a flag). */
export class Option {
  constructor(readonly name: string) {}
}

export function opt(name: string): Option {
  return new Option(name);
}

/** Message text: literal strings and named options. */
export type Words = readonly (string | Option)[];

/** Tag for messages: `${opt('valSplit')}` stays an option, every other value becomes literal text. */
export function words(strings: TemplateStringsArray, ...values: unknown[]): Words {
  const out: (string | Option)[] = [];
  strings.forEach((s, i) => {
    if (s) out.push(s);
    if (i < values.length) {
      const v = values[i];
      if (v instanceof Option) out.push(v);
      else if (Array.isArray(v) && v.every((p) => typeof p === 'string' || p instanceof Option)) out.push(...v);
      else out.push(String(v));
    }
  });
  return out;
}

/** The text with each option named by `name` (identity: as in the options object). */
export function renderWords(w: Words | string, name: (option: string) => string = (o) => o): string {
  if (typeof w === 'string') return w;
  return w.map((p) => (typeof p === 'string' ? p : name(p.name))).join('');
}

function optionsIn(w: Words | string): string[] {
  if (typeof w === 'string') return [];
  return [...new Set(w.filter((p): p is Option => p instanceof Option).map((p) => p.name))];
}

/** The fields every GraftError serialises to (the CLI's `--json` error object). */
export interface ErrorJson {
  /** 'interrupted': the CLI's report of a run stopped by SIGINT/SIGTERM. */
  kind: ErrorKind | 'interrupted';
  code: string;
  message: string;
  option?: string;
  file?: string;
  source?: string;
  url?: string;
}

export abstract class GraftError extends Error {
  abstract readonly kind: ErrorKind;
  /** Stable, machine-readable reason, e.g. 'out-of-range', 'not-a-model', 'truncated'. */
  readonly code: string;
  /** The message as words, so a surface can name options its own way (see render). */
  readonly words: Words | string;
  constructor(w: Words | string, code: string, cause?: unknown) {
    super(oneLine(renderWords(w)), cause === undefined ? undefined : { cause });
    this.words = w;
    this.code = code;
  }
  /** The options the message names, in order of appearance. */
  get options(): string[] {
    return optionsIn(this.words);
  }
  /** The one-line message with every option named by `name`, e.g. `--val-split` for `valSplit`. */
  render(name: (option: string) => string): string {
    return oneLine(renderWords(this.words, name));
  }
  toJSON(): ErrorJson {
    return { kind: this.kind, code: this.code, message: this.message };
  }
}

/** An option has a bad value, or options do not go together. The first option named is the one at fault. */
export class UsageError extends GraftError {
  readonly kind = 'usage';
  constructor(code: string, w: Words | string, cause?: unknown) {
    super(w, code, cause);
    this.name = 'UsageError';
  }
  get option(): string | undefined {
    return this.options[0];
  }
  toJSON(): ErrorJson {
    return { ...super.toJSON(), ...(this.option ? { option: this.option } : {}) };
  }
}

/** A data set, image, CSV or model folder the caller pointed at cannot be used. The message starts with the path. */
export class DataError extends GraftError {
  readonly kind = 'data';
  readonly file: string;
  /** The message without the path: short and stable. */
  readonly reason: string;
  constructor(code: string, file: string, reason: Words | string, cause?: unknown) {
    super([`${file}: `, ...(typeof reason === 'string' ? [reason] : reason)], code, cause);
    this.name = 'DataError';
    this.file = file;
    this.reason = oneLine(renderWords(reason));
  }
  toJSON(): ErrorJson {
    return { ...super.toJSON(), file: this.file };
  }
}

/** The pretrained base cannot be loaded or used as asked (missing file, not a model, no such cut). */
export class BaseError extends GraftError {
  readonly kind = 'base';
  /** What the base was given as: a name, path or URL. */
  readonly source: string;
  readonly reason: string;
  constructor(code: string, source: string, reason: Words | string, cause?: unknown) {
    super([`${source}: `, ...(typeof reason === 'string' ? [reason] : reason)], code, cause);
    this.name = 'BaseError';
    this.source = source;
    this.reason = oneLine(renderWords(reason));
  }
  toJSON(): ErrorJson {
    return { ...super.toJSON(), source: this.source };
  }
}

/** A model download failed (network, HTTP status, size or checksum), or the cache is needed and empty offline. */
export class DownloadError extends GraftError {
  readonly kind = 'download';
  readonly url: string;
  constructor(code: string, url: string, w: Words | string, cause?: unknown) {
    super(w, code, cause);
    this.name = 'DownloadError';
    this.url = url;
  }
  toJSON(): ErrorJson {
    return { ...super.toJSON(), url: this.url };
  }
}

/** A bug in graft: a state its own code should never reach. Users are asked to report it. */
export class InternalError extends GraftError {
  readonly kind = 'internal';
  constructor(message: string, cause?: unknown) {
    super(message, 'internal', cause);
    this.name = 'InternalError';
  }
}

/** Something worth telling the caller that does not stop the job (e.g. the validation data is the training data). */
export interface Warning {
  /** Stable, machine-readable, e.g. 'val-is-train'. */
  code: string;
  /** One line, options as written in the options object. */
  message: string;
  /** The message as words, for surfaces that name options their own way. */
  words: Words;
  file?: string;
}

export function warning(code: string, w: Words, file?: string): Warning {
  return { code, message: renderWords(w), words: w, ...(file ? { file } : {}) };
}

/** True for errors the caller can fix (usage, data, base, download); false for bugs and unknown errors. */
export function isUserError(e: unknown): e is GraftError {
  return e instanceof GraftError && e.kind !== 'internal';
}

/** The first line, so a third-party message that carries a dump or a stack never makes a message multi-line. */
export function oneLine(text: string): string {
  const line = text.split(/\r?\n/, 1)[0];
  return line.length < text.length ? `${line.trimEnd()} …` : line;
}

/** A code point that must not reach a terminal raw: C0 and C1 controls (tab and line ends aside), DEL, U+FFFD. */
function unprintable(cp: number): boolean {
  return (cp < 0x20 && cp !== 0x09 && cp !== 0x0a && cp !== 0x0d) || (cp >= 0x7f && cp < 0xa0) || cp === 0xfffd;
}

/** True when `text` holds characters that only binary data decoded as text has (see `unprintable`). */
export function hasUnprintable(text: string): boolean {
  for (const c of text) if (unprintable(c.codePointAt(0)!)) return true;
  return false;
}

/**
 * A value as it is safe to show in a one-line message: strings in quotes with control characters and other
 * unprintable code points escaped, cut to `max` characters; anything else through String().
 */
export function shown(value: unknown, max = 60): string {
  if (typeof value !== 'string') return String(value);
  const chars = [...value].map((c) => {
    const cp = c.codePointAt(0)!;
    if (cp < 0x20 || unprintable(cp))
      return cp > 0xff ? `\\u{${cp.toString(16)}}` : `\\x${cp.toString(16).padStart(2, '0')}`;
    return c;
  });
  return `'${chars.length > max ? `${chars.slice(0, max).join('')}…` : chars.join('')}'`;
}

/** The errno code of a Node file-system error (ENOENT, EACCES, …), or the first line of its message. */
export function errnoOf(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  return typeof code === 'string' ? code : oneLine(e instanceof Error ? e.message : String(e));
}
