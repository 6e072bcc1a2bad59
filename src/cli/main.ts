/**
 * The `graft` command line: a thin layer over the library in src/index.ts. Each command lives in its own folder.
 */
import { Command, CommanderError } from 'commander';
import { cacheCommand } from './cache/index.ts';
import { demoCommand } from './demo/index.ts';
import { evaluateCommand } from './evaluate/index.ts';
import { exportCommand } from './export/index.ts';
import { inspectCommand } from './inspect/index.ts';
import { modelsCommand } from './models/index.ts';
import { printJson, reportError } from './output.ts';
import { predictCommand } from './predict/index.ts';
import { reportCommand } from './report/index.ts';
import { serveCommand } from './serve/index.ts';
import { trainCommand } from './train/index.ts';

const program = new Command('graft')
  .description('Transfer learning for images: retrain a pretrained network on your own labelled folders.')
  .option('--verbose', 'print stack traces on errors')
  .exitOverride()
  .showHelpAfterError(false);

for (const cmd of [
  trainCommand(),
  predictCommand(),
  evaluateCommand(),
  inspectCommand(),
  exportCommand(),
  modelsCommand(),
  cacheCommand(),
  demoCommand(),
  serveCommand(),
  reportCommand(),
])
  program.addCommand(cmd.exitOverride());

const verbose = process.argv.includes('--verbose');
const json = process.argv.includes('--json');
try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // commander has already printed its own one-line message (or help/version, which exit 0).
    if (json && e.exitCode !== 0)
      printJson({ error: { kind: 'usage', code: e.code, message: e.message.replace(/^error: /, '') } });
    process.exit(e.exitCode);
  }
  reportError(e, { verbose, json });
}
