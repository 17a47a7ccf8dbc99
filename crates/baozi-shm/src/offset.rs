//! [`Offset`]: a reference into a region that means the same in every process.

use std::fmt;
use std::marker::PhantomData;

/// The position of a `T` inside a region, counted in bytes from the region's start.
///
/// A raw pointer into shared memory is only valid in the process that made it, because each
/// process may map the region at another address. An `Offset` is valid everywhere; resolve it
/// with [`Region::get`](crate::Region::get), which checks bounds and alignment.
#[repr(transparent)]
pub struct Offset<T> {
    bytes: u64,
    _type: PhantomData<fn() -> T>,
}

impl<T> Offset<T> {
    /// An offset `bytes` from the region's start.
    pub const fn new(bytes: u64) -> Self {
        Offset {
            bytes,
            _type: PhantomData,
        }
    }

    /// The offset in bytes.
    pub const fn get(self) -> u64 {
        self.bytes
    }
}

impl<T> Clone for Offset<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Offset<T> {}
impl<T> PartialEq for Offset<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl<T> Eq for Offset<T> {}
impl<T> fmt::Debug for Offset<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Offset({})", self.bytes)
    }
}
