// Role: one alert in full, and what an operator does with it besides acknowledging: its
// details (summary and rule in the page's language, where, when in Beijing time, who
// acknowledged it and their note, what mutes it), the chart of its metric around the
// moment it fired (GET /api/v1/series, js/chart.js), and silencing it from itself: the
// matchers are filled in from the alert's labels (rule, device, site), the operator picks
// a duration and gives a reason (POST /api/v1/silences). A silence can be ended early.
//
// Invariants: the dialog is built here, once, and appended to the page; buttons an
// operator may not use are not shown (`can`), and the server refuses what they may not do
// whatever the page sends. The silence form keeps what was typed across page refreshes.

import { h, morphChildrenOf } from './dom.js';
import { t } from './strings.js';
import { fetchSeries, serverNow } from './api.js';
import { drawChart } from './chart.js';
import { can, send, read, refusal, summaryOf, ruleNameOf, cnFull, cnDateTime } from './ops.js';

/** The chart spans this long before the alert fired, and as long after (clipped at now). */
const AROUND_MS = 30 * 60_000;
/** Silence durations offered, in hours; the first is preselected. */
const DURATIONS_H = [1, 2, 4, 8, 24, 72];

/** The metric an alert's rule looks at, from `GET /api/v1/rules` (null if it has none). */
function metricOf(rule) {
  if (!rule) return null;
  if (typeof rule.metric === 'string') return rule.metric;
  if (rule.kind === 'pump_flow') return 'pump_flow';
  if (rule.kind === 'thi') return 'barn_temperature';
  return null;
}

/** The alert detail dialog. `ctx`: { ui(): main's state, openAck(id), refresh() }. */
export class AlertDetail {
  constructor(ctx) {
    this.ctx = ctx;
    this.alert = null;
    this.rules = null;
    this.series = null;
    this.seriesError = null;
    this.metric = null;
    this.silencing = false;
    this.busy = false;
    this.message = null;
    this.error = null;
    this.request = 0;
    this.info = h('div', { id: 'alert-detail-info', class: 'detail-info' });
    this.chart = h('div', { id: 'alert-detail-chart', class: 'detail-chart' });
    this.actions = h('div', { id: 'alert-detail-actions', class: 'detail-actions' });
    this.form = h('form', { id: 'silence-form', class: 'silence-form', hidden: true });
    this.feedback = h('p', { id: 'alert-detail-message', class: 'detail-message', role: 'status', hidden: true });
    this.title = h('h2', { id: 'alert-detail-title' });
    this.dialog = h('dialog', { id: 'alert-detail', class: 'ops-dialog detail-dialog', 'aria-labelledby': 'alert-detail-title' },
      h('div', { class: 'chart-head' }, this.title,
        h('button', { type: 'button', class: 'close', 'data-action': 'close-alert-detail', 'aria-label': t('close') },
          '×')),
      this.info, this.chart, this.feedback, this.actions, this.form);
    document.body.append(this.dialog);
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.silence().catch(ctx.report);
    });
  }

  get isOpen() {
    return this.dialog.open;
  }

  /** Opens alert `id` (from the page's list, else read from the API). */
  async open(id) {
    const known = this.ctx.ui().alerts.list?.find((a) => a.id === id) ?? null;
    this.alert = known;
    this.series = null;
    this.seriesError = null;
    this.silencing = false;
    this.message = null;
    this.error = null;
    this.form.hidden = true;
    if (!this.dialog.open) this.dialog.showModal();
    this.render();
    try {
      this.alert = await read(`/api/v1/alerts/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      if (!known) this.error = refusal(e);
    }
    this.render();
    await this.loadChart();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
    this.alert = null;
  }

  /** Called on every page refresh: the alert as the page now has it. */
  refresh() {
    if (!this.isOpen || !this.alert || this.busy) return;
    const now = this.ctx.ui().alerts.list?.find((a) => a.id === this.alert.id);
    if (now) this.alert = now;
    this.render();
  }

  async loadChart() {
    const a = this.alert;
    if (!a || !a.device) return;
    const id = ++this.request;
    try {
      this.rules ??= await read('/api/v1/rules');
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      this.rules = [];
    }
    const rule = this.rules.find((r) => r.id === a.rule);
    this.metric = metricOf(rule) ?? (this.ctx.ui().latest ?? []).find((r) => r.device === a.device)?.metric ?? null;
    if (!this.metric) return;
    const fired = Date.parse(a.fired_at ?? a.started_at);
    const from = fired - AROUND_MS;
    const to = Math.min(fired + AROUND_MS, serverNow() + 1);
    try {
      const series = await fetchSeries(a.device, this.metric, from, to);
      if (id !== this.request) return;
      const points = (series.points ?? []).map((p) => ({ ts: Date.parse(p.ts), value: p.value }))
        .filter((p) => Number.isFinite(p.ts) && Number.isFinite(p.value));
      this.series = { ...series, points, fromMs: from, toMs: Math.max(to, from + 60_000) };
      this.seriesError = null;
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      this.seriesError = refusal(e);
    }
    this.render();
  }

  render() {
    if (!this.isOpen) return;
    const a = this.alert;
    this.title.textContent = a ? `${t('sev_' + a.severity)} · ${ruleNameOf(a)}` : t('loading');
    morphChildrenOf(this.info, this.error ? h('p', { class: 'ack-error', role: 'alert' }, this.error)
      : a ? this.infoOf(a) : h('p', null, t('loading')));
    morphChildrenOf(this.chart, a ? this.chartOf(a) : null);
    this.feedback.hidden = !this.message;
    this.feedback.textContent = this.message ?? '';
    morphChildrenOf(this.actions, a ? this.actionsOf(a) : null);
  }

  infoOf(a) {
    const site = this.ctx.ui().model?.sites.find((x) => x.id === a.site);
    const row = (key, ...value) => h('div', { class: 'kv' }, h('dt', null, t(key)), h('dd', null, ...value));
    const ms = (v) => (v ? Date.parse(v) : NaN);
    return [
      h('p', { class: 'detail-summary', lang: a.summary_zh && this.isZh() ? 'zh-CN' : null }, summaryOf(a)),
      h('dl', { class: 'detail-kv' },
        row('alertsWhere', [site?.name ?? a.site, a.device].filter(Boolean).join(' · ') || a.entity?.id || '–'),
        row('rule', h('span', { class: 'alert-rule' }, ruleNameOf(a)), a.rule_name_zh && this.isZh()
          ? h('span', { class: 'muted-reason' }, ` (${a.rule})`) : null),
        row('alertsState', h('span', { class: `detail-state alert-${a.state}`, 'data-state': a.state },
          t('alertState_' + a.state))),
        row('detailStarted', cnFull(ms(a.started_at))),
        a.fired_at ? row('detailFired', cnFull(ms(a.fired_at))) : null,
        a.resolved_at ? row('detailResolved', cnFull(ms(a.resolved_at))) : null,
        a.ack ? row('detailAck', h('span', { class: 'acked-by' }, t('ackedAt', a.ack.by, cnFull(ms(a.ack.at)))),
          a.ack.note ? h('span', { class: 'ack-note detail-ack-note' }, a.ack.note) : null) : null,
        a.muted ? row('detailMuted', h('span', { class: `alert-muted muted-${a.muted.kind}`, 'data-muted': a.muted.kind },
          t(a.muted.kind === 'maintenance' ? 'mutedMaintenance' : 'mutedSilence', cnDateTime(ms(a.muted.ends_at))),
          ' ', h('span', { class: 'muted-reason' }, t('mutedBy', a.muted.created_by, a.muted.reason)))) : null),
    ];
  }

  isZh() {
    return document.documentElement.lang.startsWith('zh');
  }

  chartOf(a) {
    if (!a.device) return null;
    const title = h('h3', { class: 'detail-chart-title' }, t('detailChart', this.metric ? t('metric_' + this.metric) : ''));
    if (this.seriesError) return [title, h('p', { class: 'chart-error' }, this.seriesError)];
    if (!this.series) return [title, h('p', { class: 'chart-empty' }, t('loading'))];
    if (this.series.points.length === 0) return [title, h('p', { class: 'chart-empty' }, t('detailNoData'))];
    const marks = [];
    if (a.fired_at) marks.push({ ts: Date.parse(a.fired_at), label: t('markFired'), class: 'fired' });
    if (a.resolved_at) marks.push({ ts: Date.parse(a.resolved_at), label: t('markResolved'), class: 'resolved' });
    return [title, h('div', { class: 'detail-chart-svg' }, drawChart(this.series, this.metric, marks))];
  }

  actionsOf(a) {
    const buttons = [];
    if (a.state === 'firing' && can('ack', a.tenant)) {
      buttons.push(h('button', { type: 'button', id: 'detail-ack', 'data-action': 'detail-ack' }, t('ack')));
    }
    if (a.state !== 'resolved' && can('silence', a.tenant) && !this.silencing) {
      buttons.push(h('button', { type: 'button', id: 'detail-silence', class: 'primary', 'data-action': 'detail-silence' },
        t('silenceFromAlert')));
    }
    if (a.muted && a.muted.kind === 'silence' && can('silence', a.tenant)) {
      buttons.push(h('button', { type: 'button', id: 'detail-unsilence', 'data-action': 'detail-unsilence' },
        t('silenceEnd')));
    }
    return buttons.length ? h('div', { class: 'ack-buttons' }, buttons) : null;
  }

  /** Shows the silence form, its matchers filled in from the alert's labels. */
  startSilence() {
    const a = this.alert;
    if (!a) return;
    this.silencing = true;
    const labels = [['rule', a.rule, true], ['device', a.device, true], ['site', a.site, false]]
      .filter(([, v]) => v);
    const box = (name, value, checked) => h('label', { class: 'matcher' },
      h('input', { type: 'checkbox', name: 'matcher', value: name, 'data-value': value, checked }),
      ' ', h('span', { class: 'matcher-name' }, t('matcher_' + name)), ' = ', h('code', null, value));
    morphChildrenOf(this.form,
      h('fieldset', { class: 'matchers' }, h('legend', null, t('silenceMatchers')),
        labels.map(([name, value, checked]) => box(name, value, checked))),
      h('div', { class: 'ack-field' },
        h('label', { for: 'silence-duration' }, t('silenceDuration')),
        h('select', { id: 'silence-duration' }, DURATIONS_H.map((hours, i) =>
          h('option', { value: hours, selected: i === 0 }, t('hoursN', hours))))),
      h('div', { class: 'ack-field' },
        h('label', { for: 'silence-reason' }, t('silenceReason')),
        h('textarea', { id: 'silence-reason', rows: 2, maxlength: 500 })),
      h('p', { id: 'silence-error', class: 'ack-error', role: 'alert', hidden: true }),
      h('div', { class: 'ack-buttons' },
        h('button', { type: 'button', 'data-action': 'silence-cancel' }, t('cancel')),
        h('button', { type: 'submit', id: 'silence-submit', class: 'primary' }, t('silenceSubmit'))));
    this.form.hidden = false;
    this.render();
    this.form.querySelector('#silence-reason').focus();
  }

  stopSilence() {
    this.silencing = false;
    this.form.hidden = true;
    this.render();
  }

  formError(text) {
    const el = this.form.querySelector('#silence-error');
    if (!el) return;
    el.hidden = !text;
    el.textContent = text ?? '';
  }

  async silence() {
    const a = this.alert;
    if (!a || this.busy) return;
    const matchers = {};
    for (const box of this.form.querySelectorAll('input[name="matcher"]:checked')) {
      matchers[box.value] = box.dataset.value;
    }
    const reason = this.form.querySelector('#silence-reason').value.trim();
    const hours = Number(this.form.querySelector('#silence-duration').value);
    if (Object.keys(matchers).length === 0) return this.formError(t('silenceNoMatcher'));
    if (!reason) {
      this.form.querySelector('#silence-reason').focus();
      return this.formError(t('silenceNoReason'));
    }
    const ends = serverNow() + hours * 3_600_000;
    this.busy = true;
    const submit = this.form.querySelector('#silence-submit');
    submit.disabled = true;
    try {
      const made = await send('POST', '/api/v1/silences', { matchers, kind: 'silence',
        ends_at: new Date(ends).toISOString(), reason, tenant: a.tenant });
      this.message = t('silenced', cnDateTime(Date.parse(made.ends_at)));
      this.alert = { ...a, silenced_by: made.id, muted: { id: made.id, kind: 'silence', reason: made.reason,
        ends_at: made.ends_at, created_by: made.created_by } };
      this.silencing = false;
      this.form.hidden = true;
      this.render();
      this.ctx.refresh();
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      this.formError(refusal(e));
    } finally {
      this.busy = false;
      submit.disabled = false;
    }
  }

  async unsilence() {
    const a = this.alert;
    if (!a?.muted || this.busy) return;
    this.busy = true;
    try {
      await send('DELETE', `/api/v1/silences/${encodeURIComponent(a.muted.id)}`);
      this.message = t('silenceEnded');
      this.alert = { ...a, muted: null, silenced_by: null };
      this.ctx.refresh();
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      this.message = refusal(e);
    } finally {
      this.busy = false;
      this.render();
    }
  }

  /** Handles this dialog's buttons; true if `action` was one of them. */
  activate(action) {
    switch (action) {
      case 'close-alert-detail': this.close(); return true;
      case 'detail-silence': this.startSilence(); return true;
      case 'silence-cancel': this.stopSilence(); return true;
      case 'detail-unsilence': this.unsilence().catch(this.ctx.report); return true;
      case 'detail-ack': {
        const id = this.alert?.id;
        this.close();
        if (id !== undefined) this.ctx.openAck(id);
        return true;
      }
      default: return false;
    }
  }
}
