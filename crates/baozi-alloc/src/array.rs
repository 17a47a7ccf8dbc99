//! [`Array`] and [`RawArray`]: a fixed-length shared array, with or without its own lock.

use std::fmt;

use baozi_shm::Offset;
use bytemuck::Pod;

use crate::error::AllocError;
use crate::heap::Heap;
use crate::value::{Guard, Locked};

/// `len` values of `T` with one robust lock, as Python's `multiprocessing.Array`.
///
/// ```
/// use baozi_alloc::{Array, Heap};
/// let heap = Heap::anonymous(1 << 20)?;
/// let a = Array::from_slice_in(&heap, &[1i32, 2, 3])?;
/// {
///     let mut g = a.lock()?;
///     g.iter_mut().for_each(|x| *x *= 10);
/// }
/// assert_eq!(a.to_vec()?, [10, 20, 30]);
/// assert_eq!(a.get(1)?, 20);
/// # Ok::<(), baozi_alloc::AllocError>(())
/// ```
pub struct Array<'h, T: Pod> {
    inner: Locked<'h, T>,
}

fn out_of_range(i: usize, len: usize) -> AllocError {
    AllocError::InvalidLayout {
        size: i,
        align: len,
        reason: "index out of range (size = index, align = length)",
    }
}

impl<'h, T: Pod> Array<'h, T> {
    /// `len` zeroed values.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`], [`AllocError::InvalidLayout`] for a length that overflows.
    pub fn zeroed_in(heap: &'h Heap, len: usize) -> Result<Self, AllocError> {
        Ok(Array {
            inner: Locked::new_in(heap, len, |_| T::zeroed(), true)?,
        })
    }

    /// A copy of `values`.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`].
    pub fn from_slice_in(heap: &'h Heap, values: &[T]) -> Result<Self, AllocError> {
        Ok(Array {
            inner: Locked::new_in(heap, values.len(), |i| values[i], true)?,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Holds the lock; the guard dereferences to the whole slice.
    ///
    /// # Errors
    /// Lock failures ([`AllocError::Sync`]).
    pub fn lock(&self) -> Result<Guard<'_, T>, AllocError> {
        self.inner.lock()
    }

    /// Element `i`, read under the lock.
    ///
    /// # Errors
    /// [`AllocError::InvalidLayout`] for an index out of range; lock failures.
    pub fn get(&self, i: usize) -> Result<T, AllocError> {
        self.lock()?
            .get(i)
            .copied()
            .ok_or_else(|| out_of_range(i, self.len()))
    }

    /// Writes element `i` under the lock.
    ///
    /// # Errors
    /// [`AllocError::InvalidLayout`] for an index out of range; lock failures.
    pub fn set(&self, i: usize, value: T) -> Result<(), AllocError> {
        let len = self.len();
        *self
            .lock()?
            .get_mut(i)
            .ok_or_else(|| out_of_range(i, len))? = value;
        Ok(())
    }

    /// A copy of all elements, taken under the lock.
    ///
    /// # Errors
    /// Lock failures.
    pub fn to_vec(&self) -> Result<Vec<T>, AllocError> {
        Ok(self.lock()?.to_vec())
    }

    /// The block's offset in the heap.
    pub fn offset(&self) -> Offset<u8> {
        self.inner.offset()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array").field("len", &self.len()).finish()
    }
}

/// `len` values of `T` with no lock, as Python's `RawArray`: element reads and writes are single
/// volatile copies; bring your own synchronisation for anything wider.
///
/// ```
/// use baozi_alloc::{Heap, RawArray};
/// let heap = Heap::anonymous(1 << 20)?;
/// let a = RawArray::<u16>::zeroed_in(&heap, 4)?;
/// a.set(3, 7)?;
/// assert_eq!(a.to_vec(), [0, 0, 0, 7]);
/// # Ok::<(), baozi_alloc::AllocError>(())
/// ```
pub struct RawArray<'h, T: Pod> {
    inner: Locked<'h, T>,
}

impl<'h, T: Pod> RawArray<'h, T> {
    /// `len` zeroed values.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`].
    pub fn zeroed_in(heap: &'h Heap, len: usize) -> Result<Self, AllocError> {
        Ok(RawArray {
            inner: Locked::new_in(heap, len, |_| T::zeroed(), false)?,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i`.
    ///
    /// # Errors
    /// [`AllocError::InvalidLayout`] for an index out of range.
    pub fn get(&self, i: usize) -> Result<T, AllocError> {
        if i >= self.len() {
            return Err(out_of_range(i, self.len()));
        }
        // SAFETY: i < len: inside the block, aligned; any bytes are a valid Pod T.
        Ok(unsafe { self.inner.elem(i, false).read_volatile() })
    }

    /// Writes element `i`.
    ///
    /// # Errors
    /// [`AllocError::InvalidLayout`] for an index out of range.
    pub fn set(&self, i: usize, value: T) -> Result<(), AllocError> {
        if i >= self.len() {
            return Err(out_of_range(i, self.len()));
        }
        // SAFETY: as in get.
        unsafe { self.inner.elem(i, false).write_volatile(value) };
        Ok(())
    }

    /// A copy of all elements (each read once; not a snapshot if others write meanwhile).
    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: every i < len is inside the block; any bytes are a valid Pod T.
        (0..self.len())
            .map(|i| unsafe { self.inner.elem(i, false).read_volatile() })
            .collect()
    }

    /// The block's offset in the heap.
    pub fn offset(&self) -> Offset<u8> {
        self.inner.offset()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray")
            .field("len", &self.len())
            .finish()
    }
}
