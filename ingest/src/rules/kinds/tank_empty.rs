//! `tank_empty`: the least-squares level trend over `trend_secs` projects the level to
//! reach `floor` within `within_hours`.
//!
//! Invariant: a trend over less than half the window, or a rising level, projects nothing;
//! it clears only once the projection is half as far again as the limit (hysteresis).

use std::collections::VecDeque;
use std::sync::Arc;

use conf::Spanned;
use protocol::Metric;
use serde::{Deserialize, Serialize};

use super::{Devices, Feed, RuleState, Series, Step, active_devices};
use crate::rules::signal::Entity;
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::{self, Hold};

/// The keys of a tank-empty rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    metric: Option<Spanned<String>>,
    trend_secs: Option<u64>,
    floor: Option<f64>,
    within_hours: Option<f64>,
    for_secs: Option<u64>,
    clear_for_secs: Option<u64>,
}

/// A compiled tank-empty rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TankEmpty {
    /// The level metric.
    pub metric: Metric,
    /// Window of the trend.
    pub trend_ms: i64,
    /// Level that counts as empty.
    pub floor: f64,
    /// Raise when empty is closer than this.
    pub within_hours: f64,
}

impl super::Spec for Spec {
    const NAME: &'static str = "tank_empty";
    type Compiled = TankEmpty;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<TankEmpty> {
        ctx.hold(self.for_secs, self.clear_for_secs);
        Some(TankEmpty {
            metric: ctx.metric(&self.metric, Some("tank_level"))?,
            trend_ms: ctx.secs("trend_secs", self.trend_secs, 1800),
            floor: self.floor.unwrap_or(0.0),
            within_hours: ctx.positive("within_hours", self.within_hours, 1.0),
        })
    }
}

series_kind!(TankEmpty => TankEmpty, feed: |k| Feed::Values(vec![k.metric.clone()]));

#[derive(Debug, Default)]
struct Tank {
    hold: Hold,
    window: VecDeque<(i64, f64)>,
}

#[derive(Debug)]
struct State {
    k: TankEmpty,
    series: Series<Tank>,
}

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        let (ts, v) = (cx.reading.ts.0, cx.reading.value);
        let k = &self.k;
        let (for_ms, clear_for_ms) = (cx.rule.for_ms, cx.rule.clear_for_ms);
        let Tank { hold, window } = cx.series(&mut self.series, Tank::default);
        if window.back().is_some_and(|b| ts <= b.0) {
            return;
        }
        window.push_back((ts, v));
        while window.front().is_some_and(|p| ts - p.0 > k.trend_ms) {
            window.pop_front();
        }
        let span = window.front().map_or(0, |p| ts - p.0);
        let s = if span >= k.trend_ms / 2 { stats::slope(window.iter().copied()) } else { None };
        let tte_h = s.filter(|s| *s < 0.0).map(|s| ((v - k.floor).max(0.0) / -s) / 3_600_000.0);
        let raise = tte_h.is_some_and(|h| h < k.within_hours);
        let clear = s.is_some() && tte_h.is_none_or(|h| h > k.within_hours * 1.5);
        if let Some(c) = hold.step(raise, clear, ts, for_ms, clear_for_ms) {
            cx.emit(c, tte_h);
        }
    }

    fn active(&self, devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        active_devices(&self.series, devices, |t| Some(&t.hold))
    }

    fn series(&self) -> usize {
        self.series.len()
    }
}
