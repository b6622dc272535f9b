// Role: turns what the API says (sites, devices, the newest value of every series) into
// what the page shows: per device its state, per site its state, the reasons for it, and
// the figures its card draws (tank, pumps, water quality, barn, herd, speakers, meters).
// One pass over /latest, no DOM: this is the part that must stay fast for a county of
// 15,000 meters. Issues carry string keys and raw arguments, not text (format.issueText
// makes the sentence), so a language switch needs no refetch.

import {
  STALE_MS, QUALITY_LIMITS, QUALITY_ORDER, FEVER_C, THI_BANDS, TANK_LOW_M, PUMP_FAULT_BITS,
  LOW_BATTERY_V, SUMMARY_ONLY_ROWS, NO_FLOW_M3H,
} from './config.js';

/** Site and device states, worst first. */
export const STATES = ['offline', 'attention', 'stale', 'ok', 'nodata'];

/** Kinds in the order cards and counts list them. */
export const KIND_ORDER = ['pump_station', 'water_quality', 'water_meter', 'speaker', 'barn_climate', 'cow',
  'collar_hub', 'external'];
/** Few large sites first, then the many villages. */
const SITE_KIND_ORDER = ['waterworks', 'farm', 'village'];

/** Minimum pressure at a district inlet (DOMAIN.md: network ends >= 0.14 MPa). */
const MIN_PRESSURE_MPA = 0.14;
/** Free chlorine leaving the plant (GB 5749-2022: >= 0.3 mg/L). */
const OUTLET_CHLORINE_MIN = 0.3;
/** Share of a site's meters offline above which the site needs attention. */
const METERS_OFFLINE_SHARE = 0.1;

const ANIMAL_METRICS = ['body_temperature', 'activity', 'rumination', 'milk_yield', 'milk_conductivity'];

/** "东村 Dongcun" -> { zh: "东村", pinyin: "Dongcun" }; other names stay whole. */
export function splitName(name) {
  const m = /^([\u3400-\u9fff\uf900-\ufaff\d]+)\s+(.+)$/u.exec(name ?? '');
  return m ? { zh: m[1], pinyin: m[2] } : { zh: '', pinyin: name ?? '' };
}

function parseTime(text) {
  if (!text) return null;
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? ms : null;
}

/**
 * The page's model.
 * @param {object[]} sites    GET /api/v1/sites
 * @param {object[]} devices  GET /api/v1/devices
 * @param {object[]} latest   GET /api/v1/latest
 * @param {number}   now      ms, by the server's clock
 * @param {Map|null} summary  per site id, what GET /api/v1/summary says of it (datasource.js
 *   normalises it: `{ state, kinds: { kind: { total, ok, stale, offline, nodata } }, newest }`);
 *   at county size the page reads only the few devices of a kind (pumps, analysers, barns,
 *   gateways, cows' temperatures) and takes the counts of the many (meters, speakers) from it.
 */
export function buildModel(sites, devices, latest, now, summary = null) {
  const byId = new Map();
  for (const d of devices) byId.set(d.id, newDevice(d.id, d.kind, d.site, d.online, parseTime(d.last_seen)));
  // A device's readings mostly share one time stamp: parse each distinct text once.
  const times = new Map();
  for (const row of latest) {
    let d = byId.get(row.device);
    if (!d) {
      d = newDevice(row.device, row.kind || 'external', row.site || '', null, null);
      byId.set(row.device, d);
    }
    let ts = times.get(row.ts);
    if (ts === undefined) {
      ts = parseTime(row.ts);
      times.set(row.ts, ts);
    }
    d.m[row.metric] = { value: row.value, unit: row.unit, ts };
    if (ts !== null && (d.newest === null || ts > d.newest)) d.newest = ts;
  }

  const siteById = new Map();
  // A township is a site of its own (its seat, with its name); villages name it by id.
  const townshipNames = new Map(sites.filter((x) => x.kind === 'township').map((x) => [x.id, x.name || x.id]));
  for (const raw of sites) {
    if (raw.kind === 'township') continue;
    const site = newSite(raw);
    if (site.township && !site.townshipName) site.townshipName = townshipNames.get(site.township) ?? null;
    site.summary = summary?.get(raw.id) ?? null;
    siteById.set(raw.id, site);
  }
  for (const d of byId.values()) {
    if (d.kind === 'cow_collar') d.kind = isHub(d) ? 'collar_hub' : 'cow';
    d.state = deviceState(d, now);
    let site = siteById.get(d.site);
    if (!site) {
      site = siteById.get('') ?? newSite({ id: '', name: '', kind: 'other' });
      siteById.set('', site);
    }
    if (d.kind === 'gateway') site.gateways.push(d);
    else addToKind(site, d);
    if (d.newest !== null && (site.newest === null || d.newest > site.newest)) site.newest = d.newest;
  }

  const out = [...siteById.values()];
  for (const site of out) summarise(site, now);
  out.sort(bySiteOrder);
  return { now, rows: latest.length, summaryOnly: latest.length > SUMMARY_ONLY_ROWS || summary !== null, sites: out,
    totals: totals(out), townships: townships(out), bySummary: summary !== null };
}

/**
 * The townships (or, where sites name none, the supply districts) with their sites, in
 * the order their first site comes: `[{ id, name, zh, pinyin, sites, lat, lon, states }]`.
 * `states` counts the sites by state; lat/lon are the mean of the sites'.
 */
function townships(sites) {
  const out = new Map();
  for (const site of sites) {
    if (site.id === '' || !site.township) continue;
    let tw = out.get(site.township);
    if (!tw) {
      const { zh, pinyin } = splitName(site.townshipName ?? site.township);
      tw = { id: site.township, name: site.townshipName ?? site.township, zh, pinyin, sites: [],
        states: Object.fromEntries(STATES.map((st) => [st, 0])), lat: 0, lon: 0 };
      out.set(site.township, tw);
    }
    tw.sites.push(site);
    tw.states[site.state] += 1;
  }
  for (const tw of out.values()) {
    const placed = tw.sites.filter((x) => x.hasCoords);
    tw.hasCoords = placed.length > 0;
    tw.lat = placed.reduce((a, x) => a + x.lat, 0) / (placed.length || 1);
    tw.lon = placed.reduce((a, x) => a + x.lon, 0) / (placed.length || 1);
  }
  return [...out.values()];
}

function newDevice(id, kind, site, online, lastSeen) {
  return { id, kind, site, online: online ?? null, newest: lastSeen, m: Object.create(null), state: 'nodata' };
}

function newSite(raw) {
  const { zh, pinyin } = splitName(raw.name || raw.id);
  return {
    id: raw.id, name: raw.name || raw.id, zh, pinyin, kind: raw.kind || 'other', district: raw.district ?? null,
    village: raw.village ?? null, lat: raw.lat, lon: raw.lon,
    township: raw.township ?? null, townshipName: raw.township_name ?? raw.townshipName ?? null,
    hasCoords: Number.isFinite(raw.lat) && Number.isFinite(raw.lon),
    gateways: [], kinds: new Map(), newest: null, state: 'nodata', issues: [],
  };
}

function addToKind(site, d) {
  let list = site.kinds.get(d.kind);
  if (!list) site.kinds.set(d.kind, (list = []));
  list.push(d);
}

/** A collar hub is polled itself (so it has an online state) but has no animal readings. */
function isHub(d) {
  return d.online !== null && !ANIMAL_METRICS.some((m) => m in d.m);
}

/**
 * How old a reading may be before its device is stale, by kind (`default` for the rest):
 * the server's `stale_after_ms` at county size (meters report every 15-60 min), else STALE_MS.
 */
let staleAfter = { default: STALE_MS };

/** Takes the server's staleness by kind (GET /api/v1/summary `stale_after_ms`). */
export function setStaleAfter(byKind) {
  staleAfter = { default: STALE_MS, ...(byKind && typeof byKind === 'object' ? byKind : {}) };
}

function deviceState(d, now) {
  if (d.online === false) return 'offline';
  if (d.newest === null) return 'nodata';
  const kind = d.kind === 'cow' || d.kind === 'collar_hub' ? 'cow_collar' : d.kind;
  if (now - d.newest > (staleAfter[d.kind] ?? staleAfter[kind] ?? staleAfter.default)) return 'stale';
  return 'ok';
}

/** A reading as an issue argument: { metric, value, unit }. */
function measured(d, metric) {
  return { metric, value: d.m[metric].value, unit: d.m[metric].unit };
}

function value(d, metric) {
  const r = d.m[metric];
  return r && Number.isFinite(r.value) ? r.value : null;
}

/** Counts of a list of devices by state. */
function countStates(list) {
  const c = { total: list.length, ok: 0, stale: 0, offline: 0, nodata: 0 };
  for (const d of list) c[d.state] += 1;
  return c;
}

/** Fills a site's figures, issues and state. */
function summarise(site, now) {
  const issues = site.issues;
  for (const gw of site.gateways) {
    if (gw.online === false) issues.push({ state: 'offline', key: 'issueGatewayOffline', args: [gw.id] });
  }
  const list = (kind) => site.kinds.get(kind) ?? [];
  site.counts = new Map([...site.kinds].map(([kind, ds]) => [kind, countStates(ds)]));
  // Kinds the page did not read device by device are counted by the summary.
  const told = site.summary?.kinds ?? {};
  for (const kind of Object.keys(told)) {
    if (!site.counts.has(kind)) site.counts.set(kind, countsOf(told[kind]));
  }
  site.pumps = list('pump_station').map((d) => pump(d, issues));
  site.analysers = list('water_quality').map((d) => analyser(d, issues));
  site.barns = list('barn_climate').map((d) => barn(d, issues));
  site.herd = herd(list('cow'), issues);
  site.speakers = speakers(list('speaker'), issues);
  site.meters = meters(list('water_meter'), issues);
  if (!site.kinds.has('speaker') && told.speaker) site.speakerCounts = speakerCounts(countsOf(told.speaker), issues);
  if (!site.kinds.has('water_meter') && told.water_meter) site.meters = meterCounts(countsOf(told.water_meter), issues);
  site.others = list('external');
  for (const d of [...list('pump_station'), ...list('water_quality'), ...list('barn_climate'), ...list('collar_hub')]) {
    if (d.state === 'offline') issues.push({ state: 'attention', key: 'issueDeviceOffline', args: [d.id] });
  }

  const devices = [...site.kinds.values()].flat();
  const known = devices.filter((d) => d.online !== null);
  const allOffline = known.length > 0 && known.every((d) => d.online === false);
  if (allOffline) issues.push({ state: 'offline', key: 'issueAllOffline', args: [] });
  if (site.summary) {
    // The summary knows how fresh the site's many devices are; the issues found here add to it.
    const newest = parseTime(site.summary.newest);
    if (newest !== null && (site.newest === null || newest > site.newest)) site.newest = newest;
    const told = STATES.includes(site.summary.state) ? site.summary.state : 'nodata';
    const mine = issues.some((i) => i.state === 'offline') ? 'offline'
      : issues.some((i) => i.state === 'attention') ? 'attention' : told === 'nodata' ? 'nodata' : 'ok';
    site.state = worse(told, mine);
    if (site.state === 'stale' && !issues.some((i) => i.state === 'stale')) {
      issues.push({ state: 'stale', key: 'issueStale', args: [{ ago: site.newest === null ? null : now - site.newest }] });
    }
    return;
  }
  if (site.newest === null && site.gateways.every((g) => g.online === null)) site.state = 'nodata';
  else if (issues.some((i) => i.state === 'offline')) site.state = 'offline';
  else if (issues.some((i) => i.state === 'attention')) site.state = 'attention';
  else if (site.newest === null || now - site.newest > STALE_MS) site.state = 'stale';
  else site.state = 'ok';
  if (site.state === 'stale') {
    const age = site.newest === null ? null : now - site.newest;
    issues.push({ state: 'stale', key: 'issueStale', args: [{ ago: age }] });
  }
}

function pump(d, issues) {
  const p = {
    device: d, level: value(d, 'tank_level'), running: value(d, 'pump_running'), flow: value(d, 'flow'),
    pumpFlow: value(d, 'pump_flow'), pressure: value(d, 'pressure'), current: value(d, 'pump_current'),
    chlorine: value(d, 'free_chlorine'), fault: value(d, 'fault_word'), faults: [],
  };
  if (p.fault) {
    PUMP_FAULT_BITS.forEach((key, bit) => {
      if ((p.fault >>> bit) & 1) p.faults.push(key);
    });
    if (p.faults.length === 0) p.faults.push('faultOther');
    issues.push({ state: 'attention', key: 'issuePumpFault', args: [d.id, { keys: p.faults }] });
  }
  // DOMAIN.md: a pump that runs with no flow, or flow with no pump running, is a failure.
  if (p.running === 1 && p.pumpFlow !== null && p.pumpFlow < NO_FLOW_M3H) {
    issues.push({ state: 'attention', key: 'issuePumpNoFlow', args: [d.id] });
  }
  if (p.running === 0 && p.pumpFlow !== null && p.pumpFlow >= NO_FLOW_M3H) {
    issues.push({ state: 'attention', key: 'issueFlowNoPump', args: [d.id, measured(d, 'pump_flow')] });
  }
  if (p.level !== null && p.level < TANK_LOW_M) {
    issues.push({ state: 'attention', key: 'issueTankLow', args: [measured(d, 'tank_level')] });
  }
  if (p.pressure !== null && p.pressure < MIN_PRESSURE_MPA) {
    issues.push({ state: 'attention', key: 'issueLowPressure', args: [measured(d, 'pressure')] });
  }
  if (p.chlorine !== null && p.chlorine < OUTLET_CHLORINE_MIN) {
    issues.push({ state: 'attention', key: 'issueOutletChlorine', args: [measured(d, 'free_chlorine')] });
  }
  return p;
}

/** Where `v` lies against limits: 'low', 'high' or 'ok'. */
export function against(limits, v) {
  if (limits.min !== undefined && v < limits.min) return 'low';
  if (limits.max !== undefined && v > limits.max) return 'high';
  return 'ok';
}

function analyser(d, issues) {
  const params = [];
  const shown = new Set();
  for (const metric of [...QUALITY_ORDER, ...Object.keys(d.m)]) {
    if (shown.has(metric) || !(metric in d.m) || metric === 'fault_word' || isHealth(metric)) continue;
    shown.add(metric);
    const v = value(d, metric);
    const limits = QUALITY_LIMITS[metric] ?? null;
    const verdict = limits && v !== null ? against(limits, v) : 'ok';
    if (verdict !== 'ok') {
      const key = verdict === 'low' ? 'issueQualityLow' : 'issueQualityHigh';
      issues.push({ state: 'attention', key, args: [{ name: metric }, measured(d, metric)] });
    }
    params.push({ metric, value: v, unit: d.m[metric].unit, limits, verdict });
  }
  return { device: d, params, fault: value(d, 'fault_word') };
}

const HEALTH = new Set(['device_online', 'poll_success_ratio', 'response_time', 'queue_fill', 'queue_oldest_age',
  'queue_dropped', 'queue_depth']);
export function isHealth(metric) {
  return HEALTH.has(metric);
}

/** Temperature-humidity index (DOMAIN.md, NRC), T in °C, RH in %. */
export function thi(t, rh) {
  return 1.8 * t + 32 - (0.55 - 0.0055 * rh) * (1.8 * t - 26);
}

function barn(d, issues) {
  const temp = value(d, 'barn_temperature');
  const rh = value(d, 'relative_humidity');
  // The sensor's own THI when it sends one, else the NRC formula on its two values.
  const measuredThi = value(d, 'thi');
  const index = measuredThi ?? (temp !== null && rh !== null ? thi(temp, rh) : null);
  const band = index === null ? null : THI_BANDS.find(([lo]) => index >= lo)[1];
  if (index !== null && index >= 72) {
    issues.push({ state: 'attention', key: 'issueHeatStress', args: [{ num: index }, { key: band }] });
  }
  return { device: d, temp, rh, thi: index, band, thiMeasured: measuredThi !== null };
}

function herd(cows, issues) {
  const cells = cows.map((d) => ({
    device: d, temp: value(d, 'body_temperature'), activity: value(d, 'activity'), rumination: value(d, 'rumination'),
  }));
  // Warmest first; cows without a temperature last, by id.
  cells.sort((a, b) => (b.temp ?? -Infinity) - (a.temp ?? -Infinity) || (a.device.id < b.device.id ? -1 : 1));
  const fever = cells.filter((c) => c.temp !== null && c.temp >= FEVER_C);
  if (fever.length) issues.push({ state: 'attention', key: 'issueFever', args: [fever.length] });
  return { cells, fever };
}

function speakers(list, issues) {
  const out = list.map((d) => {
    const ready = value(d, 'speaker_online');
    const online = d.state === 'ok' && ready !== 0;
    return { device: d, online, playing: value(d, 'playback_state') === 1, volume: value(d, 'speaker_volume') };
  });
  const down = out.filter((s) => !s.online);
  if (down.length) issues.push({ state: 'attention', key: 'issueSpeakersOffline', args: [down.length, out.length] });
  return out;
}

function meters(list, issues) {
  let flow = 0;
  let withFlow = 0;
  let lowBattery = 0;
  let valvesClosed = 0;
  let faults = 0;
  let reporting = 0;
  for (const d of list) {
    if (d.state === 'ok') reporting += 1;
    const f = value(d, 'flow');
    if (f !== null) {
      flow += f;
      withFlow += 1;
    }
    const battery = value(d, 'battery_voltage');
    if (battery !== null && battery < LOW_BATTERY_V) lowBattery += 1;
    if (value(d, 'valve_open') === 0) valvesClosed += 1;
    if (value(d, 'fault_word')) faults += 1;
  }
  const silent = list.length - reporting;
  if (list.length && silent > Math.max(0, METERS_OFFLINE_SHARE * list.length)) {
    issues.push({ state: 'attention', key: 'issueMetersSilent', args: [silent, list.length] });
  }
  return { list, total: list.length, reporting, flow: withFlow ? flow : null, lowBattery, valvesClosed, faults };
}

/** The worse of two states ('nodata' counts as the least bad). */
export function worse(a, b) {
  const rank = (st) => (st === 'nodata' ? 4 : Math.max(0, STATES.indexOf(st)));
  return rank(a) <= rank(b) ? a : b;
}

/** A summary's counts of one kind, with every state present. */
function countsOf(c) {
  const out = { total: 0, ok: 0, stale: 0, offline: 0, nodata: 0 };
  for (const k of Object.keys(out)) out[k] = Number(c?.[k]) || 0;
  if (!out.total) out.total = out.ok + out.stale + out.offline + out.nodata;
  return out;
}

/** Speakers counted, not listed (county size): `{ total, online }`, and the issue when some are down. */
function speakerCounts(c, issues) {
  const down = c.total - c.ok;
  if (down > 0) issues.push({ state: 'attention', key: 'issueSpeakersOffline', args: [down, c.total] });
  return { total: c.total, online: c.ok };
}

/** Meters counted, not listed (county size): the figures meters() gives, without the values. */
function meterCounts(c, issues) {
  const silent = c.total - c.ok;
  if (c.total && silent > Math.max(0, METERS_OFFLINE_SHARE * c.total)) {
    issues.push({ state: 'attention', key: 'issueMetersSilent', args: [silent, c.total] });
  }
  return { list: [], total: c.total, reporting: c.ok, flow: null, lowBattery: 0, valvesClosed: 0, faults: 0,
    counted: true };
}

function bySiteOrder(a, b) {
  const rank = (s) => (s.id === '' ? 99 : SITE_KIND_ORDER.indexOf(s.kind) + 1 || 50);
  return rank(a) - rank(b) || a.id.localeCompare(b.id, undefined, { numeric: true });
}

/** County-wide figures for the summary strip. */
function totals(sites) {
  const states = Object.fromEntries(STATES.map((s) => [s, 0]));
  const t = { states, gateways: { total: 0, online: 0 }, meters: { total: 0, reporting: 0 },
    speakers: { total: 0, online: 0 }, pumps: { total: 0, running: 0, faults: 0 }, cows: { total: 0, fever: 0 },
    quality: { total: 0, out: 0 } };
  for (const s of sites) {
    if (s.id !== '') states[s.state] += 1;
    for (const g of s.gateways) {
      t.gateways.total += 1;
      if (g.online === true) t.gateways.online += 1;
    }
    t.meters.total += s.meters.total;
    t.meters.reporting += s.meters.reporting;
    t.speakers.total += s.speakerCounts ? s.speakerCounts.total : s.speakers.length;
    t.speakers.online += s.speakerCounts ? s.speakerCounts.online : s.speakers.filter((x) => x.online).length;
    for (const p of s.pumps) {
      t.pumps.total += 1;
      if (p.running === 1) t.pumps.running += 1;
      if (p.faults.length) t.pumps.faults += 1;
    }
    t.cows.total += s.herd.cells.length;
    t.cows.fever += s.herd.fever.length;
    for (const a of s.analysers) {
      t.quality.total += 1;
      if (a.params.some((p) => p.verdict !== 'ok')) t.quality.out += 1;
    }
  }
  return t;
}
