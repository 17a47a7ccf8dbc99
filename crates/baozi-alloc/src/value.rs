//! [`Value`] and [`RawValue`]: one shared number or struct, with or without a lock.

use std::fmt;
use std::ops::{Deref, DerefMut};

use baozi_shm::Offset;
#[allow(unused_imports)] // RLock: named in the docs
use baozi_sync::{Lock, RLock};
use bytemuck::Pod;

use crate::cells::{Cells, Held, LockChoice, SharedLock};
use crate::error::AllocError;
use crate::heap::Heap;

/// The suffix of the lock that a named value or array keeps beside it (`NAME.lock`).
pub(crate) const LOCK_SUFFIX: &str = ".lock";

/// Makes named cells: a heap named `name` with the block as its root, and a lock `NAME.lock`
/// (none for raw kinds).
pub(crate) fn create_named<T: Pod>(
    name: &str,
    len: usize,
    fill: impl Fn(usize) -> T,
    locked: bool,
) -> Result<Cells<T>, AllocError> {
    let lock = if locked {
        LockChoice::Given(SharedLock::Lock(Lock::create(&format!(
            "{name}{LOCK_SUFFIX}"
        ))?))
    } else {
        LockChoice::None
    };
    let heap = Cells::<T>::named_heap(name, len)?;
    let cells = Cells::new_in(&heap, len, fill, lock, false)?;
    heap.set_root(cells.offset());
    Ok(cells)
}

/// Opens named cells made by [`create_named`].
pub(crate) fn open_named<T: Pod>(name: &str, locked: bool) -> Result<Cells<T>, AllocError> {
    let heap = Heap::open(name)?;
    let root = heap.root().ok_or_else(|| AllocError::Corrupt {
        name: heap.region().describe(),
        detail: "a heap with no root block: not a named Value or Array".to_owned(),
    })?;
    let lock = if locked {
        Some(SharedLock::Lock(Lock::open(&format!(
            "{name}{LOCK_SUFFIX}"
        ))?))
    } else {
        None
    };
    Cells::attach(heap, root, None, lock)
}

/// Removes the names of a named value or array (the heap and its lock).
pub(crate) fn unlink_named(name: &str) -> Result<(), AllocError> {
    baozi_shm::Region::unlink(name)?;
    match baozi_shm::Region::unlink(&format!("{name}{LOCK_SUFFIX}")) {
        Ok(()) | Err(baozi_shm::ShmError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Holds the lock of a [`Value`]; dereferences to the value and releases the lock on drop.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    held: Held<'a, T>,
}

impl<T: Pod> ValueGuard<'_, T> {
    /// Whether the previous holder died holding the lock: the value may be half updated by it
    /// (it is still a valid `T`). The lock itself is already usable again.
    pub fn recovered(&self) -> bool {
        self.held.recovered
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: element 0 is inside the block, initialised and aligned; the lock we hold keeps
        // every other well-behaved user out.
        unsafe { &*self.held.cells.elem(0) }
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref; &mut self makes this the only access through this guard, and a
        // second guard cannot exist in this thread (the lock refuses re-entry).
        unsafe { &mut *self.held.cells.elem(0) }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueGuard")
            .field("value", &**self)
            .field("recovered", &self.recovered())
            .finish()
    }
}

/// A shared `T` with a robust lock, as Python's `multiprocessing.Value`.
///
/// [`get`](Self::get) and [`set`](Self::set) take the lock for one read or write;
/// [`lock`](Self::lock) holds it for a read-modify-write (Python's
/// `with v.get_lock(): v.value += 1` is `*v.lock()? += 1`). If a holder is killed, the next
/// locker gets the lock (and [`ValueGuard::recovered`] says so): it never hangs.
///
/// A `Value` is a handle: a clone is another handle to the same value, to move into a
/// `Process` closure or a thread. With the `serde` feature it is also a serde value that any
/// process of the machine can deserialise (a pool task's argument or result, part of a message).
///
/// ```
/// use baozi_alloc::Value;
/// let counter = Value::new(0u64)?;
/// let c = counter.clone(); // what a Process closure would capture
/// std::thread::spawn(move || *c.lock().unwrap() += 41).join().unwrap();
/// *counter.lock()? += 1;
/// assert_eq!(counter.get()?, 42);
/// # Ok::<(), baozi_alloc::AllocError>(())
/// ```
///
/// # Where the value lives
///
/// * [`Value::new`]: in shared memory of its own, freed when the last process holding it lets go
///   (even if they are all killed). It can outlive its creator.
/// * [`Value::new_in`]: in a [`Heap`] you share among many values. Its block is freed when the last
///   handle *in the process that made it* is dropped; handles in other processes are references
///   that stay valid while the creator keeps one (Python's rule for its shared heap).
/// * [`Value::create`] / [`Value::open`]: by name, for unrelated programs.
pub struct Value<T: Pod> {
    pub(crate) cells: Cells<T>,
}

impl<T: Pod> Clone for Value<T> {
    /// Another handle to the same value.
    fn clone(&self) -> Self {
        Value {
            cells: self.cells.clone(),
        }
    }
}

impl<T: Pod> Value<T> {
    /// A new value in shared memory of its own, with its own lock.
    ///
    /// # Errors
    /// [`AllocError::Shm`] / [`AllocError::Sync`] when the mapping or the lock cannot be made.
    pub fn new(value: T) -> Result<Self, AllocError> {
        let heap = Cells::<T>::own_heap(1)?;
        Ok(Value {
            cells: Cells::new_in(&heap, 1, |_| value, LockChoice::Own, false)?,
        })
    }

    /// A new value guarded by `lock` (Python's `Value(t, v, lock=lock)`): several values may share
    /// one [`Lock`] or [`RLock`].
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_lock(value: T, lock: impl Into<SharedLock>) -> Result<Self, AllocError> {
        let heap = Cells::<T>::own_heap(1)?;
        Ok(Value {
            cells: Cells::new_in(&heap, 1, |_| value, LockChoice::Given(lock.into()), false)?,
        })
    }

    /// A new value in `heap`, with its own lock.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`]; the lock's errors.
    pub fn new_in(heap: &Heap, value: T) -> Result<Self, AllocError> {
        Ok(Value {
            cells: Cells::new_in(heap, 1, |_| value, LockChoice::Own, true)?,
        })
    }

    /// A new value in `heap`, guarded by `lock`.
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`].
    pub fn with_lock_in(
        heap: &Heap,
        value: T,
        lock: impl Into<SharedLock>,
    ) -> Result<Self, AllocError> {
        Ok(Value {
            cells: Cells::new_in(heap, 1, |_| value, LockChoice::Given(lock.into()), true)?,
        })
    }

    /// Creates the named value `/dev/shm/baozi-NAME` (with its lock `NAME.lock`), for unrelated
    /// processes to [`open`](Self::open). The names go when this creator drops its last handle.
    ///
    /// # Errors
    /// [`ShmError::AlreadyExists`](baozi_shm::ShmError::AlreadyExists) and the other naming
    /// errors.
    pub fn create(name: &str, value: T) -> Result<Self, AllocError> {
        Ok(Value {
            cells: create_named(name, 1, |_| value, true)?,
        })
    }

    /// Opens a named value made by [`create`](Self::create), checking its type.
    ///
    /// # Errors
    /// [`ShmError::NotFound`](baozi_shm::ShmError::NotFound),
    /// [`ShmError::TypeMismatch`](baozi_shm::ShmError::TypeMismatch) when it holds another `T`,
    /// and the other checks of [`Heap::open`].
    pub fn open(name: &str) -> Result<Self, AllocError> {
        let cells = open_named::<T>(name, true)?;
        if cells.len() != 1 {
            return Err(AllocError::Corrupt {
                name: name.to_owned(),
                detail: format!("an array of {}, not a value", cells.len()),
            });
        }
        Ok(Value { cells })
    }

    /// Removes the names of a named value; processes holding it keep it.
    ///
    /// # Errors
    /// [`ShmError::NotFound`](baozi_shm::ShmError::NotFound).
    pub fn unlink(name: &str) -> Result<(), AllocError> {
        unlink_named(name)
    }

    /// Reads the value under the lock.
    ///
    /// # Errors
    /// Lock failures ([`AllocError::Sync`]).
    pub fn get(&self) -> Result<T, AllocError> {
        Ok(*self.lock()?)
    }

    /// Writes the value under the lock.
    ///
    /// # Errors
    /// Lock failures ([`AllocError::Sync`]).
    pub fn set(&self, value: T) -> Result<(), AllocError> {
        *self.lock()? = value;
        Ok(())
    }

    /// Holds the lock; the guard dereferences to the value.
    ///
    /// # Errors
    /// Lock failures ([`AllocError::Sync`]); [`AllocError::AlreadyLocked`] when this thread holds
    /// the lock already (through another guard, or a shared lock taken by hand).
    pub fn lock(&self) -> Result<ValueGuard<'_, T>, AllocError> {
        Ok(ValueGuard {
            held: self.cells.lock()?,
        })
    }

    /// The lock in use (Python's `get_lock()`), to take by hand or to give to another value.
    pub fn get_lock(&self) -> &SharedLock {
        self.cells.shared_lock().expect("a Value always has a lock")
    }

    /// The heap holding the value.
    pub fn heap(&self) -> &Heap {
        self.cells.heap()
    }

    /// The block's offset in the heap.
    pub fn offset(&self) -> Offset<u8> {
        self.cells.offset()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("value", &self.get().ok())
            .finish()
    }
}

/// A shared `T` with no lock, as Python's `RawValue`: bring your own synchronisation. Reads and
/// writes are single volatile copies; a `T` wider than the machine word can be read torn while
/// another process writes it. A handle, like [`Value`].
///
/// ```
/// use baozi_alloc::RawValue;
/// let v = RawValue::new(1.5f64)?;
/// v.set(2.5);
/// assert_eq!(v.clone().get(), 2.5);
/// # Ok::<(), baozi_alloc::AllocError>(())
/// ```
pub struct RawValue<T: Pod> {
    pub(crate) cells: Cells<T>,
}

impl<T: Pod> Clone for RawValue<T> {
    /// Another handle to the same value.
    fn clone(&self) -> Self {
        RawValue {
            cells: self.cells.clone(),
        }
    }
}

impl<T: Pod> RawValue<T> {
    /// A new value in shared memory of its own.
    ///
    /// # Errors
    /// [`AllocError::Shm`] when the mapping cannot be made.
    pub fn new(value: T) -> Result<Self, AllocError> {
        let heap = Cells::<T>::own_heap(1)?;
        Ok(RawValue {
            cells: Cells::new_in(&heap, 1, |_| value, LockChoice::None, false)?,
        })
    }

    /// A new value in `heap` (freed when the last handle in this process is dropped).
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`].
    pub fn new_in(heap: &Heap, value: T) -> Result<Self, AllocError> {
        Ok(RawValue {
            cells: Cells::new_in(heap, 1, |_| value, LockChoice::None, true)?,
        })
    }

    /// Creates the named value `/dev/shm/baozi-NAME`.
    ///
    /// # Errors
    /// As [`Value::create`].
    pub fn create(name: &str, value: T) -> Result<Self, AllocError> {
        Ok(RawValue {
            cells: create_named(name, 1, |_| value, false)?,
        })
    }

    /// Opens a named raw value, checking its type.
    ///
    /// # Errors
    /// As [`Value::open`].
    pub fn open(name: &str) -> Result<Self, AllocError> {
        Ok(RawValue {
            cells: open_named(name, false)?,
        })
    }

    /// Reads the value.
    pub fn get(&self) -> T {
        // SAFETY: element 0 is inside the block and aligned; any bytes are a valid Pod T.
        unsafe { self.cells.elem(0).read_volatile() }
    }

    /// Writes the value.
    pub fn set(&self, value: T) {
        // SAFETY: as in get.
        unsafe { self.cells.elem(0).write_volatile(value) }
    }

    /// The heap holding the value.
    pub fn heap(&self) -> &Heap {
        self.cells.heap()
    }

    /// The block's offset in the heap.
    pub fn offset(&self) -> Offset<u8> {
        self.cells.offset()
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue")
            .field("value", &self.get())
            .finish()
    }
}
