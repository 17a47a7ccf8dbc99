//! What a child's body is: [`IntoExitCode`] (what it returns) and [`ProcessBody`] (a type
//! that is a process's `run`).

use std::fmt;

/// What a child's closure may return: its exit code.
///
/// | returns | exit code |
/// |---|---|
/// | `()` | 0 |
/// | `i32` | that number (the parent sees only its low 8 bits: `exit(256)` reads as 0) |
/// | `Result<T, E>` | `Ok(t)`: `t`'s code; `Err(e)`: 1, after `Error: {e:?}` on stderr, as `main` does |
///
/// A panic gives 1, like an uncaught exception in Python; a signal gives minus its number.
pub trait IntoExitCode {
    /// The exit code this value stands for.
    fn into_exit_code(self) -> i32;
}

impl IntoExitCode for () {
    fn into_exit_code(self) -> i32 {
        0
    }
}

impl IntoExitCode for i32 {
    fn into_exit_code(self) -> i32 {
        self
    }
}

impl<T: IntoExitCode, E: fmt::Debug> IntoExitCode for Result<T, E> {
    fn into_exit_code(self) -> i32 {
        match self {
            Ok(t) => t.into_exit_code(),
            Err(e) => {
                eprintln!("Error: {e:?}");
                1
            }
        }
    }
}

/// A type that is a process's body: Python's `Process` subclass that overrides `run`.
///
/// The value is moved into the child at the fork (it is there as the parent made it, see the
/// crate doc's "Passing closures across fork") and [`run`](ProcessBody::run) is called there;
/// its output is the exit code ([`IntoExitCode`]). Start one with [`Process::from_body`](crate::Process::from_body) or
/// [`Builder::body`](crate::Builder::body). A closure does the same job; a type names it, carries its own state and
/// may give the process its name.
pub trait ProcessBody: Send + 'static {
    /// What `run` returns: `()`, an `i32` exit code, or a `Result` (see [`IntoExitCode`]).
    type Output: IntoExitCode;

    /// The child's work; runs in the child, once.
    fn run(self) -> Self::Output;

    /// The process's name, unless the builder gives one (default: `Process-N`).
    fn name(&self) -> Option<String> {
        None
    }
}
