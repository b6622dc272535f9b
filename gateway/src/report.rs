//! A device's own verdicts on the signed commands written into its mailbox: the speaker
//! terminal's command log (`protocol::speaker`, input 100..=205) turned into acks.
//!
//! Design constraints:
//! - An ack says what the device reported, never what the gateway hopes: the slot state
//!   maps to an ack as docs/BROADCAST.md ("Gateway duties") tables it, through
//!   [`protocol::speaker::SlotReport::ack`]; reasons the device gave end in `(speaker)`.
//! - Reads go to the task that owns the device's link ([`crate::modbus::Job`]), like polls
//!   and writes: one request at a time on an RS-485 bus, never a second connection.
//! - A command is followed every [`FOLLOW_INTERVAL`] until it is final, instead of waiting
//!   for the device's poll interval. The loop always ends: a final state, the device silent
//!   for [`SILENCE_LIMIT`] (acked `failed` with the Modbus error, which ingest retries), the
//!   command gone from the log, or its expiry plus [`EXPIRY_GRACE`].

use std::future::Future;
use std::time::Duration;

use protocol::command::AckState;
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

/// Follows `command` on its device until it is final. `first` is the command log read
/// right after the envelope was written; `read` looks again (through the link's task):
/// the whole log, or `None` when its sequence did not move; `ack` publishes an ack
/// `(state, reason)`; `deadline` is how long to follow at most.
pub async fn follow<R, RF, A, AF>(command: u64, first: Vec<u16>, mut read: R, mut ack: A, deadline: Duration) -> Ending
where
    R: FnMut() -> RF,
    RF: Future<Output = Result<Option<Vec<u16>>, String>>,
    A: FnMut(AckState, Option<String>) -> AF,
    AF: Future<Output = ()>,
{
    let end = tokio::time::Instant::now() + deadline;
    let mut last: Option<CommandState> = None;
    let mut misses = 0u32;
    let mut silent_since: Option<tokio::time::Instant> = None;
    let mut words = Ok(Some(first));
    loop {
        match words {
            Ok(None) => silent_since = None,
            Ok(Some(regs)) => {
                silent_since = None;
                match decode_log(&regs) {
                    Some(block) => match find(&block, command) {
                        Found::Slot(slot) => {
                            misses = 0;
                            for (state, reason) in acks_for(last, &slot) {
                                ack(state, reason).await;
                            }
                            last = Some(slot.state);
                            if slot.state.is_final() {
                                return Ending::Final { state: slot.state, seq: slot.seq };
                            }
                        }
                        Found::Refused(reason) => {
                            ack(AckState::Refused, Some(format!("{} (speaker)", reason.as_str()))).await;
                            return Ending::Refused;
                        }
                        Found::Nothing => misses += 1,
                    },
                    None => misses += 1,
                }
                if misses >= MISSES_TO_LOSE {
                    let why = "lost: the speaker's command log no longer holds the command (gateway)";
                    ack(AckState::Failed, Some(why.into())).await;
                    return Ending::Lost;
                }
            }
            Err(error) => {
                let since = *silent_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= SILENCE_LIMIT {
                    ack(AckState::Failed, Some(format!("the speaker stopped answering: {error} (gateway)"))).await;
                    return Ending::Silent(error);
                }
            }
        }
        if tokio::time::Instant::now() + FOLLOW_INTERVAL > end {
            return Ending::Overdue;
        }
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        words = read().await;
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
            7,
            first,
            move || {
                *c.lock().unwrap() += 1;
                let next = r.lock().unwrap().next().unwrap_or_else(|| Err("no more answers".into()));
                async move { next }
            },
            move |state, reason| {
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
}
