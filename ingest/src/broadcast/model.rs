//! The broadcast model: what a broadcast is, where each speaker's delivery stands, and how
//! both map onto the feedback codes of China's emergency broadcast standards.
//!
//! Invariants:
//! - A delivery's state is a [`DeliveryState`], never a string; [`DeliveryState::feedback`]
//!   is the one place that maps it to the GD/J 082 / GY/T 384 feedback code the county
//!   platform reports upward (0 unprocessed, 1 waiting, 2 playing, 3 succeeded, 4 failed,
//!   5 cancelled).
//! - Final states ([`DeliveryState::is_final`]) do not change, except that the speaker's
//!   own word that it plays or played overrides a `failed` or `expired` that ingest
//!   concluded from silence: the speaker is the proof.
//! - Levels are `protocol::command::Level` (1 red is the highest), the same type the
//!   speaker firmware pre-empts by.

use std::collections::BTreeMap;

use protocol::Timestamp;
use protocol::command::Level;
use serde::{Deserialize, Serialize};

use crate::time::rfc3339;

/// A broadcast id, unique per ingest (also the `broadcast` of every `Play` command).
pub type BroadcastId = u64;

/// The warning level as the API spells it.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Red => "red",
        Level::Orange => "orange",
        Level::Yellow => "yellow",
        Level::Blue => "blue",
    }
}

/// Parses `red`, `orange`, `yellow`, `blue` or the standard's number `1`-`4`.
pub fn parse_level(text: &str) -> Option<Level> {
    match text.trim().to_ascii_lowercase().as_str() {
        "red" | "1" => Some(Level::Red),
        "orange" | "2" => Some(Level::Orange),
        "yellow" | "3" => Some(Level::Yellow),
        "blue" | "4" => Some(Level::Blue),
        _ => None,
    }
}

/// What the speakers play, and its checksum parser: the one content type, from the API
/// through the audit log to the signed command (its JSON is this API's, see
/// [`protocol::command::Content`]).
pub use protocol::command::{Content, parse_sha256};

/// Where a broadcast goes, as asked. Resolved to speakers when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Target {
    /// Every speaker of the tenant.
    All,
    /// A water-supply district or other area of the inventory (`district-1`).
    Area(String),
    /// A village (site id `dongcun`).
    Village(String),
    /// A named speaker group from the broadcast configuration.
    Group(String),
    /// One speaker.
    Speaker(String),
}

impl Target {
    /// How the API and CAP geocodes spell it: `all`, `area:x`, `village:x`, `group:x`,
    /// `speaker:x`.
    pub fn spelled(&self) -> String {
        match self {
            Target::All => "all".into(),
            Target::Area(x) => format!("area:{x}"),
            Target::Village(x) => format!("village:{x}"),
            Target::Group(x) => format!("group:{x}"),
            Target::Speaker(x) => format!("speaker:{x}"),
        }
    }
}

/// Where a broadcast stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastState {
    /// Red or orange (by default): waits for a second operator's approval; nothing sent.
    PendingApproval,
    /// Released: the dispatcher delivers it.
    Active,
    /// Every delivery reached a final state.
    Completed,
    /// An operator cancelled it; stops went out to every speaker that had it.
    Cancelled,
    /// It expired before it was approved.
    Expired,
    /// A second operator refused to release it (with a reason); nothing was sent.
    Rejected,
}

impl BroadcastState {
    /// True once nothing more will be sent for it.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            BroadcastState::Completed | BroadcastState::Cancelled | BroadcastState::Expired | BroadcastState::Rejected
        )
    }
}

/// One speaker's delivery, from the speaker's own acks.
///
/// ```text
/// pending --approved--> queued --command published--> sent --speaker verified it--> delivered
///   delivered --starts--> playing --all repeats--> played
///   playing --higher level--> preempted --resumes--> playing
///   sent --no ack / gateway could not reach the speaker--> queued (retry with backoff)
///   any not final --speaker refused (forged, tampered, expired, replayed)--> failed
///   any not final --amplifier fault, queue full--> failed
///   playing/preempted --stopped, fault--> interrupted
///   pending/queued/sent/delivered --expiry--> expired
///   any not final --cancel--> cancelled (a stop goes to the speaker if it may have it)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not released yet: the broadcast waits for approval.
    Pending,
    /// Released; waits for its (next) attempt: first send, or a retry after the gateway
    /// could not reach the speaker (offline).
    Queued,
    /// The signed command is published to the speaker's gateway; no word from the speaker yet.
    Sent,
    /// The speaker verified and accepted the command; it waits to play (its start time,
    /// or a playback of the same or a higher level).
    Delivered,
    /// The speaker plays it.
    Playing,
    /// A higher level took over the speaker; it resumes when that one ends.
    Preempted,
    /// Every repeat played: the proof.
    Played,
    /// Cut short for good on the speaker (a fault, or expired while pre-empted).
    Interrupted,
    /// Refused by the gateway or the speaker (the reason says which check), or the speaker
    /// could not play it (amplifier fault).
    Failed,
    /// Not played before the broadcast's expiry.
    Expired,
    /// Cancelled by an operator.
    Cancelled,
}

/// Every delivery state, in order.
pub const DELIVERY_STATES: [DeliveryState; 11] = [
    DeliveryState::Pending,
    DeliveryState::Queued,
    DeliveryState::Sent,
    DeliveryState::Delivered,
    DeliveryState::Playing,
    DeliveryState::Preempted,
    DeliveryState::Played,
    DeliveryState::Interrupted,
    DeliveryState::Failed,
    DeliveryState::Expired,
    DeliveryState::Cancelled,
];

/// Delivery feedback codes of GD/J 082-2018 / GY/T 384-2023 (DOMAIN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Feedback {
    /// 0: not processed yet.
    Unprocessed = 0,
    /// 1: waiting to broadcast.
    Waiting = 1,
    /// 2: broadcasting.
    Playing = 2,
    /// 3: broadcast succeeded.
    Succeeded = 3,
    /// 4: broadcast failed.
    Failed = 4,
    /// 5: cancelled.
    Cancelled = 5,
}

impl DeliveryState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Queued => "queued",
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Playing => "playing",
            DeliveryState::Preempted => "preempted",
            DeliveryState::Played => "played",
            DeliveryState::Interrupted => "interrupted",
            DeliveryState::Failed => "failed",
            DeliveryState::Expired => "expired",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    /// True once the delivery is over.
    pub const fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Played
                | DeliveryState::Interrupted
                | DeliveryState::Failed
                | DeliveryState::Expired
                | DeliveryState::Cancelled
        )
    }

    /// True if the speaker may hold the broadcast (so a cancel must send it a stop).
    pub const fn speaker_may_have_it(self) -> bool {
        matches!(
            self,
            DeliveryState::Sent | DeliveryState::Delivered | DeliveryState::Playing | DeliveryState::Preempted
        )
    }

    /// The feedback code reported upward.
    ///
    /// | state | code |
    /// |---|---|
    /// | pending | 0 unprocessed |
    /// | queued, sent, delivered, preempted | 1 waiting |
    /// | playing | 2 playing |
    /// | played | 3 succeeded |
    /// | interrupted, failed, expired | 4 failed |
    /// | cancelled | 5 cancelled |
    pub const fn feedback(self) -> Feedback {
        match self {
            DeliveryState::Pending => Feedback::Unprocessed,
            DeliveryState::Queued | DeliveryState::Sent | DeliveryState::Delivered | DeliveryState::Preempted => {
                Feedback::Waiting
            }
            DeliveryState::Playing => Feedback::Playing,
            DeliveryState::Played => Feedback::Succeeded,
            DeliveryState::Interrupted | DeliveryState::Failed | DeliveryState::Expired => Feedback::Failed,
            DeliveryState::Cancelled => Feedback::Cancelled,
        }
    }

    /// How far along the normal path the state is, so a late ack cannot move a delivery
    /// backwards (a `delivered` arriving after `playing`).
    pub(crate) const fn progress(self) -> u8 {
        match self {
            DeliveryState::Pending => 0,
            DeliveryState::Queued => 1,
            DeliveryState::Sent => 2,
            DeliveryState::Delivered => 3,
            DeliveryState::Playing | DeliveryState::Preempted => 4,
            _ => 5,
        }
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CAP 1.2 fields a broadcast keeps so that its export says what its source said.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CapInfo {
    /// `alert/identifier` of the imported alert.
    pub identifier: String,
    /// `alert/sender`.
    pub sender: String,
    /// `alert/sent`, as written.
    pub sent: String,
    /// `alert/status`: Actual, Exercise, System, Test.
    pub status: String,
    /// `alert/msgType`: Alert or Update.
    pub msg_type: String,
    /// `alert/scope`: Public, Restricted, Private.
    pub scope: String,
    /// `alert/references`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    /// `info/language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `info/urgency`.
    pub urgency: String,
    /// `info/severity`.
    pub severity: String,
    /// `info/certainty`.
    pub certainty: String,
    /// `info/senderName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    /// `info/area` blocks, kept whole for the export.
    #[serde(default)]
    pub areas: Vec<CapArea>,
}

/// One CAP `area`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CapArea {
    /// `areaDesc`.
    pub desc: String,
    /// `polygon`s, as written (`lat,lon lat,lon ...`).
    #[serde(default)]
    pub polygons: Vec<String>,
    /// `circle`s, as written (`lat,lon radius-km`).
    #[serde(default)]
    pub circles: Vec<String>,
    /// `geocode` pairs `(valueName, value)`.
    #[serde(default)]
    pub geocodes: Vec<(String, String)>,
}

/// A broadcast as created: everything the speakers and the export need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    /// Its id.
    pub id: BroadcastId,
    /// The tenant whose speakers it goes to.
    pub tenant: String,
    /// Warning level.
    pub level: Level,
    /// What to play.
    pub content: Content,
    /// Where, as asked.
    pub targets: Vec<Target>,
    /// Plays per speaker (1-10).
    pub repeat: u8,
    /// Volume in percent, or the speakers' own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<u8>,
    /// Not before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<Timestamp>,
    /// Nothing starts after this time.
    pub expires_at: Timestamp,
    /// CAP `event` (what happens: "山洪 Flash flood").
    pub event: String,
    /// CAP `category` (Geo, Met, Safety, ... Other).
    pub category: String,
    /// CAP `headline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headline: Option<String>,
    /// CAP `description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// CAP `instruction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    /// The CAP alert it was imported from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<CapInfo>,
    /// Who created it (the token's holder).
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
}

/// One speaker's delivery of one broadcast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The speaker.
    pub speaker: String,
    /// Its gateway.
    pub gateway: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Commands sent for it so far (retries included).
    pub attempts: u32,
    /// Every `Play` command id sent for it, oldest first (acks of any count).
    pub commands: Vec<u64>,
    /// The last reason given (a refusal's check, a gateway error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the state last changed.
    pub updated_at: Timestamp,
    /// When each state was first reached.
    pub reached: BTreeMap<DeliveryState, Timestamp>,
    /// The stop sent on cancel, and whether the speaker confirmed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
}

/// A stop sent to a speaker when its broadcast was cancelled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    /// Stop command ids sent (retries included).
    pub commands: Vec<u64>,
    /// True once the speaker (or its gateway) confirmed it.
    pub confirmed: bool,
}

impl Delivery {
    /// A delivery not yet released.
    pub fn new(speaker: String, gateway: String, state: DeliveryState, now: Timestamp) -> Delivery {
        Delivery {
            speaker,
            gateway,
            state,
            attempts: 0,
            commands: Vec::new(),
            reason: None,
            updated_at: now,
            reached: BTreeMap::from([(state, now)]),
            stop: None,
        }
    }

    /// Moves to `state`; false (and no change) if the move is not allowed.
    pub fn advance(&mut self, state: DeliveryState, reason: Option<String>, now: Timestamp) -> bool {
        if !allowed(self.state, state) {
            return false;
        }
        self.state = state;
        self.reason = reason;
        self.updated_at = now;
        self.reached.entry(state).or_insert(now);
        true
    }
}

/// Whether a delivery may move from `from` to `to`.
pub(crate) fn allowed(from: DeliveryState, to: DeliveryState) -> bool {
    use DeliveryState as D;
    match (from, to) {
        (a, b) if a == b => false,
        (D::Cancelled | D::Played | D::Interrupted, _) => false,
        // The speaker's own word wins over what ingest concluded from silence.
        (D::Failed | D::Expired, D::Playing | D::Played) => true,
        (D::Failed | D::Expired, _) => false,
        (D::Playing, D::Preempted) | (D::Preempted, D::Playing) => true,
        // A retry: the gateway could not reach the speaker.
        (D::Sent | D::Delivered, D::Queued) => true,
        (_, D::Pending) => false,
        (_, to) if to.is_final() => true,
        (from, to) => to.progress() > from.progress(),
    }
}

/// Deliveries per state, for `counts`.
pub fn counts<'a>(deliveries: impl Iterator<Item = &'a Delivery>) -> BTreeMap<&'static str, usize> {
    let mut out: BTreeMap<&'static str, usize> = DELIVERY_STATES.iter().map(|s| (s.as_str(), 0)).collect();
    for d in deliveries {
        *out.entry(d.state.as_str()).or_default() += 1;
    }
    out
}

/// A time for the API.
pub fn time(ts: Timestamp) -> String {
    rfc3339(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_delivery_state_maps_to_one_feedback_code() {
        let codes: Vec<u8> = DELIVERY_STATES.iter().map(|s| s.feedback() as u8).collect();
        assert_eq!(codes, [0, 1, 1, 1, 2, 1, 3, 4, 4, 4, 5]);
    }

    #[test]
    fn a_late_ack_does_not_move_a_delivery_backwards_but_the_speaker_overrides_silence() {
        let t = Timestamp(0);
        let mut d = Delivery::new("s".into(), "g".into(), DeliveryState::Queued, t);
        assert!(d.advance(DeliveryState::Sent, None, t));
        assert!(d.advance(DeliveryState::Playing, None, t));
        assert!(!d.advance(DeliveryState::Delivered, None, t), "delivered after playing is stale");
        assert!(d.advance(DeliveryState::Preempted, None, t));
        assert!(d.advance(DeliveryState::Playing, None, t));
        assert!(d.advance(DeliveryState::Played, None, t));
        assert!(!d.advance(DeliveryState::Failed, None, t), "played is final");
        let mut e = Delivery::new("s".into(), "g".into(), DeliveryState::Queued, t);
        assert!(e.advance(DeliveryState::Expired, None, t));
        assert!(e.advance(DeliveryState::Played, None, t), "the speaker's proof wins over a timeout");
        let mut c = Delivery::new("s".into(), "g".into(), DeliveryState::Sent, t);
        assert!(c.advance(DeliveryState::Cancelled, None, t));
        assert!(!c.advance(DeliveryState::Playing, None, t));
    }

    #[test]
    fn levels_and_checksums_parse() {
        assert_eq!(parse_level("Red"), Some(Level::Red));
        assert_eq!(parse_level("4"), Some(Level::Blue));
        assert_eq!(parse_level("purple"), None);
        assert!(parse_sha256(&"ab".repeat(32)).is_some());
        assert!(parse_sha256("abc").is_none());
        assert!(parse_sha256(&"zz".repeat(32)).is_none());
    }
}
