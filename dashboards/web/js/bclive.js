// Role: live progress of the broadcasts, from the server-sent events the API already has
// (GET /api/v1/broadcasts/events, docs/BROADCAST.md), over one EventSource for the page.
// A broadcast the page follows (the one opened, the newest active one on the map) is read
// in full once (GET /api/v1/broadcasts/{id}, with its deliveries); after that each
// `delivery` event moves one speaker and each `progress` event brings the counts and the
// state, so nothing polls the full delivery lists. A decision (approved, rejected,
// cancelled, finished), a refusal, a gap in the stream (`lagged`) or a reconnect re-reads
// the followed broadcasts once.
//
// Invariants: events that arrive while a broadcast is being read are kept and applied to
// the fresh copy when they are not older than it (each delivery keeps its `updated_at`),
// so a read racing the stream never loses a step; a broadcast's counts are recounted from
// its deliveries when the page has them, and its state only moves forwards.

import { fetchBroadcast } from './api.js';

/** Broadcast states in the order they can follow each other (a state never moves back). */
const STATE_RANK = { pending_approval: 0, active: 1, completed: 2, cancelled: 2, expired: 2, rejected: 2 };
/** Events after which a followed broadcast is read again (they change more than one speaker). */
const REREAD = ['approved', 'rejected', 'cancelled', 'finished', 'refused', 'stop_confirmed'];
/** Every event name the stream sends. */
const EVENTS = ['created', 'approved', 'rejected', 'cancelled', 'delivery', 'refused', 'stop_sent', 'stop_confirmed',
  'finished', 'progress', 'lagged'];
/** After the stream closes for good (an error answer), or a read fails, try again after this long. */
const RETRY_MS = 5_000;
/** Redraws at most this often while events pour in (a county's speakers report together). */
const REDRAW_MS = 200;

/** The live broadcasts of the page. `onChange()` is called (at most every REDRAW_MS) after a change. */
export class LiveBroadcasts {
  constructor(onChange) {
    this.onChange = onChange;
    /** id -> the broadcast with its deliveries, kept current by the events. */
    this.full = new Map();
    /** id -> { state, counts } from the newest `progress` event. */
    this.progress = new Map();
    /** id -> events received while it is being read. */
    this.reading = new Map();
    /** id -> when its last read failed (it is not read again before RETRY_MS). */
    this.failed = new Map();
    this.source = null;
    this.opened = false;
    this.connected = false;
    this.retryAt = 0;
    this.scheduled = false;
  }

  /** Opens the stream if it is not open (called on every refresh: it also reopens a closed one). */
  start() {
    if (this.source || typeof EventSource !== 'function' || Date.now() < this.retryAt) return;
    const source = new EventSource('/api/v1/broadcasts/events');
    this.source = source;
    source.addEventListener('open', () => {
      // A reconnect may have missed events: read what is followed again.
      if (this.opened) this.rereadAll();
      this.opened = true;
      this.connected = true;
      this.changed();
    });
    source.addEventListener('error', () => {
      this.connected = false;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (not signed in, no broadcasts): the browser does not retry; we do, later.
        this.source = null;
        this.retryAt = Date.now() + RETRY_MS;
      }
      this.changed();
    });
    for (const name of EVENTS) source.addEventListener(name, (e) => this.onEvent(name, e.data));
  }

  /** Whether the stream is up (the page then shows progress as it happens). */
  get live() {
    return this.connected;
  }

  /** The broadcast `id` with its deliveries, reading it first if it is not followed yet. */
  follow(id) {
    if (id === null || id === undefined) return null;
    const failedAt = this.failed.get(id);
    if (!this.full.has(id) && !this.reading.has(id) && !(failedAt && Date.now() - failedAt < RETRY_MS)) this.read(id);
    return this.full.get(id) ?? null;
  }

  /** The newest active broadcast of `list`, followed, for the map (null when none is active). */
  followActive(list, isActive) {
    const active = (list ?? []).find(isActive);
    return active ? this.follow(active.id) : null;
  }

  /** `list` (GET /api/v1/broadcasts) with the state and counts the stream has brought since. */
  overlay(list) {
    if (!list || !this.connected) return list;
    return list.map((b) => {
      const p = this.progress.get(b.id);
      if (!p || rank(p.state) < rank(b.state)) return b;
      return { ...b, state: p.state, counts: p.counts };
    });
  }

  async read(id) {
    this.reading.set(id, []);
    try {
      const fresh = await fetchBroadcast(id);
      for (const [name, data] of this.reading.get(id) ?? []) applyEvent(fresh, name, data);
      this.full.set(id, fresh);
      this.failed.delete(id);
    } catch (e) {
      if (e.name !== 'ApiError') throw e;
      // Not readable now: a follow() after RETRY_MS tries again.
      this.failed.set(id, Date.now());
    } finally {
      this.reading.delete(id);
      this.changed();
    }
  }

  rereadAll() {
    for (const id of this.full.keys()) if (!this.reading.has(id)) this.read(id);
  }

  onEvent(name, raw) {
    let data;
    try {
      data = JSON.parse(raw);
    } catch {
      return;
    }
    if (name === 'lagged') {
      this.rereadAll();
      return;
    }
    const id = data?.broadcast;
    if (id === undefined || id === null) return;
    if (name === 'progress') this.progress.set(id, { state: data.state, counts: data.counts });
    const buffer = this.reading.get(id);
    if (buffer) buffer.push([name, data]);
    const b = this.full.get(id);
    if (b) {
      applyEvent(b, name, data);
      if (REREAD.includes(name) && !buffer) this.read(id);
    }
    this.changed();
  }

  changed() {
    if (this.scheduled) return;
    this.scheduled = true;
    setTimeout(() => {
      this.scheduled = false;
      this.onChange();
    }, REDRAW_MS);
  }
}

function rank(state) {
  return STATE_RANK[state] ?? 0;
}

/** Applies one event to a broadcast read in full. */
function applyEvent(b, name, data) {
  if (name === 'delivery' && Array.isArray(b.deliveries)) {
    const d = b.deliveries.find((x) => x.speaker === data.speaker);
    // Older than what the copy has: the copy already includes it.
    if (!d || (d.updated_at && data.at && data.at < d.updated_at)) return;
    d.state = data.state;
    d.feedback = data.feedback ?? d.feedback;
    d.reason = data.reason ?? null;
    d.attempts = Math.max(d.attempts ?? 0, data.attempt ?? 0);
    d.updated_at = data.at ?? d.updated_at;
    d.reached = { ...(d.reached ?? {}) };
    d.reached[data.state] ??= data.at;
    b.counts = recount(b.deliveries, b.counts);
  } else if (name === 'progress' && rank(data.state) >= rank(b.state)) {
    b.state = data.state;
    if (!Array.isArray(b.deliveries)) b.counts = data.counts;
  }
}

/** Deliveries per state, with every state the API counts (zero included). */
function recount(deliveries, previous) {
  const counts = {};
  for (const k of Object.keys(previous ?? {})) counts[k] = 0;
  for (const d of deliveries) counts[d.state] = (counts[d.state] ?? 0) + 1;
  return counts;
}
