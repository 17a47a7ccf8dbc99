//! The header at offset 0 of every shared object, and the create/open protocol around it.
//!
//! A creator makes the region (zero-filled), calls [`Header::begin`], builds the object body, then
//! calls [`Header::publish`]: the release-store of `READY` is the one point after which an opener
//! may touch the body. An opener calls [`Header::wait_ready`], which waits a bounded time for
//! `READY` and then checks magic, version, kind and size, each with its own [`ShmError`]. The
//! object type then checks the layout checksum of its own parameters with
//! [`HeaderSnapshot::check_layout`].
//!
//! Every field is an atomic, so reading a header that another process is writing, or that holds
//! garbage, is never undefined behaviour: the opener only ever looks at a copy of plain integers.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::ShmError;
use crate::identity::{ObjectId, TypeTag, TYPE_NAME_MAX};
use crate::pad::CACHE_LINE;
use crate::shm_safe::ShmSafe;

/// The first eight bytes of every baozi object: `b"baoziSHM"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"baoziSHM");

/// The format version this build writes and reads. Bump it whenever any shared layout changes.
///
/// 2: the header grew to 128 bytes with the object's identity and its contents' type.
pub const FORMAT_VERSION: u32 = 2;

/// The size of [`Header`] in bytes; object bodies start at or after it.
pub const HEADER_SIZE: usize = 128;

const _: () = assert!(HEADER_SIZE <= CACHE_LINE, "bodies start one cache line in");

/// How long [`Header::wait_ready`] waits by default for a creator to finish.
pub const DEFAULT_READY_WAIT: Duration = Duration::from_secs(2);

/// State word: the region is fresh (all zero) or its creator has not begun.
const STATE_EMPTY: u32 = 0;
/// State word: the creator is building the object.
const STATE_INITIALISING: u32 = 0x494e_4954; // "INIT"
/// State word: the object is complete; openers may use it.
const STATE_READY: u32 = 0x5245_4459; // "REDY"

/// What a shared object is. Openers ask for a kind and are refused any other.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectKind(u32);

impl ObjectKind {
    /// A [`Queue`](https://docs.rs/baozi-queue) (baozi-queue).
    pub const QUEUE: ObjectKind = ObjectKind(1);
    /// A shared heap (baozi-alloc).
    pub const HEAP: ObjectKind = ObjectKind(2);
    /// A standalone synchronisation object (baozi-sync).
    pub const SYNC: ObjectKind = ObjectKind(3);
    /// A plain region whose body the application manages.
    pub const RAW: ObjectKind = ObjectKind(4);

    /// The kind with this number.
    pub const fn from_raw(raw: u32) -> Self {
        ObjectKind(raw)
    }

    /// The kind's number, as stored in the header.
    pub const fn raw(self) -> u32 {
        self.0
    }

    fn name(self) -> Option<&'static str> {
        match self.0 {
            1 => Some("queue"),
            2 => Some("heap"),
            3 => Some("sync object"),
            4 => Some("raw region"),
            _ => None,
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "unknown kind {}", self.0),
        }
    }
}

impl fmt::Debug for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKind({self})")
    }
}

/// The `#[repr(C)]` header at offset 0 of every shared object (128 bytes).
///
/// | offset | field                | meaning                                               |
/// |--------|----------------------|-------------------------------------------------------|
/// | 0      | `magic`              | [`MAGIC`]                                             |
/// | 8      | `version`            | [`FORMAT_VERSION`]                                    |
/// | 12     | `kind`               | [`ObjectKind`]                                        |
/// | 16     | `total_size`         | bytes of the object, header included                  |
/// | 24     | `layout_hash`        | [`LayoutHash`] of the object's parameters             |
/// | 32     | `creator_pid`        | the creating process                                  |
/// | 36     | `state`              | empty → initialising → ready                          |
/// | 40     | `object_id`          | the [`ObjectId`] (low, high)                          |
/// | 56     | `type_hash`          | [`TypeTag::checksum`] of the contents, 0 if untyped   |
/// | 64     | `type_name_len`      | bytes of `type_name` used                             |
/// | 72     | `type_name`          | the type's name, cut to [`TYPE_NAME_MAX`] bytes       |
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    magic: AtomicU64,
    version: AtomicU32,
    kind: AtomicU32,
    total_size: AtomicU64,
    layout_hash: AtomicU64,
    creator_pid: AtomicU32,
    /// `STATE_EMPTY` → `STATE_INITIALISING` → `STATE_READY`, each written only by the creator.
    state: AtomicU32,
    object_id: [AtomicU64; 2],
    type_hash: AtomicU64,
    type_name_len: AtomicU32,
    _reserved: AtomicU32,
    type_name: [AtomicU64; TYPE_NAME_MAX / 8],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);

// SAFETY: repr(C), only atomic integers, every bit pattern valid, no pointers.
unsafe impl ShmSafe for Header {}

/// A plain copy of a header's fields, taken once it was seen `READY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderSnapshot {
    /// Always [`MAGIC`] in a snapshot returned by [`Header::wait_ready`].
    pub magic: u64,
    /// The format version.
    pub version: u32,
    /// The object kind.
    pub kind: ObjectKind,
    /// The object's total size in bytes, header included.
    pub total_size: u64,
    /// The layout checksum written by the creator.
    pub layout_hash: u64,
    /// The pid of the process that created the object.
    pub creator_pid: u32,
    /// The object's identity (0 when its creator did not set one).
    pub object_id: ObjectId,
    /// The [`TypeTag::checksum`] of its contents; 0 for an untyped object.
    pub type_hash: u64,
    /// The contents' type name as the creator saw it (cut to [`TYPE_NAME_MAX`] bytes).
    pub type_name: TypeName,
}

/// A type name as stored in a header: at most [`TYPE_NAME_MAX`] bytes of UTF-8.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TypeName {
    len: u8,
    bytes: [u8; TYPE_NAME_MAX],
}

impl TypeName {
    /// The name (lossy where a cut split a character or the bytes are garbage).
    pub fn to_string_lossy(&self) -> String {
        let len = usize::from(self.len).min(TYPE_NAME_MAX);
        String::from_utf8_lossy(&self.bytes[..len]).into_owned()
    }
}

impl fmt::Debug for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

impl Header {
    /// Starts building an object: writes the identity fields and marks it initialising.
    ///
    /// Call only on a fresh region you created; openers wait until [`publish`](Self::publish).
    pub fn begin(&self, kind: ObjectKind, total_size: u64, layout_hash: u64, creator_pid: u32) {
        // Relaxed suffices: nothing is read by openers until the Release in `publish`.
        self.magic.store(MAGIC, Ordering::Relaxed);
        self.version.store(FORMAT_VERSION, Ordering::Relaxed);
        self.kind.store(kind.raw(), Ordering::Relaxed);
        self.total_size.store(total_size, Ordering::Relaxed);
        self.layout_hash.store(layout_hash, Ordering::Relaxed);
        self.creator_pid.store(creator_pid, Ordering::Relaxed);
        self.state.store(STATE_INITIALISING, Ordering::Relaxed);
    }

    /// Records the object's identity and the type of its contents (between
    /// [`begin`](Self::begin) and [`publish`](Self::publish)); `None` for an untyped object.
    pub fn set_identity(&self, id: ObjectId, contents: Option<TypeTag>) {
        // Relaxed: published by the Release in `publish`, like `begin`'s stores.
        let [low, high] = id.halves();
        self.object_id[0].store(low, Ordering::Relaxed);
        self.object_id[1].store(high, Ordering::Relaxed);
        let (hash, name) = contents.map_or((0, ""), |t| (t.checksum(), t.name()));
        self.type_hash.store(hash, Ordering::Relaxed);
        let mut cut = name.len().min(TYPE_NAME_MAX);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut bytes = [0u8; TYPE_NAME_MAX];
        bytes[..cut].copy_from_slice(&name.as_bytes()[..cut]);
        for (word, chunk) in self.type_name.iter().zip(bytes.chunks_exact(8)) {
            let chunk: [u8; 8] = chunk.try_into().expect("chunks of 8");
            word.store(u64::from_le_bytes(chunk), Ordering::Relaxed);
        }
        self.type_name_len.store(cut as u32, Ordering::Relaxed);
    }

    /// Publishes the object: after this, openers may use it.
    pub fn publish(&self) {
        // SYNC POINT: every write that built the object happens-before any opener's Acquire load
        // of READY in `wait_ready`.
        self.state.store(STATE_READY, Ordering::Release);
    }

    /// Whether the object has been published.
    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == STATE_READY
    }

    /// Copies the fields (whatever they hold).
    pub fn snapshot(&self) -> HeaderSnapshot {
        HeaderSnapshot {
            magic: self.magic.load(Ordering::Relaxed),
            version: self.version.load(Ordering::Relaxed),
            kind: ObjectKind(self.kind.load(Ordering::Relaxed)),
            total_size: self.total_size.load(Ordering::Relaxed),
            layout_hash: self.layout_hash.load(Ordering::Relaxed),
            creator_pid: self.creator_pid.load(Ordering::Relaxed),
            object_id: ObjectId::from_halves(
                self.object_id[0].load(Ordering::Relaxed),
                self.object_id[1].load(Ordering::Relaxed),
            ),
            type_hash: self.type_hash.load(Ordering::Relaxed),
            type_name: self.type_name(),
        }
    }

    fn type_name(&self) -> TypeName {
        let mut bytes = [0u8; TYPE_NAME_MAX];
        for (chunk, word) in bytes.chunks_exact_mut(8).zip(&self.type_name) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        let len = self
            .type_name_len
            .load(Ordering::Relaxed)
            .min(TYPE_NAME_MAX as u32) as u8;
        TypeName { len, bytes }
    }

    /// Waits up to `wait` for the object to be published, then checks it is a `kind` of this
    /// format version that fits in `region_len` bytes.
    ///
    /// # Errors
    /// [`ShmError::WrongMagic`] at once for foreign bytes, [`ShmError::NotReady`] after `wait`
    /// for an object never published, then [`ShmError::VersionMismatch`],
    /// [`ShmError::WrongKind`], [`ShmError::Truncated`] or [`ShmError::Corrupt`].
    pub fn wait_ready(
        &self,
        name: &str,
        region_len: u64,
        kind: ObjectKind,
        wait: Duration,
    ) -> Result<HeaderSnapshot, ShmError> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            let state = self.state.load(Ordering::Acquire);
            let magic = self.magic.load(Ordering::Relaxed);
            if magic != MAGIC && magic != 0 {
                return Err(ShmError::WrongMagic {
                    name: name.to_owned(),
                    found: magic,
                });
            }
            match state {
                STATE_READY => break,
                STATE_EMPTY | STATE_INITIALISING => {
                    if start.elapsed() >= wait {
                        return Err(ShmError::NotReady {
                            name: name.to_owned(),
                            waited: wait,
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                _ if magic == 0 => {
                    // Bytes in the state word but no magic: not something a creator writes.
                    return Err(ShmError::WrongMagic {
                        name: name.to_owned(),
                        found: magic,
                    });
                }
                other => {
                    return Err(ShmError::Corrupt {
                        name: name.to_owned(),
                        detail: format!("header state word {other:#x}"),
                    })
                }
            }
        }
        let snap = self.snapshot();
        if snap.magic != MAGIC {
            return Err(ShmError::WrongMagic {
                name: name.to_owned(),
                found: snap.magic,
            });
        }
        if snap.version != FORMAT_VERSION {
            return Err(ShmError::VersionMismatch {
                name: name.to_owned(),
                found: snap.version,
                expected: FORMAT_VERSION,
            });
        }
        if snap.kind != kind {
            return Err(ShmError::WrongKind {
                name: name.to_owned(),
                found: snap.kind,
                expected: kind,
            });
        }
        if snap.total_size < HEADER_SIZE as u64 {
            return Err(ShmError::Corrupt {
                name: name.to_owned(),
                detail: format!("total size {} is smaller than the header", snap.total_size),
            });
        }
        if snap.total_size > region_len {
            return Err(ShmError::Truncated {
                name: name.to_owned(),
                size: region_len,
                needed: snap.total_size,
            });
        }
        Ok(snap)
    }
}

impl HeaderSnapshot {
    /// Checks that the object holds `expected` (a queue's message type, a value's element
    /// type).
    ///
    /// # Errors
    /// [`ShmError::TypeMismatch`] naming both types.
    pub fn check_type(&self, name: &str, expected: TypeTag) -> Result<(), ShmError> {
        if self.type_hash == expected.checksum() {
            return Ok(());
        }
        let found = if self.type_hash == 0 {
            "no type (an untyped object)".to_owned()
        } else {
            self.type_name.to_string_lossy()
        };
        Err(ShmError::TypeMismatch {
            name: name.to_owned(),
            found,
            expected: expected.name(),
        })
    }

    /// Checks the creator's layout checksum against `expected`, computed by the opener from the
    /// parameters it read out of the object.
    ///
    /// # Errors
    /// [`ShmError::LayoutMismatch`] when they differ.
    pub fn check_layout(&self, name: &str, expected: u64) -> Result<(), ShmError> {
        if self.layout_hash == expected {
            Ok(())
        } else {
            Err(ShmError::LayoutMismatch {
                name: name.to_owned(),
                found: self.layout_hash,
                expected,
            })
        }
    }
}

/// Builds a layout checksum (64-bit FNV-1a) over an object's parameters and this build's layout
/// facts: format version, pointer width, [`CACHE_LINE`] and endianness.
///
/// ```
/// use baozi_shm::{LayoutHash, ObjectKind};
/// let a = LayoutHash::new(ObjectKind::QUEUE).u64(4096).u64(1).finish();
/// let b = LayoutHash::new(ObjectKind::QUEUE).u64(4096).u64(2).finish();
/// assert_ne!(a, b);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LayoutHash(u64);

impl LayoutHash {
    /// Starts a checksum for an object of `kind`.
    pub fn new(kind: ObjectKind) -> Self {
        LayoutHash(0xcbf2_9ce4_8422_2325)
            .u64(u64::from(FORMAT_VERSION))
            .u64(u64::from(kind.raw()))
            .u64(std::mem::size_of::<usize>() as u64)
            .u64(CACHE_LINE as u64)
            .u64(u64::from(cfg!(target_endian = "little")))
    }

    /// Mixes in one parameter.
    #[must_use]
    pub fn u64(self, value: u64) -> Self {
        let mut h = self.0;
        for byte in value.to_le_bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        LayoutHash(h)
    }

    /// The checksum.
    pub fn finish(self) -> u64 {
        self.0
    }
}
