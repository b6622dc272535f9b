//! `drift`: subgroup means (`subgroup_secs`) against a baseline learned from the first
//! `learn_subgroups` (per local hour of day with `hour_of_day`), charted with EWMA (NIST)
//! or tabular CUSUM (Montgomery) in sigmas of at least `min_sigma` (DOMAIN.md, drift
//! detection).
//!
//! Invariant: the baseline follows slow legitimate change (`baseline_lambda`) only while
//! the chart is in control, so a drift cannot teach itself as normal.

use std::sync::Arc;

use conf::Spanned;
use protocol::Metric;
use serde::{Deserialize, Serialize};

use super::{Devices, Feed, RuleState, Series, Step, active_devices};
use crate::rules::signal::Entity;
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::{self, Cond, Cusum, EwmaChart, Hold, Welford};

/// The keys of a drift rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    metric: Option<Spanned<String>>,
    method: Option<String>,
    subgroup_secs: Option<u64>,
    learn_subgroups: Option<u32>,
    baseline_lambda: Option<f64>,
    lambda: Option<f64>,
    limit_l: Option<f64>,
    k: Option<f64>,
    h: Option<f64>,
    direction: Option<String>,
    min_sigma: Option<f64>,
    hour_of_day: Option<bool>,
    utc_offset_hours: Option<f64>,
}

/// Which way a drift counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Upwards only.
    Up,
    /// Downwards only.
    Down,
    /// Either way.
    Both,
}

/// How a drift is charted (DOMAIN.md, drift detection).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum DriftMethod {
    /// EWMA chart on standardised subgroup means: limit `l` EWMA sigmas (NIST).
    Ewma {
        /// Smoothing weight.
        lambda: f64,
        /// Limit in EWMA sigmas.
        l: f64,
    },
    /// Tabular CUSUM on standardised subgroup means (Montgomery).
    Cusum {
        /// Reference value in sigmas.
        k: f64,
        /// Decision interval in sigmas.
        h: f64,
    },
}

/// A compiled drift rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// The metric.
    pub metric: Metric,
    /// The chart.
    pub method: DriftMethod,
    /// Subgroup length.
    pub subgroup_ms: i64,
    /// Subgroups that make the first baseline.
    pub learn_subgroups: u32,
    /// Weight of each in-control subgroup in the baseline's slow update.
    pub baseline_lambda: f64,
    /// Which way counts.
    pub direction: Direction,
    /// Least sigma (measurement uncertainty), so a very steady series does not alarm
    /// on noise.
    pub min_sigma: f64,
    /// Keep one baseline per local hour of day (diurnal processes).
    pub hour_of_day: bool,
    /// Local time offset from UTC, hours.
    pub utc_offset_hours: f64,
}

impl super::Spec for Spec {
    const NAME: &'static str = "drift";
    type Compiled = Drift;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<Drift> {
        let tz = ctx.utc_offset(self.utc_offset_hours);
        let metric = ctx.metric(&self.metric, None)?;
        let method = match self.method.as_deref().unwrap_or("cusum") {
            "cusum" => {
                let k = ctx.positive("k", self.k, 0.5);
                let h = ctx.positive("h", self.h, 5.0);
                DriftMethod::Cusum { k, h }
            }
            "ewma" => {
                let lambda = ctx.positive("lambda", self.lambda, 0.2);
                if lambda > 1.0 {
                    ctx.fail("lambda must be at most 1");
                }
                let l = ctx.positive("limit_l", self.limit_l, 3.0);
                DriftMethod::Ewma { lambda, l }
            }
            other => {
                ctx.fail(format!("method '{other}' must be cusum or ewma"));
                return None;
            }
        };
        let baseline_lambda = ctx.positive("baseline_lambda", self.baseline_lambda, 0.02);
        let direction = match self.direction.as_deref().unwrap_or("both") {
            "up" => Direction::Up,
            "down" => Direction::Down,
            "both" => Direction::Both,
            other => {
                ctx.fail(format!("direction '{other}' must be up, down or both"));
                Direction::Both
            }
        };
        Some(Drift {
            metric,
            method,
            subgroup_ms: ctx.secs("subgroup_secs", self.subgroup_secs, 3600),
            learn_subgroups: self.learn_subgroups.unwrap_or(24).max(2),
            baseline_lambda: baseline_lambda.min(1.0),
            direction,
            min_sigma: ctx.positive("min_sigma", self.min_sigma, f64::MIN_POSITIVE),
            hour_of_day: self.hour_of_day.unwrap_or(false),
            utc_offset_hours: tz,
        })
    }
}

series_kind!(Drift => Drift, feed: |k| Feed::Values(vec![k.metric.clone()]));

#[derive(Debug, Default)]
struct Baseline {
    learn: Welford,
    mu: f64,
    var: f64,
    ready: bool,
}

#[derive(Debug)]
struct Chart {
    hold: Hold,
    sub_start: i64,
    sum: f64,
    n: u32,
    bins: Vec<Baseline>,
    cusum: Cusum,
    ewma: EwmaChart,
}

#[derive(Debug)]
struct State {
    k: Drift,
    series: Series<Box<Chart>>,
}

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        let (ts, v) = (cx.reading.ts.0, cx.reading.value);
        let k = &self.k;
        let (for_ms, clear_for_ms) = (cx.rule.for_ms, cx.rule.clear_for_ms);
        let bins = if k.hour_of_day { 24 } else { 1 };
        let d = cx.series(&mut self.series, || {
            Box::new(Chart {
                hold: Hold::default(),
                sub_start: ts - ts.rem_euclid(k.subgroup_ms),
                sum: 0.0,
                n: 0,
                bins: (0..bins).map(|_| Baseline::default()).collect(),
                cusum: Cusum::default(),
                ewma: EwmaChart::default(),
            })
        });
        if ts < d.sub_start {
            return;
        }
        let mut emit = None;
        if ts >= d.sub_start + k.subgroup_ms {
            if d.n > 0 {
                let mean = d.sum / f64::from(d.n);
                let bin =
                    if k.hour_of_day { stats::local_hour(d.sub_start, k.utc_offset_hours) as usize % 24 } else { 0 };
                let b = &mut d.bins[bin];
                if !b.ready {
                    b.learn.push(mean);
                    if b.learn.count() >= u64::from(k.learn_subgroups) {
                        b.ready = true;
                        b.mu = b.learn.mean();
                        b.var = b.learn.variance();
                    }
                } else {
                    let sigma = b.var.sqrt().max(k.min_sigma);
                    let z = (mean - b.mu) / sigma;
                    let (raise, clear) = match k.method {
                        DriftMethod::Cusum { k: ref_k, h } => {
                            let (hi, lo) = d.cusum.push(z, ref_k);
                            let up = hi > h;
                            let down = lo > h;
                            let out = match k.direction {
                                Direction::Up => up,
                                Direction::Down => down,
                                Direction::Both => up || down,
                            };
                            (out, !out)
                        }
                        DriftMethod::Ewma { lambda, l } => {
                            let e = d.ewma.push(z, lambda);
                            let lim = EwmaChart::limit(lambda, l);
                            let out = match k.direction {
                                Direction::Up => e > lim,
                                Direction::Down => e < -lim,
                                Direction::Both => e.abs() > lim,
                            };
                            (out, !out)
                        }
                    };
                    let c = d.hold.step(raise, clear, ts, for_ms, clear_for_ms);
                    if !d.hold.active() {
                        // In control: the baseline follows slow legitimate change.
                        let bl = k.baseline_lambda;
                        b.mu += bl * (mean - b.mu);
                        b.var = (1.0 - bl) * b.var + bl * (mean - b.mu).powi(2);
                        if matches!(c, Some(Cond::Clear))
                            && let DriftMethod::Cusum { h, .. } = k.method
                        {
                            d.cusum.restart(h / 2.0);
                        }
                    }
                    emit = c.map(|c| (c, Some(mean)));
                }
            }
            d.sub_start = ts - ts.rem_euclid(k.subgroup_ms);
            d.sum = 0.0;
            d.n = 0;
        }
        d.sum += v;
        d.n += 1;
        if let Some((c, value)) = emit {
            cx.emit(c, value);
        }
    }

    fn active(&self, devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        active_devices(&self.series, devices, |d| Some(&d.hold))
    }

    fn series(&self) -> usize {
        self.series.len()
    }
}
