//! Start methods: how a child process comes to be (Python's `fork`, `spawn`, `forkserver`),
//! the process-wide default, the main guard, and functions that cross to a child by reference.
//!
//! * **Fork** copies this process. The child has the closure and everything it captured, so
//!   capturing closures work; but only the forking thread is copied, so a fork of a process
//!   with other threads may inherit a lock that one of them held, and hang on it. baozi counts
//!   the threads (`/proc/self/task`) and refuses: [`ProcessError::ForkWithThreads`].
//! * **Spawn** runs this program again (`/proc/self/exe`); [`main_guard`], on the first line
//!   of `main`, sends the new process to its task instead of the program's own `main`. The
//!   child starts clean (one thread, fresh heap), and takes a plain function and serde
//!   arguments.
//! * **Forkserver**: a spawned single-threaded server forks the children: as clean as spawn's,
//!   started at the cost of a fork. A [`Process`](crate::Process) uses the program's one
//!   forkserver (started on first use; [`stop_forkserver`]); a [`Pool`](crate::Pool) uses its
//!   own spawner, which it spawns, as that server.
//!
//! The default when nothing is set ([`set_start_method`], `BAOZI_START_METHOD`): Fork while
//! the calling process has one thread (then it is safe, it is the fastest, and it is the only
//! method that runs capturing closures), Forkserver once it has more (Python 3.14's default,
//! for the same reason).

mod forkserver;
mod image;
mod job;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::ProcessError;
use crate::sys;

pub use forkserver::stop_forkserver;
pub(crate) use forkserver::{exit_code as served_exit_code, start_child as start_served};
pub(crate) use image::FnRef;
pub use job::main_guard;
pub(crate) use job::{refuse_unguarded, Job, Spawned};

/// How a child process is started (Python's `multiprocessing` start methods).
///
/// ```
/// use baozi_process::StartMethod;
///
/// assert_eq!("forkserver".parse::<StartMethod>(), Ok(StartMethod::Forkserver));
/// assert_eq!(StartMethod::Spawn.to_string(), "spawn");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// Copy this process (`fork`): fastest, runs capturing closures; refused while the
    /// process has other threads ([`ProcessError::ForkWithThreads`]).
    Fork,
    /// Run this program again (`/proc/self/exe`), which [`main_guard`] sends to its task:
    /// a clean child, safe from any parent. Tasks are plain functions with serde arguments.
    Spawn,
    /// A spawned single-threaded server forks the children: clean children at the cost of a
    /// fork (the program's forkserver for a `Process`, the pool's spawner for a pool). Tasks
    /// as for `Spawn`.
    Forkserver,
}

impl StartMethod {
    /// Python's name: `"fork"`, `"spawn"`, `"forkserver"`.
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
        }
    }

    fn code(self) -> u8 {
        match self {
            StartMethod::Fork => 1,
            StartMethod::Spawn => 2,
            StartMethod::Forkserver => 3,
        }
    }

    fn from_code(c: u8) -> Option<StartMethod> {
        match c {
            1 => Some(StartMethod::Fork),
            2 => Some(StartMethod::Spawn),
            3 => Some(StartMethod::Forkserver),
            _ => None,
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A start method name that is not `fork`, `spawn` or `forkserver`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownStartMethod(pub String);

impl fmt::Display for UnknownStartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown start method {:?}: use fork, spawn or forkserver",
            self.0
        )
    }
}

impl std::error::Error for UnknownStartMethod {}

impl FromStr for StartMethod {
    type Err = UnknownStartMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fork" => Ok(StartMethod::Fork),
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::Forkserver),
            other => Err(UnknownStartMethod(other.to_owned())),
        }
    }
}

/// 0: not set (the policy decides); else a [`StartMethod::code`]; 255: not read from the
/// environment yet.
static DEFAULT: AtomicU8 = AtomicU8::new(255);

/// Sets the process-wide start method (Python's `multiprocessing.set_start_method`), used by
/// every [`Process`](crate::Process) and [`Pool`](crate::Pool) that does not choose its own.
/// `None` goes back to the policy (see [`get_start_method`]). Children started by spawn or
/// forkserver do not inherit it.
///
/// ```
/// use baozi_process::{get_start_method, set_start_method, StartMethod};
///
/// set_start_method(Some(StartMethod::Forkserver));
/// assert_eq!(get_start_method(), StartMethod::Forkserver);
/// set_start_method(None);
/// ```
pub fn set_start_method(method: Option<StartMethod>) {
    DEFAULT.store(method.map_or(0, StartMethod::code), Ordering::Relaxed);
}

/// The start method a [`Process`](crate::Process) or [`Pool`](crate::Pool) started now without
/// its own choice would use: the one given to [`set_start_method`], else the one named by the
/// `BAOZI_START_METHOD` environment variable (read once; an unknown name is ignored with a
/// message on stderr), else the policy: [`StartMethod::Fork`] while this process has one
/// thread, [`StartMethod::Forkserver`] once it has more.
pub fn get_start_method() -> StartMethod {
    let mut code = DEFAULT.load(Ordering::Relaxed);
    if code == 255 {
        let from_env = match std::env::var("BAOZI_START_METHOD") {
            Ok(name) => match name.parse::<StartMethod>() {
                Ok(m) => m.code(),
                Err(e) => {
                    eprintln!("baozi: BAOZI_START_METHOD ignored: {e}");
                    0
                }
            },
            Err(_) => 0,
        };
        // A set_start_method meanwhile wins.
        code = match DEFAULT.compare_exchange(255, from_env, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => from_env,
            Err(now) => now,
        };
    }
    StartMethod::from_code(code).unwrap_or_else(|| {
        if sys::thread_count().map_or(true, |n| n <= 1) {
            StartMethod::Fork
        } else {
            StartMethod::Forkserver
        }
    })
}

/// The method set for the program ([`set_start_method`] or `BAOZI_START_METHOD`), if any.
pub(crate) fn explicit_default() -> Option<StartMethod> {
    let _ = get_start_method(); // reads the environment once
    StartMethod::from_code(DEFAULT.load(Ordering::Relaxed))
}

/// `Ok` when this process may fork now: it has a single thread.
pub(crate) fn check_fork() -> Result<(), ProcessError> {
    match sys::thread_count() {
        Ok(threads) if threads > 1 => Err(ProcessError::ForkWithThreads { threads }),
        // Unreadable /proc: nothing to tell; fork as before.
        _ => Ok(()),
    }
}
