//! [`ShmBox`]: one value in a shared heap, freed when its owner drops it.

use std::alloc::Layout;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use baozi_shm::Offset;
use bytemuck::Pod;

use crate::error::AllocError;
use crate::heap::Heap;

/// A `T` in a [`Heap`], owned by this handle: like `Box<T>`, but in shared memory.
///
/// Like `Box`, it has one owner: it is `Send` and `Sync` and keeps its heap alive (move it into a
/// `Process` closure, store it, return it), but it is not `Clone` and not a serde value, because
/// it hands out `&mut T`; two handles would alias. For a value many handles share, use
/// [`Value`](crate::Value) or [`RawValue`](crate::RawValue).
///
/// Other processes reach the value by its [`offset`](Self::offset) (valid at any mapping
/// address). Ownership can move to another process: [`into_offset`](Self::into_offset) gives up
/// ownership here, [`ShmBox::from_offset`] takes it there. The handle frees its block on drop only
/// in the process that made it: a copy inherited by a forked child never frees its parent's block.
///
/// ```
/// use baozi_alloc::{Heap, ShmBox};
/// let heap = Heap::anonymous(1 << 20)?;
/// let mut b = ShmBox::new_in(&heap, [1u32, 2, 3])?;
/// b[0] = 10;
/// assert_eq!(*b, [10, 2, 3]);
/// # Ok::<(), baozi_alloc::AllocError>(())
/// ```
pub struct ShmBox<T: Pod> {
    heap: Heap,
    offset: Offset<u8>,
    ptr: NonNull<T>,
    owner_pid: u32,
    _value: PhantomData<T>,
}

impl<T: Pod> ShmBox<T> {
    /// Moves `value` into a new block of `heap`.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`]; [`AllocError::InvalidLayout`] for `T` aligned above 4096.
    pub fn new_in(heap: &Heap, value: T) -> Result<Self, AllocError> {
        let offset = heap.alloc(Layout::new::<T>())?;
        let ptr = heap.ptr(offset)?.cast::<T>();
        // SAFETY: the block is ours, at least size_of::<T>() bytes and aligned for T (the heap
        // honours Layout::new::<T>()).
        unsafe { ptr.as_ptr().write(value) };
        Ok(ShmBox {
            heap: heap.clone(),
            offset,
            ptr,
            owner_pid: std::process::id(),
            _value: PhantomData,
        })
    }

    /// Takes ownership of a block made by [`new_in`](Self::new_in) (in any process) and given
    /// up with [`into_offset`](Self::into_offset).
    ///
    /// # Safety
    /// `offset` must come from `into_offset` of a `ShmBox<T>` of this same heap, and nobody else
    /// may own or use it.
    ///
    /// # Errors
    /// [`AllocError::ForeignOffset`] / [`AllocError::DoubleFree`] when the offset is not an
    /// allocated block of this heap, or is too small for `T`.
    pub unsafe fn from_offset(heap: &Heap, offset: Offset<u8>) -> Result<Self, AllocError> {
        if heap.usable_size(offset)? < std::mem::size_of::<T>() {
            return Err(AllocError::ForeignOffset {
                offset: offset.get(),
            });
        }
        let ptr = heap.ptr(offset)?.cast::<T>();
        Ok(ShmBox {
            heap: heap.clone(),
            offset,
            ptr,
            owner_pid: std::process::id(),
            _value: PhantomData,
        })
    }

    /// The block's offset in the heap.
    pub fn offset(&self) -> Offset<u8> {
        self.offset
    }

    /// Gives up ownership without freeing: the block stays allocated for another owner.
    pub fn into_offset(self) -> Offset<u8> {
        let offset = self.offset;
        std::mem::forget(self);
        offset
    }
}

// SAFETY: the heap handle is Send + Sync; `ptr` points into its mapping, which it keeps alive;
// access to the value follows Box's rules (&self gives &T, &mut self gives &mut T), T: Pod.
unsafe impl<T: Pod> Send for ShmBox<T> {}
// SAFETY: as above.
unsafe impl<T: Pod> Sync for ShmBox<T> {}

impl<T: Pod> Deref for ShmBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the block is allocated, aligned and initialised, and owned by this handle.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: Pod> DerefMut for ShmBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref; &mut self makes this the only reference through this handle.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ShmBox<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ShmBox").field(&**self).finish()
    }
}

impl<T: Pod> Drop for ShmBox<T> {
    fn drop(&mut self) {
        if self.owner_pid == std::process::id() {
            let freed = self.heap.free(self.offset);
            debug_assert!(
                freed.is_ok() || std::thread::panicking(),
                "ShmBox free: {freed:?}"
            );
        }
    }
}
