// Role: the county map, drawn as SVG from the sites' coordinates alone (county servers run
// offline: no tiles). An equirectangular projection fitted to the sites' bounding box,
// a marker per site coloured by its state and shaped by its kind, names in Chinese and
// pinyin, supply lines from each waterworks to the villages of its district, a scale bar
// in km and a north arrow. A marker is a button that brings its site's card into view.
// A site with a firing alert gets a ring in the alert's severity colour and a badge with
// the count (dashed when every alert there is acknowledged), so where it is shows at a glance.

import { s } from './dom.js';
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
  return { W, H: Math.round(W * 0.72) };
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

/**
 * The map as a fresh <svg>, for a container `width` px wide. `marks`: per site id what its
 * alerts put on its marker (alerts.alertMarks); `bcMarks`: per site id how far the active
 * broadcast got on its speakers (broadcasts.broadcastMarks).
 */
export function countyMap(model, width, marks = new Map(), bcMarks = new Map()) {
  const { W, H } = mapSize(width);
  const sites = model.sites.filter((p) => p.hasCoords);
  const proj = fit(sites, W, H);
  const labels = sites.length <= MAP_LABELS_UP_TO;
  return s('svg', { class: 'county', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'group',
    'aria-label': t('mapLabel', sites.length) },
    s('rect', { class: 'land', x: 0, y: 0, width: W, height: H, rx: 8 }),
    s('g', { class: 'pipes', 'aria-hidden': 'true' }, pipes(sites, proj)),
    // Problems are drawn last, on top; in a crowded county fine sites shrink to dots.
    s('g', { class: 'markers' }, [...sites].sort(byConcern(marks)).map((p) => marker(p, proj, labels,
      marks.get(p.id) ?? null, bcMarks.get(p.id) ?? null))),
    scaleBar(proj, H),
    northArrow(W));
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

function marker(site, proj, withLabel, mark, bc) {
  const x = proj.x(site.lon);
  const y = proj.y(site.lat);
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

/** The broadcast console's hook: while it returns true, a click on a marker picks its site. */
let picker = null;

/** Sets what a click on a marker does first: `handler(siteId)` true means it was picked. */
export function onPick(handler) {
  picker = handler;
}

/** Offers a marker click to the picker; false when it did not take it (the card is shown then). */
export function pick(siteId) {
  return picker ? Boolean(picker(siteId)) : false;
}

/** The legend of states, as HTML items (main.js adds the alert ring's). */
export function legendItems() {
  return ['ok', 'attention', 'stale', 'offline', 'nodata'].map((state) => ({ state, text: t('state_' + state),
    help: t('stateHelp_' + state) }));
}
