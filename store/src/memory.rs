//! The in-memory index: every series as a time-ordered vector, rebuilt from the log.
//!
//! Invariant: each series is sorted by timestamp; a point with a timestamp already in the
//! series replaces the old value (the same reading written twice is stored once).

use std::collections::HashMap;
use std::sync::RwLock;

use protocol::{Batch, Metric, Reading, Timestamp};

use crate::wal::{Owned, Record};
use crate::{LatestPoint, Point};

type Key = (String, Metric);

#[derive(Default)]
pub(crate) struct Index {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    series: HashMap<Key, Vec<Point>>,
    gateway_seq: HashMap<String, u64>,
}

impl Index {
    pub(crate) fn apply(&self, record: Owned) {
        match record {
            Owned::Batch(b) => self.apply_ref(&Record::Batch(&b)),
            Owned::Readings(r) => self.apply_ref(&Record::Readings(&r)),
        }
    }

    pub(crate) fn apply_ref(&self, record: &Record<'_>) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match record {
            Record::Batch(b) => inner.batch(b),
            Record::Readings(readings) => readings.iter().for_each(|r| inner.insert(r)),
        }
    }

    pub(crate) fn gateway_seq(&self, gateway: &str) -> Option<u64> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).gateway_seq.get(gateway).copied()
    }

    pub(crate) fn latest(&self) -> Vec<LatestPoint> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<LatestPoint> = inner
            .series
            .iter()
            .filter_map(|((device, metric), points)| {
                points.last().map(|p| LatestPoint { device: device.clone(), metric: metric.clone(), point: *p })
            })
            .collect();
        out.sort_by(|a, b| (&a.device, a.metric.name()).cmp(&(&b.device, b.metric.name())));
        out
    }

    pub(crate) fn range(&self, device: &str, metric: &str, from: Timestamp, to: Timestamp, limit: usize) -> Vec<Point> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let key = (device.to_string(), Metric::new(metric));
        let Some(points) = inner.series.get(&key) else { return Vec::new() };
        let start = points.partition_point(|p| p.ts < from);
        points[start..].iter().take_while(|p| p.ts < to).take(limit).copied().collect()
    }
}

impl Inner {
    fn batch(&mut self, b: &Batch) {
        b.readings.iter().for_each(|r| self.insert(r));
        let seq = self.gateway_seq.entry(b.gateway.clone()).or_insert(0);
        *seq = (*seq).max(b.seq);
    }

    fn insert(&mut self, r: &Reading) {
        let points = self.series.entry((r.device.to_string(), r.metric.clone())).or_default();
        let p = Point { ts: r.ts, value: r.value, quality: r.quality };
        match points.last() {
            Some(last) if last.ts < p.ts => points.push(p),
            None => points.push(p),
            _ => match points.binary_search_by(|q| q.ts.cmp(&p.ts)) {
                Ok(i) => points[i] = p,
                Err(i) => points.insert(i, p),
            },
        }
    }
}
