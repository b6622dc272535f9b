// Role: the audit view (index.html #audit): who did what, when and from where, from
// GET /api/v1/audit, newest first, searchable by text and by kind of action. Shown to
// operators and admins (can('audit')); the server shows each only what their tenants let
// them see.

import { h } from './dom.js';
import { t } from './strings.js';
import { getJson } from './api.js';
import { dateTime } from './format.js';
import { can, onSession } from './session.js';

/** Kinds of action the search offers (prefixes of the API's action names). */
const KINDS = ['', 'signin', 'signout', 'broadcast', 'alert', 'silence', 'command', 'user'];

/** The panel: `els` = { details, body }. Loads when opened and on each search. */
export function mountAudit(els) {
  let entries = [];
  let error = null;
  let loaded = false;

  async function load() {
    if (!can('audit')) return;
    const q = els.body.querySelector('#audit-q')?.value.trim() ?? '';
    const action = els.body.querySelector('#audit-kind')?.value ?? '';
    const params = { limit: '200' };
    if (q) params.q = q;
    if (action) params.action = action;
    try {
      entries = await getJson('/api/v1/audit', params);
      error = null;
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      error = e.why;
    }
    loaded = true;
    renderList();
  }

  function actionText(action) {
    return t('audit_' + action.replace(/\./g, '_'));
  }

  function detailText(d) {
    if (d === null || d === undefined) return '';
    if (typeof d !== 'object') return String(d);
    return Object.entries(d).filter(([, v]) => v !== null && v !== '')
      .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join('; ');
  }

  function renderForm() {
    els.body.replaceChildren(
      h('form', { id: 'audit-search', class: 'audit-search', role: 'search' },
        h('label', null, t('auditSearch'), ' ', h('input', { id: 'audit-q', type: 'search', maxlength: 200,
          spellcheck: 'false' })),
        h('label', null, t('auditKind'), ' ', h('select', { id: 'audit-kind' },
          KINDS.map((k) => h('option', { value: k }, k ? t('auditKind_' + k) : t('auditKindAll'))))),
        h('button', { type: 'submit', id: 'audit-submit' }, t('auditFind'))),
      h('div', { id: 'audit-list' }));
  }

  function renderList() {
    const list = els.body.querySelector('#audit-list');
    if (!list) return;
    if (error) {
      list.replaceChildren(h('p', { class: 'audit-error', role: 'alert' }, error));
      return;
    }
    if (loaded && entries.length === 0) {
      list.replaceChildren(h('p', { class: 'hint' }, t('auditNone')));
      return;
    }
    list.replaceChildren(h('table', { class: 'audit-table' },
      h('caption', { class: 'sr' }, t('auditCaption')),
      h('thead', null, h('tr', null, ['auditWhen', 'auditWho', 'auditFrom', 'auditWhat', 'auditTenant', 'auditOn',
        'auditDetail'].map((k) => h('th', { scope: 'col' }, t(k))))),
      h('tbody', null, entries.map((e) => h('tr', { 'data-audit': e.action,
        class: e.action.endsWith('failed') || e.action.endsWith('locked') ? 'audit-bad' : null },
      h('td', { class: 'audit-when' }, dateTime(Date.parse(e.ts))),
      h('td', { class: 'audit-who' }, e.actor, e.via === 'token' ? h('span', { class: 'audit-via' }, ` (${t('auditToken')})`) : ''),
      h('td', { class: 'audit-ip' }, e.ip ?? '–'),
      h('td', { class: 'audit-what' }, actionText(e.action)),
      h('td', null, e.tenant ?? '–'),
      h('td', null, e.target ?? ''),
      h('td', { class: 'audit-detail' }, detailText(e.detail)))))));
  }

  els.body.addEventListener('submit', (event) => {
    if (event.target.id !== 'audit-search') return;
    event.preventDefault();
    load();
  });
  els.details.addEventListener('toggle', () => {
    if (els.details.open) load();
  });
  renderForm();
  onSession(() => {
    els.details.hidden = !can('audit');
    if (els.details.open) load();
  });
  /** Redraws in the current language (keeps what was searched for). */
  function refresh() {
    const q = els.body.querySelector('#audit-q')?.value ?? '';
    const kind = els.body.querySelector('#audit-kind')?.value ?? '';
    renderForm();
    els.body.querySelector('#audit-q').value = q;
    els.body.querySelector('#audit-kind').value = kind;
    renderList();
  }
  return { refresh };
}
