// Role: the emergency broadcasts (docs/BROADCAST.md) as the official following one sees
// them: the newest few (or, as history, all), each with its level (written out and in its
// colour), its text, its state and how far it got on the speakers: a bar of the
// per-speaker delivery states (`counts`), with the numbers ("played 2 of 3"). One
// broadcast can be opened: exactly what it plays, where, when and for how long, who
// created, approved, rejected or cancelled it (its trail), each speaker's state with the
// reason of every failure, live (js/bclive.js), its CAP 1.2 export, and a cancel button
// for those who may cancel it. Creating is js/compose.js, approving js/approvals.js.

import { h, s } from './dom.js';
import { t, lang } from './strings.js';
import { BROADCASTS_SHOWN, BROADCAST_TEXT_CHARS } from './config.js';
import { dateTime } from './format.js';
import { capUrl, may } from './bcapi.js';

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
const FINAL = ['completed', 'cancelled', 'expired', 'rejected'];
/** Delivery states that are over for a speaker (no further step is sent). */
const DELIVERY_FINAL = ['played', 'failed', 'expired', 'interrupted', 'cancelled'];
/** The order speakers are listed in: the ones that need a look first. */
const DELIVERY_ORDER = ['failed', 'interrupted', 'expired', 'pending', 'queued', 'sent', 'delivered', 'preempted',
  'playing', 'played', 'cancelled'];

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
export function broadcastsPanel(state, view = {}) {
  if (state.off) return h('p', { class: 'broadcasts-none' }, t('broadcastsOff'));
  const error = state.error
    ? h('p', { class: 'broadcasts-error', role: 'alert' }, t('broadcastsError', state.error)) : null;
  if (state.list === null) return error;
  if (state.list.length === 0) return [error, h('p', { class: 'broadcasts-none' }, t('broadcastsNone'))];
  const shown = view.history ? state.list : state.list.slice(0, BROADCASTS_SHOWN);
  const more = state.list.length - shown.length;
  return [
    error,
    h('ul', { class: 'broadcasts' }, shown.map((b) => broadcastRow(b, view.selected === b.id))),
    more > 0 ? h('p', { class: 'hint' }, t('broadcastsMore', more), ' ',
      h('button', { type: 'button', class: 'link', id: 'bc-history', 'data-action': 'bc-history' }, t('bcHistoryAll')))
      : view.history && state.list.length > BROADCASTS_SHOWN
        ? h('p', { class: 'hint' }, h('button', { type: 'button', class: 'link', id: 'bc-history',
          'data-action': 'bc-history' }, t('bcHistoryFewer'))) : null,
  ];
}

function broadcastRow(b, open) {
  const p = progress(b);
  const level = LEVELS.includes(b.level) ? b.level : 'blue';
  return h('li', { class: `broadcast level-${level} bc-${b.state}`, 'data-key': `broadcast:${b.id}`,
    'data-broadcast': b.id, 'data-level': b.level, 'data-state': b.state },
  h('div', { class: 'bc-head' },
    h('span', { class: 'level' }, t('level_' + level)),
    h('span', { class: 'bc-text', title: fullText(b) }, shortText(b)),
    h('span', { class: 'bc-state' }, t('bcState_' + b.state)),
    h('button', { type: 'button', class: 'bc-open', 'data-action': 'bc-open', 'data-id': b.id,
      'aria-expanded': open ? 'true' : 'false', 'aria-controls': 'bc-detail' }, t(open ? 'bcHide' : 'bcDetails'))),
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

// ---- one broadcast: what it plays, its trail, each speaker live ----------------------

/** How a target reads: "东村 Dongcun", "every speaker", "District 1", a group, a speaker. */
export function targetText(spelled, sites) {
  const [kind, id] = spelled.includes(':') ? spelled.split(/:(.*)/s) : [spelled === 'all' ? 'all' : 'any', spelled];
  if (kind === 'all') return t('bcTargetAll');
  if (kind === 'area') return t('district', id.replace(/^district-/, ''));
  if (kind === 'group') return t('bcTargetGroup', id);
  if (kind === 'speaker') return id;
  const site = (sites ?? []).find((x) => x.id === id || (x.village === id && x.kind === 'village'));
  return site?.name ?? id;
}

/** A time of the API (RFC 3339) as people read it, or `none` when there is none. */
function when(iso, none) {
  return iso ? dateTime(Date.parse(iso)) : none;
}

/**
 * Exactly what a broadcast plays, where, when and how often, and who asked for it: what a
 * second operator approves (the same block in the queue, the approval dialog and the
 * broadcast's page).
 */
export function whatPlays(b, sites) {
  const level = LEVELS.includes(b.level) ? b.level : 'blue';
  const row = (key, ...value) => h('div', { class: `row what-${key}` }, h('dt', null, t('bcWhat_' + key)), h('dd', null, value));
  const content = b.content?.type === 'audio'
    ? [t('bcAudio'), ' ', h('code', null, b.content.url), ' ', h('span', { class: 'hint' }, `SHA-256 ${b.content.sha256}`)]
    : h('blockquote', { class: 'bc-fulltext', lang: 'zh-CN' }, b.content?.text ?? '');
  return h('dl', { class: 'bc-what' },
    row('level', h('span', { class: `level level-${level}` }, t('level_' + level)), ' ', t('bcLevelName_' + level),
      b.needs_approval ? h('span', { class: 'hint' }, ' · ', t('bcApprovalBadge')) : null),
    b.event ? row('event', b.event) : null,
    row('text', content),
    row('targets', (b.targets ?? []).map((x) => targetText(x, sites)).join(', '), ' ',
      h('span', { class: 'bc-speaker-count' }, t('bcSpeakers', b.speakers ?? 0))),
    row('times', t('bcTimes', b.start_at ? when(b.start_at) : t('bcStartOnRelease'), when(b.expires_at, '–'),
      b.repeat ?? 1)),
    row('created', t('bcBy', b.created_by ?? '–', when(b.created_at, '–'))));
}

/** Whether the broadcast can still be cancelled. */
export function isCancellable(b) {
  return isActive(b);
}

/**
 * The opened broadcast: `b` as read in full (with `deliveries`), kept current by the live
 * stream; `live` says whether the stream is up. Empty when nothing is open.
 */
export function broadcastDetail(b, { sites, live, devices } = {}) {
  if (!b) return null;
  const level = LEVELS.includes(b.level) ? b.level : 'blue';
  const p = progress(b);
  const villageOf = new Map((devices ?? []).map((d) => [d.id, d.site]));
  const deliveries = [...(b.deliveries ?? [])].sort((x, y) => DELIVERY_ORDER.indexOf(x.state) -
    DELIVERY_ORDER.indexOf(y.state) || x.speaker.localeCompare(y.speaker));
  return h('article', { class: `bc-detail level-${level}`, 'data-key': `detail:${b.id}`, 'data-broadcast': b.id,
    'data-state': b.state, 'aria-labelledby': 'bc-detail-title' },
  h('div', { class: 'chart-head' },
    h('h3', { id: 'bc-detail-title' }, h('span', { class: 'level' }, t('level_' + level)), ' ',
      t('bcDetailTitle', b.id), ' · ', h('span', { class: 'bc-state' }, t('bcState_' + b.state))),
    h('button', { type: 'button', class: 'close', 'data-action': 'bc-open', 'data-id': b.id, 'aria-label': t('close') },
      '×')),
  whatPlays(b, sites),
  decisions(b),
  h('div', { class: 'bc-progress' },
    bar(p),
    h('span', { class: 'bc-played', 'data-played': p.played, 'data-total': p.total }, t('bcPlayedOf', p.played, p.total)),
    h('span', { class: `bc-live${live ? ' on' : ''}` }, t(live ? 'bcLive' : 'bcNotLive'))),
  h('div', { class: 'table-scroll' },
    h('table', { class: 'bc-speakers' },
      h('caption', null, t('bcSpeakersCaption')),
      h('thead', null, h('tr', null, ['speaker', 'site', 'state', 'attempts', 'since', 'reason']
        .map((k) => h('th', { scope: 'col' }, t('bcCol_' + k))))),
      h('tbody', null, deliveries.map((d) => h('tr', { class: `dst dst-${d.state}`, 'data-key': d.speaker,
        'data-speaker': d.speaker, 'data-state': d.state },
      h('th', { scope: 'row' }, d.speaker),
      h('td', { class: 'bc-col-site' }, targetText(`village:${villageOf.get(d.speaker) ?? ''}`, sites)),
      h('td', { class: 'bc-dstate' }, t('dState_' + d.state)),
      h('td', { class: 'num' }, String(d.attempts ?? 0)),
      h('td', { class: 'since' }, when(d.updated_at, '')),
      h('td', { class: 'reason' }, d.reason ? reasonText(d.reason) : '')))))),
  (b.refusals ?? []).length ? h('div', { class: 'bc-refusals' },
    h('h4', null, t('bcRefusals', b.refusals.length)),
    h('ul', null, b.refusals.map((r) => h('li', null,
      `${when(typeof r.at === 'number' ? new Date(r.at).toISOString() : r.at, '')} · ${r.speaker ?? r.gateway} · `,
      reasonText(r.reason))))) : null,
  h('div', { class: 'bc-trail-box' },
    h('h4', null, t('bcTrail')),
    h('ol', { class: 'bc-trail' }, (b.trail ?? []).map((e) => h('li', { 'data-action-name': e.action },
      h('span', { class: 'since' }, when(e.at, '')), ' ', t('bcTrail_' + e.action, e.by ?? '', e.reason ?? ''))))),
  h('div', { class: 'bc-links' },
    h('a', { href: capUrl(b.id), download: `broadcast-${b.id}.cap.xml`, class: 'bc-cap-link' }, t('bcCapExport')),
    isCancellable(b) && may('cancel', b.tenant)
      ? h('button', { type: 'button', class: 'bc-cancel danger', 'data-action': 'bc-cancel', 'data-id': b.id },
        t('bcCancel')) : null));
}

/** Who approved, rejected or cancelled it, in words. */
function decisions(b) {
  const lines = [];
  if (b.approved_by) lines.push(t('bcApprovedBy', b.approved_by, when(b.approved_at, '')));
  if (b.rejected_by) lines.push(t('bcRejectedBy', b.rejected_by, when(b.rejected_at, ''), b.rejection_reason ?? ''));
  if (b.cancelled_by) lines.push(t('bcCancelledBy', b.cancelled_by, when(b.cancelled_at, '')));
  if (b.state === 'pending_approval') lines.push(t('bcWaitsForSecond'));
  return lines.length ? h('ul', { class: 'bc-decisions' }, lines.map((l) => h('li', null, l))) : null;
}

/**
 * A delivery's or refusal's reason in the page's language: the code it starts with
 * (`not_ready (speaker)`, `expired`, `bad_signature`, ...) in words, the original kept
 * after it, so nothing the server said is lost.
 */
export function reasonText(reason) {
  const code = String(reason).split(/[\s:(]/)[0];
  const key = 'bcReason_' + code;
  const words = t(key);
  // Unknown codes (t() answers the key's own name) are shown as the server wrote them.
  if (words === key.replace(/^[a-z]+_/, '')) return reason;
  return lang() === 'zh' || words !== code ? `${words} (${reason})` : reason;
}

/** Whether a delivery is over. */
export function deliveryDone(d) {
  return DELIVERY_FINAL.includes(d.state);
}
