//! Where everything lives in a queue's region, and the layout checksum over it.
//!
//! ```text
//! offset        contents                                   written by
//! 0             Header (baozi-shm)                         creator, once
//! 1 line        Meta { maxsize, capacity, closed }         creator; `closed` by close()
//! 2 lines       put lock: RawOwnerLock (one word)          producers
//! 3 lines       tail: Cursor, not_empty WaitWord, room bound producers, under the put lock (**)
//! 4 lines       head: Cursor, not_full WaitWord, tail seen consumers, under the get lock (*) (**)
//! 5 lines       get lock: RawOwnerLock (one word)          consumers
//! 6 lines       tasks: done count + all_done WaitWord      task_done()
//! 7 lines       ring: `capacity` bytes of frames           producers, under the put lock
//! + capacity    endpoints: 64 words (producers, consumers) each process its own word
//! ```
//!
//! (*) and by a producer, under the put lock, only while the ring is empty: see
//! `Queue::try_put`'s restart.
//!
//! (**) each side's `WaitWord` is written by the *other* side only when it goes to sleep (its
//! sleepers flag) and by its own side only to wake sleepers ([`PROTOCOL`] 2): a put or get that
//! goes through reads its own side's flag and nothing of the other side's words.
//!
//! Each part starts on its own cache line ([`CACHE_LINE`]), so producers and consumers do not
//! false-share their cursors or their locks: a producer and a consumer never take the same lock.

use std::sync::atomic::{AtomicU32, AtomicU64};

use baozi_shm::{LayoutHash, ObjectKind, ShmSafe, CACHE_LINE};
use baozi_sync::{RawOwnerLock, WaitWord};

pub(crate) const META_AT: usize = CACHE_LINE;
pub(crate) const PUT_LOCK_AT: usize = 2 * CACHE_LINE;
pub(crate) const TAIL_AT: usize = 3 * CACHE_LINE;
pub(crate) const HEAD_AT: usize = 4 * CACHE_LINE;
pub(crate) const GET_LOCK_AT: usize = 5 * CACHE_LINE;
pub(crate) const TASKS_AT: usize = 6 * CACHE_LINE;
pub(crate) const RING_AT: usize = 7 * CACHE_LINE;

/// The queue's parameters; fixed at creation except `closed` (0 → 1, never back).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) maxsize: AtomicU32,
    pub(crate) capacity: AtomicU32,
    pub(crate) closed: AtomicU32,
    /// Which roles ever registered an endpoint (bit 1 producer, bit 2 consumer); never cleared.
    pub(crate) peers_ever: AtomicU32,
    /// The creator's pid namespace (`baozi_sync::pid_namespace`, 0: unknown).
    pub(crate) pid_ns: AtomicU64,
    /// 1 once a process of another (or an unknown) pid namespace opened the queue; never
    /// cleared. From then on a lock whose holder looks dead is not taken over: its pid may
    /// belong to that other namespace.
    pub(crate) mixed_ns: AtomicU32,
    pub(crate) _reserved: AtomicU32,
}

/// The producers' side: the tail cursor (the commit word of a put), the wait word getters sleep
/// on ("not empty"), and what producers last learned of the head, so that a put reads the
/// consumers' line only when that runs out.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct TailSide {
    /// A packed [`Cursor`](crate::ring::Cursor). Stored only under the put lock.
    pub(crate) cursor: AtomicU64,
    pub(crate) wait: WaitWord,
    /// An upper bound on the ring's bytes in use: exact when the head was last read, plus
    /// every frame put since. Raised *before* each commit, so a producer killed at any instant
    /// leaves it an upper bound.
    pub(crate) used_bound: AtomicU32,
    /// The head's count when it was last read: `tail.count - this` bounds the items from above,
    /// and 0 means the ring is empty (the head never passes the tail).
    pub(crate) seen_head_count: AtomicU32,
}

/// The consumers' side: the head cursor (the commit word of a get), the wait word putters sleep
/// on ("not full"), and the tail as consumers last read it, so that a get reads the producers'
/// line only when the frames it knows of run out.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct HeadSide {
    /// A packed [`Cursor`](crate::ring::Cursor). Stored under the get lock, and by a producer
    /// under the put lock while the ring is empty (a restart, see `Appender::restart`).
    pub(crate) cursor: AtomicU64,
    pub(crate) wait: WaitWord,
    /// A packed tail cursor read earlier: the frames before its count are committed. Consumers
    /// never take past it without reading the tail again.
    pub(crate) seen_tail: AtomicU64,
}

/// JoinableQueue accounting: unfinished tasks = puts (the tail's count) − `done` − discarded.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Tasks {
    pub(crate) done: AtomicU32,
    pub(crate) _reserved: AtomicU32,
    pub(crate) all_done: WaitWord,
    /// An immediate shutdown's discard, `(from << 32) | upto`: the items with put counts
    /// `from..upto` were thrown away, never delivered (0: none). Stored once, under the get lock
    /// and after `closed`, as the discard's commit point; the head then moves to the tail.
    pub(crate) discarded: AtomicU64,
}

// SAFETY: repr(C), atomics only; any bit pattern is a valid value (invariants on them are
// checked at open and when a lock is recovered, not assumed).
unsafe impl ShmSafe for Meta {}
// SAFETY: as above.
unsafe impl ShmSafe for TailSide {}
// SAFETY: as above.
unsafe impl ShmSafe for HeadSide {}
// SAFETY: as above.
unsafe impl ShmSafe for Tasks {}

const _: () = {
    assert!(std::mem::size_of::<Meta>() <= CACHE_LINE);
    assert!(std::mem::size_of::<RawOwnerLock>() <= CACHE_LINE);
    assert!(std::mem::size_of::<TailSide>() <= CACHE_LINE);
    assert!(std::mem::size_of::<HeadSide>() <= CACHE_LINE);
    assert!(std::mem::size_of::<Tasks>() <= CACHE_LINE);
};

/// The region length for a ring of `capacity` bytes: the ring, then the endpoint registry.
pub(crate) fn total_len(capacity: u32) -> usize {
    RING_AT + capacity as usize + crate::endpoint::LEN
}

/// Where the endpoint registry starts (after the ring; 8-aligned as the capacity is).
pub(crate) fn endpoints_at(capacity: u32) -> usize {
    RING_AT + capacity as usize
}

/// The revision of the protocol over these words, beyond their sizes and places: processes of
/// two builds that disagree on it must not share a queue, so it goes into the layout checksum
/// and a mismatch is refused at open ([`ShmError::LayoutMismatch`](baozi_shm::ShmError)).
///
/// * 1: a commit bumps the other side's wait word on every put and get; waiters watch it.
/// * 2 (issue 15): a commit wakes the other side only when its sleepers flag is set
///   (`WaitWord::notify_sleepers`); awake waiters watch the other side's cursor instead. A
///   revision-1 waiter would spin on a word that no longer moves, and sleep a whole slice.
/// * 3 (issue 15): the two locks are [`RawOwnerLock`]s (one word naming the holder process, a
///   dead holder found through `/proc`) in place of glibc robust mutexes; a revision-2 process
///   would read the word as a pthread mutex. The meta line records the creator's pid namespace
///   and whether another namespace opened the queue (then no takeover).
pub(crate) const PROTOCOL: u64 = 3;

/// The layout checksum of a queue with these parameters, built by this build.
pub(crate) fn layout_hash(maxsize: u32, capacity: u32) -> u64 {
    LayoutHash::new(ObjectKind::QUEUE)
        .u64(PROTOCOL)
        .u64(u64::from(maxsize))
        .u64(u64::from(capacity))
        .u64(RING_AT as u64)
        .u64(PUT_LOCK_AT as u64)
        .u64(GET_LOCK_AT as u64)
        .u64(std::mem::size_of::<RawOwnerLock>() as u64)
        .u64(std::mem::size_of::<Meta>() as u64)
        .u64(std::mem::size_of::<TailSide>() as u64)
        .u64(std::mem::size_of::<HeadSide>() as u64)
        .u64(std::mem::size_of::<Tasks>() as u64)
        .u64(crate::endpoint::SLOTS as u64)
        .finish()
}
