//! Blocking around the attempts under the locks: how long a call may wait, the refusal snapshot,
//! spinning on the other side's cursor, sleeping on its wait word (with a look every
//! [`RECHECK_EVERY`]), and the endpoint registry that tells a blocked call its peers are gone.
//!
//! A put or get that goes through reads nothing here: the first refusal takes a snapshot of the
//! other side (its wait word's sequence and its cursor) and tries once more; only then does it
//! wait for either to move (see docs/DESIGN.md, "Blocking").

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baozi_sync::{Deadline, SyncError, WaitWord};

use super::{Batch, GetFail, PutFail, Queue, Refusal, NOWAIT_LOCK_WAIT};
use crate::codec::CodecError;
use crate::endpoint::{self, Endpoint, Endpoints, Role};
use crate::error::QueueError;
use crate::layout::{self, HeadSide, TailSide};
use crate::ring;

/// How often a sleeping put or get looks at the other side's cursor by itself. A committer killed
/// between its commit and its wake-up (its lock already released, so nobody repairs) leaves the
/// sleepers asleep; this bounds how long (issue 15 asks for ≤ 10 ms; it was a whole
/// [`WAIT_SLICE`](baozi_sync::WAIT_SLICE), 100 ms). Each look is a futex timeout and two loads:
/// 200 wake-ups a second per sleeping call, measured at 0.4–0.6 % of a core on the 2-vCPU
/// development VM (`examples/hot_path.rs idle`).
const RECHECK_EVERY: Duration = Duration::from_millis(5);

/// How long a call may wait.
#[derive(Clone, Copy, Debug)]
pub(super) enum Wait {
    No,
    Until(Deadline),
    Forever,
}

/// `None`: as long as it takes; zero: not at all; otherwise at most that long.
pub(super) fn wait_for(timeout: Option<Duration>) -> Wait {
    match timeout {
        None => Wait::Forever,
        Some(t) if t.is_zero() => Wait::No,
        Some(t) => Wait::timeout(t),
    }
}

impl Wait {
    pub(super) fn timeout(d: Duration) -> Self {
        Wait::Until(Deadline::after(d))
    }

    /// How long to wait for the lock itself. The lock is held only for a copy, so this only
    /// matters when its holder is stopped (SIGSTOP, a debugger): then a `_nowait` call gives up
    /// after [`NOWAIT_LOCK_WAIT`] instead of blocking with it.
    pub(super) fn lock_deadline(self) -> Option<Deadline> {
        match self {
            Wait::Until(d) => Some(d),
            Wait::No => Some(Deadline::after(NOWAIT_LOCK_WAIT)),
            Wait::Forever => None,
        }
    }
}

/// The other side as a waiter last saw it: its commit word and the wake-up word's sequence.
#[derive(Clone, Copy, Debug)]
struct Seen {
    cursor: u64,
    seq: u32,
}

impl Seen {
    /// The sequence first: a notify that bumps it after this look is seen as a change.
    fn now(word: &WaitWord, cursor: &AtomicU64) -> Self {
        let seq = word.seq();
        Seen {
            cursor: cursor.load(Ordering::Acquire),
            seq,
        }
    }

    fn changed(&self, word: &WaitWord, cursor: &AtomicU64) -> bool {
        cursor.load(Ordering::Acquire) != self.cursor || word.seq() != self.seq
    }
}

impl<T> Queue<T> {
    /// The length word of a single message, or TooLarge if no frame can ever hold it.
    pub(super) fn single_len(&self, bytes: &[u8]) -> Result<u32, PutFail> {
        match ring::frame_len(bytes.len()) {
            Some(_) => Ok(bytes.len() as u32),
            None => Err(PutFail::TooLarge {
                needed: bytes.len(),
                capacity: self.cap as usize,
            }),
        }
    }

    pub(super) fn put_batch(&self, batch: &Batch<'_>, wait: Wait) -> Result<(), PutFail> {
        let mut needed: u64 = 0;
        for &len in batch.lens {
            needed += u64::from(ring::frame_len(len as usize).unwrap_or(u32::MAX));
        }
        if self.maxsize != 0 && batch.lens.len() as u64 > u64::from(self.maxsize) {
            return Err(PutFail::TooMany {
                items: batch.lens.len(),
                maxsize: self.maxsize as usize,
            });
        }
        if needed > u64::from(self.cap) {
            return Err(PutFail::TooLarge {
                needed: needed as usize,
                capacity: self.cap as usize,
            });
        }
        let word = &self.head().wait;
        let mut peers_gone = false;
        // What the consumers' side looked like before the latest refused attempt: taken only
        // after a first refusal, so that a put that goes through reads nothing of theirs.
        let mut seen: Option<Seen> = None;
        loop {
            match self.try_put(batch, wait.lock_deadline()) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(Refusal::Closed)) => return Err(PutFail::Closed),
                // Full, with no consumer left: looked once more after learning it, still full.
                Ok(Err(Refusal::NoRoom)) if peers_gone => return Err(PutFail::Disconnected),
                Ok(Err(Refusal::NoRoom)) if self.peers_gone(Role::Consumer, wait) => {
                    peers_gone = true;
                    continue;
                }
                Ok(Err(Refusal::NoRoom)) => {}
                Err(QueueError::Sync(SyncError::Timeout)) => return Err(PutFail::Full),
                Err(e) => return Err(PutFail::Failed(e)),
            }
            let cursor = &self.head().cursor;
            match seen {
                None if matches!(wait, Wait::No) => return Err(PutFail::Full),
                // The first refusal: look at them, then try once more before waiting, so that a
                // get committed between that attempt and the look is not waited for.
                None => {}
                Some(s) if !self.wait_for_change(word, cursor, s, wait) => {
                    return Err(PutFail::Full)
                }
                Some(_) => {}
            }
            seen = Some(Seen::now(word, cursor));
        }
    }

    pub(super) fn get_frames(
        &self,
        max: usize,
        wait: Wait,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), CodecError>,
    ) -> Result<usize, GetFail> {
        let word = &self.tail().wait;
        let mut peers_gone = false;
        // As in put_batch: the producers' side is looked at only after a refusal.
        let mut seen: Option<Seen> = None;
        loop {
            match self.try_get(max, wait.lock_deadline(), sink) {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(Refusal::Closed)) => return Err(GetFail::Closed),
                // Empty, with no producer left: looked once more after learning it, still empty.
                Ok(Err(Refusal::NoRoom)) if peers_gone => return Err(GetFail::Disconnected),
                Ok(Err(Refusal::NoRoom)) if self.peers_gone(Role::Producer, wait) => {
                    peers_gone = true;
                    continue;
                }
                Ok(Err(Refusal::NoRoom)) => {}
                Err(GetFail::Failed(QueueError::Sync(SyncError::Timeout))) => {
                    return Err(GetFail::Empty)
                }
                Err(e) => return Err(e),
            }
            let cursor = &self.tail().cursor;
            match seen {
                None if matches!(wait, Wait::No) => return Err(GetFail::Empty),
                None => {}
                Some(s) if !self.wait_for_change(word, cursor, s, wait) => {
                    return Err(GetFail::Empty)
                }
                Some(_) => {}
            }
            seen = Some(Seen::now(word, cursor));
        }
    }

    /// Whether the endpoints of `role` once registered and none is left now: a blocked call of
    /// the other side can stop waiting. Counts at most once per [`endpoint::CHECK_EVERY`] per
    /// handle, and never for a `_nowait` call or when `role` never registered (one load).
    #[cold]
    fn peers_gone(&self, role: Role, wait: Wait) -> bool {
        if matches!(wait, Wait::No)
            || self.meta().peers_ever.load(Ordering::Acquire) & role.ever_bit() == 0
        {
            return false;
        }
        let now = baozi_sync::monotonic_ns();
        let last = self.last_peer_check.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < endpoint::CHECK_EVERY.as_nanos() as u64 {
            return false;
        }
        self.last_peer_check.store(now, Ordering::Relaxed);
        let live = endpoint::count(self.endpoint_slots());
        match role {
            Role::Producer => live.producers == 0,
            Role::Consumer => live.consumers == 0,
        }
    }

    fn endpoint_slots(&self) -> &[std::sync::atomic::AtomicU64] {
        endpoint::slots(&self.region, layout::endpoints_at(self.cap))
    }

    fn register(&self, role: Role) -> Result<Endpoint, QueueError> {
        let (index, word) = endpoint::register(self.endpoint_slots(), role).ok_or_else(|| {
            QueueError::Mismatch {
                name: self.region.describe(),
                detail: format!(
                    "every one of its {} endpoint slots is taken by a live process",
                    endpoint::SLOTS
                ),
            }
        })?;
        self.meta()
            .peers_ever
            .fetch_or(role.ever_bit(), Ordering::AcqRel);
        // Leaving wakes the other side: getters sleep on the tail's word, putters on the head's.
        let wake_at = match role {
            Role::Producer => layout::TAIL_AT + std::mem::offset_of!(TailSide, wait),
            Role::Consumer => layout::HEAD_AT + std::mem::offset_of!(HeadSide, wait),
        };
        Ok(Endpoint::new(
            self.region.clone(),
            layout::endpoints_at(self.cap),
            index,
            word,
            wake_at,
        ))
    }

    /// Registers this process as a producer until the returned [`Endpoint`] is dropped (or the
    /// process dies). Once any producer has registered, a `get` blocked on the empty queue
    /// returns [`GetError::Disconnected`](crate::GetError::Disconnected) when none is left
    /// alive — within about [`WAIT_SLICE`](baozi_sync::WAIT_SLICE) +
    /// [`CHECK_EVERY`](crate::CHECK_EVERY) of the last one's death — instead of waiting for ever.
    /// A queue nobody registers with keeps Python's behaviour.
    ///
    /// ```
    /// use baozi_queue::{GetError, Queue};
    /// let q: Queue<String> = Queue::new(0, 4096)?;
    /// let producer = q.register_producer()?;
    /// q.put("last bun".to_owned()).unwrap();
    /// drop(producer); // (or the producer process is killed)
    /// assert_eq!(q.get().unwrap(), "last bun"); // what was put is still delivered
    /// assert!(matches!(q.get(), Err(GetError::Disconnected)));
    /// # Ok::<(), baozi_queue::QueueError>(())
    /// ```
    ///
    /// # Errors
    /// [`QueueError::Mismatch`] when all 64 slots are held by live processes.
    pub fn register_producer(&self) -> Result<Endpoint, QueueError> {
        self.register(Role::Producer)
    }

    /// Registers this process as a consumer: once any consumer has registered, a `put` blocked
    /// on the full queue returns [`PutError::Disconnected`](crate::PutError::Disconnected) (with
    /// the item) when none is left.
    ///
    /// # Errors
    /// As [`register_producer`](Self::register_producer).
    pub fn register_consumer(&self) -> Result<Endpoint, QueueError> {
        self.register(Role::Consumer)
    }

    /// The producers and consumers registered and alive now (a liveness query; it frees the
    /// slots of registered processes that died).
    pub fn endpoints(&self) -> Endpoints {
        endpoint::count(self.endpoint_slots())
    }

    /// Waits until the other side's commit word `cursor` or the wake-up `word` moves past
    /// `seen` (someone committed the opposite operation, closed the queue, left, or repaired a
    /// dead holder's state): spinning first, then sleeping. False when the wait is over with no
    /// change.
    ///
    /// Commits do not bump `word` (they call [`WaitWord::notify_sleepers`]), so an awake waiter
    /// watches the cursor itself; the events that do not move a cursor (close, an endpoint
    /// leaving, a repair) bump `word` with [`WaitWord::notify`].
    fn wait_for_change(&self, word: &WaitWord, cursor: &AtomicU64, seen: Seen, wait: Wait) -> bool {
        let deadline = match wait {
            Wait::No => return false,
            Wait::Until(d) if d.has_passed() => return false,
            Wait::Until(d) => Some(d),
            Wait::Forever => None,
        };
        let start = baozi_sync::monotonic_ns();
        let changed = || seen.changed(word, cursor);
        if self.spin.spin_until(changed) {
            return true;
        }
        // Sleep for at most WAIT_SLICE (or until the deadline), then let the caller look at the
        // queue itself under the lock (and count the endpoints). Within the slice, wake every
        // RECHECK_EVERY to look at the cursor: a process killed between its commit (and unlock)
        // and its wake-up leaves the wait word unchanged while the queue did change, and only a
        // look at the cursor sees that. After the deadline the caller still gets one last look,
        // so a timed call never reports Empty or Full about a queue that is not.
        let slice = Deadline::after(baozi_sync::WAIT_SLICE);
        let slice_end = deadline.map_or(slice, |d| d.min(slice));
        loop {
            let until = slice_end.min_after(RECHECK_EVERY);
            let _ = word.wait_unless(seen.seq, Some(until), changed);
            if changed() {
                // Had the spin lasted this long, it would have caught the change: learn from it
                // (without this, two peers that both fell asleep never spin again).
                self.spin
                    .waited(baozi_sync::monotonic_ns().saturating_sub(start));
                return true;
            }
            if until >= slice_end {
                return true;
            }
        }
    }
}
