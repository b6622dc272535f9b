// Role: how numbers, units, ages and times read on the page. Times are shown in the
// browser's time zone and locale (users are in China Standard Time).

import { t, locale } from './strings.js';

/** Units as people write them. */
const PRETTY_UNITS = {
  m3: 'm³', 'm3/h': 'm³/h', 'uS/cm': 'µS/cm', ratio: '', bits: '', state: '', bool: '', index: '',
};

export function unitText(unit) {
  return unit in PRETTY_UNITS ? PRETTY_UNITS[unit] : (unit ?? '');
}

/** Number formats by locale and decimals: making one is slow, a herd needs thousands. */
const formats = new Map();

/** A number with as many decimals as its size deserves. */
export function num(value, decimals) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '–';
  const abs = Math.abs(value);
  const d = decimals ?? (abs >= 1000 ? 0 : abs >= 100 ? 1 : abs >= 1 ? 2 : abs === 0 ? 0 : 3);
  const key = `${locale()}/${d}`;
  let format = formats.get(key);
  if (!format) {
    format = new Intl.NumberFormat(locale(), { minimumFractionDigits: d, maximumFractionDigits: d });
    formats.set(key, format);
  }
  return format.format(value);
}

/** Decimals that suit a metric's usual values. */
const DECIMALS = {
  free_chlorine: 2, turbidity: 2, ph: 2, conductivity: 0, water_temperature: 1, tank_level: 2, pressure: 3,
  flow: 2, pump_flow: 1, thi: 0, volume_total: 1, pump_current: 1, body_temperature: 1, activity: 0, rumination: 0,
  milk_yield: 1,
  milk_conductivity: 2, barn_temperature: 1, relative_humidity: 0, speaker_volume: 0, battery_voltage: 2,
  response_time: 0, poll_success_ratio: 2, queue_fill: 2,
};

/** Decimals a metric is usually shown with. */
export function decimalsOf(metric) {
  return DECIMALS[metric] ?? 2;
}

/** A metric's value with its unit, e.g. "0.45 mg/L", "yes", "pH 7.52". */
export function valueText(metric, value, unit) {
  if (value === null || value === undefined) return '–';
  if (unit === 'bool') return value >= 0.5 ? t('yes') : t('no');
  if (unit === 'bits') return value === 0 ? t('none') : '0x' + Math.round(value).toString(16).toUpperCase();
  if (unit === 'pH') return 'pH ' + num(value, 2);
  const u = unitText(unit);
  return u ? `${num(value, DECIMALS[metric])} ${u}` : num(value, DECIMALS[metric]);
}

/** How long ago, e.g. "12 s ago". */
export function ago(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return t('never');
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return t('agoS', s);
  const m = Math.round(s / 60);
  if (m < 90) return t('agoM', m);
  const hours = Math.round(m / 60);
  if (hours < 48) return t('agoH', hours);
  return t('agoD', Math.round(hours / 24));
}

/** Local time of day, hours and minutes. */
export function clock(ts) {
  return new Date(ts).toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit' });
}

/** Local time of day with seconds. */
export function clockSeconds(ts) {
  return new Date(ts).toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** Local date and time. */
export function dateTime(ts) {
  return new Date(ts).toLocaleString(locale(), {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

/** The browser's time zone, for the chart's axis title. */
export function zoneName() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone ?? '';
  } catch {
    return '';
  }
}

/** The sentence of a site issue from the model: its key with its arguments formatted. */
export function issueText(issue) {
  return t(issue.key, ...issue.args.map(issueArg));
}

function issueArg(a) {
  if (a === null || typeof a !== 'object') return a;
  if ('metric' in a) return valueText(a.metric, a.value, a.unit);
  if ('name' in a) return t('metric_' + a.name);
  if ('keys' in a) return a.keys.map((k) => t(k)).join(', ');
  if ('key' in a) return t(a.key);
  if ('ago' in a) return ago(a.ago);
  if ('num' in a) return num(a.num, 0);
  return String(a);
}
