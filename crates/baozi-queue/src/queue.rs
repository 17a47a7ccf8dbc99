//! [`Queue`]: the handle, its region, and the two attempts under the locks (put, get) with
//! their commit points and the repair after a dead holder; qsize/empty/full, close, shutdown.
//!
//! * [`options`]: [`QueueOptions`], how a queue is built;
//! * [`blocking`]: waiting around the attempts (the refusal snapshot, spin, sleep, endpoints);
//! * [`repair`]: taking a lock, and the repair after a holder that died;
//! * [`api`]: the typed operations (one item, batches, bytes) on top of all this.

mod api;
mod blocking;
mod options;
mod repair;

pub use options::QueueOptions;

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use baozi_shm::{ObjectKind, Region, ShmError, TypeTag, DEFAULT_READY_WAIT};
use baozi_sync::{Deadline, RawOwnerLock, SpinPolicy, WaitWord};

use crate::codec::{CodecError, Message};
use crate::crash::{self, Point};
use crate::error::{PutError, QueueError};
use crate::layout::{self, HeadSide, Meta, TailSide, Tasks};
use crate::ring::{self, Appender, Cursor};
use api::GetFail;

/// The byte capacity [`QueueOptions::default`] picks: 1 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// The longest a `_nowait` call waits for the queue's lock (see [`Queue::put_nowait`]).
pub const NOWAIT_LOCK_WAIT: Duration = Duration::from_secs(1);

/// The largest `maxsize` accepted.
pub const MAX_MAXSIZE: usize = 1 << 30;

/// Messages to put under one lock: payloads back to back, and their lengths.
struct Batch<'a> {
    data: &'a [u8],
    lens: &'a [u32],
}

/// Why an attempt under the lock did not complete.
enum Refusal {
    NoRoom,
    Closed,
}

/// A put that did not happen, before the item is handed back.
enum PutFail {
    Full,
    TooLarge { needed: usize, capacity: usize },
    TooMany { items: usize, maxsize: usize },
    Closed,
    Disconnected,
    Failed(QueueError),
}

impl PutFail {
    fn with<T>(self, item: T) -> PutError<T> {
        match self {
            PutFail::Full => PutError::Full(item),
            PutFail::TooLarge { needed, capacity } => PutError::TooLarge {
                item,
                needed,
                capacity,
            },
            PutFail::TooMany { items, maxsize } => PutError::TooMany {
                item,
                items,
                maxsize,
            },
            PutFail::Closed => PutError::Closed(item),
            PutFail::Disconnected => PutError::Disconnected(item),
            PutFail::Failed(e) => PutError::Failed(item, e),
        }
    }
}

/// A bounded, many-producer many-consumer queue in shared memory, with the contract of Python's
/// `multiprocessing.Queue`.
///
/// * `maxsize` bounds the number of items (0: no item limit); the byte capacity bounds memory.
/// * [`put`](Self::put) blocks while full, [`put_timeout`](Self::put_timeout) gives up with
///   [`PutError::Full`] (handing the item back), [`put_nowait`](Self::put_nowait) never waits;
///   [`get`](Self::get), [`get_timeout`](Self::get_timeout), [`get_nowait`](Self::get_nowait)
///   likewise with [`GetError::Empty`](crate::GetError::Empty). A message that can never fit is
///   [`PutError::TooLarge`] at once, never a hang.
/// * [`qsize`](Self::qsize), [`empty`](Self::empty), [`full`](Self::full) are exact the moment a
///   put or get returns (there is no feeder thread).
/// * [`put_many`](Self::put_many) / [`get_many`](Self::get_many) move a batch under one lock.
/// * [`close`](Self::close): later puts fail, getters drain what is left and then see
///   [`GetError::Closed`](crate::GetError::Closed) instead of waiting for ever.
///
/// A process killed at any instant — even holding the lock in the middle of a copy — leaves the
/// queue usable: the next process that waits for the lock finds its holder dead, takes it over,
/// checks the cursors and goes on. A
/// message is in the queue exactly when the store of the producer cursor that commits it has
/// happened, so none is torn, lost after its put returned, or delivered twice.
///
/// ```
/// use baozi_queue::{GetError, Queue};
/// use std::time::Duration;
///
/// let q: Queue<String> = Queue::new(2, 4096)?;
/// q.put("pork".to_owned()).unwrap();
/// q.put_nowait("cabbage".to_owned()).unwrap();
/// assert!(q.full());
/// assert!(q.put_nowait("red bean".to_owned()).unwrap_err().is_full());
/// assert_eq!(q.get().unwrap(), "pork");
/// assert_eq!(q.qsize(), 1);
/// assert_eq!(q.get_timeout(Duration::from_millis(10)).unwrap(), "cabbage");
/// assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
/// # Ok::<(), baozi_queue::QueueError>(())
/// ```
///
/// # Handles
///
/// A `Queue` is a handle: [`clone`](Clone::clone) gives another handle to the same queue (no
/// syscall), to move into a thread or a [`Process`](https://docs.rs/baozi-process). With the
/// `serde` feature a handle is also a serde value: serialising it writes a reference, and
/// deserialising it in any process of the machine attaches to the same queue, so a queue can be
/// a pool task's argument or travel inside a message. Opening or attaching checks the message
/// type ([`ShmError::TypeMismatch`]).
pub struct Queue<T = Vec<u8>> {
    region: Region,
    /// Base address of the region in this process (owned by `region`).
    base: NonNull<u8>,
    cap: u32,
    maxsize: u32,
    spin: SpinPolicy,
    /// When this handle last counted the endpoints (monotonic ns; 0: never).
    last_peer_check: AtomicU64,
    _type: PhantomData<fn(T) -> T>,
}

// SAFETY: `base` points into `region`, which the queue owns and which is valid in every thread;
// all shared state is reached through atomics or under the process-shared lock.
unsafe impl<T> Send for Queue<T> {}
// SAFETY: as above: every method is safe to call from several threads at once.
unsafe impl<T> Sync for Queue<T> {}

/// The type a queue of `T` records: none for raw bytes (`Vec<u8>`), which is the untyped view:
/// a bytes queue may be opened with any message type (each message is still decoded and checked
/// on `get`), and any queue may be opened as `Queue<Vec<u8>>` to see its raw frames.
fn message_tag<T>() -> Option<TypeTag> {
    (std::any::type_name::<T>() != std::any::type_name::<Vec<u8>>()).then(TypeTag::of::<T>)
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            region: self.region.clone(),
            base: self.base,
            cap: self.cap,
            maxsize: self.maxsize,
            spin: self.spin.clone(),
            last_peer_check: AtomicU64::new(0),
            _type: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("region", &self.region.describe())
            .field("maxsize", &self.maxsize)
            .field("capacity", &self.cap)
            .field("qsize", &self.qsize())
            .finish()
    }
}

impl<T: Message> Queue<T> {
    /// A queue of at most `maxsize` items (0: no item limit) and `capacity_bytes` of ring,
    /// shared with children forked after this call.
    ///
    /// # Errors
    /// [`QueueError::Shm`] for an out-of-range size or a failed mapping.
    pub fn new(maxsize: usize, capacity_bytes: usize) -> Result<Self, QueueError> {
        QueueOptions::new()
            .maxsize(maxsize)
            .capacity(capacity_bytes)
            .anonymous()
    }

    /// Creates the named queue `/dev/shm/baozi-NAME`, for unrelated processes to
    /// [`open`](Self::open). This handle owns the name (see [`persist`](Self::persist)).
    ///
    /// # Errors
    /// As [`QueueOptions::create`].
    pub fn create(name: &str, maxsize: usize, capacity_bytes: usize) -> Result<Self, QueueError> {
        QueueOptions::new()
            .maxsize(maxsize)
            .capacity(capacity_bytes)
            .create(name)
    }

    /// Opens a named queue made by [`create`](Self::create), waiting up to 2 s for its creator
    /// to finish building it.
    ///
    /// # Errors
    /// [`QueueError::Shm`] with the precise cause: [`ShmError::NotFound`],
    /// [`ShmError::WrongMagic`] (not a baozi object), [`ShmError::VersionMismatch`],
    /// [`ShmError::WrongKind`] (say, a heap), [`ShmError::Truncated`],
    /// [`ShmError::LayoutMismatch`], [`ShmError::NotReady`], [`ShmError::PermissionDenied`].
    pub fn open(name: &str) -> Result<Self, QueueError> {
        Self::open_with(name, DEFAULT_READY_WAIT, true)
    }

    /// [`open`](Self::open) with the wait for a creator and the spinning chosen.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(name: &str, ready_wait: Duration, spin: bool) -> Result<Self, QueueError> {
        let region = Region::open_with(name, Duration::ZERO, ready_wait)?;
        Self::from_region(region, ready_wait, spin)
    }

    /// Opens a named queue, waiting up to `wait` for the name to appear and for its creator to
    /// build it: for a consumer that may start before its producer.
    ///
    /// # Errors
    /// As [`open`](Self::open); [`ShmError::NotFound`] when the name did not appear in time.
    pub fn open_timeout(name: &str, wait: Duration) -> Result<Self, QueueError> {
        let start = std::time::Instant::now();
        let region = Region::open_timeout(name, wait)?;
        Self::from_region(region, wait.saturating_sub(start.elapsed()), true)
    }

    /// As [`QueueOptions::create_or_open`] with these sizes: exactly one of several racing
    /// processes creates the queue, the others open it.
    ///
    /// # Errors
    /// As [`QueueOptions::create_or_open`].
    pub fn create_or_open(
        name: &str,
        maxsize: usize,
        capacity_bytes: usize,
    ) -> Result<Self, QueueError> {
        QueueOptions::new()
            .maxsize(maxsize)
            .capacity(capacity_bytes)
            .create_or_open(name)
    }

    /// Attaches to the queue a serialised handle refers to (what `Deserialize` does).
    ///
    /// # Errors
    /// [`ShmError::Gone`] when no process holds the queue any more, the checks of
    /// [`open`](Self::open), and [`ShmError::TypeMismatch`].
    pub fn attach(r: &baozi_shm::RegionRef) -> Result<Self, QueueError> {
        Self::from_region(Region::attach(r)?, DEFAULT_READY_WAIT, true)
    }

    /// Checks the queue in `region` (any route: name, reference) and wraps it.
    fn from_region(region: Region, ready_wait: Duration, spin: bool) -> Result<Self, QueueError> {
        let who = region.describe();
        let snap = region.header()?.wait_ready(
            &who,
            region.len() as u64,
            ObjectKind::QUEUE,
            ready_wait,
        )?;
        if region.len() < layout::RING_AT {
            return Err(ShmError::Truncated {
                name: who,
                size: region.len() as u64,
                needed: layout::RING_AT as u64,
            }
            .into());
        }
        let meta: &Meta = region.get(baozi_shm::Offset::new(layout::META_AT as u64))?;
        let maxsize = meta.maxsize.load(Ordering::Relaxed);
        let cap = meta.capacity.load(Ordering::Relaxed);
        snap.check_layout(&who, layout::layout_hash(maxsize, cap))?;
        if let (Some(tag), true) = (message_tag::<T>(), snap.type_hash != 0) {
            snap.check_type(&who, tag)?;
        }
        let corrupt = |detail: String| QueueError::Corrupt {
            name: who.clone(),
            detail,
        };
        if !(ring::MIN_CAPACITY..=ring::MAX_CAPACITY).contains(&cap) || cap % 8 != 0 {
            return Err(corrupt(format!("capacity {cap}")));
        }
        let total = layout::total_len(cap) as u64;
        if snap.total_size != total || (region.len() as u64) < total {
            return Err(ShmError::Truncated {
                name: who,
                size: region.len() as u64,
                needed: total,
            }
            .into());
        }
        let q = Queue::wrap(region, maxsize, cap, spin);
        let ns = baozi_sync::pid_namespace();
        if ns == 0 || q.meta().pid_ns.load(Ordering::Relaxed) != ns {
            // Pids in this queue's lock words now mean different processes to different
            // openers: no waiter may take a lock over on what `/proc` says (see Meta).
            q.meta().mixed_ns.store(1, Ordering::Relaxed);
        }
        if let Some((head, tail)) = q.stable_cursors() {
            if !ring::consistent(cap, head, tail) {
                return Err(corrupt(format!("cursors head {head:?} tail {tail:?}")));
            }
        }
        Ok(q)
    }
}

impl<T> Queue<T> {
    fn wrap(region: Region, maxsize: u32, cap: u32, spin: bool) -> Self {
        let base = NonNull::new(region.as_ptr()).expect("a mapped region is never at address 0");
        Queue {
            region,
            base,
            cap,
            maxsize,
            spin: if spin {
                SpinPolicy::new()
            } else {
                SpinPolicy::never()
            },
            last_peer_check: AtomicU64::new(0),
            _type: PhantomData,
        }
    }

    fn build(region: Region, maxsize: u32, cap: u32, spin: bool) -> Result<Self, QueueError> {
        region.header()?.begin(
            ObjectKind::QUEUE,
            layout::total_len(cap) as u64,
            layout::layout_hash(maxsize, cap),
            std::process::id(),
        );
        region
            .header()?
            .set_identity(region.id(), message_tag::<T>());
        let q = Queue::wrap(region, maxsize, cap, spin);
        q.meta().maxsize.store(maxsize, Ordering::Relaxed);
        q.meta().capacity.store(cap, Ordering::Relaxed);
        q.meta()
            .pid_ns
            .store(baozi_sync::pid_namespace(), Ordering::Relaxed);
        // The locks, cursors and counters start at zero (a free lock is all-zero bytes), as the
        // fresh region already is.
        q.region.header()?.publish();
        Ok(q)
    }

    // --- views of the shared parts (offsets checked against the region length at build/open) ---

    fn part<P>(&self, at: usize) -> &P {
        // SAFETY: `at` is one of the layout constants below RING_AT; build/open checked that the
        // region holds total_len(cap) > RING_AT bytes, the offsets are CACHE_LINE-aligned, and
        // every part type is ShmSafe (valid for any bytes, shared only through atomics). The
        // reference borrows self, which owns the mapping.
        unsafe { &*self.base.as_ptr().add(at).cast::<P>() }
    }

    fn meta(&self) -> &Meta {
        self.part(layout::META_AT)
    }
    /// Producers' lock: the tail cursor, the ring's free space, `closed`.
    fn put_lock(&self) -> &RawOwnerLock {
        self.part(layout::PUT_LOCK_AT)
    }
    /// Consumers' lock: the head cursor and the frames between head and tail.
    fn get_lock(&self) -> &RawOwnerLock {
        self.part(layout::GET_LOCK_AT)
    }
    fn tail(&self) -> &TailSide {
        self.part(layout::TAIL_AT)
    }
    fn head(&self) -> &HeadSide {
        self.part(layout::HEAD_AT)
    }
    fn tasks(&self) -> &Tasks {
        self.part(layout::TASKS_AT)
    }
    pub(crate) fn tasks_done(&self) -> &AtomicU32 {
        &self.tasks().done
    }
    pub(crate) fn all_done(&self) -> &WaitWord {
        &self.tasks().all_done
    }

    fn tail_cursor(&self) -> Cursor {
        Cursor::unpack(self.tail().cursor.load(Ordering::Acquire))
    }
    fn head_cursor(&self) -> Cursor {
        Cursor::unpack(self.head().cursor.load(Ordering::Acquire))
    }
    pub(crate) fn puts(&self) -> u32 {
        self.tail_cursor().count
    }

    /// Head and tail as they were at one instant, read without a lock (for `open`): the tail
    /// read twice around the head, unchanged. None if puts never paused long enough to tell.
    fn stable_cursors(&self) -> Option<(Cursor, Cursor)> {
        for _ in 0..1000 {
            let tail = self.tail_cursor();
            let head = self.head_cursor();
            if self.tail_cursor() == tail {
                return Some((head, tail));
            }
        }
        None
    }

    fn ring_ptr(&self, off: u32) -> *mut u8 {
        debug_assert!(
            off <= self.cap,
            "one past the end at most (for an empty payload at the end)"
        );
        self.base
            .as_ptr()
            .wrapping_add(layout::RING_AT + off as usize)
    }

    /// Reads a frame word. Only under the lock.
    fn read_u32(&self, off: u32) -> u32 {
        debug_assert!(off % 4 == 0 && off + 4 <= self.cap);
        // SAFETY: off+4 <= cap (callers pass offsets validated by ring::locate's bounds logic:
        // frame offsets are multiples of 8 below cap), RING_AT is 8-aligned, and we hold the
        // lock, so no process writes these bytes now.
        unsafe { self.ring_ptr(off).cast::<u32>().read() }
    }

    /// Writes a frame word. Only under the lock, into free space.
    fn write_u32(&self, off: u32, v: u32) {
        debug_assert!(off % 4 == 0 && off + 4 <= self.cap);
        // SAFETY: as in read_u32; the bytes are free space that no reader looks at before the
        // commit that follows.
        unsafe { self.ring_ptr(off).cast::<u32>().write(v) }
    }

    /// The immediate shutdown's discard `(from, upto)`, `(0, 0)` if none.
    pub(crate) fn discard(&self) -> (u32, u32) {
        let d = self.tasks().discarded.load(Ordering::Acquire);
        ((d >> 32) as u32, d as u32)
    }

    /// How many items an immediate shutdown threw away.
    pub(crate) fn discarded(&self) -> u32 {
        let (from, upto) = self.discard();
        upto.wrapping_sub(from)
    }

    /// Reads the head (the consumers' line) and stores what it says in the producers' bounds.
    /// Returns (head count, bytes in use). Under the put lock.
    fn refresh_room(&self, tail: Cursor) -> (u32, u32) {
        let head = self.head_cursor();
        let used = ring::used(self.cap, head, tail);
        let side = self.tail();
        side.seen_head_count.store(head.count, Ordering::Relaxed);
        side.used_bound.store(used, Ordering::Relaxed);
        (head.count, used)
    }

    // --- the two operations under the locks ---

    /// Writes the batch's frames from `appender`'s position, or None (nothing committed, and the
    /// bytes written lie in free space) if they do not all fit.
    #[inline]
    fn write_frames(&self, batch: &Batch<'_>, mut appender: Appender) -> Option<Appender> {
        let mut from = 0usize;
        for &len in batch.lens {
            let flen = ring::frame_len(len as usize).expect("checked by the caller");
            let place = appender.place(flen)?;
            if let Some(m) = place.marker_at {
                self.write_u32(m, ring::WRAP_MARKER);
            }
            self.write_u32(place.at, len);
            self.write_u32(place.at + 4, ring::check_word(len));
            let payload = &batch.data[from..from + len as usize];
            // SAFETY: the placement lies inside the ring's free space (Appender checked it
            // against an upper bound of the bytes in use, taken under the put lock); the source
            // is our own slice, which cannot overlap the shared ring.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    payload.as_ptr(),
                    self.ring_ptr(place.at).add(ring::FRAME_HEADER as usize),
                    payload.len(),
                );
            }
            from += len as usize;
        }
        Some(appender)
    }

    fn try_put(
        &self,
        batch: &Batch<'_>,
        lock_deadline: Option<Deadline>,
    ) -> Result<Result<(), Refusal>, QueueError> {
        let guard = self.lock(self.put_lock(), lock_deadline)?;
        if self.meta().closed.load(Ordering::Relaxed) != 0 {
            return Ok(Err(Refusal::Closed));
        }
        let side = self.tail();
        let tail = Cursor::unpack(side.cursor.load(Ordering::Relaxed));
        let n = batch.lens.len() as u32;
        let first_frame = ring::frame_len(batch.lens[0] as usize).expect("checked by the caller");
        // First from the bounds on our own line; the head (the consumers' line) is read only
        // when they say no, or when they would wrap a frame that might start an empty ring.
        let mut seen = side.seen_head_count.load(Ordering::Relaxed);
        let mut used = side.used_bound.load(Ordering::Relaxed);
        let mut fresh = false;
        let appender = loop {
            let in_ring = tail.count.wrapping_sub(seen);
            let empty = in_ring == 0;
            let items_ok =
                self.maxsize == 0 || u64::from(in_ring) + u64::from(n) <= u64::from(self.maxsize);
            if items_ok {
                // An empty ring's head is at the tail's offset (a dead restart is repaired
                // before anyone else holds the put lock), so it goes on there, or restarts.
                let start = Appender::at(self.cap, tail.off, if empty { 0 } else { used });
                let wraps = start.wraps(first_frame);
                // A wrap with a stale bound might hide an empty ring (which restarts instead):
                // wrap only on a fresh look.
                if !wraps || (fresh && !empty) {
                    if let Some(a) = self.write_frames(batch, start) {
                        break a;
                    }
                }
                if empty {
                    // "Empty" is final: nobody takes from an empty ring, and no other producer
                    // puts while we hold the put lock. Any batch of up to `cap` bytes fits.
                    match self.write_frames(batch, Appender::restart(self.cap)) {
                        Some(a) => break a,
                        None => return Ok(Err(Refusal::NoRoom)),
                    }
                }
            }
            if fresh {
                return Ok(Err(Refusal::NoRoom));
            }
            (seen, used) = self.refresh_room(tail);
            fresh = true;
        };
        if appender.reset_head {
            // The restart (see Appender::restart): the ring is empty until the commit below,
            // and a consumer that sees the commit (reading the tail first) sees this store too.
            let h = Cursor {
                off: 0,
                count: seen,
            };
            self.head().cursor.store(h.pack(), Ordering::Relaxed);
        }
        // Raised before the commit, so that it stays an upper bound whenever we die.
        side.used_bound.store(appender.used(), Ordering::Relaxed);
        crash::point(Point::PutBeforeCommit);
        // COMMIT: from this store on, the frames exist.
        let t = Cursor {
            off: appender.end(),
            count: tail.count.wrapping_add(n),
        };
        side.cursor.store(t.pack(), Ordering::Release);
        crash::point(Point::PutAfterCommit);
        // Getters that are awake watch the tail itself; only sleepers need a wake-up.
        guard.release_and_notify(&side.wait, Point::PutBeforeWake);
        Ok(Ok(()))
    }

    /// Takes up to `max` frames, handing each payload to `sink`. A frame whose sink fails is
    /// taken only if it is the first (so the caller gets its bytes); otherwise it stays.
    fn try_get(
        &self,
        max: usize,
        lock_deadline: Option<Deadline>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), CodecError>,
    ) -> Result<Result<usize, Refusal>, GetFail> {
        let guard = self
            .lock(self.get_lock(), lock_deadline)
            .map_err(GetFail::Failed)?;
        let side = self.head();
        let mut head = Cursor::unpack(side.cursor.load(Ordering::Acquire));
        let want = u32::try_from(max).unwrap_or(u32::MAX);
        // First the frames we already know are committed: no read of the producers' line
        // unless they are fewer than asked for.
        let mut avail = Cursor::unpack(side.seen_tail.load(Ordering::Relaxed))
            .count
            .wrapping_sub(head.count);
        if avail < want {
            // In this order: `closed` before the tail (close() stores it under the put lock
            // after every put it lets through, so a closed queue's tail is final once `closed`
            // is seen), and the tail before the head (a restart moves the head before its
            // commit).
            let closed = self.meta().closed.load(Ordering::Acquire) != 0;
            let tail = self.tail_cursor();
            head = self.head_cursor();
            side.seen_tail.store(tail.pack(), Ordering::Relaxed);
            avail = ring::items(head, tail);
            if avail == 0 {
                return Ok(Err(if closed {
                    Refusal::Closed
                } else {
                    Refusal::NoRoom
                }));
            }
        }
        let take = avail.min(want);
        let mut off = head.off;
        let mut taken = 0u32;
        let mut failure = None;
        while taken < take {
            let (at, len, next) =
                ring::locate(self.cap, off, |o| self.read_u32(o)).map_err(|b| {
                    GetFail::Failed(QueueError::Corrupt {
                        name: self.region.describe(),
                        detail: format!(
                            "bad frame at offset {}: length {:#x}, check {:#x}",
                            b.at, b.len, b.check
                        ),
                    })
                })?;
            // SAFETY: locate checked at..at+len lies inside the ring; the frame is committed
            // and we hold the get lock, so no process writes it while this slice lives.
            let payload = unsafe { std::slice::from_raw_parts(self.ring_ptr(at), len as usize) };
            match sink(payload) {
                Ok(()) => {}
                Err(error) => {
                    if taken == 0 {
                        failure = Some(GetFail::Decode {
                            bytes: payload.to_vec(),
                            error,
                        });
                        off = next;
                        taken = 1;
                    }
                    break;
                }
            }
            off = next;
            taken += 1;
        }
        crash::point(Point::GetBeforeCommit);
        // COMMIT: from this store on, the frames are gone from the queue.
        let h = Cursor {
            off,
            count: head.count.wrapping_add(taken),
        };
        side.cursor.store(h.pack(), Ordering::Release);
        crash::point(Point::GetAfterCommit);
        // Putters that are awake watch the head itself; only sleepers need a wake-up.
        guard.release_and_notify(&side.wait, Point::GetBeforeWake);
        match failure {
            Some(f) => Err(f),
            None => Ok(Ok(taken as usize)),
        }
    }

    // --- public operations that do not depend on T's encoding ---

    /// Items in the queue now. Exact as soon as a put or get has returned, in any process.
    pub fn qsize(&self) -> usize {
        // Head first: it never passes the tail, so the difference never goes negative.
        let head = self.head_cursor();
        let tail = self.tail_cursor();
        // An immediate shutdown's discarded items are gone even before the head moves past them
        // (it may have been killed in between; the next consumer moves it).
        let (_, upto) = self.discard();
        let head_count = if upto != 0 && head.count.wrapping_sub(upto) > u32::MAX / 2 {
            upto
        } else {
            head.count
        };
        tail.count.wrapping_sub(head_count) as usize
    }

    /// Whether the queue holds no item now.
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the queue is full now: `maxsize` items, or not even an empty message would fit.
    pub fn full(&self) -> bool {
        let head = self.head_cursor();
        let tail = self.tail_cursor();
        let items = ring::items(head, tail);
        (self.maxsize != 0 && items >= self.maxsize)
            || (items != 0
                && Appender::at(self.cap, tail.off, ring::used(self.cap, head, tail))
                    .place(ring::FRAME_HEADER)
                    .is_none())
    }

    /// The item limit given at creation (0: none).
    pub fn maxsize(&self) -> usize {
        self.maxsize as usize
    }

    /// Bytes of ring.
    pub fn capacity_bytes(&self) -> usize {
        self.cap as usize
    }

    /// The largest encoded message that can ever fit (`capacity_bytes() - 8`).
    pub fn max_message_len(&self) -> usize {
        ring::max_payload(self.cap)
    }

    /// Bytes of ring in use now (frames and padding).
    pub fn used_bytes(&self) -> usize {
        let head = self.head_cursor();
        let tail = self.tail_cursor();
        ring::used(self.cap, head, tail) as usize
    }

    /// Closes the queue for everyone: puts fail with [`PutError::Closed`], getters take what is
    /// left and then get [`GetError::Closed`](crate::GetError::Closed) instead of waiting. Blocked callers wake at once.
    /// Closing twice is harmless.
    ///
    /// # Errors
    /// [`QueueError::Sync`] if the lock is unrecoverable.
    pub fn close(&self) -> Result<(), QueueError> {
        let guard = self.lock(self.put_lock(), None)?;
        self.meta().closed.store(1, Ordering::Release);
        drop(guard);
        self.tail().wait.notify();
        self.head().wait.notify();
        Ok(())
    }

    /// Python 3.13's `Queue.shutdown(immediate)`. Without `immediate` it is [`close`](Self::close):
    /// puts fail, getters drain what is left, then fail (`Closed` is Python's `ShutDown`). With
    /// `immediate`, what is left is thrown away as well, so every getter fails at once; a
    /// [`JoinableQueue`](crate::JoinableQueue) counts the discarded items as done (its `join`
    /// returns once the items already handed out are `task_done`). Every blocked `put`, `get` and
    /// `join`, in any process, wakes.
    ///
    /// Crash-safe: the discard commits with one store (under the get lock, after `closed`); a
    /// process killed after it leaves a head that the next consumer moves on.
    ///
    /// # Errors
    /// [`QueueError::Sync`] if a lock is unrecoverable.
    pub fn shutdown(&self, immediate: bool) -> Result<(), QueueError> {
        self.close()?;
        if !immediate {
            return Ok(());
        }
        let guard = self.lock(self.get_lock(), None)?;
        // The tail is final: `closed` was stored under the put lock after the last put.
        let tail = self.tail_cursor();
        let head = self.head_cursor();
        if ring::items(head, tail) != 0 {
            if self.discard() == (0, 0) {
                let d = (u64::from(head.count) << 32) | u64::from(tail.count);
                // COMMIT: from here the items head..tail are discarded, not delivered.
                self.tasks().discarded.store(d.max(1), Ordering::Release);
                crash::point(Point::ShutdownAfterDiscard);
            }
            self.head().cursor.store(tail.pack(), Ordering::Release);
            self.head().seen_tail.store(tail.pack(), Ordering::Relaxed);
        }
        drop(guard);
        self.tail().wait.notify();
        self.head().wait.notify();
        self.all_done().notify();
        Ok(())
    }

    /// Whether [`close`](Self::close) has been called (by any process).
    pub fn is_closed(&self) -> bool {
        self.meta().closed.load(Ordering::Acquire) != 0
    }

    /// The region holding the queue.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Keeps the name in `/dev/shm` after this creator drops its last handle to the queue.
    pub fn persist(&self) {
        self.region.persist();
    }

    /// Removes the name `/dev/shm/baozi-NAME`; processes that have the queue open keep it.
    ///
    /// # Errors
    /// [`QueueError::Shm`] ([`ShmError::NotFound`], ...).
    pub fn unlink(name: &str) -> Result<(), QueueError> {
        Region::unlink(name).map_err(QueueError::from)
    }
}
