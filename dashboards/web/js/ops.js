// Role: what the operator console's alert and control panels share: who may act (`can`:
// the signed-in person's roles from js/session.js; signed out, whoever saved an operator
// token in this tab, as the acknowledge dialog does), sending a change to the API as that
// person (session cookie and CSRF token, or the token), reading the API as that person (so
// the server can say what they may do), times as people in China write them (Asia/Shanghai, whatever the browser's own
// zone), and an alert's words in the page's language (the server's `summary_zh` and
// `rule_name_zh` when the page is in Chinese, English otherwise).
//
// Invariants: nothing here decides what a person may do; the server refuses whatever the
// page sends. `can` only keeps buttons a person could not use off the page.

import { ApiError, getJson, pollJson, sendJson } from './api.js';
import { can as sessionCan, session } from './session.js';
import { lang, t } from './strings.js';
import { FETCH_TIMEOUT_MS } from './config.js';

/** Where the operator's token is kept in this tab (the acknowledge dialog asks for it). */
export const TOKEN_KEY = 'vt-dashboard-token';

/** The operator token saved in this tab, or null. */
export function savedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** Keeps (or with null forgets) the operator token for this tab. */
export function saveToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage is off: the token is asked for again next time.
  }
}

/**
 * Whether the person at the page may `action` (`ack`, `silence`, `maintenance`, `command`)
 * on `tenant`, as far as the page knows: signed in, as their roles say (session.js);
 * signed out, only with an operator token saved in this tab (the server checks the token's
 * role and tenant on every call).
 */
export function can(action, tenant) {
  if (session()) return sessionCan(action, tenant);
  return savedToken() !== null;
}

/** The token to send: none when signed in (the session cookie and CSRF token speak). */
function token() {
  return session() ? null : savedToken();
}

/**
 * Sends `body` as JSON with `method` to `path` as the person at the page; returns the
 * answer's JSON (null for 204). Throws ApiError with the server's sentence.
 */
export function send(method, path, body) {
  return sendJson(method, path, body, token() ?? undefined);
}

/**
 * GETs `path` with `params` (empty ones left out) as the person at the page. `background`:
 * the page's own refresh, which does not keep a session alive. Throws ApiError.
 */
export function read(path, params, background = false) {
  const query = params ? Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== '') : [];
  const t = token();
  if (!t) return (background ? pollJson : getJson)(path, query.length ? Object.fromEntries(query) : undefined);
  const url = query.length ? `${path}?${new URLSearchParams(query)}` : path;
  return call(url, { headers: { accept: 'application/json', authorization: `Token ${t}` } });
}

async function call(path, init) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
  let response;
  try {
    response = await fetch(path, { ...init, cache: 'no-store', credentials: 'same-origin', signal: controller.signal });
  } catch (e) {
    throw new ApiError(path, e.name === 'AbortError' ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : e.message);
  } finally {
    clearTimeout(timer);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    throw new ApiError(path, `HTTP ${response.status}, not JSON`, response.status);
  }
  if (!response.ok) {
    throw new ApiError(path, body && typeof body.error === 'string' ? body.error : `HTTP ${response.status}`,
      response.status);
  }
  return body;
}

/** A refused call in the page's language: what the status means, then the server's words. */
export function refusal(e) {
  if (!e || e.name !== 'ApiError') return String(e);
  const key = { 400: 'opsErr400', 401: 'opsErr401', 403: 'opsErr403', 404: 'opsErr404', 422: 'opsErr422',
    503: 'opsErr503' }[e.status] ?? 'opsErrOther';
  return t(key, e.why, e.status);
}

// ---- times as written in China ------------------------------------------------------

/** China Standard Time: UTC+8 all year (no daylight saving since 1991). */
const CST_OFFSET_MS = 8 * 3_600_000;
const ZONE = 'Asia/Shanghai';
const formats = new Map();

function format(key, options) {
  const locale = lang() === 'zh' ? 'zh-CN' : 'en-GB';
  const id = `${locale}/${key}`;
  let f = formats.get(id);
  if (!f) {
    f = new Intl.DateTimeFormat(locale, { timeZone: ZONE, hourCycle: 'h23', ...options });
    formats.set(id, f);
  }
  return f;
}

/** Date and time in Beijing time: "12月3日 17:40" (zh) or "3 Dec 17:40" (en). */
export function cnDateTime(ms) {
  if (!Number.isFinite(ms)) return '–';
  return format('dt', { month: lang() === 'zh' ? 'numeric' : 'short', day: 'numeric', hour: '2-digit',
    minute: '2-digit' }).format(ms);
}

/** Date, time and seconds in Beijing time, with the year: for history and audit lines. */
export function cnFull(ms) {
  if (!Number.isFinite(ms)) return '–';
  return format('full', { year: 'numeric', month: lang() === 'zh' ? 'numeric' : 'short', day: 'numeric',
    hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(ms);
}

/** Time of day in Beijing time with seconds. */
export function cnClock(ms) {
  if (!Number.isFinite(ms)) return '–';
  return format('clock', { hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(ms);
}

/** The value of an `<input type="datetime-local">` for `ms` in Beijing time. */
export function toCnLocalInput(ms) {
  const d = new Date(ms + CST_OFFSET_MS);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:` +
    pad(d.getUTCMinutes());
}

/** Milliseconds of an `<input type="datetime-local">` value read as Beijing time (NaN if empty). */
export function fromCnLocalInput(value) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(value ?? '');
  if (!m) return NaN;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5])) - CST_OFFSET_MS;
}

/** "Beijing time" in the page's language, for labels next to times. */
export function zoneLabel() {
  return t('opsZone');
}

// ---- an alert's words ---------------------------------------------------------------

/** The alert's one sentence in the page's language: `summary_zh` in Chinese when the server gave one. */
export function summaryOf(a) {
  return lang() === 'zh' && a.summary_zh ? a.summary_zh : a.summary;
}

/** The rule's name in the page's language: `rule_name_zh` in Chinese, else the rule's id. */
export function ruleNameOf(a) {
  return lang() === 'zh' && a.rule_name_zh ? a.rule_name_zh : a.rule;
}
