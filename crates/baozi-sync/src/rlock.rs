//! [`RLock`]: Python's `multiprocessing.RLock`, a recursive lock robust to a holder's death.

use std::fmt;
use std::time::Duration;

use baozi_shm::Region;

use crate::deadline::Deadline;
use crate::error::{AcquireError, SyncError};
use crate::lock::{
    guard_for, init_owned_lock, owned_lock, Holder, LockGuard, OwnedLock, OWNED_LOCK_LEN,
};
use crate::object::{self, Primitive};
use crate::raw_mutex::Acquired;

/// Distinguishes an `RLock` from the other sync objects in the layout checksum.
const SUBKIND_RLOCK: u64 = 3;

pub(crate) static PRIMITIVE: Primitive = Primitive {
    subkind: SUBKIND_RLOCK,
    name: "rlock",
    layout_facts: || {
        let [s, a] = object::size_align::<OwnedLock>();
        [s, a, 0, 0]
    },
};

/// Python's `multiprocessing.RLock`: a recursive lock shared between processes, robust to a
/// holder's death.
///
/// The owner is a thread of a process (its pid and thread id). It may acquire again while it
/// holds the lock; each acquisition needs its release, and the lock is free after the last.
/// Only the owner may release: anyone else gets [`SyncError::NotOwner`] (Python's "cannot
/// release un-acquired lock").
///
/// When a holder dies (even by `kill -9`) at any recursion depth, the next acquirer gets the
/// lock at depth 1 and is told, as with [`Lock`](crate::Lock): [`Acquired::OwnerDied`] from
/// [`acquire`](Self::acquire), [`AcquireError::OwnerDied`] from [`lock`](Self::lock). Repair,
/// then [`mark_consistent`](Self::mark_consistent) before the last release, or the lock becomes
/// unrecoverable. A process that reuses a dead holder's pid and thread id is never taken for the
/// holder: ownership is also checked against the kernel-maintained owner in the mutex itself.
///
/// ```
/// use baozi_process::Process;
/// use baozi_sync::{RLock, SyncError};
///
/// let rlock = RLock::anonymous()?;
/// let _ = rlock.acquire()?;
/// let _ = rlock.acquire()?; // recursion: no deadlock
/// assert_eq!(rlock.depth(), 2);
/// let shared = rlock.clone();
/// let other = Process::new(move || {
///     // Another process is not the owner, and the lock is held.
///     let ok = matches!(shared.release(), Err(SyncError::NotOwner { .. }))
///         && shared.try_acquire().unwrap().is_none();
///     if ok { 0 } else { 1 }
/// });
/// other.start()?;
/// assert_eq!(other.join()?, 0);
/// rlock.release()?;
/// rlock.release()?;
/// assert!(!rlock.is_owned());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    region: Region,
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = self.core();
        let mut d = f.debug_struct("RLock");
        d.field("region", &self.region.describe())
            .field("locked", &core.locked())
            .field("caller_depth", &core.depth());
        Holder::describe(core.holder(), &mut d, true);
        d.finish()
    }
}

impl RLock {
    const WHAT: &'static str = "rlock";

    fn build(region: Region) -> Result<Self, SyncError> {
        let region = object::build(region, &PRIMITIVE, OWNED_LOCK_LEN, init_owned_lock)?;
        region.set_unmap_check(object::keep_while_held);
        Ok(RLock { region })
    }

    /// A new, unlocked recursive lock, shared with children forked after this call and with any
    /// process its handle is given to.
    ///
    /// # Errors
    /// [`SyncError::Shm`] if the region cannot be mapped; [`SyncError::Io`] if glibc refuses the
    /// mutex attributes.
    pub fn new() -> Result<Self, SyncError> {
        Self::anonymous()
    }

    /// The same as [`new`](Self::new) (Python's `RLock()`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn anonymous() -> Result<Self, SyncError> {
        Self::build(Region::anonymous(OWNED_LOCK_LEN)?)
    }

    /// Creates the named recursive lock `/dev/shm/baozi-NAME`, unlocked.
    ///
    /// # Errors
    /// [`SyncError::Shm`]: invalid name, already exists, permission denied.
    pub fn create(name: &str) -> Result<Self, SyncError> {
        Self::build(Region::create(name, OWNED_LOCK_LEN)?)
    }

    /// Opens a recursive lock made by [`create`](Self::create).
    ///
    /// # Errors
    /// [`SyncError::WrongPrimitive`] if `name` is another primitive; [`SyncError::Shm`] with the
    /// precise cause otherwise.
    pub fn open(name: &str) -> Result<Self, SyncError> {
        Self::open_from(name)
    }

    /// Attaches to the lock a serialised handle refers to (what `Deserialize` does with the
    /// `serde` feature): any process of the machine can, the ones that did not inherit it too.
    ///
    /// # Errors
    /// [`ShmError::Gone`](baozi_shm::ShmError::Gone) when no process holds it any more, and the
    /// checks of `open`.
    pub fn attach(r: &baozi_shm::RegionRef) -> Result<Self, SyncError> {
        Self::open_from(r)
    }

    fn open_from(src: impl object::Source) -> Result<Self, SyncError> {
        let (region, snap) = object::open(src, &PRIMITIVE)?;
        region.set_unmap_check(object::keep_while_held);
        object::check_size(&region, &snap, OWNED_LOCK_LEN)?;
        Ok(RLock { region })
    }

    fn core(&self) -> &OwnedLock {
        owned_lock(&self.region)
    }

    /// Acquires the lock (one level deeper if the calling thread holds it), waiting as long as
    /// it takes.
    ///
    /// Returns [`Acquired::OwnerDied`] when the previous holder died holding it: repair, then
    /// [`mark_consistent`](Self::mark_consistent).
    ///
    /// # Errors
    /// [`SyncError::Unrecoverable`], [`SyncError::Io`].
    #[inline]
    pub fn acquire(&self) -> Result<Acquired, SyncError> {
        self.core().acquire(None, true)
    }

    /// [`acquire`](Self::acquire), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`SyncError::Timeout`]; otherwise as [`acquire`](Self::acquire).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Acquired, SyncError> {
        self.core().acquire(Some(Deadline::after(timeout)), true)
    }

    /// [`acquire`](Self::acquire) only if the lock is free now or held by the calling thread;
    /// `Ok(None)` if another thread holds it.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    #[inline]
    pub fn try_acquire(&self) -> Result<Option<Acquired>, SyncError> {
        self.core().try_acquire(true)
    }

    /// Releases one level; the lock is free after the last.
    ///
    /// # Errors
    /// [`SyncError::NotOwner`] if the calling thread does not hold it.
    #[inline]
    pub fn release(&self) -> Result<(), SyncError> {
        self.core().release(Self::WHAT)
    }

    /// Declares what the lock protects repaired after [`Acquired::OwnerDied`]. Harmless after a
    /// clean acquisition.
    ///
    /// # Errors
    /// [`SyncError::NotOwner`] if the calling thread does not hold the lock.
    pub fn mark_consistent(&self) -> Result<(), SyncError> {
        self.core().mark_consistent(Self::WHAT)
    }

    /// Whether the calling thread holds the lock.
    pub fn is_owned(&self) -> bool {
        self.core().is_owned()
    }

    /// How many times the calling thread holds the lock (0: not at all).
    pub fn depth(&self) -> u64 {
        self.core().depth()
    }

    /// Whether the lock is held now, at any depth, by any thread of any process (Python
    /// 3.14's `RLock.locked()`). A snapshot, as [`Lock::locked`](crate::Lock::locked). Its
    /// `Debug` names the holder's pid and depth.
    ///
    /// ```
    /// use baozi_sync::RLock;
    ///
    /// let rlock = RLock::anonymous()?;
    /// assert!(!rlock.locked());
    /// rlock.acquire()?;
    /// rlock.acquire()?;
    /// assert!(rlock.locked());
    /// assert!(format!("{rlock:?}").contains("holder_depth: 2"));
    /// rlock.release()?;
    /// rlock.release()?;
    /// assert!(!rlock.locked());
    /// # Ok::<(), baozi_sync::SyncError>(())
    /// ```
    pub fn locked(&self) -> bool {
        self.core().locked()
    }

    fn guard(&self, acquired: Acquired) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        let guard = guard_for(self.core());
        match acquired {
            Acquired::Clean => Ok(guard),
            Acquired::OwnerDied => Err(AcquireError::OwnerDied(guard)),
        }
    }

    /// Acquires one level and returns a guard that releases it on drop.
    ///
    /// # Errors
    /// [`AcquireError::OwnerDied`] (with the guard) when the previous holder died; otherwise
    /// [`AcquireError::Sync`].
    pub fn lock(&self) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        let acquired = self.acquire()?;
        self.guard(acquired)
    }

    /// [`lock`](Self::lock), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`lock`](Self::lock), plus [`SyncError::Timeout`].
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        let acquired = self.acquire_timeout(timeout)?;
        self.guard(acquired)
    }

    /// [`lock`](Self::lock) only if free now or held by the calling thread; `Ok(None)` if
    /// another thread holds it.
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    pub fn try_lock(&self) -> Result<Option<LockGuard<'_>>, AcquireError<LockGuard<'_>>> {
        match self.try_acquire()? {
            None => Ok(None),
            Some(a) => self.guard(a).map(Some),
        }
    }

    /// The region holding the lock.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The region holding the lock, to [`persist`](Region::persist) a named one.
    pub fn region_mut(&mut self) -> &mut Region {
        &mut self.region
    }
}
