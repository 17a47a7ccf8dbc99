//! [`Semaphore`] and [`BoundedSemaphore`]: Python's counting semaphores, lock-free over one
//! count word and a [`WaitWord`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use baozi_shm::{Offset, Region, ShmSafe, CACHE_LINE};

use crate::backoff::SpinPolicy;
use crate::deadline::Deadline;
use crate::error::SyncError;
use crate::object::{self, Primitive, BODY_AT};
use crate::waitword::WaitWord;

/// Distinguishes a `Semaphore` from the other sync objects in the layout checksum.
const SUBKIND_SEMAPHORE: u64 = 4;
/// Distinguishes a `BoundedSemaphore` from the other sync objects in the layout checksum.
const SUBKIND_BOUNDED_SEMAPHORE: u64 = 5;

fn layout_facts() -> [u64; 4] {
    let [s, a] = object::size_align::<Count>();
    let [ws, wa] = object::size_align::<WaitWord>();
    [s, a, ws, wa]
}

pub(crate) static SEMAPHORE: Primitive = Primitive {
    subkind: SUBKIND_SEMAPHORE,
    name: "semaphore",
    layout_facts,
};

pub(crate) static BOUNDED_SEMAPHORE: Primitive = Primitive {
    subkind: SUBKIND_BOUNDED_SEMAPHORE,
    name: "bounded semaphore",
    layout_facts,
};

/// The count and its limit, on the first line of the body.
///
/// # State
/// | field   | meaning                                                  | written by          |
/// |---------|----------------------------------------------------------|---------------------|
/// | `value` | units available; changed only by compare-and-swap        | acquirers, releasers |
/// | `limit` | the highest `value` may reach; fixed at creation         | the creator         |
///
/// Every operation is one CAS on `value` (the commit point), so there is no lock to die
/// holding: a process killed before its CAS changed nothing, one killed after it finished.
#[repr(C)]
#[derive(Debug)]
struct Count {
    value: AtomicU32,
    limit: AtomicU32,
}

// SAFETY: repr(C), two atomic u32s: every bit pattern valid (a garbage limit is refused on open),
// no pointers.
unsafe impl ShmSafe for Count {}

/// The count's line, then the wait word's line (they are written by different sides).
const COUNT_AT: usize = BODY_AT;
const WAIT_AT: usize = BODY_AT + CACHE_LINE;
const TOTAL_LEN: usize = BODY_AT + 2 * CACHE_LINE;

/// What `Semaphore` and `BoundedSemaphore` share.
#[derive(Clone)]
struct Core {
    region: Region,
    /// A process-private copy of the limit, checked on open.
    limit: u32,
    spin: SpinPolicy,
}

impl Core {
    fn build(region: Region, prim: &Primitive, value: u32, limit: u32) -> Result<Self, SyncError> {
        if value > limit {
            return Err(SyncError::InvalidParameter {
                what: "semaphore value",
                value: u64::from(value),
                reason: "must be at most Semaphore::MAX_VALUE (2^31 - 1)",
            });
        }
        let region = object::build(region, prim, TOTAL_LEN, |r| {
            let count: &Count = r.get(Offset::new(COUNT_AT as u64))?;
            // Relaxed: the header's publish is the release that makes these visible.
            count.value.store(value, Ordering::Relaxed);
            count.limit.store(limit, Ordering::Relaxed);
            Ok(())
        })?;
        Ok(Core {
            region,
            limit,
            spin: SpinPolicy::new(),
        })
    }

    fn open(src: impl object::Source, prim: &Primitive) -> Result<Self, SyncError> {
        let (region, snap) = object::open(src, prim)?;
        object::check_size(&region, &snap, TOTAL_LEN)?;
        let count: &Count = region.get(Offset::new(COUNT_AT as u64))?;
        let limit = count.limit.load(Ordering::Relaxed);
        if limit == 0 || limit > Semaphore::MAX_VALUE {
            return Err(baozi_shm::ShmError::Corrupt {
                name: region.describe(),
                detail: format!("semaphore limit {limit}"),
            }
            .into());
        }
        Ok(Core {
            region,
            limit,
            spin: SpinPolicy::new(),
        })
    }

    fn count(&self) -> &Count {
        self.region
            .get(Offset::new(COUNT_AT as u64))
            .expect("the count lies inside the checked region")
    }

    fn wait_word(&self) -> &WaitWord {
        self.region
            .get(Offset::new(WAIT_AT as u64))
            .expect("the wait word lies inside the checked region")
    }

    /// Takes one unit if there is one: the commit point of an acquire.
    #[inline]
    fn try_take(&self) -> bool {
        let value = &self.count().value;
        let mut v = value.load(Ordering::Relaxed);
        while v > 0 {
            // Acquire: what the releaser did before its release happens-before our use.
            match value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    #[inline]
    fn acquire(&self, deadline: Option<Deadline>) -> Result<(), SyncError> {
        if self.try_take() {
            return Ok(());
        }
        self.acquire_slow(deadline)
    }

    #[cold]
    fn acquire_slow(&self, deadline: Option<Deadline>) -> Result<(), SyncError> {
        if self.spin.spin_until(|| self.try_take()) {
            return Ok(());
        }
        let ww = self.wait_word();
        loop {
            // The sequence is read before the count: a release after our look at the count
            // bumps it, and then the wait returns at once.
            let seen = ww.seq();
            if self.try_take() {
                return Ok(());
            }
            ww.wait(seen, deadline)?;
        }
    }

    #[inline]
    fn release(&self, n: u32) -> Result<(), SyncError> {
        let value = &self.count().value;
        let mut v = value.load(Ordering::Relaxed);
        loop {
            let new = match v.checked_add(n) {
                Some(new) if new <= self.limit => new,
                _ => return Err(SyncError::ReleasedTooManyTimes { limit: self.limit }),
            };
            // Release: our critical section happens-before the next acquirer's use.
            match value.compare_exchange_weak(v, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        // A process killed here leaves waiters asleep at most one WAIT_SLICE.
        self.wait_word().notify();
        Ok(())
    }

    fn value(&self) -> u32 {
        self.count().value.load(Ordering::Relaxed)
    }
}

macro_rules! semaphore_api {
    ($ty:ident, $what:literal) => {
        impl $ty {
            /// Acquires one unit (decrements the value), waiting as long as it takes while it
            /// is 0. No syscall when a unit is free.
            ///
            /// # Errors
            /// [`SyncError::Io`] if a futex wait fails.
            #[inline]
            pub fn acquire(&self) -> Result<(), SyncError> {
                self.core.acquire(None)
            }

            /// Acquires one unit, waiting at most `timeout` (on `CLOCK_MONOTONIC`).
            ///
            /// # Errors
            /// [`SyncError::Timeout`] if none was free in time; [`SyncError::Io`].
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<(), SyncError> {
                self.core.acquire(Some(Deadline::after(timeout)))
            }

            /// Acquires one unit only if one is free now; whether it did.
            pub fn try_acquire(&self) -> bool {
                self.core.try_take()
            }

            /// Acquires one unit and returns a guard that releases it on drop (Python's
            /// `with sem:`).
            ///
            /// # Errors
            /// As [`acquire`](Self::acquire).
            pub fn access(&self) -> Result<SemaphoreGuard<'_>, SyncError> {
                self.core.acquire(None)?;
                Ok(SemaphoreGuard {
                    core: &self.core,
                    _not_send: PhantomData,
                })
            }

            /// The current value: units free now (Python's `get_value()`). Stale as soon as it
            /// is read, when others acquire and release.
            pub fn get_value(&self) -> u32 {
                self.core.value()
            }

            /// The region holding the semaphore.
            pub fn region(&self) -> &Region {
                &self.core.region
            }

            /// The region holding the semaphore, to [`persist`](Region::persist) a named one.
            pub fn region_mut(&mut self) -> &mut Region {
                &mut self.core.region
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct($what)
                    .field("region", &self.core.region.describe())
                    .field("value", &self.core.value())
                    .field("limit", &self.core.limit)
                    .finish()
            }
        }
    };
}

/// Python's `multiprocessing.Semaphore`: a counter of free units shared between processes.
///
/// [`acquire`](Self::acquire) takes a unit, waiting while there is none; [`release`](Self::release)
/// gives one back (any process may release, as in Python). There is no lock inside: each
/// operation is one compare-and-swap on a count word, and waiting is a futex on a sequence word
/// ([`WaitWord`]), so **no process can die holding anything internal**, and a waiter killed
/// while asleep costs the others nothing.
///
/// **A process killed while it holds a unit takes that unit with it**: the value stays one
/// lower for good, since nothing can tell a unit held by a dead process from one held by a slow
/// one (Python's semaphores behave the same). Where that matters, count what each process holds
/// somewhere it can be audited, or use a [`Lock`](crate::Lock) (robust to a holder's death).
///
/// ```
/// use baozi_process::Process;
/// use baozi_sync::Semaphore;
///
/// let sem = Semaphore::anonymous(1)?;
/// sem.acquire()?;
/// assert_eq!(sem.get_value(), 0);
/// let shared = sem.clone();
/// let other = Process::new(move || shared.release().unwrap()); // another process may release
/// other.start()?;
/// sem.acquire()?; // woken by the other process's release
/// assert_eq!(other.join()?, 0);
/// assert!(!sem.try_acquire());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    core: Core,
}

impl Semaphore {
    /// The highest value a semaphore may hold: 2^31 - 1, Python's `SEM_VALUE_MAX` on Linux.
    pub const MAX_VALUE: u32 = i32::MAX as u32;

    /// A semaphore with `value` free units, shared with children forked after this call and with
    /// any process its handle is given to.
    ///
    /// # Errors
    /// [`SyncError::InvalidParameter`] if `value` exceeds [`MAX_VALUE`](Self::MAX_VALUE);
    /// [`SyncError::Shm`] if the region cannot be mapped.
    pub fn new(value: u32) -> Result<Self, SyncError> {
        Self::anonymous(value)
    }

    /// The same as [`new`](Self::new) (Python's `Semaphore(value)`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn anonymous(value: u32) -> Result<Self, SyncError> {
        Self::check(value)?;
        Ok(Semaphore {
            core: Core::build(
                Region::anonymous(TOTAL_LEN)?,
                &SEMAPHORE,
                value,
                Self::MAX_VALUE,
            )?,
        })
    }

    /// Creates the named semaphore `/dev/shm/baozi-NAME` with `value` free units.
    ///
    /// # Errors
    /// As [`anonymous`](Self::anonymous), plus [`SyncError::Shm`] for an invalid or taken name.
    pub fn create(name: &str, value: u32) -> Result<Self, SyncError> {
        Self::check(value)?;
        Ok(Semaphore {
            core: Core::build(
                Region::create(name, TOTAL_LEN)?,
                &SEMAPHORE,
                value,
                Self::MAX_VALUE,
            )?,
        })
    }

    fn check(value: u32) -> Result<(), SyncError> {
        if value > Self::MAX_VALUE {
            return Err(SyncError::InvalidParameter {
                what: "semaphore value",
                value: u64::from(value),
                reason: "must be at most Semaphore::MAX_VALUE (2^31 - 1)",
            });
        }
        Ok(())
    }

    /// Opens a semaphore made by [`create`](Self::create).
    ///
    /// # Errors
    /// [`SyncError::WrongPrimitive`] if `name` is another primitive (a bounded semaphore
    /// included); [`SyncError::Shm`] with the precise cause otherwise.
    pub fn open(name: &str) -> Result<Self, SyncError> {
        Ok(Semaphore {
            core: Core::open(name, &SEMAPHORE)?,
        })
    }

    /// Attaches to the semaphore a serialised handle refers to (what `Deserialize` does with the
    /// `serde` feature): any process of the machine can, the ones that did not inherit it too.
    ///
    /// # Errors
    /// [`ShmError::Gone`](baozi_shm::ShmError::Gone) when no process holds it any more, and the
    /// checks of `open`.
    pub fn attach(r: &baozi_shm::RegionRef) -> Result<Self, SyncError> {
        Ok(Semaphore {
            core: Core::open(r, &SEMAPHORE)?,
        })
    }

    /// Gives one unit back (increments the value) and wakes a waiter, if any.
    ///
    /// # Errors
    /// [`SyncError::ReleasedTooManyTimes`] if the value is already [`MAX_VALUE`](Self::MAX_VALUE).
    #[inline]
    pub fn release(&self) -> Result<(), SyncError> {
        self.core.release(1)
    }

    /// Gives `n` units back at once (Python's `threading.Semaphore.release(n)`).
    ///
    /// # Errors
    /// [`SyncError::ReleasedTooManyTimes`] if the value would exceed
    /// [`MAX_VALUE`](Self::MAX_VALUE); nothing is released then.
    pub fn release_many(&self, n: u32) -> Result<(), SyncError> {
        self.core.release(n)
    }
}

semaphore_api!(Semaphore, "Semaphore");

/// Python's `multiprocessing.BoundedSemaphore`: a [`Semaphore`] whose value may never exceed
/// its initial value, so that releasing more than was acquired is caught
/// ([`SyncError::ReleasedTooManyTimes`], Python's "semaphore released too many times").
///
/// The same lock-free design and the same caveat as [`Semaphore`]: a process killed while it
/// holds a unit takes the unit with it.
///
/// ```
/// use baozi_sync::{BoundedSemaphore, SyncError};
///
/// let sem = BoundedSemaphore::anonymous(2)?;
/// {
///     let _unit = sem.access()?; // released on drop
///     assert_eq!(sem.get_value(), 1);
/// }
/// assert!(matches!(sem.release(), Err(SyncError::ReleasedTooManyTimes { limit: 2 })));
/// # Ok::<(), baozi_sync::SyncError>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    core: Core,
}

impl BoundedSemaphore {
    /// A bounded semaphore with `value` free units (and at most `value`), shared with children
    /// forked after this call.
    ///
    /// # Errors
    /// [`SyncError::InvalidParameter`] if `value` is 0 or exceeds
    /// [`Semaphore::MAX_VALUE`]; [`SyncError::Shm`] if the region cannot be mapped.
    pub fn new(value: u32) -> Result<Self, SyncError> {
        Self::anonymous(value)
    }

    /// The same as [`new`](Self::new) (Python's `BoundedSemaphore(value)`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn anonymous(value: u32) -> Result<Self, SyncError> {
        Self::check(value)?;
        Ok(BoundedSemaphore {
            core: Core::build(
                Region::anonymous(TOTAL_LEN)?,
                &BOUNDED_SEMAPHORE,
                value,
                value,
            )?,
        })
    }

    /// Creates the named bounded semaphore `/dev/shm/baozi-NAME` with `value` free units.
    ///
    /// # Errors
    /// As [`anonymous`](Self::anonymous), plus [`SyncError::Shm`] for an invalid or taken name.
    pub fn create(name: &str, value: u32) -> Result<Self, SyncError> {
        Self::check(value)?;
        Ok(BoundedSemaphore {
            core: Core::build(
                Region::create(name, TOTAL_LEN)?,
                &BOUNDED_SEMAPHORE,
                value,
                value,
            )?,
        })
    }

    fn check(value: u32) -> Result<(), SyncError> {
        if value == 0 || value > Semaphore::MAX_VALUE {
            return Err(SyncError::InvalidParameter {
                what: "bounded semaphore value",
                value: u64::from(value),
                reason: "must be between 1 and Semaphore::MAX_VALUE (2^31 - 1)",
            });
        }
        Ok(())
    }

    /// Opens a bounded semaphore made by [`create`](Self::create).
    ///
    /// # Errors
    /// [`SyncError::WrongPrimitive`] if `name` is another primitive (a plain semaphore
    /// included); [`SyncError::Shm`] with the precise cause otherwise.
    pub fn open(name: &str) -> Result<Self, SyncError> {
        Ok(BoundedSemaphore {
            core: Core::open(name, &BOUNDED_SEMAPHORE)?,
        })
    }

    /// Attaches to the semaphore a serialised handle refers to (what `Deserialize` does with the
    /// `serde` feature): any process of the machine can, the ones that did not inherit it too.
    ///
    /// # Errors
    /// [`ShmError::Gone`](baozi_shm::ShmError::Gone) when no process holds it any more, and the
    /// checks of `open`.
    pub fn attach(r: &baozi_shm::RegionRef) -> Result<Self, SyncError> {
        Ok(BoundedSemaphore {
            core: Core::open(r, &BOUNDED_SEMAPHORE)?,
        })
    }

    /// Gives one unit back and wakes a waiter, if any.
    ///
    /// # Errors
    /// [`SyncError::ReleasedTooManyTimes`] if the value is already the initial value.
    #[inline]
    pub fn release(&self) -> Result<(), SyncError> {
        self.core.release(1)
    }

    /// Gives `n` units back at once.
    ///
    /// # Errors
    /// [`SyncError::ReleasedTooManyTimes`] if the value would exceed the initial value; nothing
    /// is released then.
    pub fn release_many(&self, n: u32) -> Result<(), SyncError> {
        self.core.release(n)
    }

    /// The initial value, which the value may never exceed.
    pub fn limit(&self) -> u32 {
        self.core.limit
    }
}

semaphore_api!(BoundedSemaphore, "BoundedSemaphore");

/// Holds one unit of a [`Semaphore`] or [`BoundedSemaphore`] and releases it on drop. Not
/// `Send`, like the lock guards (a unit is usually tied to the work of one thread).
#[must_use = "the permit is released as soon as the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    core: &'a Core,
    _not_send: PhantomData<*const ()>,
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SemaphoreGuard { .. }")
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Cannot exceed the limit: this guard took the unit it gives back (unless someone else
        // over-released meanwhile, which their own release call reported). Drop must not panic.
        let _ = self.core.release(1);
    }
}
