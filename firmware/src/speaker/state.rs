//! What a terminal keeps across a reset: the replay window, the command log, the verdict
//! on the last envelope, how recent broadcasts ended, and the playbacks it holds, as one
//! record of at most [`STATE_BYTES`] bytes that a board writes to battery-backed RAM or a
//! flash page (see [`crate::nvm`] for a journal that survives a torn write).
//!
//! Why each part:
//! - The replay window: without it a reset reopens the window, and a captured command
//!   that has not expired plays again.
//! - The command log and verdict: the gateway acks from them; after a reset it must
//!   still see how each command ended, under the same sequence numbers.
//! - The receipt counter: the terminal's signed delivery states (receipts) carry it, and
//!   it must never repeat.
//! - The playbacks held: a reset in the middle of a red broadcast must not drop it. A
//!   playback that was playing resumes from the start of the repeat it was in (what a
//!   pre-emption does), unless it expired meanwhile (then it ends `interrupted`,
//!   reason `expired`); a local one (the routine programme) ends `interrupted`.
//!
//! Not kept: the identity (the provisioning page has it), the clock (the board sets it
//! from its time source before restoring), the fault bits (the next self-test has them)
//! and the mailbox's half-written envelope (the gateway's write got no answer and the
//! command is sent again; nothing acted on it).
//!
//! The format is versioned by its first byte; a record of another version or a
//! truncated one is refused whole and the terminal starts empty, as it would from the
//! factory.

use protocol::command::{Level, ReplayWindow};

use super::{CommandState, Entry, Finished, Outcome, PlaybackState, Reason, SLOTS, Slot, Speaker, Verdict};

/// Largest record [`Speaker::save_state`] writes.
pub const STATE_BYTES: usize = 768;
/// Version of the record layout (its first byte).
const VERSION: u8 = 2;
/// Most playbacks a record holds (the one playing and those waiting).
const MAX_ENTRIES: usize = 8;

/// A saved state that could not be restored: another version, truncated, or out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadState;

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
    overflow: bool,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        match self.out.get_mut(self.at..self.at + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.at += b.len();
            }
            None => self.overflow = true,
        }
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn entry(&mut self, e: &Entry) {
        self.u64(e.command);
        self.u8(e.slot.map_or(u8::MAX, |s| s as u8));
        self.u64(e.broadcast);
        self.u8(e.level as u8);
        self.u32(e.duration_s.to_bits());
        self.u8(e.repeat);
        self.u8(e.volume.unwrap_or(u8::MAX));
        self.u64(e.start_at_ms as u64);
        self.u64(e.expires_at_ms as u64);
        self.u8(u8::from(e.resumable));
        self.u32(e.arrival);
        self.u8(u8::from(e.started));
        self.u8(e.repeat_now);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], BadState> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes.get(self.at..self.at + N).ok_or(BadState)?);
        self.at += N;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, BadState> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, BadState> {
        self.take().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, BadState> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, BadState> {
        self.take().map(u64::from_le_bytes)
    }
    fn entry(&mut self) -> Result<Entry, BadState> {
        let command = self.u64()?;
        let slot = match self.u8()? {
            u8::MAX => None,
            s if usize::from(s) < SLOTS => Some(usize::from(s)),
            _ => return Err(BadState),
        };
        let broadcast = self.u64()?;
        let level = Level::from_number(self.u8()?).ok_or(BadState)?;
        let duration_s = f32::from_bits(self.u32()?);
        if !(duration_s.is_finite() && duration_s > 0.0) {
            return Err(BadState);
        }
        let repeat = self.u8()?.max(1);
        let volume = match self.u8()? {
            u8::MAX => None,
            v => Some(v.min(100)),
        };
        let start_at_ms = self.u64()? as i64;
        let expires_at_ms = self.u64()? as i64;
        let resumable = self.u8()? != 0;
        let arrival = self.u32()?;
        let started = self.u8()? != 0;
        let repeat_now = self.u8()?.clamp(1, repeat);
        Ok(Entry {
            command,
            slot,
            broadcast,
            level,
            duration_s,
            repeat,
            volume,
            start_at_ms,
            expires_at_ms,
            resumable,
            arrival,
            started,
            repeat_now,
            elapsed_s: 0.0,
        })
    }
}

impl Speaker {
    /// Writes what must outlive a reset into `out` (module doc); returns the bytes
    /// written, or `None` if `out` is shorter than the record ([`STATE_BYTES`] always
    /// suffices). A board saves after every change of the command log sequence (input
    /// 100) or the volume, before it answers the write that caused it.
    pub fn save_state(&self, out: &mut [u8]) -> Option<usize> {
        let mut w = Writer { out, at: 0, overflow: false };
        w.u8(VERSION);
        w.u8(self.volume);
        w.u8(self.outcome as u8);
        w.u64(self.last_broadcast);
        w.u32(self.arrivals);
        let (highest, seen) = self.window.state();
        w.u64(highest);
        w.u64(seen);
        w.u16(self.log.seq);
        for s in &self.log.slots {
            w.u64(s.command);
            w.u64(s.broadcast);
            for v in [s.state, s.reason, s.seq, s.repeat] {
                w.u16(v);
            }
        }
        w.u16(self.verdict.result);
        w.u16(self.verdict.reason);
        w.u64(self.verdict.id);
        for f in &self.finished {
            w.u64(f.broadcast);
            w.u16(f.state);
            w.u16(f.reason);
        }
        w.u8(self.finished_next as u8);
        w.u64(self.log.counter);
        let held = self.current.iter().chain(self.waiting.iter());
        if self.current.is_some() as usize + self.waiting.len() > MAX_ENTRIES {
            return None;
        }
        w.u8(u8::from(self.current.is_some()));
        w.u8(self.waiting.len() as u8);
        for e in held {
            w.entry(e);
        }
        (!w.overflow).then_some(w.at)
    }

    /// Restores a state saved with [`Speaker::save_state`] into a terminal that was just
    /// made, provisioned and given the time; resumes what was playing (module doc). On
    /// [`BadState`] nothing changes.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<(), BadState> {
        let mut r = Reader { bytes, at: 0 };
        if r.u8()? != VERSION {
            return Err(BadState);
        }
        let volume = r.u8()?.min(100);
        let outcome = match r.u8()? {
            1 => Outcome::Played,
            2 => Outcome::Interrupted,
            _ => Outcome::None,
        };
        let last_broadcast = r.u64()?;
        let arrivals = r.u32()?;
        let window = ReplayWindow::from_state(r.u64()?, r.u64()?);
        let seq = r.u16()?;
        let mut slots = [Slot::default(); SLOTS];
        for s in slots.iter_mut() {
            let (command, broadcast) = (r.u64()?, r.u64()?);
            *s = Slot { command, broadcast, state: r.u16()?, reason: r.u16()?, seq: r.u16()?, repeat: r.u16()? };
        }
        let verdict = Verdict { result: r.u16()?, reason: r.u16()?, id: r.u64()? };
        let mut finished = [Finished::default(); SLOTS];
        for f in finished.iter_mut() {
            *f = Finished { broadcast: r.u64()?, state: r.u16()?, reason: r.u16()? };
        }
        let finished_next = usize::from(r.u8()?) % SLOTS;
        let receipt_counter = r.u64()?;
        let playing = r.u8()? != 0;
        let waiting = usize::from(r.u8()?);
        if usize::from(playing) + waiting > MAX_ENTRIES {
            return Err(BadState);
        }
        let current = if playing { Some(r.entry()?) } else { None };
        let mut held = alloc::vec::Vec::with_capacity(waiting + 1);
        for _ in 0..waiting {
            held.push(r.entry()?);
        }

        self.volume = volume;
        self.outcome = outcome;
        self.last_broadcast = last_broadcast;
        self.arrivals = arrivals;
        self.window = window;
        // Slots and sequence only: whatever else the log holds (set at boot) stays.
        self.log.slots = slots;
        self.log.seq = seq;
        self.verdict = verdict;
        self.finished = finished;
        self.finished_next = finished_next;
        // Receipt counters never repeat, across resets too.
        self.restore_receipt_counter(receipt_counter);
        self.waiting = held;
        self.current = None;
        self.state = PlaybackState::Idle;
        if let Some(c) = current {
            if c.resumable {
                // As a pre-emption does: back into the queue, from the start of its repeat.
                self.waiting.push(c);
            } else {
                self.end(c, CommandState::Interrupted, Reason::Fault);
            }
        }
        self.schedule();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use ed25519_dalek::SigningKey;
    use protocol::Timestamp;
    use protocol::command::{Action, Command, Content, Playback};

    use super::*;
    use crate::modbus::write_registers;
    use crate::speaker::{MAILBOX, SpeakerInputs};

    const NOW: i64 = 1_700_000_000_000;
    const OK: SpeakerInputs = SpeakerInputs { amplifier_ok: true, line_ok: true };

    fn issuer() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn terminal(now: i64) -> Speaker {
        let mut s = Speaker::new(70);
        s.provision(issuer().verifying_key().to_bytes(), "gw-dongcun", "dongcun-speaker-1").unwrap();
        s.set_clock(Timestamp(now));
        s
    }

    fn play(id: u64, broadcast: u64, level: Level, seconds: usize, repeat: u8, expires_in_ms: i64) -> Vec<u8> {
        let text: alloc::string::String = core::iter::repeat_n('警', seconds * 4).collect();
        Command {
            id,
            tenant: "county".into(),
            gateway: "gw-dongcun".into(),
            device: "dongcun-speaker-1".into(),
            issued_at: Timestamp(NOW - 1000),
            expires_at: Timestamp(NOW + expires_in_ms),
            action: Action::Play(Playback {
                broadcast,
                level,
                content: Content::Tts { text },
                repeat,
                volume: Some(90),
                start_at: None,
            }),
        }
        .sign(&issuer())
    }

    fn deliver(s: &mut Speaker, wire: &[u8]) {
        let words: Vec<u16> =
            wire.chunks(2).map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])).collect();
        for (i, chunk) in words.chunks(123).enumerate() {
            write_registers(s, MAILBOX.0 + 1 + (i * 123) as u16, chunk).unwrap();
        }
        write_registers(s, MAILBOX.0, &[wire.len() as u16]).unwrap();
    }

    /// A reset: the state saved, a new terminal from the provisioning page, restored.
    fn reboot(s: &Speaker, now: i64) -> Speaker {
        let mut buf = [0u8; STATE_BYTES];
        let n = s.save_state(&mut buf).expect("fits");
        let mut fresh = terminal(now);
        fresh.restore_state(&buf[..n]).expect("restores");
        fresh
    }

    #[test]
    fn after_a_reset_mid_playback_the_broadcast_resumes_and_its_replay_is_refused() {
        let red = play(100, 7, Level::Red, 3, 2, 600_000);
        let mut s = terminal(NOW);
        deliver(&mut s, &red);
        s.update(&OK, 4.0); // into the second repeat
        assert_eq!(s.command_state(100).map(|c| c.0), Some(CommandState::Playing));
        let seq = s.log.seq;

        let mut s = reboot(&s, NOW + 5_000);
        assert_eq!(s.playing(), Some(7), "the red broadcast resumes");
        assert_eq!(s.volume(), 90);
        assert!(s.log.seq != seq, "the resume is a change the gateway sees");
        deliver(&mut s, &red);
        assert_eq!((s.verdict.result, s.verdict.reason), (2, Reason::Replayed as u16), "the replay is refused");
        s.update(&OK, 3.0);
        // The refusal took a slot of its own under the same id; the command's slot says played.
        let played =
            |s: &Speaker| s.log.slots.iter().any(|x| x.command == 100 && x.state == CommandState::Played as u16);
        assert!(played(&s), "{:?}", s.log.slots);
        assert_eq!(s.outcome(), Outcome::Played);

        // Positive control: a new command is still accepted after the reset.
        deliver(&mut s, &play(101, 8, Level::Blue, 2, 1, 600_000));
        assert_eq!(s.command_state(101).map(|c| c.0), Some(CommandState::Playing));
    }

    #[test]
    fn a_playback_that_expired_during_the_reset_ends_interrupted_and_a_local_one_does_not_resume() {
        let mut s = terminal(NOW);
        deliver(&mut s, &play(200, 9, Level::Orange, 10, 1, 5_000));
        s.update(&OK, 1.0);
        let s = reboot(&s, NOW + 60_000);
        assert_eq!(s.playing(), None);
        assert_eq!(s.command_state(200), Some((CommandState::Interrupted, Reason::Expired)));

        let mut s = terminal(NOW);
        let req = crate::speaker::PlayRequest {
            broadcast: 55,
            level: Level::Blue,
            duration_s: 900.0,
            repeat: 1,
            volume: None,
        };
        s.play(req).unwrap();
        let s = reboot(&s, NOW + 1_000);
        assert_eq!((s.playing(), s.outcome()), (None, Outcome::Interrupted), "the routine programme is not resumed");
    }

    #[test]
    fn a_truncated_or_foreign_record_is_refused_whole() {
        let mut s = terminal(NOW);
        deliver(&mut s, &play(300, 1, Level::Blue, 2, 1, 600_000));
        let mut buf = [0u8; STATE_BYTES];
        let n = s.save_state(&mut buf).unwrap();
        let mut fresh = terminal(NOW);
        for cut in [0, 1, n / 2, n - 1] {
            assert_eq!(fresh.restore_state(&buf[..cut]), Err(BadState), "cut at {cut}");
        }
        let mut other = buf;
        other[0] = 9;
        assert_eq!(fresh.restore_state(&other[..n]), Err(BadState));
        assert_eq!(fresh.command_state(300), None, "nothing restored from a bad record");
        assert_eq!(fresh.restore_state(&buf[..n]), Ok(()));
        assert_eq!(fresh.command_state(300).map(|c| c.0), Some(CommandState::Playing));
        assert!(s.save_state(&mut [0u8; 10]).is_none(), "a short buffer is not overrun");
    }
}
