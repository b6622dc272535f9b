//! Faults the simulator can inject and clear at run time, and the simulator's errors.
//!
//! A fault is injected on one device id and stays until [`crate::County::clear`] (an
//! estrus episode ends by itself after its 8-15 h). Names are part of the API of the
//! demo and of end-to-end tests: `pump_trip`, `leak`, `chlorine_dosing_failure`,
//! `stuck_sensor`, `fever`, `speaker_offline`, `estrus`, `heat_wave`, and
//! `gateway_offline` (injected on a gateway id).

use core::fmt;
use core::str::FromStr;

use firmware::modbus::{Exception, Table};
use protocol::DeviceKind;
use serde::{Deserialize, Serialize};

/// A fault of the simulated world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Pump station: the motor protection relay trips; the PLC latches the fault and the
    /// pump stops until the relay and the PLC are reset (clearing the fault does both, as
    /// the technician on site would).
    PumpTrip,
    /// Pump station: a burst main, extra outflow that no household meter sees. Water
    /// meter: a leak on the household side, continuous flow through that meter. A
    /// village's inlet meter: a burst in that village's network, downstream of the inlet
    /// (0.8 x the village's mean inflow), that its inlet sees and no household meter does.
    Leak,
    /// Pump station or its analyser: the dosing pump stops; the outlet residual collapses
    /// at once, the analyser downstream sees it after the transport delay.
    ChlorineDosingFailure,
    /// Any sensor device: its readings freeze (see `County::inject` for what freezes on
    /// each kind).
    StuckSensor,
    /// A cow: body temperature +1.0-1.5 °C sustained, rumination and activity drop, milk
    /// conductivity rises.
    Fever,
    /// A speaker: stops answering Modbus entirely.
    SpeakerOffline,
    /// A cow: activity 2.8-3.6 x her baseline for 8-15 h, then it ends by itself.
    Estrus,
    /// The barn: temperature and humidity rise into THI > 80.
    HeatWave,
    /// A gateway's cabinet loses power (injected on a gateway id, `gw-<site>`): nothing on
    /// its bus answers, and the gateway itself is down ([`crate::County::gateway_powered`]),
    /// so whoever plays the gateway publishes nothing and its last will says offline.
    GatewayOffline,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 9] = [
        Fault::PumpTrip,
        Fault::Leak,
        Fault::ChlorineDosingFailure,
        Fault::StuckSensor,
        Fault::Fever,
        Fault::SpeakerOffline,
        Fault::Estrus,
        Fault::HeatWave,
        Fault::GatewayOffline,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Fault::PumpTrip => "pump_trip",
            Fault::Leak => "leak",
            Fault::ChlorineDosingFailure => "chlorine_dosing_failure",
            Fault::StuckSensor => "stuck_sensor",
            Fault::Fever => "fever",
            Fault::SpeakerOffline => "speaker_offline",
            Fault::Estrus => "estrus",
            Fault::HeatWave => "heat_wave",
            Fault::GatewayOffline => "gateway_offline",
        }
    }

    /// The device kinds this fault can be injected on. A cow is a `cow_collar` device;
    /// the collar hub shares that kind but only takes `stuck_sensor`.
    pub const fn kinds(self) -> &'static [DeviceKind] {
        match self {
            Fault::PumpTrip => &[DeviceKind::PumpStation],
            Fault::Leak => &[DeviceKind::PumpStation, DeviceKind::WaterMeter],
            Fault::ChlorineDosingFailure => &[DeviceKind::PumpStation, DeviceKind::WaterQuality],
            Fault::StuckSensor => &[
                DeviceKind::WaterMeter,
                DeviceKind::PumpStation,
                DeviceKind::WaterQuality,
                DeviceKind::BarnClimate,
                DeviceKind::CowCollar,
            ],
            Fault::Fever | Fault::Estrus => &[DeviceKind::CowCollar],
            Fault::SpeakerOffline => &[DeviceKind::Speaker],
            Fault::HeatWave => &[DeviceKind::BarnClimate],
            Fault::GatewayOffline => &[DeviceKind::Gateway],
        }
    }

    /// Where the fault applies, for error messages.
    pub const fn applies_to(self) -> &'static str {
        match self {
            Fault::PumpTrip => "a pump station",
            Fault::Leak => {
                "a pump station (burst main), a water meter (household leak) or a village's inlet meter (burst in its network)"
            }
            Fault::ChlorineDosingFailure => "a pump station or its water-quality analyser",
            Fault::StuckSensor => {
                "a water meter, pump station, water-quality analyser, barn climate sensor, collar hub or cow"
            }
            Fault::Fever | Fault::Estrus => "a cow (`cow-<eartag>`)",
            Fault::SpeakerOffline => "a speaker",
            Fault::HeatWave => "a barn climate sensor",
            Fault::GatewayOffline => "a gateway (`gw-<site>`)",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not the name of a fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Unknown fault `{0}`; expected one of pump_trip, leak, chlorine_dosing_failure, stuck_sensor, fever, speaker_offline, estrus, heat_wave, gateway_offline."
)]
pub struct UnknownFault(pub String);

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Fault, UnknownFault> {
        Fault::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| UnknownFault(s.to_owned()))
    }
}

/// Why the simulator refused a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// No device (or cow) with that id.
    #[error("No device `{0}` in the simulated county.")]
    UnknownDevice(String),
    /// The fault cannot happen to that device.
    #[error("Fault `{fault}` does not apply to `{device}`, which is {what}; it applies to {}.", fault.applies_to())]
    NotApplicable {
        /// The device asked for.
        device: String,
        /// The fault asked for.
        fault: Fault,
        /// What the device is.
        what: &'static str,
    },
    /// The fault name is unknown.
    #[error(transparent)]
    UnknownFault(#[from] UnknownFault),
    /// A register asked for is not on the device's map.
    #[error("Register {table} {address} of `{device}` is not on its register map.")]
    Unmapped {
        /// The device.
        device: String,
        /// The table.
        table: Table,
        /// The first address outside the map.
        address: u32,
    },
    /// Nothing to pin.
    #[error("No words given to pin on `{0}`.")]
    EmptyPin(String),
    /// The device answered with a Modbus exception.
    #[error("Device `{device}` answered with {exception}.")]
    Modbus {
        /// The device.
        device: String,
        /// Its answer.
        exception: Exception,
    },
    /// The device does not answer (offline speaker): on the wire, a timeout.
    #[error("Device `{0}` does not answer (offline).")]
    Offline(String),
    /// A speaker operation named another kind of device.
    #[error("Device `{device}` is {what}, not a speaker.")]
    NotASpeaker {
        /// The device asked for.
        device: String,
        /// What it is.
        what: &'static str,
    },
    /// The command key is not a valid Ed25519 public key.
    #[error("The command key is not a valid Ed25519 public key.")]
    BadKey,
    /// A meter operation named another kind of device.
    #[error("Device `{device}` is {what}, not a household water meter.")]
    NotAMeter {
        /// The device asked for.
        device: String,
        /// What it is.
        what: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_from_and_display_as_their_snake_case_names() {
        for f in Fault::ALL {
            assert_eq!(f.to_string().parse::<Fault>(), Ok(f));
            assert_eq!(serde_json::to_string(&f).ok(), Some(format!("\"{f}\"")));
        }
        assert_eq!("pump_trip".parse::<Fault>(), Ok(Fault::PumpTrip));
    }

    #[test]
    fn an_unknown_fault_name_lists_the_known_ones() {
        let err = "meltdown".parse::<Fault>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("meltdown") && text.contains("heat_wave"), "{text}");
    }
}
