/** @file A small SVG line chart for loss and accuracy curves: enough axes to read, nothing more. */
import { s } from './dom.ts';

export interface Series {
  name: string;
  color: string;
  points: [number, number][];
  dashed?: boolean;
}

export interface ChartOptions {
  width?: number;
  height?: number;
  title: string;
  /** Fixed y range (accuracy: [0, 1]); otherwise from the data. */
  yRange?: [number, number];
  xLabel?: string;
  /** A vertical marker, e.g. the best epoch. */
  marker?: { x: number; label: string };
}

function niceTicks(lo: number, hi: number, n: number): number[] {
  const span = hi - lo || 1;
  const step0 = span / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((v) => v >= step0) ?? mag * 10;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}

export function lineChart(series: Series[], o: ChartOptions): SVGElement {
  const W = o.width ?? 360;
  const H = o.height ?? 200;
  const m = { l: 40, r: 10, t: 24, b: 30 };
  const all = series.flatMap((x) => x.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]).filter(Number.isFinite);
  const x0 = Math.min(1, ...xs);
  const x1 = Math.max(x0 + 1, ...xs);
  let [y0, y1] = o.yRange ?? [Math.min(0, ...ys), Math.max(...ys, 0.1)];
  if (y1 <= y0) y1 = y0 + 1;
  if (!o.yRange) y1 *= 1.05;
  const px = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const py = (y: number) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`,
    width: W,
    height: H,
    class: 'chart',
    role: 'img',
    'aria-label': o.title,
  });
  svg.append(s('text', { x: m.l, y: 14, class: 'chart-title' }, o.title));
  for (const t of niceTicks(y0, y1, 4)) {
    svg.append(s('line', { x1: m.l, x2: W - m.r, y1: py(t), y2: py(t), class: 'grid' }));
    svg.append(s('text', { x: m.l - 4, y: py(t) + 3, class: 'tick', 'text-anchor': 'end' }, String(+t.toFixed(2))));
  }
  for (const t of niceTicks(x0, x1, 6).filter((t) => Number.isInteger(t))) {
    svg.append(s('text', { x: px(t), y: H - m.b + 13, class: 'tick', 'text-anchor': 'middle' }, String(t)));
  }
  svg.append(s('text', { x: (W + m.l) / 2, y: H - 4, class: 'axis', 'text-anchor': 'middle' }, o.xLabel ?? 'epoch'));
  const markerX = o.marker && px(o.marker.x);
  if (markerX !== undefined) svg.append(s('line', { x1: markerX, x2: markerX, y1: m.t, y2: H - m.b, class: 'marker' }));
  let lx = W - m.r;
  for (const ser of [...series].reverse()) {
    const pts = ser.points.filter((p) => Number.isFinite(p[1]));
    if (pts.length) {
      const d = pts.map((p, i) => `${i ? 'L' : 'M'}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join('');
      svg.append(
        s('path', {
          d,
          fill: 'none',
          stroke: ser.color,
          'stroke-width': 2,
          'stroke-dasharray': ser.dashed ? '4 3' : undefined,
        }),
      );
      if (pts.length === 1) svg.append(s('circle', { cx: px(pts[0][0]), cy: py(pts[0][1]), r: 3, fill: ser.color }));
    }
    const label = s('text', { x: lx, y: 14, class: 'legend', 'text-anchor': 'end', fill: ser.color }, ser.name);
    svg.append(label);
    lx -= ser.name.length * 6.2 + 14;
  }
  if (o.marker && markerX !== undefined) {
    // Over the curves, with a halo (style.css), so a curve along the top does not hide it.
    const right = markerX > W - m.r - 30;
    svg.append(
      s(
        'text',
        {
          x: right ? markerX - 3 : markerX + 3,
          y: m.t + 9,
          class: 'tick marker-label',
          'text-anchor': right ? 'end' : 'start',
        },
        o.marker.label,
      ),
    );
  }
  return svg;
}
