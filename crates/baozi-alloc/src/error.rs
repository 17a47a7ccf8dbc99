//! [`AllocError`]: what can go wrong making, opening or using a shared heap.

use std::fmt;

use baozi_shm::ShmError;
use baozi_sync::SyncError;

/// What went wrong with a shared heap.
#[derive(Debug)]
#[non_exhaustive]
pub enum AllocError {
    /// No free block or run of chunks is large enough. The heap is unchanged.
    OutOfMemory {
        /// Bytes asked for.
        requested: usize,
        /// Alignment asked for.
        align: usize,
    },
    /// The layout cannot be served: alignment above the page size (4096), or an array length
    /// whose size overflows. (A size larger than the heap is [`AllocError::OutOfMemory`].)
    InvalidLayout {
        /// Bytes asked for.
        size: usize,
        /// Alignment asked for.
        align: usize,
        /// Why.
        reason: &'static str,
    },
    /// The block at this offset is already free: a double free (or a stale offset).
    DoubleFree {
        /// The offset given.
        offset: u64,
    },
    /// The offset was never handed out by this heap: outside it, or not at a block start.
    ForeignOffset {
        /// The offset given.
        offset: u64,
    },
    /// The heap's shared metadata breaks an invariant no correct process can break.
    Corrupt {
        /// The heap.
        name: String,
        /// What was found.
        detail: String,
    },
    /// An index past the end of an array.
    IndexOutOfRange {
        /// The index given.
        index: usize,
        /// The array's length.
        len: usize,
    },
    /// A handle to a value or array in a shared heap was attached after the process that made it
    /// freed it (its last handle there was dropped), or it names something else.
    Freed {
        /// The heap.
        heap: String,
        /// The block's offset.
        offset: u64,
    },
    /// This thread already holds the lock of this value (through another guard, or a shared
    /// lock taken by hand): a second guard would alias the first.
    AlreadyLocked,
    /// The region could not be made, opened or checked.
    Shm(ShmError),
    /// A lock failed.
    Sync(SyncError),
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::OutOfMemory { requested, align } => write!(
                f,
                "the shared heap has no room for {requested} bytes (align {align}): free blocks or make a larger heap"
            ),
            AllocError::IndexOutOfRange { index, len } => {
                write!(f, "index {index} is out of range for an array of {len}")
            }
            AllocError::Freed { heap, offset } => write!(
                f,
                "no value at offset {offset} of {heap} any more: a value in a shared heap lives while the process that made it holds a handle; make it with Value::new (or Array::zeroed) to let it outlive its creator"
            ),
            AllocError::AlreadyLocked => f.write_str(
                "this thread already holds the value's lock: drop the other guard first",
            ),
            AllocError::InvalidLayout { size, align, reason } => {
                write!(f, "cannot allocate {size} bytes aligned to {align}: {reason}")
            }
            AllocError::DoubleFree { offset } => write!(
                f,
                "the block at offset {offset} is already free: double free or stale offset"
            ),
            AllocError::ForeignOffset { offset } => write!(
                f,
                "offset {offset} was never handed out by this heap (outside it, or not a block start)"
            ),
            AllocError::Corrupt { name, detail } => {
                write!(f, "heap {name} is corrupt ({detail}): unlink it and create it again")
            }
            AllocError::Shm(e) => fmt::Display::fmt(e, f),
            AllocError::Sync(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for AllocError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AllocError::Shm(e) => Some(e),
            AllocError::Sync(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ShmError> for AllocError {
    fn from(e: ShmError) -> Self {
        AllocError::Shm(e)
    }
}

impl From<SyncError> for AllocError {
    fn from(e: SyncError) -> Self {
        AllocError::Sync(e)
    }
}
