//! [`ShmError`]: everything that can go wrong making, opening or checking a shared object.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::header::ObjectKind;

/// What went wrong with a shared-memory region or the object inside it.
///
/// Each variant names the object (`/baozi-NAME`, or `anonymous region`) and says what to do.
/// Where the operating system refused, the [`io::Error`] is the [`source`](std::error::Error::source).
#[derive(Debug)]
#[non_exhaustive]
pub enum ShmError {
    /// The name cannot be used as a shared-memory name.
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A size, capacity or count is outside what the object supports.
    InvalidSize {
        /// What was being sized ("region length", "queue capacity", ...).
        what: &'static str,
        /// The value asked for.
        requested: u64,
        /// Why it was refused ("must be at least 64", ...).
        reason: String,
    },
    /// No object of this name exists.
    NotFound {
        /// The object.
        name: String,
    },
    /// `create` found an object of this name already there.
    AlreadyExists {
        /// The object.
        name: String,
    },
    /// The operating system refused access.
    PermissionDenied {
        /// The object.
        name: String,
        /// The refusal.
        source: io::Error,
    },
    /// The bytes do not start with baozi's magic number: a foreign or garbage object.
    WrongMagic {
        /// The object.
        name: String,
        /// The first eight bytes found.
        found: u64,
    },
    /// The object was made by a build of baozi with another format version.
    VersionMismatch {
        /// The object.
        name: String,
        /// The version in the object.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The object is a baozi object of another kind (say, a heap opened as a queue).
    WrongKind {
        /// The object.
        name: String,
        /// The kind found.
        found: ObjectKind,
        /// The kind asked for.
        expected: ObjectKind,
    },
    /// The region is smaller than its header says, or too small to hold a header at all.
    Truncated {
        /// The object.
        name: String,
        /// Bytes present.
        size: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// The object's creator has not finished initialising it within the wait.
    NotReady {
        /// The object.
        name: String,
        /// How long the opener waited.
        waited: Duration,
    },
    /// The object's parameters do not match its layout checksum, or it was built with another
    /// memory layout (another architecture, cache-line size or type).
    LayoutMismatch {
        /// The object.
        name: String,
        /// The checksum in the header.
        found: u64,
        /// The checksum computed from the object's parameters by this build.
        expected: u64,
    },
    /// The object holds another type than the one it was opened as (a `Queue<u32>` opened as a
    /// `Queue<String>`). See [`TypeTag`](crate::TypeTag) for what is compared.
    TypeMismatch {
        /// The object.
        name: String,
        /// The creator's type, as recorded in the object.
        found: String,
        /// The type asked for.
        expected: &'static str,
    },
    /// The object a handle refers to no longer exists: every process that held it has dropped
    /// it or exited, and it had no name (or its name was removed).
    Gone {
        /// The object.
        name: String,
        /// Its identity.
        id: crate::ObjectId,
    },
    /// The header's state word or parameters hold values no baozi build writes: the object is corrupt.
    Corrupt {
        /// The object.
        name: String,
        /// What was wrong.
        detail: String,
    },
    /// An offset or range falls outside the region, or is misaligned.
    OutOfBounds {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: u64,
        /// The region's length.
        region_len: u64,
    },
    /// Another operating-system failure.
    Io {
        /// The call that failed.
        op: &'static str,
        /// The object.
        name: String,
        /// The failure.
        source: io::Error,
    },
}

impl ShmError {
    /// Maps an errno from `shm_open`/`mmap`/... onto the variant that names it.
    pub(crate) fn from_io(op: &'static str, name: &str, source: io::Error) -> Self {
        let name = name.to_owned();
        match source.raw_os_error() {
            Some(libc::ENOENT) => ShmError::NotFound { name },
            Some(libc::EEXIST) => ShmError::AlreadyExists { name },
            Some(libc::EACCES) | Some(libc::EPERM) => ShmError::PermissionDenied { name, source },
            _ => ShmError::Io { op, name, source },
        }
    }
}

impl fmt::Display for ShmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShmError::InvalidName { name, reason } => {
                write!(f, "invalid shared-memory name {name:?}: {reason}")
            }
            ShmError::InvalidSize { what, requested, reason } => {
                write!(f, "{what} {requested} is out of range: {reason}")
            }
            ShmError::NotFound { name } => write!(
                f,
                "{name} does not exist: check the name, or create it first (baozi::shm::list() shows what exists)"
            ),
            ShmError::AlreadyExists { name } => write!(
                f,
                "{name} already exists: open it instead, or unlink the leftover first"
            ),
            ShmError::PermissionDenied { name, .. } => {
                write!(f, "permission denied on {name}: it belongs to another user or mode")
            }
            ShmError::WrongMagic { name, found } => write!(
                f,
                "{name} is not a baozi object (first bytes {found:#018x}): it is foreign or garbage; refusing to use it"
            ),
            ShmError::VersionMismatch { name, found, expected } => write!(
                f,
                "{name} has format version {found}, this build reads {expected}: recreate it with this build"
            ),
            ShmError::WrongKind { name, found, expected } => write!(
                f,
                "{name} is a {found}, not a {expected}: open it with the matching type"
            ),
            ShmError::Truncated { name, size, needed } => write!(
                f,
                "{name} is truncated: {size} bytes present, {needed} needed"
            ),
            ShmError::NotReady { name, waited } => write!(
                f,
                "{name} was not initialised within {waited:?}: its creator may have died while making it; unlink it and create it again"
            ),
            ShmError::LayoutMismatch { name, found, expected } => write!(
                f,
                "{name} has layout checksum {found:#x}, expected {expected:#x}: it is corrupt, or was made for another type or architecture"
            ),
            ShmError::TypeMismatch { name, found, expected } => write!(
                f,
                "{name} holds {found}, not {expected}: open it with the type it was created with"
            ),
            ShmError::Gone { name, id } => write!(
                f,
                "{name} (object {id}) no longer exists: every process that held it has let it go; keep a handle alive in some process while others attach"
            ),
            ShmError::Corrupt { name, detail } => write!(
                f,
                "{name} is corrupt ({detail}): unlink it and create it again"
            ),
            ShmError::OutOfBounds { offset, len, region_len } => write!(
                f,
                "range {offset}..{} is outside the {region_len}-byte region or misaligned",
                offset.saturating_add(*len)
            ),
            ShmError::Io { op, name, .. } => write!(f, "{op} failed on {name}"),
        }
    }
}

impl std::error::Error for ShmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShmError::PermissionDenied { source, .. } | ShmError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
