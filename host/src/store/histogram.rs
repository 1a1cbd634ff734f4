//! A lock-free histogram with power-of-two buckets, for the writer's own measurements (sync
//! latency, round size): recording is three relaxed atomic adds, reading is a snapshot the
//! metrics endpoint turns into a Prometheus histogram.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets: upper bounds `first`, `2 first`, `4 first`, ... (`BUCKETS` of them), then +Inf.
const BUCKETS: usize = 24;

/// Observations of one quantity.
#[derive(Debug)]
pub(crate) struct Histogram {
    /// Upper bound of the first bucket, in the unit observed.
    first: u64,
    counts: [AtomicU64; BUCKETS + 1],
    sum: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, cumulative, +Inf last.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// A histogram whose first bucket ends at `first` (the unit is the caller's).
    pub(crate) fn new(first: u64) -> Histogram {
        Histogram {
            first: first.max(1),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub(crate) fn observe(&self, value: u64) {
        let mut bucket = 0;
        let mut bound = self.first;
        while bucket < BUCKETS && value > bound {
            bucket += 1;
            bound = bound.saturating_mul(2);
        }
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The current counts, each bucket's bound multiplied by `scale` (e.g. 1e-9 for ns → s).
    pub(crate) fn snapshot(&self, scale: f64) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(BUCKETS + 1);
        let mut total = 0;
        let mut bound = self.first;
        for (i, count) in self.counts.iter().enumerate() {
            total += count.load(Ordering::Relaxed);
            let upper = if i == BUCKETS {
                f64::INFINITY
            } else {
                bound as f64 * scale
            };
            buckets.push((upper, total));
            bound = bound.saturating_mul(2);
        }
        HistogramSnapshot {
            buckets,
            sum: self.sum.load(Ordering::Relaxed) as f64 * scale,
            count: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_power_of_two_buckets() {
        let histogram = Histogram::new(10);
        for value in [0, 10, 11, 20, 35, u64::MAX / 2] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot(1.0);
        assert_eq!(snapshot.count, 6);
        assert_eq!(
            snapshot.buckets[0],
            (10.0, 2),
            "0 and 10 are at or below 10"
        );
        assert_eq!(
            snapshot.buckets[1],
            (20.0, 4),
            "11 and 20 are at or below 20"
        );
        assert_eq!(snapshot.buckets[2], (40.0, 5));
        let last = snapshot.buckets.last().unwrap();
        assert_eq!(*last, (f64::INFINITY, 6));
        assert!(snapshot.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
