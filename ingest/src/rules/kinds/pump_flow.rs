//! `pump_flow`: a pump's run feedback against its flow, `run_without_flow` (dry running,
//! a closed valve) or `flow_without_run` (a stuck contactor, a wrong signal).
//!
//! Invariant: both values of one poll are compared (same timestamp); "no flow" is relative
//! to the pump's own learned running flow once there is one.

use std::sync::Arc;

use protocol::Metric;
use serde::{Deserialize, Serialize};

use super::{Devices, Feed, RuleState, Series, Step, active_devices};
use crate::rules::signal::Entity;
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::Hold;

/// The keys of a pump-flow rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    mode: Option<String>,
    min_flow_ratio: Option<f64>,
    min_flow: Option<f64>,
    for_secs: Option<u64>,
    clear_for_secs: Option<u64>,
}

/// What a pump-flow rule looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PumpMode {
    /// Run feedback on, no pump flow.
    RunWithoutFlow,
    /// Pump flow, run feedback off.
    FlowWithoutRun,
}

/// A compiled pump-flow rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PumpFlow {
    /// What to look for.
    pub mode: PumpMode,
    /// Flow below this share of the pump's learned running flow is "no flow".
    pub min_flow_ratio: f64,
    /// Floor of "no flow" before a running flow is learned (m³/h).
    pub min_flow: f64,
}

impl super::Spec for Spec {
    const NAME: &'static str = "pump_flow";
    type Compiled = PumpFlow;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<PumpFlow> {
        ctx.hold(self.for_secs, self.clear_for_secs);
        let mode = match ctx.required("mode", self.mode)?.as_str() {
            "run_without_flow" => PumpMode::RunWithoutFlow,
            "flow_without_run" => PumpMode::FlowWithoutRun,
            other => {
                ctx.fail(format!("mode '{other}' must be run_without_flow or flow_without_run"));
                return None;
            }
        };
        Some(PumpFlow {
            mode,
            min_flow_ratio: ctx.positive("min_flow_ratio", self.min_flow_ratio, 0.1),
            min_flow: ctx.positive("min_flow", self.min_flow, 0.05),
        })
    }
}

series_kind!(PumpFlow => PumpFlow, feed: |_k| Feed::Values(vec![Metric::new("pump_running"), Metric::new("pump_flow")]));

#[derive(Debug, Default)]
struct Pump {
    hold: Hold,
    running: Option<(i64, f64)>,
    flow: Option<(i64, f64)>,
    learned: Option<f64>,
}

#[derive(Debug)]
struct State {
    k: PumpFlow,
    series: Series<Pump>,
}

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        let (ts, v) = (cx.reading.ts.0, cx.reading.value);
        let k = &self.k;
        let running_metric = cx.reading.metric.name() == "pump_running";
        let (for_ms, clear_for_ms) = (cx.rule.for_ms, cx.rule.clear_for_ms);
        let p = cx.series(&mut self.series, Pump::default);
        if running_metric {
            p.running = Some((ts, v));
        } else {
            p.flow = Some((ts, v));
        }
        let (Some((tr, run)), Some((tf, f))) = (p.running, p.flow) else { return };
        if tr != tf {
            return; // wait for both values of one poll
        }
        let on = run >= 0.5;
        if on && f > k.min_flow {
            p.learned = Some(p.learned.map_or(f, |l| l + 0.05 * (f - l)));
        }
        let limit = p.learned.map_or(k.min_flow, |l| (l * k.min_flow_ratio).max(k.min_flow));
        let raise = match k.mode {
            PumpMode::RunWithoutFlow => on && f < limit,
            PumpMode::FlowWithoutRun => !on && f > limit,
        };
        if let Some(c) = p.hold.step(raise, !raise, ts, for_ms, clear_for_ms) {
            cx.emit(c, Some(f));
        }
    }

    fn active(&self, devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        active_devices(&self.series, devices, |p| Some(&p.hold))
    }

    fn series(&self) -> usize {
        self.series.len()
    }
}
