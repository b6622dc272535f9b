// Role: the dashboard's only door to the ingest HTTP API (docs/API.md): JSON GETs, and the
// changes people make (POST, PATCH, DELETE), with a timeout and clear errors, and the
// server's clock (from the Date header), so ages are right even when the operator's PC
// clock is off.
// A change goes with a pasted token when one is given (`Authorization: Token`), else with
// the signed-in session: its cookie (sent by the browser) and its CSRF token in the
// X-CSRF-Token header (session.js hands it over), which the server requires of every change
// a cookie authenticates. The background polling says so (X-VT-Background), so it does not
// keep an idle session alive.

import { FETCH_TIMEOUT_MS } from './config.js';

/** Server clock minus browser clock (ms); ignored while under a few seconds. */
let clockOffsetMs = 0;

/** Now, by the server's clock as last seen. */
export function serverNow() {
  return Date.now() + clockOffsetMs;
}

/** The signed-in session's CSRF token (session.js sets it), or null. */
let csrfToken = null;

/** Sets the CSRF token every change made with the session carries (null: signed out). */
export function setCsrf(token) {
  csrfToken = token || null;
}

/** An API call that failed, with a sentence for people. */
export class ApiError extends Error {
  constructor(path, message, status, retryAfter) {
    super(`${path}: ${message}`);
    this.name = 'ApiError';
    this.status = status ?? null;
    /** The server's own sentence (or what failed), without the path. */
    this.why = message;
    /** Seconds to wait before trying again (429), or null. */
    this.retryAfter = retryAfter ?? null;
  }
}

/** GETs `path` (e.g. "/api/v1/latest") and returns its JSON. Throws ApiError. */
export function getJson(path, params) {
  const url = params ? `${path}?${new URLSearchParams(params)}` : path;
  return request(path, url, { headers: { accept: 'application/json' } });
}

/** getJson for the page's own refresh loop: not a sign that the person is there. */
export function pollJson(path, params) {
  const url = params ? `${path}?${new URLSearchParams(params)}` : path;
  return request(path, url, { headers: { accept: 'application/json', 'x-vt-background': '1' } });
}

/**
 * Sends a change (`method` POST, PUT, PATCH or DELETE) with `body` as JSON (none if
 * undefined), with `token` if given, else with the session and its CSRF token. Returns the
 * answer's JSON (null for 204). Throws ApiError.
 */
export function sendJson(method, path, body, token) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Token ${token}`;
  else if (csrfToken) headers['x-csrf-token'] = csrfToken;
  return request(path, path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin' });
}

/**
 * POSTs `body` as JSON with an operator's `token` (`Authorization: Token ...`, the only
 * place a token goes: never into the address), or without one as the signed-in person
 * (cookie and X-CSRF-Token). Returns the answer's JSON. Throws ApiError, whose `status`
 * says what went wrong (401 token or session, 403 role or tenant, 404 no such thing).
 */
export function postJson(path, body, token) {
  return sendJson('POST', path, body, token);
}

async function request(path, url, init) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
  const sent = Date.now();
  let response;
  try {
    response = await fetch(url, { ...init, cache: 'no-store', signal: controller.signal });
  } catch (e) {
    const why = e.name === 'AbortError' ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : e.message;
    throw new ApiError(path, why);
  } finally {
    clearTimeout(timer);
  }
  noteServerClock(response.headers.get('date'), sent, Date.now());
  if (response.status === 401) document.dispatchEvent(new CustomEvent('vt-unauthorized'));
  if (response.status === 204) return null;
  let body;
  try {
    body = await response.json();
  } catch (e) {
    throw new ApiError(path, `HTTP ${response.status}, not JSON`, response.status);
  }
  if (!response.ok) {
    const why = body && typeof body.error === 'string' ? body.error : `HTTP ${response.status}`;
    const retry = Number(response.headers.get('retry-after'));
    throw new ApiError(path, why, response.status, Number.isFinite(retry) && retry > 0 ? retry : null);
  }
  return body;
}

function noteServerClock(dateHeader, sent, received) {
  const server = dateHeader ? Date.parse(dateHeader) : NaN;
  if (!Number.isFinite(server)) return;
  // The header has whole seconds: the server's clock was in [server, server + 1 s).
  const offset = server + 500 - (sent + received) / 2;
  clockOffsetMs = Math.abs(offset) > 3_000 ? offset : 0;
}

/**
 * Sites, devices, the newest value of every series, the open alerts and the broadcasts,
 * fetched together.
 */
export async function fetchState(withSites) {
  const [sites, devices, latest, alerts, broadcasts] = await Promise.all([
    withSites ? pollJson('/api/v1/sites') : Promise.resolve(null),
    pollJson('/api/v1/devices'),
    pollJson('/api/v1/latest'),
    fetchAlerts(),
    fetchBroadcasts(),
  ]);
  return { sites, devices, latest, alerts, broadcasts };
}

/**
 * The broadcasts, newest first, without per-speaker deliveries, as `{ list }`; `{ off: true }`
 * when this ingest has no broadcast API (404); `{ error }` when they could not be read
 * (also 401/403: a server whose reads need a token). Never throws an ApiError.
 */
async function fetchBroadcasts() {
  try {
    return { list: await pollJson('/api/v1/broadcasts') };
  } catch (e) {
    if (e.name !== 'ApiError') throw e;
    return e.status === 404 ? { off: true } : { error: e.message };
  }
}

/**
 * The open alerts (pending, firing, acknowledged) as `{ list }`; `{ off: true }` when this
 * ingest runs without rules (404); `{ error }` when they could not be read. Never throws an
 * ApiError: the rest of the page still shows when only the alerts fail.
 */
async function fetchAlerts() {
  try {
    return { list: await pollJson('/api/v1/alerts', { state: 'active' }) };
  } catch (e) {
    if (e.name !== 'ApiError') throw e;
    return e.status === 404 ? { off: true } : { error: e.message };
  }
}

/** One broadcast with its per-speaker deliveries. Throws ApiError. */
export function fetchBroadcast(id) {
  return getJson(`/api/v1/broadcasts/${encodeURIComponent(id)}`);
}

/** Points of one series over [from, to) in ms. */
export function fetchSeries(device, metric, from, to) {
  return getJson('/api/v1/series', { device, metric, from: String(from), to: String(to), limit: '100000' });
}
