//! The writable points of each device model, from the gateway's shipped profiles
//! (`gateway/profiles/`, built into ingest by `build.rs`).
//!
//! Why ingest checks at all, when the gateway refuses a write to any other point: a
//! command is signed, audited and published before the gateway sees it, and its `point`
//! is free text of any length, so an unchecked point let one operator request make a
//! command larger than the broker's packet limit (issue 12). Ingest therefore accepts a
//! write only to a name the device's profile lists as writable, and says which names
//! those are.
//!
//! The same names, with their unit and range, are what the dashboard's control panel
//! offers (`GET /api/v1/controls`): a switch for a `bool` point of range 0..=1, a button for
//! a momentary one (range 1..=1, a reset), a number field for a set-point.
//!
//! Invariants: only `model` and `[[writable]]` `name`, `unit`, `min`, `max` are read here (the gateway's parser is
//! the authority on everything else and checks the same files in its own tests); a
//! profile that does not parse is left out (its devices take no write commands from the
//! API) and named in the log.

use std::collections::HashMap;

use serde::Deserialize;

/// The profiles shipped in `gateway/profiles/`: (file name, text).
static BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_profiles.rs"));

#[derive(Deserialize)]
struct ProfileNames {
    model: String,
    #[serde(default)]
    writable: Vec<WritableName>,
}

#[derive(Deserialize)]
struct WritableName {
    name: String,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
}

/// One writable point as a person is offered it: its name, unit and allowed range.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PointInfo {
    /// The name a write command uses.
    pub name: String,
    /// Its unit (`bool` for a coil).
    pub unit: String,
    /// Lowest value the gateway accepts (`None`: the profile sets none).
    pub min: Option<f64>,
    /// Highest value the gateway accepts.
    pub max: Option<f64>,
    /// How a person sets it: `switch` (bool, 0 or 1), `momentary` (bool, only 1: a reset),
    /// or `setpoint` (a number in its range).
    pub control: &'static str,
}

impl PointInfo {
    fn of(w: WritableName) -> PointInfo {
        let control = match (w.unit.as_str(), w.min, w.max) {
            ("bool", Some(lo), Some(hi)) if lo == hi => "momentary",
            ("bool", _, _) => "switch",
            _ => "setpoint",
        };
        PointInfo { name: w.name, unit: w.unit, min: w.min, max: w.max, control }
    }
}

/// Writable point names by device model.
#[derive(Debug, Clone, Default)]
pub struct WritablePoints {
    by_model: HashMap<String, Vec<String>>,
    info: HashMap<String, Vec<PointInfo>>,
}

impl WritablePoints {
    /// The writable points of the profiles built into ingest.
    pub fn builtin() -> WritablePoints {
        let mut by_model = HashMap::new();
        let mut info = HashMap::new();
        for (file, text) in BUILTIN {
            match toml::from_str::<ProfileNames>(text) {
                Ok(p) => {
                    by_model.insert(p.model.clone(), p.writable.iter().map(|w| w.name.clone()).collect());
                    info.insert(p.model, p.writable.into_iter().map(PointInfo::of).collect());
                }
                Err(error) => tracing::warn!(message = "Built-in profile not read.", file, %error),
            }
        }
        WritablePoints { by_model, info }
    }

    /// The writable points of `model` with unit, range and kind of control, in the
    /// profile's order; `None` if ingest knows no such model.
    pub fn info(&self, model: &str) -> Option<&[PointInfo]> {
        self.info.get(model).map(Vec::as_slice)
    }

    /// Every model with at least one writable point, with its points, by model name.
    pub fn models(&self) -> impl Iterator<Item = (&str, &[PointInfo])> {
        self.info.iter().filter(|(_, p)| !p.is_empty()).map(|(m, p)| (m.as_str(), p.as_slice()))
    }

    /// The writable point names of `model`, or `None` if ingest knows no such model.
    pub fn of(&self, model: &str) -> Option<&[String]> {
        self.by_model.get(model).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_is_read_with_its_writable_names() {
        let points = WritablePoints::builtin();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/profiles");
        let shipped = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(points.by_model.len(), shipped, "one model per file of {}", dir.display());
        let pump = points.of("vt-sim-pump-station").unwrap_or_default();
        assert!(pump.iter().any(|p| p == "level_start_setpoint") && pump.iter().any(|p| p == "pump_run"), "{pump:?}");
        assert_eq!(points.of("vt-sim-water-quality"), Some(&[][..]), "a model without writable points");
        assert_eq!(points.of("no-such-model"), None);
    }

    #[test]
    fn points_say_how_a_person_sets_them() {
        let points = WritablePoints::builtin();
        let pump = points.info("vt-sim-pump-station").unwrap_or_default();
        let control = |name: &str| pump.iter().find(|p| p.name == name).map(|p| p.control);
        assert_eq!(control("pump_run"), Some("switch"));
        assert_eq!(control("fault_reset"), Some("momentary"));
        assert_eq!(control("level_start_setpoint"), Some("setpoint"));
        let start = pump.iter().find(|p| p.name == "level_start_setpoint").unwrap();
        assert_eq!((start.unit.as_str(), start.min, start.max), ("m", Some(0.3), Some(3.6)));
        // Only models with something to write are offered.
        assert!(points.models().all(|(_, p)| !p.is_empty()));
        assert!(points.models().any(|(m, _)| m == "vt-sim-pump-station"));
        assert!(!points.models().any(|(m, _)| m == "vt-sim-water-quality"));
    }
}
