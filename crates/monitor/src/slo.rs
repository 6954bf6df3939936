//! SLO accounting: per-minute rollups of the edge's counts, error budgets and burn rates.
//!
//! - [`Counts`]: what a service's pools answered over some span (summed over pools), with the
//!   latency histogram of that span. Counts of adjacent spans merge exactly (histograms add), so
//!   a percentile over any window comes from the merged histogram, never from averaged
//!   percentiles. Stored as [`RollupRow`]s, the histogram sparse-encoded ([`encode_histogram`]).
//! - [`collector`]: reads the edge each minute, stores one minute row per service, downsamples
//!   old minutes into hours.
//! - [`report`]: the SLO figures of every service over the standard windows, as pure functions
//!   of the rows, probe samples and a time ([`report::service_report`]).
//! - [`render`]: the plain-text table `windlass slo <env>` prints.
//!
//! Maintenance and rate-limited answers are kept apart and never count as requests or errors:
//! they do not consume error budget.

pub mod collector;
pub mod render;
pub mod report;

use base64::Engine as _;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use windlass_edge::metrics::{BUCKETS, Snapshot, bucket_of, bucket_upper_bound};
use windlass_store::RollupRow;

/// A minute row's `span_secs`.
pub const MINUTE: i64 = 60;
/// An hour row's `span_secs`.
pub const HOUR: i64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum SloError {
    #[error(transparent)]
    Store(#[from] windlass_store::StoreError),
    #[error("cannot read the edge's counters: {0}")]
    Edge(#[from] windlass_edge::client::EdgeError),
    #[error("the stored rollup of `{service}` at {start} has an unreadable histogram")]
    Histogram { service: String, start: Timestamp },
    #[error("the SLO cursor of `{environment}` cannot be written: {source}")]
    Cursor { environment: String, source: serde_json::Error },
}

/// What a service answered over a span: the sum over its pools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Answers from upstreams, every status class (not maintenance or rate-limit answers).
    pub requests: u64,
    /// 5xx answers: the only ones that consume error budget.
    pub errors: u64,
    /// 4xx answers (the client's doing: counted, not an error).
    pub client_errors: u64,
    pub maintenance: u64,
    pub rate_limited: u64,
    pub latency_sum_micros: u64,
    /// Dense, `BUCKETS` long (the edge's log-linear buckets).
    pub histogram: Vec<u64>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            requests: 0,
            errors: 0,
            client_errors: 0,
            maintenance: 0,
            rate_limited: 0,
            latency_sum_micros: 0,
            histogram: vec![0; BUCKETS],
        }
    }
}

impl Counts {
    /// The counts of an interval snapshot (the difference of two edge snapshots).
    pub fn from_interval(interval: &Snapshot) -> Self {
        let mut histogram = vec![0; BUCKETS];
        for (bucket, count) in interval.latency_buckets.iter().enumerate() {
            histogram[bucket.min(BUCKETS - 1)] += count;
        }
        Counts {
            requests: interval.requests(),
            errors: interval.errors(),
            client_errors: interval.by_class[3],
            maintenance: interval.maintenance,
            rate_limited: interval.rate_limited,
            latency_sum_micros: interval.latency_sum_micros,
            histogram,
        }
    }

    /// Adds another span's counts: exact, histograms included.
    pub fn merge(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.client_errors += other.client_errors;
        self.maintenance += other.maintenance;
        self.rate_limited += other.rate_limited;
        self.latency_sum_micros += other.latency_sum_micros;
        if self.histogram.len() < other.histogram.len() {
            self.histogram.resize(other.histogram.len(), 0);
        }
        for (mine, theirs) in self.histogram.iter_mut().zip(&other.histogram) {
            *mine += theirs;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.maintenance == 0 && self.rate_limited == 0
    }

    /// The latency (µs, the upper bound of its bucket) below which `quantile` of the answers fell.
    pub fn quantile_micros(&self, quantile: f64) -> Option<u64> {
        let total: u64 = self.histogram.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, count) in self.histogram.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_upper_bound(bucket));
            }
        }
        None
    }

    /// The share of timed answers that were slower than `target_micros`, at bucket resolution:
    /// the answers in buckets wholly above the target's bucket.
    pub fn share_slower_than(&self, target_micros: u64) -> Option<f64> {
        let total: u64 = self.histogram.iter().sum();
        if total == 0 {
            return None;
        }
        let slow: u64 = self.histogram.iter().skip(bucket_of(target_micros) + 1).sum();
        Some(slow as f64 / total as f64)
    }

    /// This span as a row of the store.
    pub fn to_row(&self, environment: &str, service: &str, start: Timestamp, span_secs: i64) -> RollupRow {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        RollupRow {
            environment: environment.to_owned(),
            service: service.to_owned(),
            start,
            span_secs,
            requests: int(self.requests),
            errors: int(self.errors),
            client_errors: int(self.client_errors),
            maintenance: int(self.maintenance),
            rate_limited: int(self.rate_limited),
            latency_sum_micros: int(self.latency_sum_micros),
            histogram: encode_histogram(&self.histogram),
        }
    }

    pub fn from_row(row: &RollupRow) -> Result<Self, SloError> {
        let histogram = decode_histogram(&row.histogram)
            .ok_or_else(|| SloError::Histogram { service: row.service.clone(), start: row.start })?;
        let uint = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(Counts {
            requests: uint(row.requests),
            errors: uint(row.errors),
            client_errors: uint(row.client_errors),
            maintenance: uint(row.maintenance),
            rate_limited: uint(row.rate_limited),
            latency_sum_micros: uint(row.latency_sum_micros),
            histogram,
        })
    }
}

fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The non-zero buckets only, as (gap since the previous non-zero bucket, count) varint pairs in
/// unpadded base64: a typical minute of traffic fills 10-30 buckets, about 3 bytes each.
pub fn encode_histogram(histogram: &[u64]) -> String {
    let mut bytes = Vec::new();
    let mut previous = 0usize;
    for (bucket, &count) in histogram.iter().enumerate() {
        if count > 0 {
            push_varint(&mut bytes, (bucket - previous) as u64);
            push_varint(&mut bytes, count);
            previous = bucket;
        }
    }
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// The dense histogram back; `None` if the text is not one [`encode_histogram`] wrote.
pub fn decode_histogram(text: &str) -> Option<Vec<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(text).ok()?;
    let mut histogram = vec![0; BUCKETS];
    let (mut at, mut bucket) = (0usize, 0usize);
    while at < bytes.len() {
        bucket = bucket.checked_add(usize::try_from(read_varint(&bytes, &mut at)?).ok()?)?;
        let count = read_varint(&bytes, &mut at)?;
        *histogram.get_mut(bucket)? += count;
    }
    Some(histogram)
}

/// One minute of probe results for a service (from the probe module). They count toward the SLO
/// only over a window in which the edge saw no request of the service, and only with at least
/// the minimum sample count: at 99.9% a single failed 30 s probe would otherwise read as a 100×
/// burn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSample {
    pub service: String,
    /// The start of the minute the results belong to.
    pub minute: Timestamp,
    pub successes: u64,
    pub failures: u64,
}

/// The start of the `span_secs`-long span (minute, hour) that `at` falls in, in UTC.
pub fn floor_to(at: Timestamp, span_secs: i64) -> Timestamp {
    let ms = at.as_millisecond();
    let span = span_secs * 1000;
    Timestamp::from_millisecond(ms - ms.rem_euclid(span)).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_encoding() {
        let mut histogram = vec![0; BUCKETS];
        histogram[0] = 3;
        histogram[40] = 1_000_000;
        histogram[41] = 7;
        histogram[BUCKETS - 1] = 2;
        let text = encode_histogram(&histogram);
        assert!(text.len() < 20, "{text}");
        assert_eq!(decode_histogram(&text), Some(histogram));
        assert_eq!(decode_histogram(""), Some(vec![0; BUCKETS]));
        assert_eq!(decode_histogram("not base64!"), None);
        // A bucket past the end is refused, not wrapped.
        let mut bytes = Vec::new();
        push_varint(&mut bytes, 500);
        push_varint(&mut bytes, 1);
        assert_eq!(decode_histogram(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)), None);
    }

    #[test]
    fn merged_percentiles_equal_the_combined_data() {
        // Two minutes with very different latencies: the merged p95 is the p95 of all answers,
        // not the mean of the two minutes' p95s.
        let mut fast = Counts::default();
        let mut slow = Counts::default();
        let mut all = Counts::default();
        for i in 0..900u64 {
            let micros = 1_000 + i * 10;
            fast.histogram[bucket_of(micros)] += 1;
            all.histogram[bucket_of(micros)] += 1;
        }
        for i in 0..100u64 {
            let micros = 200_000 + i * 1_000;
            slow.histogram[bucket_of(micros)] += 1;
            all.histogram[bucket_of(micros)] += 1;
        }
        let mut merged = fast.clone();
        merged.merge(&slow);
        for q in [0.5, 0.9, 0.95, 0.99] {
            assert_eq!(merged.quantile_micros(q), all.quantile_micros(q), "q{q}");
        }
        let p95 = merged.quantile_micros(0.95).unwrap();
        assert!((200_000..=300_000).contains(&p95), "{p95}");
        let averaged = (fast.quantile_micros(0.95).unwrap() + slow.quantile_micros(0.95).unwrap()) / 2;
        assert_ne!(p95, averaged);
        // Through the store's encoding too.
        let row = merged.to_row("production", "api", Timestamp::UNIX_EPOCH, MINUTE);
        assert_eq!(Counts::from_row(&row).unwrap(), merged);
    }
}
