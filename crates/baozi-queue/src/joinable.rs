//! [`JoinableQueue`]: a queue whose producers can wait until every item has been processed.

use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::time::Duration;

use baozi_sync::Deadline;

use crate::codec::Message;
use crate::error::QueueError;
use crate::queue::Queue;

/// A [`Queue`] with Python's `JoinableQueue` additions: consumers call
/// [`task_done`](Self::task_done) after processing each item, and [`join`](Self::join) waits
/// until every item ever put has been marked done.
///
/// The count of unfinished tasks is derived, never stored: puts (the producer cursor's count,
/// committed with the put itself) minus `task_done` calls (one atomic add each). So a process
/// killed at any instant cannot make the count wrong. A consumer killed after `get` and before
/// `task_done` leaves its task unfinished for ever — its work was lost — so prefer
/// [`join_timeout`](Self::join_timeout) where consumers may die.
///
/// All `Queue` methods are available through `Deref`.
///
/// ```
/// use baozi_queue::JoinableQueue;
/// let q: JoinableQueue<u32> = JoinableQueue::new(0, 4096)?;
/// q.put(7).unwrap();
/// assert_eq!(q.unfinished_tasks(), 1);
/// let job = q.get().unwrap();
/// assert_eq!(job, 7);
/// q.task_done()?;
/// q.join()?; // returns at once: nothing unfinished
/// # Ok::<(), baozi_queue::QueueError>(())
/// ```
#[derive(Debug)]
pub struct JoinableQueue<T = Vec<u8>> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    /// Another handle to the same queue.
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T: Message> JoinableQueue<T> {
    /// As [`Queue::new`].
    ///
    /// # Errors
    /// As [`Queue::new`].
    pub fn new(maxsize: usize, capacity_bytes: usize) -> Result<Self, QueueError> {
        Queue::new(maxsize, capacity_bytes).map(Self::from)
    }

    /// As [`Queue::create`].
    ///
    /// # Errors
    /// As [`Queue::create`].
    pub fn create(name: &str, maxsize: usize, capacity_bytes: usize) -> Result<Self, QueueError> {
        Queue::create(name, maxsize, capacity_bytes).map(Self::from)
    }

    /// As [`Queue::open`].
    ///
    /// # Errors
    /// As [`Queue::open`].
    pub fn open(name: &str) -> Result<Self, QueueError> {
        Queue::open(name).map(Self::from)
    }

    /// As [`Queue::open_timeout`].
    ///
    /// # Errors
    /// As [`Queue::open_timeout`].
    pub fn open_timeout(name: &str, wait: Duration) -> Result<Self, QueueError> {
        Queue::open_timeout(name, wait).map(Self::from)
    }

    /// As [`Queue::create_or_open`].
    ///
    /// # Errors
    /// As [`Queue::create_or_open`].
    pub fn create_or_open(
        name: &str,
        maxsize: usize,
        capacity_bytes: usize,
    ) -> Result<Self, QueueError> {
        Queue::create_or_open(name, maxsize, capacity_bytes).map(Self::from)
    }
}

impl<T> From<Queue<T>> for JoinableQueue<T> {
    fn from(queue: Queue<T>) -> Self {
        JoinableQueue { queue }
    }
}

impl<T> JoinableQueue<T> {
    /// Items put and not yet marked done.
    pub fn unfinished_tasks(&self) -> usize {
        // `done` first: it never passes the puts, so the difference never goes negative.
        let done = self.queue.tasks_done().load(Ordering::Acquire);
        let discarded = self.queue.discarded();
        self.queue.puts().wrapping_sub(done).wrapping_sub(discarded) as usize
    }

    /// Marks one item taken by a get as processed.
    ///
    /// # Errors
    /// [`QueueError::TaskDoneTooManyTimes`] if every item put is already marked done.
    pub fn task_done(&self) -> Result<(), QueueError> {
        let done = self.queue.tasks_done();
        let mut d = done.load(Ordering::Acquire);
        loop {
            // Discarded items (an immediate shutdown's) are done without a task_done.
            let puts = self.queue.puts().wrapping_sub(self.queue.discarded());
            if puts.wrapping_sub(d) == 0 || puts.wrapping_sub(d) > u32::MAX / 2 {
                return Err(QueueError::TaskDoneTooManyTimes);
            }
            match done.compare_exchange_weak(
                d,
                d.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if d.wrapping_add(1) == puts {
                        self.queue.all_done().notify();
                    }
                    return Ok(());
                }
                Err(now) => d = now,
            }
        }
    }

    /// Waits until every item put has been marked done.
    ///
    /// # Errors
    /// [`QueueError::Sync`] if waiting fails.
    pub fn join(&self) -> Result<(), QueueError> {
        self.join_until(None)
    }

    /// [`join`](Self::join), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`QueueError::JoinTimeout`] with the number still unfinished.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), QueueError> {
        self.join_until(Some(Deadline::after(timeout)))
    }

    fn join_until(&self, deadline: Option<Deadline>) -> Result<(), QueueError> {
        let word = self.queue.all_done();
        loop {
            let seen = word.seq();
            let unfinished = self.unfinished_tasks();
            if unfinished == 0 {
                return Ok(());
            }
            match word.wait(seen, deadline) {
                Ok(()) => {}
                Err(baozi_sync::SyncError::Timeout) => {
                    let unfinished = self.unfinished_tasks() as u32;
                    return if unfinished == 0 {
                        Ok(())
                    } else {
                        Err(QueueError::JoinTimeout { unfinished })
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The plain queue inside.
    pub fn into_inner(self) -> Queue<T> {
        self.queue
    }
}
