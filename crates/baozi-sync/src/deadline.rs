//! [`Deadline`]: a point in time on `CLOCK_MONOTONIC`.

use std::time::Duration;

use crate::sys;

/// Nanoseconds on `CLOCK_MONOTONIC` now: the same clock in every process on the machine, so a
/// timestamp taken in one process can be compared with a reading in another.
pub fn monotonic_ns() -> u64 {
    sys::monotonic_ns()
}

/// A point on `CLOCK_MONOTONIC`, so that a wall-clock jump (NTP, `date -s`) neither shortens
/// nor stretches a timeout. `None` where a `Option<Deadline>` is taken means "wait forever".
///
/// ```
/// use baozi_sync::Deadline;
/// use std::time::Duration;
/// let d = Deadline::after(Duration::from_millis(20));
/// assert!(!d.has_passed());
/// std::thread::sleep(Duration::from_millis(25));
/// assert!(d.has_passed());
/// assert_eq!(d.remaining(), Duration::ZERO);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    ns: u64,
}

impl Deadline {
    /// `timeout` from now. Absurdly long timeouts saturate to the far future.
    pub fn after(timeout: Duration) -> Self {
        let t = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        Deadline {
            ns: sys::monotonic_ns().saturating_add(t),
        }
    }

    /// Now, as a deadline (already passed).
    pub fn now() -> Self {
        Deadline {
            ns: sys::monotonic_ns(),
        }
    }

    /// Whether the deadline is in the past.
    pub fn has_passed(&self) -> bool {
        sys::monotonic_ns() >= self.ns
    }

    /// Time left, zero once passed.
    pub fn remaining(&self) -> Duration {
        Duration::from_nanos(self.ns.saturating_sub(sys::monotonic_ns()))
    }

    /// The earlier of this deadline and `timeout` from now.
    #[must_use]
    pub fn min_after(self, timeout: Duration) -> Self {
        self.min(Deadline::after(timeout))
    }

    /// Nanoseconds on `CLOCK_MONOTONIC`.
    pub fn as_nanos(&self) -> u64 {
        self.ns
    }
}
