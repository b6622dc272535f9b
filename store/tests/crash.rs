//! The crash test: a real process is killed with SIGKILL at random moments while it
//! appends, and every batch it was told is durable must be in the store exactly once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use protocol::Timestamp;
use store::{HOUR_MS, Store, StoreConfig};

const GATEWAY: &str = "crash-gw";
const T0: i64 = 1_767_225_600_000;

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

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_batch_and_stores_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    println!("seed {seed}");
    let mut rng = Rng(seed);
    let mut acked_max = 0u64;
    for round in 0..16 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a random number of acknowledged batches: mid-append, mid-checkpoint,
        // wherever the writer happens to be.
        let kill_after = 50 + rng.below(1500);
        let mut acked = Vec::new();
        for line in lines.by_ref() {
            acked.push(line.unwrap().parse::<u64>().unwrap());
            if acked.len() as u64 >= kill_after {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        // Acks printed before the kill landed are acknowledged too.
        acked.extend(lines.map_while(Result::ok).filter_map(|l| l.parse::<u64>().ok()));
        assert!(!status.success(), "round {round}: the writer stopped by itself: {status}");
        assert!(!acked.is_empty(), "round {round}: the writer acknowledged nothing");
        assert_eq!(acked[0], acked_max + 1, "round {round}: the stream does not continue where it stopped");
        assert!(acked.windows(2).all(|w| w[1] == w[0] + 1), "round {round}: acks are not consecutive");
        acked_max = *acked.last().unwrap();

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
        let stored = store.gateway_seq(GATEWAY).unwrap();
        assert!(stored >= acked_max, "round {round}: acked up to {acked_max}, stored only up to {stored}");
        // A batch may be durable without its ack having been printed; the next round starts after it.
        acked_max = stored;
        let expected: u64 = (1..=stored).map(readings_in).sum();
        let (mut points, mut bucketed) = (0u64, 0u64);
        let end =
            Timestamp(T0 + (stored as i64 + 2) * 60_000 - (T0 + (stored as i64 + 2) * 60_000) % HOUR_MS + HOUR_MS);
        for d in 0..3 {
            let device = format!("dev-{d}");
            let pts = store.range(&device, "flow", Timestamp(T0), end, usize::MAX).unwrap();
            assert!(pts.windows(2).all(|w| w[0].ts < w[1].ts), "round {round}: {device} has a timestamp twice");
            points += pts.len() as u64;
            let buckets = store.range_bucketed(&device, "flow", Timestamp(T0), end, HOUR_MS).unwrap();
            bucketed += buckets.iter().map(|b| b.count).sum::<u64>();
        }
        assert_eq!(points, expected, "round {round}: points of batches 1..={stored} (open report {report:?})");
        assert_eq!(bucketed, expected, "round {round}: the hour roll-ups disagree with the raw points");
        println!("round {round}: killed after {} acks, {stored} batches, {points} points, {report:?}", acked.len());
    }
}
