// Role: one card per site with its latest values: state and why, age of the newest
// reading, gateway state, device counts by kind, and per kind a picture: tank and pump,
// water quality against its limits, meters in sum, speakers as dots, barn climate and the
// herd grid. Values are buttons that open their chart.

import { h } from './dom.js';
import { t } from './strings.js';
import { ago, num, valueText, unitText, issueText } from './format.js';
import { KIND_ORDER, isHealth } from './model.js';
import { LIST_DEVICES_UP_TO, FEVER_C, CARDS_PER_KIND_UP_TO } from './config.js';
import { noFilter, passes } from './sitelist.js';
import { hasTable, siteTable } from './tables.js';
import {
  chartLink, metricButton, metricRow, tank, pumpIcon, qualityBand, herdGrid, herdLegend, speakerDots,
  HERD_PAGE,
} from './widgets.js';

/**
 * Every card, as fresh elements, in the model's order. `ui` carries page state (herd
 * focus, filter). Past CARDS_PER_KIND_UP_TO sites of one kind, those sites are rows of one
 * table instead (tables.js): a county of hundreds of villages reads better so, and the
 * page stays light.
 */
export function siteCards(model, ui, listed = null) {
  // `listed`: site kinds the windowed list (sitelist.js) shows instead of cards.
  const shown = model.sites.filter((site) => passes(site, ui.filter ?? noFilter(), ui.onlyProblems)
    && !listed?.has(site.kind));
  if (shown.length === 0) {
    if (listed) return [];
    return [h('p', { class: 'empty' }, ui.onlyProblems ? t('noProblems') : t('noSites'))];
  }
  const byKind = new Map();
  for (const site of shown) {
    if (!byKind.has(site.kind)) byKind.set(site.kind, []);
    byKind.get(site.kind).push(site);
  }
  const out = [];
  for (const [kind, sites] of byKind) {
    if (sites.length > CARDS_PER_KIND_UP_TO && hasTable(kind)) out.push(siteTable(kind, sites, model));
    else out.push(...sites.map((site) => card(site, model, ui)));
  }
  return out;
}

/**
 * One site's card. `opts.found`: a device to mark in it (a search hit); `opts.detail`: the
 * card of an opened site at county size, with a close button and its meters listed.
 */
export function card(site, model, ui, opts = {}) {
  const title = site.id === '' ? t('otherDevices') : site.name;
  return h('article', { class: `card state-${site.state} kind-${site.kind}${opts.detail ? ' detail' : ''}`,
    'data-key': (opts.detail ? 'detail:' : 'site:') + site.id, 'data-site': site.id, tabindex: -1, 'aria-label': title },
  head(site, model, opts.detail),
  issues(site),
  counts(site),
  site.pumps.map((p) => pumpPanel(p)),
  site.analysers.map((a) => qualityPanel(a)),
  site.meters.total ? metersPanel(site.meters, model, opts) : null,
  site.speakers.length ? speakersPanel(site.speakers) : null,
  site.speakerCounts ? panel('speakers', `${t('kind_speaker')} · ${t('countOnline', site.speakerCounts.online,
    site.speakerCounts.total)}`) : null,
  // The herd before the barn: the few sick cows are what a dairy manager looks for first.
  site.herd.cells.length ? herdPanel(site.herd, ui, site) : null,
  site.barns.map((b) => barnPanel(b)),
  site.others.length && !model.summaryOnly ? othersPanel(site.others) : null);
}

function head(site, model, closable) {
  const names = site.zh
    ? [h('span', { class: 'zh', lang: 'zh' }, site.zh), ' ', h('span', { class: 'py' }, site.pinyin)]
    : [site.id === '' ? t('otherDevices') : site.name];
  const gateways = site.gateways.map((g) => {
    const state = g.online === true ? 'on' : g.online === false ? 'off' : 'unknown';
    const text = `${t('gateway')} ${g.id}: ${t('gw_' + state)}`;
    // Online says itself with a green dot; anything else is written out.
    return h('span', { class: `gw ${state}`, 'data-key': g.id, title: text },
      h('span', { class: 'gw-dot', 'aria-hidden': 'true' }),
      state === 'on' ? [g.id, h('span', { class: 'sr' }, `: ${t('gw_on')}`)] : text);
  });
  return h('header', { class: 'card-head' },
    h('div', { class: 'card-title' },
      h('h3', null, names),
      h('span', { class: `badge state-${site.state}` }, h('span', { class: 'glyph', 'aria-hidden': 'true' }),
        t('state_' + site.state)),
      closable ? h('button', { type: 'button', class: 'close', 'data-action': 'close-site', 'aria-label': t('close') }, '×')
        : null),
    h('p', { class: 'meta' },
      h('span', { class: 'site-kind' }, t('site_' + site.kind)), ' · ',
      site.townshipName ? [h('span', { class: 'site-township' }, site.townshipName), ' · '] : null,
      h('span', { class: 'age' }, site.newest === null ? t('noReadings') : t('newest', ago(model.now - site.newest))),
      gateways.length ? [' · ', gateways] : null));
}

function issues(site) {
  if (!site.issues.length) return null;
  return h('ul', { class: 'issues' }, site.issues.map((i) => h('li', { class: `issue state-${i.state}` },
    issueText(i))));
}

function counts(site) {
  const items = [];
  for (const kind of KIND_ORDER) {
    const c = site.counts.get(kind);
    if (!c) continue;
    const fresh = c.ok;
    const cls = c.offline ? 'bad' : fresh < c.total ? 'warn' : 'good';
    items.push(h('li', { class: `count ${cls}`, 'data-key': kind },
      h('span', { class: 'count-kind' }, t('kind_' + kind)), ' ',
      h('span', { class: 'count-n', title: t('countsTitle', c) }, t('countOnline', fresh, c.total)),
      c.offline ? h('span', { class: 'count-off' }, ' ' + t('countOffline', c.offline)) : null));
  }
  return items.length ? h('ul', { class: 'counts', 'aria-label': t('devices') }, items) : null;
}

function panel(kind, title, ...children) {
  return h('section', { class: `panel panel-${kind}` }, h('h4', null, title), children);
}

function pumpPanel(p) {
  const d = p.device;
  const running = p.running === 1 ? t('pump_running') : p.running === 0 ? t('pump_stopped') : t('noData');
  return panel('pump', `${t('kind_pump_station')} · ${d.id}`,
    h('div', { class: 'pump-row' },
      h('div', { class: 'pictures' },
        h('button', { type: 'button', class: 'picture', ...chartLink(d.id, 'tank_level',
          `${t('tankLevel')}: ${t('openChart')}`) }, tank(d, p.level)),
        h('div', { class: 'pump-state' },
          h('button', { type: 'button', class: 'picture', ...chartLink(d.id, 'pump_running',
            `${t('metric_pump_running')}: ${running}. ${t('openChart')}`) }, pumpIcon(p.running, p.faults.length > 0)),
          h('span', { class: `run ${p.faults.length ? 'fault' : p.running === 1 ? 'on' : 'off'}` }, running),
          p.faults.length ? h('span', { class: 'fault-list' }, p.faults.map((k) => t(k)).join(', ')) : null)),
      h('dl', { class: 'values' },
        metricRow(d, 'flow', 'outletFlow'),
        ['pump_flow', 'pressure', 'pump_current'].map((m) => metricRow(d, m)),
        metricRow(d, 'free_chlorine', 'outletChlorine'),
        metricRow(d, 'volume_total'))));
}

function qualityPanel(a) {
  const d = a.device;
  return panel('quality', `${t('kind_water_quality')} · ${d.id}`,
    h('table', { class: 'quality' },
      h('caption', { class: 'sr' }, t('qualityCaption')),
      h('tbody', null, a.params.map((p) => h('tr', { class: `q ${p.verdict}`, 'data-key': p.metric },
        h('th', { scope: 'row' }, t('metric_' + p.metric)),
        h('td', null, metricButton(d, p.metric, p.value, p.unit, p.verdict !== 'ok' ? 'out' : '')),
        h('td', { class: 'limits' }, p.limits ? [qualityBand(p), h('span', { class: 'sr' }, limitText(p))]
          : h('span', { class: 'no-limit' }, t('noLimit'))))))));
}

function limitText(p) {
  const u = unitText(p.unit);
  const { min, max } = p.limits;
  const range = min !== undefined && max !== undefined ? `${num(min)}–${num(max)} ${u}` : `≤ ${num(max)} ${u}`;
  return `${t('limit')} ${range.trim()}: ${t('verdict_' + p.verdict)}`;
}

/** A row of a definition list with a plain value. */
function row(labelKey, value, cls) {
  return h('div', { class: `row ${cls ?? ''}`.trim() }, h('dt', null, t(labelKey)), h('dd', null, value));
}

function metersPanel(m, model, opts = {}) {
  const summary = h('dl', { class: 'values' },
    row('metersReporting', t('countOnline', m.reporting, m.total)),
    row('metersFlow', valueText('flow', m.flow, 'm3/h')),
    m.lowBattery ? row('lowBattery', String(m.lowBattery), 'warn') : null,
    m.valvesClosed ? row('valvesClosed', String(m.valvesClosed)) : null,
    m.faults ? row('meterFaults', String(m.faults), 'warn') : null);
  if (m.counted) return panel('meters', t('kind_water_meter'), summary);
  // An opened site lists its meters (a village has a hundred or so), the found one open and marked.
  const listable = m.list.length && (opts.detail || (m.total <= LIST_DEVICES_UP_TO && !model.summaryOnly));
  const found = opts.found && m.list.some((d) => d.id === opts.found);
  const list = listable
    ? h('details', { class: 'meter-list', open: found || null }, h('summary', null, t('allMeters', m.total)),
      meterTable(m.list, model, opts.found))
    : h('p', { class: 'hint' }, t('summaryOnly'));
  return panel('meters', t('kind_water_meter'), summary, list);
}

function meterTable(list, model, found) {
  return h('table', { class: 'devices' },
    h('thead', null, h('tr', null, h('th', { scope: 'col' }, t('device')), h('th', { scope: 'col' }, t('metric_flow')),
      h('th', { scope: 'col' }, t('metric_volume_total')), h('th', { scope: 'col' }, t('age')))),
    h('tbody', null, list.map((d) => h('tr', { 'data-key': d.id, class: `state-${d.state}${d.id === found ? ' found' : ''}`,
      'data-device': d.id === found ? d.id : null },
      h('th', { scope: 'row' }, d.id),
      h('td', null, d.m.flow ? metricButton(d, 'flow', d.m.flow.value, d.m.flow.unit) : '–'),
      h('td', null, d.m.volume_total ? metricButton(d, 'volume_total', d.m.volume_total.value, d.m.volume_total.unit)
        : '–'),
      h('td', null, d.newest === null ? '–' : ago(model.now - d.newest))))));
}

function speakersPanel(speakers) {
  const on = speakers.filter((x) => x.online).length;
  return panel('speakers', `${t('kind_speaker')} · ${t('countOnline', on, speakers.length)}`, speakerDots(speakers));
}

function barnPanel(b) {
  const d = b.device;
  return panel('barn', `${t('kind_barn_climate')} · ${d.id}`,
    h('dl', { class: 'values' },
      metricRow(d, 'barn_temperature'), metricRow(d, 'relative_humidity'),
      b.thi === null ? null : h('div', { class: `row thi ${b.thi >= 72 ? 'warn' : ''}` },
        h('dt', null, h('abbr', { title: t('thiLong') }, 'THI')),
        h('dd', null, b.thiMeasured ? metricButton(d, 'thi', b.thi, 'index') : num(b.thi, 0), ' · ', t(b.band)))));
}

function herdPanel(herd, ui, site) {
  const warmest = herd.cells.filter((c) => c.temp !== null).slice(0, Math.max(3, herd.fever.length)).slice(0, 12);
  const pages = Math.ceil(herd.cells.length / HERD_PAGE);
  const page = Math.min(pages - 1, Math.max(0, ui.herdPages?.get(site.id) ?? 0));
  return panel('herd', t('herdTitle', herd.cells.length, herd.fever.length),
    // Those needing attention first (the grid is warmest first), the rest a page at a time.
    herd.fever.length ? h('p', { class: 'herd-attention' }, t('herdAttention', herd.fever.length)) : null,
    herdGrid(herd, ui.herdFocus, page),
    pages > 1 ? h('div', { class: 'pager', role: 'group', 'aria-label': t('herdPages') },
      h('button', { type: 'button', 'data-action': 'herd-page', 'data-site': site.id, 'data-page': page - 1,
        disabled: page === 0 || null }, t('prevPage')),
      h('span', { class: 'pager-where' }, t('herdPageOf', page * HERD_PAGE + 1,
        Math.min(herd.cells.length, (page + 1) * HERD_PAGE), herd.cells.length)),
      h('button', { type: 'button', 'data-action': 'herd-page', 'data-site': site.id, 'data-page': page + 1,
        disabled: page >= pages - 1 || null }, t('nextPage'))) : null,
    herdLegend(),
    warmest.length ? h('div', { class: 'warmest' }, h('span', { class: 'warmest-title' }, t('warmest')),
      h('ul', null, warmest.map((c) => h('li', { 'data-key': c.device.id },
        h('button', { type: 'button', class: `cow-link${c.temp >= FEVER_C ? ' fever' : ''}`,
          ...chartLink(c.device.id, 'body_temperature', `${c.device.id}: ${t('openChart')}`) },
        `${c.device.id} ${valueText('body_temperature', c.temp, '°C')}`))))) : null);
}

function othersPanel(list) {
  return panel('others', t('kind_external'), list.slice(0, LIST_DEVICES_UP_TO).map((d) => h('div', { 'data-key': d.id },
    h('h5', null, d.id),
    h('dl', { class: 'values' }, Object.keys(d.m).filter((m) => !isHealth(m)).map((m) => metricRow(d, m))))));
}
