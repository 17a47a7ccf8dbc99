//! [`SyncError`]: what can go wrong locking or waiting.

use std::fmt;
use std::io;

use baozi_shm::ShmError;

/// What went wrong with a process-shared lock or wait.
#[derive(Debug)]
#[non_exhaustive]
pub enum SyncError {
    /// The deadline passed before the lock or the condition was had.
    Timeout,
    /// A previous holder died and the one after it released the lock without marking the state
    /// consistent: the lock is permanently unusable. Recreate the object.
    Unrecoverable,
    /// The shared object could not be made, opened or checked.
    Shm(ShmError),
    /// The calling thread does not hold the lock it tried to release, wait on or notify through
    /// (a `Lock` that is not locked, or one held by another thread or process).
    NotOwner {
        /// What was not held: "lock", "rlock" or "condition's lock".
        what: &'static str,
    },
    /// A release would raise a semaphore above its limit: a `BoundedSemaphore`'s initial value,
    /// or [`Semaphore::MAX_VALUE`](crate::Semaphore::MAX_VALUE).
    ReleasedTooManyTimes {
        /// The highest value the semaphore may hold.
        limit: u32,
    },
    /// The barrier is broken: it was aborted, reset while this waiter waited, or a waiter timed
    /// out. Every waiter of that cycle gets this error.
    BrokenBarrier,
    /// More threads wait on a condition at once than it has room for.
    TooManyWaiters {
        /// The most waiters the condition was created for.
        max: u32,
    },
    /// A parameter given to a constructor is out of range.
    InvalidParameter {
        /// What it was ("semaphore value", "barrier parties", ...).
        what: &'static str,
        /// The value given.
        value: u64,
        /// The accepted range.
        reason: &'static str,
    },
    /// A named sync object is another primitive than the one asked for (an event opened as a
    /// semaphore, say).
    WrongPrimitive {
        /// The object.
        name: String,
        /// The primitive it is ("event").
        found: &'static str,
        /// The primitive asked for ("semaphore").
        expected: &'static str,
    },
    /// The operating system refused a lock or wait call.
    Io {
        /// The call.
        op: &'static str,
        /// The failure.
        source: io::Error,
    },
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Timeout => f.write_str("timed out"),
            SyncError::Unrecoverable => f.write_str(
                "the lock is unrecoverable: a holder died and the state was never marked consistent; recreate the object",
            ),
            SyncError::NotOwner { what } => write!(
                f,
                "this thread does not hold the {what}: acquire it first (only the thread that acquired it may release it, wait or notify)"
            ),
            SyncError::ReleasedTooManyTimes { limit } => write!(
                f,
                "semaphore released too many times: its value may not exceed {limit}; release only what was acquired"
            ),
            SyncError::BrokenBarrier => f.write_str(
                "the barrier is broken (aborted, reset, or a waiter timed out): call reset() before waiting on it again",
            ),
            SyncError::TooManyWaiters { max } => write!(
                f,
                "more than {max} threads wait on this condition at once: create it with a larger max_waiters"
            ),
            SyncError::InvalidParameter { what, value, reason } => {
                write!(f, "{what} {value} is out of range: {reason}")
            }
            SyncError::WrongPrimitive {
                name,
                found,
                expected,
            } => write!(
                f,
                "{name} is a baozi {found}, not a baozi {expected}: open it as a {found}, or use another name"
            ),
            SyncError::Shm(e) => fmt::Display::fmt(e, f),
            SyncError::Io { op, .. } => write!(f, "{op} failed"),
        }
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SyncError::Shm(e) => e.source(),
            SyncError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why a guard-returning acquire (`Lock::lock`, `RLock::lock`, `Condition::lock`) did not simply
/// return its guard. The counterpart of [`LockError`](crate::LockError) for primitives that
/// protect no value of their own.
pub enum AcquireError<G> {
    /// The lock was acquired, but its previous holder died holding it: what it protects may be
    /// half updated. Repair it, then call `mark_consistent` on the guard; dropping the guard
    /// unmarked makes the lock unrecoverable for everyone ([`SyncError::Unrecoverable`]).
    OwnerDied(G),
    /// The lock was not acquired.
    Sync(SyncError),
}

impl<G> AcquireError<G> {
    /// The guard of an [`OwnerDied`](Self::OwnerDied) acquisition, or the error.
    ///
    /// # Errors
    /// The [`SyncError`] of a [`Sync`](Self::Sync) failure.
    pub fn into_guard(self) -> Result<G, SyncError> {
        match self {
            AcquireError::OwnerDied(g) => Ok(g),
            AcquireError::Sync(e) => Err(e),
        }
    }
}

impl<G> From<SyncError> for AcquireError<G> {
    fn from(e: SyncError) -> Self {
        AcquireError::Sync(e)
    }
}

impl<G> fmt::Debug for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            AcquireError::Sync(e) => f.debug_tuple("Sync").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::OwnerDied(_) => f.write_str(
                "the previous holder died holding the lock; repair what it protects and mark it consistent",
            ),
            AcquireError::Sync(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<G> std::error::Error for AcquireError<G> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AcquireError::OwnerDied(_) => None,
            AcquireError::Sync(e) => e.source(),
        }
    }
}

impl From<ShmError> for SyncError {
    fn from(e: ShmError) -> Self {
        SyncError::Shm(e)
    }
}
