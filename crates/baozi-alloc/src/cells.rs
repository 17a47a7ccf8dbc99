//! [`Cells`]: `len` values of a `T` in a heap block, the shared part of every `Value` and `Array`
//! handle, and [`SharedLock`], the lock that guards them.
//!
//! # The block
//!
//! ```text
//! offset 0   type checksum (TypeTag of T)   u64
//! offset 8   element count                  u64
//! elems_at   len × T                        (16 rounded up to T's alignment)
//! ```
//!
//! The first two words let a process that attaches a serialised handle check that the block
//! still holds what the handle says (a type mismatch or a freed block is an error, never a
//! reinterpretation).
//!
//! # Lifetime
//!
//! A block in a caller's heap (`new_in`) is freed when the last handle *in the process that made
//! it* is dropped: handles in other processes (forked children, attached copies) are references
//! that stay valid while the creator keeps one. A value made without a heap (`Value::new`) has a
//! heap of its own, which the kernel frees when the last process holding it lets go: that kind
//! may outlive its creator and travel freely.

use std::alloc::Layout;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use baozi_shm::{Offset, ShmError, TypeTag};
use baozi_sync::{Acquired, Lock, RLock, SyncError};
use bytemuck::Pod;

use crate::error::AllocError;
use crate::heap::Heap;

/// The lock a [`Value`](crate::Value) or [`Array`](crate::Array) uses: its own [`Lock`] by
/// default, or one the caller gave (Python's `lock=`), which several values may share.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SharedLock {
    /// A plain lock: taking it again in the thread that holds it is an error.
    Lock(Lock),
    /// A recursive lock; a value's guard still refuses a second guard in the same thread (two
    /// guards would be two `&mut` to one value).
    RLock(RLock),
}

impl From<Lock> for SharedLock {
    fn from(lock: Lock) -> Self {
        SharedLock::Lock(lock)
    }
}

impl From<RLock> for SharedLock {
    fn from(lock: RLock) -> Self {
        SharedLock::RLock(lock)
    }
}

impl SharedLock {
    /// Takes the lock. A holder that died leaves valid values (any bytes are a valid `Pod`), so
    /// the lock is marked consistent at once; the result says whether that happened.
    fn take(&self) -> Result<bool, AllocError> {
        let acquired = match self {
            SharedLock::Lock(l) => l.acquire()?,
            SharedLock::RLock(l) => {
                let a = l.acquire()?;
                if l.depth() > 1 {
                    l.release()?;
                    return Err(AllocError::AlreadyLocked);
                }
                a
            }
        };
        let recovered = acquired == Acquired::OwnerDied;
        if recovered {
            match self {
                SharedLock::Lock(l) => l.mark_consistent()?,
                SharedLock::RLock(l) => l.mark_consistent()?,
            }
        }
        Ok(recovered)
    }

    fn release(&self) -> Result<(), SyncError> {
        match self {
            SharedLock::Lock(l) => l.release(),
            SharedLock::RLock(l) => l.release(),
        }
    }

    /// Whether the calling thread holds it.
    pub fn is_owned(&self) -> bool {
        match self {
            SharedLock::Lock(l) => l.is_owned(),
            SharedLock::RLock(l) => l.is_owned(),
        }
    }
}

/// Which lock new cells get.
pub(crate) enum LockChoice {
    /// A fresh anonymous [`Lock`].
    Own,
    /// The caller's.
    Given(SharedLock),
    /// None (RawValue, RawArray).
    None,
}

/// The words at the start of every block.
const TYPE_AT: usize = 0;
const LEN_AT: usize = 8;

/// Where the elements start in a block.
fn elems_at<T>() -> usize {
    16usize.next_multiple_of(std::mem::align_of::<T>())
}

/// A heap block, freed on drop in the process that allocated it (if it is to be freed at all).
struct Block {
    heap: Heap,
    offset: Offset<u8>,
    /// The allocating process, for blocks freed when its last handle goes; `None` for blocks in
    /// a heap of their own or reached from another process.
    free_in: Option<u32>,
}

impl Drop for Block {
    fn drop(&mut self) {
        if self.free_in == Some(std::process::id()) {
            let freed = self.heap.free(self.offset);
            debug_assert!(freed.is_ok() || std::thread::panicking(), "free: {freed:?}");
        }
    }
}

/// `len` values of `T` in a heap block, plus the lock that guards them: what every clone of a
/// `Value`/`Array` handle shares.
pub(crate) struct Cells<T: Pod> {
    block: Arc<Block>,
    elems: NonNull<T>,
    len: usize,
    lock: Option<SharedLock>,
    _value: PhantomData<T>,
}

// SAFETY: `elems` points into the heap mapping that `block.heap` keeps alive in every thread;
// every access goes through volatile copies or under the shared lock, and T is Pod (plain data).
unsafe impl<T: Pod> Send for Cells<T> {}
// SAFETY: as above.
unsafe impl<T: Pod> Sync for Cells<T> {}

impl<T: Pod> Clone for Cells<T> {
    fn clone(&self) -> Self {
        Cells {
            block: Arc::clone(&self.block),
            elems: self.elems,
            len: self.len,
            lock: self.lock.clone(),
            _value: PhantomData,
        }
    }
}

impl<T: Pod> Cells<T> {
    /// Bytes of a block for `len` elements.
    fn block_len(len: usize) -> Result<usize, AllocError> {
        std::mem::size_of::<T>()
            .checked_mul(len)
            .and_then(|b| b.checked_add(elems_at::<T>()))
            .ok_or(AllocError::InvalidLayout {
                size: usize::MAX,
                align: std::mem::align_of::<T>(),
                reason: "array length overflows",
            })
    }

    /// A heap just big enough for one block of `len` elements: the storage of a value made
    /// without a heap.
    pub(crate) fn own_heap(len: usize) -> Result<Heap, AllocError> {
        Heap::anonymous(Self::block_len(len)? + 4096)
    }

    /// A heap just big enough for one block of `len` elements, created as `name`.
    pub(crate) fn named_heap(name: &str, len: usize) -> Result<Heap, AllocError> {
        Heap::create(name, Self::block_len(len)? + 4096)
    }

    /// Allocates and fills cells in `heap`. `free_in_creator`: free the block when the last
    /// handle in this process is dropped.
    pub(crate) fn new_in(
        heap: &Heap,
        len: usize,
        fill: impl Fn(usize) -> T,
        lock: LockChoice,
        free_in_creator: bool,
    ) -> Result<Self, AllocError> {
        let bytes = Self::block_len(len)?;
        let align = std::mem::align_of::<T>().max(8);
        let layout =
            Layout::from_size_align(bytes, align).map_err(|_| AllocError::InvalidLayout {
                size: bytes,
                align,
                reason: "size overflows",
            })?;
        let lock = match lock {
            LockChoice::Own => Some(SharedLock::Lock(Lock::anonymous()?)),
            LockChoice::Given(l) => Some(l),
            LockChoice::None => None,
        };
        let offset = heap.alloc(layout)?;
        let block = Arc::new(Block {
            heap: heap.clone(),
            offset,
            free_in: free_in_creator.then(std::process::id),
        });
        let cells = Cells::<T>::wrap(block, len, lock)?;
        for i in 0..len {
            // SAFETY: element i is inside the block (bytes computed above) and aligned for T;
            // nobody else knows the block yet.
            unsafe { cells.elem(i).write(fill(i)) };
        }
        cells.word(LEN_AT).store(len as u64, Ordering::Relaxed);
        // Release: a process that reads the type word sees the elements written above.
        cells
            .word(TYPE_AT)
            .store(TypeTag::of::<T>().checksum(), Ordering::Release);
        Ok(cells)
    }

    /// The cells of a block that a handle from another process (or the heap's root) names,
    /// after checking that the block is allocated and holds `len` values of `T`.
    pub(crate) fn attach(
        heap: Heap,
        offset: Offset<u8>,
        len: Option<usize>,
        lock: Option<SharedLock>,
    ) -> Result<Self, AllocError> {
        let who = heap.region().describe();
        let gone = |detail: String| {
            AllocError::Shm(ShmError::Corrupt {
                name: who.clone(),
                detail,
            })
        };
        let freed = || AllocError::Freed {
            heap: who.clone(),
            offset: offset.get(),
        };
        let usable = heap.usable_size(offset).map_err(|_| freed())?;
        if usable < 16 {
            return Err(gone(format!("block at {} is too small", offset.get())));
        }
        let block = Arc::new(Block {
            heap,
            offset,
            free_in: None,
        });
        let head = Cells::<T>::wrap(Arc::clone(&block), 0, None)?;
        let found_type = head.word(TYPE_AT).load(Ordering::Acquire);
        let found_len = head.word(LEN_AT).load(Ordering::Relaxed);
        if found_type != TypeTag::of::<T>().checksum() {
            return Err(AllocError::Shm(ShmError::TypeMismatch {
                name: format!("{who} block {}", offset.get()),
                found: format!("another element type (checksum {found_type:#x})"),
                expected: TypeTag::of::<T>().name(),
            }));
        }
        let found_len = usize::try_from(found_len).map_err(|_| gone("length".into()))?;
        if len.is_some_and(|l| l != found_len) || Self::block_len(found_len)? > usable {
            return Err(gone(format!(
                "block at {} holds {found_len} elements, the handle says {len:?}",
                offset.get()
            )));
        }
        Cells::wrap(block, found_len, lock)
    }

    fn wrap(block: Arc<Block>, len: usize, lock: Option<SharedLock>) -> Result<Self, AllocError> {
        let base = block.heap.ptr(block.offset)?;
        // elems_at is inside the block (block_len counts it) and aligned for T (the block is
        // aligned to at least T's alignment and 8).
        let elems = NonNull::new(base.as_ptr().wrapping_add(elems_at::<T>()).cast::<T>())
            .expect("inside a mapping, never null");
        Ok(Cells {
            block,
            elems,
            len,
            lock,
            _value: PhantomData,
        })
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        // SAFETY: the block starts with two 8-aligned words (TYPE_AT, LEN_AT), inside the block
        // for as long as `self.block` keeps the heap mapped; AtomicU64 accepts any bytes.
        unsafe {
            &*self
                .elems
                .as_ptr()
                .cast::<u8>()
                .wrapping_sub(elems_at::<T>())
                .add(at)
                .cast::<AtomicU64>()
        }
    }

    /// Element `i`'s address (`i <= len`: `len` is the end, never read).
    pub(crate) fn elem(&self, i: usize) -> *mut T {
        debug_assert!(i <= self.len);
        self.elems.as_ptr().wrapping_add(i)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn heap(&self) -> &Heap {
        &self.block.heap
    }

    pub(crate) fn offset(&self) -> Offset<u8> {
        self.block.offset
    }

    pub(crate) fn shared_lock(&self) -> Option<&SharedLock> {
        self.lock.as_ref()
    }

    /// Takes the lock and returns the guard's parts: whether a dead holder was recovered from.
    pub(crate) fn lock(&self) -> Result<Held<'_, T>, AllocError> {
        let lock = self.lock.as_ref().expect("locked kinds always have a lock");
        let recovered = lock.take()?;
        Ok(Held {
            cells: self,
            lock,
            recovered,
            _not_send: PhantomData,
        })
    }
}

/// The lock of some cells, held; released on drop.
pub(crate) struct Held<'a, T: Pod> {
    pub(crate) cells: &'a Cells<T>,
    lock: &'a SharedLock,
    pub(crate) recovered: bool,
    _not_send: PhantomData<*const ()>,
}

impl<T: Pod> Drop for Held<'_, T> {
    fn drop(&mut self) {
        // Cannot fail: this thread holds the lock (and Drop must not panic).
        let _ = self.lock.release();
    }
}

impl<T: Pod> fmt::Debug for Cells<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cells")
            .field("heap", &self.block.heap.region().describe())
            .field("offset", &self.block.offset.get())
            .field("len", &self.len)
            .finish()
    }
}

/// What a `Value`/`Array` handle writes when serialised.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct CellsRef {
    heap: Heap,
    offset: u64,
    len: u64,
    lock: Option<SharedLock>,
}

#[cfg(feature = "serde")]
impl<T: Pod> Cells<T> {
    pub(crate) fn to_ref(&self) -> CellsRef {
        CellsRef {
            heap: self.block.heap.clone(),
            offset: self.block.offset.get(),
            len: self.len as u64,
            lock: self.lock.clone(),
        }
    }

    pub(crate) fn from_ref(r: CellsRef) -> Result<Self, AllocError> {
        let len = usize::try_from(r.len).ok();
        Cells::attach(r.heap, Offset::new(r.offset), len, r.lock)
    }
}

/// Serialize / Deserialize for a handle type over [`Cells`]: a reference (heap, block, lock),
/// never the values; attaching checks the element type and length, and that a locked kind has a
/// lock (a raw handle cannot be read as a locked one).
#[cfg(feature = "serde")]
macro_rules! cells_serde {
    ($($ty:ident: $locked:expr),*) => {$(
        impl<T: Pod> serde::Serialize for crate::$ty<T> {
            /// Writes a reference (heap, block, lock), not the values.
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.cells.to_ref().serialize(s)
            }
        }

        impl<'de, T: Pod> serde::Deserialize<'de> for crate::$ty<T> {
            /// Attaches to the values, checking their type and length.
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let cells = Cells::from_ref(CellsRef::deserialize(d)?)
                    .map_err(baozi_shm::attach_failed)?;
                if $locked && cells.shared_lock().is_none() {
                    return Err(baozi_shm::attach_failed(concat!(
                        "a raw handle (no lock) read as a ",
                        stringify!($ty)
                    )));
                }
                Ok(crate::$ty { cells })
            }
        }
    )*};
}

#[cfg(feature = "serde")]
cells_serde!(Value: true, RawValue: false, Array: true, RawArray: false);
