//! [`SpinPolicy`]: how long a waiter spins before it sleeps, adapted to what spinning achieves.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys;

/// The shortest spin budget, in nanoseconds.
const MIN_SPIN_NS: u32 = 1_000;
/// The longest spin budget, in nanoseconds. A blocked wake-up costs ~80 µs on a small VM, so
/// spinning for up to 50 µs still pays when the peer is active.
const MAX_SPIN_NS: u32 = 50_000;

/// An adaptive spin budget, kept per process (per queue handle), never in shared memory.
///
/// A waiter first spins — `spin_loop` hints for the first fifth of the budget, then
/// `sched_yield`, so that on a 2-core machine a spinner never starves the peer it waits for —
/// and sleeps on the futex only when the budget runs out. Each success (the condition came true
/// while spinning) lengthens the budget by a quarter, each failure halves it: a peer that answers
/// quickly is met by spinning, a slow one costs ~1 µs of spin before each sleep.
///
/// ```
/// use baozi_sync::SpinPolicy;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// let policy = SpinPolicy::new();
/// let ready = AtomicBool::new(true);
/// assert!(policy.spin_until(|| ready.load(Ordering::Acquire)));
/// ```
#[derive(Debug)]
pub struct SpinPolicy {
    budget_ns: AtomicU32,
}

impl Default for SpinPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl SpinPolicy {
    /// A policy starting at a 20 µs budget.
    pub const fn new() -> Self {
        SpinPolicy {
            budget_ns: AtomicU32::new(20_000),
        }
    }

    /// A policy that never spins (every wait sleeps at once): for measuring the blocking path.
    pub const fn never() -> Self {
        SpinPolicy {
            budget_ns: AtomicU32::new(0),
        }
    }

    /// The current budget in nanoseconds.
    pub fn budget_ns(&self) -> u32 {
        self.budget_ns.load(Ordering::Relaxed)
    }

    /// Spins until `ready()` returns true (→ true) or the budget is spent (→ false).
    pub fn spin_until(&self, mut ready: impl FnMut() -> bool) -> bool {
        let budget = self.budget_ns.load(Ordering::Relaxed);
        if budget == 0 {
            return ready();
        }
        let start = sys::monotonic_ns();
        let yield_after = u64::from(budget / 5);
        let mut i: u32 = 0;
        loop {
            if ready() {
                let grown = (budget + budget / 4).clamp(MIN_SPIN_NS, MAX_SPIN_NS);
                self.budget_ns.store(grown, Ordering::Relaxed);
                return true;
            }
            i = i.wrapping_add(1);
            let elapsed = sys::monotonic_ns().saturating_sub(start);
            if elapsed >= u64::from(budget) {
                self.budget_ns
                    .store((budget / 2).max(MIN_SPIN_NS), Ordering::Relaxed);
                return false;
            }
            if elapsed < yield_after {
                for _ in 0..(1u32 << (i.min(6))) {
                    std::hint::spin_loop();
                }
            } else {
                sys::sched_yield();
            }
        }
    }
}
