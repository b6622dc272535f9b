// Role: the page's entry point. Every 5 s it reads sites, devices, latest values and open
// alerts, builds the model and redraws the summary, the alerts, the map and the cards in
// place (no flicker, focus kept); it says when it last updated and, clearly, when the API
// cannot be reached.
// All clicks and keys are handled here by delegation on data-action attributes, so no
// element carries an inline handler.

import { h, morphChildrenOf } from './dom.js';
import { t, lang, setLang, otherLang } from './strings.js';
import { fetchState, serverNow } from './api.js';
import { buildModel, STATES } from './model.js';
import { countyMap, legendItems, onPick, pick } from './map.js';
import { siteCards } from './cards.js';
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
  /** The broadcast console: the broadcast opened (id or null), and whether all are listed. */
  bc: { selected: null, history: false },
};

/** Live progress of broadcasts (server-sent events): redraws what it changes. */
const live = new LiveBroadcasts(() => {
  if (!ui.model) return;
  ui.broadcast = live.followActive(ui.broadcasts.list, isActive);
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
    const { sites, devices, latest, alerts, broadcasts } = await fetchState(withSites);
    if (sites) {
      ui.sites = sites;
      ui.sitesAt = Date.now();
    }
    ui.devices = devices;
    ui.latest = latest;
    // An unreadable alert list keeps the last one, marked as not current.
    ui.alerts = { list: alerts.list ? sortAlerts(alerts.list) : alerts.off ? null : ui.alerts.list,
      off: Boolean(alerts.off), error: alerts.error ?? null };
    ui.broadcasts = { list: broadcasts.list ?? (broadcasts.off ? null : ui.broadcasts.list),
      off: Boolean(broadcasts.off), error: broadcasts.error ?? null };
    // Deliveries come from the live stream: one read of a broadcast, then its events.
    live.start();
    ui.broadcast = live.followActive(ui.broadcasts.list, isActive);
    ui.updatedAt = Date.now();
    ui.failure = null;
    ui.failingSince = null;
  } catch (e) {
    if (e.name !== 'ApiError') throw e;
    ui.failure = e.message;
    ui.failingSince ??= Date.now();
  }
  const t1 = performance.now();
  if (ui.sites) ui.model = buildModel(ui.sites, ui.devices, ui.latest, serverNow());
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
  if (ui.model) document.documentElement.dataset.ready = 'true';
  chart.refreshIfDue();
  control.refresh().catch(report);
}

/** What goes on the map's markers: alert rings and the active broadcast's speaker badges. */
function drawMap(width) {
  morphChildrenOf($('map'), countyMap(ui.model, width, alertMarks(ui.alerts.list),
    broadcastMarks(ui.broadcast, ui.devices)));
  compose.decorate($('map'));
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
  morphChildrenOf($('sites'), ...siteCards(ui.model, ui));
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

function showSite(id) {
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
// A click on a village's marker picks it as a target while a broadcast is being composed.
onPick((site) => compose.pick(site));
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
      if (!(el.closest('#map') && pick(el.dataset.site))) showSite(el.dataset.site);
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

async function loop() {
  // A hidden tab does not poll; it catches up as soon as it is shown again.
  if (document.hidden) {
    document.addEventListener('visibilitychange', loop, { once: true });
    return;
  }
  try {
    await refresh();
    if (ui.refreshes === 1) chartFromAddress();
  } catch (e) {
    // A bug, not the network: report it (boot.js shows it) and keep refreshing.
    report(e);
  }
  setTimeout(loop, REFRESH_MS);
}

function report(error) {
  if (typeof reportError === 'function') reportError(error);
  else setTimeout(() => { throw error; });
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
