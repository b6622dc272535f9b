//! `flatline`: a value that does not move by more than `tolerance` for `for_secs` where
//! the process always moves (a stuck sensor is its own fault, not drift).
//!
//! Invariant: a gap in the data longer than the hold time restarts the count: there is no
//! evidence the value was stuck meanwhile.

use std::sync::Arc;

use conf::Spanned;
use protocol::Metric;
use serde::{Deserialize, Serialize};

use super::{Devices, Feed, RuleState, Series, Step, active_devices};
use crate::rules::signal::Entity;
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::Hold;

/// The keys of a flatline rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    metric: Option<Spanned<String>>,
    tolerance: Option<f64>,
    for_secs: Option<u64>,
}

/// A compiled flatline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flatline {
    /// The metric.
    pub metric: Metric,
    /// Changes up to this are no change.
    pub tolerance: f64,
}

impl super::Spec for Spec {
    const NAME: &'static str = "flatline";
    type Compiled = Flatline;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<Flatline> {
        let for_ms = ctx.hold(self.for_secs, None);
        let metric = ctx.metric(&self.metric, None)?;
        let tolerance = self.tolerance.unwrap_or(0.0);
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            ctx.fail("tolerance must be zero or positive");
        }
        if for_ms <= 0 {
            ctx.fail("a flatline rule needs `for_secs`: how long a value may stay unchanged");
        }
        Some(Flatline { metric, tolerance })
    }
}

series_kind!(Flatline => Flatline, feed: |k| Feed::Values(vec![k.metric.clone()]));

#[derive(Debug)]
struct Flat {
    hold: Hold,
    reference: f64,
    since: i64,
    last: i64,
}

#[derive(Debug)]
struct State {
    k: Flatline,
    series: Series<Flat>,
}

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        let (ts, v) = (cx.reading.ts.0, cx.reading.value);
        let for_ms = cx.rule.for_ms;
        let tolerance = self.k.tolerance;
        let f = cx.series(&mut self.series, || Flat { hold: Hold::default(), reference: v, since: ts, last: ts });
        if ts <= f.last && f.since != ts {
            return;
        }
        if (v - f.reference).abs() > tolerance || ts - f.last > for_ms {
            // It moved, or a gap in the data: no evidence it was stuck meanwhile.
            f.reference = v;
            f.since = ts;
        }
        f.last = ts;
        let flat = ts - f.since >= for_ms;
        if let Some(c) = f.hold.step(flat, !flat, ts, 0, 0) {
            cx.emit(c, Some(v));
        }
    }

    fn active(&self, devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        active_devices(&self.series, devices, |f| Some(&f.hold))
    }

    fn series(&self) -> usize {
        self.series.len()
    }
}
