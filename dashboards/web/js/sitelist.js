// Role: the site list at any size: filters (township, kind, state), a search that finds a
// site by name or a device (a household's meter) by id or name, and a windowed list that
// draws only the rows on screen, so 150 villages (or 1,500) scroll as smoothly as 5.
// Rows have one fixed height (ROW_H, style.css .vrow); the list's scroll area is as tall as
// every row would be, and the drawn rows are moved to where the scroll position says
// (through the CSS object model, which the page's Content-Security-Policy allows, unlike
// style attributes). Each row is a button that opens its site.

import { h, morphChildrenOf } from './dom.js';
import { t } from './strings.js';
import { STATES, isHealth } from './model.js';
import { ago, issueText } from './format.js';
import { metricRow } from './widgets.js';

/** Height of one row in px: keep equal to `.vrow` in style.css. */
export const ROW_H = 58;
/** Rows drawn beyond the visible ones, above and below, so a fast scroll shows no gap. */
const OVERSCAN = 8;
/** Site kinds the kind filter offers. */
const SITE_KINDS = ['village', 'waterworks', 'farm'];
/** State filters: a state, or every state that needs someone. */
const STATE_FILTERS = ['problems', ...STATES];

/** The filters' starting state. */
export function noFilter() {
  return { q: '', township: '', kind: '', state: '' };
}

/** Whether `site` passes the filter (and, if `onlyProblems`, needs attention). */
export function passes(site, filter, onlyProblems) {
  if (onlyProblems && ['ok', 'nodata'].includes(site.state)) return false;
  if (filter.township && site.township !== filter.township) return false;
  if (filter.kind && site.kind !== filter.kind) return false;
  if (filter.state === 'problems' && ['ok', 'nodata'].includes(site.state)) return false;
  if (filter.state && filter.state !== 'problems' && site.state !== filter.state) return false;
  const q = filter.q.trim().toLowerCase();
  if (q && !siteText(site).includes(q)) return false;
  return true;
}

function siteText(site) {
  if (!site.searchText) {
    site.searchText = [site.id, site.name, site.township, site.townshipName].filter(Boolean).join(' ').toLowerCase();
  }
  return site.searchText;
}

/** Fills the filter selects (their options follow the model and the language) and keeps their values. */
export function renderFilters(els, model, filter) {
  const option = (value, text) => h('option', { value }, text);
  morphChildrenOf(els.township, option('', t('allTownships')),
    (model.townships ?? []).map((tw) => option(tw.id, `${tw.name} (${tw.sites.length})`)));
  morphChildrenOf(els.kind, option('', t('allKinds')), SITE_KINDS.map((k) => option(k, t('site_' + k))));
  morphChildrenOf(els.state, option('', t('allStates')),
    STATE_FILTERS.map((st) => option(st, st === 'problems' ? t('needsAttention') : t('state_' + st))));
  els.township.hidden = !(model.townships ?? []).length;
  els.townshipLabel.hidden = els.township.hidden;
  for (const [key, el] of [['township', els.township], ['kind', els.kind], ['state', els.state]]) {
    if (el.value !== filter[key]) el.value = filter[key];
  }
}

/**
 * What a search found: sites (by name) and devices (by id or name), each a button. `devices`:
 * the devices found (datasource.search); `error`: why the device search failed, if it did.
 */
export function searchResults(filter, model, devices, error) {
  const q = filter.q.trim();
  if (!q) return null;
  const sites = model.sites.filter((site) => site.id !== '' && siteText(site).includes(q.toLowerCase())).slice(0, 8);
  const byId = new Map(model.sites.map((site) => [site.id, site]));
  const items = [
    ...(devices ?? []).map((d) => {
      const site = byId.get(d.site);
      return h('li', { 'data-key': 'd:' + d.id }, h('button', { type: 'button', class: 'hit hit-device',
        'data-action': 'found', 'data-device': d.id, 'data-site': d.site ?? '' },
      h('span', { class: 'hit-id' }, d.id),
      d.name ? h('span', { class: 'hit-name' }, d.name) : null,
      h('span', { class: 'hit-where' }, [t('kind_' + (d.kind === 'cow_collar' ? 'cow' : d.kind)),
        site ? site.name : d.site, site?.townshipName].filter(Boolean).join(' · '))));
    }),
    ...sites.map((site) => h('li', { 'data-key': 's:' + site.id }, h('button', { type: 'button', class: 'hit hit-site',
      'data-action': 'site', 'data-site': site.id },
    h('span', { class: 'glyph', 'aria-hidden': 'true' }),
    h('span', { class: 'hit-id' }, site.name),
    h('span', { class: 'hit-where' }, [t('site_' + site.kind), site.townshipName, t('state_' + site.state)]
      .filter(Boolean).join(' · '))))),
  ];
  return [
    error ? h('p', { class: 'search-error', role: 'alert' }, t('searchError', error)) : null,
    items.length ? h('ul', { class: 'hits', 'aria-label': t('searchFound', items.length) }, items)
      : devices === null ? h('p', { class: 'hint' }, t('searching')) : h('p', { class: 'hint' }, t('searchNone', q)),
  ];
}

/**
 * A device found by a search, with its newest values: `rows` from GET /api/v1/latest (or
 * the model's device), `site` its site in the model.
 */
export function foundPanel(id, device, site) {
  const metrics = device ? Object.keys(device.m).filter((m) => !isHealth(m)) : [];
  return h('article', { class: `card found-device state-${device?.state ?? 'nodata'}`, 'data-key': 'found:' + id,
    'data-device': id, tabindex: -1, 'aria-label': id },
  h('header', { class: 'card-head' },
    h('div', { class: 'card-title' },
      h('h3', null, id, device?.name ? h('span', { class: 'py' }, ' ' + device.name) : null),
      h('button', { type: 'button', class: 'close', 'data-action': 'close-found', 'aria-label': t('close') }, '×')),
    h('p', { class: 'meta' }, h('span', null, t('kind_' + (device?.kind ?? 'external'))), ' · ',
      site ? h('button', { type: 'button', class: 'link', 'data-action': 'site', 'data-site': site.id },
        site.name) : null,
      site?.townshipName ? ` · ${site.townshipName}` : null,
      device?.newest ? ` · ${t('newest', ago(Date.now() - device.newest))}` : null)),
  metrics.length ? h('dl', { class: 'values' }, metrics.map((m) => metricRow(device, m)))
    : h('p', { class: 'hint' }, device ? t('noReadings') : t('loading')));
}

/** One row of the list. */
function row(site, model, index, total, selected) {
  const counts = [];
  if (site.meters.total) counts.push(`${t('kind_water_meter')} ${t('countOnline', site.meters.reporting, site.meters.total)}`);
  const sp = site.speakerCounts ?? (site.speakers.length
    ? { total: site.speakers.length, online: site.speakers.filter((x) => x.online).length } : null);
  if (sp) counts.push(`${t('kind_speaker')} ${t('countOnline', sp.online, sp.total)}`);
  if (site.herd.cells.length) counts.push(t('herdTitle', site.herd.cells.length, site.herd.fever.length));
  if (site.pumps.length) counts.push(site.pumps.map((p) => (p.faults.length ? t('pump_fault') : p.running === 1
    ? t('pump_running') : p.running === 0 ? t('pump_stopped') : t('noData'))).join(', '));
  const why = site.issues.length ? issueText(site.issues[0]) : site.newest !== null
    ? t('newest', ago(model.now - site.newest)) : '';
  return h('li', { class: `vrow state-${site.state}${selected ? ' selected' : ''}`, 'data-key': site.id,
    'aria-setsize': total, 'aria-posinset': index + 1 },
  h('button', { type: 'button', class: 'vrow-btn', 'data-action': 'site', 'data-site': site.id,
    'aria-current': selected ? 'true' : null },
  h('span', { class: 'vrow-line' },
    h('span', { class: 'badge' }, h('span', { class: 'glyph', 'aria-hidden': 'true' }), t('state_' + site.state)),
    h('span', { class: 'vrow-name' }, site.zh ? [h('span', { class: 'zh', lang: 'zh' }, site.zh), ' ',
      h('span', { class: 'py' }, site.pinyin)] : site.name),
    site.townshipName ? h('span', { class: 'vrow-tw' }, site.townshipName) : null),
  h('span', { class: 'vrow-line vrow-more' },
    why ? h('span', { class: 'why' }, why) : null,
    counts.length ? h('span', { class: 'vrow-counts' }, counts.join(' · ')) : null)));
}

/** The windowed list of sites: only the rows in view are in the document. */
export class SiteList {
  /** `root`: the list's container (index.html #site-list). */
  constructor(root) {
    this.root = root;
    this.head = h('h3', { class: 'vlist-head', id: 'site-list-title' });
    this.scroller = h('div', { class: 'vlist', tabindex: -1, 'aria-labelledby': 'site-list-title' });
    this.space = h('div', { class: 'vlist-space' });
    this.rows = h('ul', { class: 'vlist-rows', role: 'list' });
    this.space.appendChild(this.rows);
    this.scroller.appendChild(this.space);
    root.append(this.head, this.scroller);
    this.sites = [];
    this.model = null;
    this.selected = null;
    this.first = -1;
    this.last = -1;
    let pending = false;
    this.scroller.addEventListener('scroll', () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        this.draw(false);
      });
    }, { passive: true });
    // Only the rows in view exist, so Tab alone would never reach the others: arrow keys,
    // Page Up/Down, Home and End move between every row, scrolling as they go.
    this.scroller.addEventListener('keydown', (event) => {
      const btn = event.target.closest?.('.vrow-btn');
      if (!btn) return;
      const at = Number(btn.parentNode.getAttribute('aria-posinset')) - 1;
      const page = Math.max(1, Math.floor((this.scroller.clientHeight || ROW_H * 10) / ROW_H) - 1);
      const to = { ArrowDown: at + 1, ArrowUp: at - 1, PageDown: at + page, PageUp: at - page, Home: 0,
        End: this.sites.length - 1 }[event.key];
      if (to === undefined || this.sites.length === 0) return;
      event.preventDefault();
      const site = this.sites[Math.max(0, Math.min(this.sites.length - 1, to))];
      this.reveal(site.id)?.focus();
    });
  }

  /** Shows `sites` (already filtered and ordered). */
  show(sites, model, selected, title) {
    this.sites = sites;
    this.model = model;
    this.selected = selected;
    this.root.hidden = sites.length === 0 && !title;
    this.head.textContent = title;
    this.space.style.height = `${sites.length * ROW_H}px`;
    this.draw(true);
  }

  /** Draws the rows in view; `always` redraws them even if the same rows are in view. */
  draw(always) {
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || ROW_H * 10;
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(this.sites.length, Math.ceil((top + height) / ROW_H) + OVERSCAN);
    if (!always && first === this.first && last === this.last) return;
    this.first = first;
    this.last = last;
    this.rows.style.transform = `translateY(${first * ROW_H}px)`;
    const total = this.sites.length;
    morphChildrenOf(this.rows, this.sites.slice(first, last).map((site, i) => row(site, this.model, first + i, total,
      site.id === this.selected)));
  }

  /** Scrolls the list so site `id` is in view; returns its row's button, or null if it is not listed. */
  reveal(id) {
    const i = this.sites.findIndex((site) => site.id === id);
    if (i < 0) return null;
    const top = i * ROW_H;
    const height = this.scroller.clientHeight || ROW_H * 10;
    if (top < this.scroller.scrollTop || top + ROW_H > this.scroller.scrollTop + height) {
      this.scroller.scrollTop = Math.max(0, top - height / 3);
    }
    this.draw(true);
    return this.rows.querySelector(`[data-site="${CSS.escape(id)}"]`);
  }
}
