//! Per service and pool: answers counted by status class (maintenance and rate-limit answers
//! apart, so they never count as upstream errors), and a latency histogram with log-linear
//! buckets. Histograms are cumulative counters: the difference of two snapshots is the
//! histogram of the interval between them, so windows merge exactly (never averaged percentiles).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Sub-buckets per power of two: bucket width is at most 25% of its lower bound.
const SUB_BUCKETS: u64 = 4;
/// Buckets cover 1 µs to about 2^28 µs (4.5 minutes); slower answers land in the last one.
pub const BUCKETS: usize = 4 + (28 - 1) * SUB_BUCKETS as usize;

/// The bucket of a latency in microseconds.
pub fn bucket_of(micros: u64) -> usize {
    if micros < SUB_BUCKETS {
        return micros as usize;
    }
    let exponent = 63 - u64::from(micros.leading_zeros()); // floor(log2)
    let sub = (micros >> (exponent - 2)) & (SUB_BUCKETS - 1);
    (((exponent - 1) * SUB_BUCKETS + sub) as usize).min(BUCKETS - 1)
}

/// The largest latency (µs) that falls in `bucket`.
pub fn bucket_upper_bound(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let exponent = bucket / SUB_BUCKETS + 1;
    let sub = bucket % SUB_BUCKETS;
    let lower = (SUB_BUCKETS + sub) << (exponent - 2);
    lower + (1 << (exponent - 2)) - 1
}

#[derive(Debug, Default)]
pub struct PoolMetrics {
    /// 1xx..5xx answers from upstreams (and 5xx the edge made for this pool: 502, 504).
    classes: [AtomicU64; 5],
    maintenance: AtomicU64,
    rate_limited: AtomicU64,
    latency: Histogram,
}

#[derive(Debug)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_micros: AtomicU64::new(0) }
    }
}

impl PoolMetrics {
    pub fn record(&self, status: u16, micros: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        self.latency.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.latency.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn record_maintenance(&self) {
        self.maintenance.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            by_class: std::array::from_fn(|i| self.classes[i].load(Ordering::Relaxed)),
            maintenance: self.maintenance.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            latency_buckets: self.latency.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            latency_sum_micros: self.latency.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// Counters at one moment. Subtract an earlier snapshot for the interval between them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Answers with status 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [u64; 5],
    pub maintenance: u64,
    pub rate_limited: u64,
    pub latency_buckets: Vec<u64>,
    pub latency_sum_micros: u64,
}

impl Snapshot {
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }

    pub fn errors(&self) -> u64 {
        self.by_class[4]
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            by_class: std::array::from_fn(|i| self.by_class[i].saturating_sub(earlier.by_class[i])),
            maintenance: self.maintenance.saturating_sub(earlier.maintenance),
            rate_limited: self.rate_limited.saturating_sub(earlier.rate_limited),
            latency_buckets: self
                .latency_buckets
                .iter()
                .zip(earlier.latency_buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            latency_sum_micros: self.latency_sum_micros.saturating_sub(earlier.latency_sum_micros),
        }
    }

    /// The latency (µs, the bucket's upper bound) below which `quantile` of the answers fell.
    pub fn quantile_micros(&self, quantile: f64) -> Option<u64> {
        let total: u64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((quantile * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.latency_buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_upper_bound(bucket));
            }
        }
        None
    }
}

/// Prometheus text for one pool's counters.
pub fn render(out: &mut String, service: &str, pool: &str, snapshot: &Snapshot) {
    let labels = format!("service=\"{service}\",pool=\"{pool}\"");
    for (i, count) in snapshot.by_class.iter().enumerate() {
        let _ = writeln!(out, "windlass_edge_requests_total{{{labels},class=\"{}xx\"}} {count}", i + 1);
    }
    let _ = writeln!(out, "windlass_edge_maintenance_answers_total{{{labels}}} {}", snapshot.maintenance);
    let _ = writeln!(out, "windlass_edge_rate_limited_total{{{labels}}} {}", snapshot.rate_limited);
    let mut cumulative = 0;
    let mut next_bound = 0;
    const BOUNDS_SECONDS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
    for (bucket, count) in snapshot.latency_buckets.iter().enumerate() {
        while next_bound < BOUNDS_SECONDS.len() && bucket_upper_bound(bucket) as f64 > BOUNDS_SECONDS[next_bound] * 1e6
        {
            let _ = writeln!(
                out,
                "windlass_edge_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}",
                BOUNDS_SECONDS[next_bound]
            );
            next_bound += 1;
        }
        cumulative += count;
    }
    for bound in &BOUNDS_SECONDS[next_bound..] {
        let _ = writeln!(out, "windlass_edge_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "windlass_edge_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(
        out,
        "windlass_edge_request_duration_seconds_sum{{{labels}}} {}",
        snapshot.latency_sum_micros as f64 / 1e6
    );
    let _ = writeln!(out, "windlass_edge_request_duration_seconds_count{{{labels}}} {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_their_values() {
        for micros in [0, 1, 3, 4, 5, 7, 8, 100, 999, 1_000, 123_456, 1_000_000, 30_000_000] {
            let bucket = bucket_of(micros);
            assert!(bucket_upper_bound(bucket) >= micros, "{micros} above bucket {bucket}");
            if bucket > 0 {
                assert!(bucket_upper_bound(bucket - 1) < micros, "{micros} belongs to a lower bucket");
            }
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles_from_merged_intervals() {
        let metrics = PoolMetrics::default();
        for _ in 0..90 {
            metrics.record(200, 1_000);
        }
        let first = metrics.snapshot();
        for _ in 0..10 {
            metrics.record(503, 400_000);
        }
        let interval = metrics.snapshot().since(&first);
        assert_eq!(interval.requests(), 10);
        assert_eq!(interval.errors(), 10);
        let p95 = interval.quantile_micros(0.95).unwrap();
        assert!((400_000..=500_000).contains(&p95), "{p95}");
        let whole = metrics.snapshot();
        let p50 = whole.quantile_micros(0.5).unwrap();
        assert!((1_000..=1_250).contains(&p50), "{p50}");
        assert!(whole.quantile_micros(0.95).unwrap() >= 400_000);
    }
}
