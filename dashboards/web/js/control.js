// Role: the control panel. For devices whose profile has writable points (a pump
// station's run/stop, auto/manual, fault reset and level set-points; a meter's valve), as
// GET /api/v1/controls lists them, it shows the device's current state from the latest
// readings, offers each point as a person sets it (two buttons for a switch, one for a
// reset, a number for a set-point), asks for confirmation and a reason, sends the write
// (POST /api/v1/devices/{id}/commands: ingest signs it, audits it with the reason and
// publishes it to the device's gateway), and follows the command
// (GET /api/v1/commands/{id}) until the gateway's answer: accepted, written, refused with
// its reason, failed, or timed out. Outcomes and refusal reasons are in the page's language.
//
// Invariants: the panel is shown only to people who may command a device of its tenant
// (`can('command', tenant)`), and only for those devices; the server checks the role and
// tenant of every command whatever the page sends (GET /api/v1/devices/{id}/controls says
// `may_command` for the caller). A command is never sent without a confirmation and a
// reason.

import { h, morphChildrenOf } from './dom.js';
import { t } from './strings.js';
import { valueText } from './format.js';
import { PUMP_FAULT_BITS } from './config.js';
import { can, send, read, refusal, cnClock, cnDateTime } from './ops.js';

/** How long a command may wait at the gateway before it must not be carried out. */
const TTL_SECS = 60;
/** Between looks at a command's outcome while it is on its way. */
const FOLLOW_MS = 1_000;
/** Device kinds offered first, in this order. */
const KIND_FIRST = ['pump_station', 'water_meter', 'speaker'];
/** The state shown for a pump station, in this order. */
const PUMP_STATE = ['pump_running', 'fault_word', 'tank_level', 'pump_flow', 'pump_current', 'pressure'];
/** Switch values people see on the two buttons of a switch point: [value, key]. */
const SWITCH_WORDS = {
  pump_run: [[1, 'ctlStart'], [0, 'ctlStop']],
  auto_mode: [[1, 'ctlAuto'], [0, 'ctlManual']],
  valve_open: [[1, 'ctlOpen'], [0, 'ctlClose']],
};

/** A value written to point `p` as people say it: "Manual" rather than "no". */
function writtenText(p, value) {
  const word = (SWITCH_WORDS[p.name] ?? (p.control === 'switch' ? [[1, 'ctlOn'], [0, 'ctlOff']] : []))
    .find(([v]) => v === value)?.[1];
  return word ? t(word) : valueText(p.name, value, p.unit);
}

/** The words of a command's refusal or failure in the page's language: `{ text, detail }`. */
export function outcomeReason(reason) {
  if (!reason) return null;
  const m = /^([a-z_]+): (.*)$/s.exec(reason);
  if (m) {
    const key = 'refusal_' + m[1];
    const text = t(key);
    if (text !== m[1]) return { text, detail: reason };
  }
  if (/did not answer|timed? ?out|timeout/i.test(reason)) return { text: t('refusal_no_answer'), detail: reason };
  if (/illegal ?data ?value|IllegalDataValue/i.test(reason)) return { text: t('refusal_device_value'), detail: reason };
  return { text: reason, detail: null };
}

/** The control panel. `ctx`: { ui(), panel, body, report, refresh() }. */
export class ControlPanel {
  constructor(ctx) {
    this.ctx = ctx;
    this.models = null;
    this.modelsError = null;
    this.device = null;
    this.controls = null;
    this.controlsError = null;
    /** The command being followed or last followed: { id, point, value, label, view, error }. */
    this.command = null;
    this.pending = null;
    this.busy = false;
    this.buildConfirm();
    ctx.panel.addEventListener('change', (event) => {
      if (event.target.id === 'control-device') this.select(event.target.value);
    });
  }

  buildConfirm() {
    this.confirmWhat = h('div', { id: 'control-confirm-what', class: 'confirm-what' });
    this.reason = h('textarea', { id: 'control-reason', rows: 2, maxlength: 500 });
    this.confirmError = h('p', { id: 'control-error', class: 'ack-error', role: 'alert', hidden: true });
    this.submit = h('button', { type: 'submit', id: 'control-submit', class: 'primary danger' }, t('ctlConfirm'));
    this.confirmForm = h('form', { id: 'control-form' },
      h('div', { class: 'chart-head' }, h('h2', { id: 'control-confirm-title', 'data-i18n': 'ctlConfirmTitle' }, t('ctlConfirmTitle')),
        h('button', { type: 'button', class: 'close', 'data-action': 'control-cancel', 'aria-label': t('close') }, '×')),
      this.confirmWhat,
      h('div', { class: 'ack-field' }, h('label', { for: 'control-reason', id: 'control-reason-label', 'data-i18n': 'ctlReason' }, t('ctlReason')),
        this.reason),
      this.confirmError,
      h('div', { class: 'ack-buttons' },
        h('button', { type: 'button', 'data-action': 'control-cancel', id: 'control-cancel', 'data-i18n': 'cancel' },
          t('cancel')),
        this.submit));
    this.confirm = h('dialog', { id: 'control-confirm', class: 'ops-dialog ack-dialog',
      'aria-labelledby': 'control-confirm-title' }, this.confirmForm);
    document.body.append(this.confirm);
    this.confirmForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.sendCommand().catch(this.ctx.report);
    });
  }

  /** Devices the person may command, with their points: [{ device, points }]. */
  controllable() {
    const ui = this.ctx.ui();
    if (!this.models || !ui.devices) return [];
    const byModel = new Map(this.models.map((m) => [m.model, m.points]));
    const rank = (k) => (KIND_FIRST.includes(k) ? KIND_FIRST.indexOf(k) : KIND_FIRST.length);
    return ui.devices.filter((d) => byModel.has(d.model) && can('command', d.tenant))
      .map((d) => ({ device: d, points: byModel.get(d.model) }))
      .sort((a, b) => rank(a.device.kind) - rank(b.device.kind) || a.device.id.localeCompare(b.device.id));
  }

  /** Called on every page refresh. */
  async refresh() {
    if (!this.models && !this.modelsError) {
      try {
        this.models = await read('/api/v1/controls', null, true);
      } catch (e) {
        if (e.name !== 'ApiError') throw e;
        // 404: this ingest issues no commands; the panel stays hidden.
        this.modelsError = refusal(e);
      }
    }
    const list = this.controllable();
    if (list.length && !list.some((c) => c.device.id === this.device)) this.device = list[0].device.id;
    if (!list.length) this.device = null;
    if (this.device) await this.loadControls();
    this.render();
  }

  async loadControls() {
    const id = this.device;
    try {
      const c = await read(`/api/v1/devices/${encodeURIComponent(id)}/controls`, null, true);
      if (id !== this.device) return;
      this.controls = c;
      this.controlsError = null;
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      if (id === this.device) this.controlsError = refusal(e);
    }
  }

  select(id) {
    this.device = id;
    this.controls = null;
    this.render();
    this.loadControls().then(() => this.render()).catch(this.ctx.report);
  }

  render() {
    const list = this.controllable();
    this.ctx.panel.hidden = list.length === 0;
    if (!list.length) {
      morphChildrenOf(this.ctx.body);
      return;
    }
    const current = list.find((c) => c.device.id === this.device) ?? list[0];
    morphChildrenOf(this.ctx.body,
      h('div', { class: 'control-pick' },
        h('label', { for: 'control-device' }, t('ctlDevice')), ' ',
        h('select', { id: 'control-device' }, list.map(({ device: d }) => h('option', { value: d.id,
          selected: d.id === current.device.id }, `${d.id} (${t('kind_' + d.kind)})`)))),
      this.deviceView(current));
  }

  latestOf(id) {
    const out = new Map();
    for (const r of this.ctx.ui().latest ?? []) if (r.device === id) out.set(r.metric, r);
    return out;
  }

  stateView(d, latest) {
    const order = d.kind === 'pump_station' ? PUMP_STATE : [...latest.keys()].slice(0, 6);
    const items = order.filter((m) => latest.has(m)).map((m) => {
      const r = latest.get(m);
      let text = valueText(m, r.value, r.unit);
      if (m === 'pump_running') text = r.value >= 0.5 ? t('ctlRunning') : t('ctlStopped');
      if (m === 'fault_word') {
        const bits = PUMP_FAULT_BITS.filter((_, i) => (Math.round(r.value) >> i) & 1).map((k) => t(k));
        text = bits.length ? bits.join(', ') : t('none');
      }
      return h('div', { class: `kv state-${m}`, 'data-metric': m, 'data-value': r.value },
        h('dt', null, t('metric_' + m)), h('dd', null, text));
    });
    const newest = Math.max(...[...latest.values()].map((r) => Date.parse(r.ts)).filter(Number.isFinite));
    return h('div', { class: 'control-state' },
      h('h3', null, t('ctlNow'), Number.isFinite(newest) ? h('span', { class: 'alert-device' },
        ` ${t('ctlAsOf', cnClock(newest))}`) : null),
      items.length ? h('dl', { class: 'detail-kv' }, items) : h('p', { class: 'alerts-off' }, t('ctlNoState')));
  }

  deviceView({ device: d, points }) {
    const latest = this.latestOf(d.id);
    const mayCommand = this.controls?.device === d.id ? this.controls.may_command : null;
    return h('div', { class: 'control-device', 'data-key': `control:${d.id}`, 'data-device': d.id },
      this.stateView(d, latest),
      this.controlsError ? h('p', { class: 'ack-error', role: 'alert' }, this.controlsError) : null,
      mayCommand === false ? h('p', { class: 'hint', id: 'control-not-allowed' }, t('ctlNotAllowed')) : null,
      mayCommand === false ? null : h('ul', { class: 'control-points' }, points.map((p) => this.pointView(d, p, latest))),
      this.resultView(),
      this.recentView());
  }

  lastWrite(point) {
    return (this.controls?.recent ?? []).find((c) => c.command?.action?.point === point
      && c.outcome?.state === 'written');
  }

  pointView(d, p, latest) {
    const last = this.lastWrite(p.name);
    const label = h('span', { class: 'point-name' }, t('point_' + p.name));
    const lastText = last ? h('span', { class: 'alert-device' }, t('ctlLastWritten',
      writtenText(p, last.command.action.value), last.issued_by, cnDateTime(Date.parse(last.outcome.at)))) : null;
    const button = (value, key, cls) => h('button', { type: 'button', class: `ctl ${cls ?? ''}`, 'data-action': 'control-ask',
      'data-device': d.id, 'data-point': p.name, 'data-value': value }, t(key));
    let controls;
    if (p.control === 'switch') {
      const words = SWITCH_WORDS[p.name] ?? [[1, 'ctlOn'], [0, 'ctlOff']];
      controls = words.map(([v, key], i) => button(v, key, i === 0 ? 'ctl-on' : 'ctl-off'));
    } else if (p.control === 'momentary') {
      controls = [button(p.max ?? 1, 'ctlReset')];
    } else {
      const current = latest.get(p.name)?.value ?? last?.command.action.value ?? null;
      controls = [h('input', { type: 'number', id: `control-value-${p.name}`, class: 'ctl-number',
        min: p.min ?? null, max: p.max ?? null, step: 'any', value: current ?? '', 'aria-labelledby': `point-${p.name}` }),
      h('span', { class: 'ctl-unit' }, p.unit === 'bool' ? '' : p.unit),
      h('button', { type: 'button', class: 'ctl', 'data-action': 'control-ask', 'data-device': d.id, 'data-point': p.name,
        'data-input': `control-value-${p.name}` }, t('ctlSet'))];
    }
    const range = p.control === 'setpoint' && p.min !== null && p.max !== null
      ? h('span', { class: 'alert-device' }, t('ctlRange', p.min, p.max, p.unit)) : null;
    return h('li', { class: `control-point point-${p.control}`, 'data-key': `point:${d.id}:${p.name}`, 'data-point': p.name },
      h('div', { class: 'point-label', id: `point-${p.name}` }, label, range, lastText),
      h('div', { class: 'point-controls' }, controls));
  }

  resultView() {
    const c = this.command;
    if (!c || c.device !== this.device) return null;
    const outcome = c.view?.outcome ?? { state: c.error ? 'error' : 'sending' };
    const reason = c.error ? { text: c.error, detail: null } : outcomeReason(outcome.reason);
    const at = outcome.at ? cnClock(Date.parse(outcome.at)) : null;
    return h('div', { id: 'control-result', class: `control-result outcome-${outcome.state}`, role: 'status',
      'aria-live': 'polite', 'data-outcome': outcome.state, 'data-command': c.id ?? null },
    h('p', { class: 'result-head' }, h('span', { class: 'outcome-glyph', 'aria-hidden': 'true' }),
      h('strong', null, t('outcome_' + outcome.state)), at ? ` · ${at}` : '',
      c.id ? h('span', { class: 'alert-device' }, t('ctlCommandNo', c.id, c.label)) : null),
    reason ? h('p', { class: 'result-reason' }, reason.text,
      reason.detail ? h('span', { class: 'alert-device', lang: 'en' }, reason.detail) : null) : null);
  }

  recentView() {
    const recent = (this.controls?.recent ?? []).filter((r) => r.id !== this.command?.id).slice(0, 5);
    if (!recent.length) return null;
    return h('details', { class: 'control-recent', 'data-key': 'control-recent' },
      h('summary', null, t('ctlRecent', recent.length)),
      h('ul', null, recent.map((r) => h('li', { 'data-key': `cmd:${r.id}`, class: `outcome-${r.outcome?.state}` },
        `${cnDateTime(Number(r.command?.issued_at) || Date.parse(r.command?.issued_at))} · `,
        `${t('point_' + r.command?.action?.point)} = ${r.command?.action?.value} · ${r.issued_by}`,
        r.reason ? ` · ${r.reason}` : '', ' · ', h('strong', null, t('outcome_' + r.outcome?.state))))));
  }

  /** Asks for confirmation and a reason before sending what `el` (a control button) asks. */
  ask(el) {
    const d = (this.ctx.ui().devices ?? []).find((x) => x.id === el.dataset.device);
    const point = this.controllable().find((c) => c.device.id === el.dataset.device)?.points
      .find((p) => p.name === el.dataset.point);
    if (!d || !point) return;
    let value;
    if (el.dataset.input) {
      value = Number(this.ctx.panel.querySelector(`#${CSS.escape(el.dataset.input)}`)?.value);
      if (!Number.isFinite(value) || value === null) return;
    } else {
      value = Number(el.dataset.value);
    }
    const latest = this.latestOf(d.id);
    const words = SWITCH_WORDS[point.name]?.find(([v]) => v === value)?.[1];
    const label = words ? t(words) : `${t('point_' + point.name)} = ${value}`;
    const running = latest.get('pump_running');
    this.pending = { device: d, point, value, label };
    morphChildrenOf(this.confirmWhat,
      h('p', { class: 'confirm-action' }, t('ctlConfirmAsk', label, d.id)),
      h('dl', { class: 'detail-kv' },
        h('div', { class: 'kv' }, h('dt', null, t('ctlDevice')), h('dd', null, `${d.id} · ${d.site}`)),
        running ? h('div', { class: 'kv' }, h('dt', null, t('ctlNow')), h('dd', null,
          running.value >= 0.5 ? t('ctlRunning') : t('ctlStopped'))) : null,
        h('div', { class: 'kv' }, h('dt', null, t('ctlWrite')), h('dd', null, h('code', null, `${point.name} = ${value}`),
          point.unit && point.unit !== 'bool' ? ` ${point.unit}` : ''))),
      h('p', { class: 'hint' }, t('ctlSigned', d.gateway, TTL_SECS)));
    this.reason.value = '';
    this.confirmError.hidden = true;
    this.submit.textContent = t('ctlConfirmDo', label);
    this.confirm.showModal();
    this.reason.focus();
  }

  async sendCommand() {
    const p = this.pending;
    if (!p || this.busy) return;
    const reason = this.reason.value.trim();
    if (!reason) {
      this.confirmError.hidden = false;
      this.confirmError.textContent = t('ctlNoReason');
      this.reason.focus();
      return;
    }
    this.busy = true;
    this.submit.disabled = true;
    try {
      const sent = await send('POST', `/api/v1/devices/${encodeURIComponent(p.device.id)}/commands`,
        { point: p.point.name, value: p.value, ttl_secs: TTL_SECS, reason });
      this.confirm.close();
      this.pending = null;
      this.command = { id: sent.id, device: p.device.id, label: p.label, view: null, error: null };
      this.render();
      this.follow(sent.id).catch(this.ctx.report);
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      this.confirmError.hidden = false;
      this.confirmError.textContent = refusal(e);
    } finally {
      this.busy = false;
      this.submit.disabled = false;
    }
  }

  /** Looks at command `id` until its outcome is final (or it timed out). */
  async follow(id) {
    const deadline = Date.now() + (TTL_SECS + 30) * 1000;
    while (this.command?.id === id && Date.now() < deadline) {
      try {
        const view = await read(`/api/v1/commands/${encodeURIComponent(id)}`);
        if (this.command?.id !== id) return;
        this.command.view = view;
        this.render();
        if (view.outcome?.final) break;
      } catch (e) {
        if (e.name !== 'ApiError') throw e;
        if (this.command?.id === id) this.command.error = refusal(e);
        this.render();
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, FOLLOW_MS));
    }
    await this.loadControls();
    this.render();
    this.ctx.refresh();
  }

  activate(action, el) {
    switch (action) {
      case 'control-ask': this.ask(el); return true;
      case 'control-cancel':
        this.pending = null;
        if (this.confirm.open) this.confirm.close();
        return true;
      default: return false;
    }
  }
}
