//! [`AsyncResult`] and [`IMap`]: results that arrive later.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::call::Call;
use super::parent::{BatchId, Callback, Shared};
use super::proto::{decode_chunk, encode_chunk};
use crate::error::ProcessError;

/// How a settled batch of chunks becomes the caller's value.
type Finish<T> = fn(Vec<Vec<u8>>) -> Result<T, ProcessError>;

/// A result that will be ready later: what [`Pool::apply_async`](super::Pool::apply_async) and
/// [`Pool::map_async`](super::Pool::map_async) return (Python's `AsyncResult` and
/// `MapResult`).
///
/// [`get`](AsyncResult::get) blocks until the value is there. A task whose worker died gives
/// [`ProcessError::WorkerDied`] instead, within a moment of the death: it never hangs. Dropping
/// an `AsyncResult` lets its tasks run to the end and throws their results away.
///
/// ```
/// use baozi_process::Pool;
/// use std::time::Duration;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = Pool::new(2)?;
/// let r = pool.apply_async(square, 12)?;
/// r.wait();
/// assert!(r.ready());
/// assert_eq!(r.successful(), Some(true));
/// assert_eq!(r.get()?, 144);
///
/// let m = pool.map_async(square, 0..5)?;
/// let m = match m.get_timeout(Duration::from_secs(30)) {
///     Ok(result) => result?,
///     Err(_still_running) => panic!("slower than 30 s"),
/// };
/// assert_eq!(m, [0, 1, 4, 9, 16]);
/// # Ok::<(), baozi_process::ProcessError>(())
/// ```
#[must_use = "dropping the handle leaves the task's result unread; call get"]
pub struct AsyncResult<T> {
    shared: Arc<Shared>,
    tasks: BatchId,
    finish: Finish<T>,
    taken: bool,
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("tasks", &self.tasks.len)
            .field("ready", &self.ready())
            .finish()
    }
}

impl<T> AsyncResult<T> {
    pub(crate) fn new(shared: Arc<Shared>, tasks: BatchId, finish: Finish<T>) -> Self {
        AsyncResult {
            shared,
            tasks,
            finish,
            taken: false,
        }
    }

    /// Whether the call has finished: every one of its tasks done or failed (Python's
    /// `ready()`). A failed task does not make a map ready while its other tasks still run.
    pub fn ready(&self) -> bool {
        self.shared.lock().settled(self.tasks)
    }

    /// Whether it finished without an error; `None` while it runs (where Python raises).
    pub fn successful(&self) -> Option<bool> {
        let st = self.shared.lock();
        if !st.settled(self.tasks) {
            return None;
        }
        Some(!st.failed(self.tasks))
    }

    /// Blocks until [`ready`](AsyncResult::ready).
    pub fn wait(&self) {
        let st = self.shared.lock();
        let _ = self
            .shared
            .wait_until(st, None, |st| st.settled(self.tasks));
    }

    /// Blocks until [`ready`](AsyncResult::ready) or `timeout` has passed; returns whether it
    /// is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let st = self.shared.lock();
        let deadline = Instant::now() + timeout;
        self.shared
            .wait_until(st, Some(deadline), |st| st.settled(self.tasks))
            .1
    }

    /// Blocks until the value is there and returns it.
    ///
    /// # Errors
    ///
    /// [`ProcessError::TaskPanicked`] (the worker goes on), [`ProcessError::WorkerDied`] (the
    /// worker running it was killed or exited; it has been replaced),
    /// [`ProcessError::ResultTooLarge`], [`ProcessError::Encode`], [`ProcessError::Decode`],
    /// [`ProcessError::PoolTerminated`], [`ProcessError::PoolBroken`]. For a map, the first
    /// failing chunk in input order.
    pub fn get(mut self) -> Result<T, ProcessError> {
        self.shared.owned()?;
        let st = self.shared.lock();
        let (mut st, _) = self
            .shared
            .wait_until(st, None, |st| st.settled(self.tasks));
        self.taken = true;
        let chunks = st.take(self.tasks);
        drop(st);
        chunks.and_then(self.finish)
    }

    /// Like [`get`](AsyncResult::get) with a time limit: `Err(self)` gives the result back
    /// when it is not ready after `timeout` (Python raises `TimeoutError`).
    ///
    /// # Errors
    ///
    /// The inner result as [`get`](AsyncResult::get); the outer `Err` on timeout.
    #[allow(clippy::result_large_err)]
    pub fn get_timeout(self, timeout: Duration) -> Result<Result<T, ProcessError>, Self> {
        if self.wait_timeout(timeout) {
            Ok(self.get())
        } else {
            Err(self)
        }
    }
}

impl<T: 'static> AsyncResult<T> {
    /// Runs `callback` with the result once it is ready, instead of waiting for it (Python's
    /// `callback` and `error_callback`, in one). It runs on the pool's result thread, which it
    /// holds up meanwhile: keep it short (send the value on a channel, bump a counter). If
    /// the result is ready already, it runs now, on this thread. A panic in it is printed and
    /// ignored.
    ///
    /// ```
    /// use baozi_process::Pool;
    /// use std::sync::mpsc;
    ///
    /// fn cube(x: i64) -> i64 { x * x * x }
    ///
    /// let pool = Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// for x in 0..4 {
    ///     let tx = tx.clone();
    ///     pool.apply_async(cube, x)?.on_ready(move |r| tx.send(r.unwrap()).unwrap());
    /// }
    /// let mut got: Vec<i64> = rx.iter().take(4).collect();
    /// got.sort();
    /// assert_eq!(got, [0, 1, 8, 27]);
    /// # Ok::<(), baozi_process::ProcessError>(())
    /// ```
    pub fn on_ready<F>(mut self, callback: F)
    where
        F: FnOnce(Result<T, ProcessError>) + Send + 'static,
    {
        self.taken = true;
        let finish = self.finish;
        if let Err(e) = self.shared.owned() {
            return callback(Err(e));
        }
        let mut st = self.shared.lock();
        if st.settled(self.tasks) {
            let chunks = st.take(self.tasks);
            drop(st);
            return callback(chunks.and_then(finish));
        }
        st.on_settled(
            self.tasks,
            Callback(Box::new(move |chunks| callback(chunks.and_then(finish)))),
        );
    }
}

impl<T> Drop for AsyncResult<T> {
    fn drop(&mut self) {
        if !self.taken {
            self.shared.lock().abandon(self.tasks);
        }
    }
}

pub(crate) fn finish_one<R: DeserializeOwned>(chunks: Vec<Vec<u8>>) -> Result<R, ProcessError> {
    let mut all = finish_all::<R>(chunks)?;
    match (all.pop(), all.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => Err(ProcessError::Decode(
            "a single task came back with a number of results other than one".into(),
        )),
    }
}

pub(crate) fn finish_all<R: DeserializeOwned>(
    chunks: Vec<Vec<u8>>,
) -> Result<Vec<R>, ProcessError> {
    let mut out = Vec::new();
    for c in chunks {
        out.extend(decode_chunk::<R>(&c)?);
    }
    Ok(out)
}

/// One chunk of an [`IMap`] on its way.
#[derive(Debug)]
enum InFlight {
    Task(BatchId),
    /// It could not even be submitted (the pool was closed, the chunk too large).
    Refused(ProcessError),
    /// Reading the input panicked here: the panic is resumed when this place is reached, after
    /// every result before it (Python's `imap` raises the input's exception at its position).
    InputPanicked(Box<dyn std::any::Any + Send>),
}

/// The iterator of [`Pool::imap`](super::Pool::imap) and
/// [`Pool::imap_unordered`](super::Pool::imap_unordered): results as they arrive, in input
/// order or in completion order.
///
/// It reads its input lazily and keeps at most a few chunks per worker in flight (see
/// [`Pool::imap`](super::Pool::imap)), so an endless input is fine. Each item is a `Result`:
/// a chunk that failed (a panic, a dead worker) yields one `Err` in place of its items, and
/// the iteration goes on with the next chunk.
pub struct IMap<A, R, I> {
    shared: Arc<Shared>,
    call: Call,
    input: I,
    input_done: bool,
    chunksize: usize,
    window: usize,
    ordered: bool,
    in_flight: VecDeque<InFlight>,
    ready: VecDeque<R>,
    _args: PhantomData<fn(A)>,
}

impl<A, R, I> fmt::Debug for IMap<A, R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap")
            .field("ordered", &self.ordered)
            .field("chunksize", &self.chunksize)
            .field("chunks_in_flight", &self.in_flight.len())
            .field("buffered", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl<A, R, I> IMap<A, R, I>
where
    A: Serialize,
    R: DeserializeOwned,
    I: Iterator<Item = A>,
{
    pub(crate) fn new(
        shared: Arc<Shared>,
        call: Call,
        input: I,
        chunksize: usize,
        window: usize,
        ordered: bool,
    ) -> Self {
        IMap {
            shared,
            call,
            input,
            input_done: false,
            chunksize,
            window,
            ordered,
            in_flight: VecDeque::new(),
            ready: VecDeque::new(),
            _args: PhantomData,
        }
    }

    /// Reads input and submits chunks until the window is full or the input ends.
    ///
    /// The input is read ahead of the results, so a panic in it is caught here and kept in its
    /// place: the items read before it go as a chunk, and the panic comes out of `next` once
    /// every result before it has been yielded. The input ends there.
    fn refill(&mut self) {
        while !self.input_done && self.in_flight.len() < self.window {
            let mut chunk: Vec<A> = Vec::with_capacity(self.chunksize.min(1024));
            let (input, size) = (&mut self.input, self.chunksize);
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                chunk.extend(input.by_ref().take(size));
            }));
            let panicked = read.err();
            if chunk.len() < self.chunksize {
                self.input_done = true;
            }
            if chunk.is_empty() {
                if let Some(payload) = panicked {
                    self.in_flight.push_back(InFlight::InputPanicked(payload));
                }
                break;
            }
            let submitted =
                encode_chunk(&chunk).and_then(|b| self.shared.submit(self.call, vec![b]));
            let entry = match submitted {
                Ok(batch) => InFlight::Task(batch),
                Err(e) => {
                    // A pool that takes no more tasks will not take the next chunk either.
                    if matches!(
                        e,
                        ProcessError::PoolClosed
                            | ProcessError::PoolTerminated
                            | ProcessError::PoolBroken { .. }
                            | ProcessError::Invalid { .. }
                    ) {
                        self.input_done = true;
                    }
                    InFlight::Refused(e)
                }
            };
            self.in_flight.push_back(entry);
            if let Some(payload) = panicked {
                self.in_flight.push_back(InFlight::InputPanicked(payload));
                break;
            }
        }
    }

    /// The next result, waiting at most until `deadline`; `Some(Err(Timeout))` when it passes.
    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R, ProcessError>> {
        if let Some(r) = self.ready.pop_front() {
            return Some(Ok(r));
        }
        self.refill();
        if self.in_flight.is_empty() {
            return None;
        }
        if let Err(e) = self.shared.owned() {
            self.in_flight.clear();
            return Some(Err(e));
        }
        // The entry to hand over: the oldest (ordered), or any that is ready (unordered).
        let st = self.shared.lock();
        let ordered = self.ordered;
        let entries = &self.in_flight;
        // An input panic is always the last entry; even unordered, it waits for every result
        // before it (it is "ready" only once it is alone).
        let alone = entries.len() == 1;
        let is_ready = |st: &super::parent::State, e: &InFlight| match e {
            InFlight::Task(batch) => st.settled(*batch),
            InFlight::Refused(_) => true,
            InFlight::InputPanicked(_) => alone,
        };
        let (mut st, ok) = self.shared.wait_until(st, deadline, |st| {
            if ordered {
                is_ready(st, &entries[0])
            } else {
                entries.iter().any(|e| is_ready(st, e))
            }
        });
        if !ok {
            return Some(Err(ProcessError::Timeout));
        }
        let pos = if ordered {
            0
        } else {
            entries
                .iter()
                .position(|e| is_ready(&st, e))
                .expect("one is ready")
        };
        let entry = self.in_flight.remove(pos).expect("in range");
        let result = match entry {
            InFlight::Refused(e) => Err(e),
            InFlight::Task(batch) => st.take(batch),
            InFlight::InputPanicked(payload) => {
                drop(st);
                std::panic::resume_unwind(payload)
            }
        };
        drop(st);
        match result.and_then(finish_all::<R>) {
            Ok(items) => {
                self.ready.extend(items);
                self.refill();
                self.ready
                    .pop_front()
                    .map(Ok)
                    .or_else(|| self.next_until(deadline))
            }
            Err(e) => {
                self.refill();
                Some(Err(e))
            }
        }
    }

    /// Like [`next`](Iterator::next), but waits at most `timeout`: then it yields
    /// `Some(Err(ProcessError::Timeout))` and the iteration can go on (Python's
    /// `next(timeout)`).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, ProcessError>> {
        self.next_until(Some(Instant::now() + timeout))
    }
}

impl<A, R, I> Iterator for IMap<A, R, I>
where
    A: Serialize,
    R: DeserializeOwned,
    I: Iterator<Item = A>,
{
    type Item = Result<R, ProcessError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_until(None)
    }
}

impl<A, R, I> Drop for IMap<A, R, I> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        for e in &self.in_flight {
            if let InFlight::Task(batch) = e {
                st.abandon(*batch);
            }
        }
    }
}
