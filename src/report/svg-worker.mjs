/**
 * @file Renders Vega-Lite specs to SVG on a worker thread. Plain JavaScript started without tsx: vega and vega-lite are
 * about a hundred ES modules, and loading them through tsx's module hooks costs several times what plain Node does.
 * Started when training begins (see charts.ts), it loads them on the other core while the main thread trains.
 */
import { parentPort } from 'node:worker_threads';

const modules = Promise.all([import('vega'), import('vega-lite')]);

parentPort.on('message', async ({ id, spec }) => {
  try {
    const [vega, vl] = await modules;
    const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
    try {
      parentPort.postMessage({ id, svg: await view.toSVG() });
    } finally {
      view.finalize();
    }
  } catch (e) {
    parentPort.postMessage({ id, error: e instanceof Error ? e.message : String(e) });
  }
});
