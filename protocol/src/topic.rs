//! The MQTT topic layout.
//!
//! ```text
//! vt/{tenant}/{gateway}/up/telemetry   gateway -> ingest   batches, JSON or binary (QoS 1)
//! vt/{tenant}/{gateway}/up/status      gateway -> all      retained status; the last will says offline
//! vt/{tenant}/{gateway}/up/ack         gateway -> ingest   command acks
//! vt/{tenant}/{gateway}/down/cmd       ingest -> gateway   signed commands
//! vt/{tenant}/{gateway}/down/config    ingest -> gateway   retained configuration
//! vt/{tenant}/{gateway}/down/delivery  ingest -> gateway   delivery acks: highest seq durable in the store
//! ```
//!
//! Tenant and gateway are in every topic so that a broker ACL can confine a gateway's
//! credentials to `vt/{tenant}/{gateway}/#`: it may publish under `up/` and subscribe under
//! `down/`, and nothing else. Ingest checks too: a batch must name the gateway of its
//! topic, so a gateway cannot publish as another even through a broker without ACLs.

use alloc::format;
use alloc::string::String;
use core::fmt;

use crate::id::{self, IdError};

/// First level of every topic.
pub const ROOT: &str = "vt";

/// Filter that ingest subscribes to for everything gateways send.
pub const UPLINK_FILTER: &str = "vt/+/+/up/#";

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Batches of readings (uplink).
    Telemetry,
    /// Retained gateway status (uplink).
    Status,
    /// Command acks (uplink).
    CommandAck,
    /// Signed commands (downlink).
    Command,
    /// Retained gateway configuration (downlink).
    Config,
    /// Ingest's delivery acks (downlink).
    Delivery,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 6] = [
        Channel::Telemetry,
        Channel::Status,
        Channel::CommandAck,
        Channel::Command,
        Channel::Config,
        Channel::Delivery,
    ];

    /// The last two topic levels of the channel.
    pub const fn suffix(self) -> &'static str {
        match self {
            Channel::Telemetry => "up/telemetry",
            Channel::Status => "up/status",
            Channel::CommandAck => "up/ack",
            Channel::Command => "down/cmd",
            Channel::Config => "down/config",
            Channel::Delivery => "down/delivery",
        }
    }

    /// True for what gateways publish.
    pub const fn is_uplink(self) -> bool {
        matches!(self, Channel::Telemetry | Channel::Status | Channel::CommandAck)
    }
}

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic<'a> {
    /// The tenant (county water bureau, dairy farm, ...).
    pub tenant: &'a str,
    /// The gateway the topic belongs to.
    pub gateway: &'a str,
    /// What it carries.
    pub channel: Channel,
}

/// Why a topic is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    /// It does not start with `vt/`.
    NotOurs,
    /// It has the wrong number of levels or an unknown channel.
    UnknownChannel,
    /// The tenant level is not a valid id.
    BadTenant(IdError),
    /// The gateway level is not a valid id.
    BadGateway(IdError),
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::NotOurs => write!(f, "topic does not start with '{ROOT}/'"),
            TopicError::UnknownChannel => f.write_str("topic is not vt/{tenant}/{gateway}/(up|down)/{channel}"),
            TopicError::BadTenant(e) => write!(f, "bad tenant in topic: {e}"),
            TopicError::BadGateway(e) => write!(f, "bad gateway in topic: {e}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TopicError {}

impl<'a> Topic<'a> {
    /// A topic; ids are checked when the topic is parsed, not here.
    pub const fn new(tenant: &'a str, gateway: &'a str, channel: Channel) -> Topic<'a> {
        Topic { tenant, gateway, channel }
    }

    /// Parses a topic string.
    pub fn parse(topic: &'a str) -> Result<Topic<'a>, TopicError> {
        let rest = topic.strip_prefix(ROOT).and_then(|t| t.strip_prefix('/')).ok_or(TopicError::NotOurs)?;
        let mut parts = rest.splitn(3, '/');
        let tenant = parts.next().unwrap_or("");
        let gateway = parts.next().unwrap_or("");
        let suffix = parts.next().unwrap_or("");
        let channel = Channel::ALL.into_iter().find(|c| c.suffix() == suffix).ok_or(TopicError::UnknownChannel)?;
        id::validate(tenant).map_err(TopicError::BadTenant)?;
        id::validate(gateway).map_err(TopicError::BadGateway)?;
        Ok(Topic { tenant, gateway, channel })
    }
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ROOT}/{}/{}/{}", self.tenant, self.gateway, self.channel.suffix())
    }
}

/// The topic string for one channel of one gateway.
pub fn topic(tenant: &str, gateway: &str, channel: Channel) -> String {
    format!("{ROOT}/{tenant}/{gateway}/{}", channel.suffix())
}

/// The filter a gateway subscribes to for its downlink.
pub fn downlink_filter(tenant: &str, gateway: &str) -> String {
    format!("{ROOT}/{tenant}/{gateway}/down/#")
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use super::*;

    #[test]
    fn every_channel_round_trips() {
        for c in Channel::ALL {
            let s = topic("county-1", "gw-dongcun", c);
            let t = Topic::parse(&s).unwrap();
            assert_eq!(t, Topic::new("county-1", "gw-dongcun", c));
            assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn foreign_and_malformed_topics_are_refused() {
        assert_eq!(Topic::parse("other/x/y/up/telemetry"), Err(TopicError::NotOurs));
        assert_eq!(Topic::parse("vt/t/g/up/unknown"), Err(TopicError::UnknownChannel));
        assert_eq!(Topic::parse("vt/t/g/extra/up/telemetry"), Err(TopicError::UnknownChannel));
        assert_eq!(Topic::parse("vt//g/up/telemetry"), Err(TopicError::BadTenant(IdError::Empty)));
    }

    #[test]
    fn the_uplink_filter_matches_every_uplink_channel() {
        assert_eq!(UPLINK_FILTER, "vt/+/+/up/#");
        for c in Channel::ALL.into_iter().filter(|c| c.is_uplink()) {
            assert!(c.suffix().starts_with("up/"));
        }
        assert_eq!(downlink_filter("t", "g"), "vt/t/g/down/#");
    }
}
