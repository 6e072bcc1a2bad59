/**
 * Ctrl-C and SIGTERM for commands that write: the first signal aborts the running library call through its
 * AbortSignal, so it stops at its next step (a trunk batch, a training step, before the model folder is renamed into
 * place), removes its temporaries and keeps the activations already cached; a second signal exits at once.
 * Commands that write nothing keep Node's default (exit immediately): they never ask for this signal.
 */

/** The abort reason: one line for the user, and the conventional exit status (128 + signal number). */
export class Interrupted extends Error {
  readonly exitCode: number;
  constructor(readonly signalName: 'SIGINT' | 'SIGTERM') {
    super(
      `interrupted (${signalName}): nothing was written; activations computed so far are cached, so a rerun continues from there`,
    );
    this.exitCode = signalName === 'SIGINT' ? 130 : 143;
  }
}

let controller: AbortController | undefined;

/** The signal that SIGINT/SIGTERM abort; installs the handlers on first use. */
export function interruptSignal(): AbortSignal {
  if (controller) return controller.signal;
  const c = new AbortController();
  controller = c;
  for (const name of ['SIGINT', 'SIGTERM'] as const) {
    process.on(name, () => {
      if (c.signal.aborted) {
        process.stderr.write(`graft: ${name} again: exiting now\n`);
        process.exit(128 + (name === 'SIGINT' ? 2 : 15));
      }
      c.abort(new Interrupted(name));
    });
  }
  return c.signal;
}
