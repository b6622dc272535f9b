// Role: the emergency broadcasts (docs/BROADCAST.md) as the official following one sees
// them: the newest few, each with its level (written out and in its colour), its text, its
// state and how far it got on the speakers: a bar of the per-speaker delivery states from
// GET /api/v1/broadcasts (`counts`), with the numbers ("played 2 of 3"). Read-only: the
// page neither creates, approves nor cancels a broadcast.

import { h, s } from './dom.js';
import { t } from './strings.js';
import { BROADCASTS_SHOWN, BROADCAST_TEXT_CHARS } from './config.js';

/** Levels, most urgent first (the API's names). */
export const LEVELS = ['red', 'orange', 'yellow', 'blue'];

/**
 * The bar's parts, in the order a delivery goes through them, each with the API's delivery
 * states it counts (model.rs `DeliveryState`). Every state is in exactly one part.
 */
export const PARTS = [
  ['played', ['played']],
  ['playing', ['playing', 'preempted']],
  ['sent', ['delivered', 'sent']],
  ['waiting', ['queued', 'pending']],
  ['failed', ['failed', 'expired', 'interrupted']],
  ['cancelled', ['cancelled']],
];

/** Broadcast states after which nothing changes any more. */
const FINAL = ['completed', 'cancelled', 'expired'];

/** Whether the broadcast may still reach speakers (not completed, cancelled or expired). */
export function isActive(b) {
  return !FINAL.includes(b.state);
}

/** A broadcast's counts by bar part: `{ total, played, playing, sent, waiting, failed, cancelled }`. */
export function progress(b) {
  const counts = b.counts ?? {};
  const out = { total: 0 };
  for (const [part, states] of PARTS) {
    out[part] = states.reduce((n, st) => n + (Number(counts[st]) || 0), 0);
    out.total += out[part];
  }
  // `speakers` is the number targeted; the counts add up to it.
  if (Number.isFinite(b.speakers)) out.total = b.speakers;
  return out;
}

/**
 * The panel's content: nothing read yet, a note that broadcasts are off or unreadable, one
 * line when there are none, or the newest few. `state` is `{ list, off, error }`.
 */
export function broadcastsPanel(state) {
  if (state.off) return h('p', { class: 'broadcasts-none' }, t('broadcastsOff'));
  const error = state.error
    ? h('p', { class: 'broadcasts-error', role: 'alert' }, t('broadcastsError', state.error)) : null;
  if (state.list === null) return error;
  if (state.list.length === 0) return [error, h('p', { class: 'broadcasts-none' }, t('broadcastsNone'))];
  const shown = state.list.slice(0, BROADCASTS_SHOWN);
  return [
    error,
    h('ul', { class: 'broadcasts' }, shown.map(broadcastRow)),
    state.list.length > shown.length
      ? h('p', { class: 'hint' }, t('broadcastsMore', state.list.length - shown.length)) : null,
  ];
}

function broadcastRow(b) {
  const p = progress(b);
  const level = LEVELS.includes(b.level) ? b.level : 'blue';
  return h('li', { class: `broadcast level-${level} bc-${b.state}`, 'data-key': `broadcast:${b.id}`,
    'data-broadcast': b.id, 'data-level': b.level, 'data-state': b.state },
  h('div', { class: 'bc-head' },
    h('span', { class: 'level' }, t('level_' + level)),
    h('span', { class: 'bc-text', title: fullText(b) }, shortText(b)),
    h('span', { class: 'bc-state' }, t('bcState_' + b.state))),
  h('div', { class: 'bc-progress' },
    bar(p),
    h('span', { class: 'bc-played', 'data-played': p.played, 'data-total': p.total }, t('bcPlayedOf', p.played, p.total)),
    h('span', { class: 'bc-parts' }, PARTS.slice(1)
      .filter(([part]) => p[part] > 0)
      .map(([part]) => h('span', { class: `bc-part part-${part}`, 'data-part': part }, t('bcPart_' + part, p[part]))))));
}

/** The bar: one SVG rectangle per non-empty part, widths in proportion (no inline styles: CSP). */
function bar(p) {
  const parts = [];
  let x = 0;
  for (const [part] of PARTS) {
    if (!p[part] || !p.total) continue;
    const w = (100 * p[part]) / p.total;
    parts.push(s('rect', { class: `part-${part}`, x: x.toFixed(2), y: 0, width: w.toFixed(2), height: 10 }));
    x += w;
  }
  return s('svg', { class: 'bc-bar', viewBox: '0 0 100 10', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
    s('rect', { class: 'bc-track', x: 0, y: 0, width: 100, height: 10 }), parts);
}

function fullText(b) {
  return b.headline || b.content?.text || (b.content?.url ? t('bcAudio') : '');
}

function shortText(b) {
  const text = fullText(b);
  const chars = [...text];
  return chars.length > BROADCAST_TEXT_CHARS ? chars.slice(0, BROADCAST_TEXT_CHARS - 1).join('') + '…' : text;
}

/**
 * What the active broadcast `b` (with its `deliveries`, GET /api/v1/broadcasts/{id}) puts on
 * each site's map marker, by site id: `{ state, played, total }`, the state being `failed`
 * if a targeted speaker there failed (or its delivery expired or was cut short), `played`
 * when every one played it, `progress` otherwise. `devices`: GET /api/v1/devices (each
 * speaker's site). Nothing for a broadcast that is over or not read.
 */
export function broadcastMarks(b, devices) {
  const marks = new Map();
  if (!b || !isActive(b) || !Array.isArray(b.deliveries)) return marks;
  const siteOf = new Map((devices ?? []).map((d) => [d.id, d.site]));
  const failed = PARTS.find(([part]) => part === 'failed')[1];
  for (const d of b.deliveries) {
    const site = siteOf.get(d.speaker);
    if (!site) continue;
    let m = marks.get(site);
    if (!m) marks.set(site, (m = { state: 'played', played: 0, total: 0, failed: 0 }));
    m.total += 1;
    if (d.state === 'played') m.played += 1;
    if (failed.includes(d.state)) m.failed += 1;
  }
  for (const m of marks.values()) {
    m.state = m.failed > 0 ? 'failed' : m.played === m.total ? 'played' : 'progress';
  }
  return marks;
}
