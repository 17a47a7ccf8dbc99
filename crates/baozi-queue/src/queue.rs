//! [`Queue`]: put/get (blocking, timed, non-blocking, batched), qsize/empty/full, close.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use baozi_shm::{ObjectKind, Region, ShmError, TypeTag, DEFAULT_READY_WAIT};
use baozi_sync::{Acquired, Deadline, RawRobustMutex, SpinPolicy, SyncError, WaitWord};

use crate::codec::{CodecError, Message};
use crate::crash::{self, Point};
use crate::endpoint::{self, Endpoint, Endpoints, Role};
use crate::error::{GetError, PutError, QueueError};
use crate::layout::{self, HeadSide, Meta, TailSide, Tasks};
use crate::ring::{self, Appender, Cursor};

/// The byte capacity [`QueueOptions::default`] picks: 1 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// The longest a `_nowait` call waits for the queue's lock (see [`Queue::put_nowait`]).
pub const NOWAIT_LOCK_WAIT: Duration = Duration::from_secs(1);

/// The largest `maxsize` accepted.
pub const MAX_MAXSIZE: usize = 1 << 30;

/// How often a sleeping put or get looks at the other side's cursor by itself. A committer killed
/// between its commit and its wake-up (its lock already released, so nobody repairs) leaves the
/// sleepers asleep; this bounds how long (issue 15 asks for ≤ 10 ms; it was a whole
/// [`WAIT_SLICE`](baozi_sync::WAIT_SLICE), 100 ms). Each look is a futex timeout and two loads:
/// about 200 wake-ups a second per sleeping call, a few microseconds of CPU.
const RECHECK_EVERY: Duration = Duration::from_millis(5);

/// How to build a queue: item limit, byte capacity, spinning.
///
/// ```
/// use baozi_queue::{Queue, QueueOptions};
/// let q: Queue<String> = QueueOptions::new().maxsize(8).capacity(64 * 1024).anonymous()?;
/// assert_eq!(q.maxsize(), 8);
/// # Ok::<(), baozi_queue::QueueError>(())
/// ```
#[derive(Clone, Debug)]
pub struct QueueOptions {
    maxsize: usize,
    capacity: usize,
    spin: bool,
    replace_stale: bool,
}

impl Default for QueueOptions {
    /// No item limit (Python's `Queue()`), 1 MiB of ring, adaptive spinning on.
    fn default() -> Self {
        QueueOptions {
            maxsize: 0,
            capacity: DEFAULT_CAPACITY,
            spin: true,
            replace_stale: false,
        }
    }
}

impl QueueOptions {
    /// The defaults: no item limit, 1 MiB, spinning on.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most items the queue holds at once; 0 means no item limit (then only the byte
    /// capacity bounds it), as Python's `maxsize <= 0`.
    #[must_use]
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.maxsize = maxsize;
        self
    }

    /// Bytes of ring (rounded up to a multiple of 8). Each message takes 8 bytes of framing plus
    /// its length rounded up to 8; the largest message is `capacity - 8` bytes.
    #[must_use]
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Whether blocked calls spin adaptively before sleeping (default true). Without it every
    /// wait sleeps in the kernel at once: less CPU, much higher latency.
    #[must_use]
    pub fn spin(mut self, spin: bool) -> Self {
        self.spin = spin;
        self
    }

    /// Whether [`create`](Self::create) and [`create_or_open`](Self::create_or_open) first remove
    /// a leftover of the same name that no process has mapped or open (its creator was killed
    /// before it could unlink it, say by Ctrl-C). Default false: an existing name is an error.
    /// See [`Region::unlink_if_stale`].
    #[must_use]
    pub fn replace_stale(mut self, replace: bool) -> Self {
        self.replace_stale = replace;
        self
    }

    /// Builds a queue shared with children forked after this call, and with any process its
    /// handle is given to (a clone, a [`Process`](https://docs.rs/baozi-process) argument, a
    /// serialised handle).
    ///
    /// # Errors
    /// [`QueueError::Shm`] with [`ShmError::InvalidSize`] for an out-of-range size, or the
    /// mapping failure.
    pub fn anonymous<T: Message>(&self) -> Result<Queue<T>, QueueError> {
        let (maxsize, cap) = self.checked()?;
        let region = Region::anonymous(layout::total_len(cap))?;
        Queue::build(region, maxsize, cap, self.spin)
    }

    /// Creates the named queue `/dev/shm/baozi-NAME`; this handle owns the name and unlinks it
    /// when dropped, unless [`Queue::persist`] is called.
    ///
    /// # Errors
    /// As [`anonymous`](Self::anonymous), plus [`ShmError::AlreadyExists`],
    /// [`ShmError::InvalidName`], [`ShmError::PermissionDenied`].
    pub fn create<T: Message>(&self, name: &str) -> Result<Queue<T>, QueueError> {
        let (maxsize, cap) = self.checked()?;
        if self.replace_stale {
            Region::unlink_if_stale(name)?;
        }
        let region = Region::create(name, layout::total_len(cap))?;
        Queue::build(region, maxsize, cap, self.spin)
    }

    /// Creates the named queue, or opens it if it exists: of several processes racing here,
    /// exactly one creates it and the others open what it made (waiting up to
    /// [`DEFAULT_READY_WAIT`] for it to be built). The creator owns the name.
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`Queue::open`]; [`QueueError::Mismatch`] when the
    /// existing queue has another `maxsize` or capacity than these options ask for.
    pub fn create_or_open<T: Message>(&self, name: &str) -> Result<Queue<T>, QueueError> {
        let (maxsize, cap) = self.checked()?;
        if self.replace_stale {
            Region::unlink_if_stale(name)?;
        }
        let (region, created) = Region::create_or_open(name, layout::total_len(cap))?;
        if created {
            return Queue::build(region, maxsize, cap, self.spin);
        }
        let q: Queue<T> = Queue::from_region(region, DEFAULT_READY_WAIT, self.spin)?;
        if (q.maxsize, q.cap) != (maxsize, cap) {
            return Err(QueueError::Mismatch {
                name: q.region.describe(),
                detail: format!(
                    "it exists with maxsize {} and {} bytes of ring; asked for maxsize {maxsize} and {cap} bytes",
                    q.maxsize, q.cap
                ),
            });
        }
        Ok(q)
    }

    fn checked(&self) -> Result<(u32, u32), QueueError> {
        let invalid = |what, requested: usize, reason: String| {
            QueueError::Shm(ShmError::InvalidSize {
                what,
                requested: requested as u64,
                reason,
            })
        };
        let min = ring::MIN_CAPACITY as usize;
        let max = ring::MAX_CAPACITY as usize;
        if self.capacity < min || self.capacity > max {
            return Err(invalid(
                "queue capacity",
                self.capacity,
                format!("must be between {min} and {max} bytes"),
            ));
        }
        if self.maxsize > MAX_MAXSIZE {
            return Err(invalid(
                "queue maxsize",
                self.maxsize,
                format!("must be at most {MAX_MAXSIZE} (0 means no item limit)"),
            ));
        }
        Ok((self.maxsize as u32, ((self.capacity + 7) & !7) as u32))
    }
}

/// How long a call may wait.
#[derive(Clone, Copy, Debug)]
enum Wait {
    No,
    Until(Deadline),
    Forever,
}

/// `None`: as long as it takes; zero: not at all; otherwise at most that long.
fn wait_for(timeout: Option<Duration>) -> Wait {
    match timeout {
        None => Wait::Forever,
        Some(t) if t.is_zero() => Wait::No,
        Some(t) => Wait::timeout(t),
    }
}

impl Wait {
    fn timeout(d: Duration) -> Self {
        Wait::Until(Deadline::after(d))
    }

    /// How long to wait for the lock itself. The lock is held only for a copy, so this only
    /// matters when its holder is stopped (SIGSTOP, a debugger): then a `_nowait` call gives up
    /// after [`NOWAIT_LOCK_WAIT`] instead of blocking with it.
    fn lock_deadline(self) -> Option<Deadline> {
        match self {
            Wait::Until(d) => Some(d),
            Wait::No => Some(Deadline::after(NOWAIT_LOCK_WAIT)),
            Wait::Forever => None,
        }
    }
}

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

thread_local! {
    /// Reused buffers for put_many: encoded payloads and their lengths.
    static BATCH: RefCell<(Vec<u8>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A bounded, many-producer many-consumer queue in shared memory, with the contract of Python's
/// `multiprocessing.Queue`.
///
/// * `maxsize` bounds the number of items (0: no item limit); the byte capacity bounds memory.
/// * [`put`](Self::put) blocks while full, [`put_timeout`](Self::put_timeout) gives up with
///   [`PutError::Full`] (handing the item back), [`put_nowait`](Self::put_nowait) never waits;
///   [`get`](Self::get), [`get_timeout`](Self::get_timeout), [`get_nowait`](Self::get_nowait)
///   likewise with [`GetError::Empty`]. A message that can never fit is
///   [`PutError::TooLarge`] at once, never a hang.
/// * [`qsize`](Self::qsize), [`empty`](Self::empty), [`full`](Self::full) are exact the moment a
///   put or get returns (there is no feeder thread).
/// * [`put_many`](Self::put_many) / [`get_many`](Self::get_many) move a batch under one lock.
/// * [`close`](Self::close): later puts fail, getters drain what is left and then see
///   [`GetError::Closed`] instead of waiting for ever.
///
/// A process killed at any instant — even holding the lock in the middle of a copy — leaves the
/// queue usable: the robust lock tells the next process, which checks the cursors and goes on. A
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

/// Holds one of the queue's two locks; unlocks on drop, and wakes everyone if it repaired a
/// dead holder's state (the dead process may have been about to notify).
struct Locked<'a, T> {
    queue: &'a Queue<T>,
    lock: &'a RawRobustMutex,
    repaired: bool,
}

impl<T> Drop for Locked<'_, T> {
    fn drop(&mut self) {
        // SAFETY: a Locked exists only while this thread holds `lock`.
        unsafe { self.lock.unlock() };
        if self.repaired {
            self.queue.tail().wait.notify();
            self.queue.head().wait.notify();
            self.queue.tasks().all_done.notify();
        }
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
        for at in [layout::PUT_LOCK_AT, layout::GET_LOCK_AT] {
            // SAFETY: 1. both lock offsets are inside the region (total_len) and
            // CACHE_LINE-aligned; 2. the region is fresh and unpublished: nobody else can reach
            // the locks yet.
            unsafe { RawRobustMutex::init(q.base.as_ptr().add(at).cast())? };
        }
        // Cursors and counters start at zero, as the fresh region already is.
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
    fn put_lock(&self) -> &RawRobustMutex {
        self.part(layout::PUT_LOCK_AT)
    }
    /// Consumers' lock: the head cursor and the frames between head and tail.
    fn get_lock(&self) -> &RawRobustMutex {
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

    // --- the locks, and repair after a dead holder ---

    #[inline]
    fn lock<'a>(
        &'a self,
        lock: &'a RawRobustMutex,
        deadline: Option<Deadline>,
    ) -> Result<Locked<'a, T>, QueueError> {
        match lock.lock(deadline)? {
            Acquired::Clean => Ok(Locked {
                queue: self,
                lock,
                repaired: false,
            }),
            Acquired::OwnerDied => self.recover(lock),
        }
    }

    /// The lock was acquired from a holder that died: repair, then declare it consistent.
    #[cold]
    #[inline(never)]
    fn recover<'a>(&'a self, lock: &'a RawRobustMutex) -> Result<Locked<'a, T>, QueueError> {
        let guard = Locked {
            queue: self,
            lock,
            repaired: true,
        };
        self.repair(std::ptr::eq(lock, self.put_lock()))?;
        // SAFETY: we hold the lock, acquired with OwnerDied.
        unsafe { lock.mark_consistent() };
        Ok(guard)
    }

    /// Called with a lock held after its holder died; idempotent (the repairer may die too).
    ///
    /// Every update commits with one store of a cursor, so there is nothing to roll back: a
    /// frame written but not committed lies beyond the tail, unseen. Two things are redone:
    /// * with the put lock, a restart killed between moving the head to 0 and its commit left
    ///   an empty ring whose tail is elsewhere: the tail joins the head (same count, so nobody
    ///   sees a frame), and the producers' bounds are read afresh;
    /// * with the get lock, the consumers' copy of the tail is read afresh.
    ///
    /// And the invariants are checked, so that corruption is reported instead of followed.
    /// Tail first, then head (the order consumers use): the pair is a state the ring was in.
    fn repair(&self, put_side: bool) -> Result<(), QueueError> {
        let mut tail = self.tail_cursor();
        let head = self.head_cursor();
        if !ring::consistent(self.cap, head, tail) {
            return Err(QueueError::Corrupt {
                name: self.region.describe(),
                detail: format!("after a holder died: head {head:?}, tail {tail:?}"),
            });
        }
        if put_side {
            if ring::items(head, tail) == 0 && head.off != tail.off {
                tail.off = head.off;
                self.tail().cursor.store(tail.pack(), Ordering::Release);
            }
            self.refresh_room(tail);
        } else {
            // An immediate shutdown killed between its discard's commit and moving the head:
            // finish moving it (the tail is final, the queue being closed).
            let (_, upto) = self.discard();
            if upto != 0
                && ring::items(head, tail) != 0
                && head.count.wrapping_sub(upto) > u32::MAX / 2
            {
                self.head().cursor.store(tail.pack(), Ordering::Release);
            }
            self.head().seen_tail.store(tail.pack(), Ordering::Relaxed);
        }
        Ok(())
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
        drop(guard);
        crash::point(Point::PutBeforeWake);
        // Getters that are awake watch the tail itself; only sleepers need a wake-up.
        side.wait.notify_sleepers();
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
        drop(guard);
        crash::point(Point::GetBeforeWake);
        // Putters that are awake watch the head itself; only sleepers need a wake-up.
        side.wait.notify_sleepers();
        match failure {
            Some(f) => Err(f),
            None => Ok(Ok(taken as usize)),
        }
    }

    // --- blocking around them ---

    /// The length word of a single message, or TooLarge if no frame can ever hold it.
    fn single_len(&self, bytes: &[u8]) -> Result<u32, PutFail> {
        match ring::frame_len(bytes.len()) {
            Some(_) => Ok(bytes.len() as u32),
            None => Err(PutFail::TooLarge {
                needed: bytes.len(),
                capacity: self.cap as usize,
            }),
        }
    }

    fn put_batch(&self, batch: &Batch<'_>, wait: Wait) -> Result<(), PutFail> {
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

    fn get_frames(
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
    /// returns [`GetError::Disconnected`] when none is left alive — within about
    /// [`WAIT_SLICE`](baozi_sync::WAIT_SLICE) + [`CHECK_EVERY`](crate::CHECK_EVERY) of the last
    /// one's death — instead of waiting for ever. A queue nobody registers with keeps Python's
    /// behaviour.
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
    /// on the full queue returns [`PutError::Disconnected`] (with the item) when none is left.
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
    /// left and then get [`GetError::Closed`] instead of waiting. Blocked callers wake at once.
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

/// A get that did not return an item.
enum GetFail {
    Empty,
    Closed,
    Disconnected,
    Decode { bytes: Vec<u8>, error: CodecError },
    Failed(QueueError),
}

impl From<GetFail> for GetError {
    fn from(f: GetFail) -> Self {
        match f {
            GetFail::Empty => GetError::Empty,
            GetFail::Closed => GetError::Closed,
            GetFail::Disconnected => GetError::Disconnected,
            GetFail::Decode { bytes, error } => GetError::Decode { bytes, error },
            GetFail::Failed(e) => GetError::Failed(e),
        }
    }
}

impl<T: Message> Queue<T> {
    fn put_one(&self, item: T, wait: Wait) -> Result<(), PutError<T>> {
        let outcome = item.with_encoded(|bytes| {
            let len = self.single_len(bytes)?;
            self.put_batch(
                &Batch {
                    data: bytes,
                    lens: &[len],
                },
                wait,
            )
        });
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(fail)) => Err(fail.with(item)),
            Err(e) => Err(PutError::Encode(item, e)),
        }
    }

    fn get_one(&self, wait: Wait) -> Result<T, GetError> {
        let mut out = None;
        self.get_frames(1, wait, &mut |bytes| {
            out = Some(T::decode(bytes)?);
            Ok(())
        })?;
        Ok(out.expect("a successful get of one frame decoded it"))
    }

    /// Puts `item`, waiting as long as the queue is full.
    ///
    /// # Errors
    /// [`PutError::TooLarge`] at once if it can never fit; [`PutError::Closed`];
    /// [`PutError::Encode`]; [`PutError::Failed`]. The item comes back in each.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_one(item, Wait::Forever)
    }

    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`PutError::Full`] when the time is up, and the errors of [`put`](Self::put).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_one(item, Wait::timeout(timeout))
    }

    /// Puts `item` only if there is room now. It never waits for room; it waits for the lock
    /// only while another process holds it for a copy (at most [`NOWAIT_LOCK_WAIT`], reached
    /// only if the holder is stopped, and then reported as [`PutError::Full`]).
    ///
    /// # Errors
    /// [`PutError::Full`], and the errors of [`put`](Self::put).
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_one(item, Wait::No)
    }

    /// Takes the oldest item, waiting as long as the queue is empty.
    ///
    /// # Errors
    /// [`GetError::Closed`] once the queue is closed and drained; [`GetError::Decode`];
    /// [`GetError::Failed`].
    pub fn get(&self) -> Result<T, GetError> {
        self.get_one(Wait::Forever)
    }

    /// Takes the oldest item, waiting at most `timeout` (on `CLOCK_MONOTONIC`).
    ///
    /// # Errors
    /// [`GetError::Empty`] when the time is up, and the errors of [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_one(Wait::timeout(timeout))
    }

    /// Takes the oldest item if there is one now. Like [`put_nowait`](Self::put_nowait), it
    /// waits for the lock at most [`NOWAIT_LOCK_WAIT`] (then [`GetError::Empty`]).
    ///
    /// # Errors
    /// [`GetError::Empty`], and the errors of [`get`](Self::get).
    pub fn get_nowait(&self) -> Result<T, GetError> {
        self.get_one(Wait::No)
    }

    fn put_many_wait(&self, items: Vec<T>, wait: Wait) -> Result<(), PutError<Vec<T>>> {
        self.put_refs(&items, wait).map_err(|e| e.map(|()| items))
    }

    /// Encodes `items` into this thread's reused batch buffer and puts them as one batch.
    fn put_refs(&self, items: &[T], wait: Wait) -> Result<(), PutError<()>> {
        if items.is_empty() {
            return Ok(());
        }
        let mut scratch = BATCH.with(|b| std::mem::take(&mut *b.borrow_mut()));
        scratch.0.clear();
        scratch.1.clear();
        let mut encode_error = None;
        let mut too_large = false;
        for item in items {
            let (data, lens) = (&mut scratch.0, &mut scratch.1);
            match item.with_encoded(|bytes| {
                if ring::frame_len(bytes.len()).is_none() {
                    too_large = true;
                }
                data.extend_from_slice(bytes);
                lens.push(bytes.len().min(u32::MAX as usize) as u32);
            }) {
                Ok(()) => {}
                Err(e) => {
                    encode_error = Some(e);
                    break;
                }
            }
        }
        let result = if let Some(e) = encode_error {
            Err(PutError::Encode((), e))
        } else if too_large {
            Err(PutError::TooLarge {
                item: (),
                needed: scratch.0.len(),
                capacity: self.cap as usize,
            })
        } else {
            self.put_batch(
                &Batch {
                    data: &scratch.0,
                    lens: &scratch.1,
                },
                wait,
            )
            .map_err(|f| f.with(()))
        };
        BATCH.with(|b| *b.borrow_mut() = scratch);
        result
    }

    /// Puts copies of all of `items` at once, as [`put_many`](Self::put_many) does, but from a
    /// borrowed slice: nothing is moved or allocated, and the items stay with the caller. Waits
    /// at most `timeout` for room for all of them (`None`: as long as it takes; zero: not at
    /// all). The batch counterpart of [`get_many_into`](Self::get_many_into).
    ///
    /// ```
    /// use baozi_queue::Queue;
    /// let q: Queue<u64> = Queue::new(0, 4096)?;
    /// let batch = [1u64, 2, 3];
    /// q.put_many_from(&batch, None).unwrap();
    /// let mut out = Vec::new();
    /// q.get_many_into(&mut out, 10, None).unwrap();
    /// assert_eq!(out, batch);
    /// # Ok::<(), baozi_queue::QueueError>(())
    /// ```
    ///
    /// # Errors
    /// As [`put_many_timeout`](Self::put_many_timeout), with `()` where the batch would be.
    pub fn put_many_from(
        &self,
        items: &[T],
        timeout: Option<Duration>,
    ) -> Result<(), PutError<()>> {
        self.put_refs(items, wait_for(timeout))
    }

    /// Puts all of `items` at once — under one lock, committed together — waiting as long as
    /// there is not room for all of them.
    ///
    /// # Errors
    /// [`PutError::TooMany`] at once for more than `maxsize` items, [`PutError::TooLarge`] at once
    /// if the batch can never fit (or
    /// more bytes than the ring), and the errors of [`put`](Self::put); the batch comes back.
    pub fn put_many(&self, items: Vec<T>) -> Result<(), PutError<Vec<T>>> {
        self.put_many_wait(items, Wait::Forever)
    }

    /// [`put_many`](Self::put_many), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PutError::Full`] when the time is up, and the errors of [`put_many`](Self::put_many).
    pub fn put_many_timeout(
        &self,
        items: Vec<T>,
        timeout: Duration,
    ) -> Result<(), PutError<Vec<T>>> {
        self.put_many_wait(items, Wait::timeout(timeout))
    }

    /// [`put_many`](Self::put_many) only if there is room for all now.
    ///
    /// # Errors
    /// [`PutError::Full`], and the errors of [`put_many`](Self::put_many).
    pub fn put_many_nowait(&self, items: Vec<T>) -> Result<(), PutError<Vec<T>>> {
        self.put_many_wait(items, Wait::No)
    }

    fn get_many_wait(&self, out: &mut Vec<T>, max: usize, wait: Wait) -> Result<usize, GetError> {
        if max == 0 {
            return Ok(0);
        }
        let n = self.get_frames(max, wait, &mut |bytes| {
            out.push(T::decode(bytes)?);
            Ok(())
        })?;
        Ok(n)
    }

    /// Takes between 1 and `max` items under one lock, waiting as long as the queue is empty.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn get_many(&self, max: usize) -> Result<Vec<T>, GetError> {
        let mut out = Vec::new();
        self.get_many_wait(&mut out, max, Wait::Forever)?;
        Ok(out)
    }

    /// [`get_many`](Self::get_many), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetError::Empty`] when the time is up, and the errors of [`get`](Self::get).
    pub fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>, GetError> {
        let mut out = Vec::new();
        self.get_many_wait(&mut out, max, Wait::timeout(timeout))?;
        Ok(out)
    }

    /// [`get_many`](Self::get_many) of what is there now.
    ///
    /// # Errors
    /// [`GetError::Empty`], and the errors of [`get`](Self::get).
    pub fn get_many_nowait(&self, max: usize) -> Result<Vec<T>, GetError> {
        let mut out = Vec::new();
        self.get_many_wait(&mut out, max, Wait::No)?;
        Ok(out)
    }

    /// Appends between 1 and `max` items to `out`, reusing its allocation; waits at most
    /// `timeout` (`None`: as long as it takes; zero: not at all, as
    /// [`get_many_nowait`](Self::get_many_nowait)). Returns how many were taken. The batch
    /// counterpart of [`put_many_from`](Self::put_many_from).
    ///
    /// # Errors
    /// As [`get_many_timeout`](Self::get_many_timeout).
    pub fn get_many_into(
        &self,
        out: &mut Vec<T>,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<usize, GetError> {
        self.get_many_wait(out, max, wait_for(timeout))
    }
}

/// Raw byte access without allocation, for queues of bytes.
impl Queue<Vec<u8>> {
    fn put_slice(&self, bytes: &[u8], wait: Wait) -> Result<(), PutError<()>> {
        let len = self.single_len(bytes).map_err(|f| f.with(()))?;
        self.put_batch(
            &Batch {
                data: bytes,
                lens: &[len],
            },
            wait,
        )
        .map_err(|f| f.with(()))
    }

    /// Puts a copy of `bytes` (blocking `timeout` at most; `None`: as long as it takes).
    ///
    /// # Errors
    /// As [`put_timeout`](Self::put_timeout); with `Some(Duration::ZERO)` it is
    /// [`put_nowait`](Self::put_nowait).
    pub fn put_bytes(&self, bytes: &[u8], timeout: Option<Duration>) -> Result<(), PutError<()>> {
        self.put_slice(bytes, wait_for(timeout))
    }

    /// Takes the oldest message into `buf` (cleared first; its allocation is reused), waiting at
    /// most `timeout` (`None`: as long as it takes; zero: not at all).
    ///
    /// # Errors
    /// As [`get_timeout`](Self::get_timeout).
    pub fn get_bytes_into(
        &self,
        buf: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<(), GetError> {
        let wait = wait_for(timeout);
        buf.clear();
        self.get_frames(1, wait, &mut |bytes| {
            buf.extend_from_slice(bytes);
            Ok(())
        })?;
        Ok(())
    }

    /// Takes the oldest message and hands its bytes to `f` **before** the take commits, waiting
    /// at most `timeout` (`None`: as long as it takes; zero: not at all); returns what `f`
    /// returned.
    ///
    /// `f` runs under the get lock: keep it short (a copy, a note in shared memory). If the
    /// process dies while `f` runs, the take never committed and the message stays in the queue
    /// for the next getter; once this returns `Ok`, the message has left the queue. So `f` can
    /// record, where a supervisor finds it after a crash, which message the process was taking.
    ///
    /// ```
    /// use baozi_queue::Queue;
    /// let q: Queue<Vec<u8>> = Queue::new(4, 4096)?;
    /// q.put_bytes(b"bun", None)?;
    /// let len = q.get_bytes_with(None, |bytes| bytes.len())?;
    /// assert_eq!(len, 3);
    /// assert!(q.empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`get_timeout`](Self::get_timeout).
    pub fn get_bytes_with<R>(
        &self,
        timeout: Option<Duration>,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, GetError> {
        let mut f = Some(f);
        let mut out = None;
        self.get_frames(1, wait_for(timeout), &mut |bytes| {
            if let Some(f) = f.take() {
                out = Some(f(bytes));
            }
            Ok(())
        })?;
        Ok(out.expect("a successful get of one frame ran f"))
    }
}
