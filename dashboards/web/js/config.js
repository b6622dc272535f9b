// Role: the numbers the dashboard judges by, with where they come from: refresh period,
// when data counts as stale, drinking-water limits (GB 5749-2022), cow fever and barn
// heat stress, and the sizes above which the page only shows summaries.

/** Time between refreshes. */
export const REFRESH_MS = 5_000;
/** A request that takes longer than this counts as failed. */
export const FETCH_TIMEOUT_MS = 8_000;
/** An open chart re-reads its series at most this often. */
export const CHART_REFRESH_MS = 15_000;
/** Sites are re-read this often (they rarely change). */
export const SITES_REFRESH_MS = 60_000;

/**
 * Data older than this is stale: "no fresh data within 3 poll intervals or 2 minutes".
 * The API does not give poll intervals, so the 2 minutes apply to every device.
 */
export const STALE_MS = 120_000;

/**
 * Drinking-water quality at the tap, GB 5749-2022 (DOMAIN.md). `min`/`max` are the
 * limits; `lo`/`hi` the span a band draws.
 */
export const QUALITY_LIMITS = {
  free_chlorine: { min: 0.05, max: 2, lo: 0, hi: 2.5 },
  turbidity: { max: 1, lo: 0, hi: 2 },
  ph: { min: 6.5, max: 8.5, lo: 5.5, hi: 9.5 },
};
/** Parameters of an analyser in the order they are shown; the first three have bands. */
export const QUALITY_ORDER = ['free_chlorine', 'turbidity', 'ph', 'conductivity', 'water_temperature'];

/** Body temperature that counts as fever (DOMAIN.md: 39.4-39.7 °C published, 39.5 common). */
export const FEVER_C = 39.5;
/** Colour scale of the herd grid: [°C, colour], a diverging scale (blue cool, red hot). */
export const COW_TEMP_COLOURS = [
  [37.8, '#4575b4'],
  [38.3, '#91bfdb'],
  [38.8, '#e0f3f8'],
  [39.2, '#fee090'],
  [39.5, '#fc8d59'],
  [40.2, '#d73027'],
];

/** Temperature-humidity index bands (DOMAIN.md, NRC formula): lower bound and name key. */
export const THI_BANDS = [
  [90, 'thiExtreme'],
  [80, 'thiSevere'],
  [72, 'thiModerate'],
  [68, 'thiMild'],
  [-Infinity, 'thiNone'],
];

/**
 * Tank height for the tank drawing. The API does not give tank geometry; 4 m is the
 * simulated water tower's. A level above it stretches the drawing.
 */
export const TANK_HEIGHT_M = 4;
/** A tank below this level is close to running dry. */
export const TANK_LOW_M = 0.5;
/** A running pump with less outlet flow than this delivers nothing (m3/h). */
export const NO_FLOW_M3H = 0.1;
/**
 * Pump station fault bits (gateway profile vt-sim-pump-station; the API does not carry
 * bit meanings): bit -> string key.
 */
export const PUMP_FAULT_BITS = ['faultTrip', 'faultDryRun', 'faultOvercurrent', 'faultFailStart', 'faultFailStop',
  'faultLongRun', 'faultDosing', 'faultHighLevel', 'faultLowLevel'];

/** Meter battery below this is low (DOMAIN.md, simulated meters: 3.40 V alarm). */
export const LOW_BATTERY_V = 3.4;

/** A site with more devices of one kind than this shows a summary, not a list of them. */
export const LIST_DEVICES_UP_TO = 60;
/** With more rows than this in /latest, cards show summaries only. */
export const SUMMARY_ONLY_ROWS = 20_000;
/** Most cows the herd grid draws; the rest are counted, the warmest always drawn. */
export const HERD_CELLS_MAX = 3_000;
/** Up to this many sites of one kind get a card each; more are rows of one table. */
export const CARDS_PER_KIND_UP_TO = 12;
/** Map labels are drawn for at most this many sites (more would overlap). */
export const MAP_LABELS_UP_TO = 40;
/** Issues listed under the map; more are counted. */
export const ATTENTION_ITEMS = 15;
/** Alerts the panel lists; more are counted (the worst and newest are always listed). */
export const ALERTS_SHOWN = 100;
/** Broadcasts the panel lists, newest first; older ones are counted. */
export const BROADCASTS_SHOWN = 5;
/** A broadcast's text is cut to this many characters in the panel (the whole text is its tooltip). */
export const BROADCAST_TEXT_CHARS = 60;
