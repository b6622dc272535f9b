// Role: the alerts of the past and planned work. The history dialog searches alerts by
// site, rule, state and time (GET /api/v1/alerts?site=&rule=&state=&from=&to=), newest
// first, each with who acknowledged it and their note, and marked when it came during
// planned maintenance. The maintenance dialog lists the maintenance windows
// (GET /api/v1/maintenance) and plans one for a site with its start, end and reason
// (POST /api/v1/maintenance); alerts at that site during the window are muted and listed
// apart. Times are typed and shown in Beijing time, whatever the browser's zone.

import { h, morphChildrenOf } from './dom.js';
import { t } from './strings.js';
import { serverNow } from './api.js';
import { can, send, read, refusal, summaryOf, ruleNameOf, cnFull, cnDateTime, toCnLocalInput,
  fromCnLocalInput } from './ops.js';

/** Most alerts one search shows. */
const HISTORY_LIMIT = 200;
const STATES = ['', 'active', 'firing', 'acknowledged', 'resolved'];

function dialogShell(id, titleKey, ...body) {
  const title = h('h2', { id: `${id}-title`, 'data-i18n': titleKey }, t(titleKey));
  return h('dialog', { id, class: 'ops-dialog wide-dialog', 'aria-labelledby': `${id}-title` },
    h('div', { class: 'chart-head' }, title,
      h('button', { type: 'button', class: 'close', 'data-action': `close-${id}`, 'aria-label': t('close') }, '×')),
    ...body);
}

function siteOptions(sites, selected, withAll) {
  const list = [...(sites ?? [])].sort((a, b) => a.name.localeCompare(b.name));
  return [withAll ? h('option', { value: '' }, t('historyAll')) : null,
    list.map((x) => h('option', { value: x.id, selected: x.id === selected }, x.name))];
}

/** The alert history dialog. `ctx`: { ui(), openDetail(id), report }. */
export class AlertHistory {
  constructor(ctx) {
    this.ctx = ctx;
    this.rules = null;
    this.result = null;
    this.error = null;
    this.filters = h('form', { id: 'history-form', class: 'history-form' });
    this.body = h('div', { id: 'history-results', class: 'history-results', 'aria-live': 'polite' });
    this.dialog = dialogShell('alert-history', 'historyTitle', this.filters, this.body);
    document.body.append(this.dialog);
    this.filters.addEventListener('submit', (event) => {
      event.preventDefault();
      this.search().catch(ctx.report);
    });
  }

  async open() {
    if (!this.dialog.open) this.dialog.showModal();
    try {
      this.rules ??= await read('/api/v1/rules');
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      this.rules = [];
    }
    this.buildFilters();
    await this.search();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  buildFilters() {
    const now = serverNow();
    const field = (id, key, control) => h('div', { class: 'ack-field' }, h('label', { for: id }, t(key)), control);
    morphChildrenOf(this.filters,
      h('div', { class: 'history-fields' },
        field('history-site', 'alertsWhere', h('select', { id: 'history-site' },
          siteOptions(this.ctx.ui().sites, null, true))),
        field('history-rule', 'rule', h('select', { id: 'history-rule' }, h('option', { value: '' }, t('historyAll')),
          (this.rules ?? []).map((r) => h('option', { value: r.id }, r.id)))),
        field('history-state', 'alertsState', h('select', { id: 'history-state' },
          STATES.map((st) => h('option', { value: st }, st ? t('historyState_' + st) : t('historyAll'))))),
        field('history-from', 'historyFrom', h('input', { id: 'history-from', type: 'datetime-local',
          value: toCnLocalInput(now - 7 * 86_400_000) })),
        field('history-to', 'historyTo', h('input', { id: 'history-to', type: 'datetime-local' })),
        h('div', { class: 'ack-buttons' },
          h('button', { type: 'submit', id: 'history-search', class: 'primary' }, t('historySearch')))),
      h('p', { class: 'hint' }, t('opsTimesIn')));
  }

  value(id) {
    return this.filters.querySelector(`#${id}`)?.value ?? '';
  }

  async search() {
    const from = fromCnLocalInput(this.value('history-from'));
    const to = fromCnLocalInput(this.value('history-to'));
    const params = { site: this.value('history-site'), rule: this.value('history-rule'),
      state: this.value('history-state'), from: Number.isFinite(from) ? new Date(from).toISOString() : null,
      to: Number.isFinite(to) ? new Date(to).toISOString() : null, limit: String(HISTORY_LIMIT) };
    try {
      this.result = await read('/api/v1/alerts', params);
      this.error = null;
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      this.error = refusal(e);
    }
    this.render();
  }

  render() {
    if (!this.dialog.open) return;
    if (this.error) {
      morphChildrenOf(this.body, h('p', { class: 'ack-error', role: 'alert' }, this.error));
      return;
    }
    const list = this.result ?? [];
    const sites = new Map((this.ctx.ui().sites ?? []).map((x) => [x.id, x]));
    morphChildrenOf(this.body,
      h('p', { class: 'history-count' }, t('historyCount', list.length)),
      list.length ? h('div', { class: 'history-scroll' }, h('table', { class: 'alerts history' },
        h('thead', null, h('tr', null, ['historyWhen', 'alertsSeverity', 'alertsWhere', 'alertsWhat', 'alertsState',
          'historyAck'].map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', null, list.map((a) => this.row(a, sites))))) : null);
  }

  row(a, sites) {
    const site = sites.get(a.site);
    const maintenance = a.maintenance ? h('span', { class: 'badge muted-maintenance' }, t('historyMaintenance')) : null;
    return h('tr', { class: `alert sev-${a.severity} alert-${a.state}${a.maintenance ? ' muted-maintenance' : ''}`,
      'data-key': `history:${a.id}`, 'data-alert': a.id, 'data-rule': a.rule, 'data-state': a.state },
    h('td', { class: 'since' }, cnFull(Date.parse(a.fired_at ?? a.started_at))),
    h('td', null, h('span', { class: 'sev' }, t('sev_' + a.severity))),
    h('td', { class: 'where' }, site?.name ?? a.site ?? '', a.device ? h('span', { class: 'alert-device' }, a.device) : null),
    h('td', { class: 'what' }, h('button', { type: 'button', class: 'link alert-summary', 'data-action': 'history-open',
      'data-alert': a.id }, summaryOf(a)), ' ', h('span', { class: 'alert-rule' }, ruleNameOf(a)), ' ', maintenance),
    h('td', { class: 'alert-state' }, t('alertState_' + a.state),
      a.resolved_at ? h('span', { class: 'alert-device' }, t('historyResolvedAt', cnDateTime(Date.parse(a.resolved_at))))
        : null),
    h('td', { class: 'history-ack' }, a.ack ? [h('span', { class: 'acked-by' }, t('ackedAt', a.ack.by,
      cnDateTime(Date.parse(a.ack.at)))), a.ack.note ? h('span', { class: 'ack-note' }, a.ack.note) : null] : '–'));
  }

  activate(action, el) {
    switch (action) {
      case 'close-alert-history': this.close(); return true;
      case 'history-open':
        this.close();
        this.ctx.openDetail(Number(el.dataset.alert));
        return true;
      default: return false;
    }
  }
}

/** The maintenance windows dialog. `ctx`: { ui(), refresh(), report }. */
export class MaintenanceDialog {
  constructor(ctx) {
    this.ctx = ctx;
    this.list = null;
    this.error = null;
    this.busy = false;
    this.message = null;
    this.listEl = h('div', { id: 'maintenance-list', class: 'history-results' });
    this.form = h('form', { id: 'maintenance-form', class: 'history-form' });
    this.dialog = dialogShell('maintenance', 'maintenanceTitle', this.listEl, this.form);
    document.body.append(this.dialog);
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.plan().catch(ctx.report);
    });
  }

  async open() {
    if (!this.dialog.open) this.dialog.showModal();
    this.message = null;
    this.buildForm();
    await this.load();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  /** The form to plan a window, for people who may (an operator of some tenant). */
  buildForm() {
    const sites = (this.ctx.ui().sites ?? []).filter((x) => x.id !== '' && can('maintenance', x.tenant));
    this.form.hidden = sites.length === 0;
    if (this.form.hidden) return;
    const start = Math.ceil(serverNow() / 900_000) * 900_000;
    const field = (id, key, control) => h('div', { class: 'ack-field' }, h('label', { for: id }, t(key)), control);
    morphChildrenOf(this.form,
      h('h3', null, t('maintenancePlan')),
      h('div', { class: 'history-fields' },
        field('maintenance-site', 'site', h('select', { id: 'maintenance-site' }, siteOptions(sites, null, false))),
        field('maintenance-start', 'maintenanceStart', h('input', { id: 'maintenance-start', type: 'datetime-local',
          value: toCnLocalInput(start) })),
        field('maintenance-end', 'maintenanceEnd', h('input', { id: 'maintenance-end', type: 'datetime-local',
          value: toCnLocalInput(start + 4 * 3_600_000) }))),
      field('maintenance-reason', 'maintenanceReason', h('textarea', { id: 'maintenance-reason', rows: 2,
        maxlength: 500 })),
      h('p', { class: 'hint' }, t('opsTimesIn')),
      h('p', { id: 'maintenance-error', class: 'ack-error', role: 'alert', hidden: true }),
      h('div', { class: 'ack-buttons' },
        h('button', { type: 'submit', id: 'maintenance-submit', class: 'primary' }, t('maintenanceSubmit'))));
  }

  async load() {
    try {
      this.list = await read('/api/v1/maintenance');
      this.error = null;
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      this.error = refusal(e);
    }
    this.render();
  }

  render() {
    if (!this.dialog.open) return;
    const sites = new Map((this.ctx.ui().sites ?? []).map((x) => [x.id, x]));
    const list = this.list ?? [];
    morphChildrenOf(this.listEl,
      this.message ? h('p', { class: 'detail-message', role: 'status' }, this.message) : null,
      this.error ? h('p', { class: 'ack-error', role: 'alert' }, this.error) : null,
      list.length === 0 ? h('p', { class: 'alerts-off' }, t('maintenanceNone'))
        : h('ul', { class: 'maintenance-list' }, list.map((w) => h('li', {
          class: `window window-${w.state}`, 'data-key': `window:${w.id}`, 'data-window': w.id, 'data-site': w.site },
        h('span', { class: 'badge muted-maintenance' }, t('window_' + w.state)), ' ',
        h('strong', null, sites.get(w.site)?.name ?? w.site ?? '–'), ' ',
        h('span', { class: 'window-when' }, `${cnDateTime(Date.parse(w.starts_at))} – ${cnDateTime(Date.parse(w.ends_at))}`),
        ' ', h('span', { class: 'window-reason' }, w.reason), ' ',
        h('span', { class: 'alert-device' }, t('windowBy', w.created_by)),
        w.state !== 'over' && can('maintenance', w.tenant)
          ? h('button', { type: 'button', class: 'link', 'data-action': 'maintenance-end', 'data-window': w.id },
            t('maintenanceEndNow')) : null))));
  }

  formError(text) {
    const el = this.form.querySelector('#maintenance-error');
    el.hidden = !text;
    el.textContent = text ?? '';
  }

  async plan() {
    if (this.busy) return;
    const value = (id) => this.form.querySelector(`#${id}`).value;
    const start = fromCnLocalInput(value('maintenance-start'));
    const end = fromCnLocalInput(value('maintenance-end'));
    const reason = value('maintenance-reason').trim();
    if (!Number.isFinite(start) || !Number.isFinite(end) || end <= start) return this.formError(t('maintenanceBadTimes'));
    if (!reason) return this.formError(t('silenceNoReason'));
    this.busy = true;
    try {
      const w = await send('POST', '/api/v1/maintenance', { site: value('maintenance-site'),
        starts_at: new Date(start).toISOString(), ends_at: new Date(end).toISOString(), reason });
      this.formError(null);
      this.form.querySelector('#maintenance-reason').value = '';
      this.message = t('maintenancePlanned', w.site, cnDateTime(Date.parse(w.starts_at)), cnDateTime(Date.parse(w.ends_at)));
      await this.load();
      this.ctx.refresh();
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      this.formError(refusal(e));
    } finally {
      this.busy = false;
    }
  }

  async end(id) {
    try {
      await send('DELETE', `/api/v1/silences/${encodeURIComponent(id)}`);
      this.message = t('maintenanceEnded');
      await this.load();
      this.ctx.refresh();
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      this.message = refusal(e);
      this.render();
    }
  }

  activate(action, el) {
    switch (action) {
      case 'close-maintenance': this.close(); return true;
      case 'maintenance-end': this.end(Number(el.dataset.window)).catch(this.ctx.report); return true;
      default: return false;
    }
  }
}
