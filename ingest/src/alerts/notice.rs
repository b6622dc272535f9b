//! What notifiers deliver ([`Notice`]) and the message for people each notice becomes.
//! Its own module so that the notifiers and escalation both use it without importing
//! each other.
//!
//! A notice is an alert event as the manager emitted it, an escalation, or the outcome of
//! a finished broadcast. Machines (the signed webhook, MQTT) get its JSON; chat groups
//! get a [`Message`]: a title and one fact a line, in the notifier's language, from the
//! words of [`crate::alerts::text`].

use protocol::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use crate::alerts::config::Language;
use crate::alerts::manager::AlertEvent;
use crate::alerts::model::{Alert, Severity};
use crate::alerts::text::{self, Texts};

/// Something to tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// An alert event (firing, resolved, acknowledged, a broadcast proposed or approved).
    Event(AlertEvent),
    /// An alert nobody acknowledged in time, told to the route's next contact list.
    Escalated {
        /// The alert as it is now.
        alert: Alert,
        /// The route.
        route: String,
        /// The contact list's position, 1 for the first (so at least 2 here).
        level: usize,
        /// The contact list's name.
        contacts: String,
        /// How long it has been firing unacknowledged (ms).
        unacknowledged_ms: i64,
    },
    /// A broadcast finished.
    BroadcastFinished(BroadcastOutcome),
}

/// How a finished broadcast went, for the people who sent it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BroadcastOutcome {
    /// The broadcast's id.
    pub id: u64,
    /// Its tenant.
    pub tenant: String,
    /// `red`, `orange`, `yellow`, `blue`.
    pub level: String,
    /// `completed`, `cancelled` or `expired`.
    pub state: String,
    /// Speakers targeted.
    pub speakers: usize,
    /// Speakers that played it (their own signed word).
    pub played: usize,
    /// Speakers that did not, with their state and reason.
    pub failures: Vec<FailedDelivery>,
    /// Its text (TTS) or headline.
    pub text: Option<String>,
    /// Who issued it.
    pub created_by: String,
    /// Who approved it.
    pub approved_by: Option<String>,
    /// When it finished.
    pub finished_at: Timestamp,
}

/// A speaker that did not play a broadcast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedDelivery {
    /// The speaker.
    pub speaker: String,
    /// Its final state (`failed`, `expired`, `interrupted`, `cancelled`).
    pub state: String,
    /// Why, when known.
    pub reason: Option<String>,
}

impl BroadcastOutcome {
    /// From a broadcast as the broadcast API shows it (with deliveries).
    pub fn from_view(v: &Value, finished_at: Timestamp) -> Option<BroadcastOutcome> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let deliveries = v.get("deliveries").and_then(Value::as_array).cloned().unwrap_or_default();
        let state_of = |d: &Value| d.get("state").and_then(Value::as_str).unwrap_or("").to_string();
        Some(BroadcastOutcome {
            id: v.get("id")?.as_u64()?,
            tenant: s("tenant")?,
            level: s("level")?,
            state: s("state").unwrap_or_default(),
            speakers: deliveries.len(),
            played: deliveries.iter().filter(|d| state_of(d) == "played").count(),
            failures: deliveries
                .iter()
                .filter(|d| state_of(d) != "played")
                .map(|d| FailedDelivery {
                    speaker: d.get("speaker").and_then(Value::as_str).unwrap_or("").to_string(),
                    state: state_of(d),
                    reason: d.get("reason").and_then(Value::as_str).map(str::to_string),
                })
                .collect(),
            text: v.pointer("/content/text").and_then(Value::as_str).map(str::to_string).or_else(|| s("headline")),
            created_by: s("created_by").unwrap_or_default(),
            approved_by: s("approved_by"),
            finished_at,
        })
    }
}

impl Notice {
    /// The event's name (`X-VT-Event`, `{event}` of MQTT topics).
    pub fn name(&self) -> &'static str {
        match self {
            Notice::Event(e) => e.name(),
            Notice::Escalated { .. } => "escalated",
            Notice::BroadcastFinished(_) => "broadcast_finished",
        }
    }

    /// The tenant it belongs to.
    pub fn tenant(&self) -> &str {
        match self {
            Notice::Event(e) => e.tenant(),
            Notice::Escalated { alert, .. } => &alert.tenant,
            Notice::BroadcastFinished(o) => &o.tenant,
        }
    }

    /// The severity, for notices about an alert.
    pub fn severity(&self) -> Option<Severity> {
        match self {
            Notice::Event(e) => e.severity(),
            Notice::Escalated { alert, .. } => Some(alert.severity),
            Notice::BroadcastFinished(_) => None,
        }
    }

    /// The JSON machines get: an event exactly as before (`{"event": "firing", "alert":
    /// {..}}`), `{"event": "escalated", "alert": .., "route": .., "level": ..,
    /// "contacts": .., "unacknowledged_ms": ..}`, `{"event": "broadcast_finished",
    /// "broadcast": {..}}`.
    pub fn json(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            Notice::Event(e) => serde_json::to_vec(e),
            Notice::Escalated { alert, route, level, contacts, unacknowledged_ms } => serde_json::to_vec(&json!({
                "event": "escalated", "alert": alert, "route": route, "level": level,
                "contacts": contacts, "unacknowledged_ms": unacknowledged_ms,
            })),
            Notice::BroadcastFinished(o) => {
                serde_json::to_vec(&json!({ "event": "broadcast_finished", "broadcast": o }))
            }
        }
    }

    /// The message for people.
    pub fn message(&self, texts: &Texts, lang: Language) -> Message {
        let zh = lang == Language::Zh;
        let l = |zh_text: &str, en_text: &str| if zh { zh_text.to_string() } else { en_text.to_string() };
        match self {
            Notice::Event(AlertEvent::Firing { alert }) => {
                let sev = text::severity(alert.severity, lang);
                let title = if zh {
                    format!("【{sev}告警】{}", text::rule_name(&alert.rule, lang))
                } else {
                    format!("[{sev} alert] {}", text::rule_name(&alert.rule, lang))
                };
                alert_message(texts, alert, lang, title, vec![(l("时间", "At"), time(alert.fired_at, alert, lang))])
            }
            Notice::Event(AlertEvent::Resolved { alert }) => {
                let title = format!("{}{}", l("【已恢复】", "[Resolved] "), text::rule_name(&alert.rule, lang));
                let mut rows = vec![(l("恢复时间", "Resolved at"), time(alert.resolved_at, alert, lang))];
                if let (Some(f), Some(r)) = (alert.fired_at, alert.resolved_at) {
                    rows.push((l("持续", "Lasted"), text::duration(r.0 - f.0, lang)));
                }
                alert_message(texts, alert, lang, title, rows)
            }
            Notice::Event(AlertEvent::Acknowledged { alert }) => {
                let title = format!("{}{}", l("【已确认】", "[Acknowledged] "), text::rule_name(&alert.rule, lang));
                let mut rows = Vec::new();
                if let Some(ack) = &alert.ack {
                    rows.push((l("确认人", "By"), ack.by.clone()));
                    if !ack.note.is_empty() {
                        rows.push((l("备注", "Note"), ack.note.clone()));
                    }
                    rows.push((l("确认时间", "At"), text::time(ack.at, lang)));
                }
                alert_message(texts, alert, lang, title, rows)
            }
            Notice::Escalated { alert, level, contacts, unacknowledged_ms, .. } => {
                let waited = text::duration(*unacknowledged_ms, lang);
                let title = if zh {
                    format!("【告警升级·第{level}级】{}（{waited}未确认）", text::rule_name(&alert.rule, lang))
                } else {
                    format!(
                        "[Escalated, level {level}] {} (unacknowledged for {waited})",
                        text::rule_name(&alert.rule, lang)
                    )
                };
                let rows = vec![
                    (l("通知对象", "To"), contacts.clone()),
                    (l("告警时间", "Fired at"), time(alert.fired_at, alert, lang)),
                ];
                alert_message(texts, alert, lang, title, rows)
            }
            Notice::Event(AlertEvent::BroadcastProposed { proposal } | AlertEvent::BroadcastApproved { proposal }) => {
                let approved = matches!(self, Notice::Event(AlertEvent::BroadcastApproved { .. }));
                let title = match (approved, zh) {
                    (false, true) => format!("【建议广播】{}，请审批", text::level(&proposal.level, lang)),
                    (true, true) => format!("【广播已批准】{}", text::level(&proposal.level, lang)),
                    (false, false) => {
                        format!("[Broadcast proposed] {}: approve it", text::level(&proposal.level, lang))
                    }
                    (true, false) => format!("[Broadcast approved] {}", text::level(&proposal.level, lang)),
                };
                let mut rows = vec![
                    (l("村", "Villages"), proposal.villages.join(if zh { "、" } else { ", " })),
                    (l("内容", "Text"), proposal.text.clone()),
                    (l("告警编号", "Alert"), format!("#{}", proposal.alert)),
                ];
                if let Some(by) = &proposal.approved_by {
                    rows.push((l("批准人", "Approved by"), by.clone()));
                }
                Message { title, rows, lang, critical: false }
            }
            Notice::BroadcastFinished(o) => broadcast_message(o, lang),
        }
    }
}

fn time(t: Option<Timestamp>, a: &Alert, lang: Language) -> String {
    text::time(t.unwrap_or(a.updated_at), lang)
}

/// The facts of an alert as rows, after a title and before `extra`.
fn alert_message(texts: &Texts, a: &Alert, lang: Language, title: String, extra: Vec<(String, String)>) -> Message {
    let f = texts.facts(a);
    let zh = lang == Language::Zh;
    let l = |zh_text: &str, en_text: &str| if zh { zh_text.to_string() } else { en_text.to_string() };
    let mut rows = vec![(l("地点", "Where"), f.place(lang))];
    let rule = if zh {
        format!("{}（{}）", f.rule_name(lang), a.rule)
    } else {
        format!("{} ({})", f.rule_name(lang), a.rule)
    };
    rows.push((l("规则", "Rule"), rule));
    rows.push((l("级别", "Severity"), text::severity(a.severity, lang).to_string()));
    if let Some(v) = f.value(lang) {
        rows.push((l("数值", "Value"), v));
    }
    rows.extend(extra);
    if !zh {
        rows.push(("Summary".into(), a.summary.clone()));
    }
    rows.push((l("告警编号", "Alert"), format!("#{}", a.id)));
    Message { title, rows, lang, critical: a.severity == Severity::Critical }
}

/// Failed speakers listed by name in a message; the rest are counted.
const FAILURES_LISTED: usize = 10;

fn broadcast_message(o: &BroadcastOutcome, lang: Language) -> Message {
    let zh = lang == Language::Zh;
    let l = |zh_text: &str, en_text: &str| if zh { zh_text.to_string() } else { en_text.to_string() };
    let level = text::level(&o.level, lang);
    let title = if zh {
        format!("【广播结果】{level}广播 #{} 已结束：{}/{} 播放完成", o.id, o.played, o.speakers)
    } else {
        format!("[Broadcast outcome] {level} #{} finished: played {} of {}", o.id, o.played, o.speakers)
    };
    let mut rows = vec![(l("失败", "Failed"), o.failures.len().to_string())];
    if !o.failures.is_empty() {
        let mut listed: Vec<String> = o
            .failures
            .iter()
            .take(FAILURES_LISTED)
            .map(|f| match &f.reason {
                Some(r) => format!("{} ({}: {r})", f.speaker, f.state),
                None => format!("{} ({})", f.speaker, f.state),
            })
            .collect();
        if o.failures.len() > FAILURES_LISTED {
            let more = o.failures.len() - FAILURES_LISTED;
            listed.push(if zh { format!("等另外 {more} 只") } else { format!("and {more} more") });
        }
        rows.push((l("未播放", "Not played"), listed.join(if zh { "；" } else { "; " })));
    }
    if let Some(t) = &o.text {
        rows.push((l("内容", "Text"), t.clone()));
    }
    rows.push((l("发布人", "Issued by"), o.created_by.clone()));
    if let Some(a) = &o.approved_by {
        rows.push((l("审批人", "Approved by"), a.clone()));
    }
    rows.push((l("结束时间", "Finished at"), text::time(o.finished_at, lang)));
    Message { title, rows, lang, critical: !o.failures.is_empty() }
}

/// A message for people: a title and one fact a line.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The first line.
    pub title: String,
    /// Label and value, one a line.
    pub rows: Vec<(String, String)>,
    /// Its language (the label separator follows it).
    pub lang: Language,
    /// Whether it is urgent (a critical alert, a broadcast that did not play everywhere).
    pub critical: bool,
}

impl Message {
    fn separator(&self) -> &'static str {
        if self.lang == Language::Zh { "：" } else { ": " }
    }

    /// Plain text: the title, then `label：value` lines.
    pub fn text(&self) -> String {
        let sep = self.separator();
        let mut out = self.title.clone();
        for (k, v) in &self.rows {
            out.push('\n');
            out.push_str(&format!("{k}{sep}{v}"));
        }
        out
    }

    /// WeCom markdown: the title in bold (warning colour when critical), facts quoted.
    pub fn wecom_markdown(&self) -> String {
        let sep = self.separator();
        let title = if self.critical {
            format!("<font color=\"warning\">**{}**</font>", self.title)
        } else {
            format!("**{}**", self.title)
        };
        let mut out = title;
        for (k, v) in &self.rows {
            out.push_str(&format!("\n> {k}{sep}<font color=\"comment\">{v}</font>"));
        }
        out
    }

    /// DingTalk markdown: the title as a heading, facts as a list.
    pub fn dingtalk_markdown(&self) -> String {
        let sep = self.separator();
        let mut out = format!("#### {}\n", self.title);
        for (k, v) in &self.rows {
            out.push_str(&format!("\n- {k}{sep}{v}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::model::{AlertState, Entity};

    fn alert() -> Alert {
        Alert {
            id: 12,
            fingerprint: "chlorine-low-at-tap/device/wq-1".into(),
            rule: "chlorine-low-at-tap".into(),
            severity: Severity::Critical,
            state: AlertState::Firing,
            entity: Entity::Device("wq-1".into()),
            tenant: "county".into(),
            device: Some("wq-1".into()),
            site: None,
            gateway: None,
            district: None,
            started_at: Timestamp(1_796_277_900_000),
            fired_at: Some(Timestamp(1_796_277_900_000)),
            resolved_at: None,
            value: Some(0.02),
            summary: "Free chlorine in the network at wq-1 is 0.02 mg/L".into(),
            ack: None,
            silenced_by: None,
            flaps: 0,
            clearing_since: None,
            updated_at: Timestamp(1_796_277_900_000),
        }
    }

    #[test]
    fn a_firing_alert_reads_as_people_in_china_write_it() {
        let m = Notice::Event(AlertEvent::Firing { alert: alert() }).message(&Texts::default(), Language::Zh);
        assert_eq!(
            m.text(),
            "【严重告警】管网末梢余氯偏低\n地点：wq-1\n规则：管网末梢余氯偏低（chlorine-low-at-tap）\n级别：严重\n\
             数值：余氯 0.02 mg/L\n时间：2026年12月3日 14:05\n告警编号：#12"
        );
        let m = Notice::Event(AlertEvent::Firing { alert: alert() }).message(&Texts::default(), Language::En);
        assert!(m.text().starts_with("[critical alert] Chlorine low in network\nWhere: wq-1\n"), "{}", m.text());
    }

    #[test]
    fn a_broadcast_outcome_counts_what_played_and_lists_what_did_not() {
        let view = serde_json::json!({
            "id": 3, "tenant": "county", "level": "red", "state": "completed",
            "content": {"type": "tts", "text": "山洪预警，请立即转移"},
            "created_by": "li.wei", "approved_by": "wang.fang",
            "deliveries": [
                {"speaker": "dongcun-speaker-1", "state": "played"},
                {"speaker": "xicun-speaker-1", "state": "failed", "reason": "amplifier fault"},
            ],
        });
        let o = BroadcastOutcome::from_view(&view, Timestamp(1_796_277_900_000)).unwrap_or_else(|| panic!("{view}"));
        assert_eq!((o.speakers, o.played, o.failures.len()), (2, 1, 1));
        let text = Notice::BroadcastFinished(o).message(&Texts::default(), Language::Zh).text();
        assert!(text.starts_with("【广播结果】红色预警广播 #3 已结束：1/2 播放完成\n失败：1\n"), "{text}");
        assert!(text.contains("未播放：xicun-speaker-1 (failed: amplifier fault)"), "{text}");
        assert!(text.contains("审批人：wang.fang"), "{text}");
    }
}
