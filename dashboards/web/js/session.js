// Role: who is signed in on this page, and what they may do. Reads the session from
// GET /api/v1/session, signs in and out (POST/DELETE /api/v1/session), hands the session's
// CSRF token to api.js so every change the page sends carries it, and answers
// can(action, tenant) so each panel shows only the buttons its person may use.
// The server decides in the end (it refuses what a role may not do, whatever the page
// sends); can() only keeps the page from offering what would be refused.
// The session itself is an HttpOnly cookie: this script never sees it, only its CSRF token.

import { getJson, sendJson, setCsrf, ApiError } from './api.js';

/** Roles, least to most (the API's names). */
export const ROLES = ['viewer', 'operator', 'admin'];

/**
 * The least role each action needs. Panels ask can() with these names; an unknown action
 * needs an admin (so a new button stays hidden until someone says who may use it).
 */
export const ACTIONS = {
  view: 'viewer',
  ack: 'operator',
  silence: 'operator',
  maintenance: 'operator',
  compose: 'operator',
  broadcast: 'operator',
  approve: 'operator',
  refuse: 'operator',
  cancel: 'operator',
  control: 'operator',
  command: 'operator',
  audit: 'operator',
  users: 'admin',
};

/** The signed-in session `{ user, grants: [{tenant, role}], csrf, role, tenants, expires_at }`, or null. */
let current = null;
/** True once the page asked the server (so panels can tell "signed out" from "not known yet"). */
let known = false;
const listeners = new Set();

/** The session, or null when nobody is signed in. */
export function session() {
  return current;
}

/** True once the page knows whether someone is signed in. */
export function sessionKnown() {
  return known;
}

/** Calls `fn(session)` now and whenever someone signs in or out or the session ends. */
export function onSession(fn) {
  listeners.add(fn);
  fn(current);
  return () => listeners.delete(fn);
}

function set(s) {
  current = s;
  known = true;
  setCsrf(s?.csrf ?? null);
  document.documentElement.dataset.role = s ? highestRole(s) ?? '' : '';
  document.documentElement.dataset.user = s?.user ?? '';
  for (const fn of listeners) fn(current);
}

function rank(role) {
  return ROLES.indexOf(role);
}

function highestRole(s) {
  let top = null;
  for (const g of s.grants ?? []) if (top === null || rank(g.role) > rank(top)) top = g.role;
  return top;
}

/**
 * The role the signed-in person acts with in `tenant` (or, without one, anywhere), as the
 * server sees it: their highest role in the tenants where they hold it, only 'viewer' in
 * tenants where they hold a lower one, null where they hold none.
 */
export function roleIn(tenant) {
  if (!current) return null;
  const top = highestRole(current);
  if (top === null) return null;
  if (tenant === undefined || tenant === null) return top;
  const covers = (g) => g.tenant === '*' || g.tenant === tenant;
  const grants = current.grants ?? [];
  if (grants.some((g) => g.role === top && covers(g))) return top;
  return grants.some(covers) ? 'viewer' : null;
}

/** True if the signed-in person may do `action` (a key of ACTIONS) in `tenant` (any, if not given). */
export function can(action, tenant) {
  const role = roleIn(tenant);
  if (role === null) return false;
  return rank(role) >= rank(ACTIONS[action] ?? 'admin');
}

/** Asks the server who is signed in. Never throws for 401 (nobody is). */
export async function loadSession() {
  try {
    set(await getJson('/api/v1/session'));
  } catch (e) {
    if (e.name !== 'ApiError') throw e;
    // 401: nobody; 404: a server without sign-in. Either way, nobody is signed in.
    if (e.status === 401 || e.status === 404) set(null);
    else known = true;
  }
  return current;
}

/** Signs in; resolves to the session, or throws ApiError (401 wrong, 429 locked out with `retryAfter`). */
export async function signIn(user, password) {
  const s = await sendJson('POST', '/api/v1/session', { user, password });
  set(s);
  return s;
}

/** Signs out (the server ends the session and clears the cookie). */
export async function signOut() {
  try {
    await sendJson('DELETE', '/api/v1/session');
  } catch (e) {
    // Already ended (401): signed out all the same.
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
  } finally {
    set(null);
  }
}

// A call refused with 401 while the page thought someone was signed in: the session ended
// (expired, signed out elsewhere, password reset). Ask again, so the page shows the form.
document.addEventListener('vt-unauthorized', () => {
  if (current) loadSession().catch(() => set(null));
});

// ---- the sign-in form and the signed-in bar (index.html #signin-form, #signed-in) ----------

/**
 * Wires the sign-in form and the signed-in bar: `els` = { form, user, password, submit,
 * error, bar, name, role, signOut }; `t` the strings' lookup. Shows the form when nobody is
 * signed in, the name, role and a sign-out button when someone is.
 */
export function mountSignIn(els, t) {
  const show = (s) => {
    els.form.hidden = !sessionKnown() || s !== null;
    els.bar.hidden = s === null;
    els.name.textContent = s?.user ?? '';
    const role = s ? roleIn() : null;
    els.role.textContent = role ? t('role_' + role) : '';
  };
  const error = (text) => {
    els.error.hidden = !text;
    els.error.textContent = text ?? '';
  };
  els.form.addEventListener('submit', (event) => {
    // Never a real form submission: the page sends the request itself (and CSP forbids one).
    event.preventDefault();
    const user = els.user.value.trim();
    const password = els.password.value;
    if (!user || !password) {
      error(t('signinMissing'));
      return;
    }
    els.submit.disabled = true;
    error(null);
    signIn(user, password)
      .then(() => {
        els.password.value = '';
      })
      .catch((e) => {
        if (e.name !== 'ApiError') throw e;
        els.password.value = '';
        if (e.status === 429) error(t('signinLocked', e.retryAfter ?? 60));
        else if (e.status === 401) error(t('signinWrong'));
        else error(t('signinFailed', e.why));
        els.password.focus();
      })
      .finally(() => {
        els.submit.disabled = false;
      });
  });
  els.signOut.addEventListener('click', () => {
    signOut().catch((e) => error(t('signinFailed', e.why ?? e.message)));
  });
  onSession(show);
  return { refresh: () => show(current) };
}
