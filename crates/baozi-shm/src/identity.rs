//! [`ObjectId`] and [`TypeTag`]: who an object is, and what type its contents are.
//!
//! Every object a [`Region`](crate::Region) holds gets a 128-bit [`ObjectId`] at creation. A handle
//! that travels to another process (see [`RegionRef`](crate::RegionRef)) carries it, and attaching
//! checks it, so a recycled pid, file descriptor or name never attaches the wrong object.
//!
//! A [`TypeTag`] records the Rust type an object holds (a queue's message type, a value's element
//! type) in the object's header, so that opening it as another type is an error at open
//! ([`ShmError::TypeMismatch`](crate::ShmError::TypeMismatch)), never garbage later.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A 128-bit identity, unique among the objects of one machine for all practical purposes:
/// random bits from the OS (through `RandomState`'s seed), the clock, the pid and a counter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u64; 2]);

impl ObjectId {
    /// A fresh identity.
    pub fn new() -> ObjectId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // RandomState seeds from the OS once per thread and varies the keys per instance.
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(nanos);
        h.write_u32(std::process::id());
        let random = h.finish();
        let low = nanos ^ (u64::from(std::process::id()) << 40) ^ n.rotate_left(20);
        ObjectId([low, random])
    }

    /// The identity from its 128 bits (as [`raw`](Self::raw) gave them).
    pub const fn from_raw(raw: u128) -> ObjectId {
        ObjectId([raw as u64, (raw >> 64) as u64])
    }

    /// The 128 bits.
    pub const fn raw(self) -> u128 {
        (self.0[0] as u128) | ((self.0[1] as u128) << 64)
    }

    /// The two 64-bit halves as stored in a header (low, high).
    pub(crate) fn halves(self) -> [u64; 2] {
        self.0
    }

    /// From the halves stored in a header.
    pub(crate) fn from_halves(low: u64, high: u64) -> ObjectId {
        ObjectId([low, high])
    }
}

impl Default for ObjectId {
    fn default() -> Self {
        ObjectId::new()
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.raw())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// The longest type name a header keeps; longer names are cut (the checksum still covers the
/// whole name).
pub const TYPE_NAME_MAX: usize = 56;

/// What an object's contents are, as far as the program can tell: the type's name
/// (`std::any::type_name`), size and alignment.
///
/// The name is what the compiler reports. Two programs built from the same source by the same
/// compiler agree on it; the same type seen by two different compiler versions may be named
/// differently (a false mismatch, never a false match of different layouts: size and alignment
/// are compared too). Two distinct types with the same path, size and alignment (the same
/// struct name in two versions of one crate) cannot be told apart.
///
/// ```
/// use baozi_shm::TypeTag;
/// assert_eq!(TypeTag::of::<u32>().name(), "u32");
/// assert_ne!(TypeTag::of::<u32>().checksum(), TypeTag::of::<i32>().checksum());
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TypeTag {
    name: &'static str,
    size: usize,
    align: usize,
}

impl TypeTag {
    /// The tag of `T`.
    pub fn of<T>() -> TypeTag {
        TypeTag {
            name: std::any::type_name::<T>(),
            size: std::mem::size_of::<T>(),
            align: std::mem::align_of::<T>(),
        }
    }

    /// The type's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The 64-bit checksum stored in a header (never 0, which means "untyped").
    pub fn checksum(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        mix(self.name.as_bytes());
        mix(&(self.size as u64).to_le_bytes());
        mix(&(self.align as u64).to_le_bytes());
        h.max(1)
    }
}

impl fmt::Debug for TypeTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TypeTag({}, size {}, align {})",
            self.name, self.size, self.align
        )
    }
}
