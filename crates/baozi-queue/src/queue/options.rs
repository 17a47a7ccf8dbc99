//! [`QueueOptions`]: how a queue is built (item limit, byte capacity, spinning), and the checks
//! on what is asked for.

use baozi_shm::{Region, ShmError, DEFAULT_READY_WAIT};

use super::{Queue, DEFAULT_CAPACITY, MAX_MAXSIZE};
use crate::codec::Message;
use crate::error::QueueError;
use crate::{layout, ring};

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
