//! The Queue contract as traits, so user code and baozi's conformance suite are generic over the
//! backend: the shared-memory [`Queue`]/[`JoinableQueue`] here, the Redis ones in `baozi-redis`.
//!
//! The traits carry Python's `multiprocessing.Queue` contract: blocking `put`/`get`, `_timeout`
//! and `_nowait` variants with distinct [`PutError::Full`] (which hands the item back) and
//! [`GetError::Empty`], batches, [`close`](QueueContract::close), `qsize`/`empty`/`full`/`maxsize`,
//! and for [`JoinableContract`] `task_done`/`join`. The errors are this crate's [`PutError`],
//! [`GetError`] and [`QueueError`]; a backend reports its own faults (a lost connection) as
//! [`QueueError::Backend`], with the backend's error inside.
//!
//! The shared-memory impls call the inherent methods, so generic code pays nothing on the hot
//! path. Sizes answer `Result`, because over a network asking is an operation that can fail.
//!
//! ```
//! use baozi_queue::{GetError, JoinableContract, JoinableQueue, QueueContract};
//!
//! /// Works on any backend: shared memory here, Redis with `baozi_redis::RedisJoinableQueue`.
//! fn drain_and_sum(q: &impl JoinableContract<u64>) -> u64 {
//!     let mut sum = 0;
//!     loop {
//!         match q.get_nowait() {
//!             Ok(n) => {
//!                 sum += n;
//!                 q.task_done().unwrap();
//!             }
//!             Err(GetError::Empty) => return sum,
//!             Err(e) => panic!("{e}"),
//!         }
//!     }
//! }
//!
//! let q: JoinableQueue<u64> = JoinableQueue::new(0, 4096)?;
//! QueueContract::put_many(&q, vec![1, 2, 3]).unwrap();
//! assert_eq!(drain_and_sum(&q), 6);
//! JoinableContract::join(&q)?;
//! # Ok::<(), baozi_queue::QueueError>(())
//! ```

use std::time::Duration;

use crate::codec::Message;
use crate::error::{GetError, PutError, QueueError};
use crate::joinable::JoinableQueue;
use crate::queue::Queue;

/// The `multiprocessing.Queue` contract, over any backend.
///
/// Every handle is `Clone` (another handle to the same queue) and `Send`.
pub trait QueueContract<T>: Clone + Send {
    /// Puts `item`, waiting as long as the queue is full.
    ///
    /// # Errors
    /// [`PutError::TooLarge`] at once if it can never fit, [`PutError::Closed`],
    /// [`PutError::Encode`], [`PutError::Failed`]; the item comes back in each.
    fn put(&self, item: T) -> Result<(), PutError<T>>;
    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`PutError::Full`] when the time is up, and the errors of [`put`](Self::put).
    fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>>;
    /// Puts `item` only if there is room now.
    ///
    /// # Errors
    /// [`PutError::Full`], and the errors of [`put`](Self::put).
    fn put_nowait(&self, item: T) -> Result<(), PutError<T>>;
    /// Takes the oldest item, waiting as long as the queue is empty.
    ///
    /// # Errors
    /// [`GetError::Closed`] once closed and drained, [`GetError::Decode`], [`GetError::Failed`].
    fn get(&self) -> Result<T, GetError>;
    /// Takes the oldest item, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetError::Empty`] when the time is up, and the errors of [`get`](Self::get).
    fn get_timeout(&self, timeout: Duration) -> Result<T, GetError>;
    /// Takes the oldest item if there is one now.
    ///
    /// # Errors
    /// [`GetError::Empty`], and the errors of [`get`](Self::get).
    fn get_nowait(&self) -> Result<T, GetError>;
    /// Puts all of `items` at once (all or nothing), waiting as long as there is no room for all.
    ///
    /// # Errors
    /// [`PutError::TooMany`] at once for more than `maxsize` items, [`PutError::TooLarge`] for
    /// more bytes than the backend can hold, and the errors of [`put`](Self::put); the batch
    /// comes back.
    fn put_many(&self, items: Vec<T>) -> Result<(), PutError<Vec<T>>>;
    /// [`put_many`](Self::put_many), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PutError::Full`] when the time is up, and the errors of [`put_many`](Self::put_many).
    fn put_many_timeout(&self, items: Vec<T>, timeout: Duration) -> Result<(), PutError<Vec<T>>>;
    /// [`put_many`](Self::put_many) only if there is room for all now.
    ///
    /// # Errors
    /// [`PutError::Full`], and the errors of [`put_many`](Self::put_many).
    fn put_many_nowait(&self, items: Vec<T>) -> Result<(), PutError<Vec<T>>>;
    /// Takes between 1 and `max` items in FIFO order, waiting as long as the queue is empty.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    fn get_many(&self, max: usize) -> Result<Vec<T>, GetError>;
    /// [`get_many`](Self::get_many), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetError::Empty`] when the time is up, and the errors of [`get`](Self::get).
    fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>, GetError>;
    /// [`get_many`](Self::get_many) of what is there now.
    ///
    /// # Errors
    /// [`GetError::Empty`], and the errors of [`get`](Self::get).
    fn get_many_nowait(&self, max: usize) -> Result<Vec<T>, GetError>;
    /// Items in the queue now.
    ///
    /// # Errors
    /// [`QueueError::Backend`] if the backend could not be asked.
    fn qsize(&self) -> Result<usize, QueueError>;
    /// Whether the queue holds no item now.
    ///
    /// # Errors
    /// As [`qsize`](Self::qsize).
    fn empty(&self) -> Result<bool, QueueError> {
        Ok(self.qsize()? == 0)
    }
    /// Whether a put would find the queue full now.
    ///
    /// # Errors
    /// As [`qsize`](Self::qsize).
    fn full(&self) -> Result<bool, QueueError>;
    /// The item limit given at creation (0: none).
    fn maxsize(&self) -> usize;
    /// Closes the queue for everyone: puts fail with [`PutError::Closed`], getters drain what is
    /// left and then get [`GetError::Closed`]; blocked callers wake. Closing twice is harmless.
    ///
    /// # Errors
    /// [`QueueError`] if the queue could not be reached.
    fn close(&self) -> Result<(), QueueError>;
}

/// Python's `JoinableQueue` additions, over any backend.
pub trait JoinableContract<T>: QueueContract<T> {
    /// Marks one item taken by a get as processed.
    ///
    /// # Errors
    /// [`QueueError::TaskDoneTooManyTimes`] if every item put is already marked done.
    fn task_done(&self) -> Result<(), QueueError>;
    /// Waits until every item put has been marked done.
    ///
    /// # Errors
    /// [`QueueError`] if waiting fails.
    fn join(&self) -> Result<(), QueueError>;
    /// [`join`](Self::join), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`QueueError::JoinTimeout`] with the number still unfinished.
    fn join_timeout(&self, timeout: Duration) -> Result<(), QueueError>;
    /// Items put and not yet marked done.
    ///
    /// # Errors
    /// [`QueueError::Backend`] if the backend could not be asked.
    fn unfinished_tasks(&self) -> Result<usize, QueueError>;
}

macro_rules! shm_contract {
    ($ty:ident, $inner:expr) => {
        impl<T: Message + Send> QueueContract<T> for $ty<T> {
            #[inline]
            fn put(&self, item: T) -> Result<(), PutError<T>> {
                Queue::put($inner(self), item)
            }
            #[inline]
            fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
                Queue::put_timeout($inner(self), item, timeout)
            }
            #[inline]
            fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
                Queue::put_nowait($inner(self), item)
            }
            #[inline]
            fn get(&self) -> Result<T, GetError> {
                Queue::get($inner(self))
            }
            #[inline]
            fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
                Queue::get_timeout($inner(self), timeout)
            }
            #[inline]
            fn get_nowait(&self) -> Result<T, GetError> {
                Queue::get_nowait($inner(self))
            }
            fn put_many(&self, items: Vec<T>) -> Result<(), PutError<Vec<T>>> {
                Queue::put_many($inner(self), items)
            }
            fn put_many_timeout(
                &self,
                items: Vec<T>,
                timeout: Duration,
            ) -> Result<(), PutError<Vec<T>>> {
                Queue::put_many_timeout($inner(self), items, timeout)
            }
            fn put_many_nowait(&self, items: Vec<T>) -> Result<(), PutError<Vec<T>>> {
                Queue::put_many_nowait($inner(self), items)
            }
            fn get_many(&self, max: usize) -> Result<Vec<T>, GetError> {
                Queue::get_many($inner(self), max)
            }
            fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>, GetError> {
                Queue::get_many_timeout($inner(self), max, timeout)
            }
            fn get_many_nowait(&self, max: usize) -> Result<Vec<T>, GetError> {
                Queue::get_many_nowait($inner(self), max)
            }
            fn qsize(&self) -> Result<usize, QueueError> {
                Ok(Queue::qsize($inner(self)))
            }
            fn full(&self) -> Result<bool, QueueError> {
                Ok(Queue::full($inner(self)))
            }
            fn maxsize(&self) -> usize {
                Queue::maxsize($inner(self))
            }
            fn close(&self) -> Result<(), QueueError> {
                Queue::close($inner(self))
            }
        }
    };
}

fn same<T>(q: &Queue<T>) -> &Queue<T> {
    q
}

fn inner<T>(q: &JoinableQueue<T>) -> &Queue<T> {
    q
}

shm_contract!(Queue, same);
shm_contract!(JoinableQueue, inner);

impl<T: Message + Send> JoinableContract<T> for JoinableQueue<T> {
    fn task_done(&self) -> Result<(), QueueError> {
        JoinableQueue::task_done(self)
    }
    fn join(&self) -> Result<(), QueueError> {
        JoinableQueue::join(self)
    }
    fn join_timeout(&self, timeout: Duration) -> Result<(), QueueError> {
        JoinableQueue::join_timeout(self, timeout)
    }
    fn unfinished_tasks(&self) -> Result<usize, QueueError> {
        Ok(JoinableQueue::unfinished_tasks(self))
    }
}
