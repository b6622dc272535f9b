//! Escalation: an alert nobody acknowledges goes to the next contact list of its route.
//!
//! A route (`[[alerts.routes]]`) takes the alerts it matches through its contact lists in
//! order: the first when the alert fires, the next after `escalate_after_mins` without an
//! acknowledgement, and so on to the last. An acknowledgement stops it; a resolution ends
//! it. Both are told to every list told so far.
//!
//! Design constraints:
//! - Survives a restart without telling anyone twice and without forgetting anyone: the
//!   state (per alert and route: the last list told, when the next is due, acknowledged
//!   or not) is written to `data_dir/alerts/escalations.json` (temporary file, fsync,
//!   rename) *before* the notices of a change are handed to the notifiers. At start it
//!   is read back and reconciled with the alert log: an open alert with no state (its
//!   firing notice was handed over, then ingest died before the state was written) gets
//!   the state its first list would have (told at firing, next due `escalate_after` after
//!   it fired), never a second firing notice; the state of alerts no longer open goes.
//! - Time is ingest's clock (what the manager uses), read on every step, so tests and
//!   accelerated simulations escalate at simulated time.
//! - A silenced alert does not escalate while its silence lasts; its next step is pushed
//!   back by one `escalate_after` from the check that found it muted.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use protocol::Timestamp;
use serde::{Deserialize, Serialize};

use super::config::RouteConfig;
use super::manager::AlertEvent;
use super::model::{Alert, AlertState};
use super::notice::Notice;

/// Where a notice goes: the contact list `list` of route `route` (indices in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    /// Index of the route.
    pub route: usize,
    /// Index of the contact list in the route.
    pub list: usize,
    /// What to tell.
    pub notice: Notice,
}

/// One alert's escalation on one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    alert: u64,
    route: String,
    /// The last contact list told (0: the first).
    level: usize,
    /// When the next list is due (ms, ingest's clock); `None`: no further list.
    next_at: Option<i64>,
    /// Acknowledged: no further list; the resolution is still told.
    #[serde(default)]
    acked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    entries: Vec<Entry>,
}

/// Escalation state of every open routed alert, with its file.
#[derive(Debug)]
pub struct Escalations {
    routes: Vec<RouteConfig>,
    entries: BTreeMap<(u64, usize), Entry>,
    path: PathBuf,
}

fn after_ms(r: &RouteConfig) -> i64 {
    (r.escalate_after_mins as i64).saturating_mul(60_000)
}

fn matches(r: &RouteConfig, a: &Alert) -> bool {
    a.severity >= r.min_severity
        && (r.tenants.is_empty() || r.tenants.contains(&a.tenant))
        && (r.rules.is_empty() || r.rules.contains(&a.rule))
        && (r.sites.is_empty() || a.site.as_ref().is_some_and(|s| r.sites.contains(s)))
}

impl Escalations {
    /// Reads the state in `path` (a missing or unreadable file is an empty state, logged)
    /// and reconciles it with the alerts open now.
    pub fn open(path: &Path, routes: Vec<RouteConfig>, open: &[Alert]) -> Escalations {
        let file: File = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::error!(message = "Escalation state unreadable; rebuilt from the alert log.", path = %path.display(), %error);
                File::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(error) => {
                tracing::error!(message = "Escalation state unreadable; rebuilt from the alert log.", path = %path.display(), %error);
                File::default()
            }
        };
        let mut e = Escalations { routes, entries: BTreeMap::new(), path: path.to_path_buf() };
        for mut entry in file.entries {
            let Some(ri) = e.routes.iter().position(|r| r.name == entry.route) else { continue };
            if !open.iter().any(|a| a.id == entry.alert) {
                continue;
            }
            let last = e.routes[ri].contacts.len().saturating_sub(1);
            if entry.level >= last {
                entry.level = last;
                entry.next_at = None;
            }
            e.entries.insert((entry.alert, ri), entry);
        }
        // Alerts told at firing whose state was not written: as if it had been.
        for a in open {
            if a.state == AlertState::Pending || a.silenced_by.is_some() {
                continue;
            }
            for (ri, r) in e.routes.iter().enumerate() {
                if !matches(r, a) || e.entries.contains_key(&(a.id, ri)) {
                    continue;
                }
                let fired = a.fired_at.unwrap_or(a.updated_at).0;
                let acked = a.state == AlertState::Acknowledged;
                let next_at = (!acked && r.contacts.len() > 1).then(|| fired.saturating_add(after_ms(r)));
                e.entries.insert((a.id, ri), Entry { alert: a.id, route: r.name.clone(), level: 0, next_at, acked });
            }
        }
        e.save();
        e
    }

    /// The routes.
    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }

    /// Names of the notifiers routes use: they get alerts through routes only.
    pub fn routed_notifiers(&self) -> HashSet<String> {
        self.routes.iter().flat_map(|r| r.contacts.iter().flat_map(|c| c.notifiers.iter().cloned())).collect()
    }

    /// Writes the state: temporary file, fsync, rename (a crash leaves the old or the new).
    fn save(&self) {
        let file = File { entries: self.entries.values().cloned().collect() };
        let tmp = self.path.with_extension("json.tmp");
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&file).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })();
        if let Err(error) = result {
            tracing::error!(message = "Escalation state not written; a restart may repeat or miss a step.", path = %self.path.display(), %error);
        }
    }

    /// What an alert event means for the routes, at `now`: firing tells the first list
    /// (and starts the clock), acknowledgement and resolution tell every list told so far
    /// (and stop it).
    pub fn on_event(&mut self, event: &AlertEvent, now: Timestamp) -> Vec<Dispatch> {
        let mut out = Vec::new();
        match event {
            AlertEvent::Firing { alert } => {
                for ri in 0..self.routes.len() {
                    let r = &self.routes[ri];
                    if !matches(r, alert) {
                        continue;
                    }
                    let next_at = (r.contacts.len() > 1).then(|| now.0.saturating_add(after_ms(r)));
                    let entry = Entry { alert: alert.id, route: r.name.clone(), level: 0, next_at, acked: false };
                    self.entries.insert((alert.id, ri), entry);
                    out.push(Dispatch { route: ri, list: 0, notice: Notice::Event(event.clone()) });
                }
            }
            AlertEvent::Acknowledged { alert } | AlertEvent::Resolved { alert } => {
                let resolved = matches!(event, AlertEvent::Resolved { .. });
                let keys: Vec<(u64, usize)> =
                    self.entries.range((alert.id, 0)..=(alert.id, usize::MAX)).map(|(k, _)| *k).collect();
                for key in keys {
                    let Some(entry) = self.entries.get_mut(&key) else { continue };
                    for list in 0..=entry.level {
                        out.push(Dispatch { route: key.1, list, notice: Notice::Event(event.clone()) });
                    }
                    if resolved {
                        self.entries.remove(&key);
                    } else {
                        entry.acked = true;
                        entry.next_at = None;
                    }
                }
            }
            AlertEvent::BroadcastProposed { .. } | AlertEvent::BroadcastApproved { .. } => {}
        }
        if !out.is_empty() {
            self.save();
        }
        out
    }

    /// Escalations due at `now`; `lookup` gives an alert as it is now. The new state is
    /// written before the notices are returned.
    pub fn due(&mut self, now: Timestamp, lookup: impl Fn(u64) -> Option<Alert>) -> Vec<Dispatch> {
        let due: Vec<(u64, usize)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.acked && e.next_at.is_some_and(|t| t <= now.0))
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for key in due {
            let r = &self.routes[key.1];
            let after = after_ms(r);
            let alert = lookup(key.0);
            let Some(entry) = self.entries.get_mut(&key) else { continue };
            match alert {
                None => {
                    self.entries.remove(&key);
                }
                Some(a) if a.state == AlertState::Resolved => {
                    self.entries.remove(&key);
                }
                Some(a) if a.state == AlertState::Acknowledged => {
                    entry.acked = true;
                    entry.next_at = None;
                }
                Some(a) if a.silenced_by.is_some() => entry.next_at = Some(now.0.saturating_add(after)),
                Some(a) => {
                    entry.level += 1;
                    let level = entry.level;
                    entry.next_at = (level + 1 < r.contacts.len()).then(|| now.0.saturating_add(after));
                    let unacknowledged_ms = now.0 - a.fired_at.unwrap_or(a.started_at).0;
                    tracing::info!(message = "Alert escalated.", id = a.id, route = %r.name, level = level + 1, contacts = %r.contacts[level].name);
                    out.push(Dispatch {
                        route: key.1,
                        list: level,
                        notice: Notice::Escalated {
                            alert: a,
                            route: r.name.clone(),
                            level: level + 1,
                            contacts: r.contacts[level].name.clone(),
                            unacknowledged_ms,
                        },
                    });
                }
            }
        }
        self.save();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::config::ContactList;
    use crate::alerts::model::{Ack, Entity, Severity};

    fn route() -> RouteConfig {
        let list = |n: &str| ContactList {
            name: n.into(),
            notifiers: vec![format!("{n}-robot")],
            mobiles: vec![],
            user_ids: vec![],
        };
        RouteConfig {
            name: "water".into(),
            tenants: vec!["county".into()],
            rules: vec![],
            sites: vec![],
            min_severity: Severity::Warning,
            escalate_after_mins: 15,
            contacts: vec![list("duty"), list("chief"), list("director")],
        }
    }

    fn alert(id: u64, state: AlertState) -> Alert {
        Alert {
            id,
            fingerprint: format!("r/device/d{id}"),
            rule: "r".into(),
            severity: Severity::Critical,
            state,
            entity: Entity::Device(format!("d{id}")),
            tenant: "county".into(),
            device: Some(format!("d{id}")),
            site: None,
            gateway: None,
            district: None,
            started_at: Timestamp(0),
            fired_at: Some(Timestamp(0)),
            resolved_at: None,
            value: None,
            summary: String::new(),
            ack: None,
            silenced_by: None,
            flaps: 0,
            clearing_since: None,
            updated_at: Timestamp(0),
        }
    }

    const MIN: i64 = 60_000;

    fn lists(d: &[Dispatch]) -> Vec<(usize, &'static str)> {
        d.iter().map(|d| (d.list, d.notice.name())).collect()
    }

    #[test]
    fn an_unacknowledged_alert_climbs_the_lists_and_stops_at_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Escalations::open(&dir.path().join("e.json"), vec![route()], &[]);
        let a = alert(1, AlertState::Firing);
        let d = e.on_event(&AlertEvent::Firing { alert: a.clone() }, Timestamp(0));
        assert_eq!(lists(&d), [(0, "firing")]);
        let lookup = |_| Some(a.clone());
        assert!(e.due(Timestamp(15 * MIN - 1), lookup).is_empty(), "not before 15 minutes");
        assert_eq!(lists(&e.due(Timestamp(15 * MIN), lookup)), [(1, "escalated")]);
        assert!(e.due(Timestamp(29 * MIN), lookup).is_empty());
        let d = e.due(Timestamp(30 * MIN), lookup);
        assert_eq!(lists(&d), [(2, "escalated")]);
        let Notice::Escalated { level, contacts, unacknowledged_ms, .. } = &d[0].notice else { panic!("{d:?}") };
        assert_eq!((*level, contacts.as_str(), *unacknowledged_ms), (3, "director", 30 * MIN));
        assert!(e.due(Timestamp(600 * MIN), lookup).is_empty(), "the last list is the last");
        // Resolution goes to every list told.
        let d = e.on_event(&AlertEvent::Resolved { alert: a }, Timestamp(601 * MIN));
        assert_eq!(lists(&d), [(0, "resolved"), (1, "resolved"), (2, "resolved")]);
    }

    #[test]
    fn an_acknowledged_alert_does_not_escalate_but_its_resolution_is_told() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Escalations::open(&dir.path().join("e.json"), vec![route()], &[]);
        let a = alert(1, AlertState::Firing);
        e.on_event(&AlertEvent::Firing { alert: a.clone() }, Timestamp(0));
        let acked = Alert {
            state: AlertState::Acknowledged,
            ack: Some(Ack { by: "li.wei".into(), at: Timestamp(MIN), note: String::new() }),
            ..a.clone()
        };
        let d = e.on_event(&AlertEvent::Acknowledged { alert: acked.clone() }, Timestamp(MIN));
        assert_eq!(lists(&d), [(0, "acknowledged")]);
        assert!(e.due(Timestamp(100 * MIN), |_| Some(acked.clone())).is_empty());
        let d = e.on_event(&AlertEvent::Resolved { alert: acked }, Timestamp(101 * MIN));
        assert_eq!(lists(&d), [(0, "resolved")]);
        // Positive control: the same alert, not acknowledged, escalates.
        e.on_event(&AlertEvent::Firing { alert: a.clone() }, Timestamp(200 * MIN));
        assert_eq!(lists(&e.due(Timestamp(215 * MIN), |_| Some(a.clone()))), [(1, "escalated")]);
    }

    #[test]
    fn the_state_survives_a_restart_without_repeating_or_losing_a_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.json");
        let a = alert(1, AlertState::Firing);
        {
            let mut e = Escalations::open(&path, vec![route()], &[]);
            e.on_event(&AlertEvent::Firing { alert: a.clone() }, Timestamp(0));
            assert_eq!(lists(&e.due(Timestamp(15 * MIN), |_| Some(a.clone()))), [(1, "escalated")]);
        }
        // Restarted at 20 minutes: nothing is told again; the next step comes at 30.
        let mut e = Escalations::open(&path, vec![route()], std::slice::from_ref(&a));
        assert!(e.due(Timestamp(20 * MIN), |_| Some(a.clone())).is_empty());
        assert_eq!(lists(&e.due(Timestamp(30 * MIN), |_| Some(a.clone()))), [(2, "escalated")]);
        // An alert told at firing whose state was never written (a crash in between)
        // escalates on time, without a second firing notice.
        let b = alert(2, AlertState::Firing);
        let mut e = Escalations::open(&path, vec![route()], &[a.clone(), b.clone()]);
        assert_eq!(
            lists(&e.due(Timestamp(15 * MIN), |id| Some(if id == 2 { b.clone() } else { a.clone() }))),
            [(1, "escalated")]
        );
        // State of alerts that are no longer open goes.
        let e = Escalations::open(&path, vec![route()], &[]);
        assert!(e.entries.is_empty());
    }

    #[test]
    fn routes_take_only_what_they_match_and_silences_hold_escalation() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Escalations::open(&dir.path().join("e.json"), vec![route()], &[]);
        let dairy = Alert { tenant: "dairy".into(), ..alert(1, AlertState::Firing) };
        assert!(e.on_event(&AlertEvent::Firing { alert: dairy }, Timestamp(0)).is_empty());
        let info = Alert { severity: Severity::Info, ..alert(2, AlertState::Firing) };
        assert!(e.on_event(&AlertEvent::Firing { alert: info }, Timestamp(0)).is_empty());
        let a = alert(3, AlertState::Firing);
        e.on_event(&AlertEvent::Firing { alert: a.clone() }, Timestamp(0));
        let muted = Alert { silenced_by: Some(9), ..a.clone() };
        assert!(e.due(Timestamp(15 * MIN), |_| Some(muted.clone())).is_empty());
        assert!(e.due(Timestamp(29 * MIN), |_| Some(a.clone())).is_empty(), "pushed back by one step");
        assert_eq!(lists(&e.due(Timestamp(30 * MIN), |_| Some(a.clone()))), [(1, "escalated")]);
    }
}
