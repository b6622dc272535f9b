//! The alert lifecycle: signals from the evaluator in, alerts, silences and proposed
//! broadcasts out, every change persisted to the alert log.
//!
//! Design constraints:
//! - One fingerprint, one alert: `rule/entity` maps to at most one open alert. A condition
//!   that comes back while its alert is open, or within `reopen_within` after it resolved,
//!   reopens the same alert and counts a flap instead of making a new one.
//! - Flapping is damped: a firing alert resolves only after its condition stayed clear for
//!   `resolve_after`; a return within that time keeps it firing without a new notification.
//! - Pending alerts whose condition ends before the rule's hold time are dropped: they
//!   never notify and are not history.
//! - Silences and maintenance windows mute notifications and proposals, never the record:
//!   a muted alert is still listed, with `silenced_by`.
//! - Every change goes to the log before the batch that caused it is done ([`Manager::sync`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use protocol::Timestamp;
use serde::Serialize;
use tokio::sync::broadcast;

use super::log::{Log, LogError, Record};
use super::model::{
    Ack, Alert, AlertState, Entity, Matchers, ProposalState, ProposedBroadcast, Severity, Silence, SilenceKind,
};
use crate::inventory::Inventory;
use crate::rules::eval::Signal;
use crate::rules::stats::Cond;

/// Lifecycle settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lifecycle {
    /// A firing alert resolves only after its condition stayed clear this long (ms).
    pub resolve_after_ms: i64,
    /// A condition returning this soon after its alert resolved reopens it (ms).
    pub reopen_within_ms: i64,
    /// Resolved alerts kept (memory and log); the oldest go first.
    pub history_limit: usize,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle { resolve_after_ms: 300_000, reopen_within_ms: 1_800_000, history_limit: 100_000 }
    }
}

/// Something that happened to an alert or proposal: what notifiers and subscribers get.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AlertEvent {
    /// An alert fired (or fired again after a silence ended).
    Firing {
        /// The alert.
        alert: Alert,
    },
    /// An alert resolved.
    Resolved {
        /// The alert.
        alert: Alert,
    },
    /// An operator acknowledged an alert.
    Acknowledged {
        /// The alert.
        alert: Alert,
    },
    /// An alert proposed a broadcast to the villages it affects.
    BroadcastProposed {
        /// The proposal.
        proposal: ProposedBroadcast,
    },
    /// An operator approved a proposed broadcast: the broadcast dispatcher sends it.
    BroadcastApproved {
        /// The proposal.
        proposal: ProposedBroadcast,
    },
}

impl AlertEvent {
    /// The tenant it belongs to.
    pub fn tenant(&self) -> &str {
        match self {
            AlertEvent::Firing { alert } | AlertEvent::Resolved { alert } | AlertEvent::Acknowledged { alert } => {
                &alert.tenant
            }
            AlertEvent::BroadcastProposed { proposal } | AlertEvent::BroadcastApproved { proposal } => &proposal.tenant,
        }
    }

    /// The severity, for alert events.
    pub fn severity(&self) -> Option<Severity> {
        match self {
            AlertEvent::Firing { alert } | AlertEvent::Resolved { alert } | AlertEvent::Acknowledged { alert } => {
                Some(alert.severity)
            }
            _ => None,
        }
    }

    /// The event's name.
    pub fn name(&self) -> &'static str {
        match self {
            AlertEvent::Firing { .. } => "firing",
            AlertEvent::Resolved { .. } => "resolved",
            AlertEvent::Acknowledged { .. } => "acknowledged",
            AlertEvent::BroadcastProposed { .. } => "broadcast_proposed",
            AlertEvent::BroadcastApproved { .. } => "broadcast_approved",
        }
    }
}

/// Why the manager refused a request.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No such alert, silence or proposal (for this caller).
    #[error("{0}")]
    NotFound(String),
    /// The request does not apply.
    #[error("{0}")]
    Invalid(String),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// A new silence as an operator asks for it.
#[derive(Debug, Clone)]
pub struct NewSilence {
    /// Silence or maintenance.
    pub kind: SilenceKind,
    /// What it mutes.
    pub matchers: Matchers,
    /// From (default now).
    pub starts_at: Option<Timestamp>,
    /// Until.
    pub ends_at: Timestamp,
    /// Why.
    pub reason: String,
    /// Who.
    pub created_by: String,
    /// Tenant.
    pub tenant: String,
}

/// Events held for the next log sync at most; more means the log has stopped syncing.
const MAX_HELD: usize = 100_000;

/// Alerts, silences and proposals, with their log.
pub struct Manager {
    alerts: BTreeMap<u64, Alert>,
    open: HashMap<String, u64>,
    resolved: HashMap<String, u64>,
    silences: BTreeMap<u64, Silence>,
    proposals: BTreeMap<u64, ProposedBroadcast>,
    next_id: u64,
    log: Log,
    lifecycle: Lifecycle,
    inventory: Arc<Inventory>,
    events: broadcast::Sender<AlertEvent>,
    /// Events whose change is in the log but not yet synced: sent by [`Manager::sync`], so
    /// that nobody is notified of an alert a power cut could take back.
    held: Vec<AlertEvent>,
    notified: HashMap<u64, bool>,
    /// Broadcasts of alerts that fired while muted, proposed when the silence ends (not
    /// persisted: after a restart a muted alert is notified without its proposal).
    muted_broadcasts: HashMap<u64, crate::rules::config::BroadcastSpec>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager").field("alerts", &self.alerts.len()).field("open", &self.open.len()).finish()
    }
}

fn fingerprint(rule: &str, e: &Entity) -> String {
    let kind = match e {
        Entity::Device(_) => "device",
        Entity::Gateway(_) => "gateway",
        Entity::District(_) => "district",
    };
    format!("{rule}/{kind}/{}", e.id())
}

impl Manager {
    /// Opens the log in `dir` and restores what it holds.
    pub fn open(
        dir: &std::path::Path,
        lifecycle: Lifecycle,
        inventory: Arc<Inventory>,
        events: broadcast::Sender<AlertEvent>,
    ) -> Result<Manager, LogError> {
        let (log, records) = Log::open(dir)?;
        let mut m = Manager {
            alerts: BTreeMap::new(),
            open: HashMap::new(),
            resolved: HashMap::new(),
            silences: BTreeMap::new(),
            proposals: BTreeMap::new(),
            next_id: 1,
            log,
            lifecycle,
            inventory,
            events,
            held: Vec::new(),
            notified: HashMap::new(),
            muted_broadcasts: HashMap::new(),
        };
        for r in records {
            match r {
                Record::Alert(a) => {
                    m.next_id = m.next_id.max(a.id + 1);
                    m.alerts.insert(a.id, a);
                }
                Record::Drop { id } => {
                    m.alerts.remove(&id);
                }
                Record::Silence(s) => {
                    m.next_id = m.next_id.max(s.id + 1);
                    m.silences.insert(s.id, s);
                }
                Record::Proposal(p) => {
                    m.next_id = m.next_id.max(p.id + 1);
                    m.proposals.insert(p.id, p);
                }
            }
        }
        for a in m.alerts.values() {
            if a.state.is_open() {
                m.open.insert(a.fingerprint.clone(), a.id);
                // Restored firing alerts were notified before the restart, unless muted.
                m.notified.insert(a.id, a.state != AlertState::Pending && a.silenced_by.is_none());
            } else {
                m.resolved.insert(a.fingerprint.clone(), a.id);
            }
        }
        tracing::info!(
            message = "Alert log restored.",
            alerts = m.alerts.len(),
            open = m.open.len(),
            silences = m.silences.len()
        );
        Ok(m)
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn save_alert(&mut self, id: u64) -> Result<(), LogError> {
        if let Some(a) = self.alerts.get(&id) {
            self.log.append(&Record::Alert(a.clone()))?;
        }
        Ok(())
    }

    /// Holds `e` until the next [`Manager::sync`] has made its change durable.
    fn emit(&mut self, e: AlertEvent) {
        if self.held.len() >= MAX_HELD {
            // The log has not synced for a long while (a failing disk): the oldest events
            // go, and say so; the alerts themselves stay in memory and in the API.
            tracing::warn!(
                message = "Alert events held too long for a log sync; the oldest is dropped.",
                held = self.held.len()
            );
            self.held.remove(0);
        }
        self.held.push(e);
    }

    fn silence_for(&self, a: &Alert, now: Timestamp) -> Option<u64> {
        self.silences.values().find(|s| s.mutes(a, now)).map(|s| s.id)
    }

    /// Applies evaluator signals at ingest time `now`.
    pub fn apply(&mut self, signals: Vec<Signal>, now: Timestamp) -> Result<(), LogError> {
        for s in signals {
            self.signal(s, now)?;
        }
        Ok(())
    }

    fn signal(&mut self, s: Signal, now: Timestamp) -> Result<(), LogError> {
        let fp = fingerprint(&s.rule.id, &s.entity);
        let at = Timestamp(s.at.min(now.0.max(s.at)));
        match s.cond {
            Cond::Clear => {
                let Some(&id) = self.open.get(&fp) else { return Ok(()) };
                let Some(a) = self.alerts.get_mut(&id) else { return Ok(()) };
                if a.state == AlertState::Pending {
                    // Never fired: not history.
                    self.alerts.remove(&id);
                    self.open.remove(&fp);
                    self.notified.remove(&id);
                    self.log.append(&Record::Drop { id })?;
                } else if a.clearing_since.is_none() {
                    a.clearing_since = Some(if s.at == i64::MAX { now } else { at });
                    a.updated_at = now;
                    self.save_alert(id)?;
                }
            }
            Cond::Pending { since } | Cond::Firing { since } => {
                let firing = matches!(s.cond, Cond::Firing { .. });
                let id = match self.open.get(&fp) {
                    Some(&id) => id,
                    None => self.create(&s, &fp, Timestamp(since), now),
                };
                let Some(a) = self.alerts.get_mut(&id) else { return Ok(()) };
                if a.clearing_since.take().is_some() {
                    a.flaps += 1;
                }
                a.value = s.value.or(a.value);
                a.summary = s.summary.clone();
                a.updated_at = now;
                let fire = firing && a.state == AlertState::Pending;
                if fire {
                    a.state = AlertState::Firing;
                    a.fired_at = Some(at);
                }
                self.save_alert(id)?;
                if fire {
                    self.fire(id, s.rule.broadcast.clone(), now)?;
                }
            }
        }
        Ok(())
    }

    fn create(&mut self, s: &Signal, fp: &str, since: Timestamp, now: Timestamp) -> u64 {
        // A return soon after resolving is the same alert, flapping.
        if let Some(&old) = self.resolved.get(fp)
            && let Some(a) = self.alerts.get_mut(&old)
            && a.resolved_at.is_some_and(|r| now.0 - r.0 <= self.lifecycle.reopen_within_ms)
        {
            a.state = AlertState::Pending;
            a.resolved_at = None;
            a.ack = None;
            a.flaps += 1;
            self.resolved.remove(fp);
            self.open.insert(fp.to_string(), old);
            self.notified.insert(old, false);
            return old;
        }
        let id = self.id();
        let alert = Alert {
            id,
            fingerprint: fp.to_string(),
            rule: s.rule.id.clone(),
            severity: s.rule.severity,
            state: AlertState::Pending,
            entity: s.entity.clone(),
            tenant: s.tenant.clone(),
            device: s.device.clone(),
            site: s.site.clone(),
            gateway: s.gateway.clone(),
            district: s.district.clone(),
            started_at: since,
            fired_at: None,
            resolved_at: None,
            value: s.value,
            summary: s.summary.clone(),
            ack: None,
            silenced_by: None,
            flaps: 0,
            clearing_since: None,
            updated_at: now,
        };
        self.alerts.insert(id, alert);
        self.open.insert(fp.to_string(), id);
        self.notified.insert(id, false);
        id
    }

    /// Notifies a firing alert unless a silence mutes it (it is notified when the silence
    /// ends, if it still fires), and proposes its broadcast.
    fn fire(
        &mut self,
        id: u64,
        broadcast: Option<crate::rules::config::BroadcastSpec>,
        now: Timestamp,
    ) -> Result<(), LogError> {
        let Some(a) = self.alerts.get(&id) else { return Ok(()) };
        let silenced = self.silence_for(a, now);
        if let Some(a) = self.alerts.get_mut(&id)
            && a.silenced_by != silenced
        {
            a.silenced_by = silenced;
        }
        if silenced.is_some() {
            if let Some(b) = broadcast {
                self.muted_broadcasts.insert(id, b);
            }
            self.save_alert(id)?;
            return Ok(());
        }
        let Some(a) = self.alerts.get(&id).cloned() else { return Ok(()) };
        tracing::info!(message = "Alert firing.", id, rule = %a.rule, entity = %a.entity.id(), severity = %a.severity, summary = %a.summary);
        self.notified.insert(id, true);
        self.emit(AlertEvent::Firing { alert: a.clone() });
        if let Some(b) = broadcast
            && !self.proposals.values().any(|p| p.alert == id && p.state == ProposalState::Proposed)
        {
            let pid = self.id();
            let p = ProposedBroadcast {
                id: pid,
                alert: id,
                tenant: a.tenant.clone(),
                villages: self.villages(&a),
                text: crate::rules::eval::render(&b.text, None, &a.entity, a.value).replace("{summary}", &a.summary),
                level: b.level,
                state: ProposalState::Proposed,
                created_at: now,
                approved_by: None,
                approved_at: None,
            };
            self.log.append(&Record::Proposal(p.clone()))?;
            self.proposals.insert(pid, p.clone());
            self.emit(AlertEvent::BroadcastProposed { proposal: p });
        }
        Ok(())
    }

    /// The villages an alert affects: every village of its supply district, or the
    /// village of its site.
    fn villages(&self, a: &Alert) -> Vec<String> {
        let sites = self.inventory.sites();
        let mut v: Vec<String> = match &a.district {
            Some(d) => {
                sites.iter().filter(|s| s.district.as_ref() == Some(d)).filter_map(|s| s.village.clone()).collect()
            }
            None => Vec::new(),
        };
        if v.is_empty()
            && let Some(site) = a.site.as_ref().and_then(|id| sites.iter().find(|s| &s.id == id))
            && let Some(village) = &site.village
        {
            v.push(village.clone());
        }
        v.sort();
        v.dedup();
        v
    }

    /// Time passes: damped resolutions complete, silences start and end.
    pub fn tick(&mut self, now: Timestamp) -> Result<(), LogError> {
        let due: Vec<u64> = self
            .open
            .values()
            .copied()
            .filter(|id| {
                self.alerts
                    .get(id)
                    .and_then(|a| a.clearing_since)
                    .is_some_and(|c| now.0 - c.0 >= self.lifecycle.resolve_after_ms)
            })
            .collect();
        for id in due {
            self.resolve(id, now)?;
        }
        // Silences that began or ended change what is muted; alerts that fired while
        // muted are notified once their silence is over.
        let open: Vec<u64> = self.open.values().copied().collect();
        for id in open {
            let Some(a) = self.alerts.get(&id) else { continue };
            if a.state == AlertState::Pending {
                continue;
            }
            let s = self.silence_for(a, now);
            if s != a.silenced_by {
                if let Some(a) = self.alerts.get_mut(&id) {
                    a.silenced_by = s;
                    a.updated_at = now;
                }
                self.save_alert(id)?;
            }
            let firing = self.alerts.get(&id).is_some_and(|a| a.state == AlertState::Firing);
            if s.is_none() && firing && !self.notified.get(&id).copied().unwrap_or(true) {
                let b = self.muted_broadcasts.remove(&id);
                self.fire(id, b, now)?;
            }
        }
        if self.log.lines() > 10_000 + 4 * (self.alerts.len() + self.silences.len() + self.proposals.len()) as u64 {
            self.compact()?;
        }
        Ok(())
    }

    fn resolve(&mut self, id: u64, now: Timestamp) -> Result<(), LogError> {
        let Some(a) = self.alerts.get_mut(&id) else { return Ok(()) };
        a.state = AlertState::Resolved;
        a.resolved_at = a.clearing_since.take().or(Some(now));
        a.updated_at = now;
        let a = a.clone();
        self.open.remove(&a.fingerprint);
        self.resolved.insert(a.fingerprint.clone(), id);
        self.save_alert(id)?;
        let was_notified = self.notified.remove(&id).unwrap_or(false);
        self.muted_broadcasts.remove(&id);
        let withdrawn: Vec<u64> = self
            .proposals
            .values()
            .filter(|p| p.alert == id && p.state == ProposalState::Proposed)
            .map(|p| p.id)
            .collect();
        for pid in withdrawn {
            if let Some(p) = self.proposals.get_mut(&pid) {
                p.state = ProposalState::Withdrawn;
                let p = p.clone();
                self.log.append(&Record::Proposal(p))?;
            }
        }
        tracing::info!(message = "Alert resolved.", id, rule = %a.rule, entity = %a.entity.id());
        if was_notified {
            self.emit(AlertEvent::Resolved { alert: a });
        }
        self.trim_history();
        Ok(())
    }

    fn trim_history(&mut self) {
        let resolved = self.alerts.len() - self.open.len();
        if resolved <= self.lifecycle.history_limit {
            return;
        }
        let drop: Vec<u64> = self
            .alerts
            .values()
            .filter(|a| !a.state.is_open())
            .take(resolved - self.lifecycle.history_limit)
            .map(|a| a.id)
            .collect();
        for id in drop {
            if let Some(a) = self.alerts.remove(&id)
                && self.resolved.get(&a.fingerprint) == Some(&id)
            {
                self.resolved.remove(&a.fingerprint);
            }
        }
    }

    fn compact(&mut self) -> Result<(), LogError> {
        let live: Vec<Record> = self
            .alerts
            .values()
            .cloned()
            .map(Record::Alert)
            .chain(self.silences.values().cloned().map(Record::Silence))
            .chain(self.proposals.values().cloned().map(Record::Proposal))
            .collect();
        self.log.compact(live.into_iter())
    }

    /// Makes every change so far durable, then sends the events of those changes to
    /// notifiers and subscribers (nothing is announced before it is on disk).
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.log.sync()?;
        for e in self.held.drain(..) {
            let _ = self.events.send(e);
        }
        Ok(())
    }

    /// Alerts, newest first, that `keep` lets through.
    pub fn alerts(&self, keep: impl Fn(&Alert) -> bool, limit: usize) -> Vec<Alert> {
        self.alerts.values().rev().filter(|a| keep(a)).take(limit).cloned().collect()
    }

    /// One alert.
    pub fn alert(&self, id: u64) -> Option<&Alert> {
        self.alerts.get(&id)
    }

    /// Open alerts by severity (firing and acknowledged; not pending), for the gauge.
    pub fn firing_by_severity(&self) -> [i64; 3] {
        let mut n = [0i64; 3];
        for id in self.open.values() {
            if let Some(a) = self.alerts.get(id)
                && matches!(a.state, AlertState::Firing | AlertState::Acknowledged)
            {
                n[a.severity as usize] += 1;
            }
        }
        n
    }

    /// An operator takes an alert.
    pub fn ack(&mut self, id: u64, by: &str, note: String, now: Timestamp) -> Result<Alert, ManagerError> {
        let a = self.alerts.get_mut(&id).ok_or_else(|| ManagerError::NotFound(format!("no alert {id}")))?;
        match a.state {
            AlertState::Firing | AlertState::Acknowledged => {}
            AlertState::Pending => return Err(ManagerError::Invalid(format!("alert {id} is pending, not firing yet"))),
            AlertState::Resolved => return Err(ManagerError::Invalid(format!("alert {id} is resolved already"))),
        }
        a.state = AlertState::Acknowledged;
        a.ack = Some(Ack { by: by.to_string(), at: now, note });
        a.updated_at = now;
        let a = a.clone();
        self.save_alert(id)?;
        self.emit(AlertEvent::Acknowledged { alert: a.clone() });
        self.sync()?;
        tracing::info!(message = "Alert acknowledged.", id, by);
        Ok(a)
    }

    /// Adds a silence or maintenance window.
    pub fn silence(&mut self, s: NewSilence, now: Timestamp) -> Result<Silence, ManagerError> {
        if s.matchers.is_empty() {
            return Err(ManagerError::Invalid("a silence needs at least one matcher".into()));
        }
        let starts_at = s.starts_at.unwrap_or(now);
        if s.ends_at <= starts_at || s.ends_at <= now {
            return Err(ManagerError::Invalid("ends_at must be after starts_at and in the future".into()));
        }
        if s.reason.trim().is_empty() {
            return Err(ManagerError::Invalid("a silence needs a reason".into()));
        }
        let id = self.id();
        let silence = Silence {
            id,
            kind: s.kind,
            matchers: s.matchers,
            starts_at,
            ends_at: s.ends_at,
            reason: s.reason,
            created_by: s.created_by,
            tenant: s.tenant,
            created_at: now,
        };
        self.log.append(&Record::Silence(silence.clone()))?;
        self.silences.insert(id, silence.clone());
        self.tick(now)?;
        self.log.sync()?;
        tracing::info!(message = "Silence added.", id, by = %silence.created_by, reason = %silence.reason);
        Ok(silence)
    }

    /// Ends a silence now.
    pub fn expire_silence(
        &mut self,
        id: u64,
        tenant_ok: impl Fn(&str) -> bool,
        now: Timestamp,
    ) -> Result<Silence, ManagerError> {
        let s = self
            .silences
            .get_mut(&id)
            .filter(|s| tenant_ok(&s.tenant))
            .ok_or_else(|| ManagerError::NotFound(format!("no silence {id}")))?;
        if s.ends_at > now {
            s.ends_at = now;
        }
        let s = s.clone();
        self.log.append(&Record::Silence(s.clone()))?;
        self.tick(now)?;
        self.log.sync()?;
        Ok(s)
    }

    /// Silences, newest first.
    pub fn silences(&self, keep: impl Fn(&Silence) -> bool) -> Vec<Silence> {
        self.silences.values().rev().filter(|s| keep(s)).cloned().collect()
    }

    /// Proposed broadcasts, newest first.
    pub fn proposals(&self, keep: impl Fn(&ProposedBroadcast) -> bool) -> Vec<ProposedBroadcast> {
        self.proposals.values().rev().filter(|p| keep(p)).cloned().collect()
    }

    /// An operator approves a proposal; the broadcast dispatcher listens for the event.
    pub fn approve(
        &mut self,
        id: u64,
        by: &str,
        tenant_ok: impl Fn(&str) -> bool,
        now: Timestamp,
    ) -> Result<ProposedBroadcast, ManagerError> {
        let p = self
            .proposals
            .get_mut(&id)
            .filter(|p| tenant_ok(&p.tenant))
            .ok_or_else(|| ManagerError::NotFound(format!("no proposed broadcast {id}")))?;
        if p.state != ProposalState::Proposed {
            return Err(ManagerError::Invalid(format!("proposed broadcast {id} is {:?}, not proposed", p.state)));
        }
        p.state = ProposalState::Approved;
        p.approved_by = Some(by.to_string());
        p.approved_at = Some(now);
        let p = p.clone();
        self.log.append(&Record::Proposal(p.clone()))?;
        self.emit(AlertEvent::BroadcastApproved { proposal: p.clone() });
        self.sync()?;
        tracing::info!(message = "Proposed broadcast approved.", id, by, level = %p.level, villages = p.villages.len());
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::config::RuleSet;
    use conf::Source;

    fn rule() -> Arc<crate::rules::config::Rule> {
        let text = "[[rules]]\nid = \"r\"\nkind = \"thi\"\nseverity = \"warning\"\nsummary = \"hot\"\n\
                    broadcast = { level = \"yellow\", text = \"heat: {summary}\" }\n";
        let set = RuleSet::from_sources(&[Source::from_text("t.toml", text)]).unwrap();
        Arc::new(set.rules[0].clone())
    }

    fn sig(cond: Cond, at: i64) -> Signal {
        Signal {
            rule: rule(),
            entity: Entity::Device("barn".into()),
            tenant: "dairy".into(),
            device: Some("barn".into()),
            site: Some("farm".into()),
            gateway: Some("gw-farm".into()),
            district: None,
            cond,
            value: Some(81.0),
            at,
            summary: "hot".into(),
        }
    }

    fn manager(dir: &std::path::Path) -> (Manager, broadcast::Receiver<AlertEvent>) {
        let (tx, rx) = broadcast::channel(64);
        (Manager::open(dir, Lifecycle::default(), Arc::new(Inventory::default()), tx).unwrap(), rx)
    }

    fn events(rx: &mut broadcast::Receiver<AlertEvent>) -> Vec<&'static str> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(e.name());
        }
        out
    }

    #[test]
    fn a_repeating_condition_is_one_alert_and_flapping_is_damped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, mut rx) = manager(dir.path());
        let t = |s: i64| Timestamp(s * 1000);
        m.apply(vec![sig(Cond::Pending { since: 0 }, 0)], t(0)).unwrap();
        m.apply(vec![sig(Cond::Firing { since: 0 }, 60_000)], t(60)).unwrap();
        // clear, back within the damping time, clear again: still the same firing alert
        m.apply(vec![sig(Cond::Clear, 100_000)], t(100)).unwrap();
        m.tick(t(200)).unwrap();
        m.apply(vec![sig(Cond::Firing { since: 250_000 }, 250_000)], t(250)).unwrap();
        m.apply(vec![sig(Cond::Clear, 300_000)], t(300)).unwrap();
        m.tick(t(599)).unwrap();
        assert_eq!(m.alerts(|_| true, 10)[0].state, AlertState::Firing);
        m.tick(t(600)).unwrap();
        let all = m.alerts(|_| true, 10);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state, AlertState::Resolved);
        assert_eq!(all[0].flaps, 1);
        assert_eq!(all[0].resolved_at, Some(t(300)));
        assert!(events(&mut rx).is_empty(), "nothing is announced before the log is synced");
        m.sync().unwrap();
        assert_eq!(events(&mut rx), ["firing", "broadcast_proposed", "resolved"]);
        // back within the reopen window: the same alert again
        m.apply(vec![sig(Cond::Firing { since: 900_000 }, 900_000)], t(900)).unwrap();
        let all = m.alerts(|_| true, 10);
        assert_eq!((all.len(), all[0].state, all[0].flaps), (1, AlertState::Firing, 2));
    }

    #[test]
    fn a_pending_alert_that_never_fires_leaves_no_history() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, mut rx) = manager(dir.path());
        m.apply(vec![sig(Cond::Pending { since: 0 }, 0)], Timestamp(0)).unwrap();
        assert_eq!(m.alerts(|a| a.state == AlertState::Pending, 10).len(), 1);
        m.apply(vec![sig(Cond::Clear, 10)], Timestamp(10)).unwrap();
        assert!(m.alerts(|_| true, 10).is_empty());
        assert!(events(&mut rx).is_empty());
    }

    #[test]
    fn a_silence_mutes_the_notification_but_keeps_the_record_and_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut m, mut rx) = manager(dir.path());
            let s = NewSilence {
                kind: SilenceKind::Maintenance,
                matchers: Matchers { device: Some("barn".into()), ..Matchers::default() },
                starts_at: None,
                ends_at: Timestamp(1_000_000),
                reason: "fans serviced".into(),
                created_by: "op".into(),
                tenant: "dairy".into(),
            };
            m.silence(s, Timestamp(0)).unwrap();
            m.apply(vec![sig(Cond::Firing { since: 0 }, 10)], Timestamp(10)).unwrap();
            let a = &m.alerts(|_| true, 10)[0];
            assert_eq!((a.state, a.silenced_by.is_some()), (AlertState::Firing, true));
            m.sync().unwrap();
            assert!(events(&mut rx).is_empty(), "muted");
        }
        let (mut m, mut rx) = manager(dir.path());
        assert_eq!(m.silences(|_| true).len(), 1);
        let a = m.alerts(|_| true, 10)[0].clone();
        assert_eq!(a.state, AlertState::Firing);
        // The silence ends: the alert was never notified, so now it is (its proposal was
        // held in memory and did not survive the restart).
        m.tick(Timestamp(1_000_000)).unwrap();
        m.ack(a.id, "op", "on my way".into(), Timestamp(1_000_020)).unwrap();
        assert_eq!(events(&mut rx), ["firing", "acknowledged"]);
        assert_eq!(m.alerts(|_| true, 10)[0].ack.as_ref().map(|a| a.note.as_str()), Some("on my way"));
    }

    #[test]
    fn an_approved_proposal_emits_its_event_and_cannot_be_approved_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (mut m, mut rx) = manager(dir.path());
        m.apply(vec![sig(Cond::Firing { since: 0 }, 10)], Timestamp(10)).unwrap();
        let p = m.proposals(|_| true)[0].clone();
        assert_eq!((p.level.as_str(), p.text.as_str()), ("yellow", "heat: hot"));
        assert!(m.approve(p.id, "op", |t| t == "county", Timestamp(20)).is_err(), "another tenant's");
        m.approve(p.id, "op", |_| true, Timestamp(20)).unwrap();
        assert!(m.approve(p.id, "op", |_| true, Timestamp(21)).is_err());
        assert_eq!(events(&mut rx), ["firing", "broadcast_proposed", "broadcast_approved"]);
    }
}
