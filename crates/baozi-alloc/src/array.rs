//! [`Array`] and [`RawArray`]: a fixed-length shared array, with or without a lock.

use std::fmt;
use std::ops::{Deref, DerefMut};

use baozi_shm::Offset;
use bytemuck::Pod;

use crate::cells::{Cells, Held, LockChoice, SharedLock};
use crate::error::AllocError;
use crate::heap::Heap;
use crate::value::{create_named, open_named, unlink_named};

/// Holds the lock of an [`Array`]; dereferences to the elements as a slice and releases the
/// lock on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct Guard<'a, T: Pod> {
    held: Held<'a, T>,
}

impl<T: Pod> Guard<'_, T> {
    /// Whether the previous holder died holding the lock: the elements may be half updated by
    /// it (each is still a valid `T`). The lock itself is already usable again.
    pub fn recovered(&self) -> bool {
        self.held.recovered
    }
}

impl<T: Pod> Deref for Guard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        let cells = self.held.cells;
        // SAFETY: the element area holds `len` initialised, aligned values, and the lock we
        // hold keeps every other well-behaved user out.
        unsafe { std::slice::from_raw_parts(cells.elem(0), cells.len()) }
    }
}

impl<T: Pod> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let cells = self.held.cells;
        // SAFETY: as in deref; &mut self makes this the only access through this guard, and the
        // lock refuses a second guard in this thread.
        unsafe { std::slice::from_raw_parts_mut(cells.elem(0), cells.len()) }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Guard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("values", &&**self)
            .field("recovered", &self.recovered())
            .finish()
    }
}

/// `len` values of `T` with one robust lock, as Python's `multiprocessing.Array`. A handle:
/// clones share the array; with the `serde` feature it travels to any process of the machine.
/// Where it lives and for how long: as [`Value`](crate::Value).
///
/// ```
/// use baozi_alloc::Array;
/// let a = Array::from_slice(&[1i32, 2, 3])?;
/// {
///     let mut g = a.lock()?;
///     g.iter_mut().for_each(|x| *x *= 10);
/// }
/// assert_eq!(a.to_vec()?, [10, 20, 30]);
/// assert_eq!(a.clone().get(1)?, 20);
/// # Ok::<(), baozi_alloc::AllocError>(())
/// ```
pub struct Array<T: Pod> {
    pub(crate) cells: Cells<T>,
}

impl<T: Pod> Clone for Array<T> {
    /// Another handle to the same array.
    fn clone(&self) -> Self {
        Array {
            cells: self.cells.clone(),
        }
    }
}

fn out_of_range(i: usize, len: usize) -> AllocError {
    AllocError::IndexOutOfRange { index: i, len }
}

impl<T: Pod> Array<T> {
    /// `len` zeroed values in shared memory of their own, with their own lock.
    ///
    /// # Errors
    /// [`AllocError::InvalidLayout`] for a length that overflows; mapping or lock failures.
    pub fn zeroed(len: usize) -> Result<Self, AllocError> {
        let heap = Cells::<T>::own_heap(len)?;
        Ok(Array {
            cells: Cells::new_in(&heap, len, |_| T::zeroed(), LockChoice::Own, false)?,
        })
    }

    /// A copy of `values` in shared memory of its own, with its own lock.
    ///
    /// # Errors
    /// As [`zeroed`](Self::zeroed).
    pub fn from_slice(values: &[T]) -> Result<Self, AllocError> {
        let heap = Cells::<T>::own_heap(values.len())?;
        Ok(Array {
            cells: Cells::new_in(&heap, values.len(), |i| values[i], LockChoice::Own, false)?,
        })
    }

    /// A copy of `values` guarded by `lock` (Python's `Array(t, v, lock=lock)`).
    ///
    /// # Errors
    /// As [`zeroed`](Self::zeroed).
    pub fn with_lock(values: &[T], lock: impl Into<SharedLock>) -> Result<Self, AllocError> {
        let heap = Cells::<T>::own_heap(values.len())?;
        let lock = LockChoice::Given(lock.into());
        Ok(Array {
            cells: Cells::new_in(&heap, values.len(), |i| values[i], lock, false)?,
        })
    }

    /// `len` zeroed values in `heap` (freed when the last handle in this process is dropped).
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`], [`AllocError::InvalidLayout`] for a length that overflows.
    pub fn zeroed_in(heap: &Heap, len: usize) -> Result<Self, AllocError> {
        Ok(Array {
            cells: Cells::new_in(heap, len, |_| T::zeroed(), LockChoice::Own, true)?,
        })
    }

    /// A copy of `values` in `heap`.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`].
    pub fn from_slice_in(heap: &Heap, values: &[T]) -> Result<Self, AllocError> {
        Ok(Array {
            cells: Cells::new_in(heap, values.len(), |i| values[i], LockChoice::Own, true)?,
        })
    }

    /// Creates the named array `/dev/shm/baozi-NAME` (and its lock `NAME.lock`).
    ///
    /// # Errors
    /// As [`Value::create`](crate::Value::create).
    pub fn create(name: &str, values: &[T]) -> Result<Self, AllocError> {
        Ok(Array {
            cells: create_named(name, values.len(), |i| values[i], true)?,
        })
    }

    /// Opens a named array, checking its element type.
    ///
    /// # Errors
    /// As [`Value::open`](crate::Value::open).
    pub fn open(name: &str) -> Result<Self, AllocError> {
        Ok(Array {
            cells: open_named(name, true)?,
        })
    }

    /// Removes the names of a named array; processes holding it keep it.
    ///
    /// # Errors
    /// [`ShmError::NotFound`](baozi_shm::ShmError::NotFound).
    pub fn unlink(name: &str) -> Result<(), AllocError> {
        unlink_named(name)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Holds the lock; the guard dereferences to the whole slice.
    ///
    /// # Errors
    /// Lock failures ([`AllocError::Sync`]); [`AllocError::AlreadyLocked`].
    pub fn lock(&self) -> Result<Guard<'_, T>, AllocError> {
        Ok(Guard {
            held: self.cells.lock()?,
        })
    }

    /// The lock in use (Python's `get_lock()`).
    pub fn get_lock(&self) -> &SharedLock {
        self.cells
            .shared_lock()
            .expect("an Array always has a lock")
    }

    /// Element `i`, read under the lock.
    ///
    /// # Errors
    /// [`AllocError::IndexOutOfRange`]; lock failures.
    pub fn get(&self, i: usize) -> Result<T, AllocError> {
        self.lock()?
            .get(i)
            .copied()
            .ok_or_else(|| out_of_range(i, self.len()))
    }

    /// Writes element `i` under the lock.
    ///
    /// # Errors
    /// [`AllocError::IndexOutOfRange`]; lock failures.
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

    /// The heap holding the array.
    pub fn heap(&self) -> &Heap {
        self.cells.heap()
    }

    /// The block's offset in the heap.
    pub fn offset(&self) -> Offset<u8> {
        self.cells.offset()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array").field("len", &self.len()).finish()
    }
}

/// `len` values of `T` with no lock, as Python's `RawArray`: element reads and writes are single
/// volatile copies; bring your own synchronisation for anything wider. A handle, like [`Array`].
///
/// ```
/// use baozi_alloc::RawArray;
/// let a = RawArray::<u16>::zeroed(4)?;
/// a.set(3, 7)?;
/// assert_eq!(a.to_vec(), [0, 0, 0, 7]);
/// # Ok::<(), baozi_alloc::AllocError>(())
/// ```
pub struct RawArray<T: Pod> {
    pub(crate) cells: Cells<T>,
}

impl<T: Pod> Clone for RawArray<T> {
    /// Another handle to the same array.
    fn clone(&self) -> Self {
        RawArray {
            cells: self.cells.clone(),
        }
    }
}

impl<T: Pod> RawArray<T> {
    /// `len` zeroed values in shared memory of their own.
    ///
    /// # Errors
    /// [`AllocError::InvalidLayout`] for a length that overflows; mapping failures.
    pub fn zeroed(len: usize) -> Result<Self, AllocError> {
        let heap = Cells::<T>::own_heap(len)?;
        Ok(RawArray {
            cells: Cells::new_in(&heap, len, |_| T::zeroed(), LockChoice::None, false)?,
        })
    }

    /// `len` zeroed values in `heap` (freed when the last handle in this process is dropped).
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`].
    pub fn zeroed_in(heap: &Heap, len: usize) -> Result<Self, AllocError> {
        Ok(RawArray {
            cells: Cells::new_in(heap, len, |_| T::zeroed(), LockChoice::None, true)?,
        })
    }

    /// Creates the named raw array `/dev/shm/baozi-NAME`.
    ///
    /// # Errors
    /// As [`Value::create`](crate::Value::create).
    pub fn create(name: &str, values: &[T]) -> Result<Self, AllocError> {
        Ok(RawArray {
            cells: create_named(name, values.len(), |i| values[i], false)?,
        })
    }

    /// Opens a named raw array, checking its element type.
    ///
    /// # Errors
    /// As [`Value::open`](crate::Value::open).
    pub fn open(name: &str) -> Result<Self, AllocError> {
        Ok(RawArray {
            cells: open_named(name, false)?,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i`.
    ///
    /// # Errors
    /// [`AllocError::IndexOutOfRange`].
    pub fn get(&self, i: usize) -> Result<T, AllocError> {
        if i >= self.len() {
            return Err(out_of_range(i, self.len()));
        }
        // SAFETY: i < len: inside the block, aligned; any bytes are a valid Pod T.
        Ok(unsafe { self.cells.elem(i).read_volatile() })
    }

    /// Writes element `i`.
    ///
    /// # Errors
    /// [`AllocError::IndexOutOfRange`].
    pub fn set(&self, i: usize, value: T) -> Result<(), AllocError> {
        if i >= self.len() {
            return Err(out_of_range(i, self.len()));
        }
        // SAFETY: as in get.
        unsafe { self.cells.elem(i).write_volatile(value) };
        Ok(())
    }

    /// A copy of all elements (each read once; not a snapshot if others write meanwhile).
    pub fn to_vec(&self) -> Vec<T> {
        // SAFETY: every i < len is inside the block; any bytes are a valid Pod T.
        (0..self.len())
            .map(|i| unsafe { self.cells.elem(i).read_volatile() })
            .collect()
    }

    /// The heap holding the array.
    pub fn heap(&self) -> &Heap {
        self.cells.heap()
    }

    /// The block's offset in the heap.
    pub fn offset(&self) -> Offset<u8> {
        self.cells.offset()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray")
            .field("len", &self.len())
            .finish()
    }
}
