//! Behaviour of the store as ingest sees it: exactly-once batches, sealing, roll-ups,
//! retention and queries.

use protocol::Family;

use crate::rollup::Agg;

use super::*;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn batch(gw: &str, seq: u64, ts: i64, v: f64) -> Batch {
    Batch { gateway: gw.into(), seq, readings: vec![Reading::new("dev-1", Metric::new("flow"), Timestamp(ts), v)] }
}

/// Day-wide partitions, so the tests' arithmetic is in days; the crash test and the
/// background test use the default width.
fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        background_checkpoints: false,
        raw_partition_ms: DAY_MS,
        hour_partition_ms: 32 * DAY_MS,
        ..StoreConfig::new(dir)
    }
}

fn open(dir: &std::path::Path) -> (Store, OpenReport) {
    Store::open(config(dir)).unwrap()
}

fn readings(device: &str, metric: &str, points: &[(i64, f64)]) -> Vec<Reading> {
    points.iter().map(|&(t, v)| Reading::new(device, Metric::new(metric), Timestamp(t), v)).collect()
}

fn wal_segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("wal")).unwrap().count()
}

#[test]
fn the_store_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn a_stored_batch_survives_reopening_and_is_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = open(dir.path());
        let out = s.append_batches(&[batch("g", 1, 1000, 1.5), batch("g", 2, 2000, 2.5)]).unwrap();
        assert_eq!(out, vec![AppendOutcome::Stored { readings: 1 }; 2]);
    }
    let (s, report) = open(dir.path());
    assert_eq!((report.records, report.torn_bytes, report.series), (2, 0, 1));
    assert_eq!(s.gateway_seq("g"), Some(2));
    assert_eq!(s.append_batches(&[batch("g", 2, 2000, 9.9)]).unwrap(), vec![AppendOutcome::Duplicate]);
    let pts = s.range("dev-1", "flow", Timestamp(0), Timestamp(10_000), 100).unwrap();
    assert_eq!(pts.iter().map(|p| p.value).collect::<Vec<_>>(), vec![1.5, 2.5]);
}

#[test]
fn duplicates_within_one_call_are_caught_too() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let out = s.append_batches(&[batch("g", 5, 1, 1.0), batch("g", 5, 1, 1.0), batch("h", 5, 1, 1.0)]).unwrap();
    assert_eq!(out[1], AppendOutcome::Duplicate);
    assert_eq!(out[2], AppendOutcome::Stored { readings: 1 });
}

#[test]
fn latest_is_the_newest_by_time_not_by_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.append_batches(&[batch("g", 1, 5000, 5.0), batch("g", 2, 1000, 1.0)]).unwrap();
    let latest = s.latest();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].point.value, 5.0);
}

#[test]
fn a_checkpoint_seals_the_log_so_reopening_replays_nothing_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = open(dir.path());
        for seq in 1..=100u64 {
            s.append_batches(&[batch("g", seq, T0 + seq as i64 * 60_000, seq as f64)]).unwrap();
        }
        let report = s.checkpoint().unwrap();
        assert_eq!(report.points, 100);
        assert_eq!(wal_segments(dir.path()), 1, "sealed segments are deleted");
        s.append_batches(&[batch("g", 101, T0 + 101 * 60_000, 101.0)]).unwrap();
    }
    let (s, report) = open(dir.path());
    assert_eq!(report.records, 1, "only the batch after the checkpoint is replayed");
    assert_eq!(s.gateway_seq("g"), Some(101));
    assert_eq!(s.append_batches(&[batch("g", 50, T0, 0.0)]).unwrap(), vec![AppendOutcome::Duplicate]);
    let pts = s.range("dev-1", "flow", Timestamp(T0), Timestamp(T0 + DAY_MS), 1000).unwrap();
    assert_eq!(pts.len(), 101);
    assert!(pts.windows(2).all(|w| w[0].ts < w[1].ts));
    assert_eq!(s.latest()[0].point.value, 101.0);
}

#[test]
fn readings_without_a_gateway_are_stored_and_survive_a_checkpoint_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = open(dir.path());
        s.append_readings(&readings("sensor-7", "my_custom_metric", &[(T0, 1.0), (T0 + 1, 2.0)])).unwrap();
        s.checkpoint().unwrap();
        s.append_readings(&readings("sensor-7", "my_custom_metric", &[(T0 + 2, 3.0)])).unwrap();
    }
    let (s, _) = open(dir.path());
    let pts = s.range("sensor-7", "my_custom_metric", Timestamp(T0), Timestamp(T0 + 10), 10).unwrap();
    assert_eq!(pts.iter().map(|p| p.value).collect::<Vec<_>>(), vec![1.0, 2.0, 3.0]);
    assert_eq!(s.latest()[0].metric.name(), "my_custom_metric");
}

#[test]
fn range_respects_the_limit_and_refuses_a_reversed_range() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.append_readings(&readings("d", "ph", &[(T0, 1.0), (T0 + 1, 2.0), (T0 + 2, 3.0)])).unwrap();
    assert_eq!(s.range("d", "ph", Timestamp(T0), Timestamp(T0 + 3), 2).unwrap().len(), 2);
    assert!(matches!(s.range("d", "ph", Timestamp(5), Timestamp(1), 2), Err(StoreError::BadQuery(_))));
    assert!(matches!(s.range_bucketed("d", "ph", Timestamp(0), Timestamp(1), 0), Err(StoreError::BadQuery(_))));
    assert!(s.range("nobody", "ph", Timestamp(0), Timestamp(1), 2).unwrap().is_empty());
}

/// Writes the same minute of points three ways: sealed, rewritten after sealing, and
/// rewritten again in the head.
#[test]
fn a_point_written_twice_is_counted_once_in_the_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let pts: Vec<(i64, f64)> = (0..6).map(|i| (T0 + i * 10_000, i as f64)).collect();
    s.append_readings(&readings("d", "ph", &pts)).unwrap();
    s.append_readings(&readings("d", "ph", &pts[..3])).unwrap(); // same ts, same values, in the head
    let check = |when: &str| {
        for step in [MINUTE_MS, HOUR_MS] {
            let b = s.range_bucketed("d", "ph", Timestamp(T0), Timestamp(T0 + HOUR_MS), step).unwrap();
            assert_eq!(b.len(), 1, "{when}, step {step}");
            assert_eq!(
                (b[0].count, b[0].min, b[0].max, b[0].mean, b[0].last),
                (6, 0.0, 5.0, 2.5, 5.0),
                "{when}, step {step}"
            );
        }
    };
    check("in the head");
    s.checkpoint().unwrap();
    check("sealed");
    s.append_readings(&readings("d", "ph", &pts[2..])).unwrap();
    check("sealed and rewritten in the head");
    s.checkpoint().unwrap();
    check("sealed twice");
    drop(s);
    let (s, _) = open(dir.path());
    let b = s.range_bucketed("d", "ph", Timestamp(T0), Timestamp(T0 + HOUR_MS), HOUR_MS).unwrap();
    assert_eq!(b[0].count, 6, "after reopening");
}

#[test]
fn a_rewritten_timestamp_takes_the_later_value_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    s.append_readings(&readings("d", "ph", &[(T0, 7.0), (T0 + 60_000, 7.2)])).unwrap();
    s.checkpoint().unwrap();
    s.append_readings(&readings("d", "ph", &[(T0, 6.5)])).unwrap();
    for sealed in [false, true] {
        let p = s.range("d", "ph", Timestamp(T0), Timestamp(T0 + 1), 10).unwrap();
        assert_eq!(p[0].value, 6.5, "sealed: {sealed}");
        let b = s.range_bucketed("d", "ph", Timestamp(T0), Timestamp(T0 + HOUR_MS), HOUR_MS).unwrap();
        assert_eq!((b[0].count, b[0].min), (2, 6.5), "sealed: {sealed}");
        s.checkpoint().unwrap();
    }
}

#[test]
fn late_and_out_of_order_points_keep_the_rollups_in_step_with_the_raw_data() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    // Two days of minute data, written newest day first, then a late point in day one.
    let day =
        |d: i64| -> Vec<(i64, f64)> { (0..1440).map(|m| (T0 + d * DAY_MS + m * MINUTE_MS, (m % 60) as f64)).collect() };
    s.append_readings(&readings("cow-1", "body_temperature", &day(1))).unwrap();
    s.checkpoint().unwrap();
    s.append_readings(&readings("cow-1", "body_temperature", &day(0))).unwrap();
    s.checkpoint().unwrap();
    s.append_readings(&readings("cow-1", "body_temperature", &[(T0 + 90 * 60_000 + 30_000, 100.0)])).unwrap();
    let to = T0 + 2 * DAY_MS;
    let raw_truth = {
        let pts = s.range("cow-1", "body_temperature", Timestamp(T0), Timestamp(to), usize::MAX).unwrap();
        let mut f = Folder::new(6 * HOUR_MS);
        for p in pts {
            f.add(&Agg { start: p.ts.0, count: 1, min: p.value, max: p.value, sum: p.value, last: p.value });
        }
        f.finish()
    };
    assert_eq!(raw_truth.iter().map(|a| a.count).sum::<u64>(), 2881);
    for sealed in [false, true] {
        for step in [6 * HOUR_MS, 360 * MINUTE_MS] {
            // Same buckets from hour roll-ups, minute roll-ups (offset by a minute so hours
            // cannot answer), and raw points (offset by a millisecond).
            for offset in [0, MINUTE_MS, 1] {
                let b =
                    s.range_bucketed("cow-1", "body_temperature", Timestamp(T0 - offset), Timestamp(to), step).unwrap();
                let got: Vec<(i64, u64, f64, f64, f64, f64)> =
                    b.iter().map(|b| (b.start.0, b.count, b.min, b.max, b.mean, b.last)).collect();
                let want: Vec<(i64, u64, f64, f64, f64, f64)> = raw_truth
                    .iter()
                    .map(|a| (a.start, a.count, a.min, a.max, a.sum / a.count as f64, a.last))
                    .collect();
                assert_eq!(got, want, "sealed: {sealed}, offset {offset}");
            }
        }
        s.checkpoint().unwrap();
    }
}

#[test]
fn bucketed_queries_pick_the_coarsest_rollup_that_fits() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.retention.insert(Family::Health, Retention::days(1, 3, 30));
    let (s, _) = Store::open(c).unwrap();
    let pts: Vec<(i64, f64)> = (0..24 * 60).map(|m| (T0 + m * MINUTE_MS, 1.0)).collect();
    s.append_readings(&readings("gw-1", "queue_fill", &pts)).unwrap();
    s.checkpoint().unwrap();
    // Raw kept 1 day and minute roll-ups 3: after 5 days only hour roll-ups are left.
    s.enforce_retention(Timestamp(T0 + 5 * DAY_MS)).unwrap();
    let q = |from: i64, step: i64| {
        s.range_bucketed("gw-1", "queue_fill", Timestamp(from), Timestamp(T0 + DAY_MS), step)
            .unwrap()
            .iter()
            .map(|b| b.count)
            .sum::<u64>()
    };
    assert_eq!(q(T0, HOUR_MS), 1440, "answered from hour roll-ups");
    assert_eq!(q(T0, 90 * MINUTE_MS), 0, "a 90-minute step needs minute roll-ups, which are gone");
    assert_eq!(q(T0 + 1, HOUR_MS), 0, "an unaligned range needs raw points, which are gone");
}

#[test]
fn retention_drops_whole_partitions_of_that_family_only() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    // 40 days of hourly points for a Health metric (raw kept 30 days) and an Animal metric
    // (raw kept 400 days).
    let pts: Vec<(i64, f64)> = (0..40 * 24).map(|h| (T0 + h * HOUR_MS, h as f64)).collect();
    s.append_readings(&readings("gw-1", "queue_fill", &pts)).unwrap();
    s.append_readings(&readings("cow-1", "rumination", &pts)).unwrap();
    s.checkpoint().unwrap();
    let now = T0 + 40 * DAY_MS;
    let report = s.enforce_retention(Timestamp(now)).unwrap();
    assert!(report.dropped.iter().all(|&(tier, f, _)| f == Family::Health && tier == Resolution::Raw));
    assert_eq!(report.dropped.len(), 10, "the 10 whole days that ended before now - 30 days");
    let count =
        |dev: &str, metric: &str| s.range(dev, metric, Timestamp(T0), Timestamp(now), usize::MAX).unwrap().len();
    assert_eq!(count("gw-1", "queue_fill"), 30 * 24);
    assert_eq!(count("cow-1", "rumination"), 40 * 24);
    // A late point into a dropped partition is discarded when sealed, not resurrected.
    s.append_readings(&readings("gw-1", "queue_fill", &[(T0 + 5, 0.5)])).unwrap();
    assert_eq!(s.checkpoint().unwrap().expired_points, 1);
    assert_eq!(count("gw-1", "queue_fill"), 30 * 24);
    // Running it again with the same time drops nothing; it survives reopening.
    assert!(s.enforce_retention(Timestamp(now)).unwrap().dropped.is_empty());
    drop(s);
    let (s, _) = open(dir.path());
    assert_eq!(s.range("gw-1", "queue_fill", Timestamp(T0), Timestamp(now), usize::MAX).unwrap().len(), 30 * 24);
}

#[test]
fn a_store_refuses_to_reopen_with_another_partition_width() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let mut c = config(dir.path());
    c.raw_partition_ms = 2 * DAY_MS;
    assert!(matches!(Store::open(c), Err(StoreError::Config(_))));
}

#[test]
fn the_background_sealer_checkpoints_when_the_head_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = StoreConfig::new(dir.path());
    c.checkpoint_points = 100;
    c.fsync = FsyncPolicy::Never;
    let (s, _) = Store::open(c.clone()).unwrap();
    for seq in 1..=50u64 {
        let b = Batch {
            gateway: "g".into(),
            seq,
            readings: readings(
                "d",
                "flow",
                &(0..10).map(|i| (T0 + (seq * 10 + i) as i64 * 1000, 1.0)).collect::<Vec<_>>(),
            ),
        };
        s.append_batches(&[b]).unwrap();
    }
    drop(s); // joins the sealer
    let (s, report) = Store::open(StoreConfig { background_checkpoints: false, ..c }).unwrap();
    assert!(report.records < 50, "the sealer checkpointed at least once ({} records replayed)", report.records);
    assert_eq!(s.range("d", "flow", Timestamp(T0), Timestamp(T0 + DAY_MS), usize::MAX).unwrap().len(), 500);
}

#[test]
fn a_torn_log_tail_is_reported_and_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = open(dir.path());
        s.append_batches(&[batch("g", 1, T0, 1.0)]).unwrap();
    }
    let seg = std::fs::read_dir(dir.path().join("wal")).unwrap().map(|e| e.unwrap().path()).max().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&bytes.clone()[..whole / 2]);
    std::fs::write(&seg, &bytes).unwrap();
    let (s, report) = open(dir.path());
    assert_eq!(report.torn_bytes, (whole / 2) as u64);
    assert_eq!(s.gateway_seq("g"), Some(1));
}

#[test]
fn minute_rollups_of_minute_data_cost_nothing_and_outlive_their_raw_partition() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.retention.insert(Family::Health, Retention::days(1, 10, 30));
    let (s, _) = Store::open(c.clone()).unwrap();
    let pts: Vec<(i64, f64)> = (0..24 * 60).map(|m| (T0 + m * MINUTE_MS + 7, (m % 17) as f64)).collect();
    s.append_readings(&readings("gw-1", "queue_fill", &pts)).unwrap();
    s.checkpoint().unwrap();
    assert!(s.block_bytes().unwrap().minute < 16, "one marker byte, not a copy of the data");
    let minutes = |s: &Store| {
        s.range_bucketed("gw-1", "queue_fill", Timestamp(T0), Timestamp(T0 + DAY_MS), 90 * MINUTE_MS).unwrap()
    };
    let before = minutes(&s);
    assert_eq!(before.iter().map(|b| b.count).sum::<u64>(), 1440);
    let report = s.enforce_retention(Timestamp(T0 + 3 * DAY_MS)).unwrap();
    assert_eq!(report.dropped, vec![(Resolution::Raw, Family::Health, T0)]);
    assert!(s.range("gw-1", "queue_fill", Timestamp(T0), Timestamp(T0 + DAY_MS), 10).unwrap().is_empty());
    assert_eq!(minutes(&s), before, "the minute roll-ups were written out before the raw data went");
    drop(s);
    let (s, _) = Store::open(c).unwrap();
    assert_eq!(minutes(&s), before);
}

#[test]
fn closing_seals_the_head_and_compacts_so_reopening_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = Store::open(StoreConfig::new(dir.path())).unwrap();
    let pts: Vec<(i64, f64)> = (0..5000).map(|i| (T0 + i * 60_000, (i % 100) as f64 * 0.01)).collect();
    s.append_batches(&[Batch { gateway: "g".into(), seq: 1, readings: readings("d", "ph", &pts) }]).unwrap();
    s.close().unwrap();
    let (s, report) = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(report.records, 0);
    assert_eq!(s.gateway_seq("g"), Some(1));
    assert_eq!(s.range("d", "ph", Timestamp(T0), Timestamp(T0 + 5000 * 60_000), usize::MAX).unwrap().len(), 5000);
}

#[test]
fn concurrent_calls_store_each_seq_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let s = std::sync::Arc::new(s);
    let stored: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                scope.spawn(move || {
                    (1..=200u64)
                        .map(|seq| s.append_batches(&[batch("g", seq, T0 + seq as i64 * 1000, seq as f64)]).unwrap())
                        .filter(|o| o[0] != AppendOutcome::Duplicate)
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(stored, 200, "every seq stored by exactly one of the racing calls");
    assert_eq!(s.gateway_seq("g"), Some(200));
    assert_eq!(s.range("dev-1", "flow", Timestamp(T0), Timestamp(T0 + DAY_MS), usize::MAX).unwrap().len(), 200);
}

#[test]
fn points_at_the_ends_of_time_are_stored_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    let ends = [(i64::MIN, -1.0), (i64::MIN + DAY_MS - 1, 5.0), (-1, -0.0), (0, 0.0), (i64::MAX - 1, f64::MAX)];
    s.append_readings(&readings("d", "ph", &ends)).unwrap();
    for sealed in [false, true] {
        let p = s.range("d", "ph", Timestamp(i64::MIN), Timestamp(i64::MAX), 10).unwrap();
        let got: Vec<(i64, u64)> = p.iter().map(|p| (p.ts.0, p.value.to_bits())).collect();
        let want: Vec<(i64, u64)> = ends.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(got, want, "sealed: {sealed}");
        let b = s.range_bucketed("d", "ph", Timestamp(i64::MIN), Timestamp(i64::MAX), DAY_MS).unwrap();
        assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 5, "sealed: {sealed}");
        s.checkpoint().unwrap();
    }
}

#[test]
fn a_damaged_block_is_an_error_that_names_the_file_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (s, _) = open(dir.path());
        s.append_readings(&readings("d", "ph", &[(T0, 7.0), (T0 + 60_000, 7.1)])).unwrap();
        s.checkpoint().unwrap();
    }
    // Overwrite the series' raw block with garbage, as bit rot under redb's checksums would
    // look to the codec.
    let db_path = dir.path().join("store.redb");
    {
        let db = redb::Database::open(&db_path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let name = format!("raw.water_quality.{T0}");
            let def: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new(&name);
            let mut t = txn.open_table(def).unwrap();
            t.insert(0u64, &[1u8, 0, 9, 9, 9][..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let (s, _) = open(dir.path());
    let err = s.range("d", "ph", Timestamp(T0), Timestamp(T0 + DAY_MS), 10).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("store.redb") && msg.contains("raw.water_quality"), "{msg}");
    // The other tiers and the newest point still answer.
    assert_eq!(s.latest()[0].point.value, 7.1);
}

#[test]
fn a_store_that_cannot_create_its_directory_says_which_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(config(&file.join("store"))).err().unwrap();
    assert!(matches!(err, StoreError::Io { .. }), "{err}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn an_invalid_config_is_refused_with_every_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.checkpoint_points = 0;
    c.raw_partition_ms = 1000;
    let err = Store::open(c).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("checkpoint_points") && msg.contains("raw_partition_ms"), "{msg}");
}

#[test]
fn a_late_point_into_an_old_partition_updates_only_its_series() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path());
    for d in 0..20 {
        let pts: Vec<(i64, f64)> = (0..60).map(|m| (T0 + m * MINUTE_MS, d as f64)).collect();
        s.append_readings(&readings(&format!("d{d}"), "ph", &pts)).unwrap();
    }
    s.checkpoint().unwrap();
    // One late point for one of the twenty series: written in place, and everything reads back.
    s.append_readings(&readings("d7", "ph", &[(T0 + 30 * MINUTE_MS + 1, 99.0)])).unwrap();
    s.checkpoint().unwrap();
    for d in 0..20 {
        let n = s.range(&format!("d{d}"), "ph", Timestamp(T0), Timestamp(T0 + HOUR_MS), 1000).unwrap().len();
        assert_eq!(n, if d == 7 { 61 } else { 60 }, "series d{d}");
        let b = s.range_bucketed(&format!("d{d}"), "ph", Timestamp(T0), Timestamp(T0 + HOUR_MS), HOUR_MS).unwrap();
        assert_eq!(b[0].max, if d == 7 { 99.0 } else { d as f64 });
    }
}
