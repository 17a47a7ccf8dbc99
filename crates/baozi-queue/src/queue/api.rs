//! The typed public operations: put/get of one item (blocking, timed, `_nowait`), batches, and
//! raw byte access for `Queue<Vec<u8>>`; each encodes or decodes and hands the bytes to the
//! attempts under the locks (`super`) through the blocking loops (`super::blocking`).

use std::cell::RefCell;
use std::time::Duration;

use super::blocking::{wait_for, Wait};
use super::{Batch, Queue};
use crate::codec::{CodecError, Message};
use crate::error::{GetError, PutError, QueueError};
use crate::ring;

thread_local! {
    /// Reused buffers for put_many: encoded payloads and their lengths.
    static BATCH: RefCell<(Vec<u8>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// A get that did not return an item.
pub(super) enum GetFail {
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
    /// only while another process holds it for a copy (at most [`NOWAIT_LOCK_WAIT`](super::NOWAIT_LOCK_WAIT), reached
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
    /// waits for the lock at most [`NOWAIT_LOCK_WAIT`](super::NOWAIT_LOCK_WAIT) (then [`GetError::Empty`]).
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
