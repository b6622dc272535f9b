// Role: sites as rows of one table, worst first, for counties with many sites of a kind
// (hundreds of villages, tens of waterworks): per row the state and why, the newest
// reading, and the few figures of that kind an operator scans (meters, flow and speakers
// of a village; tank, pump, flow, pressure and water quality of a waterworks).

import { h, s } from './dom.js';
import { t } from './strings.js';
import { ago, num, valueText, issueText } from './format.js';
import { STATES } from './model.js';
import { speakerDots, metricButton } from './widgets.js';
import { TANK_HEIGHT_M, TANK_LOW_M } from './config.js';

/** Columns after name, state and newest reading, by site kind: [heading key, cell of a site]. */
const COLUMNS = {
  village: [
    ['kind_water_meter', (site) => t('countOnline', site.meters.reporting, site.meters.total)],
    ['metersFlow', (site) => valueText('flow', site.meters.flow, 'm3/h')],
    ['kind_speaker', (site) => (site.speakers.length ? speakerDots(site.speakers)
      : site.speakerCounts ? t('countOnline', site.speakerCounts.online, site.speakerCounts.total) : '–')],
  ],
  waterworks: [
    ['tankLevel', (site) => site.pumps.map((p) => h('span', { class: 'mini-tank-cell' }, miniTank(p.level),
      p.level === null ? '–' : `${num(p.level, 2)} m`))],
    ['kind_pump_station', (site) => site.pumps.map((p) => h('div', { class: `run ${pumpClass(p)}` }, pumpText(p)))],
    ['outletFlow', (site) => site.pumps.map((p) => metricCell(p.device, 'flow'))],
    ['metric_pressure', (site) => site.pumps.map((p) => metricCell(p.device, 'pressure'))],
    ['kind_water_quality', (site) => site.analysers.map((a) => h('div', { class: 'quality-cell' },
      a.params.filter((p) => p.limits).map((p) => h('span', { class: `q ${p.verdict}` },
        metricButton(a.device, p.metric, p.value, p.unit, p.verdict !== 'ok' ? 'out' : '')))))],
  ],
};

/** True if sites of `kind` can be shown as a table. */
export function hasTable(kind) {
  return kind in COLUMNS;
}

/** One table of `sites`, all of `kind`. */
export function siteTable(kind, sites, model) {
  const rank = (site) => STATES.indexOf(site.state);
  const rows = [...sites].sort((a, b) => rank(a) - rank(b) || a.id.localeCompare(b.id, undefined, { numeric: true }));
  const columns = COLUMNS[kind];
  return h('section', { class: 'card site-table', 'data-key': 'table:' + kind, 'aria-label': t('site_' + kind) },
    h('h3', null, t('tableTitle', t('site_' + kind), sites.length)),
    h('div', { class: 'table-scroll' }, h('table', { class: 'sites-table' },
      h('thead', null, h('tr', null, ['site', 'state', 'newestCol', ...columns.map(([key]) => key)]
        .map((key) => h('th', { scope: 'col' }, t(key))))),
      h('tbody', null, rows.map((site) => {
        const gwDown = site.gateways.some((g) => g.online === false);
        return h('tr', { class: `state-${site.state}`, 'data-key': site.id, 'data-site': site.id, tabindex: -1 },
          h('th', { scope: 'row' }, site.zh ? [h('span', { class: 'zh', lang: 'zh' }, site.zh), ' ',
            h('span', { class: 'py' }, site.pinyin)] : site.name),
          h('td', null,
            h('span', { class: 'badge' }, h('span', { class: 'glyph', 'aria-hidden': 'true' }), t('state_' + site.state)),
            site.issues.length ? h('div', { class: 'why' }, issueText(site.issues[0])) : null),
          h('td', null, site.newest === null ? '–' : ago(model.now - site.newest),
            gwDown ? h('div', { class: 'why' }, `${t('gateway')} ${t('gw_off')}`) : null),
          columns.map(([, cell]) => h('td', null, cell(site))));
      })))));
}

function metricCell(device, metric) {
  const r = device.m[metric];
  return h('div', null, r ? metricButton(device, metric, r.value, r.unit) : '–');
}

function pumpClass(p) {
  return p.faults.length ? 'fault' : p.running === 1 ? 'on' : 'off';
}

function pumpText(p) {
  if (p.faults.length) return `${t('pump_fault')}: ${p.faults.map((k) => t(k)).join(', ')}`;
  return p.running === 1 ? t('pump_running') : p.running === 0 ? t('pump_stopped') : t('noData');
}

/** A tank as a small bar, for a table row. */
function miniTank(level) {
  const fill = level === null ? 0 : Math.max(0, Math.min(1, level / Math.max(TANK_HEIGHT_M, level)));
  const low = level !== null && level < TANK_LOW_M;
  return s('svg', { class: `mini-tank${low ? ' low' : ''}`, viewBox: '0 0 12 22', width: 12, height: 22,
    'aria-hidden': 'true' },
  s('rect', { class: 'tank-water', x: 1, y: 1 + 20 * (1 - fill), width: 10, height: 20 * fill }),
  s('rect', { class: 'tank-wall', x: 0.5, y: 0.5, width: 11, height: 21, rx: 2 }));
}
