//! The kinds of device the system models.
//!
//! A kind says what a device is for (dashboards group by it, rules select by it); the
//! device profile says how to read one particular model of it.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a device is. The snake_case names are part of the HTTP API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A household or bulk water meter (totalised volume, flow).
    WaterMeter,
    /// A pump station with its storage tank.
    PumpStation,
    /// An online water-quality analyser (chlorine, turbidity, pH, conductivity).
    WaterQuality,
    /// A barn's temperature and humidity sensor.
    BarnClimate,
    /// One animal, as seen through its collar or bolus on a collar hub.
    CowCollar,
    /// A village loudspeaker terminal.
    Speaker,
    /// An edge gateway itself (its queue and link health).
    Gateway,
    /// A device first seen through the line-protocol endpoint.
    External,
}

impl DeviceKind {
    /// Every kind, in display order.
    pub const ALL: [DeviceKind; 8] = [
        DeviceKind::WaterMeter,
        DeviceKind::PumpStation,
        DeviceKind::WaterQuality,
        DeviceKind::BarnClimate,
        DeviceKind::CowCollar,
        DeviceKind::Speaker,
        DeviceKind::Gateway,
        DeviceKind::External,
    ];

    /// The API name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::WaterMeter => "water_meter",
            DeviceKind::PumpStation => "pump_station",
            DeviceKind::WaterQuality => "water_quality",
            DeviceKind::BarnClimate => "barn_climate",
            DeviceKind::CowCollar => "cow_collar",
            DeviceKind::Speaker => "speaker",
            DeviceKind::Gateway => "gateway",
            DeviceKind::External => "external",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text was not a device kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind;

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown device kind; expected one of water_meter, pump_station, water_quality, barn_climate, cow_collar, speaker, gateway, external")
    }
}

impl FromStr for DeviceKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<DeviceKind, UnknownKind> {
        DeviceKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or(UnknownKind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_their_api_names() {
        for k in DeviceKind::ALL {
            assert_eq!(k.as_str().parse::<DeviceKind>(), Ok(k));
            assert_eq!(serde_json::to_string(&k).unwrap(), alloc::format!("\"{}\"", k.as_str()));
        }
        assert_eq!("pump".parse::<DeviceKind>(), Err(UnknownKind));
    }
}
