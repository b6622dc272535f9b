//! `rate_of_change`: the change of a value over a sliding window, up (`rise`) or down
//! (`fall`).
//!
//! Invariant: a window less than half full judges nothing (a fresh series has no rate).

use std::collections::VecDeque;
use std::sync::Arc;

use conf::Spanned;
use protocol::Metric;
use serde::{Deserialize, Serialize};

use super::{Devices, Feed, RuleState, Series, Step, active_devices};
use crate::rules::signal::Entity;
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::Hold;

/// The keys of a rate-of-change rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    metric: Option<Spanned<String>>,
    window_secs: Option<u64>,
    rise: Option<f64>,
    fall: Option<f64>,
    for_secs: Option<u64>,
    clear_for_secs: Option<u64>,
}

/// A compiled rate of change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateOfChange {
    /// The metric.
    pub metric: Metric,
    /// Window.
    pub window_ms: i64,
    /// Raise on a rise of at least this over the window.
    pub rise: Option<f64>,
    /// Raise on a fall of at least this over the window.
    pub fall: Option<f64>,
}

impl super::Spec for Spec {
    const NAME: &'static str = "rate_of_change";
    type Compiled = RateOfChange;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<RateOfChange> {
        ctx.hold(self.for_secs, self.clear_for_secs);
        let metric = ctx.metric(&self.metric, None)?;
        if self.rise.is_none() && self.fall.is_none() {
            ctx.fail("a rate_of_change rule needs `rise` or `fall`");
        }
        let window_ms = ctx.secs("window_secs", self.window_secs, 600);
        Some(RateOfChange { metric, window_ms, rise: self.rise, fall: self.fall })
    }
}

series_kind!(RateOfChange => RateOfChange, feed: |k| Feed::Values(vec![k.metric.clone()]));

#[derive(Debug, Default)]
struct Window {
    hold: Hold,
    points: VecDeque<(i64, f64)>,
}

#[derive(Debug)]
struct State {
    k: RateOfChange,
    series: Series<Window>,
}

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        let (ts, v) = (cx.reading.ts.0, cx.reading.value);
        let k = &self.k;
        let (for_ms, clear_for_ms) = (cx.rule.for_ms, cx.rule.clear_for_ms);
        let Window { hold, points } = cx.series(&mut self.series, Window::default);
        if points.back().is_some_and(|b| ts <= b.0) {
            return;
        }
        points.push_back((ts, v));
        while points.len() > 2 && points.get(1).is_some_and(|p| ts - p.0 >= k.window_ms) {
            points.pop_front();
        }
        let first = points.front().copied().unwrap_or((ts, v));
        let enough = ts - first.0 >= k.window_ms / 2;
        let up = v - first.1;
        let raise = enough && (k.rise.is_some_and(|x| up >= x) || k.fall.is_some_and(|x| -up >= x));
        if let Some(c) = hold.step(raise, !raise, ts, for_ms, clear_for_ms) {
            cx.emit(c, Some(up.abs()));
        }
    }

    fn active(&self, devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        active_devices(&self.series, devices, |w| Some(&w.hold))
    }

    fn series(&self) -> usize {
        self.series.len()
    }
}
