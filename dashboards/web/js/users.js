// Role: the admin's panel of people (index.html #users): everyone the signed-in admin may
// manage, their roles per tenant, and the three things an admin does: add a person, change
// a role, reset a password (a new one is shown once, to be handed over in person).
// The server checks every change (an admin of one tenant manages only that tenant's
// grants); this panel only offers them to admins (can('users')).

import { h } from './dom.js';
import { t } from './strings.js';
import { getJson, sendJson } from './api.js';
import { ROLES, can, onSession, session } from './session.js';

/** The panel: `els` = { details, body }. Loads when opened, and again after each change. */
export function mountUsers(els) {
  let notice = null;
  let error = null;
  let list = [];

  async function load() {
    if (!can('users')) return;
    try {
      list = await getJson('/api/v1/users');
      error = null;
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      error = e.why;
    }
    render();
  }

  async function change(promise, done) {
    try {
      const answer = await promise;
      notice = done(answer);
      error = null;
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      error = e.why;
      notice = null;
    }
    await load();
  }

  function defaultTenant() {
    const s = session();
    const admin = (s?.grants ?? []).find((g) => g.role === 'admin' && g.tenant !== '*');
    return admin?.tenant ?? 'county';
  }

  function roleSelect(value, attrs) {
    return h('select', attrs, ROLES.map((r) => h('option', { value: r, selected: r === value }, t('role_' + r))));
  }

  function row(u) {
    const grants = u.grants.map((g) => h('li', { 'data-tenant': g.tenant },
      h('span', { class: 'grant-tenant' }, g.tenant === '*' ? t('allTenants') : g.tenant), ' ',
      roleSelect(g.role, { 'data-user-role': u.name, 'data-grant-tenant': g.tenant,
        'aria-label': t('usersRoleOf', u.name, g.tenant) })));
    return h('tr', { 'data-user': u.name },
      h('td', { class: 'user-name' }, u.name),
      h('td', null, h('ul', { class: 'grants' }, grants)),
      h('td', { class: 'user-actions' },
        u.manageable ? h('button', { type: 'button', 'data-user-reset': u.name }, t('usersReset')) : null));
  }

  function render() {
    const form = h('form', { id: 'user-new', class: 'user-new' },
      h('label', null, t('usersName'), ' ', h('input', { id: 'user-new-name', required: true, maxlength: 64,
        autocomplete: 'off', spellcheck: 'false' })),
      h('label', null, t('usersTenant'), ' ', h('input', { id: 'user-new-tenant', value: defaultTenant(),
        maxlength: 64, spellcheck: 'false' })),
      h('label', null, t('usersRole'), ' ', roleSelect('viewer', { id: 'user-new-role' })),
      h('label', null, t('usersPassword'), ' ', h('input', { id: 'user-new-password', type: 'password',
        autocomplete: 'new-password', placeholder: t('usersPasswordHint'), maxlength: 256 })),
      h('button', { type: 'submit', id: 'user-new-submit', class: 'primary' }, t('usersAdd')));
    els.body.replaceChildren(
      notice ? h('p', { class: 'users-notice', role: 'status' }, notice) : '',
      error ? h('p', { class: 'users-error', role: 'alert' }, error) : '',
      h('table', { class: 'users-table' },
        h('thead', null, h('tr', null, h('th', null, t('usersName')), h('th', null, t('usersRoles')),
          h('th', null, h('span', { class: 'sr' }, t('usersActions'))))),
        h('tbody', null, list.map(row))),
      form);
  }

  els.body.addEventListener('submit', (event) => {
    if (event.target.id !== 'user-new') return;
    event.preventDefault();
    const v = (id) => els.body.querySelector('#' + id).value.trim();
    const name = v('user-new-name');
    const body = { name, grants: [{ tenant: v('user-new-tenant') || '*', role: v('user-new-role') }] };
    const password = els.body.querySelector('#user-new-password').value;
    if (password) body.password = password;
    change(sendJson('POST', '/api/v1/users', body),
      (u) => (u.password ? t('usersMadeWith', name, u.password) : t('usersMade', name)));
  });
  els.body.addEventListener('click', (event) => {
    const reset = event.target.closest('[data-user-reset]');
    if (!reset) return;
    const name = reset.dataset.userReset;
    if (!window.confirm(t('usersResetConfirm', name))) return;
    change(sendJson('POST', `/api/v1/users/${encodeURIComponent(name)}/password`, {}),
      (a) => t('usersResetDone', name, a.password));
  });
  els.body.addEventListener('change', (event) => {
    const select = event.target.closest('[data-user-role]');
    if (!select) return;
    const name = select.dataset.userRole;
    const user = list.find((u) => u.name === name);
    if (!user) return;
    const grants = user.grants.map((g) => (g.tenant === select.dataset.grantTenant ? { ...g, role: select.value } : g));
    change(sendJson('PATCH', `/api/v1/users/${encodeURIComponent(name)}`, { grants }),
      () => t('usersChanged', name));
  });
  els.details.addEventListener('toggle', () => {
    if (els.details.open) load();
  });
  onSession(() => {
    els.details.hidden = !can('users');
    notice = null;
    if (els.details.open) load();
  });
  return { refresh: render };
}
