// Role: the broadcast console's calls to the API (docs/BROADCAST.md): create, approve,
// reject with a reason, cancel, import a CAP 1.2 file, and the two reads the console needs
// besides the page's refresh (the server's rules for a broadcast, the speakers by village).
// Writes go through the signed-in session (js/session.js: cookie and CSRF header); what a
// person may do is asked of `can(action, tenant)`, and the server decides whatever the
// page sends.

import { ApiError, getJson, postJson } from './api.js';
import { can, session } from './session.js';

/** The `can()` actions of the broadcast console (js/session.js ACTIONS). */
export const ACTIONS = {
  create: 'compose',
  approve: 'approve',
  reject: 'refuse',
  cancel: 'cancel',
};

/** Whether the signed-in person may `what` (a key of ACTIONS) for `tenant`. */
export function may(what, tenant) {
  return Boolean(can(ACTIONS[what], tenant));
}

/** The signed-in person's name (what the API records as `created_by`), or null. */
export function me() {
  return session()?.user ?? null;
}

/** Creates a broadcast; answers its summary (201). Throws ApiError. */
export function createBroadcast(body) {
  return postJson('/api/v1/broadcasts', body);
}

/** A second operator approves `id`: it goes out. Throws ApiError. */
export function approveBroadcast(id) {
  return postJson(`/api/v1/broadcasts/${encodeURIComponent(id)}/approve`, {});
}

/** A second operator refuses to release `id`, saying why. Throws ApiError. */
export function rejectBroadcast(id, reason) {
  return postJson(`/api/v1/broadcasts/${encodeURIComponent(id)}/reject`, { reason });
}

/** Cancels `id` on every speaker. Throws ApiError. */
export function cancelBroadcast(id) {
  return postJson(`/api/v1/broadcasts/${encodeURIComponent(id)}/cancel`, {});
}

/**
 * Imports a CAP 1.2 alert (`xml`, the file's text) with `targets` (ids, or none: the
 * alert's own areas). Answers `{ result: 'created', id, text_cut, broadcast }` or
 * `{ result: 'cancelled', ids }`. Throws ApiError.
 */
export function importCap(xml, targets) {
  const query = targets.length ? `?${new URLSearchParams({ targets: targets.join(',') })}` : '';
  return postXml(`/api/v1/broadcasts/cap${query}`, xml);
}

/** POSTs XML text with the session's credentials; answers the JSON reply. Throws ApiError. */
async function postXml(path, xml) {
  let response;
  try {
    response = await fetch(path, { method: 'POST', cache: 'no-store', credentials: 'same-origin',
      headers: { accept: 'application/json', 'content-type': 'application/cap+xml', 'x-csrf-token': session()?.csrf ?? '' },
      body: xml });
  } catch (e) {
    throw new ApiError(path, e.message);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: the status says what happened.
  }
  if (!response.ok) throw new ApiError(path, body?.error ?? `HTTP ${response.status}`, response.status);
  return body;
}

/** The server's rules for a broadcast (text limit, validity, which levels wait). Throws ApiError. */
export function fetchRules() {
  return getJson('/api/v1/broadcasts/rules');
}

/** Every speaker the reader may see, with its village and tenant. Throws ApiError. */
export function fetchSpeakers() {
  return getJson('/api/v1/speakers');
}

/** The URL of a broadcast's CAP 1.2 export. */
export function capUrl(id) {
  return `/api/v1/broadcasts/${encodeURIComponent(id)}/cap`;
}

/** A sentence for a failed write: the server's own reason, with what the status means. */
export function writeError(e, t) {
  if (!(e instanceof ApiError)) throw e;
  const key = { 400: 'bcErr400', 401: 'bcErr401', 403: 'bcErr403', 404: 'bcErr404', 422: 'bcErr422' }[e.status];
  return key ? t(key, e.why) : t('bcErrOther', e.status, e.why);
}
