// Role: the dashboard's only door to the ingest HTTP API (docs/API.md): JSON GETs with a
// timeout and clear errors, and the server's clock (from the Date header), so ages are
// right even when the operator's PC clock is off.

import { FETCH_TIMEOUT_MS } from './config.js';

/** Server clock minus browser clock (ms); ignored while under a few seconds. */
let clockOffsetMs = 0;

/** Now, by the server's clock as last seen. */
export function serverNow() {
  return Date.now() + clockOffsetMs;
}

/** An API call that failed, with a sentence for people. */
export class ApiError extends Error {
  constructor(path, message, status) {
    super(`${path}: ${message}`);
    this.name = 'ApiError';
    this.status = status ?? null;
  }
}

/** GETs `path` (e.g. "/api/v1/latest") and returns its JSON. Throws ApiError. */
export async function getJson(path, params) {
  const url = params ? `${path}?${new URLSearchParams(params)}` : path;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
  const sent = Date.now();
  let response;
  try {
    response = await fetch(url, {
      headers: { accept: 'application/json' }, cache: 'no-store', signal: controller.signal,
    });
  } catch (e) {
    const why = e.name === 'AbortError' ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : e.message;
    throw new ApiError(path, why);
  } finally {
    clearTimeout(timer);
  }
  noteServerClock(response.headers.get('date'), sent, Date.now());
  let body;
  try {
    body = await response.json();
  } catch (e) {
    throw new ApiError(path, `HTTP ${response.status}, not JSON`, response.status);
  }
  if (!response.ok) {
    const why = body && typeof body.error === 'string' ? body.error : `HTTP ${response.status}`;
    throw new ApiError(path, why, response.status);
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

/** Sites, devices and the newest value of every series, fetched together. */
export async function fetchState(withSites) {
  const [sites, devices, latest] = await Promise.all([
    withSites ? getJson('/api/v1/sites') : Promise.resolve(null),
    getJson('/api/v1/devices'),
    getJson('/api/v1/latest'),
  ]);
  return { sites, devices, latest };
}

/** Points of one series over [from, to) in ms. */
export function fetchSeries(device, metric, from, to) {
  return getJson('/api/v1/series', { device, metric, from: String(from), to: String(to), limit: '100000' });
}
