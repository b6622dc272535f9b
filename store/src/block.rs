//! Sealed blocks: the compressed form of one series' points (raw) or buckets (roll-ups).
//!
//! A raw block holds the points of one series in one time partition, sorted by time, one
//! point per timestamp. Its columns are compressed with pco: timestamps as `i64` (pco picks
//! the delta order; for readings at a fixed interval that is delta-of-delta, so a regular
//! series costs a few bits a point), values as `f64` (pco detects values that are multiples
//! of a sensor resolution such as 0.01 and codes the multiples), quality as `u16` and only
//! when some point is not `Good`.
//!
//! ```text
//! raw block    = version:u8 (1) | flags:u8 (bit 0: quality column present) | n:varint
//!                | len:varint ts-column | len:varint value-column [| len:varint quality-column]
//! roll-up block = version:u8 (1) | n:varint | len:varint start-column | len:varint count-column
//!                | len:varint min-column | m:varint (buckets with count > 1)
//!                | len:varint max-column | len:varint sum-column | len:varint last-column
//! ```
//!
//! A minute roll-up block whose every bucket holds one point (data sampled once a minute
//! or less often) is the single byte `2`: "same as raw", the buckets are the raw block's
//! points. Storing them again would double the size of such series. Before retention
//! drops a raw partition whose minute roll-ups live on, those markers are replaced by real
//! roll-up blocks (see `disk`).
//!
//! Each column is one pco standalone stream. In a roll-up block the max, sum and last
//! columns hold only the buckets with more than one point: a bucket of one point has
//! max = sum = last = min, which is the common case for minute roll-ups of minute data and
//! would otherwise store the same value four times.
//!
//! Invariants:
//! - Round trips are exact to the bit, -0.0, infinities and subnormals included.
//! - Decoding bytes from disk never panics: a short, overlong or inconsistent block is an
//!   `Err(what)` that the caller wraps with the file name.

use pco::ChunkConfig;
use pco::data_types::Number;

use crate::rollup::Agg;
use crate::varint::{self, Reader};

const VERSION: u8 = 1;
const SAME_AS_RAW: u8 = 2;
const FLAG_QUALITY: u8 = 1;
/// pco's compression level (its default). Level 4 was 12 % larger on jittered timestamps
/// and sometimes missed the delta order of values; sealing runs in the background, so the
/// extra CPU is off the ingest path.
const LEVEL: usize = 8;

/// Sensor resolutions tried for the value column, coarsest first.
const RESOLUTIONS: [f64; 6] = [1.0, 0.1, 0.01, 0.001, 0.0001, 0.00001];

/// The points of one series as columns, the shape both the codec and the head use.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Points {
    /// Milliseconds since the epoch.
    pub(crate) ts: Vec<i64>,
    /// Values, in the metric's canonical unit.
    pub(crate) values: Vec<f64>,
    /// `protocol::Quality::code()` of each point.
    pub(crate) quality: Vec<u8>,
}

impl Points {
    pub(crate) fn len(&self) -> usize {
        self.ts.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub(crate) fn push(&mut self, ts: i64, value: f64, quality: u8) {
        self.ts.push(ts);
        self.values.push(value);
        self.quality.push(quality);
    }

    /// Appends `other[range]`.
    pub(crate) fn extend_from(&mut self, other: &Points, range: std::ops::Range<usize>) {
        self.ts.extend_from_slice(&other.ts[range.clone()]);
        self.values.extend_from_slice(&other.values[range.clone()]);
        self.quality.extend_from_slice(&other.quality[range]);
    }

    /// Is every timestamp strictly greater than the one before (sorted, no duplicates)?
    pub(crate) fn is_strictly_sorted(&self) -> bool {
        self.ts.windows(2).all(|w| w[0] < w[1])
    }

    /// Sorts by time and keeps, for each timestamp, the point written last.
    pub(crate) fn sort_dedup_last_wins(&mut self) {
        if self.is_strictly_sorted() {
            return;
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        // Stable: among equal timestamps the order of writing is kept.
        order.sort_by_key(|&i| self.ts[i]);
        let mut out = Points::default();
        for (k, &i) in order.iter().enumerate() {
            let next_same = order.get(k + 1).is_some_and(|&j| self.ts[j] == self.ts[i]);
            if !next_same {
                out.push(self.ts[i], self.values[i], self.quality[i]);
            }
        }
        *self = out;
    }

    /// Merges two sorted, deduplicated runs; at equal timestamps `newer` wins.
    pub(crate) fn merge(older: &Points, newer: &Points) -> Points {
        let mut out = Points::default();
        let (mut i, mut j) = (0, 0);
        while i < older.len() || j < newer.len() {
            let take_new = match (older.ts.get(i), newer.ts.get(j)) {
                (Some(a), Some(b)) => {
                    if a == b {
                        i += 1;
                    }
                    b <= a
                }
                (None, Some(_)) => true,
                _ => false,
            };
            if take_new {
                out.push(newer.ts[j], newer.values[j], newer.quality[j]);
                j += 1;
            } else {
                out.push(older.ts[i], older.values[i], older.quality[i]);
                i += 1;
            }
        }
        out
    }
}

fn config() -> ChunkConfig {
    ChunkConfig::default().with_compression_level(LEVEL)
}

/// The coarsest decimal resolution every value is a multiple of, if any.
///
/// Registers deliver values as integers times a scale (0.01 °C, 0.001 MPa), and pco codes
/// such values as small integers when told the base. Its automatic detection misses the
/// base on some series (measured: 0.43-0.51 against 0.34 bytes a value on a day of
/// quantised pH and chlorine). The mode is lossless either way: a wrong guess costs size,
/// never bits.
fn resolution_of(values: &[f64]) -> Option<f64> {
    RESOLUTIONS.into_iter().find(|&res| {
        values.iter().all(|&v| {
            let k = (v / res).round();
            k.abs() < 1e15 && (k * res - v).abs() <= v.abs() * 1e-12
        })
    })
}

fn put_values(out: &mut Vec<u8>, values: &[f64]) -> Result<(), String> {
    let mut config = config();
    if let Some(res) = resolution_of(values) {
        config = config.with_mode_spec(pco::ModeSpec::TryFloatMult(res));
    }
    put_bytes(out, &pco::standalone::simple_compress(values, &config).map_err(|e| format!("pco: {e}"))?);
    Ok(())
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    varint::put_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_column<T: Number>(out: &mut Vec<u8>, column: &[T]) -> Result<(), String> {
    let bytes = pco::standalone::simple_compress(column, &config()).map_err(|e| format!("pco: {e}"))?;
    varint::put_u64(out, bytes.len() as u64);
    out.extend_from_slice(&bytes);
    Ok(())
}

fn get_column<T: Number>(r: &mut Reader<'_>, n: usize, name: &str) -> Result<Vec<T>, String> {
    let bytes = r.bytes().ok_or_else(|| format!("{name} column is cut short"))?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let column: Vec<T> =
        pco::standalone::simple_decompress(bytes).map_err(|e| format!("{name} column does not decode: {e}"))?;
    if column.len() != n {
        return Err(format!("{name} column has {} values, the header says {n}", column.len()));
    }
    Ok(column)
}

fn header_count(r: &mut Reader<'_>, what: &str) -> Result<usize, String> {
    let n = r.u64().ok_or_else(|| format!("{what} header is cut short"))?;
    // A count larger than the block could ever hold is damage, not a reason to allocate.
    usize::try_from(n).ok().filter(|&n| n <= 1 << 32).ok_or_else(|| format!("{what} count {n} is absurd"))
}

/// Encodes sorted, deduplicated points as a raw block.
pub(crate) fn encode_points(points: &Points) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(16 + points.len());
    let has_quality = points.quality.iter().any(|&q| q != 0);
    out.push(VERSION);
    out.push(if has_quality { FLAG_QUALITY } else { 0 });
    varint::put_u64(&mut out, points.len() as u64);
    if points.is_empty() {
        return Ok(out);
    }
    put_column(&mut out, &points.ts)?;
    put_values(&mut out, &points.values)?;
    if has_quality {
        let q: Vec<u16> = points.quality.iter().map(|&q| u16::from(q)).collect();
        put_column(&mut out, &q)?;
    }
    Ok(out)
}

/// Decodes a raw block.
pub(crate) fn decode_points(bytes: &[u8]) -> Result<Points, String> {
    let mut r = Reader::new(bytes);
    let version = r.u8().ok_or("raw block is empty")?;
    if version != VERSION {
        return Err(format!("raw block has unknown version {version}"));
    }
    let flags = r.u8().ok_or("raw block header is cut short")?;
    let n = header_count(&mut r, "raw block")?;
    if n == 0 {
        return Ok(Points::default());
    }
    let ts = get_column::<i64>(&mut r, n, "timestamp")?;
    let values = get_column::<f64>(&mut r, n, "value")?;
    let quality = if flags & FLAG_QUALITY != 0 {
        let q = get_column::<u16>(&mut r, n, "quality")?;
        q.into_iter()
            .map(|q| u8::try_from(q).map_err(|_| format!("quality code {q} is out of range")))
            .collect::<Result<_, _>>()?
    } else {
        vec![0; n]
    };
    Ok(Points { ts, values, quality })
}

/// Encodes roll-up buckets (sorted by start) as a roll-up block.
pub(crate) fn encode_aggs(aggs: &[Agg]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(32 + aggs.len() * 2);
    out.push(VERSION);
    varint::put_u64(&mut out, aggs.len() as u64);
    if aggs.is_empty() {
        return Ok(out);
    }
    let starts: Vec<i64> = aggs.iter().map(|a| a.start).collect();
    let counts: Vec<u64> = aggs.iter().map(|a| a.count).collect();
    let mins: Vec<f64> = aggs.iter().map(|a| a.min).collect();
    put_column(&mut out, &starts)?;
    put_column(&mut out, &counts)?;
    put_values(&mut out, &mins)?;
    let multi: Vec<&Agg> = aggs.iter().filter(|a| a.count > 1).collect();
    varint::put_u64(&mut out, multi.len() as u64);
    if !multi.is_empty() {
        put_values(&mut out, &multi.iter().map(|a| a.max).collect::<Vec<f64>>())?;
        put_values(&mut out, &multi.iter().map(|a| a.sum).collect::<Vec<f64>>())?;
        put_values(&mut out, &multi.iter().map(|a| a.last).collect::<Vec<f64>>())?;
    }
    Ok(out)
}

/// The roll-up block that stands for "one point per bucket: read the raw block".
pub(crate) fn same_as_raw() -> Vec<u8> {
    vec![SAME_AS_RAW]
}

/// Is this roll-up block the "same as raw" marker?
pub(crate) fn is_same_as_raw(bytes: &[u8]) -> bool {
    bytes == [SAME_AS_RAW]
}

/// Decodes a roll-up block.
pub(crate) fn decode_aggs(bytes: &[u8]) -> Result<Vec<Agg>, String> {
    let mut r = Reader::new(bytes);
    let version = r.u8().ok_or("roll-up block is empty")?;
    if version != VERSION {
        return Err(format!("roll-up block has unknown version {version}"));
    }
    let n = header_count(&mut r, "roll-up block")?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let starts = get_column::<i64>(&mut r, n, "bucket start")?;
    let counts = get_column::<u64>(&mut r, n, "count")?;
    let mins = get_column::<f64>(&mut r, n, "min")?;
    let m = header_count(&mut r, "roll-up multi-point")?;
    let expected = counts.iter().filter(|&&c| c > 1).count();
    if m != expected {
        return Err(format!("roll-up block says {m} buckets have several points, the counts say {expected}"));
    }
    let (maxs, sums, lasts) = if m > 0 {
        (
            get_column::<f64>(&mut r, m, "max")?,
            get_column::<f64>(&mut r, m, "sum")?,
            get_column::<f64>(&mut r, m, "last")?,
        )
    } else {
        (Vec::new(), Vec::new(), Vec::new())
    };
    let mut k = 0;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if counts[i] == 0 {
            return Err(format!("roll-up bucket at {} has a count of 0", starts[i]));
        }
        let (max, sum, last) = if counts[i] > 1 {
            k += 1;
            (maxs[k - 1], sums[k - 1], lasts[k - 1])
        } else {
            (mins[i], mins[i], mins[i])
        };
        out.push(Agg { start: starts[i], count: counts[i], min: mins[i], max, sum, last });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every f64 but NaN, with the awkward ones (signed zeros, extremes, subnormals) often.
    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            Just(-0.0),
            Just(f64::MAX),
            Just(f64::MIN),
            Just(f64::MIN_POSITIVE),
            Just(-f64::MIN_POSITIVE),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(5e-324),
            (-100_000i64..100_000).prop_map(|k| k as f64 * 0.01),
            any::<f64>().prop_filter("ingest refuses NaN", |v| !v.is_nan()),
        ]
    }

    fn points() -> impl Strategy<Value = Points> {
        proptest::collection::vec((any::<i64>(), value(), 0u8..3), 0..300).prop_map(|mut v| {
            v.sort_by_key(|p| p.0);
            v.dedup_by_key(|p| p.0);
            let mut p = Points::default();
            for (t, x, q) in v {
                p.push(t, x, q);
            }
            p
        })
    }

    fn bits(v: &[f64]) -> Vec<u64> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    proptest! {
        #[test]
        fn raw_blocks_round_trip_to_the_bit(p in points()) {
            let back = decode_points(&encode_points(&p).unwrap()).unwrap();
            prop_assert_eq!(&back.ts, &p.ts);
            prop_assert_eq!(bits(&back.values), bits(&p.values));
            prop_assert_eq!(&back.quality, &p.quality);
        }

        #[test]
        fn rollup_blocks_round_trip_to_the_bit(
            raw in proptest::collection::vec((any::<i64>(), 1u64..100, value(), value(), value(), value()), 0..200)
        ) {
            let aggs: Vec<Agg> = raw.into_iter().map(|(start, count, min, max, sum, last)| {
                // One-point buckets carry a single value; the codec relies on that.
                if count == 1 { Agg { start, count, min, max: min, sum: min, last: min } }
                else { Agg { start, count, min, max, sum, last } }
            }).collect();
            let back = decode_aggs(&encode_aggs(&aggs).unwrap()).unwrap();
            prop_assert_eq!(back.len(), aggs.len());
            for (a, b) in aggs.iter().zip(&back) {
                prop_assert_eq!((a.start, a.count), (b.start, b.count));
                prop_assert_eq!(bits(&[a.min, a.max, a.sum, a.last]), bits(&[b.min, b.max, b.sum, b.last]));
            }
        }

        #[test]
        fn damaged_blocks_are_errors_not_panics(p in points(), cut in 0usize..64, flip in any::<(usize, u8)>()) {
            let mut bytes = encode_points(&p).unwrap();
            if !bytes.is_empty() {
                let i = flip.0 % bytes.len();
                bytes[i] ^= flip.1;
            }
            bytes.truncate(bytes.len().saturating_sub(cut));
            let _ = decode_points(&bytes);
            let _ = decode_aggs(&bytes);
        }

        #[test]
        fn merging_keeps_one_point_per_timestamp_and_the_newer_value(
            a in points(), b in points()
        ) {
            let m = Points::merge(&a, &b);
            prop_assert!(m.is_strictly_sorted());
            for (i, t) in b.ts.iter().enumerate() {
                let k = m.ts.binary_search(t).unwrap();
                prop_assert_eq!(m.values[k].to_bits(), b.values[i].to_bits());
            }
            for t in &a.ts {
                prop_assert!(m.ts.binary_search(t).is_ok());
            }
        }
    }

    #[test]
    fn the_last_write_of_a_timestamp_wins_when_sorting() {
        let mut p = Points::default();
        p.push(20, 2.0, 0);
        p.push(10, 1.0, 0);
        p.push(20, 3.0, 1);
        p.sort_dedup_last_wins();
        assert_eq!(p.ts, vec![10, 20]);
        assert_eq!(p.values, vec![1.0, 3.0]);
        assert_eq!(p.quality, vec![0, 1]);
    }

    #[test]
    fn the_resolution_of_register_values_is_found_and_odd_values_have_none() {
        assert_eq!(resolution_of(&[7.21, 7.2, 7.0, -0.05]), Some(0.01));
        assert_eq!(resolution_of(&[0.351, 0.35]), Some(0.001));
        assert_eq!(resolution_of(&[3.0, 12.0]), Some(1.0));
        assert_eq!(resolution_of(&[0.1 + 0.2, std::f64::consts::PI]), None);
        assert_eq!(resolution_of(&[f64::MAX]), None);
        assert_eq!(resolution_of(&[f64::INFINITY]), None);
    }

    #[test]
    fn a_regular_quantised_series_costs_well_under_a_byte_a_point() {
        let mut p = Points::default();
        for i in 0..1440i64 {
            let v = ((20.0 + 5.0 * (i as f64 / 229.0).sin()) * 100.0).round() / 100.0;
            p.push(1_700_000_000_000 + i * 60_000 + (i * 7 % 3), v, 0);
        }
        let bytes = encode_points(&p).unwrap();
        assert!(bytes.len() < 1440, "{} bytes for 1440 points", bytes.len());
    }
}
