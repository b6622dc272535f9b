//! The head: what is in the write-ahead log but not yet sealed into the database.
//!
//! It also owns the series registry (device + metric -> series id), the newest point of
//! every series, and each gateway's highest stored seq, because all three change with
//! every append and are read on every append or query.
//!
//! Design constraints:
//! - The head is changed only in log order, once the records are durable (see
//!   `crate::commit`), or while replaying the log: replaying the log into an empty head at
//!   open rebuilds exactly what was there, including which write of a timestamp won.
//! - A checkpoint moves `active` to `sealing` and keeps it readable until the database
//!   commit that holds it is done, so a query never misses points mid-checkpoint. If the
//!   checkpoint fails, `sealing` goes back in front of `active` (it is older).
//! - Inserting a reading costs one hash lookup per device change, not per reading: readings
//!   of a batch come grouped by device (a poll yields all metrics of one device).
//! - Finding a device's series for a metric never scans more than [`SCAN_LIMIT`] entries:
//!   a device with more metrics gets a hash index ([`DeviceSeries`]). One line-protocol
//!   line of 80k fields used to scan 80k entries per field, under the head's write lock,
//!   which stalled every reader for seconds. Nothing else in the append path grows with
//!   the number of metrics a device has.

use std::collections::HashMap;
use std::sync::Arc;

use protocol::{Family, Metric};

use crate::block::Points;

/// One series: what it measures and which family's retention it follows.
#[derive(Debug, Clone)]
pub(crate) struct SeriesInfo {
    pub(crate) device: Arc<str>,
    pub(crate) metric: Metric,
    pub(crate) family: Family,
}

/// The family of a metric; metrics outside the catalogue are `External`.
pub(crate) fn family_of(metric: &Metric) -> Family {
    metric.def().map_or(Family::External, |d| d.family)
}

/// The newest point of a series: `(ts, value, quality code)`.
pub(crate) type Latest = (i64, f64, u8);

/// What a checkpoint seals: a consistent cut of the head at the moment the log rotated.
pub(crate) struct Sealing {
    /// Points by series id.
    pub(crate) points: Arc<Vec<Points>>,
    /// Every series registered at the cut (ids index it).
    pub(crate) series: Vec<SeriesInfo>,
    /// Series ids from here on are not yet in the database.
    pub(crate) persisted_series: usize,
    /// Each gateway's highest seq at the cut.
    pub(crate) gateways: Vec<(String, u64)>,
    /// The newest point of each series touched since the last checkpoint.
    pub(crate) latest: Vec<(u32, Latest)>,
}

/// Up to this many metrics, a device's series are found by scanning a short list (faster
/// than hashing for the usual handful); beyond it, by a hash index.
pub(crate) const SCAN_LIMIT: usize = 16;

/// One device's series: `(metric, series id)` in registration order, and once there are
/// more than [`SCAN_LIMIT`] of them, an index by metric.
#[derive(Default)]
pub(crate) struct DeviceSeries {
    list: Vec<(Metric, u32)>,
    index: Option<HashMap<Metric, u32>>,
}

#[cfg(test)]
thread_local! {
    /// Entries compared or hashed by [`DeviceSeries::get`] on this thread (tests count the
    /// work of a lookup with it, not its time).
    pub(crate) static PROBES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl DeviceSeries {
    fn get(&self, metric: &Metric) -> Option<u32> {
        if let Some(index) = &self.index {
            #[cfg(test)]
            PROBES.with(|p| p.set(p.get() + 1));
            return index.get(metric).copied();
        }
        let found = self.list.iter().position(|(m, _)| m == metric);
        #[cfg(test)]
        PROBES.with(|p| p.set(p.get() + found.map_or(self.list.len(), |i| i + 1) as u64));
        found.map(|i| self.list[i].1)
    }

    fn push(&mut self, metric: Metric, sid: u32) {
        match &mut self.index {
            Some(index) => {
                index.insert(metric, sid);
            }
            None if self.list.len() >= SCAN_LIMIT => {
                let mut index: HashMap<Metric, u32> = std::mem::take(&mut self.list).into_iter().collect();
                index.insert(metric, sid);
                self.index = Some(index);
            }
            None => self.list.push((metric, sid)),
        }
    }
}

#[derive(Default)]
pub(crate) struct Head {
    devices: HashMap<Arc<str>, u32>,
    /// By device slot: the device's series.
    slots: Vec<DeviceSeries>,
    slot_names: Vec<Arc<str>>,
    pub(crate) series: Vec<SeriesInfo>,
    pub(crate) persisted_series: usize,
    active: Vec<Points>,
    sealing: Option<Arc<Vec<Points>>>,
    latest: Vec<Option<Latest>>,
    touched: Vec<bool>,
    gateways: HashMap<String, u64>,
    gateways_changed: bool,
    active_points: usize,
    /// Records applied since the last cut (a batch without readings still moves a seq).
    dirty: bool,
}

impl Head {
    /// Registers a series loaded from the database under its stored id.
    pub(crate) fn load_series(&mut self, sid: u32, info: SeriesInfo) -> Result<(), String> {
        if sid as usize != self.series.len() {
            return Err(format!("series ids are not dense: found {sid}, expected {}", self.series.len()));
        }
        self.register(info);
        self.persisted_series = self.series.len();
        Ok(())
    }

    pub(crate) fn load_gateway(&mut self, gateway: &str, seq: u64) {
        self.gateways.insert(gateway.to_string(), seq);
    }

    pub(crate) fn load_latest(&mut self, sid: u32, latest: Latest) {
        let i = sid as usize;
        if i < self.latest.len() {
            self.latest[i] = Some(latest);
        }
    }

    fn register(&mut self, info: SeriesInfo) -> u32 {
        let sid = self.series.len() as u32;
        let slot = match self.devices.get(&*info.device) {
            Some(&s) => s,
            None => {
                let s = self.slots.len() as u32;
                self.devices.insert(info.device.clone(), s);
                self.slots.push(DeviceSeries::default());
                self.slot_names.push(info.device.clone());
                s
            }
        };
        self.slots[slot as usize].push(info.metric.clone(), sid);
        self.series.push(info);
        self.latest.push(None);
        self.touched.push(false);
        sid
    }

    /// The series id of `(device, metric)`, if it exists.
    pub(crate) fn lookup(&self, device: &str, metric: &Metric) -> Option<u32> {
        let slot = *self.devices.get(device)?;
        self.slots[slot as usize].get(metric)
    }

    fn slot_of(&mut self, device: &str, cache: &mut Option<u32>) -> Option<u32> {
        if let Some(s) = *cache
            && &*self.slot_names[s as usize] == device
        {
            return Some(s);
        }
        let s = self.devices.get(device).copied();
        *cache = s;
        s
    }

    /// The id of `(device, metric)`, registering it if new.
    fn series_id(&mut self, device: &str, metric: &Metric, cache: &mut Option<u32>) -> u32 {
        let slot = self.slot_of(device, cache);
        if let Some(slot) = slot
            && let Some(sid) = self.slots[slot as usize].get(metric)
        {
            return sid;
        }
        // A known device's name is shared, not copied once per series.
        let device: Arc<str> = match slot {
            Some(slot) => self.slot_names[slot as usize].clone(),
            None => Arc::from(device),
        };
        let sid = self.register(SeriesInfo { device, metric: metric.clone(), family: family_of(metric) });
        // The device has a slot now, so the cache can hold it.
        *cache = self.devices.get(&*self.series[sid as usize].device).copied();
        sid
    }

    /// Adds one point; `cache` remembers the last device between calls of one record.
    pub(crate) fn insert(
        &mut self,
        device: &str,
        metric: &Metric,
        ts: i64,
        value: f64,
        quality: u8,
        cache: &mut Option<u32>,
    ) {
        let sid = self.series_id(device, metric, cache) as usize;
        if self.active.len() <= sid {
            self.active.resize_with(self.series.len(), Points::default);
        }
        self.active[sid].push(ts, value, quality);
        self.active_points += 1;
        self.touched[sid] = true;
        self.dirty = true;
        let newer = match self.latest[sid] {
            // At equal times the later write wins, as in the sealed data.
            Some((t, _, _)) => ts >= t,
            None => true,
        };
        if newer {
            self.latest[sid] = Some((ts, value, quality));
        }
    }

    /// Every gateway's highest stored seq.
    pub(crate) fn gateways(&self) -> impl Iterator<Item = (&str, u64)> {
        self.gateways.iter().map(|(g, s)| (g.as_str(), *s))
    }

    pub(crate) fn gateway_seq(&self, gateway: &str) -> Option<u64> {
        self.gateways.get(gateway).copied()
    }

    /// Records that `gateway`'s batch `seq` is stored.
    pub(crate) fn set_gateway_seq(&mut self, gateway: &str, seq: u64) {
        self.dirty = true;
        self.gateways_changed = true;
        match self.gateways.get_mut(gateway) {
            Some(s) => *s = (*s).max(seq),
            None => {
                self.gateways.insert(gateway.to_string(), seq);
            }
        }
    }

    pub(crate) fn active_points(&self) -> usize {
        self.active_points
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub(crate) fn is_sealing(&self) -> bool {
        self.sealing.is_some()
    }

    /// Cuts the head for a checkpoint: `active` becomes `sealing`.
    pub(crate) fn begin_seal(&mut self) -> Sealing {
        let points = Arc::new(std::mem::take(&mut self.active));
        self.sealing = Some(points.clone());
        self.active_points = 0;
        self.dirty = false;
        let latest = self
            .touched
            .iter_mut()
            .enumerate()
            .filter_map(|(sid, t)| std::mem::take(t).then_some(sid))
            .filter_map(|sid| self.latest[sid].map(|l| (sid as u32, l)))
            .collect();
        let gateways = if std::mem::take(&mut self.gateways_changed) {
            self.gateways.iter().map(|(g, s)| (g.clone(), *s)).collect()
        } else {
            Vec::new()
        };
        Sealing { points, series: self.series.clone(), persisted_series: self.persisted_series, gateways, latest }
    }

    /// Ends a checkpoint. On success the sealed points are in the database; on failure
    /// they go back into the head, in front of what arrived since.
    pub(crate) fn end_seal(&mut self, cut: &Sealing, committed: bool) {
        let Some(sealing) = self.sealing.take() else { return };
        if committed {
            self.persisted_series = self.persisted_series.max(cut.series.len());
            return;
        }
        let newer = std::mem::take(&mut self.active);
        let mut merged: Vec<Points> = (*sealing).clone();
        merged.resize_with(self.series.len(), Points::default);
        for (sid, pts) in newer.iter().enumerate() {
            merged[sid].extend_from(pts, 0..pts.len());
        }
        self.active_points = merged.iter().map(Points::len).sum();
        self.active = merged;
        for &(sid, _) in &cut.latest {
            self.touched[sid as usize] = true;
        }
        self.gateways_changed |= !cut.gateways.is_empty();
        self.dirty = true;
    }

    /// The head's points of `sid` in `[from, to)`, sorted, one per timestamp (the last
    /// written wins), and so newer than anything sealed.
    pub(crate) fn points(&self, sid: u32, from: i64, to: i64) -> Points {
        let mut out = Points::default();
        let sid = sid as usize;
        let sources = self.sealing.iter().map(|s| s.get(sid)).chain([self.active.get(sid)]);
        for pts in sources.flatten() {
            for i in 0..pts.len() {
                if (from..to).contains(&pts.ts[i]) {
                    out.push(pts.ts[i], pts.values[i], pts.quality[i]);
                }
            }
        }
        out.sort_dedup_last_wins();
        out
    }

    /// The newest point of every series that has one.
    pub(crate) fn latest(&self) -> impl Iterator<Item = (&SeriesInfo, Latest)> {
        self.series.iter().zip(&self.latest).filter_map(|(s, l)| l.map(|l| (s, l)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_checkpoint_puts_the_sealing_points_back_in_front_of_newer_ones() {
        let mut h = Head::default();
        let m = Metric::new("ph");
        let mut c = None;
        h.insert("d", &m, 10, 1.0, 0, &mut c);
        let cut = h.begin_seal();
        h.insert("d", &m, 10, 2.0, 0, &mut c);
        h.end_seal(&cut, false);
        let p = h.points(0, 0, 100);
        assert_eq!(p.values, vec![2.0], "the later write of ts 10 must still win");
        assert_eq!(h.active_points(), 2);
    }

    #[test]
    fn latest_keeps_the_newest_time_and_the_later_write_at_equal_times() {
        let mut h = Head::default();
        let m = Metric::new("ph");
        let mut c = None;
        h.insert("d", &m, 50, 5.0, 0, &mut c);
        h.insert("d", &m, 10, 1.0, 0, &mut c);
        h.insert("d", &m, 50, 6.0, 0, &mut c);
        assert_eq!(h.latest().map(|(_, l)| l).collect::<Vec<_>>(), vec![(50, 6.0, 0)]);
    }

    #[test]
    fn series_are_per_device_and_metric() {
        let mut h = Head::default();
        let mut c = None;
        h.insert("a", &Metric::new("ph"), 1, 1.0, 0, &mut c);
        h.insert("a", &Metric::new("flow"), 1, 1.0, 0, &mut c);
        h.insert("b", &Metric::new("ph"), 1, 1.0, 0, &mut c);
        h.insert("a", &Metric::new("ph"), 2, 1.0, 0, &mut c);
        assert_eq!(h.series.len(), 3);
        assert_eq!(h.lookup("a", &Metric::new("flow")), Some(1));
        assert_eq!(h.lookup("b", &Metric::new("flow")), None);
    }

    /// One wide line (one device, thousands of metrics) used to cost a scan of the device's
    /// series per reading: 80k fields took 8 s under the write lock. This counts the
    /// entries every lookup touched, not time: with the old scan (`SCAN_LIMIT` made huge)
    /// it is 100 M here and the test fails; with the index, under 20 per reading.
    #[test]
    fn a_device_with_many_metrics_costs_a_bounded_number_of_probes_per_reading() {
        let n = 10_000u64;
        let metrics: Vec<Metric> = (0..n).map(|i| Metric::new(&format!("field_{i}"))).collect();
        let mut h = Head::default();
        PROBES.with(|p| p.set(0));
        let mut c = None;
        for (i, m) in metrics.iter().enumerate() {
            h.insert("wide", m, 1, i as f64, 0, &mut c);
        }
        let mut c = None;
        for (i, m) in metrics.iter().enumerate() {
            h.insert("wide", m, 2, i as f64, 0, &mut c);
        }
        let probes = PROBES.with(|p| p.get());
        // A fixed bound, not one derived from SCAN_LIMIT: a scan of every metric fails it.
        let bound = 2 * n * 16;
        assert!(probes <= bound, "{probes} probes for {} inserts (bound {bound})", 2 * n);
        // Every series still found, one per metric, and each device name stored once.
        assert_eq!(h.series.len() as u64, n);
        assert_eq!(h.lookup("wide", &metrics[1234]), Some(1234));
        assert_eq!(h.lookup("wide", &Metric::new("field_x")), None);
        assert!(h.series.iter().all(|s| Arc::ptr_eq(&s.device, &h.series[0].device)));
        assert_eq!(h.points(9_999, 0, 10).ts, vec![1, 2]);
    }

    #[test]
    fn a_device_crossing_the_scan_limit_keeps_every_series_under_its_id() {
        let mut h = Head::default();
        let mut c = None;
        for round in 0..2 {
            for i in 0..=SCAN_LIMIT + 3 {
                h.insert("d", &Metric::new(&format!("m{i}")), round, 0.0, 0, &mut c);
                h.insert("e", &Metric::new("ph"), round, 0.0, 0, &mut c);
            }
        }
        for i in 0..=SCAN_LIMIT + 3 {
            let sid = h.lookup("d", &Metric::new(&format!("m{i}"))).unwrap();
            assert_eq!(h.series[sid as usize].metric, Metric::new(&format!("m{i}")));
            assert_eq!(h.points(sid, 0, 10).len(), 2, "m{i}: both rounds in the same series");
        }
        assert_eq!(h.series.len(), SCAN_LIMIT + 5);
    }
}
