//! A device's own verdicts on the signed commands written into its mailbox: the speaker
//! terminal's command log (`protocol::speaker`, input 100..=205) turned into acks.
//!
//! Design constraints:
//! - An ack says what the device reported, never what the gateway hopes: the slot state
//!   maps to an ack as docs/BROADCAST.md ("Gateway duties") tables it, through
//!   [`protocol::speaker::SlotReport::ack`]; reasons the device gave end in `(speaker)`.
//! - Reads go to the task that owns the device's link ([`crate::modbus::Job`]), like polls
//!   and writes: one request at a time on an RS-485 bus, never a second connection.
//! - The speaker's own word travels with each ack: every read of the log comes with the
//!   terminal's latest receipt in the same job (`protocol::receipt`, input 640-677), which
//!   is usually the one of the change the gateway sees; if not, it reads that slot's
//!   receipt block (one read of 37 registers). It relays the signed receipt unchanged in
//!   the ack (`CommandAck::receipt`); it cannot make
//!   one. A block whose sequence word is not the slot's (the slot moved on between the two
//!   reads) is never relayed: the log is read again first. A terminal without a key shows
//!   an empty block; its acks go without a receipt, and ingest records none of its states.
//! - A command is followed every [`FOLLOW_INTERVAL`] until it is final, instead of waiting
//!   for the device's poll interval. The loop always ends: a final state, the device silent
//!   for [`SILENCE_LIMIT`] (acked `failed` with the Modbus error, which ingest retries), the
//!   command gone from the log, or its expiry plus [`EXPIRY_GRACE`].

use std::future::Future;
use std::time::Duration;

use protocol::command::AckState;
use protocol::receipt::{Receipt, ReceiptBlock, SignedReceipt, decode_latest, slot_of};
use protocol::speaker::{CommandState, LogBlock, SlotReport, decode_log};

/// How often a command in progress is looked at on its device (the spec: 200-500 ms).
/// Each look reads the log's sequence register (one register) and the whole log only when
/// it moved, so twenty followed speakers leave an RS-485 bus room for polls.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(400);
/// How long a device may fail every read before the gateway gives up following it.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(5);
/// How long after its expiry a command that is not final is still followed: a playback
/// that started before expiry plays to its end.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(30 * 60);
/// Successful reads that must miss the command before it counts as gone (a log has eight
/// slots; a restarted device has none).
const MISSES_TO_LOSE: u32 = 3;
/// Receipt blocks in a row that may lag their slot before the gateway acks without one
/// (a terminal whose slot changes faster than two reads; never seen with one command).
const STALE_RECEIPTS: u32 = 5;

/// The command being followed and the ids the speaker signs its receipts under.
#[derive(Debug, Clone, Copy)]
pub struct Followed<'a> {
    /// The command id.
    pub command: u64,
    /// This gateway's id.
    pub gateway: &'a str,
    /// The speaker's device id.
    pub device: &'a str,
}

/// What a receipt block read after a slot change gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// The speaker's signed receipt of the slot as read.
    Signed(SignedReceipt),
    /// The block is of an older change of the slot: read the log again.
    Stale,
    /// The terminal signs nothing (no key: an empty block), or the block is not one.
    None,
}

/// The receipt of `slot` from its block `regs`, as the gateway relays it.
pub fn proof(who: Followed<'_>, slot: &SlotReport, regs: &[u16]) -> Proof {
    ReceiptBlock::decode(regs).map_or(Proof::None, |b| proof_of_block(who, slot, &b))
}

/// The receipt of `slot` from a decoded block.
pub fn proof_of_block(who: Followed<'_>, slot: &SlotReport, b: &ReceiptBlock) -> Proof {
    if b.counter == 0 {
        Proof::None
    } else if b.seq != slot.seq {
        Proof::Stale
    } else {
        Proof::Signed(Receipt::of_slot(who.gateway, who.device, slot, b.counter).with_signature(&b.sig))
    }
}

/// One look at a speaker: its command log block and its latest receipt, read in one job.
pub type Look = (Vec<u16>, Vec<u16>);

/// The acks that tell ingest about a slot's move from `before` (`None`: first sight) to
/// where `slot` stands now; empty when nothing changed.
pub fn acks_for(before: Option<CommandState>, slot: &SlotReport) -> Vec<(AckState, Option<String>)> {
    if before == Some(slot.state) {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(2);
    // The device verified it before it could start: say so first, as it happened.
    let started = matches!(
        slot.state,
        CommandState::Playing | CommandState::Played | CommandState::Interrupted | CommandState::Preempted
    );
    if before.is_none() && started {
        out.push((AckState::Delivered, None));
    }
    let (state, reason) = slot.ack();
    out.push((state, reason.map(|r| format!("{r} (speaker)"))));
    out
}

/// Reads a speaker terminal's own public key (input 600-615) over `link`, for enrolment
/// at installation (`gateway speaker-key`): `None` if the terminal shows no key (all
/// zero) or one that is not a valid Ed25519 point.
pub async fn read_speaker_key(
    link: &mut crate::modbus::Link,
    unit: u8,
    attempts: crate::modbus::Attempts,
) -> Result<Option<ed25519_dalek::VerifyingKey>, crate::modbus::PollError> {
    use protocol::receipt::{PUBLIC_KEY_BASE, PUBLIC_KEY_REGISTERS};
    let read = crate::modbus::plan::Read {
        table: crate::modbus::value::Table::Input,
        start: PUBLIC_KEY_BASE,
        count: PUBLIC_KEY_REGISTERS,
    };
    let words = link.read(unit, read, attempts).await?;
    let mut key = [0u8; 32];
    for (i, w) in words.iter().take(16).enumerate() {
        key[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
    }
    if key == [0; 32] {
        return Ok(None);
    }
    Ok(ed25519_dalek::VerifyingKey::from_bytes(&key).ok())
}

/// How following a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The device reported a final state, at this log sequence.
    Final {
        /// The state.
        state: CommandState,
        /// The slot's log sequence at that change.
        seq: u16,
    },
    /// The device refused it (seen in the verdict registers, without a slot).
    Refused,
    /// The device stopped answering; the error of the last read.
    Silent(String),
    /// The device no longer reports the command (its log moved on, or it restarted).
    Lost,
    /// Past the command's expiry plus [`EXPIRY_GRACE`] and still not final.
    Overdue,
}

/// Follows a command on its device until it is final. `first` is the command log and the
/// latest receipt read right after the envelope was written; `read(force)` looks again
/// (through the link's task): both, or `None` when the log's sequence did not move and
/// `force` is false;
/// `receipt(slot)` reads a slot's receipt block; `ack` publishes an ack `(state, reason,
/// receipt)`; `deadline` is how long to follow at most.
pub async fn follow<R, RF, P, PF, A, AF>(
    who: Followed<'_>,
    first: Look,
    mut read: R,
    mut receipt: P,
    mut ack: A,
    deadline: Duration,
) -> Ending
where
    R: FnMut(bool) -> RF,
    RF: Future<Output = Result<Option<Look>, String>>,
    P: FnMut(usize) -> PF,
    PF: Future<Output = Result<Vec<u16>, String>>,
    A: FnMut(AckState, Option<String>, Option<SignedReceipt>) -> AF,
    AF: Future<Output = ()>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut last: Option<CommandState> = None;
    let mut misses = 0u32;
    let mut stale = 0u32;
    let mut silent_since: Option<tokio::time::Instant> = None;
    let mut words = Ok(Some(first));
    loop {
        let mut force = false;
        let mut failed_read = None;
        match words {
            Ok(None) => {}
            Ok(Some((regs, latest))) => {
                match decode_log(&regs) {
                    Some(block) => match find(&block, who.command) {
                        Found::Slot(slot) => {
                            misses = 0;
                            let acks = acks_for(last, &slot);
                            if !acks.is_empty() {
                                let read_proof = match slot_of(&regs, who.command) {
                                    Some(i) => match decode_latest(&latest).filter(|(s, _)| *s == i) {
                                        Some((_, b)) if b.seq == slot.seq => Ok(proof_of_block(who, &slot, &b)),
                                        _ => receipt(i).await.map(|r| proof(who, &slot, &r)),
                                    },
                                    None => Ok(Proof::None),
                                };
                                match read_proof {
                                    Ok(Proof::Stale) if stale < STALE_RECEIPTS => {
                                        stale += 1;
                                        force = true;
                                    }
                                    Ok(p) => {
                                        stale = 0;
                                        let signed = match p {
                                            Proof::Signed(r) => Some(r),
                                            Proof::Stale | Proof::None => None,
                                        };
                                        for (state, reason) in acks {
                                            ack(state, reason, signed.clone()).await;
                                        }
                                        last = Some(slot.state);
                                        if slot.state.is_final() {
                                            return Ending::Final { state: slot.state, seq: slot.seq };
                                        }
                                    }
                                    Err(error) => {
                                        force = true;
                                        failed_read = Some(error);
                                    }
                                }
                            }
                        }
                        Found::Refused(reason) => {
                            ack(AckState::Refused, Some(format!("{} (speaker)", reason.as_str())), None).await;
                            return Ending::Refused;
                        }
                        Found::Nothing => misses += 1,
                    },
                    None => misses += 1,
                }
                if misses >= MISSES_TO_LOSE {
                    let why = "lost: the speaker's command log no longer holds the command (gateway)";
                    ack(AckState::Failed, Some(why.into()), None).await;
                    return Ending::Lost;
                }
            }
            Err(error) => failed_read = Some(error),
        }
        match failed_read {
            None => silent_since = None,
            Some(error) => {
                let since = *silent_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= SILENCE_LIMIT {
                    ack(AckState::Failed, Some(format!("the speaker stopped answering: {error} (gateway)")), None)
                        .await;
                    return Ending::Silent(error);
                }
                force = true;
            }
        }
        if tokio::time::Instant::now() + FOLLOW_INTERVAL > end {
            return Ending::Overdue;
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        words = read(force).await;
    }
}

enum Found {
    Slot(SlotReport),
    Refused(protocol::speaker::Reason),
    Nothing,
}

fn find(block: &LogBlock, command: u64) -> Found {
    if let Some(slot) = block.slots.iter().find(|s| s.command == command) {
        return Found::Slot(*slot);
    }
    match block.verdict {
        Some(Err((id, reason))) if id == command => Found::Refused(reason),
        _ => Found::Nothing,
    }
}

/// Refusals in a command log that no follow of the gateway's reports: envelopes written
/// into the mailbox by someone else (a cable on the bus: forged, tampered, or a replay of
/// a real command), which the device refused. Only slots changed after `since` (the log
/// sequence last looked at) count, and not those `told` says were reported already.
pub fn foreign_refusals(block: &LogBlock, since: u16, told: impl Fn(&SlotReport) -> bool) -> Vec<SlotReport> {
    block
        .slots
        .iter()
        .filter(|s| s.state == CommandState::Refused)
        .filter(|s| (s.seq.wrapping_sub(since) as i16) > 0 && (block.seq.wrapping_sub(s.seq) as i16) >= 0)
        .filter(|s| !told(s))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use protocol::speaker::{LOG_BASE, LOG_REGISTERS, Reason, SLOT_BASE, SLOT_STRIDE};

    use super::*;

    fn slot(state: CommandState, reason: Reason) -> SlotReport {
        SlotReport { command: 7, broadcast: 1, state, reason, seq: 1, repeat: 0 }
    }

    /// A command log block with one slot per `(command, state, reason, seq)`.
    fn block(seq: u16, slots: &[(u64, CommandState, Reason, u16)]) -> Vec<u16> {
        let mut regs = vec![0u16; usize::from(LOG_REGISTERS)];
        regs[0] = seq;
        regs[7] = 8;
        for (i, (command, state, reason, at)) in slots.iter().enumerate() {
            let base = usize::from(SLOT_BASE - LOG_BASE) + i * usize::from(SLOT_STRIDE);
            let id = command.to_be_bytes();
            for w in 0..4 {
                regs[base + w] = u16::from_be_bytes([id[2 * w], id[2 * w + 1]]);
            }
            regs[base + 7] = 1;
            regs[base + 8] = *state as u16;
            regs[base + 9] = *reason as u16;
            regs[base + 10] = *at;
        }
        regs
    }

    #[test]
    fn every_slot_state_maps_to_the_ack_of_the_table() {
        use AckState as A;
        use CommandState as S;
        type Case = (S, Reason, Vec<(A, Option<&'static str>)>);
        let cases: [Case; 8] = [
            (S::Received, Reason::None, vec![(A::Delivered, None)]),
            (S::Playing, Reason::None, vec![(A::Delivered, None), (A::Playing, None)]),
            (S::Played, Reason::None, vec![(A::Delivered, None), (A::Played, None)]),
            (
                S::Preempted,
                Reason::Preempted,
                vec![(A::Delivered, None), (A::Interrupted, Some("preempted (speaker)"))],
            ),
            (S::Interrupted, Reason::Stopped, vec![(A::Delivered, None), (A::Interrupted, Some("stopped (speaker)"))]),
            (S::Refused, Reason::BadSignature, vec![(A::Refused, Some("bad_signature (speaker)"))]),
            (S::Failed, Reason::NotReady, vec![(A::Failed, Some("not_ready (speaker)"))]),
            (S::Done, Reason::None, vec![(A::Done, None)]),
        ];
        for (state, reason, want) in cases {
            let got = acks_for(None, &slot(state, reason));
            let want: Vec<(A, Option<String>)> = want.into_iter().map(|(a, r)| (a, r.map(String::from))).collect();
            assert_eq!(got, want, "{state:?}");
        }
        // Once seen, only the change is told; no change, no ack.
        let playing = slot(S::Playing, Reason::None);
        assert_eq!(acks_for(Some(S::Received), &playing), vec![(A::Playing, None)]);
        assert!(acks_for(Some(S::Playing), &playing).is_empty());
        assert_eq!(
            acks_for(Some(S::Preempted), &playing),
            vec![(A::Playing, None)],
            "a resume after pre-emption is told"
        );
    }

    type Acks = Arc<Mutex<Vec<(AckState, Option<String>)>>>;

    const WHO: Followed<'static> = Followed { command: 7, gateway: "gw-dongcun", device: "dongcun-speaker-1" };

    async fn run(first: Vec<u16>, reads: Vec<Result<Vec<u16>, String>>, deadline: Duration) -> (Ending, Acks, usize) {
        let reads = reads.into_iter().map(|r| r.map(Some)).collect();
        run_looks(first, reads, deadline).await
    }

    async fn run_looks(
        first: Vec<u16>,
        reads: Vec<Result<Option<Vec<u16>>, String>>,
        deadline: Duration,
    ) -> (Ending, Acks, usize) {
        let acks: Acks = Arc::default();
        let reads = Arc::new(Mutex::new(reads.into_iter()));
        let count = Arc::new(Mutex::new(0usize));
        let (a, r, c) = (acks.clone(), reads.clone(), count.clone());
        let ending = follow(
            WHO,
            (first, Vec::new()),
            move |_force| {
                *c.lock().unwrap() += 1;
                let next = r.lock().unwrap().next().unwrap_or_else(|| Err("no more answers".into()));
                async move { next.map(|w| w.map(|w| (w, Vec::new()))) }
            },
            // A terminal without a key: an empty receipt block.
            |_slot| async { Ok(vec![0u16; usize::from(protocol::receipt::BLOCK_REGISTERS)]) },
            move |state, reason, _receipt| {
                a.lock().unwrap().push((state, reason));
                async {}
            },
            deadline,
        )
        .await;
        let n = *count.lock().unwrap();
        (ending, acks, n)
    }

    #[tokio::test(start_paused = true)]
    async fn following_ends_when_the_speaker_reports_a_final_state() {
        use CommandState as S;
        let received = block(1, &[(7, S::Received, Reason::None, 1)]);
        let playing = block(2, &[(7, S::Playing, Reason::None, 2)]);
        let played = block(3, &[(7, S::Played, Reason::None, 3)]);
        let started = tokio::time::Instant::now();
        let (ending, acks, reads) =
            run(received, vec![Ok(playing.clone()), Ok(playing), Ok(played)], Duration::from_secs(600)).await;
        assert_eq!(ending, Ending::Final { state: S::Played, seq: 3 });
        assert_eq!(reads, 3, "no read after the final state");
        let states: Vec<AckState> = acks.lock().unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(states, vec![AckState::Delivered, AckState::Playing, AckState::Played]);
        assert_eq!(started.elapsed(), FOLLOW_INTERVAL * 3, "read every {FOLLOW_INTERVAL:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn following_ends_on_a_refusal_a_silent_speaker_a_lost_command_and_the_deadline() {
        use CommandState as S;
        // Refused in the first read: one ack, no further read.
        let refused = block(1, &[(7, S::Refused, Reason::Replayed, 1)]);
        let (ending, acks, reads) = run(refused, vec![], Duration::from_secs(600)).await;
        assert_eq!((ending, reads), (Ending::Final { state: S::Refused, seq: 1 }, 0));
        assert_eq!(acks.lock().unwrap()[0], (AckState::Refused, Some("replayed (speaker)".into())));

        // Refused without a slot: the verdict registers name the command.
        let mut verdict = block(1, &[]);
        verdict[1] = 2;
        verdict[2] = Reason::BadSignature as u16;
        verdict[6] = 7;
        let (ending, _, _) = run(verdict, vec![], Duration::from_secs(600)).await;
        assert_eq!(ending, Ending::Refused);

        // The speaker stops answering: failed with the error after the silence limit.
        let received = block(1, &[(7, S::Received, Reason::None, 1)]);
        let started = tokio::time::Instant::now();
        let (ending, acks, _) = run(received.clone(), vec![], Duration::from_secs(600)).await;
        assert_eq!(ending, Ending::Silent("no more answers".into()));
        assert!(started.elapsed() >= SILENCE_LIMIT && started.elapsed() < SILENCE_LIMIT + Duration::from_secs(1));
        let last = acks.lock().unwrap().last().cloned().unwrap();
        assert_eq!(last.0, AckState::Failed);
        assert!(last.1.unwrap().contains("no more answers (gateway)"));

        // The log moved on without the command.
        let empty = block(9, &[(8, S::Played, Reason::None, 9)]);
        let (ending, _, reads) =
            run(received.clone(), vec![Ok(empty.clone()), Ok(empty.clone()), Ok(empty)], Duration::from_secs(600))
                .await;
        assert_eq!((ending, reads), (Ending::Lost, 3));

        // Still waiting (a start time far ahead) at the deadline; an unchanged sequence
        // is neither silence nor a lost command.
        let waiting: Vec<_> = (0..100).map(|_| Ok(None)).collect();
        let (ending, acks, reads) = run_looks(received, waiting, Duration::from_secs(8)).await;
        assert_eq!(ending, Ending::Overdue);
        assert!((18..=20).contains(&reads), "{reads}");
        assert_eq!(acks.lock().unwrap().len(), 1, "only the first delivered");
    }

    #[test]
    fn only_new_refusals_of_envelopes_the_gateway_did_not_write_are_foreign() {
        use CommandState as S;
        let regs = block(
            12,
            &[
                (5, S::Refused, Reason::BadSignature, 4),
                (6, S::Refused, Reason::BadSignature, 11),
                (7, S::Refused, Reason::Replayed, 12),
                (8, S::Played, Reason::None, 12),
            ],
        );
        let b = decode_log(&regs).unwrap();
        let found: Vec<u64> = foreign_refusals(&b, 10, |s| s.command == 7).iter().map(|s| s.command).collect();
        assert_eq!(found, vec![6], "5 is older than the last look, 7 was told already, 8 not refused");
        assert!(foreign_refusals(&b, 12, |_| false).is_empty());
    }

    /// The receipt block a terminal with key `seed` shows for `command` at `state`.
    fn signed_block(seed: u8, command: u64, state: CommandState, seq: u16, counter: u64) -> Vec<u16> {
        let r = Receipt {
            gateway: WHO.gateway.into(),
            device: WHO.device.into(),
            command,
            broadcast: 1,
            state: state as u16,
            reason: 0,
            counter,
        };
        let sig = r.sign(&ed25519_dalek::SigningKey::from_bytes(&[seed; 32]));
        let b = ReceiptBlock { seq, counter, sig };
        (0..protocol::receipt::BLOCK_REGISTERS).map(|i| b.word(i).unwrap()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn each_ack_carries_the_speakers_receipt_of_that_state_and_a_lagging_receipt_is_read_again() {
        use CommandState as S;
        let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]).verifying_key();
        let playing = block(2, &[(7, S::Playing, Reason::None, 2)]);
        let played = block(3, &[(7, S::Played, Reason::None, 3)]);
        // The first receipt read still shows the playing (seq 2) when the log says played
        // (seq 3): the gateway reads the log again before it relays anything.
        let receipts = Arc::new(Mutex::new(
            vec![signed_block(3, 7, S::Playing, 2, 10), signed_block(3, 7, S::Played, 3, 11)].into_iter(),
        ));
        // The latest receipt read with the log is of the playing: used for the first look;
        // the second look's latest is of another slot, so the slot's own block is read.
        let latest = |b: Vec<u16>, slot: u16| {
            let mut l = vec![slot + 1];
            l.extend(b);
            l
        };
        let first = (playing, latest(signed_block(3, 7, S::Playing, 2, 10), 0));
        let other = latest(signed_block(3, 9, S::Played, 5, 12), 3);
        let reads = Arc::new(Mutex::new(
            vec![Ok(Some((played.clone(), other.clone()))), Ok(Some((played, other)))].into_iter(),
        ));
        let forced = Arc::new(Mutex::new(Vec::new()));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (r, f, p, a) = (reads.clone(), forced.clone(), receipts.clone(), acks.clone());
        let ending = follow(
            WHO,
            first,
            move |force| {
                f.lock().unwrap().push(force);
                let next: Result<Option<Look>, String> =
                    r.lock().unwrap().next().unwrap_or_else(|| Err("no more answers".into()));
                async move { next }
            },
            move |slot| {
                assert_eq!(slot, 0, "the slot that holds the command");
                let next = p.lock().unwrap().next().ok_or_else(|| "no receipt".to_string());
                async move { next }
            },
            move |state, reason, receipt| {
                a.lock().unwrap().push((state, reason, receipt));
                async {}
            },
            Duration::from_secs(600),
        )
        .await;
        assert_eq!(ending, Ending::Final { state: S::Played, seq: 3 });
        assert_eq!(*forced.lock().unwrap(), vec![false, true], "a lagging receipt forces a whole read");
        let acks = acks.lock().unwrap().clone();
        let states: Vec<AckState> = acks.iter().map(|(s, _, _)| *s).collect();
        assert_eq!(states, vec![AckState::Delivered, AckState::Playing, AckState::Played]);
        for (state, _, receipt) in &acks {
            let receipt = receipt.as_ref().expect("every ack carries the speaker's receipt");
            assert_eq!(receipt.verify(&key), Ok(()));
            assert!(receipt.receipt.supports(*state), "{state:?}");
        }
        assert_eq!(acks[2].2.as_ref().unwrap().receipt.counter, 11);

        // Positive control of the check: a block signed for another state is not the
        // slot's receipt, and an empty block is a terminal without a key.
        let slot_played =
            SlotReport { command: 7, broadcast: 1, state: S::Played, reason: Reason::None, seq: 3, repeat: 0 };
        let Proof::Signed(lie) = proof(WHO, &slot_played, &signed_block(3, 7, S::Playing, 3, 12)) else { panic!() };
        assert!(lie.verify(&key).is_err(), "a playing receipt does not make a played");
        assert_eq!(proof(WHO, &slot_played, &[0; 37]), Proof::None);
        assert_eq!(proof(WHO, &slot_played, &[1; 3]), Proof::None);
    }
}
