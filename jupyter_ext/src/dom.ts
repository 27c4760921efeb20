/**
 * A few DOM helpers. The panel updates nodes in place (text only where it changed, rows
 * keyed by id) so that nothing moves or flickers while it polls.
 */

type Attrs = Record<string, string | number | boolean | null | undefined>;

/** A new element with attributes (false/null/undefined ones left out) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) {
      continue;
    }
    if (k === 'class') {
      node.className = String(v);
    } else {
      node.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children) {
    node.append(c);
  }
  return node;
}

/** Sets a node's text only when it differs (no needless reflow or selection loss). */
export function setText(node: Element, text: string): void {
  if (node.textContent !== text) {
    node.textContent = text;
  }
}

/** Sets or removes an attribute only when it changes. */
export function setAttr(node: Element, name: string, value: string | null): void {
  if (value === null) {
    if (node.hasAttribute(name)) {
      node.removeAttribute(name);
    }
  } else if (node.getAttribute(name) !== value) {
    node.setAttribute(name, value);
  }
}

/**
 * Puts `nodes` into `parent` in this order, moving only those out of place and removing
 * the children not listed (keyed reconciliation without a framework).
 */
export function placeChildren(parent: Element, nodes: Element[]): void {
  const keep = new Set<Node>(nodes);
  for (const child of Array.from(parent.children)) {
    if (!keep.has(child)) {
      child.remove();
    }
  }
  let cursor: Element | null = parent.firstElementChild;
  for (const node of nodes) {
    if (node === cursor) {
      cursor = cursor.nextElementSibling;
    } else {
      parent.insertBefore(node, cursor);
    }
  }
}

/**
 * A button that asks for a second click before a destructive action ("Delete" →
 * "Delete? click again"), so a stray click or key press never deletes an endpoint or a Pod.
 */
export function confirmButton(
  label: string,
  action: string,
  title: string,
  run: () => Promise<void>
): HTMLButtonElement {
  const button = h('button', { class: 'rp-button rp-danger', 'data-action': action, title, type: 'button' }, label);
  let armed: number | null = null;
  const disarm = () => {
    if (armed !== null) {
      window.clearTimeout(armed);
      armed = null;
    }
    button.classList.remove('rp-armed');
    setText(button, label);
  };
  button.addEventListener('click', async event => {
    event.stopPropagation();
    if (button.disabled) {
      return;
    }
    if (armed === null) {
      button.classList.add('rp-armed');
      setText(button, `${label}?`);
      button.title = `click again to ${label.toLowerCase()}`;
      armed = window.setTimeout(disarm, 4000);
      return;
    }
    disarm();
    button.title = title;
    button.disabled = true;
    try {
      await run();
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
