//! [`WaitWord`]: futex wait/notify on a sequence word, safe when a waiter is killed.

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::Duration;

use baozi_shm::ShmSafe;

use crate::deadline::Deadline;
use crate::error::SyncError;
use crate::sys;

/// The longest a waiter sleeps before it looks again by itself. A notifier killed between its
/// commit and its wake-up cannot leave a waiter asleep longer than this.
pub const WAIT_SLICE: Duration = Duration::from_millis(100);

/// A sequence word and a "sleepers" flag on which processes wait for a condition.
///
/// The protocol, for a condition that other processes make true:
///
/// ```text
/// waiter                                   notifier
///   let seen = w.seq();                      make the condition true (commit)
///   if condition { done }                    w.notify()  // bump seq; wake if sleepers
///   w.wait(seen, deadline)   // sleeps only while seq == seen
///   loop to the top
/// ```
///
/// Unlike a process-shared `pthread_cond_t`, no per-waiter state is kept: a waiter killed while
/// it sleeps leaves at most the sleepers flag set, which costs one spurious `FUTEX_WAKE`, and the
/// notifier clears it. A waiter never sleeps longer than [`WAIT_SLICE`] without rechecking.
///
/// # State
/// | field      | meaning                                                    | written by |
/// |------------|------------------------------------------------------------|------------|
/// | `seq`      | bumped (wrapping) after every change a waiter may wait for | notifiers  |
/// | `sleepers` | 1: someone may be in `FUTEX_WAIT` on `seq`; 0: nobody is   | both       |
#[repr(C)]
#[derive(Debug, Default)]
pub struct WaitWord {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

// SAFETY: repr(C), two atomic u32s; any bit pattern is a valid state (a garbage flag only costs a
// spurious wake-up).
unsafe impl ShmSafe for WaitWord {}

impl WaitWord {
    /// A word with sequence 0 and no sleepers.
    pub const fn new() -> Self {
        WaitWord {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        }
    }

    /// The current sequence number. Read it *before* checking the condition.
    #[inline]
    pub fn seq(&self) -> u32 {
        self.seq.load(Ordering::Acquire)
    }

    /// Sleeps until the sequence differs from `seen`, a notify, [`WAIT_SLICE`], or `deadline`.
    /// Returns `Err(Timeout)` only once `deadline` has passed; the caller rechecks its condition
    /// on `Ok`, which may be spurious.
    ///
    /// # Errors
    /// [`SyncError::Timeout`], [`SyncError::Io`].
    pub fn wait(&self, seen: u32, deadline: Option<Deadline>) -> Result<(), SyncError> {
        self.wait_unless(seen, deadline, || false)
    }

    /// [`wait`](Self::wait) for a condition whose notifier calls
    /// [`notify_sleepers`](Self::notify_sleepers): after announcing itself as a sleeper, the
    /// waiter calls `changed` (which looks at the condition itself, say a cursor it saw) and
    /// returns at once if it says true; otherwise it sleeps while the sequence is `seen`.
    ///
    /// The two sides form a Dekker pair over two SeqCst fences: the notifier commits, fences,
    /// loads the flag; the waiter stores the flag, fences, runs `changed`. Whichever fence comes
    /// second sees the other's store: either the notifier sees the flag and bumps the sequence
    /// (so FUTEX_WAIT returns at once or is woken), or `changed` sees the commit.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_unless(
        &self,
        seen: u32,
        deadline: Option<Deadline>,
        changed: impl FnOnce() -> bool,
    ) -> Result<(), SyncError> {
        if deadline.is_some_and(|d| d.has_passed()) {
            return Err(SyncError::Timeout);
        }
        // SeqCst store, then the kernel's load of `seq`: a notifier either sees the flag (and
        // wakes us), or bumped `seq` before it and FUTEX_WAIT returns at once.
        self.sleepers.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if changed() {
            return Ok(());
        }
        let slice = Deadline::after(WAIT_SLICE);
        let until = deadline.map_or(slice, |d| d.min(slice));
        match sys::futex_wait(&self.seq, seen, Some(until.as_nanos())) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                if deadline.is_some_and(|d| d.has_passed()) {
                    Err(SyncError::Timeout)
                } else {
                    Ok(())
                }
            }
            Err(source) => Err(SyncError::Io {
                op: "futex_wait",
                source,
            }),
        }
    }

    /// Announces a change: bumps the sequence and wakes every sleeper, if there may be any.
    /// With nobody asleep this is one atomic add and one load: no syscall.
    #[inline]
    pub fn notify(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            self.wake_slow();
        }
    }

    /// Wakes the sleepers, if there may be any, after a change that awake waiters see by
    /// themselves (they watch the state, as [`wait_unless`](Self::wait_unless)'s `changed`
    /// does, not the sequence). With nobody asleep this is one fence and one load of a line
    /// that only sleepers write: no locked instruction, no syscall, and the line stays shared
    /// in every cache instead of moving to the notifier on every call, as [`notify`](Self::notify)'s
    /// add makes it.
    #[inline]
    pub fn notify_sleepers(&self) {
        // Pairs with the fence in wait_unless (see there): the caller's commit, then this load.
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.notify_slow();
        }
    }

    #[cold]
    fn notify_slow(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        self.wake_slow();
    }

    #[cold]
    fn wake_slow(&self) {
        if self.sleepers.swap(0, Ordering::SeqCst) != 0 {
            // Wake all: sleepers re-set the flag if they must sleep again. Waking one would lose
            // the wake-up if that one was killed or timed out before acting on it.
            if sys::futex_wake(&self.seq, i32::MAX) > 0 {
                crate::backoff::note_wake_up();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    /// Two threads hand a counter back and forth, each sleeping at once (no spin) until the
    /// other's commit, which wakes it only through `notify_sleepers`. A lost wake-up costs a
    /// whole [`WAIT_SLICE`]: with the fences missing, most hand-offs would.
    #[test]
    fn notify_sleepers_wakes_a_waiter_that_watches_the_state() {
        const ROUNDS: u64 = 300;
        let word = WaitWord::new();
        let counter = AtomicU64::new(0);
        let stalls = AtomicU32::new(0);
        let take_turns = |me: u64| {
            for round in 0..ROUNDS {
                let mine = 2 * round + me;
                loop {
                    let seen = word.seq();
                    let now = counter.load(Ordering::Acquire);
                    if now == mine {
                        break;
                    }
                    let start = Instant::now();
                    let _ = word.wait_unless(seen, None, || counter.load(Ordering::Acquire) != now);
                    if start.elapsed() >= WAIT_SLICE * 9 / 10 {
                        stalls.fetch_add(1, Ordering::Relaxed);
                    }
                }
                counter.store(mine + 1, Ordering::Release);
                word.notify_sleepers();
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| take_turns(1));
            take_turns(0);
        });
        assert_eq!(counter.load(Ordering::Relaxed), 2 * ROUNDS);
        // A descheduled thread on a loaded machine may sleep a slice now and then; a missing
        // fence loses most of the 600 hand-offs.
        let stalls = stalls.load(Ordering::Relaxed);
        assert!(stalls <= 5, "{stalls} hand-offs waited a whole slice");
    }
}
