//! `thi`: the barn temperature-humidity index (NRC), computed from `barn_temperature` and
//! `relative_humidity` of one poll: THI = (1.8 T + 32) - (0.55 - 0.0055 RH)(1.8 T - 26).
//!
//! Invariant: the two values are at most a minute apart, or nothing is computed.

use std::sync::Arc;

use protocol::Metric;
use serde::{Deserialize, Serialize};

use super::{Devices, Feed, RuleState, Series, Step, active_devices};
use crate::rules::signal::Entity;
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::Hold;

/// The keys of a THI rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    above: Option<f64>,
    clear: Option<f64>,
    for_secs: Option<u64>,
    clear_for_secs: Option<u64>,
}

/// A compiled THI rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thi {
    /// Raise at or above.
    pub above: f64,
    /// Clear below.
    pub clear: f64,
}

impl super::Spec for Spec {
    const NAME: &'static str = "thi";
    type Compiled = Thi;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<Thi> {
        ctx.hold(self.for_secs, self.clear_for_secs);
        let above = ctx.positive("above", self.above, 72.0);
        let clear = self.clear.unwrap_or(above);
        if clear > above {
            ctx.fail("clear must not be above `above`");
        }
        Some(Thi { above, clear })
    }
}

series_kind!(Thi => Thi, feed: |_k| Feed::Values(vec![Metric::new("barn_temperature"), Metric::new("relative_humidity")]));

#[derive(Debug, Default)]
struct Barn {
    hold: Hold,
    t: Option<(i64, f64)>,
    rh: Option<(i64, f64)>,
}

#[derive(Debug)]
struct State {
    k: Thi,
    series: Series<Barn>,
}

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        let (ts, v) = (cx.reading.ts.0, cx.reading.value);
        let k = &self.k;
        let is_t = cx.reading.metric.name() == "barn_temperature";
        let (for_ms, clear_for_ms) = (cx.rule.for_ms, cx.rule.clear_for_ms);
        let b = cx.series(&mut self.series, Barn::default);
        if is_t {
            b.t = Some((ts, v));
        } else {
            b.rh = Some((ts, v));
        }
        let (Some((tt, tv)), Some((th, hv))) = (b.t, b.rh) else { return };
        if (tt - th).abs() > 60_000 {
            return;
        }
        // NRC: THI = (1.8 T + 32) - (0.55 - 0.0055 RH)(1.8 T - 26) (DOMAIN.md).
        let thi = (1.8 * tv + 32.0) - (0.55 - 0.0055 * hv) * (1.8 * tv - 26.0);
        if let Some(c) = b.hold.step(thi >= k.above, thi < k.clear, tt.max(th), for_ms, clear_for_ms) {
            cx.emit(c, Some((thi * 10.0).round() / 10.0));
        }
    }

    fn active(&self, devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        active_devices(&self.series, devices, |b| Some(&b.hold))
    }

    fn series(&self) -> usize {
        self.series.len()
    }
}
