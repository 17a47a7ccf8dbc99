//! `--kill-every`: pick a live worker at random, SIGKILL it, and start a replacement.

/// A small xorshift generator: the harness needs unpredictable victims and instants, not
/// cryptographic randomness.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded() -> Self {
        let seed = baozi_sync::monotonic_ns() ^ (u64::from(std::process::id()) << 32);
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
