//! Where everything lives in a queue's region, and the layout checksum over it.
//!
//! ```text
//! offset        contents                                   written by
//! 0             Header (baozi-shm)                         creator, once
//! 1 line        Meta { maxsize, capacity, closed }         creator; `closed` by close()
//! 2 lines       RawRobustMutex                             glibc
//! 3 lines       tail: producer Cursor + not_empty WaitWord producers (cursor under the lock)
//! 4 lines       head: consumer Cursor + not_full WaitWord  consumers (cursor under the lock)
//! 5 lines       tasks: done count + all_done WaitWord      task_done()
//! 6 lines       ring: `capacity` bytes of frames           producers, under the lock
//! ```
//!
//! Each part starts on its own cache line ([`CACHE_LINE`]), so producers and consumers do not
//! false-share their cursors.

use std::sync::atomic::{AtomicU32, AtomicU64};

use baozi_shm::{LayoutHash, ObjectKind, ShmSafe, CACHE_LINE};
use baozi_sync::{RawRobustMutex, WaitWord};

pub(crate) const META_AT: usize = CACHE_LINE;
pub(crate) const LOCK_AT: usize = 2 * CACHE_LINE;
pub(crate) const TAIL_AT: usize = 3 * CACHE_LINE;
pub(crate) const HEAD_AT: usize = 4 * CACHE_LINE;
pub(crate) const TASKS_AT: usize = 5 * CACHE_LINE;
pub(crate) const RING_AT: usize = 6 * CACHE_LINE;

/// The queue's parameters; fixed at creation except `closed` (0 → 1, never back).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) maxsize: AtomicU32,
    pub(crate) capacity: AtomicU32,
    pub(crate) closed: AtomicU32,
    pub(crate) _reserved: AtomicU32,
}

/// One side of the ring: its cursor (the commit word) and the wait word its waiters sleep on.
///
/// The tail side's wait word is "not empty" (getters wait on it, puts notify it); the head
/// side's is "not full" (putters wait on it, gets notify it).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Side {
    /// A packed [`Cursor`](crate::ring::Cursor). Stored only under the lock.
    pub(crate) cursor: AtomicU64,
    pub(crate) wait: WaitWord,
}

/// JoinableQueue accounting: unfinished tasks = puts (the tail's count) − `done`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Tasks {
    pub(crate) done: AtomicU32,
    pub(crate) _reserved: AtomicU32,
    pub(crate) all_done: WaitWord,
}

// SAFETY: repr(C), atomics only; any bit pattern is a valid value (invariants on them are
// checked at open and when a lock is recovered, not assumed).
unsafe impl ShmSafe for Meta {}
// SAFETY: as above.
unsafe impl ShmSafe for Side {}
// SAFETY: as above.
unsafe impl ShmSafe for Tasks {}

const _: () = {
    assert!(std::mem::size_of::<Meta>() <= CACHE_LINE);
    assert!(std::mem::size_of::<RawRobustMutex>() <= CACHE_LINE);
    assert!(std::mem::size_of::<Side>() <= CACHE_LINE);
    assert!(std::mem::size_of::<Tasks>() <= CACHE_LINE);
};

/// The region length for a ring of `capacity` bytes.
pub(crate) fn total_len(capacity: u32) -> usize {
    RING_AT + capacity as usize
}

/// The layout checksum of a queue with these parameters, built by this build.
pub(crate) fn layout_hash(maxsize: u32, capacity: u32) -> u64 {
    LayoutHash::new(ObjectKind::QUEUE)
        .u64(u64::from(maxsize))
        .u64(u64::from(capacity))
        .u64(RING_AT as u64)
        .u64(std::mem::size_of::<RawRobustMutex>() as u64)
        .u64(std::mem::size_of::<Side>() as u64)
        .finish()
}
