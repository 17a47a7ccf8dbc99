//! [`Event`]: Python's `multiprocessing.Event`, a flag processes wait for.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use baozi_shm::{Offset, Region, ShmSafe, CACHE_LINE};

use crate::deadline::Deadline;
use crate::error::SyncError;
use crate::object::{self, Primitive, BODY_AT};
use crate::waitword::WaitWord;

/// Distinguishes an `Event` from the other sync objects in the layout checksum.
const SUBKIND_EVENT: u64 = 6;

pub(crate) static PRIMITIVE: Primitive = Primitive {
    subkind: SUBKIND_EVENT,
    name: "event",
    layout_facts: || {
        let [s, a] = object::size_align::<EventBody>();
        let [ws, wa] = object::size_align::<WaitWord>();
        [s, a, ws, wa]
    },
};

/// # State
/// | field  | meaning                                           | written by      |
/// |--------|---------------------------------------------------|-----------------|
/// | `flag` | 1 set, 0 clear; one store is the whole of set/clear | set, clear      |
/// | `wait` | bumped by every `set`                             | set             |
#[repr(C)]
#[derive(Debug)]
struct EventBody {
    flag: AtomicU32,
    _reserved: AtomicU32,
    wait: WaitWord,
}

// SAFETY: repr(C) of atomics and a WaitWord (ShmSafe): any bit pattern valid (a flag other than
// 0 reads as set), no pointers.
unsafe impl ShmSafe for EventBody {}

const TOTAL_LEN: usize = BODY_AT + CACHE_LINE;
const _: () = assert!(std::mem::size_of::<EventBody>() <= CACHE_LINE);

/// Python's `multiprocessing.Event`: a flag that processes [`set`](Self::set),
/// [`clear`](Self::clear) and [`wait`](Self::wait) for.
///
/// `set` is one store and one futex wake (no syscall when nobody waits); `wait` sleeps on a
/// sequence word ([`WaitWord`]), so there is no lock and no per-waiter state: a waiter killed
/// while it waits costs the others nothing, and a process killed in the middle of `set` (after
/// the store, before the wake) delays the waiters by at most [`WAIT_SLICE`](crate::WAIT_SLICE).
///
/// ```
/// use baozi_process::Process;
/// use baozi_sync::Event;
/// use std::time::Duration;
///
/// let ready = Event::anonymous()?;
/// let shared = ready.clone();
/// let waiter = Process::new(move || shared.wait().map(drop));
/// waiter.start()?;
/// assert!(!ready.wait_timeout(Duration::from_millis(10))?); // not set yet
/// ready.set();
/// assert_eq!(waiter.join()?, 0);
/// assert!(ready.is_set());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Event {
    region: Region,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("region", &self.region.describe())
            .field("is_set", &self.is_set())
            .finish()
    }
}

impl Event {
    fn build(region: Region) -> Result<Self, SyncError> {
        let region = object::build(region, &PRIMITIVE, TOTAL_LEN, |_| Ok(()))?;
        Ok(Event { region })
    }

    /// A new, clear event, shared with children forked after this call and with any process its
    /// handle is given to.
    ///
    /// # Errors
    /// [`SyncError::Shm`] if the region cannot be mapped.
    pub fn new() -> Result<Self, SyncError> {
        Self::anonymous()
    }

    /// The same as [`new`](Self::new) (Python's `Event()`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn anonymous() -> Result<Self, SyncError> {
        Self::build(Region::anonymous(TOTAL_LEN)?)
    }

    /// Creates the named event `/dev/shm/baozi-NAME`, clear.
    ///
    /// # Errors
    /// [`SyncError::Shm`]: invalid name, already exists, permission denied.
    pub fn create(name: &str) -> Result<Self, SyncError> {
        Self::build(Region::create(name, TOTAL_LEN)?)
    }

    /// Opens an event made by [`create`](Self::create).
    ///
    /// # Errors
    /// [`SyncError::WrongPrimitive`] if `name` is another primitive; [`SyncError::Shm`] with the
    /// precise cause otherwise.
    pub fn open(name: &str) -> Result<Self, SyncError> {
        Self::open_from(name)
    }

    /// Attaches to the event a serialised handle refers to (what `Deserialize` does with the
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
        Ok(Event { region })
    }

    fn body(&self) -> &EventBody {
        self.region
            .get(Offset::new(BODY_AT as u64))
            .expect("the event lies inside the checked region")
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.body().flag.load(Ordering::Acquire) != 0
    }

    /// Sets the flag and wakes every waiter. Waits that start afterwards return at once, until
    /// [`clear`](Self::clear).
    pub fn set(&self) {
        let body = self.body();
        // Release: what the setter did before `set` happens-before a waiter's return.
        body.flag.store(1, Ordering::Release);
        // Always notify, even if it was set already: a setter killed between its store and its
        // wake-up is made good by the next one.
        body.wait.notify();
    }

    /// Clears the flag: waits block again until the next [`set`](Self::set).
    pub fn clear(&self) {
        self.body().flag.store(0, Ordering::Release);
    }

    /// Waits until the flag is set (returns at once if it is). A [`set`](Self::set) while it
    /// waits wakes it even if a [`clear`](Self::clear) follows at once, as in Python.
    ///
    /// # Errors
    /// [`SyncError::Io`] if a futex wait fails.
    pub fn wait(&self) -> Result<(), SyncError> {
        self.wait_until(None).map(|_| ())
    }

    /// Waits at most `timeout` for the flag; returns whether it is set (Python's
    /// `wait(timeout)`): `false` means the timeout passed first.
    ///
    /// # Errors
    /// [`SyncError::Io`] if a futex wait fails.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, SyncError> {
        self.wait_until(Some(Deadline::after(timeout)))
    }

    fn wait_until(&self, deadline: Option<Deadline>) -> Result<bool, SyncError> {
        if self.is_set() {
            return Ok(true);
        }
        let wait = &self.body().wait;
        // The sequence is read before the flag: a `set` after our look at the flag bumps it, and
        // the futex wait returns at once. Only `set` bumps it, so a changed sequence means a
        // `set` happened while we waited: like Python, that wakes us even if a `clear` followed.
        let seen = wait.seq();
        if self.is_set() {
            return Ok(true);
        }
        loop {
            let woken = wait.wait(seen, deadline);
            if self.is_set() || wait.seq() != seen {
                return Ok(true);
            }
            match woken {
                Ok(()) => {}
                Err(SyncError::Timeout) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// The region holding the event.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The region holding the event, to [`persist`](Region::persist) a named one.
    pub fn region_mut(&mut self) -> &mut Region {
        &mut self.region
    }
}
