//! [`Condition`]: Python's `multiprocessing.Condition` over its own recursive, robust lock, with
//! exact `notify(n)` that a killed waiter can neither swallow nor wedge.
//!
//! # Design
//!
//! A process-shared `pthread_cond_t` wedges when a waiter is killed (see `docs/DESIGN.md`), and
//! a bare futex sequence word can only wake everyone. So each waiter takes a *slot* for the
//! duration of its wait:
//!
//! ```text
//! 0            header
//! BODY_AT      OwnedLock          the condition's lock (robust, recursive)
//! + 1 line     Meta               WaitWord, max_waiters, next_ticket
//! + 2 lines    Slot × max_waiters { mutex: RawRobustMutex, state, ticket }
//! ```
//!
//! A waiter, holding the condition's lock, finds a `FREE` slot, **locks the slot's own robust
//! mutex**, and marks it `WAITING` with the next ticket (for FIFO order). It releases the
//! condition's lock and sleeps on the [`WaitWord`] until its slot reads `NOTIFIED`. Then it takes
//! the condition's lock back, frees the slot, and unlocks the slot's mutex.
//!
//! `notify(n)`, holding the condition's lock, marks the `n` oldest `WAITING` slots `NOTIFIED`
//! and bumps the wait word. Before it counts a slot, it `trylock`s the slot's mutex: `EBUSY`
//! means the waiter lives (it holds its slot's mutex for as long as it waits); `EOWNERDEAD`
//! means the kernel saw it die — the slot is freed and the notification goes to the next live
//! waiter instead. So a waiter killed while it waits never swallows a notification meant for the
//! living, and no pid is compared, so pid reuse cannot fool it.
//!
//! All slot changes happen under the condition's lock, except the kernel's marking of a dead
//! waiter's slot mutex. A notification can also be stranded: the notified waiter dies *after*
//! being marked and before taking the lock back. Each waiter, woken at least every
//! [`WAIT_SLICE`](crate::WAIT_SLICE), looks for a slot that stays `NOTIFIED` for longer than
//! that; it then takes the lock and runs the same sweep, which passes a dead waiter's
//! notification on (to itself, if it is the oldest). A sweep that is itself killed between
//! passing a notification on and freeing the dead slot passes it on again later: a spare
//! wake-up, never a lost one.
//!
//! | slot `state` | meaning                                       | slot mutex held by        |
//! |--------------|-----------------------------------------------|---------------------------|
//! | `FREE`       | unused                                        | nobody (or a dead thread) |
//! | `WAITING`    | a waiter sleeps in it, not yet notified       | the waiter                |
//! | `NOTIFIED`   | notified; the waiter has not taken it back yet | the waiter                |

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use baozi_shm::{Offset, Region, ShmSafe, CACHE_LINE};

use crate::deadline::Deadline;
use crate::error::{AcquireError, SyncError};
use crate::lock::{init_owned_lock, owned_lock, OwnedLock};
use crate::object::{self, Primitive, BODY_AT};
use crate::raw_mutex::{Acquired, RawRobustMutex};
use crate::sys;
use crate::waitword::{WaitWord, WAIT_SLICE};

/// Distinguishes a `Condition` from the other sync objects in the layout checksum.
const SUBKIND_CONDITION: u64 = 7;

pub(crate) static PRIMITIVE: Primitive = Primitive {
    subkind: SUBKIND_CONDITION,
    name: "condition",
    layout_facts: || {
        let [s, a] = object::size_align::<OwnedLock>();
        let [ss, sa] = object::size_align::<Slot>();
        // Meta's size is fixed by its fields; mixing it in as well keeps four facts.
        [s, a, ss, sa.max(std::mem::size_of::<Meta>() as u64)]
    },
};

/// The wait word and the slot bookkeeping, on the line after the lock.
#[repr(C)]
#[derive(Debug)]
struct Meta {
    /// Bumped by every notify (and by a sweep that passed a notification on).
    wait: WaitWord,
    /// How many slots follow; fixed at creation.
    max_waiters: AtomicU32,
    _reserved: AtomicU32,
    /// The next waiter's ticket; changed only under the condition's lock.
    next_ticket: AtomicU64,
}

// SAFETY: repr(C) of a WaitWord and atomics: every bit pattern valid (max_waiters is checked on
// open), no pointers.
unsafe impl ShmSafe for Meta {}

/// One waiter's place. See the module documentation for the states.
#[repr(C)]
#[derive(Debug)]
struct Slot {
    /// Held by the waiter for as long as it occupies the slot: its death is seen as EOWNERDEAD.
    mutex: RawRobustMutex,
    state: AtomicU32,
    _reserved: AtomicU32,
    /// Arrival order, for FIFO notification.
    ticket: AtomicU64,
}

// SAFETY: repr(C) of a RawRobustMutex (ShmSafe) and atomics: every bit pattern valid (an unknown
// state is treated as occupied and checked through the mutex), no pointers.
unsafe impl ShmSafe for Slot {}

const FREE: u32 = 0;
const WAITING: u32 = 1;
const NOTIFIED: u32 = 2;

const META_AT: usize = BODY_AT + CACHE_LINE;
const SLOTS_AT: usize = BODY_AT + 2 * CACHE_LINE;

const _: () = assert!(std::mem::size_of::<Meta>() <= CACHE_LINE);
const _: () = assert!(SLOTS_AT % std::mem::align_of::<Slot>() == 0);

fn total_len(max_waiters: u32) -> usize {
    SLOTS_AT + max_waiters as usize * std::mem::size_of::<Slot>()
}

/// How a wait on a [`Condition`] ended. The lock is held again in every case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a wait can take the lock back from a dead holder (Acquired::OwnerDied): repair and mark_consistent"]
pub struct Wakeup {
    /// What Python's `wait` / `wait_for` returns. For [`Condition::wait`] and
    /// [`Condition::wait_timeout`]: whether it was notified (`false`: the timeout passed first,
    /// or it returned early to report `OwnerDied`). For the `wait_for` forms: the predicate's
    /// last value.
    pub notified: bool,
    /// How the lock was taken back: [`Acquired::OwnerDied`] when the holder before us died
    /// holding it. Then what the lock protects may be half updated: repair it and call
    /// [`Condition::mark_consistent`] before releasing.
    pub acquired: Acquired,
}

impl Wakeup {
    /// Whether the lock was taken back from a holder that died holding it.
    pub fn owner_died(&self) -> bool {
        self.acquired == Acquired::OwnerDied
    }
}

/// Why the sleep part of a wait ended.
enum Woke {
    Notified,
    TimedOut,
    /// Another waiter's notification looks stranded (its waiter may be dead): sweep.
    Stranded,
    Failed(SyncError),
}

/// A slot seen `NOTIFIED` by another waiter: since when, and how long it may stay so before we
/// suspect its waiter died.
struct Suspect {
    slot: usize,
    ticket: u64,
    since_ns: u64,
    patience_ns: u64,
}

/// Python's `multiprocessing.Condition`: a lock plus wait/notify, shared between processes,
/// robust to the death of a holder or of a waiter.
///
/// The lock is the condition's own, recursive like Python's default (`RLock`): take it with
/// [`acquire`](Self::acquire) / [`release`](Self::release) or a [`ConditionGuard`] from
/// [`lock`](Self::lock). Holding it, [`wait`](Self::wait) releases it (all recursion levels),
/// sleeps until notified, and takes it back; [`notify`](Self::notify)`(n)` wakes at most `n`
/// waiters, oldest first, and [`notify_all`](Self::notify_all) every one. There are no spurious
/// wake-ups: `wait` returns when notified or timed out, as in Python.
///
/// * **A holder killed** (even by `kill -9`) is recovered as with [`Lock`](crate::Lock): the
///   next acquirer — or a waiter taking the lock back — gets [`Acquired::OwnerDied`] (in
///   [`Wakeup::acquired`] for waits), repairs, and calls [`mark_consistent`](Self::mark_consistent).
///   Releasing without marking (which `wait` does too) makes the lock unrecoverable.
/// * **A waiter killed while it waits** never swallows a notification and never blocks a
///   notifier: its slot is found dead through its robust mutex and the notification goes to the
///   next live waiter (see the module source for the design). A waiter killed *after* being
///   notified, before taking the lock back, has its notification passed on within about
///   [`WAIT_SLICE`](crate::WAIT_SLICE) by the other waiters.
/// * At most `max_waiters` threads (default [`DEFAULT_MAX_WAITERS`](Self::DEFAULT_MAX_WAITERS))
///   may wait at once; one more gets [`SyncError::TooManyWaiters`].
///
/// ```
/// use baozi_process::Process;
/// use baozi_shm::{Offset, Region};
/// use baozi_sync::Condition;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// let cond = Condition::anonymous()?;
/// let shared = Region::anonymous(8)?;
/// let at: Offset<AtomicU64> = Offset::new(0);
/// let (c, r) = (cond.clone(), shared.clone());
/// let producer = Process::new(move || {
///     let guard = c.lock().unwrap();
///     r.get(at).unwrap().fetch_add(1, Ordering::Relaxed);
///     guard.notify(1).unwrap();
/// });
/// producer.start()?;
/// let items = shared.get(at)?;
/// let guard = cond.lock().unwrap();
/// let woke = guard.wait_for(|| items.load(Ordering::Relaxed) > 0)?;
/// assert!(woke.notified); // the predicate holds, and we hold the lock
/// items.fetch_sub(1, Ordering::Relaxed);
/// drop(guard);
/// assert_eq!(producer.join()?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    region: Region,
    /// A process-private copy of the slot count, checked against the region on open.
    max_waiters: u32,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("region", &self.region.describe())
            .field("max_waiters", &self.max_waiters)
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl Condition {
    /// How many threads may wait at once unless told otherwise.
    pub const DEFAULT_MAX_WAITERS: u32 = 64;
    /// The largest `max_waiters` accepted.
    pub const MAX_WAITERS: u32 = 1024;

    const WHAT: &'static str = "condition's lock";

    fn build(region: Region, max_waiters: u32) -> Result<Self, SyncError> {
        let total = total_len(max_waiters);
        let region = object::build(region, &PRIMITIVE, total, |r| {
            init_owned_lock(r)?;
            let meta: &Meta = r.get(Offset::new(META_AT as u64))?;
            meta.max_waiters.store(max_waiters, Ordering::Relaxed);
            let slot_len = std::mem::size_of::<Slot>();
            r.check_range(
                SLOTS_AT as u64,
                (max_waiters as usize * slot_len) as u64,
                std::mem::align_of::<Slot>(),
            )?;
            for i in 0..max_waiters as usize {
                // SAFETY: slot i lies inside the checked range, aligned (SLOTS_AT and the slot
                // size are multiples of its alignment); the region is fresh and unpublished.
                // `mutex` is the first field of the repr(C) Slot.
                unsafe {
                    RawRobustMutex::init(
                        r.as_ptr()
                            .add(SLOTS_AT + i * slot_len)
                            .cast::<RawRobustMutex>(),
                    )?;
                }
            }
            Ok(())
        })?;
        region.set_unmap_check(object::keep_while_held);
        Ok(Condition {
            region,
            max_waiters,
        })
    }

    fn check(max_waiters: u32) -> Result<(), SyncError> {
        if max_waiters == 0 || max_waiters > Self::MAX_WAITERS {
            return Err(SyncError::InvalidParameter {
                what: "condition max_waiters",
                value: u64::from(max_waiters),
                reason: "must be between 1 and Condition::MAX_WAITERS (1024)",
            });
        }
        Ok(())
    }

    /// A new condition (lock free, nobody waiting) for up to
    /// [`DEFAULT_MAX_WAITERS`](Self::DEFAULT_MAX_WAITERS) waiters at once, shared with children
    /// forked after this call.
    ///
    /// # Errors
    /// [`SyncError::Shm`] if the region cannot be mapped; [`SyncError::Io`] if glibc refuses the
    /// mutex attributes.
    pub fn new() -> Result<Self, SyncError> {
        Self::anonymous()
    }

    /// The same as [`new`](Self::new) (Python's `Condition()`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn anonymous() -> Result<Self, SyncError> {
        Self::anonymous_with_max_waiters(Self::DEFAULT_MAX_WAITERS)
    }

    /// [`anonymous`](Self::anonymous) for up to `max_waiters` waiters at once.
    ///
    /// # Errors
    /// [`SyncError::InvalidParameter`] unless `1 <= max_waiters <= MAX_WAITERS`; otherwise as
    /// [`anonymous`](Self::anonymous).
    pub fn anonymous_with_max_waiters(max_waiters: u32) -> Result<Self, SyncError> {
        Self::check(max_waiters)?;
        Self::build(Region::anonymous(total_len(max_waiters))?, max_waiters)
    }

    /// Creates the named condition `/dev/shm/baozi-NAME` for up to
    /// [`DEFAULT_MAX_WAITERS`](Self::DEFAULT_MAX_WAITERS) waiters at once.
    ///
    /// # Errors
    /// [`SyncError::Shm`]: invalid name, already exists, permission denied.
    pub fn create(name: &str) -> Result<Self, SyncError> {
        Self::create_with_max_waiters(name, Self::DEFAULT_MAX_WAITERS)
    }

    /// [`create`](Self::create) for up to `max_waiters` waiters at once.
    ///
    /// # Errors
    /// [`SyncError::InvalidParameter`] unless `1 <= max_waiters <= MAX_WAITERS`; otherwise as
    /// [`create`](Self::create).
    pub fn create_with_max_waiters(name: &str, max_waiters: u32) -> Result<Self, SyncError> {
        Self::check(max_waiters)?;
        Self::build(Region::create(name, total_len(max_waiters))?, max_waiters)
    }

    /// Opens a condition made by [`create`](Self::create).
    ///
    /// # Errors
    /// [`SyncError::WrongPrimitive`] if `name` is another primitive; [`SyncError::Shm`] with the
    /// precise cause otherwise.
    pub fn open(name: &str) -> Result<Self, SyncError> {
        Self::open_from(name)
    }

    /// Attaches to the condition a serialised handle refers to (what `Deserialize` does with the
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
        if (snap.total_size as usize) < SLOTS_AT {
            object::check_size(&region, &snap, SLOTS_AT)?;
        }
        let meta: &Meta = region.get(Offset::new(META_AT as u64))?;
        let max_waiters = meta.max_waiters.load(Ordering::Relaxed);
        if max_waiters == 0 || max_waiters > Self::MAX_WAITERS {
            return Err(baozi_shm::ShmError::Corrupt {
                name: region.describe(),
                detail: format!("condition max_waiters {max_waiters}"),
            }
            .into());
        }
        object::check_size(&region, &snap, total_len(max_waiters))?;
        Ok(Condition {
            region,
            max_waiters,
        })
    }

    fn core(&self) -> &OwnedLock {
        owned_lock(&self.region)
    }

    fn meta(&self) -> &Meta {
        self.region
            .get(Offset::new(META_AT as u64))
            .expect("the meta line lies inside the checked region")
    }

    fn slots(&self) -> &[Slot] {
        // SAFETY: build/open checked that the region holds total_len(max_waiters) bytes, so
        // max_waiters slots lie at SLOTS_AT, aligned (a multiple of the slot's alignment from
        // the page-aligned base). Slot is ShmSafe: any bytes are a valid Slot and shared `&`
        // access is sound. The slice borrows self, so it cannot outlive the mapping.
        unsafe {
            std::slice::from_raw_parts(
                self.region.as_ptr().add(SLOTS_AT).cast::<Slot>(),
                self.max_waiters as usize,
            )
        }
    }

    // ---- the lock -------------------------------------------------------------------------

    /// Acquires the condition's lock (one level deeper if the calling thread holds it), waiting
    /// as long as it takes. Returns [`Acquired::OwnerDied`] when the previous holder died
    /// holding it: repair, then [`mark_consistent`](Self::mark_consistent).
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

    /// [`acquire`](Self::acquire) only if the lock is free now or held by the calling thread.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    pub fn try_acquire(&self) -> Result<Option<Acquired>, SyncError> {
        self.core().try_acquire(true)
    }

    /// Releases one level of the condition's lock.
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

    /// Whether the calling thread holds the condition's lock.
    pub fn is_owned(&self) -> bool {
        self.core().is_owned()
    }

    fn guard(
        &self,
        acquired: Acquired,
    ) -> Result<ConditionGuard<'_>, AcquireError<ConditionGuard<'_>>> {
        let guard = ConditionGuard {
            cond: self,
            _not_send: PhantomData,
        };
        match acquired {
            Acquired::Clean => Ok(guard),
            Acquired::OwnerDied => Err(AcquireError::OwnerDied(guard)),
        }
    }

    /// Acquires one level of the lock and returns a guard that releases it on drop (Python's
    /// `with cond:`); the guard also waits and notifies.
    ///
    /// # Errors
    /// [`AcquireError::OwnerDied`] (with the guard) when the previous holder died; otherwise
    /// [`AcquireError::Sync`].
    pub fn lock(&self) -> Result<ConditionGuard<'_>, AcquireError<ConditionGuard<'_>>> {
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
    ) -> Result<ConditionGuard<'_>, AcquireError<ConditionGuard<'_>>> {
        let acquired = self.acquire_timeout(timeout)?;
        self.guard(acquired)
    }

    // ---- waiting --------------------------------------------------------------------------

    /// Releases the lock (every recursion level), sleeps until notified, and takes the lock
    /// back (Python's `wait()`). The calling thread must hold the lock.
    ///
    /// Returns with the lock held, `notified` true — or `notified` false with
    /// [`Acquired::OwnerDied`] when it took the lock back early, from a dead holder, while
    /// passing on a dead waiter's notification.
    ///
    /// # Errors
    /// [`SyncError::NotOwner`] if the calling thread does not hold the lock;
    /// [`SyncError::TooManyWaiters`] (lock still held). [`SyncError::Unrecoverable`] or
    /// [`SyncError::Io`] if the lock could not be taken back (then it is not held).
    pub fn wait(&self) -> Result<Wakeup, SyncError> {
        self.wait_until(None)
    }

    /// [`wait`](Self::wait), for at most `timeout`: `notified` is false if the timeout passed
    /// first (Python's `wait(timeout)` returning `False`). The lock is taken back either way,
    /// however long that takes.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Wakeup, SyncError> {
        self.wait_until(Some(Deadline::after(timeout)))
    }

    /// Waits until `predicate()` is true (Python's `wait_for`): checks it first, then after
    /// each wake-up, always holding the lock. `notified` is the predicate's last value (true).
    ///
    /// When the lock comes back [`Acquired::OwnerDied`], it returns at once without evaluating
    /// the predicate on possibly half-updated state (`notified` false): repair, mark consistent
    /// and call it again.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_for(&self, predicate: impl FnMut() -> bool) -> Result<Wakeup, SyncError> {
        self.wait_for_until(None, predicate)
    }

    /// [`wait_for`](Self::wait_for) for at most `timeout`: `notified` is the predicate's value
    /// when it returns (false: the timeout passed first).
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_for_timeout(
        &self,
        timeout: Duration,
        predicate: impl FnMut() -> bool,
    ) -> Result<Wakeup, SyncError> {
        self.wait_for_until(Some(Deadline::after(timeout)), predicate)
    }

    fn wait_for_until(
        &self,
        deadline: Option<Deadline>,
        mut predicate: impl FnMut() -> bool,
    ) -> Result<Wakeup, SyncError> {
        if !self.is_owned() {
            return Err(SyncError::NotOwner { what: Self::WHAT });
        }
        let mut result = predicate();
        while !result {
            if deadline.is_some_and(|d| d.has_passed()) {
                break;
            }
            let woke = self.wait_until(deadline)?;
            if woke.owner_died() {
                return Ok(Wakeup {
                    notified: false,
                    acquired: Acquired::OwnerDied,
                });
            }
            result = predicate();
        }
        Ok(Wakeup {
            notified: result,
            acquired: Acquired::Clean,
        })
    }

    fn wait_until(&self, deadline: Option<Deadline>) -> Result<Wakeup, SyncError> {
        let core = self.core();
        if !core.is_owned() {
            return Err(SyncError::NotOwner { what: Self::WHAT });
        }
        let mine = self.claim_slot()?;
        let slot = &self.slots()[mine];
        let mut depth = core.release_all(Self::WHAT)?;
        let mut suspect = None;
        loop {
            let woke = self.sleep(mine, deadline, &mut suspect);
            // Python's wait always returns holding the lock: take it back without a deadline.
            let acquired = match core.reacquire(depth) {
                Ok(a) => a,
                Err(e) => {
                    // Without the lock the slot cannot be freed; its mutex unlocked while the
                    // state says occupied marks it abandoned, and the next sweep frees it.
                    // SAFETY: this thread locked the slot's mutex in claim_slot.
                    unsafe { slot.mutex.unlock() };
                    return Err(e);
                }
            };
            if self.sweep() {
                self.meta().wait.notify();
            }
            let notified = slot.state.load(Ordering::Relaxed) == NOTIFIED;
            if matches!(woke, Woke::Stranded) && !notified && acquired == Acquired::Clean {
                // The stranded notification went to an older waiter, or its waiter was alive
                // after all: wait on, in the same slot.
                depth = core.release_all(Self::WHAT)?;
                continue;
            }
            slot.state.store(FREE, Ordering::Relaxed);
            // SAFETY: this thread locked the slot's mutex in claim_slot.
            unsafe { slot.mutex.unlock() };
            if let Woke::Failed(e) = woke {
                return Err(e);
            }
            return Ok(Wakeup { notified, acquired });
        }
    }

    /// Sleeps without the lock until slot `mine` is notified, the deadline passes, or another
    /// slot's notification looks stranded.
    fn sleep(
        &self,
        mine: usize,
        deadline: Option<Deadline>,
        suspect: &mut Option<Suspect>,
    ) -> Woke {
        let slot = &self.slots()[mine];
        let wait = &self.meta().wait;
        loop {
            // The sequence is read before the state: a notify after our look bumps it, and the
            // futex wait returns at once.
            let seen = wait.seq();
            if slot.state.load(Ordering::Acquire) == NOTIFIED {
                return Woke::Notified;
            }
            if self.stranded(mine, suspect) {
                return Woke::Stranded;
            }
            match wait.wait(seen, deadline) {
                Ok(()) => {}
                Err(SyncError::Timeout) => {
                    return if slot.state.load(Ordering::Acquire) == NOTIFIED {
                        Woke::Notified
                    } else {
                        Woke::TimedOut
                    }
                }
                Err(e) => return Woke::Failed(e),
            }
        }
    }

    /// Whether another slot has stayed `NOTIFIED` (same ticket) for longer than our patience:
    /// its waiter may have died between being notified and taking the lock back.
    fn stranded(&self, mine: usize, suspect: &mut Option<Suspect>) -> bool {
        let found = self
            .slots()
            .iter()
            .enumerate()
            .find(|(i, s)| *i != mine && s.state.load(Ordering::Relaxed) == NOTIFIED)
            .map(|(i, s)| (i, s.ticket.load(Ordering::Relaxed)));
        let Some((slot, ticket)) = found else {
            *suspect = None;
            return false;
        };
        let now = sys::monotonic_ns();
        match suspect {
            Some(s) if s.slot == slot && s.ticket == ticket => {
                if now.saturating_sub(s.since_ns) >= s.patience_ns {
                    // Look again only much later if this one turns out alive (a slow waiter
                    // queued for a long-held lock).
                    s.since_ns = now;
                    s.patience_ns = s.patience_ns.saturating_mul(10);
                    return true;
                }
                false
            }
            _ => {
                *suspect = Some(Suspect {
                    slot,
                    ticket,
                    since_ns: now,
                    patience_ns: WAIT_SLICE.as_nanos() as u64,
                });
                false
            }
        }
    }

    /// Takes a free slot for the calling thread (which holds the lock): locks its mutex, then
    /// marks it `WAITING` with the next ticket.
    fn claim_slot(&self) -> Result<usize, SyncError> {
        for attempt in 0..2 {
            for (i, slot) in self.slots().iter().enumerate() {
                if slot.state.load(Ordering::Relaxed) != FREE {
                    continue;
                }
                // Busy or unrecoverable: not ours to take.
                if let Ok(Some(acquired)) = slot.mutex.try_lock() {
                    if acquired == Acquired::OwnerDied {
                        // A thread died between freeing the slot and unlocking its mutex:
                        // there is nothing to repair.
                        // SAFETY: we hold the slot mutex, acquired with EOWNERDEAD.
                        unsafe { slot.mutex.mark_consistent() };
                    }
                    let meta = self.meta();
                    let ticket = meta.next_ticket.load(Ordering::Relaxed);
                    meta.next_ticket
                        .store(ticket.wrapping_add(1), Ordering::Relaxed);
                    slot.ticket.store(ticket, Ordering::Relaxed);
                    slot.state.store(WAITING, Ordering::Relaxed);
                    return Ok(i);
                }
            }
            if attempt == 0 && self.sweep() {
                self.meta().wait.notify();
            }
        }
        Err(SyncError::TooManyWaiters {
            max: self.max_waiters,
        })
    }

    /// Frees the slots whose waiter died (their mutex is free or comes back `OwnerDied`),
    /// passing each notification such a waiter held on to the oldest live waiter. The caller
    /// holds the lock. Returns whether it marked anyone notified (then the caller bumps the
    /// wait word).
    fn sweep(&self) -> bool {
        let mut passed_on = false;
        for slot in self.slots() {
            let state = slot.state.load(Ordering::Relaxed);
            if state == FREE {
                continue;
            }
            // Busy: its waiter lives (or this thread is the waiter). Err: unrecoverable, which
            // a slot never becomes (every OwnerDied is marked consistent).
            if let Ok(Some(acquired)) = slot.mutex.try_lock() {
                if state == NOTIFIED {
                    // Passed on before the slot is freed: a sweep killed in between passes it
                    // on again later (a spare wake-up, never a lost one).
                    passed_on |= self.deliver(1) > 0;
                }
                Self::free_abandoned(slot, acquired);
            }
        }
        passed_on
    }

    /// Frees a slot whose mutex we just took from a dead (or departed) waiter.
    fn free_abandoned(slot: &Slot, acquired: Acquired) {
        slot.state.store(FREE, Ordering::Relaxed);
        if acquired == Acquired::OwnerDied {
            // SAFETY: we hold the slot mutex, acquired with EOWNERDEAD; the slot has no state
            // that needs repair beyond being freed.
            unsafe { slot.mutex.mark_consistent() };
        }
        // SAFETY: we hold the slot mutex (try_lock succeeded).
        unsafe { slot.mutex.unlock() };
    }

    /// Marks up to `n` live waiters notified, oldest ticket first; frees the slots of dead ones
    /// met on the way. The caller holds the lock. Returns how many it marked.
    fn deliver(&self, n: u64) -> u64 {
        let slots = self.slots();
        let mut delivered = 0;
        let mut after: Option<u64> = None;
        while delivered < n {
            let mut oldest: Option<(usize, u64)> = None;
            for (i, slot) in slots.iter().enumerate() {
                if slot.state.load(Ordering::Relaxed) != WAITING {
                    continue;
                }
                let ticket = slot.ticket.load(Ordering::Relaxed);
                if after.is_some_and(|a| ticket <= a) {
                    continue;
                }
                if oldest.map_or(true, |(_, t)| ticket < t) {
                    oldest = Some((i, ticket));
                }
            }
            let Some((i, ticket)) = oldest else { break };
            after = Some(ticket);
            let slot = &slots[i];
            match slot.mutex.try_lock() {
                // Busy: the waiter holds its slot, so it lives.
                Ok(None) => {
                    slot.state.store(NOTIFIED, Ordering::Release);
                    delivered += 1;
                }
                // It died while waiting (or left without its lock): free the slot, go on.
                Ok(Some(acquired)) => Self::free_abandoned(slot, acquired),
                Err(_) => {}
            }
        }
        delivered
    }

    /// Marks every live waiter notified; frees the slots of dead ones.
    fn deliver_all(&self) -> u64 {
        let mut delivered = 0;
        for slot in self.slots() {
            if slot.state.load(Ordering::Relaxed) != WAITING {
                continue;
            }
            match slot.mutex.try_lock() {
                Ok(None) => {
                    slot.state.store(NOTIFIED, Ordering::Release);
                    delivered += 1;
                }
                Ok(Some(acquired)) => Self::free_abandoned(slot, acquired),
                Err(_) => {}
            }
        }
        delivered
    }

    // ---- notifying ------------------------------------------------------------------------

    /// Wakes at most `n` waiters, those waiting longest first (Python's `notify(n)`). Waiters
    /// that died while waiting are skipped, so `n` live ones are woken if there are that many.
    /// The calling thread must hold the lock; the woken take it back after it is released.
    ///
    /// # Errors
    /// [`SyncError::NotOwner`] if the calling thread does not hold the lock.
    pub fn notify(&self, n: u32) -> Result<(), SyncError> {
        if !self.is_owned() {
            return Err(SyncError::NotOwner { what: Self::WHAT });
        }
        let passed_on = self.sweep();
        let delivered = self.deliver(u64::from(n));
        if passed_on || delivered > 0 {
            self.meta().wait.notify();
        }
        Ok(())
    }

    /// Wakes every waiter (Python's `notify_all()`).
    ///
    /// # Errors
    /// [`SyncError::NotOwner`] if the calling thread does not hold the lock.
    pub fn notify_all(&self) -> Result<(), SyncError> {
        if !self.is_owned() {
            return Err(SyncError::NotOwner { what: Self::WHAT });
        }
        let passed_on = self.sweep();
        if self.deliver_all() > 0 || passed_on {
            self.meta().wait.notify();
        }
        Ok(())
    }

    /// How many slots are occupied now: threads waiting (or notified and not yet returned),
    /// plus any dead waiter not yet swept. A snapshot, for monitoring and tests.
    pub fn waiting(&self) -> u32 {
        self.slots()
            .iter()
            .filter(|s| s.state.load(Ordering::Relaxed) != FREE)
            .count() as u32
    }

    /// How many threads may wait at once.
    pub fn max_waiters(&self) -> u32 {
        self.max_waiters
    }

    /// The region holding the condition.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The region holding the condition, to [`persist`](Region::persist) a named one.
    pub fn region_mut(&mut self) -> &mut Region {
        &mut self.region
    }
}

/// Holds one level of a [`Condition`]'s lock and releases it on drop; waits and notifies
/// through the condition. Not `Send`: the acquiring thread must release.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    _not_send: PhantomData<*const ()>,
}

impl ConditionGuard<'_> {
    /// [`Condition::wait`].
    ///
    /// # Errors
    /// As [`Condition::wait`].
    pub fn wait(&self) -> Result<Wakeup, SyncError> {
        self.cond.wait()
    }

    /// [`Condition::wait_timeout`].
    ///
    /// # Errors
    /// As [`Condition::wait`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Wakeup, SyncError> {
        self.cond.wait_timeout(timeout)
    }

    /// [`Condition::wait_for`].
    ///
    /// # Errors
    /// As [`Condition::wait`].
    pub fn wait_for(&self, predicate: impl FnMut() -> bool) -> Result<Wakeup, SyncError> {
        self.cond.wait_for(predicate)
    }

    /// [`Condition::wait_for_timeout`].
    ///
    /// # Errors
    /// As [`Condition::wait`].
    pub fn wait_for_timeout(
        &self,
        timeout: Duration,
        predicate: impl FnMut() -> bool,
    ) -> Result<Wakeup, SyncError> {
        self.cond.wait_for_timeout(timeout, predicate)
    }

    /// [`Condition::notify`].
    ///
    /// # Errors
    /// As [`Condition::notify`].
    pub fn notify(&self, n: u32) -> Result<(), SyncError> {
        self.cond.notify(n)
    }

    /// [`Condition::notify_all`].
    ///
    /// # Errors
    /// As [`Condition::notify_all`].
    pub fn notify_all(&self) -> Result<(), SyncError> {
        self.cond.notify_all()
    }

    /// Declares what the lock protects repaired after [`AcquireError::OwnerDied`] or a
    /// [`Wakeup`] with [`Acquired::OwnerDied`]. Harmless otherwise.
    pub fn mark_consistent(&mut self) {
        let _ = self.cond.mark_consistent();
    }
}

impl fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConditionGuard { .. }")
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        // Fails only if a wait could not take the lock back (then it is not held): nothing to
        // release. Drop must not panic.
        let _ = self.cond.release();
    }
}
