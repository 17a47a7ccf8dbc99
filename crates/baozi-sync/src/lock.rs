//! [`Lock`]: Python's `multiprocessing.Lock` over a robust mutex, and the owned-lock core that
//! [`RLock`](crate::RLock) and [`Condition`](crate::Condition) share.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use baozi_shm::{Offset, Region, ShmSafe, CACHE_LINE};

use crate::deadline::Deadline;
use crate::error::{AcquireError, SyncError};
use crate::object::{self, Primitive, BODY_AT};
use crate::raw_mutex::{Acquired, RawRobustMutex};
use crate::sys;

/// A robust mutex with its holder and recursion depth: the core of `Lock`, `RLock` and the
/// lock of a `Condition`.
///
/// # State
/// | field          | meaning                                               | written by            |
/// |----------------|-------------------------------------------------------|-----------------------|
/// | `mutex`        | robust, process-shared pthread mutex                  | glibc, the kernel     |
/// | `owner`        | `(pid << 32) \| tid` of the holder; 0 when free       | the holder only       |
/// | `depth`        | recursion depth of the holder (1 for a `Lock`)        | the holder only       |
/// | `needs_repair` | 1 from an `OwnerDied` acquisition to `mark_consistent` | the holder only       |
///
/// Every field but `mutex` is written only while the mutex is held, and fully rewritten by each
/// acquisition from scratch, so a holder killed between any two stores leaves nothing the next
/// acquirer (told [`Acquired::OwnerDied`]) does not overwrite. "Is it mine?" needs both `owner`
/// and the TID in the mutex's own lock word to match the caller: the lock word is cleared by the
/// kernel when its holder dies, so a thread (or process) that reuses a dead holder's id is never
/// mistaken for the holder.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct OwnedLock {
    mutex: RawRobustMutex,
    owner: AtomicU64,
    depth: AtomicU64,
    needs_repair: AtomicU32,
    _reserved: AtomicU32,
}

// SAFETY: repr(C) of a RawRobustMutex (ShmSafe) and atomic integers: fixed layout, every bit
// pattern valid (garbage owner/depth words only make "is it mine" false), no pointers.
unsafe impl ShmSafe for OwnedLock {}

impl OwnedLock {
    /// Initialises the mutex in place; the other fields are the region's zeros.
    ///
    /// # Safety
    /// `this` is inside a fresh, unpublished, zero-filled region, aligned, and valid for writes.
    pub(crate) unsafe fn init(this: *mut Self) -> Result<(), SyncError> {
        // SAFETY: the caller's promise; `mutex` is the first field of a repr(C) struct.
        unsafe { RawRobustMutex::init(this.cast::<RawRobustMutex>()) }
    }

    /// Whether the calling thread (`me` from [`sys::thread_identity`]) holds the lock.
    #[inline]
    fn held_by(&self, me: u64) -> bool {
        // Relaxed suffices: only the holder writes its own id into `owner`, and it clears it
        // before unlocking, so by coherence a thread reads its own id only while it holds it.
        self.owner.load(Ordering::Relaxed) == me && self.mutex.is_held_by(me as u32)
    }

    /// Whether the calling thread holds the lock.
    pub(crate) fn is_owned(&self) -> bool {
        self.held_by(sys::thread_identity())
    }

    /// The calling thread's recursion depth: 0 unless it holds the lock.
    pub(crate) fn depth(&self) -> u64 {
        if self.is_owned() {
            self.depth.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Whether any thread of any process holds the lock now (a snapshot). A holder that died
    /// does not count: the kernel has freed the lock word for the next acquirer.
    pub(crate) fn locked(&self) -> bool {
        self.mutex.holder_tid() != 0
    }

    /// Who holds the lock now, as far as can be told without taking it (a snapshot).
    pub(crate) fn holder(&self) -> Option<Holder> {
        let tid = self.mutex.holder_tid();
        if tid == 0 {
            return None;
        }
        // `owner` and `depth` are written by the holder right after it took the lock word:
        // they are its own only when `owner`'s tid matches the word's (else it is between
        // the two, or they are a previous holder's).
        let owner = self.owner.load(Ordering::Relaxed);
        let known = owner as u32 == tid;
        Some(Holder {
            pid: known.then_some((owner >> 32) as u32),
            tid,
            depth: known.then(|| self.depth.load(Ordering::Relaxed)),
        })
    }

    /// Records a fresh acquisition by `me` with recursion depth `depth`.
    fn took(&self, me: u64, acquired: Acquired, depth: u64) {
        self.owner.store(me, Ordering::Relaxed);
        self.depth.store(depth, Ordering::Relaxed);
        self.needs_repair.store(
            u32::from(acquired == Acquired::OwnerDied),
            Ordering::Relaxed,
        );
    }

    /// Takes the lock (one level deeper if `recursive` and already held by the caller), waiting
    /// until `deadline` (`None`: for ever).
    #[inline]
    pub(crate) fn acquire(
        &self,
        deadline: Option<Deadline>,
        recursive: bool,
    ) -> Result<Acquired, SyncError> {
        let me = sys::thread_identity();
        if recursive && self.held_by(me) {
            self.depth.fetch_add(1, Ordering::Relaxed);
            return Ok(Acquired::Clean);
        }
        let acquired = self.mutex.lock(deadline)?;
        self.took(me, acquired, 1);
        Ok(acquired)
    }

    /// Takes the lock if it is free now (or one level deeper, as in `acquire`).
    #[inline]
    pub(crate) fn try_acquire(&self, recursive: bool) -> Result<Option<Acquired>, SyncError> {
        let me = sys::thread_identity();
        if recursive && self.held_by(me) {
            self.depth.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(Acquired::Clean));
        }
        let acquired = self.mutex.try_lock()?;
        if let Some(a) = acquired {
            self.took(me, a, 1);
        }
        Ok(acquired)
    }

    /// Releases one level; unlocks at the outermost.
    #[inline]
    pub(crate) fn release(&self, what: &'static str) -> Result<(), SyncError> {
        let me = sys::thread_identity();
        if !self.held_by(me) {
            return Err(SyncError::NotOwner { what });
        }
        let depth = self.depth.load(Ordering::Relaxed);
        if depth > 1 {
            self.depth.store(depth - 1, Ordering::Relaxed);
            return Ok(());
        }
        self.unlock_fully();
        Ok(())
    }

    /// Clears the holder fields and unlocks. The caller holds the lock.
    fn unlock_fully(&self) {
        self.depth.store(0, Ordering::Relaxed);
        // Relaxed: the unlock below is a release, and nobody reads `owner` to synchronise.
        self.owner.store(0, Ordering::Relaxed);
        // SAFETY: the caller holds the lock (checked by held_by in every caller). If it was
        // acquired OwnerDied and never marked consistent, glibc makes the mutex unrecoverable:
        // that is the documented contract.
        unsafe { self.mutex.unlock() }
    }

    /// Releases every level (for `Condition::wait`); returns the depth to restore.
    pub(crate) fn release_all(&self, what: &'static str) -> Result<u64, SyncError> {
        let me = sys::thread_identity();
        if !self.held_by(me) {
            return Err(SyncError::NotOwner { what });
        }
        let depth = self.depth.load(Ordering::Relaxed).max(1);
        self.unlock_fully();
        Ok(depth)
    }

    /// Takes the lock back after `release_all`, restoring `depth`; waits as long as it takes.
    pub(crate) fn reacquire(&self, depth: u64) -> Result<Acquired, SyncError> {
        let me = sys::thread_identity();
        let acquired = self.mutex.lock(None)?;
        self.took(me, acquired, depth);
        Ok(acquired)
    }

    /// Declares the protected state repaired after an `OwnerDied` acquisition; harmless
    /// otherwise.
    pub(crate) fn mark_consistent(&self, what: &'static str) -> Result<(), SyncError> {
        if !self.is_owned() {
            return Err(SyncError::NotOwner { what });
        }
        if self.needs_repair.swap(0, Ordering::Relaxed) != 0 {
            // SAFETY: we hold the lock, and needs_repair says it was acquired with EOWNERDEAD
            // and not marked since (each acquisition rewrites the flag).
            unsafe { self.mutex.mark_consistent() };
        }
        Ok(())
    }
}

/// The holder of a lock as [`OwnedLock::holder`] sees it, for `Debug`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    /// Its pid, when its holder fields are written (`None` for an instant after it locked).
    pub(crate) pid: Option<u32>,
    /// Its kernel thread id, from the lock word.
    pub(crate) tid: u32,
    /// Its recursion depth, when known.
    pub(crate) depth: Option<u64>,
}

impl Holder {
    /// `Debug` fields for a lock's holder: `holder_pid` (and `holder_tid`), and `depth` when
    /// `with_depth`; the caller's own holding is said by the lock's other fields.
    pub(crate) fn describe(
        holder: Option<Holder>,
        d: &mut fmt::DebugStruct<'_, '_>,
        with_depth: bool,
    ) {
        let Some(h) = holder else { return };
        match h.pid {
            Some(pid) => d.field("holder_pid", &pid),
            None => d.field("holder_pid", &"(being recorded)"),
        };
        d.field("holder_tid", &h.tid);
        if with_depth {
            if let Some(depth) = h.depth {
                d.field("holder_depth", &depth);
            }
        }
    }
}

/// Distinguishes a `Lock` from the other [`ObjectKind::SYNC`](baozi_shm::ObjectKind::SYNC)
/// objects in the layout checksum.
const SUBKIND_LOCK: u64 = 2;

pub(crate) static PRIMITIVE: Primitive = Primitive {
    subkind: SUBKIND_LOCK,
    name: "lock",
    layout_facts: || {
        let [s, a] = object::size_align::<OwnedLock>();
        [s, a, 0, 0]
    },
};

/// Bytes a lock occupies: the header line and one line for the [`OwnedLock`].
pub(crate) const OWNED_LOCK_LEN: usize = BODY_AT + CACHE_LINE;

const _: () = assert!(std::mem::size_of::<OwnedLock>() <= CACHE_LINE);

/// Builds an `OwnedLock` at [`BODY_AT`] of a fresh region.
pub(crate) fn init_owned_lock(region: &Region) -> Result<(), SyncError> {
    region.check_range(
        BODY_AT as u64,
        std::mem::size_of::<OwnedLock>() as u64,
        std::mem::align_of::<OwnedLock>(),
    )?;
    // SAFETY: in bounds and aligned (checked above), in a fresh zero-filled region nobody else
    // sees before publish.
    unsafe { OwnedLock::init(region.as_ptr().add(BODY_AT).cast()) }
}

/// The `OwnedLock` at [`BODY_AT`].
pub(crate) fn owned_lock(region: &Region) -> &OwnedLock {
    region
        .get(Offset::new(BODY_AT as u64))
        .expect("the lock lies inside the checked region")
}

/// Python's `multiprocessing.Lock`: a non-recursive lock shared between processes, robust to a
/// holder's death.
///
/// Made with [`anonymous`](Self::anonymous) (shared with children forked afterwards) or
/// [`create`](Self::create) / [`open`](Self::open) (by name). Acquire and release with
/// [`acquire`](Self::acquire) / [`release`](Self::release) as in Python, or hold a
/// [`LockGuard`] from [`lock`](Self::lock) that releases on drop.
///
/// * **A holder killed (even by `kill -9`)** does not wedge the lock: the next acquirer gets it,
///   and is told — [`Acquired::OwnerDied`] from `acquire`, [`AcquireError::OwnerDied`] (with the
///   guard) from `lock` — exactly like [`ShmMutex`](crate::ShmMutex). What the lock protects may
///   be half updated: repair it, then call [`mark_consistent`](Self::mark_consistent) (or
///   [`LockGuard::mark_consistent`]). Releasing without marking makes the lock unrecoverable for
///   everyone ([`SyncError::Unrecoverable`]), as POSIX prescribes.
/// * **Ownership**: only the thread that acquired the lock may release it (unlike Python, whose
///   `multiprocessing.Lock` is a semaphore any process may release). Releasing a lock this
///   thread does not hold is [`SyncError::NotOwner`], Python's "release unlocked lock".
/// * Acquiring a lock this thread already holds blocks, as in Python: use [`RLock`](crate::RLock)
///   for recursion. Timeouts run on `CLOCK_MONOTONIC`; uncontended acquire and release are one
///   compare-and-swap each, with no syscall.
///
/// ```
/// use baozi_process::Process;
/// use baozi_sync::{Acquired, Lock};
///
/// let lock = Lock::anonymous()?;
/// let shared = lock.clone();
/// let holder = Process::new(move || {
///     let _ = shared.acquire(); // and the process ends holding the lock
/// });
/// holder.start()?;
/// holder.join()?;
/// assert_eq!(lock.acquire()?, Acquired::OwnerDied); // recovered, and told
/// lock.mark_consistent()?; // nothing to repair here
/// lock.release()?;
/// {
///     let _guard = lock.lock().unwrap(); // the RAII form
///     assert!(lock.try_acquire()?.is_none());
/// }
/// assert!(lock.release().is_err()); // not held: Python's "release unlocked lock"
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    region: Region,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = self.core();
        let mut d = f.debug_struct("Lock");
        d.field("region", &self.region.describe())
            .field("locked", &core.locked())
            .field("owned_by_caller", &core.is_owned());
        Holder::describe(core.holder(), &mut d, false);
        d.finish()
    }
}

impl Lock {
    const WHAT: &'static str = "lock";

    fn build(region: Region) -> Result<Self, SyncError> {
        let region = object::build(region, &PRIMITIVE, OWNED_LOCK_LEN, init_owned_lock)?;
        region.set_unmap_check(object::keep_while_held);
        Ok(Lock { region })
    }

    /// A new, unlocked lock, shared with children forked after this call and with any process its
    /// handle is given to.
    ///
    /// # Errors
    /// [`SyncError::Shm`] if the region cannot be mapped; [`SyncError::Io`] if glibc refuses the
    /// mutex attributes.
    pub fn new() -> Result<Self, SyncError> {
        Self::anonymous()
    }

    /// The same as [`new`](Self::new) (Python's `Lock()`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn anonymous() -> Result<Self, SyncError> {
        Self::build(Region::anonymous(OWNED_LOCK_LEN)?)
    }

    /// Creates the named lock `/dev/shm/baozi-NAME`, unlocked. The name is removed when this
    /// handle is dropped, unless [`Region::persist`] is called on [`region_mut`](Self::region_mut).
    ///
    /// # Errors
    /// [`SyncError::Shm`]: invalid name, already exists, permission denied.
    pub fn create(name: &str) -> Result<Self, SyncError> {
        Self::build(Region::create(name, OWNED_LOCK_LEN)?)
    }

    /// Opens a lock made by [`create`](Self::create).
    ///
    /// # Errors
    /// [`SyncError::WrongPrimitive`] if `name` is another primitive (an event, say);
    /// [`SyncError::Shm`] with the precise cause otherwise (not found, foreign object, wrong
    /// version, not ready, ...).
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
        Ok(Lock { region })
    }

    fn core(&self) -> &OwnedLock {
        owned_lock(&self.region)
    }

    /// Acquires the lock, waiting as long as it takes (Python's `acquire()`).
    ///
    /// Returns [`Acquired::OwnerDied`] when the previous holder died holding it: repair what it
    /// protects, then [`mark_consistent`](Self::mark_consistent), before releasing.
    ///
    /// # Errors
    /// [`SyncError::Unrecoverable`], [`SyncError::Io`].
    #[inline]
    pub fn acquire(&self) -> Result<Acquired, SyncError> {
        self.core().acquire(None, false)
    }

    /// Acquires the lock, waiting at most `timeout` (Python's `acquire(timeout=...)`).
    ///
    /// # Errors
    /// [`SyncError::Timeout`] when it stayed held; otherwise as [`acquire`](Self::acquire).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<Acquired, SyncError> {
        self.core().acquire(Some(Deadline::after(timeout)), false)
    }

    /// Acquires the lock only if it is free now (Python's `acquire(False)`); `Ok(None)` if held.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    #[inline]
    pub fn try_acquire(&self) -> Result<Option<Acquired>, SyncError> {
        self.core().try_acquire(false)
    }

    /// Releases the lock.
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

    /// Whether the lock is held now, by any thread of any process (Python 3.14's
    /// `Lock.locked()`). A snapshot, for monitoring and tests: it may change at once. A holder
    /// killed while holding it does not count (the next acquirer gets it, told
    /// [`Acquired::OwnerDied`]). Its `Debug` names the holder's pid.
    ///
    /// ```
    /// use baozi_sync::Lock;
    ///
    /// let lock = Lock::anonymous()?;
    /// assert!(!lock.locked());
    /// let guard = lock.lock().unwrap();
    /// assert!(lock.locked());
    /// assert!(format!("{lock:?}").contains(&format!("holder_pid: {}", std::process::id())));
    /// drop(guard);
    /// assert!(!lock.locked());
    /// # Ok::<(), baozi_sync::SyncError>(())
    /// ```
    pub fn locked(&self) -> bool {
        self.core().locked()
    }

    fn guard(&self, acquired: Acquired) -> Result<LockGuard<'_>, AcquireError<LockGuard<'_>>> {
        let guard = LockGuard {
            lock: self.core(),
            _not_send: PhantomData,
        };
        match acquired {
            Acquired::Clean => Ok(guard),
            Acquired::OwnerDied => Err(AcquireError::OwnerDied(guard)),
        }
    }

    /// Acquires the lock and returns a guard that releases it on drop (Python's `with lock:`).
    ///
    /// # Errors
    /// [`AcquireError::OwnerDied`] (with the guard) when the previous holder died; otherwise
    /// [`AcquireError::Sync`] with [`SyncError::Unrecoverable`] or [`SyncError::Io`].
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

    /// [`lock`](Self::lock) only if the lock is free now; `Ok(None)` if it is held.
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

/// Holds a [`Lock`] (or an [`RLock`](crate::RLock) level) and releases it on drop. Not `Send`:
/// the acquiring thread must release.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a OwnedLock,
    _not_send: PhantomData<*const ()>,
}

impl LockGuard<'_> {
    /// Declares what the lock protects repaired after [`AcquireError::OwnerDied`]. Harmless
    /// otherwise.
    pub fn mark_consistent(&mut self) {
        // Cannot fail: a guard exists only while this thread holds the lock.
        let _ = self.lock.mark_consistent("lock");
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard { .. }")
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // A guard exists only while this thread holds the lock, so this cannot fail (and Drop
        // must not panic).
        let _ = self.lock.release("lock");
    }
}

/// Builds a guard over `lock` for the other primitives in the crate.
pub(crate) fn guard_for(lock: &OwnedLock) -> LockGuard<'_> {
    LockGuard {
        lock,
        _not_send: PhantomData,
    }
}
