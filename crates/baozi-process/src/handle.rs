//! [`spawn`] and [`JoinHandle`]: a child whose return value comes back through shared memory.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use baozi_queue::{Queue, Serde};
use serde::{Deserialize, Serialize};

use crate::child::{panic_message, PANIC_EXIT};
use crate::error::ProcessError;
use crate::process::{Builder, Process};
use crate::task::FnArg;

/// What the child puts in the result slot.
#[derive(Serialize, Deserialize)]
enum Outcome<T> {
    /// The closure's value.
    Value(T),
    /// The closure panicked with this message.
    Panic(String),
    /// The value could not be delivered (too large for the slot, or not serialisable).
    Lost(String),
}

/// A started child whose closure's value [`join`](JoinHandle::join) returns, like
/// [`std::thread::JoinHandle`]. Made by [`spawn`] or [`Builder::spawn`].
///
/// The value travels as postcard bytes through a one-slot shared-memory
/// [`Queue`](baozi_queue::Queue) mapped before the fork. Dropping the handle drops its
/// [`Process`] (see its "Drop").
#[must_use = "dropping the handle leaves the result unread; call join"]
pub struct JoinHandle<T> {
    process: Process,
    slot: Arc<Queue<Serde<Outcome<T>>>>,
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

/// Puts what the child's function gave into the slot; the child's exit code (0 for a value,
/// 1 for a panic or a value that could not be delivered).
fn deliver_outcome<T: Serialize + serde::de::DeserializeOwned + 'static>(
    slot: &Queue<Serde<Outcome<T>>>,
    result: std::thread::Result<T>,
) -> i32 {
    let outcome = match result {
        Ok(v) => Outcome::Value(v),
        Err(payload) => Outcome::Panic(panic_message(&*payload)),
    };
    let code = if matches!(outcome, Outcome::Value(_)) {
        0
    } else {
        PANIC_EXIT
    };
    match slot.put_nowait(Serde(outcome)) {
        Ok(()) => code,
        Err(e) => {
            let detail = format!("the result could not be delivered: {e}");
            let _ = slot.put_nowait(Serde(Outcome::Lost(detail)));
            PANIC_EXIT
        }
    }
}

/// What a [`Builder::spawn_task`] child gets: its slot, the function, the argument.
type Delivery<A, T> = (Queue<Serde<Outcome<T>>>, FnArg<A, T>, A);

/// The task of a [`Builder::spawn_task`] child: `f(arg)`, its value or panic into the slot.
fn deliver<A, T: Serialize + serde::de::DeserializeOwned + 'static>(
    (slot, f, arg): Delivery<A, T>,
) -> i32 {
    deliver_outcome(&slot, panic::catch_unwind(AssertUnwindSafe(|| f.call(arg))))
}

/// Starts a child process running `f` and returns a handle to get `f`'s value back, like
/// [`std::thread::spawn`]. The value is serialised (serde + postcard) into shared memory.
///
/// # Panics
///
/// When the result slot cannot be mapped or `fork` fails, as `thread::spawn` panics when it
/// cannot make a thread; use [`Builder::spawn`] to get the error instead.
///
/// # Examples
///
/// ```
/// let h = baozi_process::spawn(|| format!("{} buns", 6 * 7));
/// assert_eq!(h.join()?, "42 buns");
///
/// let h = baozi_process::spawn(|| -> u32 { panic!("out of flour") });
/// match h.join() {
///     Err(baozi_process::ProcessError::Panicked { message, .. }) => assert_eq!(message, "out of flour"),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), baozi_process::ProcessError>(())
/// ```
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Serialize + serde::de::DeserializeOwned + 'static,
{
    match Builder::new().spawn(f) {
        Ok(h) => h,
        Err(e) => panic!("failed to spawn process: {e}"),
    }
}

impl<T: Serialize + serde::de::DeserializeOwned + 'static> JoinHandle<T> {
    pub(crate) fn start<F>(builder: Builder, capacity: usize, f: F) -> Result<Self, ProcessError>
    where
        F: FnOnce() -> T + Send + 'static,
    {
        let slot: Arc<Queue<Serde<Outcome<T>>>> =
            Arc::new(Queue::new(1, capacity).map_err(ProcessError::ResultSlot)?);
        let child_slot = Arc::clone(&slot);
        let process = builder.make(crate::process::Target::Closure(Box::new(move || {
            deliver_outcome(&child_slot, panic::catch_unwind(AssertUnwindSafe(f)))
        })));
        process.start()?;
        Ok(JoinHandle { process, slot })
    }

    /// A started child running `f(arg)` as a task (any start method), its value back.
    pub(crate) fn start_task<A>(
        builder: Builder,
        capacity: usize,
        f: fn(A) -> T,
        arg: A,
    ) -> Result<Self, ProcessError>
    where
        A: Serialize + serde::de::DeserializeOwned + 'static,
    {
        let method = builder
            .chosen_method()
            .unwrap_or_else(crate::get_start_method);
        let func = FnArg::new(f);
        if method != crate::StartMethod::Fork && !func.portable() {
            return Err(ProcessError::NeedsFork {
                what: "a function outside the program's executable (a shared library)".into(),
                method,
            });
        }
        let slot: Arc<Queue<Serde<Outcome<T>>>> =
            Arc::new(Queue::new(1, capacity).map_err(ProcessError::ResultSlot)?);
        let process = builder
            .start_method(method)
            .task(deliver::<A, T>, ((*slot).clone(), func, arg))?;
        process.start()?;
        Ok(JoinHandle { process, slot })
    }

    /// Waits for the child and returns its closure's value.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Panicked`] with the panic message, [`ProcessError::Died`] when a signal
    /// killed the child before it delivered, [`ProcessError::NoResult`] when it exited without
    /// one (it called `exit`, or the value did not fit the slot), and the errors of
    /// [`Process::join`].
    pub fn join(self) -> Result<T, ProcessError> {
        let code = self.process.join()?;
        self.outcome(code)
    }

    /// Like [`join`](JoinHandle::join) with a time limit: `Err(self)` gives the handle back when
    /// the child is still running after `timeout`.
    ///
    /// # Errors
    ///
    /// The inner result as [`join`](JoinHandle::join); the outer `Err` on timeout.
    #[allow(clippy::result_large_err)]
    pub fn join_timeout(self, timeout: Duration) -> Result<Result<T, ProcessError>, Self> {
        match self.process.join_timeout(timeout) {
            Ok(None) => Err(self),
            Ok(Some(code)) => Ok(self.outcome(code)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn outcome(&self, code: i32) -> Result<T, ProcessError> {
        let pid = self.process.pid().unwrap_or(0);
        match self.slot.get_nowait() {
            Ok(Serde(Outcome::Value(v))) => Ok(v),
            Ok(Serde(Outcome::Panic(message))) => Err(ProcessError::Panicked { pid, message }),
            Ok(Serde(Outcome::Lost(detail))) => Err(ProcessError::NoResult {
                pid,
                exitcode: code,
                detail: Some(detail),
            }),
            Err(_) if code < 0 => Err(ProcessError::Died { pid, signal: -code }),
            Err(e) => Err(ProcessError::NoResult {
                pid,
                exitcode: code,
                detail: (!e.is_empty()).then(|| e.to_string()),
            }),
        }
    }
}

impl<T> JoinHandle<T> {
    /// The child [`Process`]: pid, name, [`is_alive`](Process::is_alive),
    /// [`kill`](Process::kill), [`terminate`](Process::terminate).
    pub fn process(&self) -> &Process {
        &self.process
    }
}
