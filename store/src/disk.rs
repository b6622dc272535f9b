//! The sealed data: one redb database file (`store.redb`) of compressed blocks.
//!
//! Tables (names are part of the format, see `docs/STORE.md`):
//! - `meta` (`&str -> i64`): format version, partition widths, the last log segment a
//!   checkpoint sealed (`wal_checkpoint`), the `now` of the last retention run.
//! - `series` (`u32 -> bytes`): the series registry, id -> device and metric.
//! - `gateways` (`&str -> u64`): each gateway's highest stored seq as of the checkpoint.
//! - `latest` (`u32 -> bytes`): the newest point of each series as of the checkpoint.
//! - `raw.<family>.<start>`, `m1.<family>.<start>`, `h1.<family>.<start>` (`u32 -> bytes`):
//!   one time partition of one family's raw points, 1-minute or 1-hour roll-ups; the key
//!   is the series id and the value that series' block for the partition.
//!
//! Design constraints:
//! - One checkpoint is one write transaction: blocks, roll-ups, new series, gateway seqs,
//!   newest points and `wal_checkpoint` commit together (redb fsyncs on commit), so after
//!   any crash the database and the log segments after `wal_checkpoint` together hold
//!   every acknowledged batch exactly once.
//! - A partition is a table of one family, so retention drops whole tables of that family
//!   and never rewrites a block.
//! - Roll-ups of a partition are recomputed from its merged raw block whenever that block
//!   changes; a raw partition lies inside one hour-roll-up partition.
//! - A minute roll-up block may be the "same as raw" marker (every bucket one point). It
//!   is only valid while its raw partition exists: retention writes real roll-up blocks in
//!   place of the markers, in the same transaction that drops the raw partition.
//! - Late points for a raw partition that retention has already dropped are discarded at
//!   sealing (counted in the report): there is no raw block left to keep them consistent with.

use std::collections::{BTreeMap, BTreeSet};

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use protocol::{Family, Metric};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};

use crate::block::{self, Points};
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::head::{Latest, Sealing, SeriesInfo};
use crate::rollup::{self, Agg, HOUR_MS, MINUTE_MS, Resolution, floor_to};
use crate::varint::{self, Reader};

const META: TableDefinition<'_, &str, i64> = TableDefinition::new("meta");
const SERIES: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("series");
const GATEWAYS: TableDefinition<'_, &str, u64> = TableDefinition::new("gateways");
const LATEST: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("latest");

const FORMAT_VERSION: i64 = 1;
const FILE_NAME: &str = "store.redb";

/// A time partition: tier, family, start (ms since the epoch).
pub(crate) type PartKey = (Resolution, Family, i64);

/// Stable names of the families in table names.
const FAMILIES: [(Family, &str); 8] = [
    (Family::Water, "water"),
    (Family::WaterQuality, "water_quality"),
    (Family::Pump, "pump"),
    (Family::Animal, "animal"),
    (Family::Barn, "barn"),
    (Family::Speaker, "speaker"),
    (Family::Health, "health"),
    (Family::External, "external"),
];

fn family_name(f: Family) -> &'static str {
    FAMILIES.iter().find(|(g, _)| *g == f).map_or("external", |(_, n)| n)
}

fn tier_name(r: Resolution) -> &'static str {
    match r {
        Resolution::Raw => "raw",
        Resolution::Minute => "m1",
        Resolution::Hour => "h1",
    }
}

fn table_name(k: PartKey) -> String {
    format!("{}.{}.{}", tier_name(k.0), family_name(k.1), k.2)
}

fn parse_table_name(name: &str) -> Option<PartKey> {
    let mut it = name.splitn(3, '.');
    let tier = match it.next()? {
        "raw" => Resolution::Raw,
        "m1" => Resolution::Minute,
        "h1" => Resolution::Hour,
        _ => return None,
    };
    let fam = it.next()?;
    let family = FAMILIES.iter().find(|(_, n)| *n == fam)?.0;
    Some((tier, family, it.next()?.parse().ok()?))
}

/// Recomputed hour roll-ups by hour partition: `(series, raw partition, its hours)`.
type HourUpdates = BTreeMap<(Family, i64), Vec<(u32, i64, Vec<Agg>)>>;

fn part_def(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

/// Blocks are stored in pieces of at most this many bytes, under keys `sid << 32 | piece`.
/// redb packs four such values into a 4 KiB leaf page; whole blocks of 1-2 KiB left a
/// third of every page empty (measured: 1.5 against 1.2 bytes per reading on disk).
const PIECE: usize = 960;

fn piece_key(sid: u32, piece: u32) -> u64 {
    (u64::from(sid) << 32) | u64::from(piece)
}

fn pieces(sid: u32) -> std::ops::RangeInclusive<u64> {
    piece_key(sid, 0)..=piece_key(sid, u32::MAX)
}

/// The block of `sid` in a partition table, reassembled from its pieces.
fn read_block(
    table: &impl ReadableTable<u64, &'static [u8]>,
    sid: u32,
    path: &Path,
    name: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    let mut n = 0u64;
    for entry in table.range(pieces(sid)).map_err(StoreError::db(path))? {
        let (k, v) = entry.map_err(StoreError::db(path))?;
        if k.value() != piece_key(sid, n as u32) {
            return Err(StoreError::corrupt(path, format!("block of series {sid} in {name}: piece {n} is missing")));
        }
        out.extend_from_slice(v.value());
        n += 1;
    }
    Ok((n > 0).then_some(out))
}

/// Writes `updates` into a partition table, each replacing the block of its series.
///
/// When the updates replace at least half of the table, the table is rebuilt in key order
/// rather than updated in place: replacing blocks in place splits B-tree leaves and left
/// them 76 % full (measured), a table written in key order fills them to ~90 %. A regular
/// checkpoint touches nearly every series of the current partition, so that is the common
/// case; a few late points into an old partition are written in place instead of copying
/// the whole partition.
fn rewrite_table(
    txn: &redb::WriteTransaction,
    name: &str,
    updates: BTreeMap<u32, Vec<u8>>,
    path: &Path,
) -> Result<(), StoreError> {
    {
        let mut table = txn.open_table(part_def(name)).map_err(StoreError::db(path))?;
        let total = table.len().map_err(StoreError::db(path))?;
        let mut replaced = 0u64;
        for &sid in updates.keys() {
            replaced += table.range(pieces(sid)).map_err(StoreError::db(path))?.count() as u64;
        }
        if replaced * 2 < total {
            for (sid, bytes) in &updates {
                table.retain_in(pieces(*sid), |_, _| false).map_err(StoreError::db(path))?;
                for (i, piece) in bytes.chunks(PIECE).enumerate() {
                    table.insert(piece_key(*sid, i as u32), piece).map_err(StoreError::db(path))?;
                }
            }
            return Ok(());
        }
    }
    let mut kept: Vec<(u64, Vec<u8>)> = Vec::new();
    {
        let table = txn.open_table(part_def(name)).map_err(StoreError::db(path))?;
        for entry in table.iter().map_err(StoreError::db(path))? {
            let (k, v) = entry.map_err(StoreError::db(path))?;
            if !updates.contains_key(&((k.value() >> 32) as u32)) {
                kept.push((k.value(), v.value().to_vec()));
            }
        }
    }
    txn.delete_table(part_def(name)).map_err(StoreError::db(path))?;
    let mut table = txn.open_table(part_def(name)).map_err(StoreError::db(path))?;
    let mut kept = kept.into_iter().peekable();
    for (sid, bytes) in updates {
        while let Some((k, v)) = kept.next_if(|(k, _)| *k < piece_key(sid, 0)) {
            table.insert(k, v.as_slice()).map_err(StoreError::db(path))?;
        }
        for (i, piece) in bytes.chunks(PIECE).enumerate() {
            table.insert(piece_key(sid, i as u32), piece).map_err(StoreError::db(path))?;
        }
    }
    for (k, v) in kept {
        table.insert(k, v.as_slice()).map_err(StoreError::db(path))?;
    }
    Ok(())
}

/// What the database held at open.
pub(crate) struct Loaded {
    pub(crate) series: Vec<(u32, SeriesInfo)>,
    pub(crate) gateways: Vec<(String, u64)>,
    pub(crate) latest: Vec<(u32, Latest)>,
    pub(crate) wal_checkpoint: u64,
}

/// What one checkpoint wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Points sealed into blocks.
    pub points: u64,
    /// Raw blocks written (one per series and partition touched).
    pub blocks: u64,
    /// Late points discarded because their raw partition had already expired.
    pub expired_points: u64,
    /// The last log segment the checkpoint covers (0: nothing to seal).
    pub wal_segment: u64,
}

/// What one retention run dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Partitions dropped, as `(tier, family, start ms)`.
    pub dropped: Vec<(Resolution, Family, i64)>,
}

pub(crate) struct Disk {
    db: Database,
    path: PathBuf,
    partitions: RwLock<BTreeSet<PartKey>>,
    raw_w: i64,
    hour_w: i64,
    /// The `now` of the last retention run (`i64::MIN` if none).
    retention_now: RwLock<i64>,
}

fn encode_series(info: &SeriesInfo) -> Vec<u8> {
    let mut out = Vec::new();
    varint::put_u64(&mut out, info.device.len() as u64);
    out.extend_from_slice(info.device.as_bytes());
    let name = info.metric.name();
    varint::put_u64(&mut out, name.len() as u64);
    out.extend_from_slice(name.as_bytes());
    out
}

fn decode_series(bytes: &[u8]) -> Option<SeriesInfo> {
    let mut r = Reader::new(bytes);
    let device = std::str::from_utf8(r.bytes()?).ok()?;
    let metric = Metric::new(std::str::from_utf8(r.bytes()?).ok()?);
    r.is_empty().then(|| SeriesInfo { device: device.into(), family: crate::head::family_of(&metric), metric })
}

fn encode_latest(l: Latest) -> [u8; 17] {
    let mut out = [0u8; 17];
    out[..8].copy_from_slice(&l.0.to_le_bytes());
    out[8..16].copy_from_slice(&l.1.to_le_bytes());
    out[16] = l.2;
    out
}

fn decode_latest(b: &[u8]) -> Option<Latest> {
    let b: &[u8; 17] = b.try_into().ok()?;
    let ts = i64::from_le_bytes(b[..8].try_into().ok()?);
    let v = f64::from_le_bytes(b[8..16].try_into().ok()?);
    protocol::Quality::from_code(b[16])?;
    Some((ts, v, b[16]))
}

impl Disk {
    /// Opens or creates the database and checks that its layout matches `config`.
    pub(crate) fn open(config: &StoreConfig) -> Result<(Disk, Loaded), StoreError> {
        let path = config.dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(StoreError::db(&path))?;
        let txn = db.begin_write().map_err(StoreError::db(&path))?;
        let (raw_w, hour_w, wal_checkpoint, retention_now) = {
            let mut meta = txn.open_table(META).map_err(StoreError::db(&path))?;
            let mut get_or_init = |key: &str, init: i64| -> Result<i64, StoreError> {
                if let Some(v) = meta.get(key).map_err(StoreError::db(&path))? {
                    return Ok(v.value());
                }
                meta.insert(key, init).map_err(StoreError::db(&path))?;
                Ok(init)
            };
            let version = get_or_init("format_version", FORMAT_VERSION)?;
            if version != FORMAT_VERSION {
                return Err(StoreError::corrupt(
                    &path,
                    format!("format version {version}, this build reads {FORMAT_VERSION}"),
                ));
            }
            let raw_w = get_or_init("raw_partition_ms", config.raw_partition_ms)?;
            let hour_w = get_or_init("hour_partition_ms", config.hour_partition_ms)?;
            if (raw_w, hour_w) != (config.raw_partition_ms, config.hour_partition_ms) {
                return Err(StoreError::Config(format!(
                    "{} was created with raw_partition_ms = {raw_w} and hour_partition_ms = {hour_w}; \
                     the config says {} and {}",
                    path.display(),
                    config.raw_partition_ms,
                    config.hour_partition_ms
                )));
            }
            let ckpt = get_or_init("wal_checkpoint", 0)?;
            let now = get_or_init("retention_now", i64::MIN)?;
            (raw_w, hour_w, u64::try_from(ckpt).unwrap_or(0), now)
        };
        // Create the fixed tables so read transactions can always open them.
        txn.open_table(SERIES).map_err(StoreError::db(&path))?;
        txn.open_table(GATEWAYS).map_err(StoreError::db(&path))?;
        txn.open_table(LATEST).map_err(StoreError::db(&path))?;
        txn.commit().map_err(StoreError::db(&path))?;

        let txn = db.begin_read().map_err(StoreError::db(&path))?;
        let mut loaded = Loaded { series: Vec::new(), gateways: Vec::new(), latest: Vec::new(), wal_checkpoint };
        for entry in txn.open_table(SERIES).map_err(StoreError::db(&path))?.iter().map_err(StoreError::db(&path))? {
            let (k, v) = entry.map_err(StoreError::db(&path))?;
            let info = decode_series(v.value())
                .ok_or_else(|| StoreError::corrupt(&path, format!("series {} in table series", k.value())))?;
            loaded.series.push((k.value(), info));
        }
        for entry in txn.open_table(GATEWAYS).map_err(StoreError::db(&path))?.iter().map_err(StoreError::db(&path))? {
            let (k, v) = entry.map_err(StoreError::db(&path))?;
            loaded.gateways.push((k.value().to_string(), v.value()));
        }
        for entry in txn.open_table(LATEST).map_err(StoreError::db(&path))?.iter().map_err(StoreError::db(&path))? {
            let (k, v) = entry.map_err(StoreError::db(&path))?;
            let l = decode_latest(v.value()).ok_or_else(|| {
                StoreError::corrupt(&path, format!("newest point of series {} in table latest", k.value()))
            })?;
            loaded.latest.push((k.value(), l));
        }
        let mut partitions = BTreeSet::new();
        for t in txn.list_tables().map_err(StoreError::db(&path))? {
            if let Some(k) = parse_table_name(t.name()) {
                partitions.insert(k);
            }
        }
        drop(txn);
        let disk = Disk {
            db,
            path,
            partitions: RwLock::new(partitions),
            raw_w,
            hour_w,
            retention_now: RwLock::new(retention_now),
        };
        Ok((disk, loaded))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn raw_part(&self, ts: i64) -> i64 {
        floor_to(ts, self.raw_w)
    }

    fn hour_part(&self, ts: i64) -> i64 {
        floor_to(ts, self.hour_w)
    }

    fn width(&self, tier: Resolution) -> i64 {
        match tier {
            Resolution::Raw | Resolution::Minute => self.raw_w,
            Resolution::Hour => self.hour_w,
        }
    }

    fn expired(&self, config: &StoreConfig, k: PartKey, now: i64) -> bool {
        if now == i64::MIN {
            return false;
        }
        let r = config.retention_for(k.1);
        let keep = match k.0 {
            Resolution::Raw => r.raw_ms,
            Resolution::Minute => r.minute_ms,
            Resolution::Hour => r.hour_ms,
        };
        k.2.saturating_add(self.width(k.0)) <= now.saturating_sub(keep)
    }

    /// Seals a cut of the head and records `wal_segment` as checkpointed, in one commit.
    pub(crate) fn seal(
        &self,
        config: &StoreConfig,
        cut: &Sealing,
        wal_segment: u64,
    ) -> Result<CheckpointReport, StoreError> {
        let path = &self.path;
        let corrupt = |name: &str, sid: u32, e: String| {
            StoreError::corrupt(path, format!("block of series {sid} in {name}: {e}"))
        };
        let mut report = CheckpointReport { wal_segment, ..CheckpointReport::default() };
        let retention_now = *self.retention_now.read().unwrap_or_else(|e| e.into_inner());

        // Raw work grouped by partition, so each table is opened once.
        let mut by_part: BTreeMap<(Family, i64), Vec<(u32, Points)>> = BTreeMap::new();
        for (sid, pts) in cut.points.iter().enumerate() {
            if pts.is_empty() {
                continue;
            }
            let family = cut.series.get(sid).map_or(Family::External, |s| s.family);
            let mut pts = pts.clone();
            pts.sort_dedup_last_wins();
            let mut start = 0;
            while start < pts.len() {
                let part = self.raw_part(pts.ts[start]);
                let end = start + pts.ts[start..].partition_point(|&t| self.raw_part(t) == part);
                let mut run = Points::default();
                run.extend_from(&pts, start..end);
                by_part.entry((family, part)).or_default().push((sid as u32, run));
                start = end;
            }
        }

        let txn = self.db.begin_write().map_err(StoreError::db(path))?;
        let mut created = Vec::new();
        let mut hour_updates: HourUpdates = BTreeMap::new();
        for ((family, part), items) in by_part {
            let raw_key = (Resolution::Raw, family, part);
            if self.expired(config, raw_key, retention_now) {
                report.expired_points += items.iter().map(|(_, p)| p.len() as u64).sum::<u64>();
                continue;
            }
            let raw_name = table_name(raw_key);
            let m1_key = (Resolution::Minute, family, part);
            let m1_name = table_name(m1_key);
            created.extend([raw_key, m1_key]);
            let mut raw_blocks = BTreeMap::new();
            let mut m1_blocks = BTreeMap::new();
            {
                let raw = txn.open_table(part_def(&raw_name)).map_err(StoreError::db(path))?;
                for (sid, new) in items {
                    report.points += new.len() as u64;
                    report.blocks += 1;
                    let merged = match read_block(&raw, sid, path, &raw_name)? {
                        Some(old) => {
                            let old = block::decode_points(&old).map_err(|e| corrupt(&raw_name, sid, e))?;
                            Points::merge(&old, &new)
                        }
                        None => new,
                    };
                    raw_blocks.insert(sid, block::encode_points(&merged).map_err(|e| corrupt(&raw_name, sid, e))?);
                    let minutes = rollup::aggregate(&merged, MINUTE_MS);
                    let bytes = if minutes.iter().all(|a| a.count == 1) {
                        block::same_as_raw()
                    } else {
                        block::encode_aggs(&minutes).map_err(|e| corrupt(&m1_name, sid, e))?
                    };
                    m1_blocks.insert(sid, bytes);
                    hour_updates.entry((family, self.hour_part(part))).or_default().push((
                        sid,
                        part,
                        rollup::aggregate(&merged, HOUR_MS),
                    ));
                }
            }
            rewrite_table(&txn, &raw_name, raw_blocks, path)?;
            rewrite_table(&txn, &m1_name, m1_blocks, path)?;
        }
        for ((family, hpart), mut items) in hour_updates {
            let key = (Resolution::Hour, family, hpart);
            let name = table_name(key);
            created.push(key);
            items.sort_by_key(|(sid, part, _)| (*sid, *part));
            let mut h1_blocks = BTreeMap::new();
            {
                let h1 = txn.open_table(part_def(&name)).map_err(StoreError::db(path))?;
                let mut i = 0;
                while i < items.len() {
                    let sid = items[i].0;
                    let j = i + items[i..].partition_point(|it| it.0 == sid);
                    let mut aggs = match read_block(&h1, sid, path, &name)? {
                        Some(old) => block::decode_aggs(&old).map_err(|e| corrupt(&name, sid, e))?,
                        None => Vec::new(),
                    };
                    // Replace the hours of every recomputed raw partition.
                    let replaced: Vec<i64> = items[i..j].iter().map(|it| it.1).collect();
                    aggs.retain(|a| !replaced.contains(&self.raw_part(a.start)));
                    for it in &items[i..j] {
                        aggs.extend_from_slice(&it.2);
                    }
                    aggs.sort_by_key(|a| a.start);
                    h1_blocks.insert(sid, block::encode_aggs(&aggs).map_err(|e| corrupt(&name, sid, e))?);
                    i = j;
                }
            }
            rewrite_table(&txn, &name, h1_blocks, path)?;
        }
        {
            let mut series = txn.open_table(SERIES).map_err(StoreError::db(path))?;
            for (sid, info) in cut.series.iter().enumerate().skip(cut.persisted_series) {
                series.insert(sid as u32, encode_series(info).as_slice()).map_err(StoreError::db(path))?;
            }
            let mut gateways = txn.open_table(GATEWAYS).map_err(StoreError::db(path))?;
            for (g, seq) in &cut.gateways {
                gateways.insert(g.as_str(), *seq).map_err(StoreError::db(path))?;
            }
            let mut latest = txn.open_table(LATEST).map_err(StoreError::db(path))?;
            for &(sid, l) in &cut.latest {
                latest.insert(sid, encode_latest(l).as_slice()).map_err(StoreError::db(path))?;
            }
            let mut meta = txn.open_table(META).map_err(StoreError::db(path))?;
            meta.insert("wal_checkpoint", i64::try_from(wal_segment).unwrap_or(i64::MAX))
                .map_err(StoreError::db(path))?;
        }
        txn.commit().map_err(StoreError::db(path))?;
        self.partitions.write().unwrap_or_else(|e| e.into_inner()).extend(created);
        Ok(report)
    }

    /// Drops every partition whose end is older than `now` minus its family's retention.
    pub(crate) fn enforce_retention(&self, config: &StoreConfig, now: i64) -> Result<RetentionReport, StoreError> {
        let path = &self.path;
        let mut now_lock = self.retention_now.write().unwrap_or_else(|e| e.into_inner());
        let now = now.max(*now_lock);
        let doomed: Vec<PartKey> = {
            let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
            parts.iter().copied().filter(|&k| self.expired(config, k, now)).collect()
        };
        let txn = self.db.begin_write().map_err(StoreError::db(path))?;
        // Minute roll-ups that point at a raw partition about to go get their own blocks.
        for &(tier, family, part) in &doomed {
            let m1_key = (Resolution::Minute, family, part);
            let keeps_minutes = !doomed.contains(&m1_key)
                && self.partitions.read().unwrap_or_else(|e| e.into_inner()).contains(&m1_key);
            if tier == Resolution::Raw && keeps_minutes {
                self.materialise_minutes(&txn, family, part)?;
            }
        }
        for &k in &doomed {
            let name = table_name(k);
            txn.delete_table(part_def(&name)).map_err(StoreError::db(path))?;
        }
        txn.open_table(META)
            .map_err(StoreError::db(path))?
            .insert("retention_now", now)
            .map_err(StoreError::db(path))?;
        txn.commit().map_err(StoreError::db(path))?;
        *now_lock = now;
        let mut parts = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        for k in &doomed {
            parts.remove(k);
        }
        Ok(RetentionReport { dropped: doomed })
    }

    /// Replaces the "same as raw" minute roll-ups of one partition by real blocks.
    fn materialise_minutes(&self, txn: &redb::WriteTransaction, family: Family, part: i64) -> Result<(), StoreError> {
        let path = &self.path;
        let raw_name = table_name((Resolution::Raw, family, part));
        let m1_name = table_name((Resolution::Minute, family, part));
        let raw = txn.open_table(part_def(&raw_name)).map_err(StoreError::db(path))?;
        let m1 = txn.open_table(part_def(&m1_name)).map_err(StoreError::db(path))?;
        let mut markers = Vec::new();
        for entry in m1.iter().map_err(StoreError::db(path))? {
            let (k, v) = entry.map_err(StoreError::db(path))?;
            // A marker is a whole block of one piece.
            if k.value() as u32 == 0 && block::is_same_as_raw(v.value()) {
                markers.push((k.value() >> 32) as u32);
            }
        }
        drop(m1);
        let mut blocks = BTreeMap::new();
        for sid in markers {
            let Some(bytes) = read_block(&raw, sid, path, &raw_name)? else {
                return Err(StoreError::corrupt(
                    path,
                    format!("{m1_name} refers to a missing raw block of series {sid}"),
                ));
            };
            let points = block::decode_points(&bytes)
                .map_err(|e| StoreError::corrupt(path, format!("block of series {sid} in {raw_name}: {e}")))?;
            let aggs = rollup::aggregate(&points, MINUTE_MS);
            let encoded = block::encode_aggs(&aggs)
                .map_err(|e| StoreError::corrupt(path, format!("block of series {sid} in {m1_name}: {e}")))?;
            blocks.insert(sid, encoded);
        }
        drop(raw);
        rewrite_table(txn, &m1_name, blocks, path)?;
        Ok(())
    }

    /// The partitions of `tier` and `family` that overlap `[from, to)`.
    fn parts(&self, tier: Resolution, family: Family, from: i64, to: i64) -> Vec<i64> {
        let w = self.width(tier);
        let lo = floor_to(from, w);
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        parts.range((tier, family, lo)..(tier, family, to)).map(|k| k.2).collect()
    }

    /// A read transaction: a consistent snapshot of the sealed data.
    pub(crate) fn reader(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db.begin_read().map_err(StoreError::db(&self.path))
    }

    fn block(&self, txn: &redb::ReadTransaction, k: PartKey, sid: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let name = table_name(k);
        let table = match txn.open_table(part_def(&name)) {
            Ok(t) => t,
            // Dropped by retention after we listed it.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(StoreError::db(&self.path)(e)),
        };
        read_block(&table, sid, &self.path, &name)
    }

    /// Sealed raw points of `sid` in `[from, to)`, sorted.
    pub(crate) fn raw(
        &self,
        txn: &redb::ReadTransaction,
        sid: u32,
        family: Family,
        from: i64,
        to: i64,
    ) -> Result<Points, StoreError> {
        let mut out = Points::default();
        for part in self.parts(Resolution::Raw, family, from, to) {
            let k = (Resolution::Raw, family, part);
            let Some(bytes) = self.block(txn, k, sid)? else { continue };
            let p = block::decode_points(&bytes).map_err(|e| {
                StoreError::corrupt(&self.path, format!("block of series {sid} in {}: {e}", table_name(k)))
            })?;
            let a = p.ts.partition_point(|&t| t < from);
            let b = p.ts.partition_point(|&t| t < to);
            out.extend_from(&p, a..b);
        }
        Ok(out)
    }

    /// Feeds the sealed roll-ups of `tier` for `sid` with start in `span`, in time order,
    /// to `sink`. A "same as raw" minute block is read through its raw block.
    pub(crate) fn rollups(
        &self,
        txn: &redb::ReadTransaction,
        tier: Resolution,
        sid: u32,
        family: Family,
        span: std::ops::Range<i64>,
        sink: &mut impl FnMut(&Agg),
    ) -> Result<(), StoreError> {
        let corrupt = |k: PartKey, e: String| {
            StoreError::corrupt(&self.path, format!("block of series {sid} in {}: {e}", table_name(k)))
        };
        for part in self.parts(tier, family, span.start, span.end) {
            let k = (tier, family, part);
            let Some(bytes) = self.block(txn, k, sid)? else { continue };
            if tier == Resolution::Minute && block::is_same_as_raw(&bytes) {
                let raw_key = (Resolution::Raw, family, part);
                let Some(raw) = self.block(txn, raw_key, sid)? else {
                    return Err(corrupt(k, "it refers to a missing raw block".into()));
                };
                let points = block::decode_points(&raw).map_err(|e| corrupt(raw_key, e))?;
                let a = points.ts.partition_point(|&t| t < span.start);
                let b = points.ts.partition_point(|&t| t < span.end);
                for i in a..b {
                    let (t, v) = (points.ts[i], points.values[i]);
                    let start = floor_to(t, MINUTE_MS);
                    sink(&Agg { start, count: 1, min: v, max: v, sum: v, last: v });
                }
            } else {
                let aggs = block::decode_aggs(&bytes).map_err(|e| corrupt(k, e))?;
                aggs.iter().filter(|a| span.contains(&a.start)).for_each(&mut *sink);
            }
        }
        Ok(())
    }

    /// Where the raw partition that holds `ts` ends (exclusive).
    pub(crate) fn raw_partition_end(&self, ts: i64) -> i64 {
        ts.div_euclid(self.raw_w).saturating_add(1).saturating_mul(self.raw_w)
    }

    /// The raw partition that holds `ts`.
    pub(crate) fn raw_partition_of(&self, ts: i64) -> i64 {
        self.raw_part(ts)
    }

    /// Bytes of the blocks in each tier (values only, without the database's page overhead).
    pub(crate) fn block_bytes(&self) -> Result<[u64; 3], StoreError> {
        let txn = self.reader()?;
        let parts: Vec<PartKey> = self.partitions.read().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
        let mut out = [0u64; 3];
        for k in parts {
            let name = table_name(k);
            let table = match txn.open_table(part_def(&name)) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(StoreError::db(&self.path)(e)),
            };
            for entry in table.iter().map_err(StoreError::db(&self.path))? {
                let (_, v) = entry.map_err(StoreError::db(&self.path))?;
                out[k.0 as usize] += v.value().len() as u64;
            }
        }
        Ok(out)
    }

    /// Moves the live pages to the front of the file and truncates it. Needs the database to
    /// itself: no transaction may be open.
    pub(crate) fn compact(&mut self) -> Result<(), StoreError> {
        self.db.compact().map_err(StoreError::db(&self.path))?;
        Ok(())
    }

    /// Bytes of the database file.
    pub(crate) fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_round_trip() {
        for (f, _) in FAMILIES {
            for tier in [Resolution::Raw, Resolution::Minute, Resolution::Hour] {
                let k = (tier, f, -86_400_000);
                assert_eq!(parse_table_name(&table_name(k)), Some(k));
            }
        }
        assert_eq!(parse_table_name("meta"), None);
        assert_eq!(parse_table_name("raw.cows.0"), None);
    }
}
