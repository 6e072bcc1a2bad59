/** @file A few DOM helpers: element builders, a confirm dialog, and toasts with an optional Undo button. */

export type Child = Node | string | number | null | undefined | false | Child[];
type Attrs = Record<string, unknown> | null | undefined;

function append(el: Element, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

function setAttrs(el: Element, attrs: Attrs): void {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function')
      el.addEventListener(k.slice(2).toLowerCase(), v as EventListener);
    else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'selected')
      (el as never as Record<string, unknown>)[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

/** An HTML element: h('div', { class: 'x', onClick: fn }, 'text', child). */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element. */
export function s(tag: string, attrs?: Attrs, ...children: Child[]): SVGElement {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Asks before something happens; resolves true on OK. */
export function confirmDialog(message: string, ok = 'OK'): Promise<boolean> {
  return new Promise((resolve) => {
    const dlg = h(
      'dialog',
      { class: 'confirm' },
      h('p', null, message),
      h(
        'div',
        { class: 'row end' },
        h('button', { class: 'secondary', onClick: () => close(false) }, 'Cancel'),
        h('button', { class: 'primary', 'data-confirm': 'ok', onClick: () => close(true) }, ok),
      ),
    );
    const close = (v: boolean) => {
      dlg.close();
      dlg.remove();
      resolve(v);
    };
    dlg.addEventListener('cancel', () => close(false));
    document.body.append(dlg);
    dlg.showModal();
  });
}

let toasts: HTMLElement | undefined;

/** A message at the bottom of the page; with `undo`, an Undo button for a while. */
export function toast(message: string, o: { error?: boolean; undo?: () => Promise<void> } = {}): void {
  toasts ??= document.body.appendChild(h('div', { class: 'toasts', role: 'status' }));
  const t = h('div', { class: `toast${o.error ? ' error' : ''}` }, h('span', null, message));
  if (o.undo) {
    const undo = o.undo;
    t.append(
      h(
        'button',
        {
          class: 'link',
          onClick: async () => {
            t.remove();
            await undo();
          },
        },
        'Undo',
      ),
    );
  }
  toasts.append(t);
  setTimeout(() => t.remove(), o.undo ? 15000 : o.error ? 8000 : 4000);
}

export function fmtPct(x: number | null | undefined, digits = 1): string {
  return x === null || x === undefined ? '–' : `${(x * 100).toFixed(digits)}%`;
}

/** Replaces an element's children (null, false and undefined are skipped). */
export function fill(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}
