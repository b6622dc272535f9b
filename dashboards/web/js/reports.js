// Role: the Reports page (/dashboard/reports.html): one month of the water bureau's
// reports, read from GET /api/v1/reports/{water-balance,supply,quality} (docs/REPORTS.md),
// drawn as charts (daily input against billed consumption, NRW and minimum night flow
// per day, water-quality compliance per analyser) and tables, with the billing reads as
// CSV and XLSX downloads (GET /api/v1/reports/billing), in Chinese and English. The same
// page printed (print CSS in style.css) is the monthly report a bureau files.
//
// Invariants: a figure the API could not compute is shown as "–", never as 0; a report
// that could not be read says so in its own section and leaves the others standing; the
// download links always name the month on screen.

import { h, s, morphChildrenOf } from './dom.js';
import { t, lang, setLang, otherLang } from './strings.js';
import { getJson, serverNow } from './api.js';
import { niceScale } from './chart.js';
import { num } from './format.js';

const $ = (id) => document.getElementById(id);

/** County offset from UTC (China Standard Time), for the default month. */
const UTC_OFFSET_MS = 8 * 3_600_000;
/** Chart geometry (SVG user units; the SVG scales to its box). */
const W = 720;
const H = 260;
const M = { top: 24, right: 16, bottom: 34, left: 64 };
/** Most districts drawn as their own line in the county's night-flow chart. */
const MNF_LINES = 6;

/** What the page holds. */
const page = {
  month: null,
  district: '',
  water: null,
  supply: null,
  quality: null,
  errors: {},
  loading: false,
  request: 0,
};

/** `YYYY-MM` of the month before the one that holds `ts`, in county time: the month to file. */
function lastMonth(ts) {
  const d = new Date(ts + UTC_OFFSET_MS);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth(); // 0-based: this month's index is last month's number
  return m === 0 ? `${y - 1}-12` : `${y}-${String(m).padStart(2, '0')}`;
}

/** The county's local date (`YYYY-MM-DD`) of an RFC 3339 time or ms: its first and last day. */
function localDate(time, offsetHours) {
  const ms = typeof time === 'number' ? time : Date.parse(time);
  return new Date(ms + offsetHours * 3_600_000).toISOString().slice(0, 10);
}

async function load() {
  const id = ++page.request;
  page.loading = true;
  renderStatus();
  const params = { period: 'month', date: page.month };
  const [water, supply, quality] = await Promise.all([
    read('water', '/api/v1/reports/water-balance', params),
    read('supply', '/api/v1/reports/supply', params),
    read('quality', '/api/v1/reports/quality', params),
  ]);
  if (id !== page.request) return;
  Object.assign(page, { water, supply, quality, loading: false });
  render();
  document.documentElement.dataset.reportReady = page.month;
}

/** One report's JSON, or null with the reason kept in `page.errors`. */
async function read(key, path, params) {
  try {
    const body = await getJson(path, params);
    delete page.errors[key];
    return body;
  } catch (e) {
    if (e.name !== 'ApiError') throw e;
    page.errors[key] = e.why;
    return null;
  }
}

// ---- rendering -------------------------------------------------------------------------

function render() {
  renderStatus();
  renderControls();
  morphChildrenOf($('report-body'), ...body());
}

function renderStatus() {
  $('report-status').textContent = page.loading ? t('loading') : '';
}

function renderControls() {
  const month = page.month;
  if ($('month').value !== month) $('month').value = month;
  const districts = page.water?.districts ?? [];
  morphChildrenOf($('district'), h('option', { value: '' }, t('reportsCounty')),
    districts.map((d) => h('option', { value: d.district, selected: d.district === page.district }, d.name)));
  $('district').value = page.district;
  // Billing reads of the month shown, of the district's customers when one is chosen.
  const params = { period: 'month', date: month, lang: lang() };
  if (page.district) params.district = page.district;
  for (const [id, format] of [['dl-csv', 'csv'], ['dl-xlsx', 'xlsx']]) {
    $(id).href = `/api/v1/reports/billing?${new URLSearchParams({ ...params, format })}`;
    $(id).setAttribute('download', `billing-${month}.${format}`);
  }
}

/** The selected district's report, or the county's figures in the same shape. */
function selection() {
  const w = page.water;
  if (!w) return null;
  if (page.district) {
    const d = w.districts.find((x) => x.district === page.district);
    if (d) return { name: d.name, total: d.total, days: d.days, nights: [d] };
  }
  return { name: t('reportsCounty'), total: w.county, days: w.county_days, nights: w.districts };
}

function body() {
  const sel = selection();
  const period = page.water?.period ?? page.quality?.period ?? page.supply?.period;
  return [
    h('section', { class: 'report-head', 'data-key': 'head' },
      h('h2', null, t('reportsHeading', sel?.name ?? t('reportsCounty'), page.month)),
      period ? h('p', { class: 'report-period' }, t('reportsPeriod', localDate(period.from, period.utc_offset_hours),
        localDate(Date.parse(period.to) - 1, period.utc_offset_hours), period.days)) : null,
      h('p', { class: 'report-generated' }, t('reportsGenerated', new Date(serverNow()).toISOString().slice(0, 16)
        .replace('T', ' ')))),
    waterSection(sel),
    chartsSection(sel),
    districtsSection(),
    supplySection(),
    qualitySection(),
    h('section', { class: 'signatures', 'data-key': 'sign' },
      ['reportsPreparedBy', 'reportsCheckedBy', 'reportsDate'].map((k) => h('p', null, t(k), h('span', { class: 'blank' })))),
  ];
}

function unavailable(key) {
  if (!(key in page.errors)) return h('p', { class: 'chart-empty' }, t('loading'));
  return h('p', { class: 'report-error', role: 'alert' }, t('reportsUnavailable', page.errors[key]));
}

function pct(v) {
  return v === null || v === undefined ? '–' : `${num(v, 1)} %`;
}

/** The balance of the selection as a table of IWA terms. */
function waterSection(sel) {
  const items = [h('h3', null, t('reportsBalance'))];
  if (!sel) {
    items.push(unavailable('water'));
  } else {
    const b = sel.total;
    const rows = [
      ['reportsInput', `${num(b.system_input_m3, 1)} m³`],
      ['reportsBilled', `${num(b.billed_metered_m3, 1)} m³`],
      ['reportsNrw', `${num(b.nrw_m3, 1)} m³`],
      ['reportsNrwPct', pct(b.nrw_pct)],
      ['reportsNrwPerConn', b.nrw_l_per_connection_day === null ? '–' : `${num(b.nrw_l_per_connection_day, 0)} L`],
      ['reportsLeakage', pct(b.leakage?.comprehensive_pct)],
      ['reportsLeakageAssessed', `${pct(b.leakage?.assessed_pct)}${b.leakage?.grade ? ' · ' + t('grade_' + b.leakage.grade) : ''}`],
      ['reportsConnections', num(b.connections, 0)],
      ['reportsCompleteness', completenessText(b.completeness)],
    ];
    items.push(h('table', { class: 'report-table balance' },
      h('tbody', null, rows.map(([k, v]) => h('tr', null, h('th', { scope: 'row' }, t(k)), h('td', null, v))))));
    if (page.water.method) items.push(h('p', { class: 'hint' }, t('reportsMethod', page.water.method)));
  }
  return h('section', { class: 'report-section', 'data-key': 'balance' }, items);
}

function completenessText(c) {
  if (!c) return '–';
  if (c.complete) return t('reportsComplete');
  return t('reportsIncomplete', num(c.coverage_pct, 1), c.meters_silent, c.meters_expected, c.silences_total);
}

function chartsSection(sel) {
  const figures = [];
  if (sel) {
    const dates = sel.days.map((d) => d.date);
    figures.push(figure('input', t('reportsChartInput'), lineChart(dates, [
      { name: t('reportsInput'), values: sel.days.map((d) => d.system_input_m3) },
      { name: t('reportsBilled'), values: sel.days.map((d) => d.billed_metered_m3) },
    ], 'm³')));
    figures.push(figure('nrw', t('reportsChartNrw'), lineChart(dates,
      [{ name: t('reportsNrwPct'), values: sel.days.map((d) => d.nrw_pct ?? null) }], '%')));
    figures.push(figure('mnf', t('reportsChartMnf'), mnfChart(sel.nights, dates)));
  } else {
    figures.push(unavailable('water'));
  }
  figures.push(page.quality ? figure('compliance', t('reportsChartCompliance'), complianceChart(page.quality))
    : unavailable('quality'));
  return h('section', { class: 'report-section charts', 'data-key': 'charts' }, h('h3', null, t('reportsCharts')),
    h('div', { class: 'figures-grid' }, figures));
}

function figure(key, caption, chart) {
  return h('figure', { class: 'report-figure', 'data-key': key }, h('figcaption', null, caption), chart);
}

/** Minimum night flow per night: one line per district (the largest few in the county view). */
function mnfChart(districts, dates) {
  const byMnf = [...districts].sort((a, b) => maxOf(b) - maxOf(a)).slice(0, MNF_LINES);
  const series = byMnf.map((d) => {
    const nights = new Map((d.night_flow?.nights ?? []).map((n) => [n.date, n.mnf_m3h]));
    return { name: d.name, values: dates.map((date) => nights.get(date) ?? null) };
  });
  if (byMnf.length === 1) {
    const nights = new Map((byMnf[0].night_flow?.nights ?? []).map((n) => [n.date, n.baseline_m3h]));
    series.push({ name: t('reportsMnfBaseline'), values: dates.map((date) => nights.get(date) ?? null), dashed: true });
  }
  return lineChart(dates, series, 'm³/h');
}

function maxOf(d) {
  return Math.max(0, ...(d.night_flow?.nights ?? []).map((n) => n.mnf_m3h ?? 0));
}

/** A line chart over the month's days; `null` values leave gaps. */
function lineChart(dates, series, unit) {
  const all = series.flatMap((x) => x.values).filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  if (dates.length === 0 || all.length === 0) return h('p', { class: 'chart-empty' }, t('reportsNoData'));
  const { lo, hi, ticks, decimals } = niceScale(Math.min(0, ...all), Math.max(...all), 5);
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const x = (i) => M.left + (dates.length === 1 ? plotW / 2 : (i / (dates.length - 1)) * plotW);
  const y = (v) => M.top + (1 - (v - lo) / (hi - lo)) * plotH;
  const every = Math.max(1, Math.ceil(dates.length / 10));
  return h('div', { class: 'report-chart-box' },
    s('svg', { class: 'report-chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-series': series.length,
      'aria-label': series.map((x) => x.name).join(', ') },
    s('g', { class: 'grid' },
      ticks.map((v) => [
        s('line', { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }),
        s('text', { class: 'tick', x: M.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, num(v, decimals))]),
      dates.map((d, i) => (i % every === 0 ? s('text', { class: 'tick', x: x(i), y: H - M.bottom + 16,
        'text-anchor': 'middle' }, d.slice(5)) : null))),
    s('path', { class: 'axis', d: `M${M.left} ${M.top} V${H - M.bottom} H${W - M.right}` }),
    s('text', { class: 'unit', x: M.left - 6, y: M.top - 10, 'text-anchor': 'end' }, unit),
    series.map((ser, k) => seriesPath(ser, k, x, y))),
    legend(series));
}

function seriesPath(ser, k, x, y) {
  let d = '';
  let drawn = 0;
  let open = false;
  const dots = [];
  ser.values.forEach((v, i) => {
    if (v === null || v === undefined || !Number.isFinite(v)) {
      open = false;
      return;
    }
    d += `${open ? 'L' : 'M'}${x(i).toFixed(1)} ${y(v).toFixed(1)}`;
    open = true;
    drawn += 1;
    dots.push(s('circle', { cx: x(i).toFixed(1), cy: y(v).toFixed(1), r: 2.5 }, s('title', null, `${ser.name}: ${num(v)}`)));
  });
  return s('g', { class: `series ser-${k}${ser.dashed ? ' dashed' : ''}` },
    s('path', { class: 'series-line', d, 'data-points': drawn }), dots);
}

function legend(series) {
  return h('ul', { class: 'report-legend' }, series.map((ser, k) =>
    h('li', { class: `ser-${k}${ser.dashed ? ' dashed' : ''}` }, h('span', { class: 'swatch', 'aria-hidden': 'true' }),
      ser.name)));
}

/** Share of samples within GB 5749-2022 limits, one bar per analyser and parameter. */
function complianceChart(q) {
  const bars = q.analysers.flatMap((a) => a.parameters.filter((p) => p.samples > 0).map((p) => ({
    label: `${a.device} · ${t('metric_' + p.metric)}`, value: p.within_pct, minutesOut: p.minutes_out,
  })));
  if (bars.length === 0) return h('p', { class: 'chart-empty' }, t('reportsNoData'));
  const rowH = 18;
  const labelW = 260;
  const height = bars.length * rowH + 30;
  const plotW = W - labelW - 70;
  const x = (v) => labelW + (v / 100) * plotW;
  return h('div', { class: 'report-chart-box' },
    s('svg', { class: 'report-chart bars', viewBox: `0 0 ${W} ${height}`, role: 'img', 'data-series': 1,
      'aria-label': t('reportsChartCompliance') },
    [0, 50, 90, 100].map((v) => s('g', { class: 'grid' },
      s('line', { x1: x(v), x2: x(v), y1: 4, y2: height - 22 }),
      s('text', { class: 'tick', x: x(v), y: height - 8, 'text-anchor': 'middle' }, `${v} %`))),
    bars.map((b, i) => {
      const y = 6 + i * rowH;
      const v = b.value ?? 0;
      return s('g', { class: `bar-row ${v >= 95 ? 'good' : v >= 80 ? 'fair' : 'poor'}` },
        s('text', { class: 'bar-label', x: labelW - 8, y: y + 12, 'text-anchor': 'end' }, b.label),
        s('rect', { class: 'bar', x: labelW, y: y + 2, width: Math.max(1, x(v) - labelW).toFixed(1), height: rowH - 5,
          'data-value': b.value ?? '' }, s('title', null, `${b.label}: ${pct(b.value)}`)),
        s('text', { class: 'bar-value', x: x(v) + 6, y: y + 12 }, pct(b.value)));
    })));
}

/** Every district's month in one table. */
function districtsSection() {
  const w = page.water;
  if (!w) return h('section', { class: 'report-section', 'data-key': 'districts' }, h('h3', null, t('reportsDistricts')),
    unavailable('water'));
  const cols = ['reportsDistrict', 'reportsInput', 'reportsBilled', 'reportsNrw', 'reportsNrwPct', 'reportsNrwPerConn',
    'reportsMnfTrend', 'reportsCompleteness'];
  return h('section', { class: 'report-section', 'data-key': 'districts' }, h('h3', null, t('reportsDistricts')),
    h('table', { class: 'report-table districts' },
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, t(c))))),
      h('tbody', null, w.districts.map((d) => h('tr', { 'data-key': d.district },
        h('th', { scope: 'row' }, d.name),
        h('td', { class: 'n' }, num(d.total.system_input_m3, 1)),
        h('td', { class: 'n' }, num(d.total.billed_metered_m3, 1)),
        h('td', { class: 'n' }, num(d.total.nrw_m3, 1)),
        h('td', { class: 'n' }, pct(d.total.nrw_pct)),
        h('td', { class: 'n' }, num(d.total.nrw_l_per_connection_day, 0)),
        h('td', { class: 'n' }, d.night_flow?.trend_m3h_per_day === null || d.night_flow?.trend_m3h_per_day === undefined
          ? '–' : t('reportsPerDay', num(d.night_flow.trend_m3h_per_day, 3))),
        h('td', null, completenessText(d.total.completeness)))))));
}

function supplySection() {
  const sp = page.supply;
  const items = [h('h3', null, t('reportsSupply'))];
  if (!sp) {
    items.push(unavailable('supply'));
  } else {
    const cols = ['reportsVillage', 'reportsInterruptionH', 'reportsPlannedH', 'reportsLowPressureH', 'reportsUnknownH'];
    items.push(h('table', { class: 'report-table supply' },
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, t(c))))),
      h('tbody', null, sp.villages.map((v) => h('tr', { 'data-key': v.village },
        h('th', { scope: 'row' }, v.name),
        [v.interruption_hours, v.planned_interruption_hours, v.low_pressure_hours, v.unknown_hours]
          .map((x) => h('td', { class: 'n' }, num(x, 1))))))));
  }
  return h('section', { class: 'report-section', 'data-key': 'supply' }, items);
}

function qualitySection() {
  const q = page.quality;
  const items = [h('h3', null, t('reportsQuality'))];
  if (!q) {
    items.push(unavailable('quality'));
  } else {
    const cols = ['reportsAnalyser', 'metric', 'reportsSamples', 'reportsWithin', 'reportsMinutesOut', 'reportsLongest'];
    items.push(h('table', { class: 'report-table quality' },
      h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, t(c))))),
      h('tbody', null, q.analysers.flatMap((a) => a.parameters.map((p) => h('tr', { 'data-key': `${a.device}/${p.metric}` },
        h('th', { scope: 'row' }, a.device),
        h('td', null, t('metric_' + p.metric)),
        h('td', { class: 'n' }, num(p.samples, 0)),
        h('td', { class: 'n' }, pct(p.within_pct)),
        h('td', { class: 'n' }, num(p.minutes_out, 0)),
        h('td', { class: 'n' }, p.longest_excursion ? num(p.longest_excursion.minutes, 0) : '–')))))));
  }
  return h('section', { class: 'report-section', 'data-key': 'quality' }, items);
}

// ---- language and events -----------------------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = lang() === 'zh' ? 'zh-CN' : 'en';
  document.title = t('reportsTitle');
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  $('lang').textContent = t('switchTo');
  $('lang').setAttribute('lang', otherLang() === 'zh' ? 'zh-CN' : 'en');
  render();
}

/** The month and district are in the address (?month=2026-11&district=dongcun), for sharing. */
function remember() {
  const q = new URLSearchParams(location.search);
  q.set('month', page.month);
  if (page.district) q.set('district', page.district);
  else q.delete('district');
  history.replaceState(null, '', `${location.pathname}?${q}`);
}

document.addEventListener('click', (event) => {
  const el = event.target.closest('[data-action]');
  if (!el) return;
  if (el.dataset.action === 'lang') {
    setLang(otherLang());
    applyLanguage();
  } else if (el.dataset.action === 'print') {
    window.print();
  }
});

$('month').addEventListener('change', () => {
  if (!/^\d{4}-\d{2}$/.test($('month').value)) return;
  page.month = $('month').value;
  remember();
  load().catch(report);
});

$('district').addEventListener('change', () => {
  page.district = $('district').value;
  remember();
  render();
});

$('report-controls').addEventListener('submit', (event) => event.preventDefault());

function report(error) {
  if (typeof reportError === 'function') reportError(error);
  else setTimeout(() => { throw error; });
}

const asked = new URLSearchParams(location.search);
page.month = /^\d{4}-\d{2}$/.test(asked.get('month') ?? '') ? asked.get('month') : lastMonth(serverNow());
page.district = asked.get('district') ?? '';
applyLanguage();
load().catch(report);
