// Role: the page's entry point. Every 5 s it reads sites, devices, latest values and open
// alerts, builds the model and redraws the summary, the alerts, the map and the cards in
// place (no flicker, focus kept); it says when it last updated and, clearly, when the API
// cannot be reached. At county size (datasource.js) it reads summaries revalidated by ETag,
// refreshes when the server's events say something changed and polls slowly otherwise;
// the map groups villages by township, the site list filters, searches and draws only the
// rows in view (sitelist.js), and a broadcast's progress is shown by township.
// All clicks and keys are handled here by delegation on data-action attributes, so no
// element carries an inline handler.

import { h, morphChildrenOf } from './dom.js';
import { t, lang, setLang, otherLang } from './strings.js';
import { serverNow } from './api.js';
import { buildModel, STATES } from './model.js';
import { countyMap, legendItems, mapNav, offerPick, groupsTownships } from './map.js';
import { siteCards, card } from './cards.js';
import { DataSource } from './datasource.js';
import { SiteList, noFilter, passes, renderFilters, searchResults, foundPanel } from './sitelist.js';
import { townshipPanel } from './bctownships.js';
import { CARDS_PER_KIND_UP_TO } from './config.js';
import { Chart } from './chart.js';
import { AckDialog, alertMarks, alertsPanel, severityCounts, sortAlerts } from './alerts.js';
import { broadcastDetail, broadcastMarks, broadcastsPanel, isActive } from './broadcasts.js';
import { LiveBroadcasts } from './bclive.js';
import { Compose } from './compose.js';
import { approvalQueue, DecideDialog } from './approvals.js';
import { may } from './bcapi.js';
import { clockSeconds, dateTime, issueText } from './format.js';
import { REFRESH_MS, SITES_REFRESH_MS, ATTENTION_ITEMS } from './config.js';
import { AlertDetail } from './alert-detail.js';
import { AlertHistory, MaintenanceDialog } from './alert-history.js';
import { ControlPanel } from './control.js';
import { loadSession, mountSignIn, onSession } from './session.js';
import { mountUsers } from './users.js';
import { mountAudit } from './audit.js';

const $ = (id) => document.getElementById(id);

/** What the page remembers between refreshes. */
const ui = {
  sites: null,
  sitesAt: 0,
  devices: null,
  latest: null,
  model: null,
  /** When the last complete refresh arrived (browser clock). */
  updatedAt: null,
  /** Why the last refresh failed, if it did. */
  failure: null,
  failingSince: null,
  refreshes: 0,
  onlyProblems: false,
  /** Which herd cell (by position) holds the grid's tab stop. */
  herdFocus: 0,
  /** Open alerts, sorted (null until read); `off` without rules; `error` if the last read failed. */
  alerts: { list: null, off: false, error: null },
  /** Broadcasts, newest first (null until read); `off` without the API; `error` if the last read failed. */
  broadcasts: { list: null, off: false, error: null },
  /** The newest active broadcast with its deliveries, for the map (null when none is active). */
  broadcast: null,
  /** The newest broadcast with its deliveries, active or not, for the progress by township. */
  lastBroadcast: null,
  /** GET /api/v1/summary by site (county size), else null. */
  summary: null,
  /** The site list's filters and search text (sitelist.js). */
  filter: noFilter(),
  /** The opened site (its card above the list), or null. */
  selected: null,
  /** The opened site's own devices and values (county size: datasource.open). */
  detail: null,
  /** The device a search found and the person opened: `{ id, site, rows }`, or null. */
  found: null,
  /** Devices the search found (null while searching), and why it failed. */
  searchHits: [],
  searchError: null,
  /** The township opened on the map (null: the whole county). */
  township: null,
  /** Page of each herd grid, by site id. */
  herdPages: new Map(),
  /** The broadcast console: the broadcast opened (id or null), and whether all are listed. */
  bc: { selected: null, history: false },
};

/** With the server's change events, the page still polls this often (a missed event costs at most this). */
const EVENTS_POLL_MS = 30_000;
const source = new DataSource(() => kick(), () => redraw());
const siteList = new SiteList($('site-list'));
const filterEls = { township: $('filter-township'), townshipLabel: $('filter-township-label'), kind: $('filter-kind'),
  state: $('filter-state') };

/** Live progress of broadcasts (server-sent events): redraws what it changes. */
const live = new LiveBroadcasts(() => {
  if (!ui.model) return;
  followBroadcasts();
  renderBroadcasts();
  drawMap($('map').clientWidth);
});

const chart = new Chart({ dialog: $('chart'), title: $('chart-title'), controls: $('chart-controls'),
  body: $('chart-body') });

/** Reads the API; keeps the previous data when it cannot. */
async function refresh() {
  const t0 = performance.now();
  try {
    const withSites = !ui.sites || Date.now() - ui.sitesAt > SITES_REFRESH_MS;
    const { sites, devices, latest, summary, alerts, broadcasts, detail } = await source.read(withSites);
    if (sites) {
      ui.sites = sites;
      ui.sitesAt = Date.now();
    }
    ui.devices = devices;
    ui.latest = latest;
    ui.summary = summary;
    ui.detail = detail;
    // An unreadable alert list keeps the last one, marked as not current.
    ui.alerts = { list: alerts.list ? sortAlerts(alerts.list) : alerts.off ? null : ui.alerts.list,
      off: Boolean(alerts.off), error: alerts.error ?? null };
    ui.broadcasts = { list: broadcasts.list ?? (broadcasts.off ? null : ui.broadcasts.list),
      off: Boolean(broadcasts.off), error: broadcasts.error ?? null };
    // Deliveries come from the live stream: one read of a broadcast, then its events.
    live.start();
    followBroadcasts();
    ui.updatedAt = Date.now();
    ui.failure = null;
    ui.failingSince = null;
  } catch (e) {
    if (e.name !== 'ApiError') throw e;
    ui.failure = e.message;
    ui.failingSince ??= Date.now();
  }
  const t1 = performance.now();
  if (ui.sites) ui.model = buildModel(ui.sites, ui.devices, ui.latest, serverNow(), ui.summary);
  const t2 = performance.now();
  // Let the browser handle input between building the model and drawing it (a county's
  // worth of rows takes a while for each).
  await nextTask();
  const t3 = performance.now();
  render();
  const t4 = performance.now();
  // How long the parts took, for people checking the page at county scale (devtools).
  document.documentElement.dataset.timing =
    `fetch ${Math.round(t1 - t0)} ms, model ${Math.round(t2 - t1)} ms, render ${Math.round(t4 - t3)} ms, ` +
    `${ui.latest?.length ?? 0} rows`;
  ui.refreshes += 1;
  document.documentElement.dataset.refreshes = String(ui.refreshes);
  if (ui.model) {
    document.documentElement.dataset.ready = 'true';
    source.drawn();
  }
  chart.refreshIfDue();
  control.refresh().catch(report);
}

/** The stream brought new values (county size): rebuild the model from what the page holds and draw it. */
let redrawPending = false;
function redraw() {
  if (redrawPending || !ui.sites) return;
  redrawPending = true;
  requestAnimationFrame(() => {
    redrawPending = false;
    ui.latest = source.latest();
    ui.model = buildModel(ui.sites, ui.devices, ui.latest, serverNow(), ui.summary);
    render();
  });
}

/**
 * The broadcasts the page follows live (bclive.js): the newest active one, for the map, and
 * the newest one, over or not, for its progress by township.
 */
function followBroadcasts() {
  const list = ui.broadcasts.list ?? [];
  ui.broadcast = live.followActive(list, isActive);
  const newest = list.find(isActive) ?? list[0];
  ui.lastBroadcast = newest ? live.follow(newest.id) : null;
}

/** What goes on the map's markers: alert rings and the active broadcast's speaker badges. */
function drawMap(width) {
  morphChildrenOf($('map'), countyMap(ui.model, width, alertMarks(ui.alerts.list),
    broadcastMarks(ui.broadcast, speakerDevices()), ui.township));
  morphChildrenOf($('map-nav'), mapNav(ui.model, ui.township));
  compose.decorate($('map'));
}

/**
 * Speakers with their sites, for the broadcast's marks: the devices read (a small county),
 * else each delivery's gateway's site (at county size the page does not read every speaker).
 */
function speakerDevices() {
  if (!ui.summary || !ui.broadcast?.deliveries) return ui.devices;
  const gatewaySite = new Map((ui.devices ?? []).filter((d) => d.kind === 'gateway').map((d) => [d.id, d.site]));
  return ui.broadcast.deliveries.map((d) => ({ id: d.speaker, site: gatewaySite.get(d.gateway) ?? null }));
}

/** The site of a delivery: its speaker's device, else its gateway's site. */
function deliverySite() {
  const bySpeaker = new Map((ui.devices ?? []).filter((d) => d.kind === 'speaker').map((d) => [d.id, d.site]));
  const byGateway = new Map((ui.devices ?? []).filter((d) => d.kind === 'gateway').map((d) => [d.id, d.site]));
  return (d) => bySpeaker.get(d.speaker) ?? byGateway.get(d.gateway) ?? null;
}

/** Site kinds shown as rows of the windowed list: villages, when there are more than cards suit. */
function listedKinds(model) {
  const villages = model.sites.filter((site) => site.kind === 'village').length;
  return villages > CARDS_PER_KIND_UP_TO ? new Set(['village']) : null;
}

/** The opened site's model: its own devices read whole (county size), or the page's model. */
function detailSite() {
  if (ui.selected === null) return null;
  const d = ui.detail;
  if (ui.summary && d?.site === ui.selected && d.at) {
    const raw = ui.sites.find((x) => x.id === ui.selected);
    if (!raw) return null;
    const model = buildModel([raw], d.devices, d.latest, serverNow());
    return { site: model.sites.find((x) => x.id === ui.selected), model };
  }
  const site = ui.model.sites.find((x) => x.id === ui.selected);
  return site ? { site, model: ui.model, loading: Boolean(ui.summary) } : null;
}

/** The list, the cards, the search's hits, the found device and the opened site. */
function renderSites() {
  const model = ui.model;
  renderFilters(filterEls, model, ui.filter);
  const listed = listedKinds(model);
  morphChildrenOf($('search-results'), searchResults(ui.filter, model, ui.searchHits, ui.searchError));
  const opened = listed ? detailSite() : null;
  const foundDevice = ui.found ? foundModel() : null;
  morphChildrenOf($('site-detail'),
    ui.found ? foundPanel(ui.found.id, foundDevice, model.sites.find((x) => x.id === ui.found.site)) : null,
    opened ? card(opened.site, opened.model, ui, { detail: true, found: ui.found?.id }) : null,
    opened?.loading ? h('p', { class: 'hint' }, t('loading')) : null);
  morphChildrenOf($('sites'), ...siteCards(model, ui, listed));
  if (!listed) {
    siteList.show([], model, null, '');
    return;
  }
  const rank = (site) => STATES.indexOf(site.state);
  const rows = model.sites.filter((site) => listed.has(site.kind) && passes(site, ui.filter, ui.onlyProblems))
    .sort((a, b) => rank(a) - rank(b) || String(a.township ?? '').localeCompare(String(b.township ?? ''))
      || a.id.localeCompare(b.id, undefined, { numeric: true }));
  const all = model.sites.filter((site) => listed.has(site.kind)).length;
  siteList.show(rows, model, ui.selected, rows.length ? t('listTitle', rows.length, all) : t('listEmpty', all));
}

/** The found device as the model has it (a small county), or built from its own latest values. */
function foundModel() {
  const f = ui.found;
  const inModel = ui.model.sites.find((x) => x.id === f.site)?.kinds;
  for (const list of inModel?.values() ?? []) {
    const d = list.find((x) => x.id === f.id);
    if (d) return d;
  }
  if (!f.rows) return null;
  const raw = ui.sites.find((x) => x.id === f.site) ?? { id: f.site ?? '', name: f.site ?? '' };
  const model = buildModel([raw], [], f.rows, serverNow());
  for (const site of model.sites) {
    for (const list of site.kinds.values()) {
      const d = list.find((x) => x.id === f.id);
      if (d) return Object.assign(d, { name: f.name ?? null });
    }
  }
  return null;
}

function render() {
  // Read the map's width before changing anything, so the browser need not lay out twice.
  const mapWidth = $('map').clientWidth;
  renderStatus();
  if (!ui.model) return;
  morphChildrenOf($('summary'), summary(ui.model));
  renderAlerts();
  alertDetail.refresh();
  control.render();
  renderBroadcasts();
  drawMap(mapWidth);
  morphChildrenOf($('attention'), attentionList(ui.model));
  renderSites();
}

function renderAlerts() {
  const list = ui.alerts.list ?? [];
  $('alerts-count').textContent = list.length ? t('alertsCount', severityCounts(list)) : '';
  const worst = list.find((a) => a.state !== 'pending')?.severity;
  $('alerts-panel').className = `alerts-panel${worst ? ' sev-' + worst : ''}`;
  morphChildrenOf($('alerts'), alertsPanel(ui.alerts, ui.model));
}

function renderBroadcasts() {
  const shown = { ...ui.broadcasts, list: live.overlay(ui.broadcasts.list) };
  const list = shown.list ?? [];
  const active = list.filter(isActive);
  $('broadcasts-count').textContent = active.length ? t('broadcastsActive', active.length) : '';
  // Hidden on a server without broadcasts; one line when there are none yet.
  $('broadcasts-panel').hidden = ui.broadcasts.off;
  $('broadcasts-panel').className = `broadcasts-panel${active.length ? ' level-' + active[0].level : ''}`;
  const creator = !ui.broadcasts.off && tenants().some((x) => may('create', x));
  morphChildrenOf($('bc-tools'), creator ? h('button', { type: 'button', id: 'bc-new', class: 'bc-new',
    'data-action': 'bc-new', 'aria-expanded': compose.isOpen ? 'true' : 'false', 'aria-controls': 'compose-panel' },
  t('bcNewButton')) : null);
  if (!creator && compose.isOpen) compose.close();
  morphChildrenOf($('approvals'), approvalQueue(list, ui.sites));
  morphChildrenOf($('broadcasts'), broadcastsPanel(shown, ui.bc));
  morphChildrenOf($('bc-townships'), ui.broadcasts.off ? null : townshipPanel(ui.lastBroadcast, ui.model, deliverySite()));
  const opened = ui.bc.selected === null ? null : live.follow(ui.bc.selected);
  morphChildrenOf($('bc-detail'), ui.bc.selected === null ? null : opened
    ? broadcastDetail(opened, { sites: ui.sites, live: live.live, devices: ui.devices })
    : h('p', { class: 'hint' }, t('loading')));
}

/** The tenants of the county's sites (what `can()` is asked about). */
function tenants() {
  return [...new Set((ui.sites ?? []).map((x) => x.tenant).filter(Boolean))];
}

function renderStatus() {
  const updated = $('updated');
  updated.textContent = ui.updatedAt ? t('lastUpdated', clockSeconds(ui.updatedAt)) : t('connecting');
  updated.classList.toggle('late', ui.failure !== null);
  const banner = $('unreachable');
  banner.hidden = ui.failure === null;
  if (ui.failure !== null) {
    banner.textContent = ui.updatedAt
      ? t('unreachableSince', clockSeconds(ui.failingSince), dateTime(ui.updatedAt), ui.failure)
      : t('unreachable', ui.failure);
  }
  document.body.classList.toggle('unreachable', ui.failure !== null);
}

/** The county at a glance: sites by state, and the counts each user looks for first. */
function summary(model) {
  const tot = model.totals;
  const stateChips = STATES.filter((st) => tot.states[st] > 0).map((st) => h('li', { class: `chip state-${st}`,
    'data-key': st }, h('span', { class: 'glyph', 'aria-hidden': 'true' }), t('sitesInState', tot.states[st], st)));
  const figure = (key, text, bad) => h('li', { class: `figure${bad ? ' bad' : ''}`, 'data-key': key }, text);
  return h('div', { class: 'summary-row' },
    h('ul', { class: 'chips', 'aria-label': t('sitesByState') }, stateChips),
    h('ul', { class: 'figures' },
      tot.pumps.total ? figure('pumps', t('sumPumps', tot.pumps.running, tot.pumps.total, tot.pumps.faults),
        tot.pumps.faults > 0) : null,
      tot.quality.total
        ? figure('quality', t('sumQuality', tot.quality.out, tot.quality.total), tot.quality.out > 0) : null,
      tot.meters.total ? figure('meters', t('sumMeters', tot.meters.reporting, tot.meters.total),
        tot.meters.reporting < tot.meters.total) : null,
      tot.speakers.total ? figure('speakers', t('sumSpeakers', tot.speakers.online, tot.speakers.total),
        tot.speakers.online < tot.speakers.total) : null,
      tot.cows.total ? figure('cows', t('sumCows', tot.cows.fever, tot.cows.total), tot.cows.fever > 0) : null,
      tot.gateways.total ? figure('gateways', t('sumGateways', tot.gateways.online, tot.gateways.total),
        tot.gateways.online < tot.gateways.total) : null));
}

/** Every issue of every site, worst first; each one leads to its site's card. */
function attentionList(model) {
  const items = [];
  for (const state of STATES) {
    for (const site of model.sites) {
      for (const issue of site.issues.filter((i) => i.state === state)) items.push({ site, issue });
    }
  }
  if (items.length === 0) return h('p', { class: 'all-good' }, t('nothingNeedsAttention'));
  const shown = items.slice(0, ATTENTION_ITEMS);
  return [
    h('ul', null, shown.map(({ site, issue }) => h('li', { class: `state-${issue.state}` },
      h('button', { type: 'button', 'data-action': 'site', 'data-site': site.id },
        h('span', { class: 'glyph', 'aria-hidden': 'true' }),
        h('span', { class: 'attention-site' }, site.id === '' ? t('otherDevices') : site.name), ' ',
        issueText(issue))))),
    items.length > shown.length ? h('p', { class: 'hint' }, t('moreIssues', items.length - shown.length)) : null,
  ];
}

function renderLegend() {
  morphChildrenOf($('legend'), h('ul', null, legendItems().map((item) => h('li', { class: `state-${item.state}`,
    title: item.help }, h('span', { class: 'swatch', 'aria-hidden': 'true' }), item.text, h('span', { class: 'sr' },
    ': ' + item.help))),
  h('li', { class: 'sev-critical' }, h('span', { class: 'ring', 'aria-hidden': 'true' }), t('legendAlert')),
  h('li', { class: 'bc-legend' }, ['played', 'progress', 'failed'].map((st) => h('span', { class: `bc-swatch bcm-${st}`,
    'aria-hidden': 'true' })), t('legendBroadcast'))));
}

/** Static labels of the page (elements with data-i18n) in the current language. */
function applyLanguage() {
  document.documentElement.lang = lang() === 'zh' ? 'zh-CN' : 'en';
  document.title = t('title');
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  }
  $('site-search').placeholder = t('searchPlaceholder');
  $('lang').textContent = t('switchTo');
  $('lang').setAttribute('lang', otherLang() === 'zh' ? 'zh-CN' : 'en');
  compose.render();
  renderLegend();
  render();
  chart.render();
  for (const part of [alertDetail, alertHistory, maintenance]) part.render();
  signin.refresh();
  accountPanels.users.refresh();
  accountPanels.audit.refresh();
}

// ---- events ------------------------------------------------------------------------

function openChart(device, metric, hours) {
  const rows = ui.latest ?? [];
  const metrics = [...new Set(rows.filter((r) => r.device === device).map((r) => r.metric))];
  if (!metrics.includes(metric)) metrics.unshift(metric);
  if (hours) chart.rangeH = hours;
  chart.open(device, metric, metrics);
  rememberChart();
}

/** The open chart is in the address (#device=..&metric=..&hours=..), so it can be shared. */
function rememberChart() {
  const hash = chart.isOpen
    ? '#' + new URLSearchParams({ device: chart.device, metric: chart.metric, hours: String(chart.rangeH) })
    : '';
  history.replaceState(null, '', location.pathname + location.search + hash);
}

/** Opens the chart the address names, if any. */
function chartFromAddress() {
  const params = new URLSearchParams(location.hash.slice(1));
  const device = params.get('device');
  const metric = params.get('metric');
  if (device && metric) openChart(device, metric, Number(params.get('hours')) || null);
}

/** Opens or closes (null) a township on the map; the site list follows it. */
function openTownship(id) {
  ui.township = id || null;
  ui.filter.township = ui.township ?? '';
  render();
  $('map').querySelector('svg')?.focus?.();
}

/** Opens a listed site (county size): its card above the list, read whole. */
function openSite(id) {
  ui.selected = id;
  const site = ui.model?.sites.find((x) => x.id === id);
  if (site?.township && ui.filter.township && ui.filter.township !== site.township) ui.filter.township = '';
  if (site && !passes(site, ui.filter, ui.onlyProblems)) {
    ui.filter = { ...noFilter(), q: '' };
    ui.onlyProblems = false;
    $('only-problems').checked = false;
    $('site-search').value = '';
  }
  render();
  siteList.reveal(id)?.focus({ preventScroll: true });
  $('site-detail').scrollIntoView({ behavior: 'smooth', block: 'start' });
  if (ui.summary) {
    source.open(id).then((detail) => {
      ui.detail = detail;
      render();
    }).catch(report);
  }
}

/** Opens a device a search found: its newest values, and its site. */
function openFound(id, site) {
  const hit = (ui.searchHits ?? []).find((d) => d.id === id);
  ui.found = { id, site: site || hit?.site || null, name: hit?.name ?? null, rows: null };
  if (ui.found.site && listedKinds(ui.model)?.has(ui.model.sites.find((x) => x.id === ui.found.site)?.kind)) {
    openSite(ui.found.site);
  } else {
    render();
    if (ui.found.site) showSite(ui.found.site);
  }
  source.device(id).then((rows) => {
    if (ui.found?.id !== id) return;
    ui.found.rows = rows;
    render();
  }).catch((e) => {
    if (e.name !== 'ApiError') throw e;
  }).catch(report);
}

let searchTimer = null;
let searchSeq = 0;

/** The search text changed: filter the list now, look for devices after a pause (`now`: at once). */
function searchChanged(text, now) {
  ui.filter.q = text;
  clearTimeout(searchTimer);
  if (ui.model) render();
  if (text.trim().length < 2) {
    ui.searchHits = [];
    ui.searchError = null;
    if (ui.model) render();
    return;
  }
  searchTimer = setTimeout(() => {
    const seq = (searchSeq += 1);
    ui.searchHits = null;
    source.search(text, ui.devices).then((hits) => {
      if (seq !== searchSeq) return;
      ui.searchHits = hits;
      ui.searchError = null;
      if (ui.model) render();
    }).catch((e) => {
      if (e.name !== 'ApiError') throw e;
      ui.searchHits = [];
      ui.searchError = e.message;
      if (ui.model) render();
    }).catch(report);
  }, now ? 0 : 250);
}

function showSite(id) {
  if (ui.model && listedKinds(ui.model)?.has(ui.model.sites.find((x) => x.id === id)?.kind)) {
    openSite(id);
    return;
  }
  const find = () => [...document.querySelectorAll('#sites [data-site]')].find((c) => c.dataset.site === id);
  if (!find() && ui.onlyProblems) {
    // The filter hides it: show everything rather than nothing.
    ui.onlyProblems = false;
    $('only-problems').checked = false;
    render();
  }
  const marker = $('map').querySelector(`[data-site="${CSS.escape(id)}"]`);
  if (marker) {
    marker.classList.add('flash');
    setTimeout(() => marker.classList.remove('flash'), 1200);
  }
  const card = find();
  if (!card) return;
  card.scrollIntoView({ behavior: 'smooth', block: 'start' });
  card.focus({ preventScroll: true });
  card.classList.add('flash');
  setTimeout(() => card.classList.remove('flash'), 1200);
}

const ack = new AckDialog({ dialog: $('ack'), what: $('ack-what'), tokenRow: $('ack-token-row'), token: $('ack-token'),
  tokenSaved: $('ack-token-saved'), note: $('ack-note'), error: $('ack-error'), submit: $('ack-submit') }, acked);

function openAck(id) {
  const alert = ui.alerts.list?.find((a) => a.id === id);
  if (!alert) return;
  const site = ui.model?.sites.find((x) => x.id === alert.site);
  ack.open(alert, [site?.name, alert.device].filter(Boolean).join(', ') || alert.entity?.id || '');
}

/** The API's answer to an acknowledgement replaces the alert at once; the next refresh confirms it. */
function acked(updated) {
  if (!ui.alerts.list) return;
  ui.alerts = { ...ui.alerts, list: sortAlerts(ui.alerts.list.map((a) => (a.id === updated.id ? updated : a))) };
  render();
}

// ---- the operator console: alert details, history, maintenance, control ----------------

const consoleContext = {
  ui: () => ui,
  report: (e) => report(e),
  refresh: () => refresh().catch(report),
  openAck: (id) => openAck(id),
  openDetail: (id) => alertDetail.open(id).catch(report),
};
const alertDetail = new AlertDetail(consoleContext);
const alertHistory = new AlertHistory(consoleContext);
const maintenance = new MaintenanceDialog(consoleContext);
const control = new ControlPanel({ ...consoleContext, panel: $('control-panel'), body: $('control') });

/** The console's own buttons; true if `el` was one of them. */
function consoleAction(el) {
  const action = el.dataset.action;
  switch (action) {
    case 'alert-detail': alertDetail.open(Number(el.dataset.alert)).catch(report); return true;
    case 'alert-history': alertHistory.open().catch(report); return true;
    case 'maintenance': maintenance.open().catch(report); return true;
    default:
      return [alertDetail, alertHistory, maintenance, control].some((part) => part.activate(action, el));
  }
}

// ---- the broadcast console --------------------------------------------------------------

const compose = new Compose($('compose-panel'), { onCreated: opened, sites: () => ui.sites });
compose.onClosed = () => {
  renderBroadcasts();
  if (ui.model) drawMap($('map').clientWidth);
};
// A click on a village's marker picks it as a target while a broadcast is being composed
// (compose.js takes marker clicks through map.js's setPickHandler).
compose.onTargets = () => compose.decorate($('map'));

const decide = new DecideDialog({ dialog: $('bc-decide'), title: $('bc-decide-title'), what: $('bc-decide-what'),
  reasonRow: $('bc-decide-reason-row'), reason: $('bc-decide-reason'), error: $('bc-decide-error'),
  submit: $('bc-decide-submit') }, (mode, answer) => opened(answer));

/** A broadcast just created or decided on: shown at once (the next refresh confirms it) and opened. */
function opened(b) {
  if (b?.id === undefined) return;
  const list = ui.broadcasts.list ?? [];
  const known = list.some((x) => x.id === b.id);
  if (b.state) {
    ui.broadcasts = { ...ui.broadcasts, list: known ? list.map((x) => (x.id === b.id ? { ...x, ...b } : x)) : [b, ...list] };
  }
  ui.bc.selected = b.id;
  if (live.full.has(b.id)) live.read(b.id);
  renderBroadcasts();
  $('bc-detail').scrollIntoView({ block: 'nearest' });
}

function openDecide(mode, id) {
  const b = (live.overlay(ui.broadcasts.list) ?? []).find((x) => String(x.id) === String(id))
    ?? live.full.get(Number(id));
  if (b) decide.open(mode, b, ui.sites);
}

function toggleBroadcast(id) {
  ui.bc.selected = ui.bc.selected === id ? null : id;
  renderBroadcasts();
}

function activate(el) {
  if (consoleAction(el)) return;
  switch (el.dataset.action) {
    case 'chart': openChart(el.dataset.device, el.dataset.metric); break;
    case 'site':
      if (!offerPick(el)) showSite(el.dataset.site);
      break;
    case 'township':
      if (!offerPick(el)) openTownship(el.dataset.township);
      break;
    case 'found': openFound(el.dataset.device, el.dataset.site); break;
    case 'close-found':
      ui.found = null;
      render();
      break;
    case 'close-site':
      ui.selected = null;
      ui.detail = null;
      source.open(null);
      render();
      break;
    case 'herd-page':
      ui.herdPages.set(el.dataset.site, Number(el.dataset.page) || 0);
      render();
      break;
    case 'bc-new':
      if (compose.isOpen) compose.close();
      else compose.open().catch(report);
      renderBroadcasts();
      break;
    case 'bc-compose-close': compose.close(); break;
    case 'bc-cap-import': compose.importCap().catch(report); break;
    case 'bc-open': toggleBroadcast(Number(el.dataset.id)); break;
    case 'bc-history':
      ui.bc.history = !ui.bc.history;
      renderBroadcasts();
      break;
    case 'bc-approve': openDecide('approve', el.dataset.id); break;
    case 'bc-reject': openDecide('reject', el.dataset.id); break;
    case 'bc-cancel': openDecide('cancel', el.dataset.id); break;
    case 'bc-decide-close': decide.close(); break;
    case 'range':
      chart.setRange(Number(el.dataset.hours));
      rememberChart();
      break;
    case 'close-chart': chart.close(); break;
    case 'ack': openAck(Number(el.dataset.alert)); break;
    case 'close-ack': ack.close(); break;
    case 'forget-token': ack.forgetToken(); break;
    case 'lang':
      setLang(otherLang());
      applyLanguage();
      break;
    default: break;
  }
}

document.addEventListener('click', (event) => {
  const el = event.target.closest('[data-action]');
  if (el && el.dataset.action !== 'metric') activate(el);
});

document.addEventListener('keydown', (event) => {
  const el = event.target.closest?.('[data-action]');
  if (!el) return;
  if (el.hasAttribute('data-cow') && moveInHerd(el, event.key)) {
    event.preventDefault();
    return;
  }
  // Buttons do this themselves; SVG elements with role=button need it done.
  if ((event.key === 'Enter' || event.key === ' ') && el.namespaceURI === 'http://www.w3.org/2000/svg') {
    event.preventDefault();
    activate(el);
  }
});

/** Arrow keys move the herd grid's single tab stop. */
function moveInHerd(cell, key) {
  const cells = [...cell.parentNode.querySelectorAll('[data-cow]')];
  const cols = Number(cell.dataset.cols);
  const i = cells.indexOf(cell);
  const to = { ArrowRight: i + 1, ArrowLeft: i - 1, ArrowDown: i + cols, ArrowUp: i - cols, Home: 0,
    End: cells.length - 1 }[key];
  if (to === undefined) return false;
  const next = cells[Math.max(0, Math.min(cells.length - 1, to))];
  cell.setAttribute('tabindex', '-1');
  next.setAttribute('tabindex', '0');
  next.focus();
  ui.herdFocus = cells.indexOf(next);
  return true;
}

document.addEventListener('change', (event) => {
  if (event.target.matches('select[data-action="metric"]')) {
    chart.setMetric(event.target.value);
    rememberChart();
  }
  if (event.target.id === 'only-problems') {
    ui.onlyProblems = event.target.checked;
    render();
  }
  const filterKey = { 'filter-township': 'township', 'filter-kind': 'kind', 'filter-state': 'state' }[event.target.id];
  if (filterKey) {
    ui.filter[filterKey] = event.target.value;
    // The map shows the township the list is filtered to.
    if (filterKey === 'township' && ui.model && groupsTownships(ui.model)) ui.township = event.target.value || null;
    if (ui.model) render();
  }
});

$('site-search').addEventListener('input', (event) => searchChanged(event.target.value, false));
$('site-search').addEventListener('keydown', (event) => {
  if (event.key !== 'Enter') return;
  event.preventDefault();
  searchChanged(event.target.value, true);
});

// ---- the loop ------------------------------------------------------------------------

$('chart').addEventListener('close', rememberChart);
$('bc-decide-form').addEventListener('submit', (event) => {
  event.preventDefault();
  decide.submit().catch(report);
});
$('ack-form').addEventListener('submit', (event) => {
  // Never a real form submission: the page sends the request itself (and CSP forbids one).
  event.preventDefault();
  ack.submit().catch(report);
});

// The map is drawn at the size it gets: redraw it when that changes.
let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (ui.model) drawMap($('map').clientWidth);
  }, 150);
});

function nextTask() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

let loopTimer = null;
let refreshing = false;
let kicked = false;

/** The server said something changed: refresh soon (once, however many events came). */
function kick() {
  if (refreshing) {
    kicked = true;
    return;
  }
  clearTimeout(loopTimer);
  loopTimer = setTimeout(loop, 250);
}

async function loop() {
  clearTimeout(loopTimer);
  // A hidden tab does not poll; it catches up as soon as it is shown again.
  if (document.hidden) {
    document.addEventListener('visibilitychange', loop, { once: true });
    return;
  }
  refreshing = true;
  kicked = false;
  try {
    await refresh();
    if (ui.refreshes === 1) chartFromAddress();
  } catch (e) {
    // A bug, not the network: report it (boot.js shows it) and keep refreshing.
    report(e);
  } finally {
    refreshing = false;
  }
  // Told of changes, the page need not poll often; a change told during this refresh is read now.
  loopTimer = setTimeout(loop, kicked ? 250 : source.listening ? EVENTS_POLL_MS : REFRESH_MS);
}

function report(error) {
  if (typeof reportError === 'function') reportError(error);
  else setTimeout(() => { throw error; });
}

// ?township=ID in the address opens that township (a wall screen in a township office).
{
  const township = new URLSearchParams(location.search).get('township');
  if (township) {
    ui.township = township;
    ui.filter.township = township;
  }
}

// Sign-in, the people and audit panels (session.js, users.js, audit.js): they redraw
// themselves when someone signs in or out; the alerts follow can() at the next render.
const signin = mountSignIn({ form: $('signin-form'), user: $('signin-user'), password: $('signin-password'),
  submit: $('signin-submit'), error: $('signin-error'), bar: $('signed-in'), name: $('signed-in-name'),
  role: $('signed-in-role'), signOut: $('signout') }, t);
const accountPanels = { users: mountUsers({ details: $('users-details'), body: $('users') }),
  audit: mountAudit({ details: $('audit-details'), body: $('audit') }) };
// Buttons (alerts, the broadcast console) follow the person at once when someone signs
// in or out, not at the next refresh.
onSession(() => render());
loadSession().then(() => render()).catch(report);

applyLanguage();
loop();
