//! [`Barrier`]: Python's `threading.Barrier` (as `multiprocessing.Barrier`), lock-free over one
//! state word and a [`WaitWord`].

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baozi_shm::{Offset, Region, ShmSafe, CACHE_LINE};

use crate::backoff::SpinPolicy;
use crate::deadline::Deadline;
use crate::error::SyncError;
use crate::object::{self, Primitive, BODY_AT};
use crate::waitword::WaitWord;

/// Distinguishes a `Barrier` from the other sync objects in the layout checksum.
const SUBKIND_BARRIER: u64 = 8;

pub(crate) static PRIMITIVE: Primitive = Primitive {
    subkind: SUBKIND_BARRIER,
    name: "barrier",
    layout_facts: || {
        let [s, a] = object::size_align::<BarrierBody>();
        let [ws, wa] = object::size_align::<WaitWord>();
        [s, a, ws, wa]
    },
};

/// The state word, one `AtomicU64` changed only by compare-and-swap:
///
/// | bits    | field     | meaning                                                       |
/// |---------|-----------|---------------------------------------------------------------|
/// | 0..16   | `count`   | arrivals in the current cycle (`parties` while its action runs) |
/// | 16      | `broken`  | the current cycle is broken (abort, or a waiter timed out)    |
/// | 17..32  | `history` | bit k: cycle `cycle - 1 - k` ended by `reset` (1) or by all parties arriving (0) |
/// | 32..64  | `cycle`   | how many cycles have ended (wrapping)                         |
///
/// A waiter remembers its cycle and waits for the word to leave it: a new cycle means its own
/// ended, and `history` says how (released: `Ok(index)`; reset: `BrokenBarrier`); `broken` in
/// its own cycle means `BrokenBarrier`. There is no draining phase to count waiters out, so a
/// waiter killed after it woke (or while asleep) leaves nothing for the others to wait for.
const COUNT_MASK: u64 = 0xffff;
const BROKEN: u64 = 1 << 16;
const HISTORY_SHIFT: u32 = 17;
const HISTORY_BITS: u32 = 15;
const HISTORY_MASK: u64 = ((1 << HISTORY_BITS) - 1) << HISTORY_SHIFT;
const CYCLE_SHIFT: u32 = 32;

fn count_of(s: u64) -> u64 {
    s & COUNT_MASK
}

fn cycle_of(s: u64) -> u32 {
    (s >> CYCLE_SHIFT) as u32
}

/// The word for the cycle after `s`, which ended by `reset` (true) or by release (false).
fn next_cycle(s: u64, by_reset: bool) -> u64 {
    let history = ((((s & HISTORY_MASK) >> HISTORY_SHIFT) << 1) | u64::from(by_reset))
        << HISTORY_SHIFT
        & HISTORY_MASK;
    (u64::from(cycle_of(s).wrapping_add(1)) << CYCLE_SHIFT) | history
}

/// How cycle `mine` ended, seen from the word `s` of a later cycle: `Some(true)` by reset,
/// `Some(false)` released, `None` if it ended more than `HISTORY_BITS` cycles ago.
fn ended_by_reset(s: u64, mine: u32) -> Option<bool> {
    let lag = cycle_of(s).wrapping_sub(mine);
    if lag == 0 || lag > HISTORY_BITS {
        return None;
    }
    Some((s >> (HISTORY_SHIFT + lag - 1)) & 1 == 1)
}

#[repr(C)]
#[derive(Debug)]
struct BarrierBody {
    state: AtomicU64,
    /// Fixed at creation.
    parties: AtomicU32,
    /// The default timeout of [`Barrier::wait`] in milliseconds plus one; 0: none.
    timeout_ms: AtomicU32,
    /// Bumped whenever the state word leaves a cycle or breaks it.
    wait: WaitWord,
}

// SAFETY: repr(C) of atomics and a WaitWord: every bit pattern valid (parties is checked on
// open), no pointers.
unsafe impl ShmSafe for BarrierBody {}

const TOTAL_LEN: usize = BODY_AT + CACHE_LINE;
const _: () = assert!(std::mem::size_of::<BarrierBody>() <= CACHE_LINE);

/// Python's `threading.Barrier` across processes: `parties` processes (or threads) call
/// [`wait`](Self::wait), and all return once the last has arrived, each with a distinct arrival
/// index in `0..parties`. Then the barrier is ready for the next cycle.
///
/// [`abort`](Self::abort) breaks it, and so does a waiter whose
/// [`wait_timeout`](Self::wait_timeout) expires: every waiter of that cycle, and every later
/// arrival, gets [`SyncError::BrokenBarrier`] until [`reset`](Self::reset). `reset` on a barrier
/// with waiters breaks their cycle too (they get `BrokenBarrier`) and starts afresh.
///
/// All state is one word changed by compare-and-swap, and waiting is a futex on a sequence word
/// ([`WaitWord`]): there is no lock to die holding, and nothing a dead waiter must undo. The
/// word remembers how the last 15 cycles ended; a waiter descheduled for longer than 15 further
/// cycles (possible only when more threads than `parties` share the barrier) reports its cycle
/// as released even if it was reset.
///
/// Python's `Barrier(parties, action, timeout)`: [`with_action`](Self::with_action) gives a
/// handle an action that the process completing a cycle runs before the release, once per
/// cycle; [`with_timeout`](Self::with_timeout) gives [`wait`](Self::wait) a default timeout,
/// kept in the shared memory for every process.
///
/// **A party killed** (even by `kill -9`):
/// * *after* it arrived (while it waits, or after it woke) counts as arrived: the cycle
///   completes when the others arrive, and they are released normally.
/// * *before* it arrives can never be told from a slow party: the others wait for it. With
///   [`wait_timeout`](Self::wait_timeout) they get `BrokenBarrier` when the timeout passes;
///   plain [`wait`](Self::wait) waits for ever (as in Python), unless someone calls
///   [`abort`](Self::abort). So give `wait_timeout` a bound wherever a party can die.
/// * *while it runs the action* leaves the cycle unreleased, as a party that never arrived: the
///   others' timeouts break it.
///
/// ```
/// use baozi_process::spawn;
/// use baozi_sync::Barrier;
///
/// let barrier = Barrier::anonymous(2)?;
/// let shared = barrier.clone();
/// let other = spawn(move || shared.wait().unwrap()); // its arrival index comes back
/// let mine = barrier.wait()?;
/// let theirs = other.join()?;
/// assert_eq!(mine + theirs, 1); // indices 0 and 1, one each
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    region: Region,
    /// A process-private copy of the party count, checked on open.
    parties: u32,
    spin: SpinPolicy,
    /// Run by this process when it completes a cycle ([`with_action`](Barrier::with_action)).
    action: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("region", &self.region.describe())
            .field("parties", &self.parties)
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.broken())
            .field("timeout", &self.timeout())
            .field("action", &self.action.is_some())
            .finish()
    }
}

impl Barrier {
    /// The most parties a barrier can have.
    pub const MAX_PARTIES: u32 = COUNT_MASK as u32;

    fn check(parties: u32) -> Result<(), SyncError> {
        if parties == 0 || parties > Self::MAX_PARTIES {
            return Err(SyncError::InvalidParameter {
                what: "barrier parties",
                value: u64::from(parties),
                reason: "must be between 1 and Barrier::MAX_PARTIES (65535)",
            });
        }
        Ok(())
    }

    fn build(region: Region, parties: u32) -> Result<Self, SyncError> {
        let region = object::build(region, &PRIMITIVE, TOTAL_LEN, |r| {
            let body: &BarrierBody = r.get(Offset::new(BODY_AT as u64))?;
            body.parties.store(parties, Ordering::Relaxed);
            Ok(())
        })?;
        Ok(Barrier {
            region,
            parties,
            spin: SpinPolicy::new(),
            action: None,
        })
    }

    /// A barrier for `parties` participants, shared with children forked after this call and with
    /// any process its handle is given to.
    ///
    /// # Errors
    /// [`SyncError::InvalidParameter`] unless `1 <= parties <= MAX_PARTIES`; [`SyncError::Shm`]
    /// if the region cannot be mapped.
    pub fn new(parties: u32) -> Result<Self, SyncError> {
        Self::anonymous(parties)
    }

    /// The same as [`new`](Self::new) (Python's `Barrier(parties)`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn anonymous(parties: u32) -> Result<Self, SyncError> {
        Self::check(parties)?;
        Self::build(Region::anonymous(TOTAL_LEN)?, parties)
    }

    /// Creates the named barrier `/dev/shm/baozi-NAME` for `parties` participants.
    ///
    /// # Errors
    /// As [`anonymous`](Self::anonymous), plus [`SyncError::Shm`] for an invalid or taken name.
    pub fn create(name: &str, parties: u32) -> Result<Self, SyncError> {
        Self::check(parties)?;
        Self::build(Region::create(name, TOTAL_LEN)?, parties)
    }

    /// Opens a barrier made by [`create`](Self::create).
    ///
    /// # Errors
    /// [`SyncError::WrongPrimitive`] if `name` is another primitive; [`SyncError::Shm`] with the
    /// precise cause otherwise.
    pub fn open(name: &str) -> Result<Self, SyncError> {
        Self::open_from(name)
    }

    /// Attaches to the barrier a serialised handle refers to (what `Deserialize` does with the
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
        object::check_size(&region, &snap, TOTAL_LEN)?;
        let body: &BarrierBody = region.get(Offset::new(BODY_AT as u64))?;
        let parties = body.parties.load(Ordering::Relaxed);
        if parties == 0 || parties > Self::MAX_PARTIES {
            return Err(baozi_shm::ShmError::Corrupt {
                name: region.describe(),
                detail: format!("barrier parties {parties}"),
            }
            .into());
        }
        Ok(Barrier {
            region,
            parties,
            spin: SpinPolicy::new(),
            action: None,
        })
    }

    fn body(&self) -> &BarrierBody {
        self.region
            .get(Offset::new(BODY_AT as u64))
            .expect("the barrier lies inside the checked region")
    }

    /// Gives the barrier a default timeout for [`wait`](Self::wait) (Python's
    /// `Barrier(parties, timeout=...)`), kept in the shared memory: every handle of this
    /// barrier, in every process, uses it. Set it on the new barrier, before it is shared.
    /// Millisecond resolution (rounded up), at most about 49 days.
    ///
    /// ```
    /// use baozi_sync::{Barrier, SyncError};
    /// use std::time::Duration;
    ///
    /// let b = Barrier::anonymous(2)?.with_timeout(Duration::from_millis(20));
    /// assert_eq!(b.timeout(), Some(Duration::from_millis(20)));
    /// assert!(matches!(b.wait(), Err(SyncError::BrokenBarrier))); // nobody came
    /// # Ok::<(), SyncError>(())
    /// ```
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let ms = timeout
            .as_nanos()
            .div_ceil(1_000_000)
            .min(u128::from(u32::MAX - 1)) as u32;
        self.body().timeout_ms.store(ms + 1, Ordering::Relaxed);
        self
    }

    /// The default timeout of [`wait`](Self::wait), if the barrier was given one.
    pub fn timeout(&self) -> Option<Duration> {
        match self.body().timeout_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms - 1))),
        }
    }

    /// Gives this handle an action (Python's `Barrier(parties, action=...)`): when this
    /// process's arrival completes a cycle, it runs `action` once, *before* any party of the
    /// cycle is released, and then releases them. So the action runs exactly once per cycle —
    /// provided every handle that may arrive last has it (a forked child inherits the handle
    /// with its action; a process that [`open`](Self::open)s the barrier by name must set it
    /// too).
    ///
    /// Why in the arriving process, where Python runs it "in one of the waiting threads": the
    /// action is a closure of this process (code and captures at its addresses), not data in
    /// the shared memory; the only process that can be sure to run it before the release, and
    /// that is not asleep, is the one whose arrival completes the cycle. Python's pick is the
    /// same: the last thread to arrive runs it.
    ///
    /// If the action panics, the cycle is broken (the others get
    /// [`SyncError::BrokenBarrier`]) and the panic goes on in this process, as Python raises the
    /// action's exception in its thread. If this process is killed during the action, the
    /// others wait as for a party that never arrived: give them a timeout. A waiter whose
    /// timeout passes during the action breaks the cycle, and the action's process then gets
    /// `BrokenBarrier` too.
    ///
    /// ```
    /// use baozi_sync::Barrier;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    ///
    /// let rounds = Arc::new(AtomicU32::new(0));
    /// let r = Arc::clone(&rounds);
    /// let b = Barrier::anonymous(1)?.with_action(move || { r.fetch_add(1, Ordering::Relaxed); });
    /// b.wait()?;
    /// b.wait()?;
    /// assert_eq!(rounds.load(Ordering::Relaxed), 2);
    /// # Ok::<(), baozi_sync::SyncError>(())
    /// ```
    #[must_use]
    pub fn with_action(mut self, action: impl Fn() + Send + Sync + 'static) -> Self {
        self.action = Some(Arc::new(action));
        self
    }

    /// Arrives and waits for the other parties; returns this arrival's index in `0..parties`
    /// (the last to arrive gets `parties - 1`), distinct for each party of a cycle.
    ///
    /// Waits at most the barrier's default [`timeout`](Self::timeout) if it has one, as
    /// [`wait_timeout`](Self::wait_timeout) does. Without one, waits for ever if a party never
    /// arrives (it may have died before arriving): see the type documentation, and prefer a
    /// timeout where that can happen.
    ///
    /// # Errors
    /// [`SyncError::BrokenBarrier`] if the barrier is or becomes broken, or is reset, while
    /// waiting (or the default timeout passes); [`SyncError::Io`].
    pub fn wait(&self) -> Result<u32, SyncError> {
        self.wait_until(self.timeout().map(Deadline::after))
    }

    /// [`wait`](Self::wait) for at most `timeout`. When it passes, this waiter breaks the barrier
    /// (as Python's does), and it and every other waiter of the cycle get
    /// [`SyncError::BrokenBarrier`].
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, SyncError> {
        self.wait_until(Some(Deadline::after(timeout)))
    }

    fn wait_until(&self, deadline: Option<Deadline>) -> Result<u32, SyncError> {
        let body = self.body();
        let parties = u64::from(self.parties);
        // Arrive: one CAS, the commit point.
        let mut s = body.state.load(Ordering::Acquire);
        let (cycle, index) = loop {
            if s & BROKEN != 0 {
                return Err(SyncError::BrokenBarrier);
            }
            let count = count_of(s);
            if count >= parties {
                // Every party is in and an action runs before their release: this arrival is
                // for the next cycle, so wait for that one to begin.
                s = self.wait_for_change(s, deadline)?;
                continue;
            }
            if let (true, Some(action)) = (count + 1 >= parties, &self.action) {
                // The last party, with an action: take the last place (count == parties: no
                // one else can complete the cycle), run the action, then release.
                match body.state.compare_exchange_weak(
                    s,
                    s + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return self.act_and_release(cycle_of(s), count as u32, action),
                    Err(now) => s = now,
                }
            } else if count + 1 >= parties {
                // The last party: end the cycle and release everyone. AcqRel: the others'
                // work before arriving happens-before ours after, and ours before theirs after.
                match body.state.compare_exchange_weak(
                    s,
                    next_cycle(s, false),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        // A process killed here leaves the others asleep at most WAIT_SLICE.
                        body.wait.notify();
                        return Ok(count as u32);
                    }
                    Err(now) => s = now,
                }
            } else {
                match body.state.compare_exchange_weak(
                    s,
                    s + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break (cycle_of(s), count as u32),
                    Err(now) => s = now,
                }
            }
        };
        // Wait for the word to leave our cycle (or break it).
        let outcome = |s: u64| -> Option<Result<u32, SyncError>> {
            if cycle_of(s) != cycle {
                // Ended more than HISTORY_BITS cycles ago: it was released at least that
                // long ago unless reset; released is by far the likelier, and what we say.
                return Some(match ended_by_reset(s, cycle) {
                    Some(true) => Err(SyncError::BrokenBarrier),
                    Some(false) | None => Ok(index),
                });
            }
            if s & BROKEN != 0 {
                return Some(Err(SyncError::BrokenBarrier));
            }
            None
        };
        let mut result = None;
        if self.spin.spin_until(|| {
            result = outcome(body.state.load(Ordering::Acquire));
            result.is_some()
        }) {
            if let Some(r) = result {
                return r;
            }
        }
        loop {
            // The sequence is read before the state: a change after our look bumps it, and the
            // futex wait returns at once.
            let seen = body.wait.seq();
            if let Some(r) = outcome(body.state.load(Ordering::Acquire)) {
                return r;
            }
            match body.wait.wait(seen, deadline) {
                Ok(()) => {}
                Err(SyncError::Timeout) => return self.break_cycle(cycle, &outcome),
                Err(e) => return Err(e),
            }
        }
    }

    /// For an arrival while a cycle's action runs: waits until the state word is no longer
    /// `s`, and returns the new word. When `deadline` passes first, breaks the barrier (as any
    /// waiter whose time is up does).
    fn wait_for_change(&self, s: u64, deadline: Option<Deadline>) -> Result<u64, SyncError> {
        let body = self.body();
        loop {
            let seen = body.wait.seq();
            let now = body.state.load(Ordering::Acquire);
            if now != s {
                return Ok(now);
            }
            match body.wait.wait(seen, deadline) {
                Ok(()) => {}
                Err(SyncError::Timeout) => {
                    self.abort();
                    return Err(SyncError::BrokenBarrier);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The last party of `cycle`, holding the last place: runs the action, then releases the
    /// cycle, unless it was broken or reset meanwhile.
    fn act_and_release(
        &self,
        cycle: u32,
        index: u32,
        action: &Arc<dyn Fn() + Send + Sync>,
    ) -> Result<u32, SyncError> {
        let body = self.body();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| action()));
        let mut s = body.state.load(Ordering::Acquire);
        loop {
            if cycle_of(s) != cycle || s & BROKEN != 0 {
                // Reset, aborted, or a waiter timed out during the action.
                body.wait.notify();
                return match ran {
                    Ok(()) => Err(SyncError::BrokenBarrier),
                    Err(payload) => std::panic::resume_unwind(payload),
                };
            }
            let next = if ran.is_ok() {
                next_cycle(s, false)
            } else {
                s | BROKEN
            };
            match body
                .state
                .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    body.wait.notify();
                    return match ran {
                        Ok(()) => Ok(index),
                        Err(payload) => std::panic::resume_unwind(payload),
                    };
                }
                Err(now) => s = now,
            }
        }
    }

    /// Our deadline passed in `cycle`: break it (unless it ended meanwhile) and say how it ended.
    fn break_cycle(
        &self,
        cycle: u32,
        outcome: &dyn Fn(u64) -> Option<Result<u32, SyncError>>,
    ) -> Result<u32, SyncError> {
        let body = self.body();
        let mut s = body.state.load(Ordering::Acquire);
        loop {
            if let Some(r) = outcome(s) {
                return r;
            }
            debug_assert_eq!(cycle_of(s), cycle);
            match body.state.compare_exchange_weak(
                s,
                s | BROKEN,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    body.wait.notify();
                    return Err(SyncError::BrokenBarrier);
                }
                Err(now) => s = now,
            }
        }
    }

    /// Breaks the barrier: every waiter, and every later arrival until [`reset`](Self::reset),
    /// gets [`SyncError::BrokenBarrier`] (Python's `abort()`).
    pub fn abort(&self) {
        let body = self.body();
        body.state.fetch_or(BROKEN, Ordering::AcqRel);
        body.wait.notify();
    }

    /// Returns the barrier to its initial, empty state (Python's `reset()`): waiters of the
    /// current cycle get [`SyncError::BrokenBarrier`], later arrivals start a new cycle.
    pub fn reset(&self) {
        let body = self.body();
        let mut s = body.state.load(Ordering::Acquire);
        loop {
            match body.state.compare_exchange_weak(
                s,
                next_cycle(s, true),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        body.wait.notify();
    }

    /// The number of parties needed to pass the barrier.
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// How many parties have arrived in the current cycle and wait (0 while broken), Python's
    /// `n_waiting`. A party killed after arriving still counts: it did arrive.
    pub fn n_waiting(&self) -> u32 {
        let s = self.body().state.load(Ordering::Acquire);
        if s & BROKEN != 0 {
            0
        } else {
            count_of(s) as u32
        }
    }

    /// Whether the barrier is broken (Python's `broken`).
    pub fn broken(&self) -> bool {
        self.body().state.load(Ordering::Acquire) & BROKEN != 0
    }

    /// The region holding the barrier.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The region holding the barrier, to [`persist`](Region::persist) a named one.
    pub fn region_mut(&mut self) -> &mut Region {
        &mut self.region
    }
}
