//! What county to simulate: sizes, seed, speed and layout.
//!
//! Two layouts: the small one ([`CountySpec::demo`] and every test's county: villages
//! around a centre, sized by the fields) and the full-size county of the pilot
//! ([`CountySpec::large`], `ingest demo --county large`: about 150 villages in townships
//! along valleys; see `large.rs`).

use serde::{Deserialize, Serialize};

/// Size and randomness of a simulated county.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountySpec {
    /// Villages (at least 3; fewer are raised to 3). Every ten villages share one
    /// supply district with its own waterworks.
    pub villages: usize,
    /// Household water meters in total, spread evenly over the villages.
    pub meters: usize,
    /// Cows on the dairy farm (250 per collar hub).
    pub cows: usize,
    /// Loudspeakers in each village.
    pub speakers_per_village: usize,
    /// Seed of every random draw: the same spec and start time give the same county.
    pub seed: u64,
    /// Sim seconds per wall second while serving (1.0 is real time).
    pub speed: f64,
    /// Shares of speakers that are offline, slow or failing from the start (none in the
    /// demo; [`SpeakerMix::realistic`] for a county-scale run).
    #[serde(default)]
    pub speaker_mix: SpeakerMix,
    /// How the county is laid out: the small county around a centre (default), or the
    /// full-size county of the pilot along valleys ([`CountyLayout::Large`]).
    #[serde(default)]
    pub layout: CountyLayout,
}

/// The shape of a simulated county.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountyLayout {
    /// Villages around a county centre, every ten a supply district: the demo's and the
    /// tests' county, sized by the spec's fields.
    #[default]
    Small,
    /// The pilot county at full size, laid out along two tributary valleys and the main
    /// one: townships, three supply districts, two dairy farms. `villages`, `meters` and
    /// `cows` size it; speakers are `speakers_per_village` on every village and one more
    /// on the larger ones until `speakers_total` (see `large.rs`).
    Large {
        /// Loudspeakers in the whole county.
        speakers_total: usize,
        /// Dairy farms (the cows are split evenly between them).
        farms: usize,
    },
}

/// What share of the speakers (each 0.0-1.0, drawn per speaker from the seed) starts in
/// each bad condition. Random link outages come on top (see `County::set_random_outages`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerMix {
    /// Offline: the link is down (the `speaker_offline` fault, in force until cleared).
    #[serde(default)]
    pub offline: f64,
    /// Slow: answers every Modbus request 150-450 ms late (a terminal behind a busy
    /// cellular DTU), still inside a gateway's usual 500 ms timeout.
    #[serde(default)]
    pub slow: f64,
    /// Failing: the amplifier is faulty; the terminal answers, reports fault bit 0 and
    /// cannot play (`County::set_speaker_condition` repairs it).
    #[serde(default)]
    pub failing: f64,
}

impl SpeakerMix {
    /// Every speaker healthy and reachable (random outages aside).
    pub const NONE: SpeakerMix = SpeakerMix { offline: 0.0, slow: 0.0, failing: 0.0 };

    /// Shares seen in rural broadcast networks: a few terminals with a dead link (power
    /// or SIM) at any time, a tenth on poor cellular coverage, one in a hundred with a
    /// failed amplifier or horn line awaiting a technician. County broadcast platforms
    /// report online rates of 95-98 %; these figures are our working assumption, not a
    /// cited statistic.
    pub const fn realistic() -> SpeakerMix {
        SpeakerMix { offline: 0.03, slow: 0.10, failing: 0.01 }
    }
}

impl CountySpec {
    /// The demo county: 3 villages, 50 meters, 100 cows, one speaker per village, real time.
    pub fn demo() -> CountySpec {
        CountySpec {
            villages: 3,
            meters: 50,
            cows: 100,
            speakers_per_village: 1,
            seed: 2024,
            speed: 1.0,
            speaker_mix: SpeakerMix::NONE,
            layout: CountyLayout::Small,
        }
    }

    /// The full-size county of the pilot (`ingest demo --county large`): 150 villages in 9
    /// townships along three valleys, 15,000 household meters reporting every 15-60
    /// minutes, 3 waterworks with pump station, tank and analyser, 400 speakers on the 150
    /// village gateways, two dairy farms of 1,000 cows each; the realistic speaker mix.
    pub fn large() -> CountySpec {
        CountySpec {
            villages: 150,
            meters: 15_000,
            cows: 2_000,
            speakers_per_village: 2,
            seed: 2024,
            speed: 1.0,
            speaker_mix: SpeakerMix::realistic(),
            layout: CountyLayout::Large { speakers_total: 400, farms: 2 },
        }
    }
}

impl Default for CountySpec {
    fn default() -> CountySpec {
        CountySpec::demo()
    }
}
