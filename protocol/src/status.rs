//! The gateway's retained status message.
//!
//! Published retained on `vt/{tenant}/{gateway}/up/status` when the gateway connects and
//! whenever a device's health changes; the MQTT last will publishes
//! [`GatewayStatus::offline`] there, so a gateway that loses power or its link is shown
//! offline by the broker itself.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::device::DeviceKind;
use crate::reading::Timestamp;

/// A gateway's view of itself and of the devices behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// The gateway id.
    pub gateway: String,
    /// False only in the last will, or when the gateway shuts down cleanly.
    pub online: bool,
    /// When the status was made (absent in the last will, which is prepared at connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<Timestamp>,
    /// Gateway software version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Devices behind the gateway: what they are and how they answer.
    #[serde(default)]
    pub devices: Vec<DeviceHealth>,
    /// What became of the last configuration received on the config topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigReport>,
}

/// The outcome of a configuration received on `vt/{tenant}/{gateway}/down/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReport {
    /// A hash of the configuration text (hex), so an operator can tell which one it was.
    pub digest: String,
    /// True if it runs now; false if it was refused and the previous one keeps running.
    pub applied: bool,
    /// Every problem, as `file:line:column: reason`, when refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// When it was received.
    pub ts: Timestamp,
}

/// One device as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceHealth {
    /// The device id.
    pub id: String,
    /// What it is.
    pub kind: DeviceKind,
    /// The device profile (model) it is read with.
    pub model: String,
    /// Whether its last poll succeeded.
    pub online: bool,
    /// Share of successful polls in the recent window, 0..=1.
    pub success_ratio: f64,
    /// Response time of the last successful poll, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_ms: Option<f64>,
    /// The last error, named (for example "timeout" or "Modbus exception IllegalDataAddress").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl GatewayStatus {
    /// The status a gateway leaves as its last will.
    pub fn offline(gateway: &str) -> GatewayStatus {
        GatewayStatus {
            gateway: gateway.into(),
            online: false,
            ts: None,
            version: String::new(),
            devices: Vec::new(),
            config: None,
        }
    }
}
