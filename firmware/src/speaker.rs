//! Village loudspeaker terminal: ready state, volume, and the playback state machine.
//!
//! A playback is a broadcast id, a warning level, a clip duration and a repeat count. The
//! terminal plays the clip `repeat` times with a short gap and then the playback ends in
//! *played*. A playback of a higher level (a lower number: 1 red is the highest,
//! Emergency Response Law art. 42) pre-empts a lower one, which ends *interrupted*; an
//! equal or lower level is refused while one plays. A fault of the amplifier or the horn
//! line interrupts what plays and shows as state 3 until it clears.
//!
//! States (`playback_state`, catalogue: 0 idle, 1 playing, 2 interrupted, 3 fault):
//!
//! ```text
//!   idle --play--> playing --all repeats done--> idle      (outcome: played)
//!   playing --stop / pre-empted--> interrupted --play--> playing
//!   any --amplifier or line fault--> fault --fault clears--> idle
//! ```
//!
//! Signed commands: playbacks and stops will arrive through a mailbox of holding registers
//! 1000..=1999, where a gateway writes a signed command that the terminal verifies with
//! `protocol::command::open` before it calls [`Speaker::play`] or [`Speaker::stop`].
//! The block is reserved and not built yet: reads and writes of it answer
//! `IllegalDataAddress`.
//!
//! # Register map
//!
//! | table | address | type | order | scale | unit | meaning |
//! |---|---|---|---|---|---|---|
//! | discrete | 0 | bool | | | bool | ready: amplifier and horn line OK (`speaker_online`) |
//! | input | 0 | u16 | | | state | playback state: 0 idle, 1 playing, 2 interrupted, 3 fault |
//! | input | 1-4 | u64 | ABCD | | | broadcast id playing (0 when none) |
//! | input | 5 | u16 | | | | level of the playback (1 red .. 4 blue; 0 none) |
//! | input | 6 | u16 | | | | current repeat (1-based; 0 when not playing) |
//! | input | 7 | u16 | | | | repeats asked for |
//! | input | 8 | u16 | | | bits | fault bits: bit 0 amplifier, bit 1 horn line |
//! | input | 9 | u16 | | | | outcome of the last playback: 0 none, 1 played, 2 interrupted |
//! | input | 10-13 | u64 | ABCD | | | broadcast id of the last playback |
//! | input | 14 | u16 | | 1 | s | heartbeat: seconds since power-up (wraps) |
//! | holding | 0 | u16 | | 1 | % | volume 0-100 (read-write; more is `IllegalDataValue`) |
//! | holding | 1000-1999 | | | | | reserved: signed-command mailbox (not built yet) |

use protocol::command::Level;

use crate::modbus::{Exception, RegisterMap, Table};
use crate::words::{self, WordOrder};

/// Word order of the 64-bit broadcast ids.
pub const ORDER: WordOrder = WordOrder::Abcd;
/// Pause between repeats of a clip (s).
pub const REPEAT_GAP_S: f32 = 2.0;
/// First and last address of the reserved signed-command mailbox.
pub const MAILBOX: (u16, u16) = (1000, 1999);

/// Fault bit: amplifier fault.
pub const FAULT_AMPLIFIER: u16 = 1 << 0;
/// Fault bit: horn line open or shorted.
pub const FAULT_LINE: u16 = 1 << 1;

/// The playback state, with its catalogue code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaybackState {
    /// Nothing plays.
    Idle = 0,
    /// A playback is under way.
    Playing = 1,
    /// The last playback was cut short (stopped or pre-empted).
    Interrupted = 2,
    /// The amplifier or line is faulty.
    Fault = 3,
}

/// How the last playback ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No playback has ended yet.
    None = 0,
    /// Every repeat played to the end.
    Played = 1,
    /// Stopped, pre-empted, or cut by a fault.
    Interrupted = 2,
}

/// A request to play.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayRequest {
    /// Broadcast id (the same on every speaker it goes to).
    pub broadcast: u64,
    /// Warning level; a higher one pre-empts a lower one.
    pub level: Level,
    /// Length of one play of the clip (s).
    pub duration_s: f32,
    /// How many times to play it (0 is taken as 1).
    pub repeat: u8,
    /// Volume for this and later playbacks, or keep the current one.
    pub volume: Option<u8>,
}

/// Why a play request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayError {
    /// A playback of the same or a higher level is playing.
    Busy,
    /// The amplifier or horn line is faulty.
    NotReady,
    /// Duration not positive, or volume over 100.
    Invalid,
}

/// What the terminal's self-test sees during one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeakerInputs {
    /// Amplifier healthy.
    pub amplifier_ok: bool,
    /// Horn line impedance within limits.
    pub line_ok: bool,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    request: PlayRequest,
    /// 1-based repeat now playing.
    repeat_now: u8,
    /// Seconds into the current repeat (negative during the gap before it).
    elapsed_s: f32,
}

/// The terminal.
#[derive(Debug, Clone)]
pub struct Speaker {
    volume: u8,
    faults: u16,
    state: PlaybackState,
    current: Option<Current>,
    outcome: Outcome,
    last_broadcast: u64,
    uptime_s: f64,
}

impl Speaker {
    /// An idle, healthy terminal at `volume` percent (clamped to 100).
    pub fn new(volume: u8) -> Speaker {
        Speaker {
            volume: volume.min(100),
            faults: 0,
            state: PlaybackState::Idle,
            current: None,
            outcome: Outcome::None,
            last_broadcast: 0,
            uptime_s: 0.0,
        }
    }

    /// Amplifier and line are OK.
    pub fn ready(&self) -> bool {
        self.faults == 0
    }

    /// The playback state.
    pub fn state(&self) -> PlaybackState {
        self.state
    }

    /// How the last playback ended.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The broadcast playing, if any.
    pub fn playing(&self) -> Option<u64> {
        self.current.map(|c| c.request.broadcast)
    }

    /// Volume (%).
    pub fn volume(&self) -> u8 {
        self.volume
    }

    /// Starts a playback, pre-empting a lower-level one.
    pub fn play(&mut self, request: PlayRequest) -> Result<(), PlayError> {
        if !(request.duration_s.is_finite() && request.duration_s > 0.0) || request.volume.is_some_and(|v| v > 100) {
            return Err(PlayError::Invalid);
        }
        if !self.ready() {
            return Err(PlayError::NotReady);
        }
        if let Some(c) = self.current {
            if !request.level.preempts(c.request.level) {
                return Err(PlayError::Busy);
            }
            self.finish(Outcome::Interrupted);
        }
        if let Some(v) = request.volume {
            self.volume = v;
        }
        let request = PlayRequest { repeat: request.repeat.max(1), ..request };
        self.current = Some(Current { request, repeat_now: 1, elapsed_s: 0.0 });
        self.state = PlaybackState::Playing;
        Ok(())
    }

    /// Stops `broadcast` if it is the one playing; true if it was.
    pub fn stop(&mut self, broadcast: u64) -> bool {
        if self.playing() != Some(broadcast) {
            return false;
        }
        self.finish(Outcome::Interrupted);
        self.state = PlaybackState::Interrupted;
        true
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(c) = self.current.take() {
            self.last_broadcast = c.request.broadcast;
            self.outcome = outcome;
        }
    }

    /// Runs the terminal for `dt_s` seconds with its self-test results.
    pub fn update(&mut self, inputs: &SpeakerInputs, dt_s: f32) {
        let dt_s = if dt_s.is_finite() { dt_s.max(0.0) } else { 0.0 };
        self.uptime_s += f64::from(dt_s);
        let bit = |fault: bool, mask: u16| if fault { mask } else { 0 };
        self.faults = bit(!inputs.amplifier_ok, FAULT_AMPLIFIER) | bit(!inputs.line_ok, FAULT_LINE);
        if !self.ready() {
            self.finish(Outcome::Interrupted);
            self.state = PlaybackState::Fault;
            return;
        }
        if self.state == PlaybackState::Fault {
            self.state = PlaybackState::Idle;
        }
        let mut left = dt_s;
        while let Some(mut c) = self.current {
            let remaining = c.request.duration_s - c.elapsed_s;
            if left < remaining {
                c.elapsed_s += left;
                self.current = Some(c);
                break;
            }
            left -= remaining;
            if c.repeat_now >= c.request.repeat {
                self.finish(Outcome::Played);
                self.state = PlaybackState::Idle;
                break;
            }
            c.repeat_now += 1;
            c.elapsed_s = -REPEAT_GAP_S;
            self.current = Some(c);
        }
    }
}

impl RegisterMap for Speaker {
    fn register(&self, table: Table, address: u16) -> Option<u16> {
        let c = self.current;
        match (table, address) {
            (Table::Input, 0) => Some(self.state as u16),
            (Table::Input, 1..=4) => words::part(words::from_u64(self.playing().unwrap_or(0), ORDER), address - 1),
            (Table::Input, 5) => Some(c.map_or(0, |c| c.request.level as u16)),
            (Table::Input, 6) => Some(c.map_or(0, |c| u16::from(c.repeat_now))),
            (Table::Input, 7) => Some(c.map_or(0, |c| u16::from(c.request.repeat))),
            (Table::Input, 8) => Some(self.faults),
            (Table::Input, 9) => Some(self.outcome as u16),
            (Table::Input, 10..=13) => words::part(words::from_u64(self.last_broadcast, ORDER), address - 10),
            (Table::Input, 14) => Some((libm::floor(self.uptime_s) as u64 & 0xFFFF) as u16),
            (Table::Holding, 0) => Some(u16::from(self.volume)),
            _ => None,
        }
    }

    fn bit(&self, table: Table, address: u16) -> Option<bool> {
        (table == Table::Discrete && address == 0).then_some(self.ready())
    }

    fn write_registers(&mut self, address: u16, words: &[u16]) -> Result<(), Exception> {
        match (address, words) {
            (0, &[v]) if v <= 100 => {
                self.volume = v as u8;
                Ok(())
            }
            (0, &[_]) => Err(Exception::IllegalDataValue),
            _ => Err(Exception::IllegalDataAddress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::{read_bits, read_registers, write_registers};

    const OK: SpeakerInputs = SpeakerInputs { amplifier_ok: true, line_ok: true };

    fn req(broadcast: u64, level: Level, repeat: u8) -> PlayRequest {
        PlayRequest { broadcast, level, duration_s: 30.0, repeat, volume: None }
    }

    #[test]
    fn a_playback_plays_every_repeat_and_ends_in_played() {
        let mut s = Speaker::new(70);
        s.play(req(42, Level::Blue, 2)).unwrap();
        s.update(&OK, 31.0);
        assert_eq!(s.state(), PlaybackState::Playing);
        let mut regs = [0u16; 15];
        read_registers(&s, Table::Input, 0, &mut regs).unwrap();
        assert_eq!(regs[0], 1);
        assert_eq!(words::to_u64([regs[1], regs[2], regs[3], regs[4]], ORDER), 42);
        assert_eq!(regs[6], 2, "second repeat");
        s.update(&OK, 30.0); // 30 s + 2 s gap + 30 s = 62 s: one second to go
        assert_eq!(s.state(), PlaybackState::Playing);
        s.update(&OK, 1.0);
        assert_eq!(s.state(), PlaybackState::Idle);
        assert_eq!(s.outcome(), Outcome::Played);
        read_registers(&s, Table::Input, 0, &mut regs).unwrap();
        assert_eq!(regs[9], Outcome::Played as u16);
        assert_eq!(words::to_u64([regs[10], regs[11], regs[12], regs[13]], ORDER), 42);
    }

    #[test]
    fn a_higher_level_preempts_and_an_equal_level_is_refused() {
        let mut s = Speaker::new(70);
        s.play(req(1, Level::Yellow, 1)).unwrap();
        assert_eq!(s.play(req(2, Level::Yellow, 1)), Err(PlayError::Busy));
        assert_eq!(s.play(req(3, Level::Blue, 1)), Err(PlayError::Busy));
        s.play(req(4, Level::Red, 1)).unwrap();
        assert_eq!(s.playing(), Some(4));
        assert_eq!(s.outcome(), Outcome::Interrupted);
    }

    #[test]
    fn stop_interrupts_only_the_broadcast_named() {
        let mut s = Speaker::new(70);
        s.play(req(9, Level::Orange, 3)).unwrap();
        assert!(!s.stop(8));
        assert!(s.stop(9));
        assert_eq!(s.state(), PlaybackState::Interrupted);
        s.play(req(10, Level::Blue, 1)).unwrap();
        assert_eq!(s.state(), PlaybackState::Playing);
    }

    #[test]
    fn a_line_fault_interrupts_and_shows_until_it_clears() {
        let mut s = Speaker::new(70);
        s.play(req(5, Level::Blue, 1)).unwrap();
        s.update(&SpeakerInputs { amplifier_ok: true, line_ok: false }, 1.0);
        assert_eq!(s.state(), PlaybackState::Fault);
        assert_eq!(s.outcome(), Outcome::Interrupted);
        let mut ready = [true];
        read_bits(&s, Table::Discrete, 0, &mut ready).unwrap();
        assert!(!ready[0]);
        assert_eq!(s.play(req(6, Level::Red, 1)), Err(PlayError::NotReady));
        s.update(&OK, 1.0);
        assert_eq!(s.state(), PlaybackState::Idle);
    }

    #[test]
    fn volume_is_writable_within_0_to_100_and_the_mailbox_is_reserved() {
        let mut s = Speaker::new(70);
        write_registers(&mut s, 0, &[85]).unwrap();
        assert_eq!(s.volume(), 85);
        assert_eq!(write_registers(&mut s, 0, &[101]), Err(Exception::IllegalDataValue));
        assert_eq!(write_registers(&mut s, MAILBOX.0, &[1]), Err(Exception::IllegalDataAddress));
        let mut one = [0u16; 1];
        assert_eq!(read_registers(&s, Table::Holding, MAILBOX.0, &mut one), Err(Exception::IllegalDataAddress));
        assert_eq!(s.play(PlayRequest { volume: Some(120), ..req(1, Level::Blue, 1) }), Err(PlayError::Invalid));
    }
}
