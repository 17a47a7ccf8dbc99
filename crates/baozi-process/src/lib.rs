//! Child processes for baozi, with the API of Python's `multiprocessing.Process` and `Pool`.
//!
//! A [`Process`] forks a child that runs a closure, then the parent [`join`](Process::join)s it
//! (or [`join_timeout`](Process::join_timeout)s, [`terminate`](Process::terminate)s,
//! [`kill`](Process::kill)s it) and reads its [`exitcode`](Process::exitcode) with Python's
//! meaning. [`spawn`] is the `thread::spawn` of processes: the closure's value comes back to the
//! parent through shared memory.
//!
//! # Example
//!
//! ```
//! use baozi_process::{spawn, Process, ProcessError};
//! use std::time::Duration;
//!
//! // Exit codes as in Python: 0, N for exit(N), 1 after a panic, -SIG when killed.
//! let p = Process::new(|| 3);
//! p.start()?;
//! assert_eq!(p.join()?, 3);
//!
//! let sleeper = Process::new(|| std::thread::sleep(Duration::from_secs(60)));
//! sleeper.start()?;
//! assert_eq!(sleeper.join_timeout(Duration::from_millis(50))?, None); // still running
//! sleeper.kill()?;
//! assert_eq!(sleeper.join()?, -9);
//!
//! // A value back from the child, like thread::spawn.
//! let h = spawn(|| vec![String::from("猪肉"), String::from("白菜")]);
//! assert_eq!(h.join()?, ["猪肉", "白菜"]);
//! # Ok::<(), ProcessError>(())
//! ```
//!
//! # Items
//!
//! * [`Process`], [`Process::builder`] / [`Builder`] (name, daemon), [`IntoExitCode`] (what the
//!   closure may return: `()`, `i32`, `Result`);
//! * [`spawn`], [`Builder::spawn`], [`JoinHandle`];
//! * [`Pool`] (Python's `multiprocessing.Pool`), [`PoolBuilder`], [`AsyncResult`], [`IMap`],
//!   [`Chunked`]: a worker that dies fails only the task it was running, never hangs the caller;
//! * [`Process::sentinel`] and [`wait`] over [`Waitable`] objects (Python's
//!   `multiprocessing.connection.wait`); [`ProcessBody`] (a `Process` subclass's `run`);
//! * [`current_process`], [`parent_process`], [`active_children`], [`parent_pid`],
//!   [`cpu_count`];
//! * start methods ([`StartMethod`]: fork, spawn, forkserver; [`set_start_method`],
//!   [`get_start_method`], [`main_guard`], [`guard_before_main!`], [`stop_forkserver`]), tasks
//!   that cross to a child under any method ([`Process::task`], [`Builder::spawn_task`] for a
//!   value back, [`task!`] to register one by name, [`lookup_task`]);
//! * [`ProcessError`], the crate's one error type.
//!
//! # Start methods
//!
//! As in Python: **fork** copies this process (fast; runs capturing closures; refused while
//! the process has other threads, [`ProcessError::ForkWithThreads`]), **spawn** runs the
//! program again, and **forkserver** has a spawned single-threaded server fork the child.
//! Spawn and forkserver children are clean whatever threads the parent has; they run a plain
//! function with a serde argument ([`Process::task`], any [`Pool`] task), and the program's
//! `main` starts with [`main_guard`] (Python's `if __name__ == '__main__':`). The default
//! when nothing is set: fork while the process has one thread, forkserver once it has more
//! (see the `start` docs on [`get_start_method`]).
//!
//! ```no_run
//! use baozi_process::{Pool, Process, StartMethod};
//!
//! fn bake(filling: String) -> i32 { filling.len() as i32 }
//!
//! fn main() -> Result<(), baozi_process::ProcessError> {
//!     baozi_process::main_guard(); // a spawned child runs its task here and exits
//!     std::thread::spawn(|| { /* a logger, a runtime: the program is multi-threaded */ });
//!     let p = Process::builder()
//!         .start_method(StartMethod::Forkserver)
//!         .task(bake, "pork".to_string())?;
//!     p.start()?;
//!     assert_eq!(p.join()?, 4);
//!     let pool = Pool::builder().start_method(StartMethod::Spawn).build()?;
//!     assert_eq!(pool.map(bake, ["leek".to_string()])?, [4]);
//!     Ok(())
//! }
//! ```
//!
//! # Passing closures across fork
//!
//! There is no pickling: the child is a copy of the parent made by `fork`, so the closure, and
//! everything it captured, is simply there in the child's memory. That gives three rules.
//!
//! 1. **Capture before `start`.** The closure sees the parent's memory as it was at the fork;
//!    later changes on either side are private to that side. To share data after the fork, put it
//!    in shared memory made before the fork: a [`baozi_queue::Queue`], a [`baozi_shm::Region`], or
//!    a value from baozi-alloc.
//! 2. **Same binary image.** Function pointers and vtables in the closure are addresses in this
//!    binary; they are valid in the child because it *is* this binary. A closure therefore
//!    crosses only by fork; under spawn and forkserver use a task (a plain function, which
//!    crosses by its place in the executable, with serde arguments).
//! 3. **Fork from a single-threaded process** (baozi refuses otherwise). Only the
//!    forking thread exists in the child. A process-private lock that another thread held at the
//!    fork stays locked forever in the child: the allocator's, stdout's and stderr's, any
//!    `std::sync::Mutex`. In a child of a multi-threaded parent, `println!`, a heap allocation, a
//!    panic message, even formatting an error, can deadlock. This crate itself allocates in the
//!    child (to name it, to serialise a [`spawn`] result) and flushes stdout before `_exit`. So
//!    [`Process::start`] with fork counts the threads (`/proc/self/task`) and returns
//!    [`ProcessError::ForkWithThreads`] when there are others: start processes before threads,
//!    or use [`StartMethod::Forkserver`] with a task. Locks in *shared* memory (baozi-sync)
//!    are fine: their owner is still alive.
//!
//! The child never returns into the parent's code: the closure runs under `catch_unwind` and
//! the child always leaves with `_exit`, so no destructor of the parent's objects runs twice, and
//! stdio buffers other than stdout's are not flushed twice. A panic prints its message on stderr
//! (the panic hook) and gives exit code 1, like an uncaught exception in Python.
//!
//! # Reaping and daemons
//!
//! Every child is reaped: by [`join`](Process::join), [`exitcode`](Process::exitcode),
//! [`is_alive`](Process::is_alive), or by the drop of its [`Process`], which kills a daemon and
//! waits for a non-daemon (see [`Process`]'s "Drop"). A timed join sleeps in `poll` on a pidfd
//! (`pidfd_open`, Linux ≥ 5.3), so it wakes as soon as the child exits; on older kernels it falls
//! back to sleeping 1 to 20 ms between checks. A daemon child gets `PR_SET_PDEATHSIG` = SIGKILL
//! and checks right after that its parent is still alive, so it never outlives the thread that
//! forked it.
//!
//! As in Python, a [`Process`] made inside a daemon is a daemon by default, and a daemon may not
//! start children: [`Process::start`] there is [`ProcessError::DaemonicParent`] (a daemon is
//! killed with its parent and could not join them). Pool workers are daemons.
//!
//! Linux only.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod body;
mod child;
mod current;
mod error;
mod family;
mod handle;
mod pool;
mod process;
mod start;
mod sys;
mod task;
mod wait;

pub use body::{IntoExitCode, ProcessBody};
pub use current::{cpu_count, current_process, parent_pid, CurrentProcess};
pub use error::ProcessError;
pub use family::{active_children, parent_process, ActiveChild, ParentProcess};
pub use handle::{spawn, JoinHandle};
pub use pool::backend;
pub use pool::{
    AsyncResult, Chunked, IMap, Pool, PoolBuilder, DEFAULT_RESULTS_CAPACITY, DEFAULT_TASK_CAPACITY,
    MIN_RESULTS_CAPACITY, MIN_TASK_CAPACITY,
};
pub use process::{Builder, Process, DEFAULT_RESULT_CAPACITY};
pub use start::{
    get_start_method, main_guard, set_start_method, stop_forkserver, StartMethod,
    UnknownStartMethod,
};
pub use task::{lookup_task, registered_tasks, ErasedRun, TaskEntry};
pub use wait::{wait, Waitable};

#[doc(hidden)]
pub mod __private {
    pub use crate::pool::{binary_refs, unary_refs, TaskRefs};
    pub use crate::task::__run_erased as run_erased;
    pub use crate::task::__run_erased2 as run_erased2;
    pub use inventory;
}
