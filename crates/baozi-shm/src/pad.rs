//! [`CachePadded`]: keeps a contended word on a cache line of its own.

use std::ops::Deref;

/// The alignment [`CachePadded`] uses on this architecture, in bytes.
///
/// 128 on x86-64, aarch64 and powerpc64, where the adjacent-line prefetcher pulls cache lines in
/// pairs; 64 elsewhere. Because it changes the layout of shared objects, it is part of every
/// object's layout checksum: a region made by a build with another value is refused on open.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "powerpc64"
))]
pub const CACHE_LINE: usize = 128;
/// The alignment [`CachePadded`] uses on this architecture, in bytes.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "powerpc64"
)))]
pub const CACHE_LINE: usize = 64;

/// A value aligned and padded to [`CACHE_LINE`], so that two of them never share a cache line.
///
/// `repr(C)`: the value is at offset 0, and the size is a multiple of [`CACHE_LINE`].
///
/// ```
/// use baozi_shm::{CachePadded, CACHE_LINE};
/// use std::sync::atomic::AtomicU64;
/// assert_eq!(std::mem::size_of::<CachePadded<AtomicU64>>(), CACHE_LINE);
/// ```
#[cfg_attr(
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "powerpc64"
    ),
    repr(C, align(128))
)]
#[cfg_attr(
    not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "powerpc64"
    )),
    repr(C, align(64))
)]
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
