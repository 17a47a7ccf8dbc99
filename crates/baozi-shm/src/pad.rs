//! [`CachePadded`]: keeps a contended word on a cache line of its own.

use std::ops::Deref;

/// The alignment [`CachePadded`] uses, in bytes: 128 on every architecture.
///
/// 128 is the line pair that x86-64's adjacent-line prefetcher pulls in, and aarch64's and
/// powerpc64's line; on machines with 64-byte lines it only costs padding. It is also where an
/// object's body starts after the 128-byte [`Header`](crate::Header), so one value everywhere keeps
/// the layouts simple. It is part of every object's layout checksum.
pub const CACHE_LINE: usize = 128;

/// A value aligned and padded to [`CACHE_LINE`], so that two of them never share a cache line.
///
/// `repr(C)`: the value is at offset 0, and the size is a multiple of [`CACHE_LINE`].
///
/// ```
/// use baozi_shm::{CachePadded, CACHE_LINE};
/// use std::sync::atomic::AtomicU64;
/// assert_eq!(std::mem::size_of::<CachePadded<AtomicU64>>(), CACHE_LINE);
/// ```
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct CachePadded<T> {
    value: T,
}

impl<T> CachePadded<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        CachePadded { value }
    }
}

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}
