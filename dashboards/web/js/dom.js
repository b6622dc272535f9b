// Role: a tiny DOM toolkit. h() and s() build HTML and SVG elements; text and attribute
// values are set through textContent and setAttribute, never parsed as HTML, so whatever
// the API sends (device ids come from outside) is inserted escaped. morph() updates a
// live subtree in place to match a freshly built one, so a refresh neither flickers nor
// loses focus, scroll position or an opened <details>.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An HTML element: h('p', { class: 'x' }, 'text', child, [more children]). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, like h(). */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(el, attrs, children) {
  if (attrs) {
    for (const name of Object.keys(attrs)) {
      const value = attrs[name];
      if (value === null || value === undefined || value === false) continue;
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces the children of `live` with `children`, morphing what is already there. */
export function morphChildrenOf(live, ...children) {
  const fresh = live.cloneNode(false);
  append(fresh, children);
  morphChildren(live, fresh);
}

/**
 * Makes `live` look like `fresh` with as few DOM changes as possible and returns the node
 * that is now in the document. Children with a `data-key` are matched by key, the others
 * by position and tag.
 */
export function morph(live, fresh) {
  if (live.nodeType !== fresh.nodeType || live.nodeName !== fresh.nodeName || keyOf(live) !== keyOf(fresh)) {
    live.replaceWith(fresh);
    return fresh;
  }
  if (live.nodeType !== Node.ELEMENT_NODE) {
    if (live.nodeValue !== fresh.nodeValue) live.nodeValue = fresh.nodeValue;
    return live;
  }
  syncAttributes(live, fresh);
  morphChildren(live, fresh);
  return live;
}

function keyOf(node) {
  return node.nodeType === Node.ELEMENT_NODE ? node.getAttribute('data-key') : null;
}

function syncAttributes(live, fresh) {
  const attrs = fresh.attributes;
  for (let i = 0; i < attrs.length; i += 1) {
    const { name, value } = attrs[i];
    if (live.getAttribute(name) !== value) live.setAttribute(name, value);
  }
  // Every attribute of `fresh` is now on `live`: the same count means nothing extra.
  if (live.attributes.length === attrs.length) return;
  for (const { name } of Array.from(live.attributes)) {
    // An opened <details> stays open: that is the user's choice, not the data's.
    if (name === 'open' && live.nodeName === 'DETAILS') continue;
    if (!fresh.hasAttribute(name)) live.removeAttribute(name);
  }
}

function morphChildren(live, fresh) {
  const keyed = new Map();
  for (const child of live.childNodes) {
    const key = keyOf(child);
    if (key !== null) keyed.set(key, child);
  }
  let cursor = live.firstChild;
  for (const next of Array.from(fresh.childNodes)) {
    const key = keyOf(next);
    let match = null;
    if (key !== null) {
      match = keyed.get(key) ?? null;
      keyed.delete(key);
    } else if (cursor && keyOf(cursor) === null && cursor.nodeName === next.nodeName) {
      match = cursor;
    }
    if (!match) {
      live.insertBefore(next, cursor);
      continue;
    }
    if (match === cursor) cursor = cursor.nextSibling;
    else live.insertBefore(match, cursor);
    morph(match, next);
  }
  while (cursor) {
    const after = cursor.nextSibling;
    live.removeChild(cursor);
    cursor = after;
  }
}
