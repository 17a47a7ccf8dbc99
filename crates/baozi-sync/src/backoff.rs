//! [`SpinPolicy`]: how long a waiter spins before it sleeps, adapted to what spinning achieves.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys;

thread_local! {
    /// Set when this thread's notify woke a sleeper; taken by its next spin.
    static WOKE_A_SLEEPER: Cell<bool> = const { Cell::new(false) };
}

/// Records that this thread just woke a sleeping thread (see [`SpinPolicy::spin_until`]).
pub(crate) fn note_wake_up() {
    WOKE_A_SLEEPER.with(|w| w.set(true));
}

/// The shortest spin budget, in nanoseconds.
const MIN_SPIN_NS: u32 = 1_000;
/// The longest spin budget, in nanoseconds. A blocked wake-up costs ~80 µs on a small VM, so
/// spinning for up to 50 µs still pays when the peer is active.
const MAX_SPIN_NS: u32 = 50_000;

/// An adaptive spin budget, kept per process (per queue handle), never in shared memory.
///
/// A waiter first spins — `spin_loop` hints for the first fifth of the budget, then
/// `sched_yield`, so that on a 2-core machine a spinner never starves the peer it waits for; a
/// thread whose last notify woke a sleeper yields from the start, since the woken thread may be
/// queued on its core —
/// and sleeps on the futex only when the budget runs out. Each success (the condition came true
/// while spinning) lengthens the budget by a quarter, each failure halves it: a peer that answers
/// quickly is met by spinning, a slow one costs ~1 µs of spin before each sleep.
///
/// Halving alone has a trap: once both sides of a ping-pong sleep, each answer comes only after
/// a wake-up, so a short spin never succeeds and the budget never grows back, even when both
/// are active again. So a waiter that had to sleep reports how long the whole wait took
/// ([`waited`](SpinPolicy::waited)): if a spin that long would have caught the change, the
/// budget grows to cover it.
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

impl Clone for SpinPolicy {
    /// A policy with this one's current budget, learning on its own from then on.
    fn clone(&self) -> Self {
        SpinPolicy {
            budget_ns: AtomicU32::new(self.budget_ns()),
        }
    }
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
    /// It stays so: [`waited`](SpinPolicy::waited) does not turn it on.
    pub const fn never() -> Self {
        SpinPolicy {
            budget_ns: AtomicU32::new(0),
        }
    }

    /// The current budget in nanoseconds.
    pub fn budget_ns(&self) -> u32 {
        self.budget_ns.load(Ordering::Relaxed)
    }

    /// Tells the policy that a wait which ended in a sleep saw its condition come true `total_ns`
    /// after the wait began (spin and sleep together). When a spin of that length would have
    /// caught it, the budget grows to a quarter more than that (at most 50 µs).
    pub fn waited(&self, total_ns: u64) {
        if total_ns >= u64::from(MAX_SPIN_NS) || self.budget_ns.load(Ordering::Relaxed) == 0 {
            return;
        }
        let want = (total_ns + total_ns / 4).clamp(u64::from(MIN_SPIN_NS), u64::from(MAX_SPIN_NS));
        self.budget_ns.fetch_max(want as u32, Ordering::Relaxed);
    }

    /// Spins until `ready()` returns true (→ true) or the budget is spent (→ false).
    pub fn spin_until(&self, mut ready: impl FnMut() -> bool) -> bool {
        let budget = self.budget_ns.load(Ordering::Relaxed);
        if budget == 0 {
            return ready();
        }
        let start = sys::monotonic_ns();
        // A thread that has just woken a sleeper yields from the first round: the kernel often
        // wakes the sleeper on the waker's own core, where `spin_loop` would keep it off the CPU
        // for the first fifth of the budget (10 µs), while `sched_yield` hands it the core at once
        // (and costs well under a microsecond when nothing else wants the core).
        let yield_after = if WOKE_A_SLEEPER.with(|w| w.replace(false)) {
            0
        } else {
            u64::from(budget / 5)
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slept_wait_that_a_spin_would_have_caught_grows_the_budget() {
        let p = SpinPolicy::new();
        assert!(!p.spin_until(|| false)); // a failure halves it...
        while p.budget_ns() > MIN_SPIN_NS {
            assert!(!p.spin_until(|| false));
        }
        assert_eq!(p.budget_ns(), MIN_SPIN_NS); // ...down to the floor
        p.waited(10_000);
        assert_eq!(p.budget_ns(), 12_500);
        p.waited(2_000); // never shrinks it
        assert_eq!(p.budget_ns(), 12_500);
        p.waited(200_000); // a spin could not have caught that one
        assert_eq!(p.budget_ns(), 12_500);
        let never = SpinPolicy::never();
        never.waited(10_000);
        assert_eq!(never.budget_ns(), 0);
    }
}
