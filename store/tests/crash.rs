//! The crash test: a real process is killed with SIGKILL at random moments while several
//! threads append, and every batch it was told is durable must be in the store exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use protocol::Timestamp;
use store::{HOUR_MS, Store, StoreConfig};

const T0: i64 = 1_767_225_600_000;
/// Writer threads in the child, sharing the store (and its fsyncs).
const THREADS: usize = 3;

/// Readings in batch `seq` (mirrors `crash-writer`).
fn readings_in(seq: u64) -> u64 {
    1 + seq % 5
}

/// xorshift64*: enough randomness to vary the kill points without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn parse(line: &str) -> Option<(usize, u64)> {
    let (t, seq) = line.split_once(' ')?;
    Some((t.parse().ok()?, seq.parse().ok()?))
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_batch_and_stores_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    // Per thread: the highest seq known to be stored.
    let mut stored_before = [0u64; THREADS];
    for round in 0..16 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(dir.path())
            .arg(THREADS.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a random number of acknowledged batches: mid-append, mid-fsync,
        // mid-checkpoint, wherever the writers happen to be.
        let kill_after = 50 + rng.below(1500);
        let mut acked: Vec<Vec<u64>> = vec![Vec::new(); THREADS];
        let mut n = 0;
        for line in lines.by_ref() {
            let (t, seq) = parse(&line.unwrap()).unwrap();
            acked[t].push(seq);
            n += 1;
            if n >= kill_after {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        // Acks printed before the kill landed are acknowledged too (a line cut by the kill
        // does not parse and is ignored).
        for (t, seq) in lines.map_while(Result::ok).filter_map(|l| parse(&l)) {
            acked[t].push(seq);
        }
        assert!(!status.success(), "round {round}: the writer stopped by itself: {status}");

        // Every third round also simulates a power cut mid-write: half a frame at the end
        // of the newest log segment, which open must report and cut off.
        let torn = round % 3 == 2;
        if torn {
            let newest = std::fs::read_dir(dir.path().join("wal")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
            let mut f = std::fs::OpenOptions::new().append(true).open(newest).unwrap();
            std::io::Write::write_all(&mut f, &[200, 0, 0, 0, 9, 9, 9, 9, 1, 42, 0]).unwrap();
        }
        let config = StoreConfig { background_checkpoints: false, ..StoreConfig::new(dir.path()) };
        let (store, report) = Store::open(config).unwrap();
        assert_eq!(report.torn_bytes > 0, torn, "round {round}: torn tail reported wrongly: {report:?}");
        for t in 0..THREADS {
            let acks = &acked[t];
            if let Some(&first) = acks.first() {
                assert_eq!(first, stored_before[t] + 1, "round {round}, thread {t}: the stream does not continue");
                assert!(acks.windows(2).all(|w| w[1] == w[0] + 1), "round {round}, thread {t}: acks not consecutive");
            }
            let stored = store.gateway_seq(&format!("crash-gw-{t}")).unwrap_or(0);
            let acked_max = acks.last().copied().unwrap_or(stored_before[t]);
            assert!(stored >= acked_max, "round {round}, thread {t}: acked up to {acked_max}, stored up to {stored}");
            // A batch may be durable without its ack having been printed; the next round
            // continues after it.
            stored_before[t] = stored;
            let expected: u64 = (1..=stored).map(readings_in).sum();
            let end = T0 + (stored as i64 + 2) * 60_000;
            let end = Timestamp(end - end.rem_euclid(HOUR_MS) + HOUR_MS);
            let (mut points, mut bucketed) = (0u64, 0u64);
            for d in 0..3 {
                let device = format!("dev-{t}-{d}");
                let pts = store.range(&device, "flow", Timestamp(T0), end, usize::MAX).unwrap();
                assert!(pts.windows(2).all(|w| w[0].ts < w[1].ts), "round {round}: {device} has a timestamp twice");
                points += pts.len() as u64;
                let buckets = store.range_bucketed(&device, "flow", Timestamp(T0), end, HOUR_MS).unwrap();
                bucketed += buckets.iter().map(|b| b.count).sum::<u64>();
            }
            assert_eq!(points, expected, "round {round}, thread {t}: points of batches 1..={stored} ({report:?})");
            assert_eq!(bucketed, expected, "round {round}, thread {t}: hour roll-ups disagree with raw points");
        }
        println!(
            "round {round}: killed after {n} acks, stored seqs {stored_before:?}, {} records replayed, torn {}",
            report.records, report.torn_bytes
        );
    }
}
