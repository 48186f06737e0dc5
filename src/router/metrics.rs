//! The router's counters: requests per app by status class, bytes, a latency histogram per app
//! (lock-free: one atomic add per bucket), and the connection counts. `admin` exposes them.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// The request latency histogram's bucket bounds, in seconds (Prometheus' defaults).
pub const LATENCY_BOUNDS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Request durations: counts per bucket (not cumulative; the last one is past every bound) and
/// their sum.
#[derive(Debug, Default)]
pub struct Latency {
    counts: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_us: AtomicU64,
}

impl Latency {
    /// Counts one request that took `d`.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// The sum in seconds, the count, and the count in each bucket by its upper bound (not
    /// cumulative, as prometheus-client's encoder takes them), the last one at +Inf.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = (self.counts.iter().enumerate())
            .map(|(i, c)| (LATENCY_BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), c.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        (self.sum_us.load(Relaxed) as f64 / 1e6, count, buckets)
    }
}

/// Per-app request counters.
#[derive(Debug, Default)]
pub struct AppMetrics {
    /// Responses by status class: index 0 = 1xx … 4 = 5xx.
    pub by_class: [AtomicU64; 5],
    /// Bytes received from clients (heads and bodies).
    pub bytes_in: AtomicU64,
    /// Bytes sent to clients (heads and bodies).
    pub bytes_out: AtomicU64,
    /// How long requests took, from their head to their last byte.
    pub latency: Latency,
    /// Requests being served now (held while the app wakes, forwarded, or relayed).
    pub active: AtomicUsize,
}

/// One request counted in its app's `active` gauge until dropped.
pub struct AppSlot(Arc<AppMetrics>);

impl Drop for AppSlot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

impl AppMetrics {
    /// Counts one finished request.
    pub fn record(&self, status: u16, bytes_in: u64, bytes_out: u64, took: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Relaxed);
        self.bytes_in.fetch_add(bytes_in, Relaxed);
        self.bytes_out.fetch_add(bytes_out, Relaxed);
        self.latency.observe(took);
    }

    /// Counts a request as active unless the app already serves `cap` (None: over the cap).
    pub fn enter(self: &Arc<Self>, cap: usize) -> Option<AppSlot> {
        if self.active.fetch_add(1, Relaxed) >= cap {
            self.active.fetch_sub(1, Relaxed);
            return None;
        }
        Some(AppSlot(self.clone()))
    }

    /// Requests of all classes.
    pub fn total(&self) -> u64 {
        self.by_class.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// Router-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Client connections open now.
    pub active_connections: AtomicI64,
    /// Client connections accepted since start.
    pub connections_total: AtomicU64,
    /// Client connections closed at once because the cap (all, or one client's) was reached.
    pub rejected_connections: AtomicU64,
    /// Requests answered 503 because their app already had `max_connections_per_app` in flight.
    pub rejected_app_requests: AtomicU64,
    /// Requests for a host no route knows.
    pub unknown_host: AppMetrics,
}

/// The `q` quantile (0..1) of a histogram given as `(upper bound, count in that bucket)` pairs
/// in order, the way Prometheus' `histogram_quantile` estimates it (linear within the bucket);
/// None when empty.
pub fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(bound, n) in buckets {
        let count = below + n;
        if count as f64 >= rank {
            if bound.is_infinite() {
                // Past the last bound: the best estimate is that bound.
                return Some(lower);
            }
            let inside = (count - below) as f64;
            let frac = if inside > 0.0 {
                (rank - below as f64) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * frac);
        }
        (lower, below) = (bound, count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_count_each_request() {
        let l = Latency::default();
        l.observe(Duration::from_millis(3));
        l.observe(Duration::from_millis(30));
        l.observe(Duration::from_secs(20));
        let (sum, count, b) = l.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 20.033).abs() < 1e-9, "{sum}");
        assert_eq!(b[0], (0.005, 1));
        assert_eq!(b[3], (0.05, 1));
        assert_eq!(b.last().unwrap().1, 1);
        assert!(b.last().unwrap().0.is_infinite());
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 0)], 0.95), None);
        // 100 requests: 50 under 10 ms, 50 between 10 and 20 ms.
        let b = [(0.01, 50), (0.02, 50), (f64::INFINITY, 0)];
        let p95 = quantile(&b, 0.95).unwrap();
        assert!((p95 - 0.019).abs() < 1e-9, "{p95}");
        assert!((quantile(&b, 0.5).unwrap() - 0.01).abs() < 1e-9);
        // Everything past the last bound: that bound.
        assert_eq!(quantile(&[(0.01, 0), (f64::INFINITY, 4)], 0.95), Some(0.01));
    }
}
