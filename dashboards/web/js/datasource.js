// Role: where the page's data comes from, and what each refresh costs. A small county (or
// a server without GET /api/v1/summary) is read whole, as the page always did: sites,
// devices, every latest value. A county the size of the real one (more than
// FULL_UP_TO_DEVICES devices) is read as the summary (counts by state per site and
// township) plus the few devices of a kind that cards draw one by one (gateways, pump
// stations, analysers, barns; the cows' temperatures less often), never the 15,000
// meters' values. Every GET revalidates with its ETag, so an unchanged answer is a 304 of
// a few hundred bytes; where the server pushes changes (server-sent events), the page
// refreshes when told and polls only slowly, and it polls as before when it cannot listen.
// Each refresh's bytes, requests and time are kept for people measuring the page
// (window.vtDashboard.refreshes; docs/BENCHMARKS.md).

import { ApiError, getAllPages, getJsonCached, listen, rowsOf } from './api.js';
import { setStaleAfter } from './model.js';

/** Above this many devices the page reads summaries instead of every latest value. */
export const FULL_UP_TO_DEVICES = 3_000;
/**
 * The cows' temperatures (2,000 rows), and the gateways' and few devices' own records
 * (whose `last_seen` changes with every poll, so they are never a 304), are re-read at
 * most this often; the summary says sooner when a site goes offline.
 */
const HERD_REFRESH_MS = 30_000;
/** The opened site's devices are re-read at most this often. */
const DETAIL_REFRESH_MS = 15_000;
/** How long a county-size read may take on a busy server before it counts as failed. */
const LARGE_TIMEOUT_MS = 30_000;
/** Kinds read device by device at county size: few per county, each drawn on its own. */
const FEW_KINDS = ['pump_station', 'water_quality', 'barn_climate'];
/** Server-sent events of GET /api/v1/stream (docs/API.md) and of a broadcast's stream. */
const STREAM_EVENTS = ['hello', 'latest', 'alert', 'lagged'];
const BROADCAST_EVENTS = ['progress', 'delivery', 'approved', 'finished', 'cancelled', 'refused', 'created'];

/** What the last refreshes cost, for people measuring the page (read through devtools or a test). */
const stats = { firstLoad: null, refreshes: [], mode: null, events: false, eventBytes: 0, eventCount: 0 };
/** Kinds whose new values (told by the stream) the page shows at once. */
const WATCHED_KINDS = new Set(FEW_KINDS);
if (typeof window !== 'undefined') window.vtDashboard = stats;
try {
  performance.setResourceTimingBufferSize(5_000);
} catch {
  // Old browsers: the figures are then only as good as the default buffer.
}

/** Sums what the resource entries since `from` (performance.now()) cost. */
function costSince(from) {
  let bytes = 0;
  let body = 0;
  let requests = 0;
  let notModified = 0;
  for (const e of performance.getEntriesByType('resource')) {
    if (e.startTime < from || e.initiatorType === 'other') continue;
    requests += 1;
    bytes += e.transferSize || 0;
    body += e.encodedBodySize || 0;
    if (e.transferSize > 0 && e.encodedBodySize === 0) notModified += 1;
  }
  return { bytes, body, requests, notModified };
}

/**
 * The summary as the page uses it: `{ devices, sites: Map(id -> { state, kinds, newest,
 * issues }), townships: Map(id -> { name, lat, lon }) }`. Takes the API's shape loosely
 * (sites as a list or keyed by id; counts under `kinds`, `devices` or `counts`).
 */
export function normaliseSummary(body) {
  const sites = new Map();
  const list = Array.isArray(body?.sites) ? body.sites
    : body?.sites && typeof body.sites === 'object' ? Object.entries(body.sites).map(([id, v]) => ({ id, ...v })) : [];
  let devices = 0;
  for (const raw of list) {
    const kinds = {};
    const told = raw.kinds ?? raw.by_kind ?? raw.devices ?? raw.counts ?? {};
    if (told && typeof told === 'object' && !Array.isArray(told)) {
      for (const [kind, c] of Object.entries(told)) {
        if (!c || typeof c !== 'object') continue;
        const k = kind === 'cow_collar' ? 'cow' : kind;
        kinds[k] = c;
        devices += Number(c.total) || 0;
      }
    }
    sites.set(raw.id ?? raw.site, { state: raw.state ?? null, kinds, newest: raw.newest ?? raw.last_seen ?? null,
      issues: Array.isArray(raw.issues) ? raw.issues : [], township: raw.township ?? null,
      gateways: raw.gateways ?? null });
  }
  const townships = new Map();
  const tlist = Array.isArray(body?.townships) ? body.townships
    : body?.townships && typeof body.townships === 'object'
      ? Object.entries(body.townships).map(([id, v]) => ({ id, ...v })) : [];
  for (const tw of tlist) townships.set(tw.id, { name: tw.name ?? tw.id, lat: tw.lat, lon: tw.lon });
  const total = Number(body?.totals?.devices?.total ?? body?.devices?.total ?? body?.devices);
  return { devices: Number.isFinite(total) && total > 0 ? total : devices, sites, townships };
}

/** The page's source of data; one per page. */
export class DataSource {
  /**
   * `kick()`: asks the page for a refresh soon (an event said something changed);
   * `applied()`: the stream brought new values, already in `latest()`: draw them again.
   */
  constructor(kick, applied) {
    this.kick = kick;
    this.applied = applied;
    /** The newest values of the few devices read one by one (county size), by "device/metric". */
    this.fewRows = new Map();
    /** null until known; 'full' reads everything, 'large' reads summaries. */
    this.mode = null;
    /** True while the server's change events arrive (the page then polls slowly). */
    this.listening = false;
    this.closeEvents = null;
    this.closeBroadcastEvents = null;
    this.herd = { rows: [], at: 0 };
    this.detail = { site: null, devices: [], latest: [], at: 0 };
    this.refreshStart = null;
  }

  /** Reads what the page shows. Throws ApiError when the county cannot be read. */
  async read(withSites) {
    const from = performance.now();
    if (this.mode === null) await this.detect();
    const out = this.mode === 'large' ? await this.readLarge() : await this.readFull(withSites);
    out.detail = await this.readDetail(false);
    this.note(from);
    return out;
  }

  /** Reads the summary once to choose how to read the county. */
  async detect() {
    try {
      const { body } = await getJsonCached('/api/v1/summary', null, LARGE_TIMEOUT_MS);
      const summary = normaliseSummary(body);
      this.mode = summary.devices > FULL_UP_TO_DEVICES ? 'large' : 'full';
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      if (e.status !== 404 && e.status !== 405) throw e;
      this.mode = 'full';
    }
    stats.mode = this.mode;
    if (this.mode === 'large') this.listen();
  }

  async readFull(withSites) {
    const [sites, devices, latest, alerts, broadcasts] = await Promise.all([
      withSites ? getJsonCached('/api/v1/sites').then((r) => r.body) : Promise.resolve(null),
      getJsonCached('/api/v1/devices').then((r) => rowsOf(r.body)),
      getJsonCached('/api/v1/latest').then((r) => rowsOf(r.body)),
      readAlerts(),
      readBroadcasts(),
    ]);
    return { sites, devices, latest, summary: null, townships: null, alerts, broadcasts };
  }

  async readLarge() {
    const herdDue = Date.now() - this.herd.at > HERD_REFRESH_MS;
    const [sites, summary, devices, fewLatest, herd, alerts, broadcasts] = await Promise.all([
      getJsonCached('/api/v1/sites', null, LARGE_TIMEOUT_MS).then((r) => rowsOf(r.body)),
      getJsonCached('/api/v1/summary', null, LARGE_TIMEOUT_MS).then((r) => {
        setStaleAfter(r.body?.stale_after_ms);
        return normaliseSummary(r.body);
      }),
      herdDue || !this.devices ? Promise.all(['gateway', ...FEW_KINDS].map((kind) => getAllPages('/api/v1/devices',
        { kind }, 50_000, LARGE_TIMEOUT_MS))).then((lists) => lists.flat()) : Promise.resolve(this.devices),
      Promise.all(FEW_KINDS.map((kind) => getAllPages('/api/v1/latest', { kind }, 50_000, LARGE_TIMEOUT_MS))),
      herdDue ? getAllPages('/api/v1/latest', { kind: 'cow_collar', metric: 'body_temperature' }, 50_000,
        LARGE_TIMEOUT_MS)
        .catch((e) => (e.name === 'ApiError' ? null : Promise.reject(e))) : Promise.resolve(null),
      readAlerts(),
      readBroadcasts(),
    ]);
    if (herd) this.herd = { rows: herd, at: Date.now() };
    this.devices = devices;
    // Sites name their township by id; the summary knows its name.
    const named = sites.map((site) => {
      const tw = site.township ? summary.townships.get(site.township) : null;
      return tw && !site.township_name ? { ...site, township_name: tw.name } : site;
    });
    this.fewRows = new Map(fewLatest.flat().map((r) => [`${r.device}/${r.metric}`, r]));
    return {
      sites: named,
      devices,
      latest: this.latest(),
      summary: summary.sites,
      townships: summary.townships,
      alerts,
      broadcasts,
    };
  }

  /** The newest values the page holds at county size: the few devices' (kept current by the stream) and the cows'. */
  latest() {
    return [...this.fewRows.values(), ...this.herd.rows];
  }

  /**
   * Opens the site `id` for detail (every device of it and their latest values), or closes
   * it with null. Returns the detail read.
   */
  async open(id) {
    this.detail = { site: id, devices: [], latest: [], at: 0 };
    return id === null ? this.detail : this.readDetail(true);
  }

  async readDetail(now) {
    const d = this.detail;
    if (this.mode !== 'large' || d.site === null) return d;
    if (!now && Date.now() - d.at < DETAIL_REFRESH_MS) return d;
    const site = d.site;
    const [devices, latest] = await Promise.all([
      getAllPages('/api/v1/devices', { site }),
      getAllPages('/api/v1/latest', { site }),
    ]);
    if (this.detail.site === site) this.detail = { site, devices, latest, at: Date.now() };
    return this.detail;
  }

  /** Finds devices whose id or name contains `text`: the server's search if it has one, else a local index. */
  async search(text, devices) {
    const needle = text.trim().toLowerCase();
    if (needle.length < 2) return [];
    const matches = (d) => d.id.toLowerCase().includes(needle) || String(d.name ?? '').toLowerCase().includes(needle);
    if (this.mode !== 'large') return (devices ?? []).filter(matches).slice(0, 20);
    // A whole device id (what a household reads off its meter) is looked up directly.
    const exact = rowsOf((await getJsonCached('/api/v1/latest', { device: text.trim(), limit: '100' })).body);
    const hit = exact.length ? [{ id: exact[0].device, kind: exact[0].kind, site: exact[0].site, name: null }] : [];
    // Found whole: no need for the index of every device (a few MB to read once).
    if (hit.length) return hit;
    if (!this.index && this.serverSearch !== false) {
      const { body } = await getJsonCached('/api/v1/devices', { q: text.trim(), limit: '20' });
      const rows = rowsOf(body);
      // A server that ignores `q` answers the first devices whatever was asked.
      if (rows.length === 0 || rows.some(matches)) {
        this.serverSearch = true;
        return mergeHits(hit, rows.filter(matches));
      }
      this.serverSearch = false;
    }
    if (!this.index) {
      this.index = (await getAllPages('/api/v1/devices', { limit: '5000' }, 100_000))
        .map((d) => ({ id: d.id, name: d.name ?? null, kind: d.kind, site: d.site }));
    }
    return mergeHits(hit, this.index.filter(matches));
  }

  /** The newest values of one device (a search hit). */
  async device(id) {
    const [rows] = await Promise.all([getAllPages('/api/v1/latest', { device: id })]);
    return rows;
  }

  /**
   * Listens to the server's changes (GET /api/v1/stream); a failed stream falls back to
   * polling. An alert refreshes the page at once; the pumps' new values go straight into
   * it; the rest (the meters' counts, analysers, barns) is re-read at the next poll.
   */
  listen() {
    // Narrowed to the pumps: every alert still comes, and the meters' trickle of readings
    // (some 6 KB/s in a county of 15,000) does not.
    this.closeEvents = listen('/api/v1/stream?kind=pump_station', STREAM_EVENTS, (name, data) => {
      stats.eventBytes += typeof data === 'string' ? data.length : JSON.stringify(data ?? '').length;
      stats.eventCount += 1;
      if (name === 'alert' || name === 'lagged') this.kick(name);
      // New values of the devices drawn one by one go straight into the page, no request.
      if (name === 'latest' && Array.isArray(data?.changed)) {
        let n = 0;
        for (const r of data.changed) {
          const key = `${r.device}/${r.metric}`;
          if (WATCHED_KINDS.has(r.kind) && this.fewRows.has(key)) {
            this.fewRows.set(key, r);
            n += 1;
          }
        }
        if (n) this.applied();
      }
    }, (open) => {
      this.listening = open;
      stats.events = open;
    });
  }

  /** Listens to one broadcast's progress while it is on (null stops). */
  listenBroadcast(id) {
    if (this.broadcastListening === id) return;
    this.closeBroadcastEvents?.();
    this.closeBroadcastEvents = null;
    this.broadcastListening = id;
    if (id === null || this.mode !== 'large') return;
    this.closeBroadcastEvents = listen(`/api/v1/broadcasts/${encodeURIComponent(id)}/events`, BROADCAST_EVENTS,
      () => this.kick('broadcast'), () => {});
  }

  /** The page drew its data: the first time, that is when the first load ended. */
  drawn() {
    if (stats.firstLoad && stats.firstLoad.drawnMs === undefined) stats.firstLoad.drawnMs = Math.round(performance.now());
  }

  /** Keeps what this refresh cost; the first one is the page's first load. */
  note(from) {
    const cost = costSince(from);
    const entry = { at: Date.now(), ms: Math.round(performance.now() - from), ...cost, mode: this.mode };
    if (stats.firstLoad === null) {
      const nav = performance.getEntriesByType('navigation')[0];
      const all = costSince(0);
      stats.firstLoad = { ms: Math.round(performance.now()), bytes: all.bytes + (nav?.transferSize ?? 0),
        body: all.body + (nav?.encodedBodySize ?? 0), requests: all.requests + 1 };
    }
    stats.refreshes.push(entry);
    if (stats.refreshes.length > 50) stats.refreshes.shift();
    if (performance.getEntriesByType('resource').length > 4_000) performance.clearResourceTimings();
  }
}

/** The exact hit first, then the others, at most 20, each device once. */
function mergeHits(exact, others) {
  const seen = new Set(exact.map((d) => d.id));
  return [...exact, ...others.filter((d) => !seen.has(d.id))].slice(0, 20);
}

/**
 * Open alerts as `{ list }`, `{ off: true }` without rules (404) or `{ error }`; never
 * throws an ApiError (the rest of the page still shows when only the alerts fail).
 */
async function readAlerts() {
  try {
    return { list: rowsOf((await getJsonCached('/api/v1/alerts', { state: 'active' }, LARGE_TIMEOUT_MS)).body) };
  } catch (e) {
    if (e.name !== 'ApiError') throw e;
    return e.status === 404 ? { off: true } : { error: e.message };
  }
}

/** Broadcasts as `{ list }`, `{ off: true }` (404) or `{ error }`; never throws an ApiError. */
async function readBroadcasts() {
  try {
    return { list: rowsOf((await getJsonCached('/api/v1/broadcasts', null, LARGE_TIMEOUT_MS)).body) };
  } catch (e) {
    if (e.name !== 'ApiError') throw e;
    return e.status === 404 ? { off: true } : { error: e.message };
  }
}

/** One broadcast with its deliveries, revalidated with its ETag. Throws ApiError. */
export async function readBroadcast(id) {
  return (await getJsonCached(`/api/v1/broadcasts/${encodeURIComponent(id)}`)).body;
}

export { ApiError };
