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
//! Invariants: only `model` and `[[writable]] name` are read here (the gateway's parser is
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
}

/// Writable point names by device model.
#[derive(Debug, Clone, Default)]
pub struct WritablePoints {
    by_model: HashMap<String, Vec<String>>,
}

impl WritablePoints {
    /// The writable points of the profiles built into ingest.
    pub fn builtin() -> WritablePoints {
        let mut by_model = HashMap::new();
        for (file, text) in BUILTIN {
            match toml::from_str::<ProfileNames>(text) {
                Ok(p) => {
                    by_model.insert(p.model, p.writable.into_iter().map(|w| w.name).collect());
                }
                Err(error) => tracing::warn!(message = "Built-in profile not read.", file, %error),
            }
        }
        WritablePoints { by_model }
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
}
