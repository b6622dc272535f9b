// Role: composing a broadcast (docs/BROADCAST.md, "The console"): its level, with what the
// level means and whether it waits for a second operator (the server's rules, GET
// /api/v1/broadcasts/rules); the text, with its length against the limit the server
// enforces, filled from the spoken-warning templates of DOMAIN.md if wanted; the targets,
// by village, "all", or picked on the county map; start, expiry and repeats; and the import
// of a CAP 1.2 file. The form is built once and never redrawn by the refresh, so what a
// person types stays; only its computed parts (help, counts, the village list) are updated.
//
// Invariants: a level is always chosen by a person (none is preselected); a level that
// goes out at once needs a second click ("send now to N speakers"), any change of the form
// disarms it; the page never decides for the server: every rule shown is the server's, and
// whatever is sent is validated there again.

import { h } from './dom.js';
import { t, lang } from './strings.js';
import { serverNow } from './api.js';
import { LEVELS } from './broadcasts.js';
import { createBroadcast, fetchRules, fetchSpeakers, importCap, may, writeError } from './bcapi.js';

/** Levels that wait for a second operator when the server's rules cannot be read (its default). */
const DEFAULT_APPROVAL = ['red', 'orange'];
/** The server's text limit when its rules cannot be read (MAX_TEXT_BYTES). */
const DEFAULT_MAX_BYTES = 1500;
/** Expiry offered for a new broadcast. */
const DEFAULT_VALID_MS = 2 * 3600_000;

/**
 * Spoken-warning templates (DOMAIN.md, "Emergency broadcast platforms in China": issuer,
 * time, hazard and level, what is expected where, what to do now). `{issuer}`, `{time}`,
 * `{level}`, `{where}`, `{until}` are filled from the form. Always Chinese: it is what the
 * speakers read, whatever the page's language.
 */
export const TEMPLATES = {
  flood: {
    category: 'Met', issuer: '县气象台', event: '暴雨{level}预警',
    text: '{issuer}{time}发布暴雨{level}预警：预计未来6小时{where}有强降雨，河道水位快速上涨。请立即转移到高处，远离河道和低洼地带，不要涉水过河。',
  },
  torrent: {
    category: 'Geo', issuer: '县防汛抗旱指挥部', event: '山洪灾害{level}预警',
    text: '{issuer}{time}发布山洪灾害{level}预警：{where}沟谷可能暴发山洪。请立即转移到高处，远离河道和山洪沟，不要在沟边停留。',
  },
  drought: {
    category: 'Met', issuer: '县气象台', event: '干旱{level}预警',
    text: '{issuer}{time}发布干旱{level}预警：{where}旱情持续加重。请节约用水，优先保障人畜饮水，严禁野外用火。',
  },
  watercut: {
    category: 'Infra', issuer: '县水务局', event: '计划停水通知',
    text: '{issuer}通知：因供水设施检修，{where}自{time}起停水，预计{until}恢复供水。请提前储水；恢复供水后请先放水片刻再饮用。',
  },
  fire: {
    category: 'Fire', issuer: '县森林防灭火指挥部', event: '森林火险{level}预警',
    text: '{issuer}{time}发布森林火险{level}预警：{where}森林火险等级高。严禁野外用火，严禁焚烧秸秆和上坟烧纸；发现火情请立即拨打119。',
  },
};

const LEVEL_ZH = { red: '红色', orange: '橙色', yellow: '黄色', blue: '蓝色' };

/** "12月3日16时" in the browser's time zone: how the warnings say times. */
function spokenTime(ms) {
  const d = new Date(ms);
  return `${d.getMonth() + 1}月${d.getDate()}日${d.getHours()}时`;
}

/** A template's text and CAP fields for a level, places and times. */
export function fillTemplate(key, { level, where, start, until }) {
  const tpl = TEMPLATES[key];
  const fill = (s) => s.replaceAll('{issuer}', tpl.issuer).replaceAll('{time}', spokenTime(start))
    .replaceAll('{level}', LEVEL_ZH[level] ?? '').replaceAll('{where}', where).replaceAll('{until}', spokenTime(until));
  return { text: fill(tpl.text), event: fill(tpl.event), category: tpl.category };
}

/** UTF-8 bytes of a text (the server's limit is in bytes). */
function bytesOf(text) {
  return new TextEncoder().encode(text).length;
}

/** `<input type=datetime-local>` value for a time in ms (browser's zone). */
function localInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** The chinese part of "东村 Dongcun" (what the speakers say). */
function spokenName(name) {
  return name.split(' ')[0];
}

/** The compose form in `root`. `onCreated(broadcast)` is told of every broadcast it made. */
export class Compose {
  constructor(root, { onCreated, sites }) {
    this.root = root;
    this.onCreated = onCreated;
    /** () => GET /api/v1/sites as last read (names of villages). */
    this.sites = sites;
    this.rules = null;
    /** Villages with speakers: [{ id, name, tenant, speakers, offline }]. */
    this.villages = [];
    this.selected = new Set();
    this.lastFilled = null;
    this.armed = false;
    this.busy = false;
    this.loadError = null;
    /** CAP fields of the template the text came from (null once the text is edited by hand). */
    this.cap = null;
    /** The language the template's options were last written in. */
    this.optionsLang = null;
    this.build();
  }

  get isOpen() {
    return !this.root.hidden;
  }

  build() {
    const field = (id, key, control, hint) => h('div', { class: 'bc-field' },
      h('label', { for: id, 'data-i18n': key }, t(key)), control, hint ?? null);
    this.els = {
      levels: LEVELS.map((level) => h('label', { class: `bc-level level-${level}` },
        h('input', { type: 'radio', name: 'bc-level', value: level }),
        h('span', { class: 'level', 'data-i18n': 'level_' + level }, t('level_' + level)),
        h('span', { class: 'bc-level-name' }),
        h('span', { class: 'bc-level-approval' }))),
      levelHelp: h('p', { id: 'bc-level-help', class: 'bc-help', 'aria-live': 'polite' }),
      template: h('select', { id: 'bc-template' }),
      text: h('textarea', { id: 'bc-text', rows: 4, lang: 'zh-CN', spellcheck: 'false' }),
      textCount: h('p', { id: 'bc-text-count', class: 'hint', 'aria-live': 'polite' }),
      all: h('input', { type: 'checkbox', id: 'bc-all' }),
      villages: h('ul', { id: 'bc-villages', class: 'bc-villages' }),
      targetCount: h('p', { id: 'bc-target-count', class: 'bc-help', 'aria-live': 'polite' }),
      start: h('input', { type: 'datetime-local', id: 'bc-start' }),
      expires: h('input', { type: 'datetime-local', id: 'bc-expires', required: true }),
      repeat: h('input', { type: 'number', id: 'bc-repeat', min: 1, max: 10, value: 1, inputmode: 'numeric' }),
      tenant: h('select', { id: 'bc-tenant' }),
      tenantRow: null,
      error: h('p', { id: 'bc-compose-error', class: 'ack-error', role: 'alert', hidden: true }),
      confirm: h('p', { id: 'bc-confirm', class: 'bc-confirm', role: 'alert', hidden: true }),
      send: h('button', { type: 'submit', id: 'bc-send', class: 'primary' }),
      capFile: h('input', { type: 'file', id: 'bc-cap-file', accept: '.xml,.cap,application/xml,application/cap+xml' }),
      capResult: h('p', { id: 'bc-cap-result', class: 'bc-help', role: 'status' }),
    };
    const e = this.els;
    e.tenantRow = field('bc-tenant', 'bcTenant', e.tenant);
    e.tenantRow.hidden = true;
    this.form = h('form', { id: 'compose-form', class: 'compose-form', novalidate: true },
      h('div', { class: 'chart-head' },
        h('h2', { id: 'compose-title', 'data-i18n': 'bcNew' }, t('bcNew')),
        h('button', { type: 'button', class: 'close', 'data-action': 'bc-compose-close', 'aria-label': t('close'),
          'data-i18n-label': 'close' }, '×')),
      h('fieldset', { class: 'bc-levels' },
        h('legend', { 'data-i18n': 'bcLevel' }, t('bcLevel')), e.levels, e.levelHelp),
      field('bc-template', 'bcTemplate', e.template),
      field('bc-text', 'bcText', e.text, e.textCount),
      h('fieldset', { class: 'bc-targets' },
        h('legend', { 'data-i18n': 'bcTargets' }, t('bcTargets')),
        h('label', { class: 'bc-all' }, e.all, ' ', h('span', { 'data-i18n': 'bcAll' }, t('bcAll'))),
        e.villages,
        h('p', { class: 'hint', 'data-i18n': 'bcPickOnMap' }, t('bcPickOnMap')),
        e.targetCount),
      e.tenantRow,
      h('div', { class: 'bc-times' },
        field('bc-start', 'bcStart', e.start, h('p', { class: 'hint', 'data-i18n': 'bcStartHint' }, t('bcStartHint'))),
        field('bc-expires', 'bcExpires', e.expires),
        field('bc-repeat', 'bcRepeat', e.repeat)),
      e.error,
      e.confirm,
      h('div', { class: 'ack-buttons' },
        h('button', { type: 'button', 'data-action': 'bc-compose-close', 'data-i18n': 'cancel' }, t('cancel')),
        e.send),
      h('details', { class: 'bc-cap' },
        h('summary', { 'data-i18n': 'bcCapImport' }, t('bcCapImport')),
        h('p', { class: 'hint', 'data-i18n': 'bcCapHint' }, t('bcCapHint')),
        h('div', { class: 'bc-cap-row' }, e.capFile,
          h('button', { type: 'button', id: 'bc-cap-import', 'data-action': 'bc-cap-import', 'data-i18n': 'bcCapSend' },
            t('bcCapSend'))),
        e.capResult));
    this.root.replaceChildren(this.form);
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit().catch(report);
    });
    this.form.addEventListener('input', (event) => this.changed(event.target));
    this.form.addEventListener('change', (event) => this.changed(event.target));
  }

  /** Opens the form (reading the server's rules and the speakers) and focuses the level. */
  async open() {
    this.root.hidden = false;
    this.onTargets?.();
    if (!this.els.expires.value) this.resetTimes();
    this.render();
    this.root.scrollIntoView({ block: 'start' });
    this.els.levels[0].querySelector('input').focus({ preventScroll: true });
    await this.load();
  }

  close() {
    this.root.hidden = true;
    this.onTargets?.();
    this.armed = false;
    this.onClosed?.();
  }

  resetTimes() {
    const now = serverNow();
    this.els.start.value = '';
    this.els.expires.value = localInput(now + DEFAULT_VALID_MS);
  }

  async load() {
    try {
      const [rules, speakers] = await Promise.all([fetchRules().catch(() => null), fetchSpeakers()]);
      this.rules = rules;
      this.villages = villagesOf(speakers, this.sites() ?? []);
      this.loadError = null;
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      this.loadError = e.why;
    }
    this.renderVillages();
    this.render();
  }

  level() {
    return this.form.querySelector('input[name="bc-level"]:checked')?.value ?? null;
  }

  /** The targets as the API spells them, and the tenant they are in (if one). */
  targets() {
    if (this.els.all.checked) {
      const tenants = [...new Set(this.villages.map((v) => v.tenant))];
      const tenant = tenants.length > 1 ? this.els.tenant.value : tenants[0] ?? null;
      return { targets: ['all'], tenant, speakers: this.villages.filter((v) => !tenant || v.tenant === tenant)
        .reduce((n, v) => n + v.speakers, 0) };
    }
    const chosen = this.villages.filter((v) => this.selected.has(v.id));
    const tenants = [...new Set(chosen.map((v) => v.tenant))];
    return { targets: chosen.map((v) => `village:${v.id}`), tenant: tenants.length === 1 ? tenants[0] : null,
      speakers: chosen.reduce((n, v) => n + v.speakers, 0), villages: chosen };
  }

  tenant() {
    return this.targets().tenant ?? this.villages[0]?.tenant ?? null;
  }

  /** Whether `level` waits for a second operator in `tenant`, by the server's rules. */
  needsApproval(level, tenant) {
    const rules = this.rules;
    const levels = (tenant && rules?.tenant_approval_levels?.[tenant]) ?? rules?.approval_levels ?? DEFAULT_APPROVAL;
    return levels.includes(level);
  }

  maxBytes() {
    return this.rules?.max_text_bytes ?? DEFAULT_MAX_BYTES;
  }

  where() {
    if (this.els.all.checked) return '全县各村';
    const chosen = this.targets().villages ?? [];
    return chosen.length ? chosen.map((v) => spokenName(v.name)).join('、') : '本地';
  }

  times() {
    const start = this.els.start.value ? new Date(this.els.start.value).getTime() : serverNow();
    const until = this.els.expires.value ? new Date(this.els.expires.value).getTime() : NaN;
    return { start, until };
  }

  /** Fills the text from the chosen template, unless the person has changed it since. */
  fill(force) {
    const key = this.els.template.value;
    if (!key || !(key in TEMPLATES)) return;
    if (!force && this.els.text.value !== this.lastFilled) return;
    const { start, until } = this.times();
    const filled = fillTemplate(key, { level: this.level(), where: this.where(), start,
      until: Number.isFinite(until) ? until : start + DEFAULT_VALID_MS });
    this.els.text.value = filled.text;
    this.lastFilled = filled.text;
    this.cap = { event: filled.event, category: filled.category };
  }

  changed(target) {
    this.armed = false;
    if (target === this.els.template) this.fill(true);
    else if (target !== this.els.text) this.fill(false);
    if (target === this.els.text && this.els.text.value !== this.lastFilled) this.cap = null;
    if (target?.name === 'bc-village') {
      if (target.checked) this.selected.add(target.value);
      else this.selected.delete(target.value);
      this.fill(false);
    }
    if (target === this.els.all) {
      for (const box of this.els.villages.querySelectorAll('input')) box.disabled = this.els.all.checked;
      this.fill(false);
    }
    this.showError(null);
    this.render();
    // The chosen villages are outlined on the map.
    if (target === null || target?.name === 'bc-village' || target === this.els.all) this.onTargets?.();
  }

  /** A click on the map: a village's site toggles the village. False when it is not one to pick. */
  pick(siteId) {
    if (!this.isOpen) return false;
    const site = (this.sites() ?? []).find((s) => s.id === siteId);
    const village = site?.village ?? (site?.kind === 'village' ? site.id : null);
    if (!village || !this.villages.some((v) => v.id === village)) return false;
    this.els.all.checked = false;
    if (this.selected.has(village)) this.selected.delete(village);
    else this.selected.add(village);
    for (const box of this.els.villages.querySelectorAll('input')) {
      box.disabled = false;
      box.checked = this.selected.has(box.value);
    }
    this.changed(null);
    return true;
  }

  /** Marks the picked villages' markers on the map (after each redraw of it). */
  decorate(mapEl) {
    const sites = this.sites() ?? [];
    const picked = new Set(this.isOpen && !this.els.all.checked ? this.selected : []);
    const all = this.isOpen && this.els.all.checked;
    for (const marker of mapEl.querySelectorAll('[data-site]')) {
      const site = sites.find((s) => s.id === marker.dataset.site);
      const village = site?.village ?? (site?.kind === 'village' ? site.id : null);
      const on = all ? this.villages.some((v) => v.id === village) : picked.has(village);
      marker.classList.toggle('picked', on);
      marker.classList.toggle('pickable', this.isOpen && this.villages.some((v) => v.id === village));
    }
  }

  renderVillages() {
    const e = this.els;
    e.villages.replaceChildren(...this.villages.map((v) => h('li', { 'data-village': v.id },
      h('label', null,
        h('input', { type: 'checkbox', name: 'bc-village', value: v.id }),
        ' ', h('span', { class: 'bc-village-name' }, v.name), ' ',
        h('span', { class: 'hint bc-village-speakers' }, '')))));
    for (const box of e.villages.querySelectorAll('input')) {
      box.checked = this.selected.has(box.value);
      box.disabled = e.all.checked;
    }
    const tenants = [...new Set(this.villages.map((v) => v.tenant))];
    e.tenant.replaceChildren(...tenants.map((x) => h('option', { value: x }, x)));
    e.tenantRow.hidden = tenants.length < 2;
  }

  /** Updates every computed part of the form (also after a change of language). */
  render() {
    const e = this.els;
    const level = this.level();
    const tenant = this.tenant();
    for (const label of e.levels) {
      const l = label.querySelector('input').value;
      label.querySelector('.bc-level-name').textContent = t('bcLevelName_' + l);
      label.querySelector('.bc-level-approval').textContent = this.needsApproval(l, tenant) ? t('bcApprovalBadge') : '';
    }
    e.levelHelp.textContent = level
      ? `${t('bcLevelHelp_' + level)} ${this.needsApproval(level, tenant) ? t('bcNeedsApproval') : t('bcNoApproval')}`
      : t('bcChooseLevel');
    if (this.optionsLang !== lang()) {
      // Rewritten only when the language changes: a select rebuilt while open would close.
      const chosen = e.template.value;
      e.template.replaceChildren(h('option', { value: '' }, t('bcTemplateNone')),
        ...Object.keys(TEMPLATES).map((k) => h('option', { value: k }, t('bcTemplate_' + k))));
      e.template.value = chosen;
      this.optionsLang = lang();
    }
    const text = e.text.value.trim();
    const bytes = bytesOf(text);
    e.textCount.textContent = t('bcTextCount', [...text].length, bytes, this.maxBytes());
    e.textCount.classList.toggle('over', bytes > this.maxBytes());
    for (const li of e.villages.children) {
      const v = this.villages.find((x) => x.id === li.dataset.village);
      li.querySelector('.bc-village-speakers').textContent = v ? t('bcVillageSpeakers', v.speakers, v.offline) : '';
    }
    const { targets, speakers } = this.targets();
    e.targetCount.textContent = this.loadError ? t('bcSpeakersError', this.loadError)
      : targets.length ? t('bcTargetCount', this.els.all.checked ? null : targets.length, speakers) : t('bcNoTargets');
    const waits = level && this.needsApproval(level, tenant);
    e.send.textContent = !level ? t('bcSend') : waits ? t('bcSendForApproval') : this.armed
      ? t('bcSendNowConfirm', speakers) : t('bcSendNow', speakers);
    e.confirm.hidden = !this.armed;
    e.confirm.textContent = this.armed ? t('bcConfirmNow', t('level_' + level), speakers) : '';
    e.send.disabled = this.busy;
  }

  showError(text) {
    this.els.error.hidden = !text;
    this.els.error.textContent = text ?? '';
  }

  /** What is wrong with the form, named; empty when it may be sent. */
  problems() {
    const out = [];
    if (!this.level()) out.push(t('bcNeedLevel'));
    const text = this.els.text.value.trim();
    if (!text) out.push(t('bcNeedText'));
    else if (bytesOf(text) > this.maxBytes()) out.push(t('bcTextTooLong', this.maxBytes()));
    if (!this.targets().targets.length) out.push(t('bcNeedTargets'));
    const { start, until } = this.times();
    if (!Number.isFinite(until) || until <= serverNow()) out.push(t('bcNeedExpiry'));
    else if (this.els.start.value && start >= until) out.push(t('bcStartAfterExpiry'));
    const repeat = Number(this.els.repeat.value);
    if (!Number.isInteger(repeat) || repeat < 1 || repeat > 10) out.push(t('bcNeedRepeat'));
    return out;
  }

  body() {
    const { targets, tenant } = this.targets();
    const { start, until } = this.times();
    const body = { level: this.level(), text: this.els.text.value.trim(), targets, expires_at: until,
      repeat: Number(this.els.repeat.value) };
    if (this.els.start.value) body.start_at = start;
    if (tenant) body.tenant = tenant;
    if (this.cap) Object.assign(body, { event: this.cap.event, headline: this.cap.event, category: this.cap.category });
    return body;
  }

  async submit() {
    if (this.busy) return;
    const problems = this.problems();
    if (problems.length) {
      this.showError(problems.join(' '));
      return;
    }
    const level = this.level();
    if (!may('create', this.tenant())) {
      this.showError(t('bcErr403', t('bcMayNot')));
      return;
    }
    if (!this.needsApproval(level, this.tenant()) && !this.armed) {
      // Goes out at once: a second, deliberate click.
      this.armed = true;
      this.render();
      return;
    }
    this.busy = true;
    this.render();
    try {
      const created = await createBroadcast(this.body());
      this.reset();
      this.close();
      this.onCreated(created);
    } catch (e) {
      this.showError(writeError(e, t));
    } finally {
      this.busy = false;
      this.armed = false;
      this.render();
    }
  }

  reset() {
    for (const input of this.form.querySelectorAll('input[name="bc-level"]')) input.checked = false;
    this.els.template.value = '';
    this.els.text.value = '';
    this.lastFilled = null;
    this.cap = null;
    this.selected.clear();
    this.els.all.checked = false;
    for (const box of this.els.villages.querySelectorAll('input')) {
      box.checked = false;
      box.disabled = false;
    }
    this.els.repeat.value = '1';
    this.resetTimes();
  }

  /** Sends the chosen CAP 1.2 file; the villages ticked (if any) are its targets. */
  async importCap() {
    const file = this.els.capFile.files?.[0];
    const out = this.els.capResult;
    out.classList.remove('bad');
    if (!file) {
      out.textContent = t('bcCapChoose');
      return;
    }
    const { targets } = this.targets();
    try {
      const xml = await file.text();
      const reply = await importCap(xml, this.els.all.checked ? ['all'] : targets.map((x) => x.replace(/^village:/, '')));
      if (reply.result === 'created') {
        out.textContent = t('bcCapCreated', reply.id, reply.text_cut);
        this.onCreated(reply.broadcast ?? { id: reply.id });
      } else {
        out.textContent = t('bcCapCancelled', (reply.ids ?? []).join(', '));
      }
    } catch (e) {
      out.classList.add('bad');
      out.textContent = writeError(e, t);
    }
  }
}

/** Villages with speakers, named from the sites: [{ id, name, tenant, speakers, offline }], by name. */
export function villagesOf(speakers, sites) {
  const byId = new Map();
  for (const s of speakers ?? []) {
    if (!s.village) continue;
    let v = byId.get(s.village);
    if (!v) {
      const site = sites.find((x) => x.village === s.village && x.kind === 'village')
        ?? sites.find((x) => x.id === s.village || x.village === s.village);
      byId.set(s.village, (v = { id: s.village, name: site?.name ?? s.village, tenant: s.tenant, speakers: 0, offline: 0 }));
    }
    v.speakers += 1;
    if (s.online === false) v.offline += 1;
  }
  const collator = new Intl.Collator(lang() === 'zh' ? 'zh-CN' : 'en');
  return [...byId.values()].sort((a, b) => collator.compare(a.name, b.name));
}

function report(error) {
  if (typeof reportError === 'function') reportError(error);
  else setTimeout(() => { throw error; });
}
