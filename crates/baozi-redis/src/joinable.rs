//! [`RedisJoinableQueue`]: `task_done`/`join` on Redis, at-most-once or at-least-once.

use std::ops::Deref;
use std::time::Duration;

use baozi_queue::{Message, QueueError};

use crate::error::RedisQueueError;
use crate::options::RedisOptions;
use crate::queue::{wait_forever, wait_timeout, RedisQueue};

/// A [`RedisQueue`] with Python's `JoinableQueue` additions: consumers call
/// [`task_done`](Self::task_done) after each item, and [`join`](Self::join) waits (on the
/// server) until every item ever put has been marked done.
///
/// Made with [`RedisOptions::lease`], it is **at-least-once**: a get moves the item to a
/// pending list with a lease; `task_done` (on the same handle that got it, oldest first)
/// removes it; an item whose lease runs out — its consumer died or hung — goes back to the
/// head of the queue for another consumer. Without a lease it is at-most-once, like the
/// shared-memory queue: an item got by a consumer that dies is gone, and its task stays
/// unfinished (use [`join_timeout`](Self::join_timeout)).
///
/// All `RedisQueue` methods are available through `Deref`.
#[derive(Debug)]
pub struct RedisJoinableQueue<T = Vec<u8>> {
    queue: RedisQueue<T>,
}

impl<T> Clone for RedisJoinableQueue<T> {
    /// Another handle to the same queue, with its own connection.
    fn clone(&self) -> Self {
        RedisJoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> Deref for RedisJoinableQueue<T> {
    type Target = RedisQueue<T>;
    fn deref(&self) -> &RedisQueue<T> {
        &self.queue
    }
}

impl<T> From<RedisQueue<T>> for RedisJoinableQueue<T> {
    fn from(queue: RedisQueue<T>) -> Self {
        RedisJoinableQueue { queue }
    }
}

impl<T: Message> RedisJoinableQueue<T> {
    /// As [`RedisQueue::create_or_open`] (at-most-once; see [`RedisOptions::lease`]).
    ///
    /// # Errors
    /// As [`RedisQueue::create_or_open`].
    pub fn create_or_open(url: &str, name: &str, maxsize: usize) -> Result<Self, RedisQueueError> {
        RedisOptions::new().maxsize(maxsize).joinable(url, name)
    }

    /// As [`RedisQueue::open`]; the mode (lease) is the queue's.
    ///
    /// # Errors
    /// As [`RedisQueue::open`].
    pub fn open(url: &str, name: &str) -> Result<Self, RedisQueueError> {
        RedisQueue::open(url, name).map(Self::from)
    }

    /// Items put and not yet marked done (thrown-away ones count as done).
    ///
    /// # Errors
    /// [`QueueError::Backend`] if the server cannot be reached.
    pub fn unfinished_tasks(&self) -> Result<usize, QueueError> {
        Ok(self.queue.unfinished()?.max(0) as usize)
    }

    /// Marks one item got by a get as processed. At-least-once: the oldest item this handle got
    /// and has not marked yet.
    ///
    /// # Errors
    /// [`QueueError::TaskDoneTooManyTimes`] if every item put is already done (at-least-once:
    /// if this handle holds none); [`QueueError::Backend`] with
    /// [`RedisQueueError::LeaseExpired`] if the item's lease ran out first, or a connection fault.
    pub fn task_done(&self) -> Result<(), QueueError> {
        self.queue.task_done_impl()
    }

    /// Waits until every item put has been marked done.
    ///
    /// # Errors
    /// [`QueueError::Backend`] on a connection fault.
    pub fn join(&self) -> Result<(), QueueError> {
        self.queue.join_wait(wait_forever())
    }

    /// [`join`](Self::join), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`QueueError::JoinTimeout`] with the number still unfinished, and those of [`join`](Self::join).
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), QueueError> {
        self.queue.join_wait(wait_timeout(timeout))
    }

    /// The plain queue inside.
    pub fn into_inner(self) -> RedisQueue<T> {
        self.queue
    }
}

impl RedisOptions {
    /// Opens the queue `name` on the server at `url`, creating it with these options if it does
    /// not exist.
    ///
    /// # Errors
    /// As [`RedisQueue::create_or_open`].
    pub fn queue<T: Message>(
        &self,
        url: &str,
        name: &str,
    ) -> Result<RedisQueue<T>, RedisQueueError> {
        RedisQueue::connect(url, name, self.clone(), true)
    }

    /// [`queue`](Self::queue) as a [`RedisJoinableQueue`].
    ///
    /// # Errors
    /// As [`RedisQueue::create_or_open`].
    pub fn joinable<T: Message>(
        &self,
        url: &str,
        name: &str,
    ) -> Result<RedisJoinableQueue<T>, RedisQueueError> {
        self.queue(url, name).map(RedisJoinableQueue::from)
    }

    /// Opens the existing queue `name` with these connection options (its `maxsize` and lease
    /// are the queue's).
    ///
    /// # Errors
    /// As [`RedisQueue::open`].
    pub fn open<T: Message>(
        &self,
        url: &str,
        name: &str,
    ) -> Result<RedisQueue<T>, RedisQueueError> {
        RedisQueue::connect(url, name, self.clone(), false)
    }
}
