//! [`WaitWord`]: futex wait/notify on a sequence word, safe when a waiter is killed.

use std::sync::atomic::{AtomicU32, Ordering};
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
        if deadline.is_some_and(|d| d.has_passed()) {
            return Err(SyncError::Timeout);
        }
        // SeqCst store, then the kernel's load of `seq`: a notifier either sees the flag (and
        // wakes us), or bumped `seq` before it and FUTEX_WAIT returns at once.
        self.sleepers.store(1, Ordering::SeqCst);
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
