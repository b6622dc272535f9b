//! `threshold`: a value above or below a limit, with hysteresis (`clear`) and a hold time;
//! `bit` takes one bit of an integer value (fault words).
//!
//! Invariant: `clear` lies on the safe side of the limit, so between the two the
//! condition stays as it is.

use conf::Spanned;
use protocol::Metric;
use serde::{Deserialize, Serialize};

use super::{Devices, Feed, RuleState, Series, Step, active_devices};
use crate::rules::signal::Entity;
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::Hold;
use std::sync::Arc;

/// The keys of a threshold rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    metric: Option<Spanned<String>>,
    above: Option<f64>,
    below: Option<f64>,
    clear: Option<f64>,
    bit: Option<u8>,
    for_secs: Option<u64>,
    clear_for_secs: Option<u64>,
}

/// A compiled threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    /// The metric.
    pub metric: Metric,
    /// Raise above this.
    pub above: Option<f64>,
    /// Raise below this.
    pub below: Option<f64>,
    /// Clear only once back past this (hysteresis).
    pub clear: f64,
    /// Look at this bit of an integer value (fault words).
    pub bit: Option<u8>,
}

impl super::Spec for Spec {
    const NAME: &'static str = "threshold";
    type Compiled = Threshold;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<Threshold> {
        ctx.hold(self.for_secs, self.clear_for_secs);
        let metric = ctx.metric(&self.metric, None)?;
        if self.above.is_some() == self.below.is_some() {
            ctx.fail("a threshold rule needs exactly one of `above` and `below`");
        }
        let limit = self.above.or(self.below).unwrap_or(0.0);
        let clear = self.clear.unwrap_or(limit);
        if self.above.is_some() && clear > limit || self.below.is_some() && clear < limit {
            ctx.fail(format!("clear {clear} must lie on the safe side of the limit {limit}"));
        }
        Some(Threshold { metric, above: self.above, below: self.below, clear, bit: self.bit })
    }
}

series_kind!(Threshold => Threshold, feed: |k| Feed::Values(vec![k.metric.clone()]));

#[derive(Debug)]
struct State {
    k: Threshold,
    series: Series<Hold>,
}

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        let v = cx.reading.value;
        let k = &self.k;
        let x = match k.bit {
            Some(b) if v >= 0.0 => ((v as u64 >> b) & 1) as f64,
            Some(_) => 0.0,
            None => v,
        };
        let (raise, clr) = match (k.above, k.below) {
            (Some(a), _) => (x > a, x <= k.clear),
            (_, Some(b)) => (x < b, x >= k.clear),
            _ => (false, true),
        };
        let (for_ms, clear_for_ms) = (cx.rule.for_ms, cx.rule.clear_for_ms);
        let h = cx.series(&mut self.series, Hold::default);
        if let Some(c) = h.step(raise, clr, cx.reading.ts.0, for_ms, clear_for_ms) {
            cx.emit(c, Some(v));
        }
    }

    fn active(&self, devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        active_devices(&self.series, devices, |h: &Hold| Some(h))
    }

    fn series(&self) -> usize {
        self.series.len()
    }
}
