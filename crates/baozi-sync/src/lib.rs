//! Process-shared locks and waits for baozi that survive `kill -9`.
//!
//! Three dangers wedge processes that share memory (see `docs/DESIGN.md`): a process that dies
//! holding a lock, one that dies while waiting, and one that dies mid-update. This crate covers
//! the first two; the data structures above it (queue, heap) make the third repairable with one
//! commit point per operation.
//!
//! * [`RawRobustMutex`] / [`ShmMutex`]: a robust, process-shared mutex. When the holder dies the
//!   next locker is told ([`Acquired::OwnerDied`], [`LockError::OwnerDied`]), repairs, and marks
//!   it consistent. Uncontended lock and unlock make no syscall.
//! * [`RawOwnerLock`]: a process-shared lock whose one word names its holder process (pid and
//!   start time): one CAS to take, one plain store to release, no syscall and no robust-list
//!   bookkeeping. A waiter finds a dead holder through `/proc` after [`OWNER_CHECK_EVERY`] and
//!   takes the lock over ([`Acquired::OwnerDied`]). The queue's put and get locks.
//! * [`WaitWord`]: futex wait/notify on a sequence word. Unlike glibc's process-shared
//!   `pthread_cond_t`, it keeps no per-waiter state, so a waiter killed while asleep cannot make
//!   a later notify block. A notify with nobody asleep makes no syscall.
//! * Python's `multiprocessing.synchronize` objects, each a standalone shared object made
//!   `anonymous` (shared with children forked afterwards) or `create`d / `open`ed by name:
//!   * [`Lock`] and [`RLock`] (recursive, owned by a thread): a dead holder is recovered by the
//!     next acquirer, who is told ([`Acquired::OwnerDied`], or [`AcquireError::OwnerDied`] with
//!     a [`LockGuard`]), as with [`ShmMutex`]. `locked()` says whether anyone holds one, in any
//!     process, and their `Debug` names the holder's pid (and an `RLock`'s depth).
//!   * [`Semaphore`] and [`BoundedSemaphore`]: one CAS on a count word, no lock inside. A unit
//!     held by a process that dies is lost with it (as in Python).
//!   * [`Event`]: a flag to set, clear and wait for.
//!   * [`Condition`]: wait / `wait_for` / `notify(n)` / `notify_all` over its own recursive,
//!     robust lock ([`ConditionGuard`], [`Wakeup`]); a waiter killed while it waits neither
//!     swallows a notification nor blocks a notifier.
//!   * [`Barrier`]: Python's `threading.Barrier` (arrival index, abort, reset, broken;
//!     [`SyncError::BrokenBarrier`]; an action run once per cycle before the release, a default
//!     timeout). A party killed before it arrives stalls a `wait` without a timeout, as in
//!     Python: use `wait_timeout` or [`Barrier::with_timeout`].
//!
//!   Opening one primitive as another is [`SyncError::WrongPrimitive`]. Every timeout runs on
//!   `CLOCK_MONOTONIC`; uncontended paths make no syscall.
//! * [`Deadline`]: every timeout runs on `CLOCK_MONOTONIC`.
//! * [`SpinPolicy`]: spin (then yield) adaptively before sleeping: a blocked wake-up costs tens of
//!   microseconds on a small VM, a spin hand-off a fraction of one.
//!
//! # Example: two processes count under one lock; one dies holding it
//!
//! ```
//! use baozi_process::Process;
//! use baozi_sync::{LockError, ShmMutex};
//!
//! let total = ShmMutex::anonymous(0u64)?;
//! let shared = total.clone();
//! let child = Process::new(move || {
//!     for _ in 0..1000 {
//!         *shared.lock().unwrap() += 1;
//!     }
//!     let g = shared.lock().unwrap();
//!     std::mem::forget(g); // the process ends holding the lock, as if killed
//! });
//! child.start()?;
//! for _ in 0..1000 {
//!     let mut g = match total.lock() {
//!         Ok(g) => g,
//!         Err(LockError::OwnerDied(mut g)) => {
//!             g.mark_consistent(); // a u64 counter needs no repair
//!             g
//!         }
//!         Err(e) => panic!("{e}"),
//!     };
//!     *g += 1;
//! }
//! assert_eq!(child.join()?, 0);
//! let n = match total.lock() {
//!     Ok(g) => *g,
//!     Err(LockError::OwnerDied(mut g)) => { g.mark_consistent(); *g }
//!     Err(e) => panic!("{e}"),
//! };
//! assert_eq!(n, 2000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod backoff;
mod barrier;
mod condition;
mod deadline;
mod error;
mod event;
#[cfg(feature = "serde")]
mod handle;
mod lock;
mod mutex;
mod object;
mod owner_lock;
mod raw_mutex;
mod rlock;
mod semaphore;
mod sys;
mod waitword;

pub use backoff::SpinPolicy;
pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard, Wakeup};
pub use deadline::{monotonic_ns, Deadline};
pub use error::{AcquireError, SyncError};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use mutex::{LockError, ShmMutex, ShmMutexGuard};
pub use owner_lock::{RawOwnerLock, OWNER_CHECK_EVERY};
pub use raw_mutex::{Acquired, RawRobustMutex};
pub use rlock::RLock;
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
pub use waitword::{WaitWord, WAIT_SLICE};

/// The calling thread as `(pid << 32) | tid`: unique among the live threads of every process
/// in this pid namespace, never 0. Cached per thread and re-read in the child after `fork()`
/// (a `pthread_atfork` handler invalidates the cache), so after a thread's first call it costs
/// two loads and no syscall: cheap enough to tell, on a hot path, whether per-thread state was
/// made by this very thread or inherited across a fork.
#[inline]
pub fn thread_identity() -> u64 {
    sys::thread_identity()
}

pub use sys::ProcessState;

/// What `/proc/PID/stat` says of process `pid`: alive with its start time (clock ticks since
/// boot: with the pid, an identity that a reused pid cannot fake), dead (gone, or a zombie that
/// will never run again), or unknown (`/proc` unreadable, but `kill(pid, 0)` finds it). For
/// telling whether the process named in a shared word still runs; reads `/proc`, so keep it
/// off hot paths.
///
/// ```
/// use baozi_sync::{process_state, ProcessState};
///
/// let ProcessState::Alive { start } = process_state(std::process::id()) else {
///     panic!("this process reads as not alive");
/// };
/// assert!(start > 0);
/// assert_eq!(process_state(0), ProcessState::Dead);
/// ```
pub fn process_state(pid: u32) -> ProcessState {
    sys::process_state(pid)
}

/// The inode number of this process's pid namespace (`/proc/self/ns/pid`), or 0 when it cannot
/// be read: pids, and so [`RawOwnerLock`]'s owner words and [`process_state`], mean something
/// only among processes of one namespace. Cached, and re-read in a forked child.
#[inline]
pub fn pid_namespace() -> u64 {
    sys::pid_namespace()
}

/// A number that changes in the child of every `fork()` (a `pthread_atfork` handler bumps it),
/// once [`thread_identity`] has been called in this process; `None` before. Per-thread state
/// stamped with it can be checked for staleness after a fork with one load.
#[inline]
pub fn fork_generation() -> Option<u64> {
    sys::fork_generation()
}
