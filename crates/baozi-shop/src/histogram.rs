//! A log-linear latency histogram (HDR style) with 1/128 relative precision, kept as plain
//! counters so that each consumer can record into shared memory and survive being killed.
//!
//! Values below 128 have a bucket each; above, each power of two is split into 128 buckets, so a
//! bucket's width is at most 0.8 % of its values.

/// Buckets per histogram.
pub(crate) const BUCKETS: usize = 128 + 57 * 128;

/// The bucket of `v` nanoseconds.
pub(crate) fn bucket(v: u64) -> usize {
    if v < 128 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // 7..=63
    let m = (v >> (e - 7)) & 127;
    128 + (e as usize - 7) * 128 + m as usize
}

/// The smallest value in bucket `b`.
pub(crate) fn bucket_low(b: usize) -> u64 {
    if b < 128 {
        return b as u64;
    }
    let e = (b - 128) / 128 + 7;
    let m = ((b - 128) % 128) as u64;
    (128 + m) << (e - 7)
}

/// Percentiles of a merged histogram.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    counts: Vec<u64>,
    total: u64,
}

impl Latency {
    /// Merges per-consumer histograms.
    pub fn merge<'a>(parts: impl IntoIterator<Item = &'a [u64]>) -> Self {
        let mut counts = vec![0u64; BUCKETS];
        for part in parts {
            for (c, p) in counts.iter_mut().zip(part) {
                *c += p;
            }
        }
        let total = counts.iter().sum();
        Latency { counts, total }
    }

    /// Adds another histogram's samples to this one.
    pub fn add(&mut self, other: &Latency) {
        if self.counts.len() < BUCKETS {
            self.counts.resize(BUCKETS, 0);
        }
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
        self.total += other.total;
    }

    /// Samples recorded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), as the low edge of its bucket.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_low(b);
            }
        }
        bucket_low(BUCKETS - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            255,
            256,
            1000,
            123_456,
            1 << 40,
            u64::MAX,
        ] {
            let b = bucket(v);
            assert!(b >= last && b < BUCKETS, "{v}");
            last = b;
            let low = bucket_low(b);
            assert!(low <= v, "{v}: low {low}");
            assert!(v - low <= v / 128 + 1, "{v}: low {low}");
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = vec![0u64; BUCKETS];
        for v in 1..=1000u64 {
            h[bucket(v * 1000)] += 1;
        }
        let l = Latency::merge([h.as_slice()]);
        let p50 = l.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01, "{p50}");
        let p99 = l.quantile(0.99) as f64;
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.01, "{p99}");
    }
}
