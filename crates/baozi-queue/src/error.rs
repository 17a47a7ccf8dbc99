//! Errors: [`QueueError`] for the queue as a whole, [`PutError`] and [`GetError`] per operation.

use std::fmt;

use baozi_shm::ShmError;
use baozi_sync::SyncError;

use crate::codec::CodecError;

/// What went wrong with a queue as a whole: making or opening it, or its lock.
#[derive(Debug)]
#[non_exhaustive]
pub enum QueueError {
    /// The region could not be made, opened or checked (not found, foreign object, wrong version
    /// or kind, truncated, not ready, bad name, out-of-range size...).
    Shm(ShmError),
    /// The queue's lock or wait failed.
    Sync(SyncError),
    /// The queue's shared state breaks an invariant no correct process can break.
    Corrupt {
        /// The queue.
        name: String,
        /// What was found.
        detail: String,
    },
    /// `create_or_open` found the queue with other parameters than it was asked for.
    Mismatch {
        /// The queue.
        name: String,
        /// What differs.
        detail: String,
    },
    /// [`task_done`](crate::JoinableQueue::task_done) was called more times than items were put.
    TaskDoneTooManyTimes,
    /// [`join_timeout`](crate::JoinableQueue::join_timeout) ran out with tasks unfinished.
    JoinTimeout {
        /// Tasks still unfinished.
        unfinished: u32,
    },
    /// Another backend of the [`QueueContract`](crate::QueueContract) failed (for Redis: the
    /// server could not be reached, or answered an error); its own error is inside, for
    /// `downcast_ref`.
    Backend(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Shm(e) => fmt::Display::fmt(e, f),
            QueueError::Sync(e) => fmt::Display::fmt(e, f),
            QueueError::Corrupt { name, detail } => {
                write!(
                    f,
                    "queue {name} is corrupt ({detail}): unlink it and create it again"
                )
            }
            QueueError::Mismatch { name, detail } => {
                write!(f, "queue {name} does not match: {detail}")
            }
            QueueError::TaskDoneTooManyTimes => {
                f.write_str("task_done() called more times than items were put")
            }
            QueueError::JoinTimeout { unfinished } => {
                write!(f, "join timed out with {unfinished} task(s) unfinished")
            }
            QueueError::Backend(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueueError::Shm(e) => Some(e),
            QueueError::Sync(e) => Some(e),
            QueueError::Backend(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<ShmError> for QueueError {
    fn from(e: ShmError) -> Self {
        QueueError::Shm(e)
    }
}

impl From<SyncError> for QueueError {
    fn from(e: SyncError) -> Self {
        QueueError::Sync(e)
    }
}

/// Why a put did not enqueue its item; the item comes back in every case.
#[non_exhaustive]
pub enum PutError<T> {
    /// The queue stayed full (item limit or bytes) for the whole wait, or at once for `_nowait`.
    Full(T),
    /// A batch holds more items than the queue's `maxsize`: it can never fit.
    TooMany {
        /// The batch.
        item: T,
        /// Items in the batch.
        items: usize,
        /// The queue's item limit.
        maxsize: usize,
    },
    /// The message (or batch) can never fit: its frames need more bytes than the ring has.
    TooLarge {
        /// The item (or batch).
        item: T,
        /// Bytes the message (or batch) needs in the ring.
        needed: usize,
        /// Bytes the ring has in all.
        capacity: usize,
    },
    /// The queue was closed; nothing more can be put.
    Closed(T),
    /// The queue stayed full and every registered consumer has gone (see
    /// [`Queue::register_consumer`](crate::Queue::register_consumer)): nobody will make room.
    Disconnected(T),
    /// The message could not be encoded.
    Encode(T, CodecError),
    /// The queue failed (lock unrecoverable, corrupt state).
    Failed(T, QueueError),
}

impl<T> PutError<T> {
    /// The item that was not put.
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t)
            | PutError::TooLarge { item: t, .. }
            | PutError::TooMany { item: t, .. }
            | PutError::Closed(t)
            | PutError::Disconnected(t)
            | PutError::Encode(t, _)
            | PutError::Failed(t, _) => t,
        }
    }

    /// Whether this is [`PutError::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self, PutError::Full(_))
    }

    /// The same error carrying `f(item)` instead of the item: for example `.map(|_| ())` to
    /// compare the outcomes of [`Queue::put_many`](crate::Queue::put_many) (which hands the batch
    /// back) and [`Queue::put_many_from`](crate::Queue::put_many_from) (which does not).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> PutError<U> {
        match self {
            PutError::Full(t) => PutError::Full(f(t)),
            PutError::TooLarge {
                item,
                needed,
                capacity,
            } => PutError::TooLarge {
                item: f(item),
                needed,
                capacity,
            },
            PutError::TooMany {
                item,
                items,
                maxsize,
            } => PutError::TooMany {
                item: f(item),
                items,
                maxsize,
            },
            PutError::Closed(t) => PutError::Closed(f(t)),
            PutError::Disconnected(t) => PutError::Disconnected(f(t)),
            PutError::Encode(t, e) => PutError::Encode(f(t), e),
            PutError::Failed(t, e) => PutError::Failed(f(t), e),
        }
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::TooLarge {
                needed, capacity, ..
            } => f
                .debug_struct("TooLarge")
                .field("needed", needed)
                .field("capacity", capacity)
                .finish_non_exhaustive(),
            PutError::TooMany { items, maxsize, .. } => f
                .debug_struct("TooMany")
                .field("items", items)
                .field("maxsize", maxsize)
                .finish_non_exhaustive(),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::Disconnected(_) => f.write_str("Disconnected(..)"),
            PutError::Encode(_, e) => f.debug_tuple("Encode").field(&"..").field(e).finish(),
            PutError::Failed(_, e) => f.debug_tuple("Failed").field(&"..").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("the queue is full"),
            PutError::TooLarge { needed, capacity, .. } => write!(
                f,
                "the message needs {needed} bytes but the queue holds at most {capacity}: it can never fit; make the queue larger"
            ),
            PutError::TooMany { items, maxsize, .. } => write!(
                f,
                "the batch has {items} items but the queue holds at most {maxsize} (its maxsize): it can never fit; put fewer at a time"
            ),
            PutError::Closed(_) => f.write_str("the queue is closed"),
            PutError::Disconnected(_) => f.write_str(
                "the queue is full and no consumer is left: every registered consumer exited or deregistered",
            ),
            PutError::Encode(_, e) => write!(f, "the message could not be encoded: {e}"),
            PutError::Failed(_, e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<T> std::error::Error for PutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PutError::Failed(_, e) => Some(e),
            PutError::Encode(_, e) => Some(e),
            _ => None,
        }
    }
}

/// Why a get returned no item.
#[derive(Debug)]
#[non_exhaustive]
pub enum GetError {
    /// The queue stayed empty for the whole wait, or at once for `_nowait`.
    Empty,
    /// The queue is closed and drained: no item will ever come.
    Closed,
    /// The queue is empty and every registered producer has gone (see
    /// [`Queue::register_producer`](crate::Queue::register_producer)): no item will come.
    Disconnected,
    /// A message was taken but could not be decoded as the queue's type. It is no longer in the
    /// queue; its bytes are here, so nothing is lost.
    Decode {
        /// The message as it was in the queue.
        bytes: Vec<u8>,
        /// Why it did not decode.
        error: CodecError,
    },
    /// The queue failed (lock unrecoverable, corrupt state).
    Failed(QueueError),
}

impl GetError {
    /// Whether this is [`GetError::Empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self, GetError::Empty)
    }
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Empty => f.write_str("the queue is empty"),
            GetError::Closed => f.write_str("the queue is closed and drained"),
            GetError::Disconnected => f.write_str(
                "the queue is empty and no producer is left: every registered producer exited or deregistered",
            ),
            GetError::Decode { bytes, error } => {
                write!(
                    f,
                    "a {}-byte message could not be decoded: {error}",
                    bytes.len()
                )
            }
            GetError::Failed(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for GetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GetError::Failed(e) => Some(e),
            GetError::Decode { error, .. } => Some(error),
            _ => None,
        }
    }
}
