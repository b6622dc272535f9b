// Role: the history of one series in a dialog: an SVG line chart of
// GET /api/v1/series over the last hour, 6 h or 24 h, with axes, unit, local time labels,
// min and max marked, gaps in the data left as gaps. Long series are thinned to the
// lowest and highest point per pixel column, so a spike is never drawn away.

import { h, s, morphChildrenOf } from './dom.js';
import { t } from './strings.js';
import { fetchSeries, serverNow } from './api.js';
import { num, unitText, valueText, clock, dateTime, ago, zoneName, decimalsOf } from './format.js';
import { CHART_REFRESH_MS, QUALITY_LIMITS } from './config.js';
import { isHealth } from './model.js';

const RANGES_H = [1, 6, 24];
const W = 760;
const H = 300;
const M = { top: 26, right: 20, bottom: 40, left: 62 };
const STEP_UNITS = new Set(['bool', 'state', 'bits']);

/** The chart dialog. `elements`: { dialog, title, controls, body }. */
export class Chart {
  constructor(elements) {
    this.el = elements;
    this.device = null;
    this.metric = null;
    this.metrics = [];
    this.rangeH = 1;
    this.series = null;
    this.error = null;
    this.loading = false;
    this.fetchedAt = 0;
    this.request = 0;
  }

  get isOpen() {
    return this.el.dialog.open;
  }

  /** Opens the chart of `device`/`metric`; `metrics` are the device's other series. */
  open(device, metric, metrics) {
    this.device = device;
    this.metric = metric;
    this.metrics = metrics;
    this.series = null;
    this.error = null;
    if (!this.el.dialog.open) this.el.dialog.showModal();
    this.load();
  }

  close() {
    if (this.el.dialog.open) this.el.dialog.close();
  }

  setRange(hours) {
    this.rangeH = hours;
    this.load();
  }

  setMetric(metric) {
    this.metric = metric;
    this.series = null;
    this.load();
  }

  /** Called on every page refresh: re-reads the series now and then while open. */
  refreshIfDue() {
    if (this.isOpen && !this.loading && Date.now() - this.fetchedAt >= CHART_REFRESH_MS) this.load();
  }

  async load() {
    const id = ++this.request;
    const to = serverNow() + 1;
    const from = to - this.rangeH * 3_600_000;
    this.loading = true;
    this.render();
    try {
      const series = await fetchSeries(this.device, this.metric, from, to);
      if (id !== this.request) return;
      this.series = { ...series, fromMs: from, toMs: to, points: parsePoints(series.points) };
      this.error = null;
    } catch (e) {
      if (id !== this.request) return;
      this.error = e.message;
    } finally {
      if (id === this.request) {
        this.loading = false;
        this.fetchedAt = Date.now();
        this.render();
      }
    }
  }

  /** Draws the dialog's contents again (also after a language switch). */
  render() {
    if (!this.device) return;
    this.el.title.textContent = `${this.device} · ${t('metric_' + this.metric)}`;
    morphChildrenOf(this.el.controls, this.controls());
    morphChildrenOf(this.el.body, this.body());
  }

  controls() {
    const options = [...this.metrics].sort((a, b) => isHealth(a) - isHealth(b));
    return h('div', { class: 'chart-controls-row' },
      h('div', { class: 'ranges', role: 'group', 'aria-label': t('range') }, RANGES_H.map((hours) =>
        h('button', { type: 'button', class: 'range', 'data-action': 'range', 'data-hours': hours,
          'aria-pressed': String(hours === this.rangeH) }, t('lastHours', hours)))),
      options.length > 1 ? h('label', { class: 'metric-pick' }, t('metric'), ' ',
        h('select', { 'data-action': 'metric' }, options.map((m) =>
          h('option', { value: m, selected: m === this.metric }, t('metric_' + m))))) : null,
      h('span', { class: 'chart-status', 'aria-live': 'polite' }, this.loading ? t('loading') : ''));
  }

  body() {
    if (this.error) return h('p', { class: 'chart-error', role: 'alert' }, t('chartError', this.error));
    if (!this.series) return h('p', { class: 'chart-empty' }, t('loading'));
    const { points, unit } = this.series;
    if (points.length === 0) return h('p', { class: 'chart-empty' }, t('chartNoData', this.rangeH));
    const last = points[points.length - 1];
    return h('div', null,
      h('p', { class: 'chart-last' }, t('lastValue', valueText(this.metric, last.value, unit),
        ago(serverNow() - last.ts), dateTime(last.ts))),
      drawChart(this.series, this.metric),
      this.series.truncated ? h('p', { class: 'hint' }, t('truncated', points.length)) : null);
  }
}

function parsePoints(raw) {
  const out = [];
  for (const p of raw ?? []) {
    const ts = Date.parse(p.ts);
    if (Number.isFinite(ts) && Number.isFinite(p.value)) out.push({ ts, value: p.value });
  }
  return out;
}

/** A scale of about `count` round steps that covers [lo, hi]: { lo, hi, ticks }. */
export function niceScale(lo, hi, count) {
  if (hi - lo < 1e-12) {
    const pad = Math.abs(hi) * 0.05 || 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((v) => v >= raw) ?? 10 * p;
  const start = Math.floor(lo / step + 1e-9) * step;
  const end = Math.ceil(hi / step - 1e-9) * step;
  const ticks = [];
  for (let i = 0; start + i * step <= end + step * 1e-9; i += 1) ticks.push(Number((start + i * step).toFixed(10)));
  // Decimals that tell the ticks apart: 0.05 needs 2, 2.5 one more than 2 does.
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9) + (Math.abs(step / p - 2.5) < 1e-9 ? 1 : 0));
  return { lo: start, hi: end, ticks, decimals };
}

/** Time ticks on round local minutes or hours. */
function timeTicks(from, to) {
  const span = to - from;
  const step = [5, 10, 15, 30, 60, 120, 180, 240, 360].map((m) => m * 60_000).find((v) => span / v <= 7) ?? 21_600_000;
  const zone = -new Date(from).getTimezoneOffset() * 60_000;
  const ticks = [];
  for (let v = Math.ceil((from + zone) / step) * step - zone; v <= to; v += step) ticks.push(v);
  return ticks;
}

/** Keeps the first, lowest, highest and last point of each pixel column, in time order. */
export function thin(points, from, to, columns) {
  if (points.length <= columns * 4) return points;
  const out = [];
  let col = -1;
  let bucket = [];
  const flush = () => {
    if (!bucket.length) return;
    let lo = bucket[0];
    let hi = bucket[0];
    for (const p of bucket) {
      if (p.value < lo.value) lo = p;
      if (p.value > hi.value) hi = p;
    }
    const keep = new Set([bucket[0], lo, hi, bucket[bucket.length - 1]]);
    out.push(...bucket.filter((p) => keep.has(p)));
    bucket = [];
  };
  for (const p of points) {
    const c = Math.floor(((p.ts - from) / (to - from)) * columns);
    if (c !== col) {
      flush();
      col = c;
    }
    bucket.push(p);
  }
  flush();
  return out;
}

/** The time between points above which the line is broken: 5 typical intervals, at least a minute. */
function gapMs(points) {
  const n = Math.min(points.length - 1, 500);
  if (n < 1) return Infinity;
  const deltas = [];
  const stride = Math.max(1, Math.floor((points.length - 1) / n));
  for (let i = stride; i < points.length; i += stride) deltas.push(points[i].ts - points[i - stride].ts);
  deltas.sort((a, b) => a - b);
  const typical = deltas[Math.floor(deltas.length / 2)] / stride;
  return Math.max(60_000, 5 * typical);
}

/**
 * The chart of `series` (`{ points: [{ ts, value }], fromMs, toMs, unit }`) as SVG;
 * `marks` are moments drawn as labelled vertical lines (`{ ts, label, class }`: an alert
 * firing, resolving).
 */
export function drawChart(series, metric, marks = []) {
  const { points, fromMs: from, toMs: to, unit } = series;
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  let min = points[0];
  let max = points[0];
  for (const p of points) {
    if (p.value < min.value) min = p;
    if (p.value > max.value) max = p;
  }
  const pad = (max.value - min.value) * 0.04;
  const { lo, hi, ticks: yTicks, decimals } = niceScale(min.value - pad, max.value + pad, 5);
  const x = (ts) => M.left + ((ts - from) / (to - from)) * plotW;
  const y = (v) => M.top + (1 - (v - lo) / (hi - lo)) * plotH;

  const step = STEP_UNITS.has(unit);
  const gap = gapMs(points);
  let d = '';
  let prev = null;
  for (const p of thin(points, from, to, plotW)) {
    const px = x(p.ts).toFixed(1);
    const py = y(p.value).toFixed(1);
    if (!prev || p.ts - prev.ts > gap) d += `M${px} ${py}`;
    else d += step ? `H${px}V${py}` : `L${px} ${py}`;
    prev = p;
  }

  const u = unitText(unit);
  return s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': t('chartLabel', t('metric_' + metric), valueText(metric, min.value, unit),
      valueText(metric, max.value, unit)) },
  s('g', { class: 'grid' },
    yTicks.map((v) => [
      s('line', { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
      s('text', { class: 'tick', x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, num(v, decimals))]),
    timeTicks(from, to).map((ts) => [
      s('line', { x1: x(ts), x2: x(ts), y1: M.top, y2: H - M.bottom }),
      s('text', { class: 'tick', x: x(ts), y: H - M.bottom + 16,
        'text-anchor': x(ts) > W - M.right - 30 ? 'end' : 'middle' }, clock(ts))])),
  s('path', { class: 'axis', d: `M${M.left} ${M.top} V${H - M.bottom} H${W - M.right}` }),
  s('text', { class: 'unit', x: M.left - 6, y: M.top - 10, 'text-anchor': 'end' }, u),
  s('text', { class: 'axis-title', x: W - M.right, y: H - 4, 'text-anchor': 'end' }, t('localTime', zoneName())),
  limitLines(metric, lo, hi, x, y, from, to),
  s('path', { class: 'line', d }),
  marks.filter((m) => m.ts >= from && m.ts <= to).map((m) => s('g', { class: `mark ${m.class ?? ''}` },
    s('line', { x1: x(m.ts), x2: x(m.ts), y1: M.top, y2: H - M.bottom }),
    s('text', { x: x(m.ts) > W - 160 ? x(m.ts) - 4 : x(m.ts) + 4, y: M.top + 10,
      'text-anchor': x(m.ts) > W - 160 ? 'end' : 'start' }, m.label))),
  min.value === max.value ? null : extreme(min, 'min', x, y, unit, metric, decimals),
  extreme(max, 'max', x, y, unit, metric, decimals));
}

/** GB 5749-2022 limits of a quality parameter, where they fall inside the plot. */
function limitLines(metric, lo, hi, x, y, from, to) {
  const limits = QUALITY_LIMITS[metric];
  if (!limits) return null;
  return [limits.min, limits.max].filter((v) => v !== undefined && v >= lo && v <= hi).map((v) =>
    s('g', { class: 'limit' },
      s('line', { x1: x(from), x2: x(to), y1: y(v), y2: y(v) }),
      s('text', { x: x(from) + 4, y: y(v) - 4 }, t('limitLine', num(v)))));
}

/** The min or max point, marked and labelled with at least the axis' precision. */
function extreme(p, which, x, y, unit, metric, decimals) {
  const px = x(p.ts);
  const py = y(p.value);
  const value = STEP_UNITS.has(unit) ? valueText(metric, p.value, unit)
    : `${num(p.value, Math.max(decimals, decimalsOf(metric)))} ${unitText(unit)}`;
  const text = `${t(which)} ${value.trim()} · ${clock(p.ts)}`;
  const anchor = px > W - 180 ? 'end' : px < M.left + 120 ? 'start' : 'middle';
  // Max above its point, min below; flipped when that would leave the plot.
  const above = which === 'max' ? py - 9 >= M.top + 10 : py + 18 > H - M.bottom - 4;
  const ty = above ? py - 9 : py + 18;
  return s('g', { class: `extreme ${which}` },
    s('circle', { cx: px, cy: py, r: 4 }),
    s('text', { x: px, y: ty, 'text-anchor': anchor }, text));
}
