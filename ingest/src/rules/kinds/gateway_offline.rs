//! `gateway_offline`: a whole gateway offline, because its status (MQTT last will) says so
//! for `grace_secs`, or because nothing came from any of its devices for `silence_secs`.
//!
//! Invariant: this kind ticks first ([`Ticks::First`]) and puts every gateway that is down,
//! or whose status says offline, into [`Tick::down`]: the staleness of everything behind
//! it is suppressed.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Check, Devices, Feed, Kind, RuleState, Tick, Ticks, active_groups};
use crate::rules::signal::{Entity, signal};
use crate::rules::spec::{Ctx, DeviceMeta};
use crate::rules::stats::{Cond, Hold};

/// The keys of a gateway-offline rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    silence_secs: Option<u64>,
    grace_secs: Option<u64>,
}

/// A compiled gateway-offline rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayOffline {
    /// Silence of every device that means the gateway is gone.
    pub silence_ms: i64,
    /// How long an offline status must last.
    pub grace_ms: i64,
}

impl super::Spec for Spec {
    const NAME: &'static str = "gateway_offline";
    type Compiled = GatewayOffline;

    fn compile(self, ctx: &mut Ctx<'_>) -> Option<GatewayOffline> {
        Some(GatewayOffline {
            silence_ms: ctx.secs("silence_secs", self.silence_secs, 300),
            grace_ms: i64::try_from(self.grace_secs.unwrap_or(60).saturating_mul(1000)).unwrap_or(60_000),
        })
    }
}

impl From<GatewayOffline> for Kind {
    fn from(k: GatewayOffline) -> Kind {
        Kind::GatewayOffline(k)
    }
}

impl Check for GatewayOffline {
    fn name(&self) -> &'static str {
        <Spec as super::Spec>::NAME
    }

    fn feed(&self) -> Feed {
        Feed::Values(Vec::new())
    }

    fn ticks(&self) -> Option<Ticks> {
        Some(Ticks::First)
    }

    fn start(&self) -> Box<dyn RuleState> {
        Box::new(State { k: self.clone(), groups: HashMap::new() })
    }
}

#[derive(Debug, Default)]
struct Gateway {
    hold: Hold,
    /// Since when its status says offline.
    offline_since: Option<i64>,
}

#[derive(Debug)]
struct State {
    k: GatewayOffline,
    groups: HashMap<String, Gateway>,
}

impl RuleState for State {
    fn tick(&mut self, cx: &mut Tick<'_>) {
        let now = cx.now;
        for g in &cx.inventory.gateways() {
            let Some(meta) = cx.devices.get(&g.id).cloned() else { continue };
            if !cx.rule.select.matches(&meta) {
                continue;
            }
            let last = cx.gateway_last.get(&g.id).copied();
            let status = cx.inventory.gateway_online(&g.id);
            let st = self.groups.entry(g.id.clone()).or_default();
            match status {
                Some(false) => {
                    st.offline_since.get_or_insert(now);
                }
                _ => st.offline_since = None,
            }
            let by_status = st.offline_since.is_some_and(|s| now - s >= self.k.grace_ms);
            let silent = last.is_some_and(|l| now - l > self.k.silence_ms);
            let is_down = by_status || silent;
            if is_down || st.offline_since.is_some() {
                cx.down.insert(g.id.clone());
            }
            let since = match (by_status, last) {
                (true, _) => st.offline_since,
                (false, Some(l)) => Some(l),
                _ => None,
            };
            if let Some(c) = st.hold.step(is_down, !is_down, now, cx.rule.for_ms, cx.rule.clear_for_ms) {
                let c = match (c, since) {
                    (Cond::Firing { .. }, Some(s)) => Cond::Firing { since: s },
                    (c, _) => c,
                };
                let silent_s = last.map(|l| ((now - l) / 1000) as f64);
                cx.out.push(signal(cx.rule, Entity::Gateway(g.id.clone()), Some(&meta), c, silent_s, now));
            }
        }
    }

    fn active(&self, _devices: &Devices) -> Vec<(Entity, Option<Arc<DeviceMeta>>)> {
        active_groups(&self.groups, |g| Entity::Gateway(g.to_string()), |g| &g.hold)
    }

    fn series(&self) -> usize {
        0
    }
}
