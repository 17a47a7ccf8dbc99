//! [`Value`] and [`RawValue`]: one shared number or struct, with or without its own lock.

use std::alloc::Layout;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use baozi_shm::Offset;
use baozi_sync::{Acquired, RawRobustMutex};
use bytemuck::Pod;

use crate::error::AllocError;
use crate::heap::Heap;

/// A lock and `len` values of `T` in one heap block: the shared part of [`Value`] and
/// [`Array`](crate::Array).
pub(crate) struct Locked<'h, T: Pod> {
    heap: &'h Heap,
    offset: Offset<u8>,
    base: NonNull<u8>,
    len: usize,
    owner_pid: u32,
    _value: PhantomData<T>,
}

/// Where the values start after the lock.
fn values_at<T>() -> usize {
    std::mem::size_of::<RawRobustMutex>().next_multiple_of(std::mem::align_of::<T>().max(8))
}

impl<'h, T: Pod> Locked<'h, T> {
    pub(crate) fn new_in(
        heap: &'h Heap,
        len: usize,
        fill: impl Fn(usize) -> T,
        with_lock: bool,
    ) -> Result<Self, AllocError> {
        let lock_len = if with_lock { values_at::<T>() } else { 0 };
        let bytes = std::mem::size_of::<T>()
            .checked_mul(len)
            .and_then(|b| b.checked_add(lock_len))
            .ok_or(AllocError::InvalidLayout {
                size: usize::MAX,
                align: 8,
                reason: "array length overflows",
            })?;
        let align = std::mem::align_of::<T>().max(8);
        let layout = Layout::from_size_align(bytes.max(1), align).map_err(|_| {
            AllocError::InvalidLayout {
                size: bytes,
                align,
                reason: "size overflows",
            }
        })?;
        let offset = heap.alloc(layout)?;
        let base = heap.ptr(offset)?;
        let me: Locked<'h, T> = Locked {
            heap,
            offset,
            base,
            len,
            owner_pid: std::process::id(),
            _value: PhantomData,
        };
        if with_lock {
            // SAFETY: the block is ours and starts with room for the lock, 8-aligned; nobody
            // else knows the block yet.
            unsafe { RawRobustMutex::init(base.as_ptr().cast())? };
        }
        for i in 0..len {
            // SAFETY: element i is inside the block (bytes computed above) and aligned for T.
            unsafe { me.elem(i, with_lock).write(fill(i)) };
        }
        Ok(me)
    }

    pub(crate) fn elem(&self, i: usize, with_lock: bool) -> *mut T {
        debug_assert!(i < self.len.max(1)); // elem(0) of an empty array: its end, never read
        let at = if with_lock { values_at::<T>() } else { 0 };
        self.base
            .as_ptr()
            .wrapping_add(at)
            .cast::<T>()
            .wrapping_add(i)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn offset(&self) -> Offset<u8> {
        self.offset
    }

    fn raw_lock(&self) -> &RawRobustMutex {
        // SAFETY: the block starts with the lock, initialised in new_in (only called for
        // locked kinds), and lives as long as self.
        unsafe { &*self.base.as_ptr().cast::<RawRobustMutex>() }
    }

    /// Locks. A holder that died leaves a valid `T` (any bytes are a valid Pod value), so the
    /// lock is marked consistent at once and the guard reports it.
    pub(crate) fn lock(&self) -> Result<Guard<'_, T>, AllocError> {
        let lock = self.raw_lock();
        let acquired = lock.lock(None)?;
        let recovered = acquired == Acquired::OwnerDied;
        if recovered {
            // SAFETY: we hold the lock after EOWNERDEAD.
            unsafe { lock.mark_consistent() };
        }
        let values = self.elem(0, true);
        Ok(Guard {
            lock,
            values,
            len: self.len,
            recovered,
            _not_send: PhantomData,
        })
    }
}

impl<T: Pod> Drop for Locked<'_, T> {
    fn drop(&mut self) {
        if self.owner_pid == std::process::id() {
            let freed = self.heap.free(self.offset);
            debug_assert!(freed.is_ok() || std::thread::panicking(), "free: {freed:?}");
        }
    }
}

/// Holds the lock of a [`Value`] or [`Array`](crate::Array); unlocks on drop. Dereferences to
/// the values as a slice.
pub struct Guard<'a, T: Pod> {
    lock: &'a RawRobustMutex,
    values: *mut T,
    len: usize,
    recovered: bool,
    _not_send: PhantomData<*const ()>,
}

impl<T: Pod> Guard<'_, T> {
    /// Whether the previous holder died holding the lock: the values may be half updated by
    /// it (each element is still a valid `T`). The lock itself is already usable again.
    pub fn recovered(&self) -> bool {
        self.recovered
    }
}

impl<T: Pod> Deref for Guard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: values..values+len is the block's element area, initialised, and the lock we
        // hold keeps every other well-behaved user out.
        unsafe { std::slice::from_raw_parts(self.values, self.len) }
    }
}

impl<T: Pod> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref; &mut self makes this the only access through this guard.
        unsafe { std::slice::from_raw_parts_mut(self.values, self.len) }
    }
}

impl<T: Pod> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: a guard exists only while this thread holds the lock.
        unsafe { self.lock.unlock() };
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Guard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("values", &&**self)
            .field("recovered", &self.recovered)
            .finish()
    }
}

/// A shared `T` with its own robust lock, as Python's `multiprocessing.Value`.
///
/// [`get`](Self::get) and [`set`](Self::set) take the lock for one read or write;
/// [`lock`](Self::lock) holds it for a read-modify-write (Python's
/// `with v.get_lock(): v.value += 1`). If a holder is killed, the next locker gets the lock
/// (and [`Guard::recovered`] says so): it never hangs.
///
/// ```
/// use baozi_alloc::{Heap, Value};
/// let heap = Heap::anonymous(1 << 20)?;
/// let counter = Value::new_in(&heap, 0u64)?;
/// // SAFETY (of the example): the children only touch shared memory and leave with _exit.
/// let kids: Vec<_> = (0..4).map(|_| match unsafe { libc::fork() } {
///     0 => {
///         for _ in 0..1000 {
///             counter.lock().unwrap()[0] += 1;
///         }
///         unsafe { libc::_exit(0) }
///     }
///     pid => pid,
/// }).collect();
/// for pid in kids {
///     unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
/// }
/// assert_eq!(counter.get()?, 4000);
/// # Ok::<(), baozi_alloc::AllocError>(())
/// ```
pub struct Value<'h, T: Pod> {
    inner: Locked<'h, T>,
}

impl<'h, T: Pod> Value<'h, T> {
    /// A new value in `heap`.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`].
    pub fn new_in(heap: &'h Heap, value: T) -> Result<Self, AllocError> {
        Ok(Value {
            inner: Locked::new_in(heap, 1, |_| value, true)?,
        })
    }

    /// Reads the value under the lock.
    ///
    /// # Errors
    /// Lock failures ([`AllocError::Sync`]).
    pub fn get(&self) -> Result<T, AllocError> {
        Ok(self.inner.lock()?[0])
    }

    /// Writes the value under the lock.
    ///
    /// # Errors
    /// Lock failures ([`AllocError::Sync`]).
    pub fn set(&self, value: T) -> Result<(), AllocError> {
        self.inner.lock()?[0] = value;
        Ok(())
    }

    /// Holds the lock; the guard is a one-element slice (`guard[0]` is the value).
    ///
    /// # Errors
    /// Lock failures ([`AllocError::Sync`]).
    pub fn lock(&self) -> Result<Guard<'_, T>, AllocError> {
        self.inner.lock()
    }

    /// The block's offset in the heap.
    pub fn offset(&self) -> Offset<u8> {
        self.inner.offset()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("value", &self.get().ok())
            .finish()
    }
}

/// A shared `T` with no lock, as Python's `RawValue`: bring your own synchronisation. Reads and
/// writes are single volatile copies; a `T` wider than the machine word can be read torn while
/// another process writes it.
///
/// ```
/// use baozi_alloc::{Heap, RawValue};
/// let heap = Heap::anonymous(1 << 20)?;
/// let v = RawValue::new_in(&heap, 1.5f64)?;
/// v.set(2.5);
/// assert_eq!(v.get(), 2.5);
/// # Ok::<(), baozi_alloc::AllocError>(())
/// ```
pub struct RawValue<'h, T: Pod> {
    inner: Locked<'h, T>,
}

impl<'h, T: Pod> RawValue<'h, T> {
    /// A new value in `heap`.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`].
    pub fn new_in(heap: &'h Heap, value: T) -> Result<Self, AllocError> {
        Ok(RawValue {
            inner: Locked::new_in(heap, 1, |_| value, false)?,
        })
    }

    /// Reads the value.
    pub fn get(&self) -> T {
        // SAFETY: element 0 is inside the block and aligned; any bytes are a valid Pod T.
        unsafe { self.inner.elem(0, false).read_volatile() }
    }

    /// Writes the value.
    pub fn set(&self, value: T) {
        // SAFETY: as in get.
        unsafe { self.inner.elem(0, false).write_volatile(value) }
    }

    /// The block's offset in the heap.
    pub fn offset(&self) -> Offset<u8> {
        self.inner.offset()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue")
            .field("value", &self.get())
            .finish()
    }
}
