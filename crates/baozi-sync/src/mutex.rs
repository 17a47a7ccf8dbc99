//! [`ShmMutex`]: a typed, robust mutex over a value in shared memory.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use baozi_shm::{ObjectKind, Offset, Region, CACHE_LINE, DEFAULT_READY_WAIT};
use bytemuck::Pod;

use crate::deadline::Deadline;
use crate::error::SyncError;
use crate::raw_mutex::{Acquired, RawRobustMutex};

/// The lock sits on its own cache line after the header; the value on the next one.
const LOCK_AT: usize = CACHE_LINE;
const VALUE_AT: usize = 2 * CACHE_LINE;
/// Distinguishes a mutex from other [`ObjectKind::SYNC`] objects in the layout checksum.
const SUBKIND_MUTEX: u64 = 1;

/// A value of type `T` in shared memory behind a robust, process-shared lock.
///
/// Made with [`anonymous`](Self::anonymous) (shared with children forked afterwards) or
/// [`create`](Self::create)/[`open`](Self::open) (by name). When a holder dies — even by
/// `kill -9` — the next [`lock`](Self::lock) returns [`LockError::OwnerDied`] with the guard:
/// repair the value, call [`ShmMutexGuard::mark_consistent`], and go on. Dropping that guard
/// without marking it makes the mutex unrecoverable for everyone, as POSIX prescribes.
///
/// ```
/// use baozi_process::Process;
/// use baozi_sync::{LockError, ShmMutex};
///
/// let counter = ShmMutex::anonymous(0u64)?;
/// let shared = counter.clone();
/// let child = Process::new(move || {
///     let mut g = shared.lock().unwrap();
///     *g += 1;
///     std::mem::forget(g); // the process ends holding the lock
/// });
/// child.start()?;
/// child.join()?;
/// let value = match counter.lock() {
///     Ok(g) => *g,
///     Err(LockError::OwnerDied(mut g)) => {
///         // Here the value would be checked and repaired.
///         g.mark_consistent();
///         *g
///     }
///     Err(e) => panic!("{e}"),
/// };
/// assert_eq!(value, 1);
/// assert_eq!(*counter.lock().unwrap(), 1); // consistent again
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ShmMutex<T: Pod> {
    region: Region,
    _value: PhantomData<T>,
}

impl<T: Pod> Clone for ShmMutex<T> {
    /// Another handle to the same mutex.
    fn clone(&self) -> Self {
        ShmMutex {
            region: self.region.clone(),
            _value: PhantomData,
        }
    }
}

impl<T: Pod> fmt::Debug for ShmMutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmMutex")
            .field("region", &self.region.describe())
            .finish()
    }
}

impl<T: Pod> ShmMutex<T> {
    fn total_len() -> usize {
        VALUE_AT + std::mem::size_of::<T>().max(1)
    }

    fn layout_hash() -> u64 {
        baozi_shm::LayoutHash::new(ObjectKind::SYNC)
            .u64(SUBKIND_MUTEX)
            .u64(std::mem::size_of::<T>() as u64)
            .u64(std::mem::align_of::<T>() as u64)
            .finish()
    }

    /// A mutex holding `value`, shared with children forked after this call and with any process
    /// its handle is given to.
    ///
    /// `T` is any [`bytemuck::Pod`] type — the one bound for "may live in shared memory" that
    /// `Value` and `Array` use too: integers, floats, `usize`, arrays of them, and `repr(C)`
    /// structs with `#[derive(Pod, Zeroable)]`. (Not `bool` or enums: a process killed mid-write
    /// could leave bytes that are no valid value of them.)
    ///
    /// ```
    /// use baozi_sync::ShmMutex;
    /// use bytemuck::{Pod, Zeroable};
    ///
    /// #[derive(Clone, Copy, Pod, Zeroable)]
    /// #[repr(C)]
    /// struct Account { balance: f64, deposits: u64 }
    ///
    /// let account = ShmMutex::new(Account { balance: 0.0, deposits: 0 })?;
    /// {
    ///     let mut a = account.lock().map_err(|e| e.to_string()).unwrap();
    ///     a.balance += 12.5;
    ///     a.deposits += 1;
    /// }
    /// let temperature = ShmMutex::new(21.5f64)?;
    /// assert_eq!(*temperature.lock().map_err(|e| e.to_string()).unwrap(), 21.5);
    /// # Ok::<(), baozi_sync::SyncError>(())
    /// ```
    ///
    /// # Errors
    /// [`SyncError::Shm`] if the region cannot be mapped.
    pub fn new(value: T) -> Result<Self, SyncError> {
        Self::anonymous(value)
    }

    /// The same as [`new`](Self::new).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn anonymous(value: T) -> Result<Self, SyncError> {
        Self::build(Region::anonymous(Self::total_len())?, value)
    }

    /// Creates the named mutex `/dev/shm/baozi-NAME` holding `value`.
    ///
    /// # Errors
    /// [`SyncError::Shm`]: invalid name, already exists, permission denied.
    pub fn create(name: &str, value: T) -> Result<Self, SyncError> {
        Self::build(Region::create(name, Self::total_len())?, value)
    }

    /// Opens a named mutex made by [`create`](Self::create) with the same `T`.
    ///
    /// # Errors
    /// [`SyncError::Shm`] with the precise cause: not found, foreign object, wrong version or kind,
    /// another `T` (layout mismatch), truncated, not ready.
    pub fn open(name: &str) -> Result<Self, SyncError> {
        Self::open_from(name)
    }

    /// Attaches to the mutex a serialised handle refers to (what `Deserialize` does with the
    /// `serde` feature): any process of the machine can, the ones that did not inherit it too.
    ///
    /// # Errors
    /// [`ShmError::Gone`](baozi_shm::ShmError::Gone) when no process holds it any more, and the
    /// checks of `open`.
    pub fn attach(r: &baozi_shm::RegionRef) -> Result<Self, SyncError> {
        Self::open_from(r)
    }

    fn open_from(src: impl crate::object::Source) -> Result<Self, SyncError> {
        let region = src.region()?;
        region.set_unmap_check(crate::object::keep_while_held);
        let snap = region.header()?.wait_ready(
            &region.describe(),
            region.len() as u64,
            ObjectKind::SYNC,
            DEFAULT_READY_WAIT,
        )?;
        snap.check_layout(&region.describe(), Self::layout_hash())?;
        snap.check_type(&region.describe(), baozi_shm::TypeTag::of::<T>())?;
        if snap.total_size != Self::total_len() as u64 {
            return Err(baozi_shm::ShmError::Truncated {
                name: region.describe(),
                size: snap.total_size,
                needed: Self::total_len() as u64,
            }
            .into());
        }
        Ok(ShmMutex {
            region,
            _value: PhantomData,
        })
    }

    fn build(region: Region, value: T) -> Result<Self, SyncError> {
        assert!(
            std::mem::align_of::<T>() <= CACHE_LINE,
            "ShmMutex<T>: T is over-aligned"
        );
        let header = region.header()?;
        header.begin(
            ObjectKind::SYNC,
            Self::total_len() as u64,
            Self::layout_hash(),
            std::process::id(),
        );
        header.set_identity(region.id(), Some(baozi_shm::TypeTag::of::<T>()));
        // SAFETY: 1. LOCK_AT..LOCK_AT+size and VALUE_AT..VALUE_AT+size lie inside the region
        // (total_len) and are aligned (CACHE_LINE multiples, T not over-aligned);
        // 2. the region is fresh and unpublished, so nobody else touches these bytes yet.
        unsafe {
            RawRobustMutex::init(region.as_ptr().add(LOCK_AT).cast())?;
            region.as_ptr().add(VALUE_AT).cast::<T>().write(value);
        }
        header.publish();
        region.set_unmap_check(crate::object::keep_while_held);
        Ok(ShmMutex {
            region,
            _value: PhantomData,
        })
    }

    fn raw(&self) -> &RawRobustMutex {
        self.region
            .get(Offset::new(LOCK_AT as u64))
            .expect("lock is inside the checked region")
    }

    fn value_cell(&self) -> *mut T {
        // In bounds: build/open checked the region is total_len() long.
        self.region.as_ptr().wrapping_add(VALUE_AT).cast::<T>()
    }

    fn guard(&self, acquired: Acquired) -> Result<ShmMutexGuard<'_, T>, LockError<'_, T>> {
        let guard = ShmMutexGuard {
            raw: self.raw(),
            value: self.value_cell(),
            consistent: acquired == Acquired::Clean,
            _not_send: PhantomData,
        };
        match acquired {
            Acquired::Clean => Ok(guard),
            Acquired::OwnerDied => Err(LockError::OwnerDied(guard)),
        }
    }

    /// Locks, waiting as long as it takes.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (with the guard) when the previous holder died; otherwise
    /// [`LockError::Sync`] with [`SyncError::Unrecoverable`] or [`SyncError::Io`].
    pub fn lock(&self) -> Result<ShmMutexGuard<'_, T>, LockError<'_, T>> {
        let acquired = self.raw().lock(None).map_err(LockError::Sync)?;
        self.guard(acquired)
    }

    /// Locks, waiting at most `timeout` (on `CLOCK_MONOTONIC`).
    ///
    /// # Errors
    /// As [`lock`](Self::lock), plus [`SyncError::Timeout`].
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ShmMutexGuard<'_, T>, LockError<'_, T>> {
        let acquired = self
            .raw()
            .lock(Some(Deadline::after(timeout)))
            .map_err(LockError::Sync)?;
        self.guard(acquired)
    }

    /// Locks only if the lock is free now; `Ok(None)` if it is held.
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    pub fn try_lock(&self) -> Result<Option<ShmMutexGuard<'_, T>>, LockError<'_, T>> {
        match self.raw().try_lock().map_err(LockError::Sync)? {
            None => Ok(None),
            Some(a) => self.guard(a).map(Some),
        }
    }

    /// The region holding the mutex.
    pub fn region(&self) -> &Region {
        &self.region
    }
}

/// Why [`ShmMutex::lock`] did not simply return a guard.
pub enum LockError<'a, T: Pod> {
    /// The lock was acquired, but its previous holder died holding it: the value may be half
    /// updated. Repair it, then [`mark_consistent`](ShmMutexGuard::mark_consistent).
    OwnerDied(ShmMutexGuard<'a, T>),
    /// The lock was not acquired.
    Sync(SyncError),
}

impl<T: Pod> fmt::Debug for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::Sync(e) => f.debug_tuple("Sync").field(e).finish(),
        }
    }
}

impl<T: Pod> fmt::Display for LockError<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(_) => {
                f.write_str("the previous holder died holding the lock; repair and mark consistent")
            }
            LockError::Sync(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<T: Pod> std::error::Error for LockError<'_, T> {}

/// Holds a [`ShmMutex`] locked; unlocks on drop. Not `Send`: the locking thread must unlock.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ShmMutexGuard<'a, T: Pod> {
    raw: &'a RawRobustMutex,
    value: *mut T,
    consistent: bool,
    _not_send: PhantomData<(*const (), &'a UnsafeCell<T>)>,
}

impl<T: Pod> ShmMutexGuard<'_, T> {
    /// Declares the value repaired after [`LockError::OwnerDied`]. Harmless otherwise.
    pub fn mark_consistent(&mut self) {
        if !self.consistent {
            // SAFETY: we hold the lock, acquired with OwnerDied (else consistent would be true).
            unsafe { self.raw.mark_consistent() };
            self.consistent = true;
        }
    }
}

impl<T: Pod> Deref for ShmMutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the pointer is in bounds and aligned (ShmMutex invariant), and we hold the lock,
        // so no other guard aliases the value.
        unsafe { &*self.value }
    }
}

impl<T: Pod> DerefMut for ShmMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref; &mut self makes this the only reference through this guard.
        unsafe { &mut *self.value }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ShmMutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ShmMutexGuard").field(&**self).finish()
    }
}

impl<T: Pod> Drop for ShmMutexGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: a guard exists only while this thread holds the lock. If it was never marked
        // consistent after OwnerDied, glibc makes the mutex ENOTRECOVERABLE: that is the contract.
        unsafe { self.raw.unlock() }
    }
}
