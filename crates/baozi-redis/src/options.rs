//! [`RedisOptions`]: how a queue on Redis is made and how its handles talk to the server.

use std::time::Duration;

/// Parameters of a queue on Redis and of its connections. `RedisOptions::new()` gives the
/// defaults; the builder methods change one each.
///
/// ```no_run
/// use std::time::Duration;
/// use baozi_redis::{RedisJoinableQueue, RedisOptions};
///
/// let jobs: RedisJoinableQueue<String> = RedisOptions::new()
///     .maxsize(1000)
///     .lease(Duration::from_secs(30)) // at-least-once: unfinished jobs of a dead worker come back
///     .joinable("redis://127.0.0.1:6379/0", "jobs")?;
/// # Ok::<(), baozi_redis::RedisQueueError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RedisOptions {
    pub(crate) maxsize: usize,
    pub(crate) lease: Option<Duration>,
    pub(crate) connect_timeout: Duration,
    pub(crate) io_timeout: Duration,
    pub(crate) retry_for: Duration,
    pub(crate) wait_slice: Duration,
    pub(crate) dedup_ttl: Duration,
    pub(crate) max_message_len: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            maxsize: 0,
            lease: None,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(3),
            wait_slice: Duration::from_secs(2),
            dedup_ttl: Duration::from_secs(24 * 3600),
            max_message_len: crate::MAX_MESSAGE_LEN,
        }
    }
}

impl RedisOptions {
    /// The defaults: no item limit, at-most-once, 2 s to connect, 5 s for a reply, connection
    /// faults retried for 3 s, blocking waits in 2 s slices, producer ids kept 24 h.
    pub fn new() -> Self {
        Self::default()
    }

    /// The item limit (0, the default: none). Enforced atomically on the server.
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.maxsize = maxsize;
        self
    }

    /// At-least-once delivery for a [`RedisJoinableQueue`](crate::RedisJoinableQueue): an item
    /// got and not `task_done` within `lease` goes back to the head of the queue for another
    /// consumer. Stored with the queue: every handle of it works this way.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease.max(Duration::from_millis(1)));
        self
    }

    /// How long connecting may take before it counts as a fault (default 2 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// How long a reply may take, beyond a blocking command's own wait, before the connection
    /// counts as lost (default 5 s).
    pub fn io_timeout(mut self, d: Duration) -> Self {
        self.io_timeout = d.max(Duration::from_millis(1));
        self
    }

    /// How long a step that may safely run twice (a put, a task_done, a size query) is retried
    /// on a fresh connection after a connection fault before the fault is returned (default
    /// 3 s; zero: never retried). A fault is reported within about `retry_for +
    /// connect_timeout + io_timeout`, plus one wait slice for a blocking call.
    pub fn retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    /// The longest single server-side wait (default 2 s). Blocking calls wait in slices of this,
    /// so a silent network failure is noticed within `wait_slice + io_timeout`. An
    /// at-least-once getter waits at most half the lease per slice, so that leases of dead
    /// consumers are reclaimed while everyone waits.
    pub fn wait_slice(mut self, d: Duration) -> Self {
        self.wait_slice = d.max(Duration::from_millis(10));
        self
    }

    /// How long the server remembers a producer's last sequence number for deduplication
    /// (default 24 h): a retried put older than this could be applied twice.
    pub fn dedup_ttl(mut self, d: Duration) -> Self {
        self.dedup_ttl = d.max(Duration::from_secs(1));
        self
    }

    /// The largest encoded message accepted (default and most [`MAX_MESSAGE_LEN`](crate::MAX_MESSAGE_LEN));
    /// larger ones are [`PutError::TooLarge`](baozi_queue::PutError::TooLarge) at once.
    pub fn max_message_len(mut self, len: usize) -> Self {
        self.max_message_len = len.min(crate::MAX_MESSAGE_LEN);
        self
    }
}
