//! A lane's counters, shared with whoever reports them (the end-of-command summary, the admin
//! server's collector): deliveries, retries, failures, depth, the oldest pending event, and a
//! publish-to-acknowledgement latency histogram.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Counters of one lane, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct LaneStats {
    /// Events routed to this lane.
    pub routed: AtomicU64,
    /// Events the sink acknowledged.
    pub delivered: AtomicU64,
    /// Attempts that failed transiently and were retried.
    pub retried: AtomicU64,
    /// Events the sink refused for good (or that ran out of attempts).
    pub failed: AtomicU64,
    /// Failed events the dead-letter sink acknowledged.
    pub dead_lettered: AtomicU64,
    /// Failed events with no dead-letter sink, or that the dead-letter sink refused: logged, lost.
    pub undeliverable: AtomicU64,
    /// Events queued or in flight now.
    pub depth: AtomicU64,
    /// Consecutive failed attempts now (0 while the sink takes events).
    pub failures: AtomicU64,
    /// The last failure's message, kept while `failures` is above zero.
    pub(super) last_error: Mutex<String>,
    /// When each event still queued or in flight was routed here, by sequence number.
    pending: Mutex<BTreeMap<u64, Instant>>,
    pub(super) latency: Mutex<Latency>,
}

/// Upper bounds (seconds) of the publish-to-acknowledgement histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A cumulative histogram as Prometheus exposes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    pub sum: f64,
    pub count: u64,
    /// Upper bound and the count in that bucket alone (not cumulative, as prometheus-client's
    /// encoder takes them); the last bound, `f64::MAX`, is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl LaneStats {
    /// Publish-to-acknowledgement latency quantile (0.0–1.0) of delivered events, if any.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        lock(&self.latency).quantile(q)
    }

    /// Publish-to-acknowledgement latency of delivered events, in [`LATENCY_BUCKETS`].
    pub fn latency_histogram(&self) -> Histogram {
        let latency = lock(&self.latency);
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .zip(latency.bounded)
            .collect();
        let within: u64 = latency.bounded.iter().sum();
        buckets.push((f64::MAX, latency.count - within));
        Histogram {
            sum: latency.sum_micros as f64 / 1e6,
            count: latency.count,
            buckets,
        }
    }

    /// How long the oldest event still queued or in flight has been in this lane.
    pub fn oldest_pending(&self) -> Option<Duration> {
        lock(&self.pending)
            .values()
            .next()
            .map(|since| since.elapsed())
    }

    /// The last failure's message while the sink is failing.
    pub fn last_error(&self) -> Option<String> {
        (self.failures.load(Ordering::Relaxed) > 0).then(|| lock(&self.last_error).clone())
    }

    pub(super) fn routed(&self, seq: u64) {
        self.routed.fetch_add(1, Ordering::Relaxed);
        self.depth.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(seq, Instant::now());
    }

    /// The event left the lane: delivered, dead-lettered or given up.
    pub(super) fn left(&self, seq: u64) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
        lock(&self.pending).remove(&seq);
    }
}

/// A log-linear latency histogram: 8 sub-buckets per power of two of microseconds (≤ 12.5 % error).
#[derive(Debug)]
pub(super) struct Latency {
    buckets: Vec<u64>,
    count: u64,
    sum_micros: u64,
    /// Per [`LATENCY_BUCKETS`] bound, the events above the previous bound and up to this one.
    bounded: [u64; LATENCY_BUCKETS.len()],
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            buckets: vec![0; 40 * 8],
            count: 0,
            sum_micros: 0,
            bounded: [0; LATENCY_BUCKETS.len()],
        }
    }
}

impl Latency {
    fn index(micros: u64) -> usize {
        if micros < 8 {
            return micros as usize;
        }
        let power = 63 - micros.leading_zeros() as usize; // ≥ 3
        let sub = ((micros >> (power - 3)) & 7) as usize;
        ((power - 2) * 8 + sub).min(40 * 8 - 1)
    }

    fn lower_bound(index: usize) -> u64 {
        if index < 8 {
            return index as u64;
        }
        let power = index / 8 + 2;
        let sub = (index % 8) as u64;
        (8 + sub) << (power - 3)
    }

    pub(super) fn record(&mut self, elapsed: Duration) {
        let micros = elapsed.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[Self::index(micros)] += 1;
        self.count += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
        let seconds = micros as f64 / 1e6;
        if let Some(at) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.bounded[at] += 1;
        }
    }

    fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(Self::lower_bound(index)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_close() {
        let mut latency = Latency::default();
        for micros in 1..=1000u64 {
            latency.record(Duration::from_micros(micros));
        }
        let p50 = latency.quantile(0.5).expect("p50").as_micros() as f64;
        let p99 = latency.quantile(0.99).expect("p99").as_micros() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.13, "p50 {p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.13, "p99 {p99}");
        for micros in [0u64, 7, 8, 9, 15, 16, 1_000_000, u64::MAX >> 20] {
            let i = Latency::index(micros);
            assert!(Latency::lower_bound(i) <= micros, "{micros}");
        }
    }
}
