// Role: the alerts the rules raise (docs/ALERTS.md), as the operator sees them: the panel
// of open alerts (pending, firing, acknowledged), most severe and newest first; the marks
// they put on the map's site markers; and the dialog that acknowledges one with
// POST /api/v1/alerts/{id}/ack. Severity is always written out, never colour alone.
// The operator's token is asked for once and kept in sessionStorage (this tab only, gone
// when it closes): never in localStorage, never in the address.
// Summaries and rule names are in the page's language when the server gives them
// (`summary_zh`, `rule_name_zh`); an alert muted by a silence says until when and why, and
// alerts muted by planned maintenance are listed apart, under the table. Each row opens
// the alert's details (js/alert-detail.js): its chart, silencing it, its history.

import { h } from './dom.js';
import { t } from './strings.js';
import { ago, dateTime } from './format.js';
import { postJson } from './api.js';
import { can, session } from './session.js';
import { ALERTS_SHOWN } from './config.js';
import { savedToken, saveToken, summaryOf, ruleNameOf, cnDateTime } from './ops.js';

/** Severities, worst first (the API's names). */
export const SEVERITIES = ['critical', 'warning', 'info'];

/** Column headings of the table; the last (the button) is for screen readers only. */
const COLUMNS = ['alertsSeverity', 'alertsWhere', 'alertsWhat', 'alertsStarted', 'alertsState', null];

function rank(severity) {
  const i = SEVERITIES.indexOf(severity);
  return i < 0 ? SEVERITIES.length : i;
}

/** The API's open alerts, most severe first, then newest first, with `startedMs` parsed. */
export function sortAlerts(list) {
  return list
    .map((a) => ({ ...a, startedMs: Date.parse(a.started_at) || null }))
    .sort((a, b) => rank(a.severity) - rank(b.severity) || (b.startedMs ?? 0) - (a.startedMs ?? 0) || b.id - a.id);
}

/**
 * What alerts put on each site's map marker, by site id: `{ severity, firing, acked }`, the
 * severity being the worst firing one, or with none firing the worst acknowledged one.
 * Pending alerts do not mark the map: their condition has not held long enough yet.
 */
export function alertMarks(alerts) {
  const worst = new Map();
  for (const a of alerts ?? []) {
    if (!a.site || (a.state !== 'firing' && a.state !== 'acknowledged')) continue;
    let w = worst.get(a.site);
    if (!w) worst.set(a.site, (w = { firing: 0, acked: 0, firingSev: null, ackedSev: null }));
    const [count, sev] = a.state === 'firing' ? ['firing', 'firingSev'] : ['acked', 'ackedSev'];
    w[count] += 1;
    if (w[sev] === null || rank(a.severity) < rank(w[sev])) w[sev] = a.severity;
  }
  const marks = new Map();
  for (const [site, w] of worst) {
    marks.set(site, { severity: w.firingSev ?? w.ackedSev, firing: w.firing, acked: w.acked });
  }
  return marks;
}

/**
 * The panel's content: the empty state, a note that alerts are off or unreadable, or a
 * table of alerts. `state` is `{ list, off, error }` as main.js keeps it.
 */
export function alertsPanel(state, model) {
  if (state.off) return h('p', { class: 'alerts-off' }, t('alertsOff'));
  const error = state.error ? h('p', { class: 'alerts-error', role: 'alert' }, t('alertsError', state.error)) : null;
  if (state.list === null) return error;
  if (state.list.length === 0) {
    return [error, h('p', { class: 'alerts-empty state-ok' }, h('span', { class: 'glyph', 'aria-hidden': 'true' }),
      t('alertsNone'))];
  }
  const sites = new Map(model.sites.map((site) => [site.id, site]));
  // Alerts muted by planned maintenance are expected: listed apart, under the others.
  const planned = state.list.filter((a) => a.maintenance);
  const list = state.list.filter((a) => !a.maintenance);
  const shown = list.slice(0, ALERTS_SHOWN);
  return [
    error,
    shown.length ? h('div', { class: 'alerts-scroll' }, alertTable(shown, sites, model.now, 'alertsCaption'))
      : h('p', { class: 'alerts-empty state-ok' }, h('span', { class: 'glyph', 'aria-hidden': 'true' }),
        t('alertsNone')),
    list.length > shown.length ? h('p', { class: 'hint' }, t('alertsMore', list.length - shown.length)) : null,
    planned.length ? h('details', { class: 'alerts-maintenance', 'data-key': 'alerts-maintenance' },
      h('summary', null, t('alertsInMaintenance', planned.length)),
      h('div', { class: 'alerts-scroll' }, alertTable(planned.slice(0, ALERTS_SHOWN), sites, model.now,
        'alertsMaintenanceCaption'))) : null,
  ];
}

function alertTable(list, sites, now, caption) {
  return h('table', { class: 'alerts' },
    h('caption', { class: 'sr' }, t(caption)),
    h('thead', null, h('tr', null, COLUMNS.map((key) => h('th', { scope: 'col' },
      key ? t(key) : h('span', { class: 'sr' }, t('ack')))))),
    h('tbody', null, list.map((a) => alertRow(a, sites, now))));
}

function alertRow(a, sites, now) {
  const site = a.site ? sites.get(a.site) : null;
  const muted = a.muted ? ` muted-${a.muted.kind}` : '';
  return h('tr', { class: `alert sev-${a.severity} alert-${a.state}${muted}`, 'data-key': `alert:${a.id}`,
    'data-alert': a.id, 'data-rule': a.rule, 'data-severity': a.severity, 'data-state': a.state,
    'data-site': a.site ?? null, 'data-device': a.device ?? null, 'data-muted': a.muted?.kind ?? null },
  h('td', null, h('span', { class: 'sev' }, t('sev_' + a.severity))),
  h('td', { class: 'where' }, where(a, site)),
  h('td', { class: 'what' }, h('span', { class: 'alert-summary' }, summaryOf(a)), ' ',
    h('span', { class: 'alert-rule' }, `${t('rule')} ${ruleNameOf(a)}`)),
  h('td', { class: 'since', title: a.startedMs === null ? null : dateTime(a.startedMs) },
    a.startedMs === null ? '–' : ago(now - a.startedMs)),
  h('td', { class: 'alert-state' }, stateText(a)),
  // Signed in: only where the person may acknowledge. Signed out: offered, with a token.
  h('td', { class: 'alert-action' }, a.state === 'firing' && (!session() || can('ack', a.tenant))
    ? h('button', { type: 'button', class: 'ack', 'data-action': 'ack', 'data-alert': a.id,
      'aria-label': t('ackLabel', ruleNameOf(a), whereText(a, site)) }, t('ack'))
    : null,
  h('button', { type: 'button', class: 'alert-open', 'data-action': 'alert-detail', 'data-alert': a.id,
    'aria-label': t('alertDetailLabel', ruleNameOf(a), whereText(a, site)) }, t('alertDetail'))));
}

/** The site by name (a button to its card, as in the attention list), then the device. */
function where(a, site) {
  const what = a.device ?? (a.entity?.type === 'gateway' && a.gateway ? t('gatewayNamed', a.gateway) : null);
  const device = what ? h('span', { class: 'alert-device' }, what) : null;
  if (site) {
    return [h('button', { type: 'button', class: 'alert-site', 'data-action': 'site', 'data-site': site.id },
      site.zh ? [h('span', { class: 'zh', lang: 'zh' }, site.zh), ' ', h('span', { class: 'py' }, site.pinyin)]
        : site.name), device];
  }
  if (device) return device;
  return h('span', { class: 'alert-device' }, whereText(a, null));
}

function whereText(a, site) {
  if (site) return a.device ? `${site.name}, ${a.device}` : site.name;
  if (a.device) return a.device;
  if (a.gateway) return t('gatewayNamed', a.gateway);
  if (a.district) return t('district', a.district);
  return a.entity?.id ?? '';
}

function stateText(a) {
  const muted = a.muted ? h('span', { class: `alert-muted muted-${a.muted.kind}` },
    t(a.muted.kind === 'maintenance' ? 'mutedMaintenance' : 'mutedSilence', cnDateTime(Date.parse(a.muted.ends_at))),
    a.muted.reason ? h('span', { class: 'muted-reason' }, ` · ${a.muted.reason}`) : null) : null;
  if (a.state === 'acknowledged' && a.ack) {
    return [h('span', { class: 'acked-by' }, t('ackedBy', a.ack.by)),
      a.ack.note ? h('span', { class: 'ack-note' }, a.ack.note) : null, muted];
  }
  return muted ? [t('alertState_' + a.state), muted] : t('alertState_' + a.state);
}

/** Counts by severity for the panel's heading, worst first: [[severity, n]]. */
export function severityCounts(list) {
  return SEVERITIES.map((sev) => [sev, list.filter((a) => a.severity === sev).length]).filter(([, n]) => n > 0);
}

// ---- acknowledging -------------------------------------------------------------------

/** The acknowledge dialog (index.html #ack): asks for the token once and a note. */
export class AckDialog {
  /** `els`: the dialog's elements; `onAcked(alert)`: called with the API's updated alert. */
  constructor(els, onAcked) {
    this.els = els;
    this.onAcked = onAcked;
    this.alert = null;
    this.busy = false;
    /** A token typed in this dialog, until it is saved or refused. */
    this.token = null;
  }

  open(alert, whereName) {
    this.alert = alert;
    this.els.what.textContent =
      `${t('sev_' + alert.severity)} · ${whereName} · ${summaryOf(alert)} (${ruleNameOf(alert)})`;
    this.els.note.value = '';
    this.showError(null);
    this.showTokenField();
    this.els.dialog.showModal();
    (savedToken() || session() ? this.els.note : this.els.token).focus();
  }

  close() {
    this.els.dialog.close();
    this.alert = null;
  }

  forgetToken() {
    saveToken(null);
    this.showTokenField();
    this.els.token.focus();
  }

  showTokenField() {
    const saved = savedToken() !== null;
    // A signed-in person acknowledges as themselves: no token is asked for.
    this.els.tokenRow.hidden = saved || session() !== null;
    this.els.tokenSaved.hidden = !saved || session() !== null;
    if (!saved) this.els.token.value = '';
  }

  showError(text) {
    this.els.error.hidden = !text;
    this.els.error.textContent = text ?? '';
  }

  async submit() {
    if (!this.alert || this.busy) return;
    const token = session() ? null : savedToken() ?? this.els.token.value.trim();
    if (!token && !session()) {
      this.showError(t('ackNoToken'));
      this.els.token.focus();
      return;
    }
    if (token) saveToken(token);
    this.busy = true;
    this.els.submit.disabled = true;
    this.els.submit.textContent = t('ackSending');
    try {
      const updated = await postJson(`/api/v1/alerts/${encodeURIComponent(this.alert.id)}/ack`,
        { note: this.els.note.value.trim() }, token);
      this.close();
      this.onAcked(updated);
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      if (e.status === 401 && token) {
        saveToken(null);
        this.showTokenField();
      }
      this.showError(ackError(e));
    } finally {
      this.busy = false;
      this.els.submit.disabled = false;
      this.els.submit.textContent = t('ackSubmit');
    }
  }
}

/** What went wrong, named: a refused token, a token that may not, an alert that is gone. */
function ackError(e) {
  if ([401, 403, 404, 422].includes(e.status)) return t(`ackErr${e.status}`, e.why);
  return t('ackErrOther', e.status, e.why);
}
