//! Physics of the village loudspeakers: link outages, slow links, failed amplifiers and the
//! routine daily programme, around the firmware terminal ([`firmware::speaker::Speaker`]),
//! which does everything a real one does: verifies signed commands from its mailbox,
//! plays with level pre-emption, and reports per command.
//!
//! - Link outages: now and then (about once in two days per terminal) a speaker's IP
//!   link drops for 2-10 minutes; it does not answer Modbus then, as with the
//!   `speaker_offline` fault, but its amplifier keeps working. Tests that need every
//!   device to answer switch these off (`County::set_random_outages(false)`).
//! - Condition ([`SpeakerCondition`]): healthy, slow (every Modbus answer 150-450 ms late,
//!   a terminal behind a busy cellular DTU) or with a failed amplifier (fault bit 0; it
//!   answers but cannot play). `CountySpec::speaker_mix` draws them per speaker from the
//!   seed; `County::set_speaker_condition` changes one.
//! - Clock: the terminal's clock is sim time (as if NTP-synced), so a command's expiry
//!   means the same to ingest and to the speaker when the county runs at speed 1.
//! - Provisioning: `County::provision_speakers` installs ingest's command key in every
//!   terminal with its own gateway and device ids, as an installer would; until then every
//!   terminal refuses every command (`not_provisioned`).
//! - Receipt keys: every terminal signs its command states with its own Ed25519 key
//!   (`firmware::speaker::Speaker::with_key`). A real terminal makes its seed once from
//!   its hardware random generator; here the seed is drawn from the county's seed and the
//!   speaker's index ([`speaker_seed`]), so a county's keys are the same at every run and
//!   anyone who knows the seed knows them: good for a simulation, never for a device.
//!   `County::speaker_public_keys` is what an installer would read out of input 600-615.
//! - Routine programme: village loudspeakers in China play a morning and an evening
//!   programme; every reachable speaker plays a 15-minute broadcast at 07:00 and 18:30
//!   local time (level 4 blue, daily class), so `playback_state` moves in a demo.
//!   Broadcast ids are `local_day * 10 + 1` (morning) and `+ 2` (evening).

use firmware::prng::Rng;
use firmware::speaker::{PlayRequest, Speaker, SpeakerInputs};
use protocol::Timestamp;
use protocol::command::Level;
use serde::{Deserialize, Serialize};

use crate::clock::{local_day, local_midnight};
use crate::spec::SpeakerMix;

const ROUTINE: [(f64, u64); 2] = [(7.0, 1), (18.5, 2)];
const ROUTINE_S: f32 = 15.0 * 60.0;
const OUTAGE_EVERY_S: f32 = 2.0 * 86_400.0;
/// Range of a slow speaker's answer delay (ms).
pub const SLOW_DELAY_MS: (u32, u32) = (150, 450);

/// How a speaker terminal is doing, apart from its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "condition", rename_all = "snake_case")]
pub enum SpeakerCondition {
    /// Answers at once, plays.
    Healthy,
    /// Answers every Modbus request this late.
    Slow {
        /// The delay (ms).
        delay_ms: u32,
    },
    /// The amplifier failed: answers, reports the fault, cannot play.
    AmplifierFault,
}

/// One speaker terminal and its link.
#[derive(Debug, Clone)]
pub(crate) struct SpeakerSim {
    pub(crate) fw: Speaker,
    rng: Rng,
    /// A random outage lasts until this sim time (ms).
    down_until_ms: i64,
    /// The `speaker_offline` fault.
    pub(crate) offline: bool,
    pub(crate) condition: SpeakerCondition,
    /// Drawn from the mix: starts with its link down.
    pub(crate) starts_offline: bool,
}

/// The seed of a simulated terminal's receipt key: deterministic from the county's seed
/// and the speaker's index (a stream of its own, so it changes no other draw). Not secret.
pub fn speaker_seed(seed: u64, index: usize) -> [u8; 32] {
    let mut draw = Rng::new(seed, 0x5E_2000_0000 + index as u64);
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(4) {
        chunk.copy_from_slice(&draw.next_u32().to_be_bytes());
    }
    out
}

impl SpeakerSim {
    pub(crate) fn new(seed: u64, index: usize, mix: &SpeakerMix) -> SpeakerSim {
        let mut rng = Rng::new(seed, 0x5E_0000 + index as u64);
        let volume = 60 + rng.below(5) as u8 * 5;
        // A stream of its own, so a mix changes no other draw of the county.
        let mut draw = Rng::new(seed, 0x5E_1000_0000 + index as u64);
        let u = f64::from(draw.range(0.0, 1.0));
        let starts_offline = u < mix.offline;
        let condition = if u >= mix.offline && u < mix.offline + mix.slow {
            let (lo, hi) = SLOW_DELAY_MS;
            SpeakerCondition::Slow { delay_ms: draw.range(lo as f32, hi as f32) as u32 }
        } else if u >= mix.offline + mix.slow && u < mix.offline + mix.slow + mix.failing {
            SpeakerCondition::AmplifierFault
        } else {
            SpeakerCondition::Healthy
        };
        let fw = Speaker::with_key(volume, speaker_seed(seed, index));
        SpeakerSim { fw, rng, down_until_ms: i64::MIN, offline: false, condition, starts_offline }
    }

    /// Answers Modbus.
    pub(crate) fn reachable(&self, now_ms: i64) -> bool {
        !self.offline && now_ms >= self.down_until_ms
    }

    /// Ends a random link outage in progress (the `speaker_offline` fault stays).
    pub(crate) fn end_outage(&mut self) {
        self.down_until_ms = i64::MIN;
    }

    /// How late it answers a request.
    pub(crate) fn answer_delay_ms(&self) -> u32 {
        match self.condition {
            SpeakerCondition::Slow { delay_ms } => delay_ms,
            _ => 0,
        }
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
        let amplifier_ok = self.condition != SpeakerCondition::AmplifierFault;
        self.fw.set_clock(Timestamp(now.0 - dt_ms));
        self.fw.update(&SpeakerInputs { amplifier_ok, line_ok: true }, dt_s);
    }
}
