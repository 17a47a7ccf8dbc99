//! [`ShmSafe`]: the types that may live inside a shared region.

use std::sync::atomic::{
    AtomicI32, AtomicI64, AtomicI8, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
};

use crate::pad::CachePadded;

/// A type that may be placed in memory shared between processes and read through a `&T`.
///
/// # Safety
/// Implementing it promises all of:
/// 1. the layout is fixed (`repr(C)`, `repr(transparent)` or a primitive), so two builds of the same
///    source agree on it;
/// 2. every bit pattern is a valid value (the other side may write anything, or be garbage);
/// 3. it holds no pointer, reference, file descriptor or heap allocation: those mean nothing in
///    another process;
/// 4. shared mutation goes only through atomics (or `UnsafeCell` guarded by a process-shared lock),
///    so a `&T` seen by several processes at once is sound.
pub unsafe trait ShmSafe: Sync {}

macro_rules! shm_safe {
    ($($t:ty),* $(,)?) => { $(
        // SAFETY: a primitive integer or an atomic integer: fixed layout, every bit pattern valid,
        // no pointers, and its shared mutation (for atomics) is atomic.
        unsafe impl ShmSafe for $t {}
    )* };
}

shm_safe!(
    u8,
    u16,
    u32,
    u64,
    i8,
    i16,
    i32,
    i64,
    AtomicU8,
    AtomicU16,
    AtomicU32,
    AtomicU64,
    AtomicI8,
    AtomicI32,
    AtomicI64,
    AtomicUsize
);

// SAFETY: an array of ShmSafe elements is laid out as its elements, with no padding between them.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

// SAFETY: CachePadded is repr(C) with the value at offset 0 and only padding after it.
unsafe impl<T: ShmSafe> ShmSafe for CachePadded<T> {}
