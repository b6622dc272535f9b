//! `animal_baseline`: each animal against her own normal, learned from completed hours that
//! looked normal (per local hour of day with `hour_of_day`): a rise (body temperature), or
//! a ratio above (activity in estrus) or below (rumination drop).
//!
//! Invariant: an hour that looked abnormal, or in which the condition held, does not teach
//! her normal; nothing is judged before `min_baseline_hours` of her data.

use std::sync::Arc;

use conf::Spanned;
use protocol::Metric;
use serde::{Deserialize, Serialize};

use super::{Devices, Feed, RuleState, Series, Step, active_devices};
use crate::rules::signal::Entity;
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::{self, Hold};

/// The keys of an animal-baseline rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    metric: Option<Spanned<String>>,
    method: Option<String>,
    rise: Option<f64>,
    ratio: Option<f64>,
    clear: Option<f64>,
    baseline_hours: Option<f64>,
    min_baseline_hours: Option<f64>,
    smoothing_secs: Option<u64>,
    hour_of_day: Option<bool>,
    utc_offset_hours: Option<f64>,
    for_secs: Option<u64>,
    clear_for_secs: Option<u64>,
}

/// How an animal is compared with herself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum AnimalMethod {
    /// Smoothed value at least `by` above her baseline (body temperature).
    Rise {
        /// Rise in the metric's unit.
        by: f64,
    },
    /// Smoothed value at least `ratio` times her baseline (activity in estrus).
    RatioAbove {
        /// Ratio.
        ratio: f64,
    },
    /// Smoothed value at most `ratio` times her baseline (rumination drop).
    RatioBelow {
        /// Ratio.
        ratio: f64,
    },
}

/// A compiled animal-baseline rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnimalBaseline {
    /// The metric.
    pub metric: Metric,
    /// The comparison.
    pub method: AnimalMethod,
    /// Where the condition clears (same unit as the method's limit).
    pub clear: f64,
    /// Length of her baseline.
    pub baseline_ms: i64,
    /// Least data before she is judged.
    pub min_baseline_ms: i64,
    /// Time constant of the smoothed value.
    pub smoothing_ms: i64,
    /// One baseline per local hour of day.
    pub hour_of_day: bool,
    /// Local time offset from UTC, hours.
    pub utc_offset_hours: f64,
}

impl super::Spec for Spec {
    const NAME: &'static str = "animal_baseline";
    type Compiled = AnimalBaseline;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<AnimalBaseline> {
        ctx.hold(self.for_secs, self.clear_for_secs);
        let tz = ctx.utc_offset(self.utc_offset_hours);
        let metric = ctx.metric(&self.metric, None)?;
        let method = match ctx.required("method", self.method)?.as_str() {
            "rise" => AnimalMethod::Rise { by: ctx.positive("rise", self.rise, 0.8) },
            "ratio_above" => {
                let ratio = ctx.positive("ratio", self.ratio, 2.0);
                if ratio <= 1.0 {
                    ctx.fail("ratio_above needs a ratio above 1");
                }
                AnimalMethod::RatioAbove { ratio }
            }
            "ratio_below" => {
                let ratio = ctx.positive("ratio", self.ratio, 0.7);
                if ratio >= 1.0 {
                    ctx.fail("ratio_below needs a ratio below 1");
                }
                AnimalMethod::RatioBelow { ratio }
            }
            other => {
                ctx.fail(format!("method '{other}' must be rise, ratio_above or ratio_below"));
                return None;
            }
        };
        let clear = match method {
            AnimalMethod::Rise { by } => self.clear.unwrap_or(by * 0.75),
            AnimalMethod::RatioAbove { ratio } => self.clear.unwrap_or(1.0 + (ratio - 1.0) * 0.75),
            AnimalMethod::RatioBelow { ratio } => self.clear.unwrap_or(1.0 - (1.0 - ratio) * 0.75),
        };
        let hours = |ctx: &mut Ctx<'_>, name: &str, v: Option<f64>, d: f64| -> i64 {
            (ctx.positive(name, v, d) * 3_600_000.0) as i64
        };
        Some(AnimalBaseline {
            metric,
            method,
            clear,
            baseline_ms: hours(ctx, "baseline_hours", self.baseline_hours, 240.0),
            min_baseline_ms: hours(ctx, "min_baseline_hours", self.min_baseline_hours, 48.0),
            smoothing_ms: ctx.secs("smoothing_secs", self.smoothing_secs, 3600),
            hour_of_day: self.hour_of_day.unwrap_or(false),
            utc_offset_hours: tz,
        })
    }
}

series_kind!(AnimalBaseline => AnimalBaseline, feed: |k| Feed::Values(vec![k.metric.clone()]));

#[derive(Debug)]
struct Animal {
    hold: Hold,
    first: i64,
    last: i64,
    smooth: f64,
    /// Start of the hour being collected, its sum and count, and whether anything in it
    /// looked abnormal (such an hour does not teach her normal).
    hour: i64,
    sum: f64,
    n: u32,
    abnormal: bool,
    /// Per bin (one, or one per local hour of day): her normal from completed hours, and
    /// how many hours made it (a plain mean until there are as many as the baseline's
    /// length, then an exponential average over that many).
    bins: Vec<Option<(f64, u64)>>,
}

#[derive(Debug)]
struct State {
    k: AnimalBaseline,
    series: Series<Box<Animal>>,
}

const HOUR: i64 = 3_600_000;

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        let (ts, v) = (cx.reading.ts.0, cx.reading.value);
        let k = &self.k;
        let (for_ms, clear_for_ms) = (cx.rule.for_ms, cx.rule.clear_for_ms);
        let nbins = if k.hour_of_day { 24 } else { 1 };
        // Hours in the baseline per bin: a bin of the day sees one hour a day.
        let span =
            if k.hour_of_day { (k.baseline_ms / (24 * HOUR)).max(1) } else { (k.baseline_ms / HOUR).max(1) } as f64;
        let bin_of = |t: i64| if k.hour_of_day { stats::local_hour(t, k.utc_offset_hours) as usize % 24 } else { 0 };
        let a = cx.series(&mut self.series, || {
            Box::new(Animal {
                hold: Hold::default(),
                first: ts,
                last: ts,
                smooth: v,
                hour: ts - ts.rem_euclid(HOUR),
                sum: 0.0,
                n: 0,
                abnormal: false,
                bins: vec![None; nbins],
            })
        });
        if ts <= a.last && ts != a.first {
            return;
        }
        // A completed hour teaches her normal, unless it looked abnormal.
        let hour = ts - ts.rem_euclid(HOUR);
        if hour != a.hour {
            if a.n > 0 && !a.abnormal {
                let m = a.sum / f64::from(a.n);
                let b = &mut a.bins[bin_of(a.hour)];
                *b = Some(match *b {
                    None => (m, 1),
                    Some((mean, k)) => (mean + (m - mean) * (1.0 / (k + 1) as f64).max(1.0 / span), k + 1),
                });
            }
            a.hour = hour;
            a.sum = 0.0;
            a.n = 0;
            a.abnormal = false;
        }
        let dt = ts - a.last;
        a.last = ts;
        a.smooth += stats::alpha(dt, k.smoothing_ms) * (v - a.smooth);
        let h = bin_of(ts);
        let reference = |bins: &[Option<(f64, u64)>], up: bool| -> Option<f64> {
            if bins.len() == 1 {
                return bins[0].map(|b| b.0);
            }
            let n = bins.len();
            let around = [bins[(h + n - 1) % n], bins[h], bins[(h + 1) % n]].map(|b| b.map(|b| b.0));
            let known = around.iter().flatten().copied();
            if up { known.reduce(f64::max) } else { known.reduce(f64::min) }
        };
        let judged = ts - a.first >= k.min_baseline_ms;
        let clear = k.clear;
        // (raise, clear, value, beyond the clear level)
        let (raise, clr, value, odd) = match k.method {
            AnimalMethod::Rise { by } => match reference(&a.bins, true) {
                Some(b) => {
                    let rise = a.smooth - b;
                    (judged && rise >= by, rise < clear, Some(rise), rise >= clear)
                }
                None => (false, true, None, false),
            },
            AnimalMethod::RatioAbove { ratio } => match reference(&a.bins, true).filter(|b| *b > 0.0) {
                Some(b) => {
                    let r = a.smooth / b;
                    (judged && r >= ratio, r < clear, Some(r), r >= clear)
                }
                None => (false, true, None, false),
            },
            AnimalMethod::RatioBelow { ratio } => match reference(&a.bins, false).filter(|b| *b > 0.0) {
                Some(b) => {
                    let r = a.smooth / b;
                    (judged && r <= ratio, r > clear, Some(r), r <= clear)
                }
                None => (false, true, None, false),
            },
        };
        let c = a.hold.step(raise, clr, ts, for_ms, clear_for_ms);
        a.sum += v;
        a.n += 1;
        a.abnormal |= odd || a.hold.active();
        if let Some(c) = c {
            cx.emit(c, value.map(|x| (x * 1000.0).round() / 1000.0));
        }
    }

    fn active(&self, devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        active_devices(&self.series, devices, |a| Some(&a.hold))
    }

    fn series(&self) -> usize {
        self.series.len()
    }
}
