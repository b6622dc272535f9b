// Role: the county map, drawn as SVG from the sites' coordinates alone (county servers run
// offline: no tiles). An equirectangular projection fitted to the sites' bounding box,
// a marker per site coloured by its state and shaped by its kind, names in Chinese and
// pinyin, supply lines from each waterworks to the villages of its district, a scale bar
// in km and a north arrow. A marker is a button that brings its site's card into view.
// A site with a firing alert gets a ring in the alert's severity colour and a badge with
// the count (dashed when every alert there is acknowledged), so where it is shows at a glance.
// A county of more villages than can be told apart (MAP_LABELS_UP_TO) draws each township as
// one group marker: a ring of its villages' states, the number of villages, and badges for
// what must never hide inside a group (firing alerts, sites offline or needing attention, a
// broadcast that failed on a speaker there). Opening a township (a click, or Enter) draws
// its villages alone, named, fitted to the map; the waterworks and farms, few, are always
// drawn one by one. A hook (setPickHandler) lets another part of the page take marker
// clicks for itself, e.g. picking the targets of a broadcast on the map.

import { h, s } from './dom.js';
import { t } from './strings.js';
import { MAP_LABELS_UP_TO } from './config.js';
import { issueText } from './format.js';

/** Largest drawing size; the map is drawn at the width it gets, so text keeps its size. */
const MAX_W = 640;
const MIN_W = 280;
const MARGIN = { top: 36, right: 64, bottom: 56, left: 64 };
const KM_PER_DEG_LAT = 111.32;
/** Smallest span drawn, so one site or sites on top of each other still get a map. */
const MIN_SPAN_KM = 2;

/** The drawing size for a container `width` px wide. */
export function mapSize(width) {
  const W = Math.round(Math.max(MIN_W, Math.min(MAX_W, width || MAX_W)));
  // A phone's map is narrow: taller, so a township's villages have room.
  return { W, H: Math.round(W * (W < 480 ? 0.95 : 0.72)) };
}

/** A projection of the sites into W x H px: { x(lon), y(lat), kmPerPx }. */
export function fit(sites, W, H) {
  const placed = sites.filter((p) => p.hasCoords);
  const lats = placed.map((p) => p.lat);
  const lons = placed.map((p) => p.lon);
  const lat0 = placed.length ? (Math.min(...lats) + Math.max(...lats)) / 2 : 0;
  const lon0 = placed.length ? (Math.min(...lons) + Math.max(...lons)) / 2 : 0;
  const kx = Math.cos((lat0 * Math.PI) / 180);
  // Spans in km, east-west and north-south.
  const span = (values) => (placed.length ? (Math.max(...values) - Math.min(...values)) * KM_PER_DEG_LAT : 0);
  const spanX = Math.max(MIN_SPAN_KM, span(lons) * kx);
  const spanY = Math.max(MIN_SPAN_KM, span(lats));
  const innerW = W - MARGIN.left - MARGIN.right;
  const innerH = H - MARGIN.top - MARGIN.bottom;
  const pxPerKm = Math.min(innerW / spanX, innerH / spanY);
  const cx = MARGIN.left + innerW / 2;
  const cy = MARGIN.top + innerH / 2;
  return {
    x: (lon) => cx + (lon - lon0) * kx * KM_PER_DEG_LAT * pxPerKm,
    y: (lat) => cy - (lat - lat0) * KM_PER_DEG_LAT * pxPerKm,
    kmPerPx: 1 / pxPerKm,
  };
}

/** The largest of 1, 2, 5 x 10^n km that fits in `maxKm`. */
export function niceKm(maxKm) {
  const p = 10 ** Math.floor(Math.log10(maxKm));
  return [5, 2, 1].map((m) => m * p).find((v) => v <= maxKm) ?? p;
}

/** Who takes marker clicks instead of the map, if anyone (see setPickHandler). */
let pickHandler = null;

/**
 * Lets another part of the page take clicks on markers: `fn({ site, township, element })`
 * is called for a click on a site's or a township's marker and returns true when it took
 * the click (the map then neither opens the site nor the township). `null` gives them back.
 */
export function setPickHandler(fn) {
  pickHandler = typeof fn === 'function' ? fn : null;
}

/** Offers a marker click to the pick handler; true if it took it. */
export function offerPick(el) {
  if (!pickHandler || !el.closest?.('#map')) return false;
  return Boolean(pickHandler({ site: el.dataset.site ?? null, township: el.dataset.township ?? null, element: el }));
}

/** Whether the map groups this county's villages by township (too many to tell apart). */
export function groupsTownships(model) {
  const villages = model.sites.filter((p) => p.hasCoords && p.kind === 'village');
  return villages.length > MAP_LABELS_UP_TO && model.townships?.length > 1;
}

/**
 * The map as a fresh <svg>, for a container `width` px wide. `marks`: per site id what its
 * alerts put on its marker (alerts.alertMarks); `bcMarks`: per site id how far the active
 * broadcast got on its speakers (broadcasts.broadcastMarks). `township`: the id of the
 * opened township (its sites alone are drawn), or null for the whole county.
 */
export function countyMap(model, width, marks = new Map(), bcMarks = new Map(), township = null) {
  const { W, H } = mapSize(width);
  const grouped = groupsTownships(model);
  const opened = grouped && township ? model.townships.find((tw) => tw.id === township) ?? null : null;
  if (grouped && !opened) return groupedMap(model, W, H, marks, bcMarks);
  const sites = (opened ? opened.sites : model.sites).filter((p) => p.hasCoords);
  const proj = fit(sites, W, H);
  // A township's villages strung along a valley would cover each other: moved apart, names included.
  const at = opened ? spread(sites.map((p) => ({ key: p.id, x: proj.x(p.lon), y: proj.y(p.lat), r: 19 })), W, H) : null;
  const labels = sites.length <= MAP_LABELS_UP_TO;
  return s('svg', { class: 'county', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'group',
    'data-township': opened?.id ?? null,
    'aria-label': opened ? t('mapTownshipLabel', opened.name, sites.length) : t('mapLabel', sites.length) },
    s('rect', { class: 'land', x: 0, y: 0, width: W, height: H, rx: 8 }),
    s('g', { class: 'pipes', 'aria-hidden': 'true' }, pipes(sites, proj)),
    // Problems are drawn last, on top; in a crowded county fine sites shrink to dots.
    s('g', { class: 'markers' }, [...sites].sort(byConcern(marks)).map((p) => marker(p, proj, labels,
      marks.get(p.id) ?? null, bcMarks.get(p.id) ?? null, at?.get(p.id)))),
    scaleBar(proj, H),
    northArrow(W));
}

/**
 * The county with its villages grouped by township: a group marker per township at the
 * middle of its villages, the waterworks and farms one by one.
 */
function groupedMap(model, W, H, marks, bcMarks) {
  const placed = model.sites.filter((p) => p.hasCoords);
  const proj = fit(placed, W, H);
  const singles = placed.filter((p) => p.kind !== 'village' || !p.township);
  const groups = model.townships.filter((tw) => tw.hasCoords && tw.sites.some((p) => p.kind === 'village'));
  // Markers that would cover each other are moved apart (a township's middle can lie on a waterworks).
  const at = spread([...groups.map((tw) => ({ key: 'tw:' + tw.id, x: proj.x(tw.lon), y: proj.y(tw.lat),
    r: groupRadius(villagesOf(tw)) + 12 })), ...singles.map((p) => ({ key: p.id, x: proj.x(p.lon), y: proj.y(p.lat), r: 22 }))], W, H);
  return s('svg', { class: 'county grouped', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'group',
    'aria-label': t('mapGroupedLabel', placed.length, groups.length) },
  s('rect', { class: 'land', x: 0, y: 0, width: W, height: H, rx: 8 }),
  s('g', { class: 'groups' }, groups.map((tw) => groupMarker(tw, at.get('tw:' + tw.id), marks, bcMarks))),
  s('g', { class: 'markers' }, [...singles].sort(byConcern(marks)).map((p) => marker(p, proj, true,
    marks.get(p.id) ?? null, bcMarks.get(p.id) ?? null, at.get(p.id)))),
  scaleBar(proj, H),
  northArrow(W));
}

/** A township's villages (the group; its waterworks and farms are drawn on their own) and their states. */
function villagesOf(tw) {
  const sites = tw.sites.filter((p) => p.kind === 'village');
  const states = { offline: 0, attention: 0, stale: 0, ok: 0, nodata: 0 };
  for (const p of sites) states[p.state] += 1;
  return { ...tw, sites, states };
}

/** What a township's group marker says: worst state, counts, alerts, broadcast failures. */
export function groupFigures(tw, marks, bcMarks) {
  let firing = 0;
  let acked = 0;
  let severity = null;
  let bcFailed = 0;
  let bcPlayed = 0;
  let bcTotal = 0;
  const sevRank = ['critical', 'warning', 'info'];
  for (const site of tw.sites) {
    const m = marks.get(site.id);
    if (m) {
      firing += m.firing;
      acked += m.acked;
      if (severity === null || sevRank.indexOf(m.severity) < sevRank.indexOf(severity)) severity = m.severity;
    }
    const bc = bcMarks.get(site.id);
    if (bc) {
      bcFailed += bc.failed ?? (bc.state === 'failed' ? 1 : 0);
      bcPlayed += bc.played;
      bcTotal += bc.total;
    }
  }
  const problems = tw.states.offline + tw.states.attention;
  const worst = ['offline', 'attention', 'stale', 'ok', 'nodata'].find((st) => tw.states[st] > 0) ?? 'nodata';
  const bc = bcTotal ? { state: bcFailed ? 'failed' : bcPlayed === bcTotal ? 'played' : 'progress', played: bcPlayed,
    total: bcTotal, failed: bcFailed } : null;
  return { firing, acked, severity, problems, worst, bc };
}

/** A group marker's radius: larger for more villages, within 16-24 px. */
function groupRadius(tw) {
  return Math.round(14 + Math.min(10, Math.sqrt(tw.sites.length) * 1.6));
}

/**
 * Moves circles `{ key, x, y, r }` apart until none overlaps another (or 60 rounds), kept
 * inside W x H; returns their places by key. A few dozen markers: the square loop is cheap.
 */
export function spread(items, W, H) {
  const pad = 6;
  for (let round = 0; round < 60; round += 1) {
    let moved = false;
    for (let i = 0; i < items.length; i += 1) {
      for (let j = i + 1; j < items.length; j += 1) {
        const a = items[i];
        const b = items[j];
        let dx = b.x - a.x;
        let dy = b.y - a.y;
        let d = Math.hypot(dx, dy);
        const min = a.r + b.r + pad;
        if (d >= min) continue;
        if (d < 0.01) {
          // On top of each other: apart along a fixed direction, so the drawing is stable.
          dx = Math.cos(i + j);
          dy = Math.sin(i + j);
          d = 1;
        }
        const push = (min - d) / 2;
        a.x -= (dx / d) * push;
        a.y -= (dy / d) * push;
        b.x += (dx / d) * push;
        b.y += (dy / d) * push;
        moved = true;
      }
    }
    for (const c of items) {
      // Inside the map, names (under the marker) included.
      c.x = Math.max(c.r, Math.min(W - c.r, c.x));
      c.y = Math.max(c.r * 0.7, Math.min(H - c.r * 1.2, c.y));
    }
    if (!moved) break;
  }
  return new Map(items.map((c) => [c.key, { x: c.x, y: c.y }]));
}

function groupMarker(township, place, marks, bcMarks) {
  const tw = villagesOf(township);
  const f = groupFigures(tw, marks, bcMarks);
  const n = tw.sites.length;
  const r = groupRadius(tw);
  const { x, y } = place;
  const mark = f.firing || f.acked ? { severity: f.severity, firing: f.firing, acked: f.acked } : null;
  const states = ['offline', 'attention', 'stale', 'ok', 'nodata'].filter((st) => tw.states[st] > 0);
  const label = [`${tw.name}: ${t('groupSites', n)}`,
    states.map((st) => `${tw.states[st]} ${t('state_' + st)}`).join(', '),
    mark ? alertText(mark) : '',
    f.bc ? t('mapBroadcast_' + f.bc.state, f.bc.played, f.bc.total) + (f.bc.failed ? ` (${t('bcPart_failed', f.bc.failed)})` : '') : '',
    t('openTownship')].filter(Boolean).join(' – ');
  // The ring: one arc per state, in proportion to its villages, worst from the top.
  const circumference = 2 * Math.PI * (r - 3);
  let offset = 0;
  const arcs = states.map((st) => {
    const len = (circumference * tw.states[st]) / n;
    const arc = s('circle', { class: `arc state-${st}`, r: r - 3, 'stroke-dasharray': `${len.toFixed(2)} ${(circumference - len).toFixed(2)}`,
      'stroke-dashoffset': (-offset + circumference / 4).toFixed(2), 'data-state': st, 'data-n': tw.states[st] });
    offset += len;
    return arc;
  });
  const alerting = mark ? ` alerting sev-${mark.severity}${mark.firing ? '' : ' acked'}` : '';
  return s('g', { class: `marker group state-${f.worst}${alerting}`, 'data-key': 'tw:' + tw.id,
    'data-township': tw.id, 'data-action': 'township', 'data-problems': f.problems,
    transform: `translate(${x.toFixed(1)} ${y.toFixed(1)})`, tabindex: 0, role: 'button', 'aria-label': label },
  s('title', null, label),
  mark ? s('circle', { class: 'alert-ring', r: r + 5 }) : null,
  s('circle', { class: 'group-bg', r }),
  arcs,
  s('text', { class: 'group-count', y: 5, 'text-anchor': 'middle', 'aria-hidden': 'true' }, String(n)),
  f.problems ? s('g', { class: `problem-badge state-${f.worst}`, transform: `translate(${r - 2} ${r - 4})`,
    'aria-hidden': 'true' }, s('rect', { x: -11, y: -9, width: 22, height: 18, rx: 9 }),
  s('text', { y: 4, 'text-anchor': 'middle' }, `${f.problems}${f.worst === 'offline' ? '×' : '!'}`)) : null,
  mark ? s('g', { class: 'alert-badge', transform: `translate(${r - 2} ${-r + 2})`, 'aria-hidden': 'true' },
    s('circle', { r: 9 }), s('text', { y: 4, 'text-anchor': 'middle' }, String(mark.firing || mark.acked))) : null,
  f.bc ? s('g', { class: `bc-badge bcm-${f.bc.state}`, transform: `translate(${-r + 2} ${-r + 2})`, 'aria-hidden': 'true',
    'data-played': f.bc.played, 'data-total': f.bc.total, 'data-failed': f.bc.failed },
  s('rect', { x: -9, y: -8, width: f.bc.failed ? 24 : 16, height: 16, rx: 3 }),
  s('text', { x: f.bc.failed ? 3 : 0, y: 4, 'text-anchor': 'middle' },
    f.bc.failed ? `×${f.bc.failed}` : { played: '✓', progress: '…' }[f.bc.state])) : null,
  s('text', { class: 'name', y: r + 14, 'text-anchor': 'middle' },
    tw.zh ? [s('tspan', { class: 'zh', x: 0 }, tw.zh), s('tspan', { class: 'py', x: 0, dy: 13 }, tw.pinyin)] : tw.name));
}

/** Supply lines: each waterworks to the villages of its district. */
function pipes(sites, proj) {
  const out = [];
  for (const w of sites.filter((p) => p.kind === 'waterworks' && p.district)) {
    for (const v of sites.filter((p) => p.kind !== 'waterworks' && p.district === w.district)) {
      out.push(s('line', { class: 'pipe', 'data-key': `${w.id}>${v.id}`, x1: proj.x(w.lon), y1: proj.y(w.lat),
        x2: proj.x(v.lon), y2: proj.y(v.lat) }));
    }
  }
  return out;
}

/** Fine sites first, the worst last, and sites with a firing alert after all of them. */
function byConcern(marks) {
  const order = ['nodata', 'ok', 'stale', 'attention', 'offline'];
  const alerting = (p) => (marks.get(p.id)?.firing ? 1 : 0);
  return (a, b) => alerting(a) - alerting(b) || order.indexOf(a.state) - order.indexOf(b.state);
}

function marker(site, proj, withLabel, mark, bc, place = null) {
  const x = place ? place.x : proj.x(site.lon);
  const y = place ? place.y : proj.y(site.lat);
  const why = site.issues.map((i) => issueText(i)).join('; ');
  const alerts = mark ? alertText(mark) : '';
  const played = bc ? t('mapBroadcast_' + bc.state, bc.played, bc.total) : '';
  const label = `${site.name}: ${t('state_' + site.state)}${alerts ? ' – ' + alerts : ''}${played ? ' – ' + played : ''}` +
    `${why ? ' – ' + why : ''}`;
  const full = withLabel || mark !== null || !['ok', 'nodata'].includes(site.state);
  const alerting = mark ? ` alerting sev-${mark.severity}${mark.firing ? '' : ' acked'}` : '';
  return s('g', { class: `marker state-${site.state} kind-${site.kind}${alerting}`, 'data-key': site.id,
    'data-site': site.id, 'data-action': 'site', transform: `translate(${x.toFixed(1)} ${y.toFixed(1)})`, tabindex: 0,
    role: 'button', 'aria-label': label },
  s('title', null, label),
  mark ? s('circle', { class: 'alert-ring', r: 18 }) : null,
  shape(site.kind, full ? 1 : 0.5),
  full ? badge(site.state) : null,
  mark ? alertBadge(mark) : null,
  bc ? broadcastBadge(bc) : null,
  withLabel ? s('text', { class: 'name', y: 24, 'text-anchor': 'middle' },
    site.zh ? [s('tspan', { class: 'zh', x: 0 }, site.zh), s('tspan', { class: 'py', x: 0, dy: 13 }, site.pinyin)]
      : site.name) : null);
}

/** Villages are circles, waterworks squares, farms diamonds; `k` scales them. */
function shape(kind, k) {
  if (kind === 'waterworks') {
    return s('rect', { class: 'shape', x: -10 * k, y: -10 * k, width: 20 * k, height: 20 * k, rx: 3 * k });
  }
  const r = 13 * k;
  if (kind === 'farm') return s('path', { class: 'shape', d: `M0 ${-r} L${r} 0 L0 ${r} L${-r} 0 Z` });
  return s('circle', { class: 'shape', r: 10 * k });
}

/** A glyph on the marker, so the state does not rest on colour alone. */
function badge(state) {
  const glyph = { ok: '✓', attention: '!', stale: '…', offline: '×', nodata: '?' }[state] ?? '?';
  return s('text', { class: 'glyph', y: 4.5, 'text-anchor': 'middle', 'aria-hidden': 'true' }, glyph);
}

function alertText(mark) {
  const firing = mark.firing ? t('mapAlerts', mark.firing, t('sev_' + mark.severity)) : '';
  const acked = mark.acked ? t('mapAcked', mark.acked) : '';
  return [firing, acked].filter(Boolean).join(', ');
}

/** The number of firing alerts (or acknowledged ones, when none fires) at the ring's top right. */
function alertBadge(mark) {
  return s('g', { class: 'alert-badge', transform: 'translate(14 -14)', 'aria-hidden': 'true' },
    s('circle', { r: 8 }),
    s('text', { y: 4, 'text-anchor': 'middle' }, String(mark.firing || mark.acked)));
}

/**
 * The active broadcast on this site's speakers, at the marker's top left: green with a
 * tick when every one played it, amber while it is on its way, red with a cross if one failed.
 */
function broadcastBadge(bc) {
  const glyph = { played: '✓', progress: '…', failed: '×' }[bc.state];
  return s('g', { class: `bc-badge bcm-${bc.state}`, transform: 'translate(-14 -14)', 'aria-hidden': 'true',
    'data-played': bc.played, 'data-total': bc.total },
  s('rect', { x: -8, y: -8, width: 16, height: 16, rx: 3 }),
  s('text', { y: 4, 'text-anchor': 'middle' }, glyph));
}

function scaleBar(proj, H) {
  const maxKm = 120 * proj.kmPerPx;
  const km = niceKm(maxKm);
  const len = km / proj.kmPerPx;
  const x0 = 16;
  const y0 = H - 18;
  return s('g', { class: 'scale', role: 'img', 'aria-label': t('scaleLabel', km) },
    s('rect', { class: 'scale-bg', x: x0 - 6, y: y0 - 22, width: len + 40, height: 30, rx: 4 }),
    s('path', { class: 'scale-bar',
      d: `M${x0} ${y0 - 6} V${y0} H${x0 + len} V${y0 - 6} M${x0 + len / 2} ${y0} V${y0 - 4}` }),
    s('text', { class: 'scale-text', x: x0, y: y0 - 9 }, '0'),
    s('text', { class: 'scale-text', x: x0 + len, y: y0 - 9, 'text-anchor': 'middle' }, `${km} km`));
}

function northArrow(W) {
  const x = W - 28;
  const y = 30;
  return s('g', { class: 'north', transform: `translate(${x} ${y})`, role: 'img', 'aria-label': t('north') },
    s('path', { class: 'north-arrow', d: 'M0 -16 L8 8 L0 3 L-8 8 Z' }),
    s('text', { class: 'north-text', y: 22, 'text-anchor': 'middle' }, t('northLetter')));
}

/**
 * Above the map of a grouped county: the way back to the whole county and the opened
 * township's name, or a hint that townships open. Nothing for a county drawn site by site.
 */
export function mapNav(model, township) {
  if (!groupsTownships(model)) return null;
  const opened = township ? model.townships.find((tw) => tw.id === township) : null;
  if (!opened) return h('p', { class: 'map-hint' }, t('mapGroupedHint', model.townships.length));
  const v = villagesOf(opened);
  const f = v.states;
  return h('div', { class: 'map-nav-row' },
    h('button', { type: 'button', class: 'map-back', 'data-action': 'township', 'data-township': '' }, t('wholeCounty')),
    h('span', { class: 'map-township' }, opened.zh ? [h('span', { class: 'zh', lang: 'zh' }, opened.zh), ' ',
      h('span', { class: 'py' }, opened.pinyin)] : opened.name),
    h('span', { class: 'map-township-figures' }, t('groupSites', v.sites.length),
      f.offline ? ` · ${f.offline} ${t('state_offline')}` : '', f.attention ? ` · ${f.attention} ${t('state_attention')}` : ''));
}

/** The legend of states, as HTML items (main.js adds the alert ring's). */
export function legendItems() {
  return ['ok', 'attention', 'stale', 'offline', 'nodata'].map((state) => ({ state, text: t('state_' + state),
    help: t('stateHelp_' + state) }));
}
