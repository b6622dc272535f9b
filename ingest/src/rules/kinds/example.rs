//! `example` (tests only): the proof that a kind is added by one new file, one [`Kind`]
//! variant, one arm of [`Kind::check`] and one entry of [`super::KINDS`] (each of those
//! marked `#[cfg(test)]` in `kinds/mod.rs`), and nothing else: the evaluator, the pack
//! parser and the alert manager take it as they are.
//!
//! The kind: a reading of `metric` at or above `limit` raises; below it clears.

use std::sync::Arc;

use conf::Spanned;
use protocol::Metric;
use serde::{Deserialize, Serialize};

use super::{Devices, Feed, RuleState, Series, Step, active_devices};
use crate::rules::signal::Entity;
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::Hold;

/// The keys of an example rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Spec {
    metric: Option<Spanned<String>>,
    limit: f64,
}

/// A compiled example rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// The metric.
    pub metric: Metric,
    /// Raise at or above.
    pub limit: f64,
}

impl super::Spec for Spec {
    const NAME: &'static str = "example";
    type Compiled = Example;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<Example> {
        let metric = ctx.metric(&self.metric, None)?;
        if !self.limit.is_finite() {
            ctx.fail("limit must be a number");
        }
        Some(Example { metric, limit: self.limit })
    }
}

series_kind!(Example => Example, feed: |k| Feed::Values(vec![k.metric.clone()]));

#[derive(Debug)]
struct State {
    k: Example,
    series: Series<Hold>,
}

impl RuleState for State {
    fn reading(&mut self, cx: &mut Step<'_>) {
        let v = cx.reading.value;
        let raise = v >= self.k.limit;
        let h = cx.series(&mut self.series, Hold::default);
        if let Some(c) = h.step(raise, !raise, cx.reading.ts.0, 0, 0) {
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

#[cfg(test)]
mod tests {
    use conf::Source;
    use protocol::{Metric, Reading, Timestamp};

    use crate::inventory::{Device, GatewayInfo, Inventory, InventoryFile, Site};
    use crate::rules::config::RuleSet;
    use crate::rules::eval::Evaluator;
    use crate::rules::stats::Cond;

    const PACK: &str = "[[rules]]\nid = \"hot-water\"\nkind = \"example\"\nseverity = \"warning\"\n\
                        summary = \"{device} at {value}\"\nmetric = \"ph\"\nlimit = 8.5\n";

    fn inventory() -> std::sync::Arc<Inventory> {
        std::sync::Arc::new(Inventory::from_file(InventoryFile {
            sites: vec![Site {
                id: "works".into(),
                name: "works".into(),
                kind: "waterworks".into(),
                tenant: "county".into(),
                lat: 0.0,
                lon: 0.0,
                village: None,
                district: None,
                township: None,
            }],
            gateways: vec![GatewayInfo {
                id: "gw".into(),
                tenant: "county".into(),
                site: "works".into(),
                public_key: None,
            }],
            devices: vec![Device {
                id: "wq".into(),
                kind: protocol::DeviceKind::WaterQuality,
                site: "works".into(),
                gateway: "gw".into(),
                model: String::new(),
                lat: None,
                lon: None,
                public_key: None,
            }],
        }))
    }

    #[test]
    fn a_kind_added_in_one_file_loads_evaluates_and_reloads_like_the_shipped_ones() {
        let set = RuleSet::from_sources(&[Source::from_text("x.toml", PACK)]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.rules[0].kind.name(), "example");
        let json = serde_json::to_value(&set.rules[0]).unwrap();
        assert_eq!((json["kind"].as_str(), json["limit"].as_f64()), (Some("example"), Some(8.5)), "{json}");

        let mut e = Evaluator::new(set.rules, inventory(), None);
        let mut out = Vec::new();
        for (t, v) in [(0, 7.5), (1, 8.7), (2, 8.0)] {
            out.extend(e.readings(&[Reading::new("wq", Metric::new("ph"), Timestamp(t), v)]));
        }
        let conds: Vec<Cond> = out.iter().map(|s| s.cond).collect();
        assert_eq!(conds, [Cond::Clear, Cond::Firing { since: 1 }, Cond::Clear]);
        assert_eq!(out[1].summary, "wq at 8.7");
        assert_eq!(e.series(), [1]);

        // Its keys are known to the parser from its spec alone: a misspelt one is unknown,
        // and on another kind's rule it does not apply.
        let bad = PACK.replace("limit = 8.5", "limt = 8.5");
        let err = RuleSet::from_sources(&[Source::from_text("x.toml", bad)]).unwrap_err().to_string();
        assert!(err.contains("x.toml:7:1: unknown field `limt`, expected one of"), "{err}");
        let foreign = PACK.replace("kind = \"example\"", "kind = \"threshold\"");
        let err = RuleSet::from_sources(&[Source::from_text("x.toml", foreign)]).unwrap_err().to_string();
        assert!(err.contains("x.toml:7:1: rule 'hot-water': `limit` does not apply to a threshold rule"), "{err}");
    }
}
