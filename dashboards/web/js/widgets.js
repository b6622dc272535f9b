// Role: the small pictures inside the site cards: a tank with its water level, a pump that
// shows whether it runs, a water-quality parameter against its limits as a band, the herd
// as a heat grid of body temperatures, speakers as dots. Each returns a fresh element;
// cards.js places them, morph() keeps the page still.

import { h, s } from './dom.js';
import { t } from './strings.js';
import { num, unitText, valueText } from './format.js';
import { TANK_HEIGHT_M, TANK_LOW_M, COW_TEMP_COLOURS, FEVER_C, HERD_CELLS_MAX } from './config.js';

/** Attributes that make an element open the chart of `device`/`metric` when activated. */
export function chartLink(device, metric, label) {
  return { 'data-action': 'chart', 'data-device': device, 'data-metric': metric, 'aria-label': label, title: label };
}

/** A button showing a metric's value; opens its chart. */
export function metricButton(device, metric, value, unit, extraClass) {
  const text = valueText(metric, value, unit);
  return h('button', { type: 'button', class: `value ${extraClass ?? ''}`.trim(),
    ...chartLink(device.id, metric, `${t('metric_' + metric)} ${text}: ${t('openChart')}`) }, text);
}

/**
 * A labelled metric as a row of a definition list, or nothing if the device lacks it.
 * `label` is a string key when the metric's own name says too little.
 */
export function metricRow(device, metric, label) {
  const r = device.m[metric];
  if (!r) return null;
  return h('div', { class: 'row' }, h('dt', null, t(label ?? 'metric_' + metric)),
    h('dd', null, metricButton(device, metric, r.value, r.unit)));
}

/** A storage tank, filled to `level` m, with the level written under it. */
export function tank(device, level) {
  const W = 60;
  const top = 4;
  const inner = 74;
  const H = top + inner + 20;
  const height = Math.max(TANK_HEIGHT_M, level ?? 0);
  const fill = level === null ? 0 : Math.max(0, Math.min(1, level / height));
  const waterH = inner * fill;
  const low = level !== null && level < TANK_LOW_M;
  const label = level === null ? t('noData') : `${num(level, 2)} m`;
  return s('svg', { class: `tank${low ? ' low' : ''}`, viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
    'aria-label': `${t('tankLevel')}: ${label}` },
  s('rect', { class: 'tank-water', x: 5, y: top + inner - waterH, width: W - 10, height: waterH, rx: 2 }),
  s('rect', { class: 'tank-wall', x: 4, y: top, width: W - 8, height: inner + 1, rx: 4 }),
  [0.25, 0.5, 0.75].map((f) => s('line', { class: 'tank-tick', x1: 4, x2: 10, y1: top + inner * (1 - f),
    y2: top + inner * (1 - f) })),
  s('text', { class: 'tank-label', x: W / 2, y: H - 3, 'text-anchor': 'middle' }, label));
}

/** A pump: a circle with an impeller, green when it runs, red on a fault, grey when stopped. */
export function pumpIcon(running, faulty) {
  const state = faulty ? 'fault' : running === 1 ? 'running' : running === 0 ? 'stopped' : 'unknown';
  const blades = [0, 120, 240].map((a) => s('path', { class: 'blade', d: 'M0 0 C6 -4 10 -10 4 -15 Z',
    transform: `rotate(${a})` }));
  return s('svg', { class: `pump ${state}`, viewBox: '-22 -22 44 44', width: 44, height: 44, role: 'img',
    'aria-label': t('pump_' + state) },
  s('circle', { class: 'pump-body', r: 19 }), s('g', { class: 'impeller' }, blades),
  s('circle', { class: 'pump-hub', r: 3 }));
}

/**
 * A quality parameter against its limits: a band with the allowed zone, the limits and
 * a marker at the value (an arrow at the edge when it is off the band).
 */
export function qualityBand(param) {
  const { limits, value, verdict } = param;
  const W = 160;
  const H = 26;
  const x = (v) => ((Math.max(limits.lo, Math.min(limits.hi, v)) - limits.lo) / (limits.hi - limits.lo)) * W;
  const okFrom = x(limits.min ?? limits.lo);
  const okTo = x(limits.max ?? limits.hi);
  const ticks = [limits.min, limits.max].filter((v) => v !== undefined);
  const marker = value === null ? null : x(value);
  const off = value !== null && (value < limits.lo || value > limits.hi);
  return s('svg', { class: `band ${verdict}`, viewBox: `-6 0 ${W + 12} ${H}`, width: W + 12, height: H,
    'aria-hidden': 'true' },
  s('rect', { class: 'band-bad', x: 0, y: 4, width: W, height: 8, rx: 2 }),
  s('rect', { class: 'band-ok', x: okFrom, y: 4, width: Math.max(0, okTo - okFrom), height: 8 }),
  ticks.map((v) => [s('line', { class: 'band-tick', x1: x(v), x2: x(v), y1: 2, y2: 14 }),
    s('text', { class: 'band-text', x: x(v), y: H - 1, 'text-anchor': 'middle' }, num(v, v < 1 ? 2 : 1))]),
  marker === null ? null : s('path', { class: `band-marker${off ? ' off' : ''}`,
    d: `M${marker} 13 l-5 -11 h10 Z` }));
}

/** Fill colour of a cow's cell. */
export function cowColour(temp) {
  if (temp === null) return '#c8ccd2';
  const stops = COW_TEMP_COLOURS;
  if (temp <= stops[0][0]) return stops[0][1];
  for (let i = 1; i < stops.length; i += 1) {
    const [t1, c1] = stops[i];
    if (temp <= t1) {
      const [t0, c0] = stops[i - 1];
      return mix(c0, c1, (temp - t0) / (t1 - t0));
    }
  }
  return stops[stops.length - 1][1];
}

function mix(a, b, f) {
  const pa = [1, 3, 5].map((i) => parseInt(a.slice(i, i + 2), 16));
  const pb = [1, 3, 5].map((i) => parseInt(b.slice(i, i + 2), 16));
  return '#' + pa.map((v, i) => Math.round(v + (pb[i] - v) * f).toString(16).padStart(2, '0')).join('');
}

/** Cows per page of the herd grid: a herd of 2,000 is paged, warmest (those needing attention) first. */
export const HERD_PAGE = Math.min(250, HERD_CELLS_MAX);

/**
 * The herd as a heat grid, warmest first, one cell per cow, HERD_PAGE cows a page (`page`
 * from 0). One tab stop: arrow keys move between cells (main.js), Enter opens the cow's
 * chart. `focusIndex` is the position of the cell that holds the tab stop.
 */
export function herdGrid(herd, focusIndex, page = 0) {
  const cells = herd.cells.slice(page * HERD_PAGE, (page + 1) * HERD_PAGE);
  const size = cells.length > 400 ? 11 : cells.length > 150 ? 16 : 22;
  const gap = 2;
  // About four times as wide as high, so a hundred cows are a strip of 20 x 5.
  const cols = Math.max(10, Math.min(60, Math.round(Math.sqrt(cells.length * 4))));
  const rows = Math.ceil(cells.length / cols);
  const holder = focusIndex < cells.length ? focusIndex : 0;
  const rects = cells.map((c, i) => {
    const fever = c.temp !== null && c.temp >= FEVER_C;
    const label = `${c.device.id} ${c.temp === null ? t('noData') : valueText('body_temperature', c.temp, '°C')}` +
      (fever ? ` (${t('fever')})` : '');
    // Cells are matched by position, not by cow: as temperatures change order, a refresh
    // recolours cells in place instead of moving thousands of them.
    // The <title> child is the cell's name and tooltip; few attributes keep refreshes cheap.
    return s('rect', { class: `cow${fever ? ' fever' : ''}`, 'data-cow': '', 'data-action': 'chart',
      'data-device': c.device.id, 'data-metric': 'body_temperature', 'data-cols': cols, role: 'button',
      tabindex: i === holder ? 0 : -1, x: (i % cols) * (size + gap) + 1,
      y: Math.floor(i / cols) * (size + gap) + 1, width: size, height: size, fill: cowColour(c.temp) },
    s('title', null, label));
  });
  return s('svg', { class: 'herd', viewBox: `0 0 ${cols * (size + gap) + 1} ${rows * (size + gap) + 1}`,
    width: cols * (size + gap) + 1, height: rows * (size + gap) + 1, role: 'group',
    'aria-label': t('herdGridLabel', herd.cells.length, herd.fever.length) }, rects);
}

/** The temperature legend under the herd grid. */
export function herdLegend() {
  const stops = COW_TEMP_COLOURS;
  const W = 180;
  const span = stops[stops.length - 1][0] - stops[0][0];
  const x = (v) => ((v - stops[0][0]) / span) * W;
  return s('svg', { class: 'herd-legend', viewBox: `-4 0 ${W + 28} 24`, width: W + 28, height: 24, role: 'img',
    'aria-label': t('herdLegend') },
  s('defs', null, s('linearGradient', { id: 'cow-scale' },
    stops.map(([v, c]) => s('stop', { offset: (x(v) / W).toFixed(3), 'stop-color': c })))),
  s('rect', { x: 0, y: 2, width: W, height: 8, fill: 'url(#cow-scale)', rx: 2 }),
  [38, 39, FEVER_C, 40].map((v) => s('text', { class: 'band-text', x: x(v), y: 22, 'text-anchor': 'middle' },
    num(v, 1))),
  s('text', { class: 'band-text', x: W + 4, y: 10 }, '°C'));
}

/** Speakers as dots: green online, red offline; a ring while playing. */
export function speakerDots(speakers) {
  return h('ul', { class: 'dots' }, speakers.map((sp) => {
    const state = sp.online ? t('online') : t('offline');
    const label = `${sp.device.id}: ${state}${sp.playing ? ', ' + t('playing') : ''}` +
      (sp.volume !== null ? `, ${t('metric_speaker_volume')} ${num(sp.volume, 0)} %` : '');
    return h('li', { 'data-key': sp.device.id },
      h('button', { type: 'button', class: `dot ${sp.online ? 'on' : 'off'}${sp.playing ? ' playing' : ''}`,
        ...chartLink(sp.device.id, 'speaker_online', label) }, h('span', { class: 'sr' }, label)));
  }));
}

/** A unit for a column header. */
export function unitHead(unit) {
  const u = unitText(unit);
  return u ? ` (${u})` : '';
}
