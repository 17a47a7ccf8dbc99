//! [`RawRobustMutex`]: a process-shared mutex that survives its holder's death.

use std::cell::UnsafeCell;
use std::fmt;

use baozi_shm::ShmSafe;

use crate::deadline::Deadline;
use crate::error::SyncError;
use crate::sys::{self, LockResult, PthreadMutex};
use crate::waitword::WAIT_SLICE;

/// How a lock was acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "an OwnerDied acquisition must be repaired and marked consistent"]
pub enum Acquired {
    /// The previous holder released it normally.
    Clean,
    /// The previous holder died holding it (`EOWNERDEAD`). The protected state may be half
    /// updated: repair it, then call [`RawRobustMutex::mark_consistent`] before unlocking, or the
    /// mutex becomes unrecoverable for everyone.
    OwnerDied,
}

/// A robust, process-shared pthread mutex, built in place in shared memory and never moved.
///
/// When a holder dies (even by SIGKILL), the kernel marks the lock word through the dead thread's
/// robust list, and the next locker gets [`Acquired::OwnerDied`]. Uncontended `lock`/`unlock`
/// are a compare-and-swap each in glibc: no syscall. A contended `lock` spins briefly on
/// `trylock` before it sleeps in the kernel, because critical sections here are short. A
/// sleeper tries again every [`WAIT_SLICE`]: a waiter woken by an unlock and killed before it
/// took the lock can swallow that wake-up, and this bounds what it costs the other sleepers.
///
/// This is the raw building block; most code wants [`ShmMutex`](crate::ShmMutex).
#[repr(C)]
pub struct RawRobustMutex {
    inner: UnsafeCell<PthreadMutex>,
}

// SAFETY: the pthread mutex is designed for concurrent use from many threads and processes
// (PTHREAD_PROCESS_SHARED); all access goes through glibc via the raw pointer.
unsafe impl Sync for RawRobustMutex {}
// SAFETY: repr(C) around a C struct of integers with no pointers that matter across processes
// (glibc's robust-list links in it are only used by the holder's own thread); it is only touched
// by glibc, which treats unexpected contents as errors, not undefined behaviour.
unsafe impl ShmSafe for RawRobustMutex {}

impl fmt::Debug for RawRobustMutex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawRobustMutex { .. }")
    }
}

/// How many `trylock` rounds a contended `lock` spends before it sleeps in the kernel.
const LOCK_SPIN_ROUNDS: u32 = 40;

impl RawRobustMutex {
    /// Initialises a robust, process-shared mutex at `this`.
    ///
    /// # Safety
    /// 1. `this` is valid for writes and aligned, inside memory that outlives every use;
    /// 2. no other thread or process uses the mutex yet (do it before publishing the object).
    ///
    /// # Errors
    /// [`SyncError::Io`] if glibc refuses the attributes.
    pub unsafe fn init(this: *mut Self) -> Result<(), SyncError> {
        // SAFETY: 1 and 2 are the caller's promise; UnsafeCell<T> is repr(transparent) over T.
        unsafe { sys::robust_mutex_init(this.cast::<PthreadMutex>()) }.map_err(|source| {
            SyncError::Io {
                op: "pthread_mutex_init",
                source,
            }
        })
    }

    fn ptr(&self) -> *mut PthreadMutex {
        self.inner.get()
    }

    #[inline]
    fn map(
        r: std::io::Result<LockResult>,
        op: &'static str,
    ) -> Result<Option<Acquired>, SyncError> {
        match r.map_err(|source| SyncError::Io { op, source })? {
            LockResult::Acquired => Ok(Some(Acquired::Clean)),
            LockResult::OwnerDied => Ok(Some(Acquired::OwnerDied)),
            LockResult::NotRecoverable => Err(SyncError::Unrecoverable),
            LockResult::TimedOut => Err(SyncError::Timeout),
            LockResult::Busy => Ok(None),
        }
    }

    /// Takes the lock if it is free now.
    ///
    /// # Errors
    /// [`SyncError::Unrecoverable`], [`SyncError::Io`].
    #[inline]
    pub fn try_lock(&self) -> Result<Option<Acquired>, SyncError> {
        // SAFETY: the mutex was initialised before the object was published (type invariant).
        Self::map(
            unsafe { sys::mutex_trylock(self.ptr()) },
            "pthread_mutex_trylock",
        )
    }

    /// Takes the lock, waiting until `deadline` (`None`: for ever).
    ///
    /// # Errors
    /// [`SyncError::Timeout`], [`SyncError::Unrecoverable`], [`SyncError::Io`].
    #[inline]
    pub fn lock(&self, deadline: Option<Deadline>) -> Result<Acquired, SyncError> {
        match self.try_lock()? {
            Some(a) => Ok(a),
            None => self.lock_slow(deadline),
        }
    }

    #[cold]
    fn lock_slow(&self, deadline: Option<Deadline>) -> Result<Acquired, SyncError> {
        for round in 0..LOCK_SPIN_ROUNDS {
            if round < LOCK_SPIN_ROUNDS / 2 {
                for _ in 0..(4u32 << round.min(5)) {
                    std::hint::spin_loop();
                }
            } else {
                sys::sched_yield();
            }
            if let Some(a) = self.try_lock()? {
                return Ok(a);
            }
        }
        // Sleep in slices, never for ever: a robust futex can lose its wake-up. The unlock wakes
        // one sleeper; if that one is killed before it takes the lock while a third thread
        // takes it uncontended (a lock word without the waiters bit), the kernel's cleanup of
        // the dead waiter wakes nobody (it does only for a free word), the third thread's
        // unlock sees no waiters, and every other sleeper would sleep until someone contends
        // again. Rechecking every WAIT_SLICE bounds that stall like every other wait here.
        loop {
            let slice = match deadline {
                Some(d) => d.min_after(WAIT_SLICE),
                None => Deadline::after(WAIT_SLICE),
            };
            // SAFETY: the mutex was initialised before the object was published (type
            // invariant).
            let r = unsafe { sys::mutex_lock(self.ptr(), slice.as_nanos()) };
            match Self::map(r, "pthread_mutex_clocklock") {
                Ok(Some(a)) => return Ok(a),
                Ok(None) | Err(SyncError::Timeout) => {
                    if deadline.is_some_and(|d| d.has_passed()) {
                        return Err(SyncError::Timeout);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// The calling thread holds the lock.
    #[inline]
    pub unsafe fn unlock(&self) {
        // SAFETY: the caller holds the lock.
        unsafe { sys::mutex_unlock(self.ptr()) }
    }

    /// Whether the thread with kernel thread id `tid` holds the lock now, read from the lock word
    /// (no syscall). Exact: a dead holder's id is cleared by the kernel, so a thread that reuses
    /// it is never mistaken for the holder.
    pub(crate) fn is_held_by(&self, tid: u32) -> bool {
        // SAFETY: the mutex was initialised before the object was published (type invariant).
        tid != 0 && unsafe { sys::robust_mutex_owner_tid(self.ptr()) } == tid
    }

    /// The kernel thread id of the holder, read from the lock word (no syscall); 0 when it is
    /// free or its holder died (the next locker then gets [`Acquired::OwnerDied`]). A snapshot:
    /// it may change the moment it is read.
    pub(crate) fn holder_tid(&self) -> u32 {
        // SAFETY: the mutex was initialised before the object was published (type invariant).
        unsafe { sys::robust_mutex_owner_tid(self.ptr()) }
    }

    /// Declares the protected state repaired after [`Acquired::OwnerDied`].
    ///
    /// # Safety
    /// The calling thread holds the lock, acquired with [`Acquired::OwnerDied`].
    pub unsafe fn mark_consistent(&self) {
        // SAFETY: the caller holds the lock after EOWNERDEAD.
        unsafe { sys::mutex_consistent(self.ptr()) }
    }
}
