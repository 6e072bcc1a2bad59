import { spawn } from 'node:child_process';
import { Command } from 'commander';
import { UsageError } from '../../util/errors.ts';
import { startServer } from '../../web/server.ts';
import type { GlobalOptions } from '../output.ts';

interface ServeFlags extends GlobalOptions {
  port?: string;
  host?: string;
  open?: boolean;
}

/** The default port; `--port 0` picks any free one. */
export const DEFAULT_PORT = 7878;

export function serveCommand(): Command {
  return new Command('serve')
    .description('a local web page to collect images, train, look at the result, try the model and download it')
    .argument(
      '[project]',
      'project folder: one sub-folder per class, plus graft-project.json (created if missing)',
      '.',
    )
    .option('--port <n>', `port to listen on (default ${DEFAULT_PORT}; 0: any free port)`)
    .option('--host <address>', 'address to listen on (default 127.0.0.1, this machine only)')
    .option('--open', 'open the page in the default browser')
    .action(async (dir: string, f: ServeFlags) => {
      const port = f.port === undefined ? DEFAULT_PORT : Number(f.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535)
        throw new UsageError('invalid-value', `--port must be a whole number from 0 to 65535 (got '${f.port}')`);
      const host = f.host ?? '127.0.0.1';
      if (!['127.0.0.1', 'localhost', '::1'].includes(host))
        process.stderr.write(
          `warning: --host ${host}: the page and its API are reachable from other machines on that network; anyone who can open the page can change the project and read its images\n`,
        );
      let server: Awaited<ReturnType<typeof startServer>>;
      try {
        server = await startServer({ dir, host, port });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE')
          throw new UsageError('port-in-use', `port ${port} is in use; choose another with --port (0: any free port)`);
        throw e;
      }
      process.stdout.write(`graft serve: project ${server.project.dir}\n${server.url}\n`);
      if (f.open) openBrowser(server.url);
      const stop = async () => {
        await server.close();
        process.exit(0);
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}

function openBrowser(url: string): void {
  const cmd = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'cmd' : 'xdg-open';
  const args = process.platform === 'win32' ? ['/c', 'start', '', url] : [url];
  spawn(cmd, args, { stdio: 'ignore', detached: true })
    .on('error', () => process.stderr.write(`could not open a browser; open ${url}\n`))
    .unref();
}
