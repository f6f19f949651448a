//! Latency histograms and per-client tallies.
//!
//! A `Histogram` keeps microsecond latencies in log-linear buckets (exact
//! below 128 µs, then 64 buckets per power of two, so any percentile is
//! within 1 % of the true value) in fixed memory, however long a workload
//! runs. Each client task owns a `Tally`; the workload merges them when the
//! clients are done, so the hot path takes no lock.

use std::time::Duration;

/// Values below this are their own bucket (exact).
const EXACT_BELOW_US: u64 = 128;
/// Buckets per power of two above `EXACT_BELOW_US`; 64 bounds the relative
/// error of a bucket's midpoint by 1/128.
const SUB_BUCKETS: u64 = 64;
/// log2(SUB_BUCKETS).
const SUB_BUCKET_BITS: u32 = 6;
/// Powers of two above 128 µs a u64 can reach: shift 1..=57.
const MAX_SHIFT: u64 = 57;
const BUCKETS: usize = 128 + 57 * 64;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    min_us: u64,
    max_us: u64,
    sum_us: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            min_us: u64::MAX,
            max_us: 0,
            sum_us: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("min_us", &self.min())
            .field("max_us", &self.max_us)
            .finish()
    }
}

/// The bucket a value falls in.
fn bucket_of(us: u64) -> usize {
    let index = if us < EXACT_BELOW_US {
        us
    } else {
        // The highest set bit is at least 7; keep the 7 bits from it down,
        // of which the top one is always set (64..=127).
        let msb = 63 - u64::from(us.leading_zeros());
        let shift = msb - u64::from(SUB_BUCKET_BITS);
        EXACT_BELOW_US + (shift - 1) * SUB_BUCKETS + ((us >> shift) - SUB_BUCKETS)
    };
    // At most 128 + 56 * 64 + 63 < BUCKETS, which fits any usize.
    usize::try_from(index).unwrap_or(BUCKETS - 1)
}

/// The smallest and largest value of a bucket.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < EXACT_BELOW_US {
        return (index, index);
    }
    let shift = (index - EXACT_BELOW_US) / SUB_BUCKETS + 1;
    let mantissa = (index - EXACT_BELOW_US) % SUB_BUCKETS + SUB_BUCKETS;
    debug_assert!(shift <= MAX_SHIFT);
    let low = mantissa << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Histogram {
    pub fn record(&mut self, latency: Duration) {
        self.record_us(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn record_us(&mut self, us: u64) {
        self.counts[bucket_of(us)] += 1;
        self.count += 1;
        self.min_us = self.min_us.min(us);
        self.max_us = self.max_us.max(us);
        self.sum_us += u128::from(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
        self.sum_us += other.sum_us;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min_us
        }
    }

    pub fn max(&self) -> u64 {
        self.max_us
    }

    pub fn mean_us(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.sum_us as f64 / self.count as f64
    }

    /// The nearest-rank percentile (`p` in 0..=100) in microseconds: the
    /// smallest recorded value with at least `p` % of the values at or
    /// below it, to the histogram's precision (the bucket's midpoint,
    /// clamped to the values seen). 0 when nothing was recorded.
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = nearest_rank(p, self.count);
        let mut seen = 0u64;
        for (index, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = bucket_bounds(index);
                let mid = low + (high - low) / 2;
                return mid.clamp(self.min_us, self.max_us);
            }
        }
        self.max_us
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.percentile_us(p) as f64 / 1000.0
    }
}

/// The 1-based rank of the `p`th percentile among `count` values:
/// ceil(p / 100 × count), at least 1 and at most `count`.
pub fn nearest_rank(p: f64, count: u64) -> u64 {
    // In units of 1/10000 of a percent, rounded, so that p99 of 100 values
    // is exactly rank 99 (floating point would give 99.000001 and round up).
    let micro_p = f64_to_u64((p.clamp(0.0, 100.0) * 10_000.0).round());
    let scaled = u128::from(count) * u128::from(micro_p);
    let rank = scaled.div_ceil(1_000_000);
    u64::try_from(rank).unwrap_or(count).clamp(1, count)
}

/// Converts a non-negative, finite float that fits a u64 (callers clamp it
/// first); anything else saturates, which is what Rust's `as` does.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn f64_to_u64(x: f64) -> u64 {
    x as u64
}

/// What one client did during a workload.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// HTTP requests answered as expected.
    pub requests: u64,
    /// Payload bytes moved (request bodies pushed, response bodies pulled).
    pub bytes: u64,
    /// Requests or operations that failed.
    pub errors: u64,
    /// The first failure, so a run that errors says why.
    pub first_error: Option<String>,
    /// Latencies of either each request or each operation, per `per_request`.
    pub latency: Histogram,
    /// Whether the client records every request's latency; workloads that
    /// time whole operations (a large blob's push) record them themselves.
    pub per_request: bool,
}

impl Tally {
    /// A tally recording the latency of every HTTP request.
    pub fn per_request() -> Self {
        Tally {
            per_request: true,
            ..Tally::default()
        }
    }

    /// A tally recording only the operations the workload times itself.
    pub fn per_operation() -> Self {
        Tally::default()
    }

    /// One request answered as expected after `latency`.
    pub fn request(&mut self, latency: Duration) {
        self.requests += 1;
        if self.per_request {
            self.latency.record(latency);
        }
    }

    /// One whole operation (several requests) took `latency`.
    pub fn operation(&mut self, latency: Duration) {
        self.latency.record(latency);
    }

    pub fn error(&mut self, error: &crate::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.latency.merge(&other.latency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_is_the_textbook_one() {
        assert_eq!(nearest_rank(50.0, 100), 50);
        assert_eq!(nearest_rank(99.0, 100), 99);
        assert_eq!(nearest_rank(99.0, 1000), 990);
        assert_eq!(nearest_rank(50.0, 5), 3);
        assert_eq!(nearest_rank(99.0, 5), 5);
        assert_eq!(nearest_rank(0.0, 5), 1);
        assert_eq!(nearest_rank(100.0, 7), 7);
        assert_eq!(nearest_rank(99.9, 1000), 999);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::default();
        for us in 1..=100 {
            h.record_us(us);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.percentile_us(50.0), 50);
        assert_eq!(h.percentile_us(99.0), 99);
        assert_eq!(h.percentile_us(100.0), 100);
        assert_eq!(h.min(), 1);
        assert_eq!(h.max(), 100);
        assert!((h.mean_us() - 50.5).abs() < 1e-9);
    }

    #[test]
    fn large_values_are_within_one_percent() {
        let mut h = Histogram::default();
        // 1 ms .. 10 s in 10 µs steps.
        let values: Vec<u64> = (100..1_000_000u64).map(|i| i * 10).collect();
        for v in &values {
            h.record_us(*v);
        }
        for p in [50.0, 90.0, 99.0, 99.9] {
            let rank = nearest_rank(p, values.len() as u64);
            let exact = values[usize::try_from(rank - 1).unwrap()] as f64;
            let got = h.percentile_us(p) as f64;
            assert!(
                (got - exact).abs() / exact < 0.01,
                "p{p}: got {got}, exact {exact}"
            );
        }
    }

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for us in [0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, u64::MAX] {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            assert!(b < BUCKETS);
            let (low, high) = bucket_bounds(b);
            assert!(low <= us && us <= high, "{us} not in {low}..={high}");
            last = b;
        }
    }

    #[test]
    fn merging_adds_up() {
        let mut a = Tally::per_request();
        let mut b = Tally::per_request();
        a.request(Duration::from_micros(10));
        b.request(Duration::from_micros(30));
        b.bytes = 5;
        a.merge(&b);
        assert_eq!(a.requests, 2);
        assert_eq!(a.bytes, 5);
        assert_eq!(a.latency.percentile_us(100.0), 30);
        assert_eq!(a.latency.percentile_us(50.0), 10);
        let mut op = Tally::per_operation();
        op.request(Duration::from_micros(10));
        assert_eq!(op.latency.count(), 0);
        op.operation(Duration::from_millis(2));
        assert_eq!(op.latency.count(), 1);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = Histogram::default();
        assert_eq!(h.percentile_us(99.0), 0);
        assert_eq!(h.min(), 0);
    }
}
