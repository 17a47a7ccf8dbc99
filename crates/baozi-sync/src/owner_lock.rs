//! [`RawOwnerLock`]: a process-shared lock whose word names its owner process, taken with one
//! compare-and-swap and released with one plain store; robust without glibc's robust list.

use std::fmt;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use baozi_shm::ShmSafe;

use crate::deadline::{monotonic_ns, Deadline};
use crate::error::SyncError;
use crate::raw_mutex::Acquired;
use crate::sys::{self, ProcessState};

/// The pid's bits (pid_max is at most 2^22).
const PID_BITS: u32 = 22;
const PID_MASK: u64 = (1 << PID_BITS) - 1;
/// Bits of the owner's start time the word keeps: 9 below bit 31 (always clear), 32 above it.
const START_BITS: u32 = 41;
const START_MASK: u64 = (1 << START_BITS) - 1;
/// A word no owner can have (pid 0): the lock was given up after a failed repair.
const UNRECOVERABLE: u64 = 1 << 32;

/// How many rounds a contended `lock` spins and yields before it sleeps.
const SPIN_ROUNDS: u32 = 40;
/// The longest one sleep lasts before the sleeper looks again: a sleeper woken by an unlock and
/// killed before it takes the lock swallows that wake-up, and this bounds what that costs.
pub(crate) const SLEEP_SLICE_NS: u64 = 2_000_000;
/// How long a waiter sleeps before it first asks whether the owner is alive, and how often after
/// that: a liveness check reads `/proc` (tens of microseconds), a lock is held for far less.
pub const OWNER_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

/// The word of a lock held by process `pid`, started at `start`.
fn owner_word(pid: u32, start: u64) -> u64 {
    let start = start & START_MASK;
    (u64::from(pid) & PID_MASK) | ((start & 0x1ff) << PID_BITS) | ((start >> 9) << 32)
}

/// (pid, start time) of a held word's owner; pid 0 for [`UNRECOVERABLE`].
fn owner_of(word: u64) -> (u32, u64) {
    let pid = (word & PID_MASK) as u32;
    let start = ((word >> PID_BITS) & 0x1ff) | ((word >> 32) << 9);
    (pid, start)
}

/// A process-shared lock in shared memory whose 64-bit word names the process that holds it
/// (pid and start time), so that a survivor can tell, without the kernel's help, that the holder
/// died: the lock word of the finer-grained protocols that issue 15 asks for.
///
/// * **Uncontended** `lock` is one compare-and-swap from 0 to the owner word, `unlock` one
///   store of 0, a fence and a load of the sleepers flag: no syscall, no list to link into
///   (glibc's robust mutex links every lock into the thread's robust list and unlinks it again,
///   about 100 instructions a lock and unlock).
/// * **Contended**: spin, then yield (so that a preempted holder on a small machine gets the
///   CPU), then set the sleepers flag and sleep on the word's futex; an unlock that finds the
///   flag wakes one.
/// * **A dead holder**: a sleeper asks `/proc` whether the holder is alive after
///   [`OWNER_CHECK_EVERY`] and again after each further one. Dead (gone, a zombie, or its pid
///   reused by a process with another start time) means the sleeper takes the lock over with one
///   CAS from exactly the dead word and gets [`Acquired::OwnerDied`]: repair, then
///   [`unlock`](Self::unlock) (which declares the state consistent) or
///   [`give_up`](Self::give_up) (which makes the lock unrecoverable for everyone). So a holder
///   killed at any instant stalls its waiters for about a millisecond, not for ever.
///
/// The owner is a *process*: threads of one process that contend simply wait for each other
/// (a thread cannot die holding it without its process dying). A process whose `/proc` cannot
/// be read (no `/proc`, `hidepid`) is taken as alive while `kill(pid, 0)` finds it, so an
/// unreadable `/proc` can stall a dead holder's waiters but never hands a live holder's lock to
/// another. Pids mean something only within one pid namespace: a lock shared across namespaces
/// must be taken with [`lock_with`](Self::lock_with) and no takeover. A process that
/// `execve`s keeps its pid and start time: a thread must not `exec` while another thread of its
/// process holds the lock (the new image would hold it for ever).
///
/// The owner word is cached per process and cleared in a child by a `pthread_atfork` handler:
/// a child made with a raw `clone`/`SYS_fork` syscall (not `fork()`) must not use the lock.
///
/// All-zero bytes are a free lock: a fresh shared region needs no initialisation.
///
/// ```
/// use baozi_process::Process;
/// use baozi_shm::{Offset, Region};
/// use baozi_sync::{Acquired, RawOwnerLock};
///
/// let region = Region::anonymous(64)?; // zeroed: a free lock, shared with children forked later
/// let lock: &RawOwnerLock = region.get(Offset::new(0))?;
/// let child = Process::new({
///     let region = region.clone();
///     move || {
///         let lock: &RawOwnerLock = region.get(Offset::new(0)).unwrap();
///         let _ = lock.lock(None).unwrap();
///         // ends holding it, as if killed mid-update
///     }
/// });
/// child.start()?;
/// child.join()?;
/// // The holder is dead: the next locker is told (about a millisecond later), repairs what
/// // the lock protects, and unlocks, which declares it consistent.
/// assert_eq!(lock.lock(None)?, Acquired::OwnerDied);
/// // SAFETY: this process holds the lock.
/// unsafe { lock.unlock() };
/// assert_eq!(lock.lock(None)?, Acquired::Clean);
/// unsafe { lock.unlock() }; // SAFETY: as above
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[repr(C, align(8))]
pub struct RawOwnerLock {
    /// 0 (free), an owner word, or [`UNRECOVERABLE`]. Sleepers wait on its low half.
    word: AtomicU64,
    /// Nonzero while someone sleeps (or is about to) on `word`: the unlock, after its fence,
    /// wakes one. Kept out of `word` so that an unlock is a plain store, not a swap.
    sleepers: AtomicU32,
    _reserved: AtomicU32,
}

// SAFETY: repr(C) around one AtomicU64: any bit pattern is a value (a foreign one reads as a
// held or unrecoverable lock, never as undefined behaviour).
unsafe impl ShmSafe for RawOwnerLock {}

impl fmt::Debug for RawOwnerLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.word.load(Ordering::Relaxed);
        let mut d = f.debug_struct("RawOwnerLock");
        match w {
            0 => d.field("state", &"free"),
            _ if owner_of(w).0 == 0 => d.field("state", &"unrecoverable"),
            _ => d
                .field("holder_pid", &owner_of(w).0)
                .field("sleepers", &(self.sleepers.load(Ordering::Relaxed) != 0)),
        }
        .finish()
    }
}

impl Default for RawOwnerLock {
    fn default() -> Self {
        Self::new()
    }
}

impl RawOwnerLock {
    /// A free lock (all-zero bytes, as in a fresh shared region).
    pub const fn new() -> Self {
        RawOwnerLock {
            word: AtomicU64::new(0),
            sleepers: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
        }
    }

    /// This process's owner word.
    #[inline]
    fn me() -> u64 {
        sys::owner_word(owner_word)
    }

    /// Takes the lock, waiting until `deadline` (`None`: for ever).
    ///
    /// # Errors
    /// [`SyncError::Timeout`] when `deadline` passes first; [`SyncError::Unrecoverable`] when a
    /// repair was given up ([`give_up`](Self::give_up)).
    #[inline]
    pub fn lock(&self, deadline: Option<Deadline>) -> Result<Acquired, SyncError> {
        self.lock_with(deadline, &|| true)
    }

    /// [`lock`](Self::lock), but a holder that `/proc` says is dead is taken over only if
    /// `may_take_over()` says so (asked on the slow path only). A lock shared with processes of
    /// another pid namespace must not be: their pids mean nothing here, so a live holder
    /// would look dead. Refused, the waiter waits for the holder's release (or its deadline).
    ///
    /// # Errors
    /// As [`lock`](Self::lock).
    #[inline]
    pub fn lock_with(
        &self,
        deadline: Option<Deadline>,
        may_take_over: &dyn Fn() -> bool,
    ) -> Result<Acquired, SyncError> {
        let me = Self::me();
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(Acquired::Clean);
        }
        self.lock_slow(me, deadline, may_take_over)
    }

    #[cold]
    #[inline(never)]
    fn lock_slow(
        &self,
        me: u64,
        deadline: Option<Deadline>,
        may_take_over: &dyn Fn() -> bool,
    ) -> Result<Acquired, SyncError> {
        let mut round = 0u32;
        let mut slept = false;
        let mut next_check: Option<u64> = None;
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w == 0 {
                if self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    if slept {
                        // Others may sleep too (the unlock that woke us cleared the flag):
                        // our unlock wakes the next one. Spurious at worst: one wake call.
                        self.sleepers.store(1, Ordering::Relaxed);
                    }
                    return Ok(Acquired::Clean);
                }
                continue;
            }
            if owner_of(w).0 == 0 {
                return Err(SyncError::Unrecoverable);
            }
            if round < SPIN_ROUNDS {
                if round < SPIN_ROUNDS / 2 {
                    for _ in 0..(4u32 << round.min(5)) {
                        std::hint::spin_loop();
                    }
                } else {
                    sys::sched_yield();
                }
                round += 1;
                continue;
            }
            let now = monotonic_ns();
            match next_check {
                None => next_check = Some(now + OWNER_CHECK_EVERY.as_nanos() as u64),
                Some(t) if now >= t => {
                    if !owner_alive(w, me) && may_take_over() {
                        // Take over from exactly the dead word: if another waiter took over
                        // first, or the word changed, this fails and we look again.
                        if self
                            .word
                            .compare_exchange(w, me, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok()
                        {
                            self.sleepers.store(1, Ordering::Relaxed);
                            return Ok(Acquired::OwnerDied);
                        }
                        continue;
                    }
                    next_check = Some(now + OWNER_CHECK_EVERY.as_nanos() as u64);
                }
                Some(_) => {}
            }
            if deadline.is_some_and(|d| d.has_passed()) {
                return Err(SyncError::Timeout);
            }
            // Dekker with the unlock (store 0; fence; load sleepers): either it sees our flag
            // and wakes us, or we see its store (here, or in the kernel's check of the word).
            self.sleepers.store(1, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.word.load(Ordering::Relaxed) != w {
                continue;
            }
            let mut until = (now + SLEEP_SLICE_NS).min(next_check.unwrap_or(u64::MAX));
            if let Some(d) = deadline {
                until = until.min(d.as_nanos());
            }
            // Sleeps only while the word's low half (owner pid and start bits) is unchanged:
            // every unlock stores 0.
            let _ = sys::futex_wait_low(&self.word, w as u32, Some(until));
            slept = true;
        }
    }

    /// Releases the lock (after an [`Acquired::OwnerDied`], this declares the repaired state
    /// consistent), and wakes one sleeper if any.
    ///
    /// # Safety
    /// The calling process holds the lock (took it and has not released it).
    #[inline]
    pub unsafe fn unlock(&self) {
        // SAFETY: the caller's promise.
        unsafe { self.unlock_unfenced() };
        fence(Ordering::SeqCst);
        self.wake_sleepers();
    }

    /// Releases the lock with one plain store and no fence, for a caller that issues a
    /// `SeqCst` fence next anyway (to wake its own sleepers): it must then call
    /// [`wake_sleepers`](Self::wake_sleepers) after that fence, or a sleeper may sleep until
    /// its slice ends (2 ms). The queue's put and get release their lock like this.
    ///
    /// # Safety
    /// The calling process holds the lock.
    #[inline]
    pub unsafe fn unlock_unfenced(&self) {
        debug_assert!(
            self.word.load(Ordering::Relaxed) != 0,
            "unlock of a free lock"
        );
        self.word.store(0, Ordering::Release);
    }

    /// Wakes one sleeper if the flag says one sleeps; the second half of
    /// [`unlock_unfenced`](Self::unlock_unfenced), called after a `SeqCst` fence.
    #[inline]
    pub fn wake_sleepers(&self) {
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.wake_one();
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_one(&self) {
        self.sleepers.store(0, Ordering::Relaxed);
        sys::futex_wake_low(&self.word, 1);
    }

    /// Releases the lock as unrecoverable: every later `lock` gets [`SyncError::Unrecoverable`].
    /// For a holder that took over from a dead one and found the state beyond repair.
    ///
    /// # Safety
    /// The calling process holds the lock.
    pub unsafe fn give_up(&self) {
        self.word.store(UNRECOVERABLE, Ordering::Release);
        sys::futex_wake_low(&self.word, i32::MAX);
    }

    /// The pid of the process holding the lock now (`None`: free or unrecoverable). A snapshot.
    pub fn holder_pid(&self) -> Option<u32> {
        match owner_of(self.word.load(Ordering::Relaxed)).0 {
            0 => None,
            pid => Some(pid),
        }
    }
}

/// Whether the owner named by `word` may still run: `me` is ours.
fn owner_alive(word: u64, me: u64) -> bool {
    if word == me {
        return true; // another thread of this process holds it
    }
    let (pid, start) = owner_of(word);
    match sys::process_state(pid) {
        ProcessState::Dead => false,
        // A start time of 0 in the word: the owner could not read its own; trust the pid.
        ProcessState::Alive { start: s } => start == 0 || s & START_MASK == start,
        ProcessState::Unknown => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_words_round_trip_and_keep_the_waiters_bit_free() {
        for (pid, start) in [(1, 0), (4_194_303, START_MASK), (12_345, 987_654_321)] {
            let w = owner_word(pid, start);
            assert_eq!(w & (1 << 31), 0);
            assert_eq!(owner_of(w), (pid, start));
            assert_eq!(owner_of(w | (1 << 31)), (pid, start));
        }
        assert_eq!(owner_of(UNRECOVERABLE).0, 0);
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let me = RawOwnerLock::me();
        let (pid, start) = owner_of(me);
        assert!(owner_alive(me, me));
        // Our pid with another start time: a process that had our pid before us.
        let other = owner_word(pid, start.wrapping_add(1) & START_MASK);
        assert!(!owner_alive(other, me) || start == 0);
    }

    #[test]
    fn lock_unlock_and_give_up() {
        let l = RawOwnerLock::new();
        assert!(matches!(l.lock(None), Ok(Acquired::Clean)));
        assert_eq!(l.holder_pid(), Some(std::process::id()));
        // SAFETY: we hold it.
        unsafe { l.unlock() };
        assert_eq!(l.holder_pid(), None);
        assert!(matches!(l.lock(None), Ok(Acquired::Clean)));
        // SAFETY: we hold it.
        unsafe { l.give_up() };
        assert!(matches!(l.lock(None), Err(SyncError::Unrecoverable)));
    }

    #[test]
    fn a_dead_owner_is_taken_over() {
        // A word naming a pid that no process has.
        let l = RawOwnerLock::new();
        l.word.store(owner_word(4_194_301, 5), Ordering::Relaxed);
        let t = std::time::Instant::now();
        assert!(matches!(l.lock(None), Ok(Acquired::OwnerDied)));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(l.holder_pid(), Some(std::process::id()));
    }

    #[test]
    fn a_dead_owner_is_not_taken_over_when_refused() {
        let l = RawOwnerLock::new();
        let dead = owner_word(4_194_301, 5);
        l.word.store(dead, Ordering::Relaxed);
        let r = l.lock_with(
            Some(Deadline::after(std::time::Duration::from_millis(20))),
            &|| false,
        );
        assert!(matches!(r, Err(SyncError::Timeout)), "{r:?}");
        assert_eq!(l.word.load(Ordering::Relaxed), dead);
    }

    #[test]
    fn a_live_holder_keeps_it_until_the_deadline() {
        let l = RawOwnerLock::new();
        assert!(matches!(l.lock(None), Ok(Acquired::Clean)));
        let t = std::time::Instant::now();
        let r = l.lock(Some(Deadline::after(std::time::Duration::from_millis(30))));
        assert!(matches!(r, Err(SyncError::Timeout)));
        assert!(t.elapsed() >= std::time::Duration::from_millis(30));
    }
}
