// Role: a broadcast's progress across hundreds of speakers, readable at a glance: one row
// per township (or supply district where sites name no township) with a bar of its
// speakers played, on their way and failed, the counts written out, and below them every
// failed speaker with its village and the reason the gateway or the speaker gave. Built
// from GET /api/v1/broadcasts/{id} (`deliveries`: speaker, gateway, state, reason); a
// speaker's site comes from its device (small county) or its gateway's site.
// Read-only, like broadcasts.js, which lists the broadcasts themselves.

import { h, s } from './dom.js';
import { t } from './strings.js';
import { PARTS } from './broadcasts.js';

/** Failed speakers listed; more are counted. */
const FAILURES_SHOWN = 50;

/** Delivery states by the three groups of the bars. */
const GROUP_OF = new Map();
for (const [part, states] of PARTS) {
  const group = part === 'played' ? 'played' : part === 'failed' ? 'failed' : part === 'cancelled' ? 'cancelled' : 'pending';
  for (const st of states) GROUP_OF.set(st, group);
}

/**
 * Per township: `{ rows: [{ id, name, played, pending, failed, cancelled, total }], failures:
 * [{ speaker, site, township, state, reason }], total }`, townships with failures first.
 * `siteOf(delivery)` names a delivery's site; `model` gives the sites' townships and names.
 */
export function townshipProgress(b, model, siteOf) {
  const sites = new Map(model.sites.map((site) => [site.id, site]));
  const rows = new Map();
  const failures = [];
  for (const d of b.deliveries ?? []) {
    const site = sites.get(siteOf(d) ?? '') ?? null;
    const key = site?.township ?? site?.district ?? '';
    let r = rows.get(key);
    if (!r) {
      const name = site?.townshipName ?? (site?.township ? site.township : site?.district ? t('district', site.district)
        : t('wholeCounty'));
      rows.set(key, (r = { id: key, name, played: 0, pending: 0, failed: 0, cancelled: 0, total: 0 }));
    }
    const group = GROUP_OF.get(d.state) ?? 'pending';
    r[group] += 1;
    r.total += 1;
    if (group === 'failed') {
      failures.push({ speaker: d.speaker, site, township: r.name, state: d.state, reason: d.reason ?? null });
    }
  }
  const out = [...rows.values()].sort((a, b) => b.failed - a.failed || b.pending - a.pending
    || String(a.name).localeCompare(String(b.name)));
  failures.sort((a, b) => String(a.township).localeCompare(String(b.township)) || a.speaker.localeCompare(b.speaker));
  return { rows: out, failures, total: (b.deliveries ?? []).length };
}

/** The progress by township of broadcast `b` (with deliveries), or null if it has none. */
export function townshipPanel(b, model, siteOf) {
  if (!b || !Array.isArray(b.deliveries) || b.deliveries.length === 0) return null;
  const p = townshipProgress(b, model, siteOf);
  const shown = p.failures.slice(0, FAILURES_SHOWN);
  return h('div', { class: 'bc-townships', 'data-broadcast': b.id, 'data-key': `bct:${b.id}` },
    h('h3', null, t('bcByTownship', p.total)),
    h('table', { class: 'bct' },
      h('caption', { class: 'sr' }, t('bcByTownshipCaption')),
      h('thead', null, h('tr', null, ['bctTownship', 'bctProgress', 'bctPlayed', 'bctPending', 'bctFailed']
        .map((key) => h('th', { scope: 'col' }, t(key))))),
      h('tbody', null, p.rows.map((r) => h('tr', { class: r.failed ? 'has-failed' : '', 'data-key': r.id,
        'data-township': r.id, 'data-played': r.played, 'data-pending': r.pending, 'data-failed': r.failed },
      h('th', { scope: 'row' }, r.name),
      h('td', { class: 'bct-bar' }, bar(r)),
      h('td', { class: 'num' }, `${r.played}/${r.total}`),
      h('td', { class: 'num' }, String(r.pending)),
      h('td', { class: `num${r.failed ? ' failed' : ''}` }, String(r.failed)))))),
    p.failures.length ? h('details', { class: 'bc-failures', open: true },
      h('summary', null, t('bcFailures', p.failures.length)),
      h('ul', null, shown.map((f) => h('li', { 'data-key': f.speaker, 'data-speaker': f.speaker },
        h('span', { class: 'bcf-speaker' }, f.speaker), ' ',
        h('span', { class: 'bcf-where' }, [f.site?.name, f.township].filter(Boolean).join(' · ')), ' ',
        h('span', { class: 'bcf-reason' }, f.reason ?? t('bcState_' + f.state) ?? f.state)))),
      p.failures.length > shown.length ? h('p', { class: 'hint' }, t('bcFailuresMore', p.failures.length - shown.length))
        : null) : null);
}

/** Played, pending and failed as one bar (SVG: no inline styles under the page's CSP). */
function bar(r) {
  const parts = [];
  let x = 0;
  for (const group of ['played', 'pending', 'failed', 'cancelled']) {
    if (!r[group] || !r.total) continue;
    const w = (100 * r[group]) / r.total;
    parts.push(s('rect', { class: `bct-${group}`, x: x.toFixed(2), y: 0, width: w.toFixed(2), height: 10 }));
    x += w;
  }
  return s('svg', { class: 'bct-svg', viewBox: '0 0 100 10', preserveAspectRatio: 'none', 'aria-hidden': 'true' },
    s('rect', { class: 'bc-track', x: 0, y: 0, width: 100, height: 10 }), parts);
}
