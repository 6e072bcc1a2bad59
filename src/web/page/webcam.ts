/**
 * @file Webcam capture as Teachable Machine does it: a live square preview and a button that records a burst of
 * frames for as long as it is held. Frames are square JPEGs of the centre of the picture, which is what the preview
 * shows.
 */
import { h } from './dom.ts';

export async function openCamera(): Promise<MediaStream> {
  if (!navigator.mediaDevices?.getUserMedia) throw new Error('this browser gives no access to a camera');
  return navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 640 }, height: { ideal: 480 } },
    audio: false,
  });
}

export function stopCamera(stream: MediaStream | undefined): void {
  for (const t of stream?.getTracks() ?? []) t.stop();
}

/** The centred square of the current frame, scaled to `size` pixels. */
export function grabSquare(video: HTMLVideoElement, size: number): HTMLCanvasElement {
  const c = document.createElement('canvas');
  c.width = size;
  c.height = size;
  const side = Math.min(video.videoWidth, video.videoHeight);
  const sx = (video.videoWidth - side) / 2;
  const sy = (video.videoHeight - side) / 2;
  c.getContext('2d')!.drawImage(video, sx, sy, side, side, 0, 0, size, size);
  return c;
}

export function toJpeg(c: HTMLCanvasElement, name: string): Promise<File> {
  return new Promise((resolve, reject) =>
    c.toBlob(
      (b) => (b ? resolve(new File([b], name, { type: 'image/jpeg' })) : reject(new Error('no frame'))),
      'image/jpeg',
      0.9,
    ),
  );
}

/** Frames per second recorded while the button is held. */
const FPS = 8;

/**
 * A modal recorder for one class. `save` receives each burst when the button is released; the dialog stays open for
 * more bursts until closed.
 */
export async function recorder(cls: string, save: (files: File[]) => Promise<void>): Promise<void> {
  let stream: MediaStream;
  try {
    stream = await openCamera();
  } catch (e) {
    throw new Error(`camera: ${(e as Error).message}`);
  }
  const video = h('video', { autoplay: true, muted: true, playsinline: true, class: 'cam' });
  video.srcObject = stream;
  await video.play().catch(() => {});
  const count = h('span', { class: 'muted' }, 'Hold the button to record frames.');
  let frames: File[] = [];
  let timer: number | undefined;
  let saved = 0;
  const stop = async () => {
    if (timer === undefined) return;
    clearInterval(timer);
    timer = undefined;
    btn.classList.remove('recording');
    const burst = frames;
    frames = [];
    if (burst.length) {
      count.textContent = `Saving ${burst.length} frames…`;
      await save(burst);
      saved += burst.length;
      count.textContent = `${saved} frames added to ${cls}. Hold again for more.`;
    }
  };
  const start = (e: Event) => {
    e.preventDefault();
    if (timer !== undefined) return;
    btn.classList.add('recording');
    const stamp = Date.now();
    let n = 0;
    const grab = async () => {
      if (video.videoWidth === 0) return;
      frames.push(await toJpeg(grabSquare(video, 256), `webcam-${stamp}-${String(++n).padStart(3, '0')}.jpg`));
      count.textContent = `Recording… ${frames.length} frames`;
    };
    void grab();
    timer = window.setInterval(grab, 1000 / FPS);
  };
  const btn = h(
    'button',
    {
      class: 'primary hold',
      onPointerdown: start,
      onPointerup: stop,
      onPointerleave: stop,
      onKeydown: (e: KeyboardEvent) => e.key === ' ' && start(e),
      onKeyup: (e: KeyboardEvent) => e.key === ' ' && stop(),
    },
    'Hold to record',
  );
  const dlg = h(
    'dialog',
    { class: 'webcam' },
    h('h3', null, `Webcam → ${cls}`),
    video,
    h('div', { class: 'row' }, btn, count),
    h('div', { class: 'row end' }, h('button', { class: 'secondary', onClick: () => close() }, 'Done')),
  );
  const close = async () => {
    await stop();
    stopCamera(stream);
    dlg.close();
    dlg.remove();
  };
  dlg.addEventListener('cancel', (e) => {
    e.preventDefault();
    void close();
  });
  document.body.append(dlg);
  dlg.showModal();
}
