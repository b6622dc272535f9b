//! What county to simulate: sizes, seed and speed.

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
}

impl CountySpec {
    /// The demo county: 3 villages, 50 meters, 100 cows, one speaker per village, real time.
    pub fn demo() -> CountySpec {
        CountySpec { villages: 3, meters: 50, cows: 100, speakers_per_village: 1, seed: 2024, speed: 1.0 }
    }
}

impl Default for CountySpec {
    fn default() -> CountySpec {
        CountySpec::demo()
    }
}
