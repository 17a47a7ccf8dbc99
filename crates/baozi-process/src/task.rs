//! Tasks: plain functions that cross to a child under any start method, by reference
//! ([`TaskCall`], for `Process::task`) or by name (the [`task!`](crate::task) registry).

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ProcessError;
use crate::process::IntoExitCode;
use crate::start::FnRef;

/// A process trampoline: (function address, encoded argument) → exit code.
type ProcessTrampoline = unsafe fn(usize, &[u8]) -> i32;

/// A function and its encoded argument, ready to run in a child (forked or spawned).
#[derive(Serialize, Deserialize)]
pub(crate) struct TaskCall {
    trampoline: FnRef,
    func: FnRef,
    arg: Vec<u8>,
}

impl TaskCall {
    /// `f(arg)` for a [`Process`](crate::Process): the exit code is `R`'s.
    pub(crate) fn process<A, R>(f: fn(A) -> R, arg: &A) -> Result<TaskCall, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: IntoExitCode,
    {
        let arg = postcard::to_allocvec(arg).map_err(|e| {
            ProcessError::Encode(format!("the task's argument did not encode: {e}"))
        })?;
        Ok(TaskCall {
            trampoline: FnRef::new(run_process::<A, R> as ProcessTrampoline as usize),
            func: FnRef::new(f as usize),
            arg,
        })
    }

    /// Whether the call holds in a spawned copy of the program.
    pub(crate) fn portable(&self) -> bool {
        self.trampoline.portable() && self.func.portable()
    }

    /// Runs the call (in the child); returns the exit code. A panic unwinds to the caller
    /// (`child::run` makes it exit code 1).
    pub(crate) fn run(self) -> i32 {
        // SAFETY: `trampoline` is a `ProcessTrampoline` taken in `TaskCall::process` in this
        // program's image: this process is a fork of the one that made the call (same
        // addresses), or a spawned run of the same executable whose image mark was checked
        // (same offsets); nothing else makes a `TaskCall`.
        let run =
            unsafe { std::mem::transmute::<usize, ProcessTrampoline>(self.trampoline.addr()) };
        // SAFETY: `func` was made with `trampoline`, for the types it was monomorphised with.
        unsafe { run(self.func.addr(), &self.arg) }
    }
}

impl fmt::Debug for TaskCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskCall")
            .field("arg_bytes", &self.arg.len())
            .finish_non_exhaustive()
    }
}

/// # Safety
///
/// `func` is the address of an `fn(A) -> R` with these `A` and `R` (made by
/// [`TaskCall::process`]).
unsafe fn run_process<A: DeserializeOwned, R: IntoExitCode>(func: usize, arg: &[u8]) -> i32 {
    // SAFETY: `func` is an `fn(A) -> R` of this image (this function's contract).
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    match postcard::from_bytes::<A>(arg) {
        Ok(a) => f(a).into_exit_code(),
        Err(e) => {
            let why = baozi_shm::take_attach_error().map_or(String::new(), |w| format!(": {w}"));
            eprintln!("baozi: the task's argument did not decode in the child: {e}{why}");
            1
        }
    }
}
