//! Physics of the village loudspeakers: link outages and the routine daily programme.
//!
//! - Link outages: now and then (about once in two days per terminal) a speaker's IP
//!   link drops for 2-10 minutes; it does not answer Modbus then, as with the
//!   `speaker_offline` fault, but its amplifier keeps working. Tests that need every
//!   device to answer switch these off (`County::set_random_outages(false)`).
//! - Routine programme: village loudspeakers in China play a morning and an evening
//!   programme; every reachable speaker plays a 15-minute broadcast at 07:00 and 18:30
//!   local time (level 4 blue, daily class), so `playback_state` moves in a demo.
//!   Broadcast ids are `local_day * 10 + 1` (morning) and `+ 2` (evening).

use firmware::prng::Rng;
use firmware::speaker::{PlayRequest, Speaker, SpeakerInputs};
use protocol::Timestamp;
use protocol::command::Level;

use crate::clock::{local_day, local_midnight};

const ROUTINE: [(f64, u64); 2] = [(7.0, 1), (18.5, 2)];
const ROUTINE_S: f32 = 15.0 * 60.0;
const OUTAGE_EVERY_S: f32 = 2.0 * 86_400.0;

/// One speaker terminal and its link.
#[derive(Debug, Clone)]
pub(crate) struct SpeakerSim {
    pub(crate) fw: Speaker,
    rng: Rng,
    /// A random outage lasts until this sim time (ms).
    down_until_ms: i64,
    /// The `speaker_offline` fault.
    pub(crate) offline: bool,
}

impl SpeakerSim {
    pub(crate) fn new(seed: u64, index: usize) -> SpeakerSim {
        let mut rng = Rng::new(seed, 0x5E_0000 + index as u64);
        let volume = 60 + rng.below(5) as u8 * 5;
        SpeakerSim { fw: Speaker::new(volume), rng, down_until_ms: i64::MIN, offline: false }
    }

    /// Answers Modbus.
    pub(crate) fn reachable(&self, now_ms: i64) -> bool {
        !self.offline && now_ms >= self.down_until_ms
    }

    pub(crate) fn step(&mut self, now: Timestamp, dt_ms: i64, outages: bool) {
        let dt_s = dt_ms as f32 / 1000.0;
        if outages && self.reachable(now.0) && self.rng.chance(dt_s / OUTAGE_EVERY_S) {
            self.down_until_ms = now.0 + (self.rng.range(2.0, 10.0) * 60_000.0) as i64;
        }
        if self.reachable(now.0) {
            let from = now.0 - dt_ms;
            for day in local_day(Timestamp(from))..=local_day(now) {
                for (hour, k) in ROUTINE {
                    let at = local_midnight(day) + (hour * 3_600_000.0) as i64;
                    if from < at && at <= now.0 {
                        let broadcast = day as u64 * 10 + k;
                        let req = PlayRequest {
                            broadcast,
                            level: Level::Blue,
                            duration_s: ROUTINE_S,
                            repeat: 1,
                            volume: None,
                        };
                        // Busy with a higher-level broadcast: the routine one is skipped.
                        let _ = self.fw.play(req);
                    }
                }
            }
        }
        self.fw.update(&SpeakerInputs { amplifier_ok: true, line_ok: true }, dt_s);
    }
}
