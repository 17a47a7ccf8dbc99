//! [`ProcessError`]: everything that can go wrong starting, waiting for or signalling a child.

use std::fmt;
use std::io;

use baozi_queue::QueueError;

/// What went wrong with a [`Process`](crate::Process) or a [`JoinHandle`](crate::JoinHandle).
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcessError {
    /// `fork` failed (out of processes or memory).
    Fork(io::Error),
    /// [`start`](crate::Process::start) was called on a process already started.
    AlreadyStarted {
        /// The process's name.
        name: String,
    },
    /// The process has not been started, so it cannot be joined or signalled.
    NotStarted {
        /// The process's name.
        name: String,
    },
    /// The process was started by another process (it was copied into a forked child); only the
    /// process that started it can wait for it or signal it.
    NotChild {
        /// The process's name.
        name: String,
        /// The child's pid.
        pid: i32,
    },
    /// Waiting for or signalling the child failed, e.g. `ECHILD` because someone else reaped it
    /// (`SIGCHLD` set to `SIG_IGN`, or a `waitpid(-1)` elsewhere).
    Os {
        /// What was being done.
        op: &'static str,
        /// The child's pid.
        pid: i32,
        /// The OS error.
        source: io::Error,
    },
    /// The shared-memory slot for a [`spawn`](crate::spawn)ed child's result could not be made.
    ResultSlot(QueueError),
    /// A [`spawn`](crate::spawn)ed child panicked; the panic message came back through shared
    /// memory.
    Panicked {
        /// The child's pid.
        pid: i32,
        /// The panic message (`"Box<dyn Any>"` when the payload was not a string).
        message: String,
    },
    /// The child was killed by a signal before it delivered a result.
    Died {
        /// The child's pid.
        pid: i32,
        /// The signal number (9 for SIGKILL).
        signal: i32,
    },
    /// The child exited without delivering a result: it called `exit` itself, or its result did
    /// not fit the result slot (see [`Builder::result_capacity`](crate::Builder::result_capacity)).
    NoResult {
        /// The child's pid.
        pid: i32,
        /// Its exit code.
        exitcode: i32,
        /// What the child reported, if anything (e.g. why the result did not fit).
        detail: Option<String>,
    },
    /// An argument is out of range (0 processes, a chunksize of 0, ...).
    Invalid {
        /// What is wrong, and what is allowed.
        what: String,
    },
    /// A [`Pool`](crate::Pool) could not be set up.
    PoolSetup {
        /// What could not be done.
        what: &'static str,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A pool task panicked. The worker survived and goes on. Like Python's `RemoteTraceback`,
    /// the error carries the worker's side: where it panicked and, when `RUST_BACKTRACE` (or
    /// `RUST_LIB_BACKTRACE`) asks for it in the worker, the worker's backtrace.
    TaskPanicked {
        /// The panic message (`"Box<dyn Any>"` when the payload was not a string).
        message: String,
        /// `file:line:column` of the panic in the worker, when the pool's panic hook saw it.
        location: Option<String>,
        /// The worker's backtrace at the panic, when backtraces are enabled there (as
        /// [`std::backtrace::Backtrace::capture`] decides); cut to fit the results queue.
        backtrace: Option<String>,
    },
    /// The pool worker running the task died before it delivered a result. Only this task
    /// failed: tasks queued behind it went to other workers, and a new worker took its place.
    WorkerDied {
        /// The worker's pid.
        pid: i32,
        /// The signal that killed it (9 for SIGKILL, 6 for abort, 11 for a segfault).
        signal: Option<i32>,
        /// Its exit status when it exited instead (a task called `exit`).
        exit_status: Option<i32>,
    },
    /// A task's encoded arguments are larger than a worker's task queue can ever hold.
    TaskTooLarge {
        /// Bytes the task needs.
        len: usize,
        /// The most a task may take ([`PoolBuilder::task_capacity`](crate::PoolBuilder::task_capacity) less framing).
        max: usize,
    },
    /// A task's encoded result is larger than the results queue can ever hold.
    ResultTooLarge {
        /// Bytes the result needs.
        len: usize,
        /// The most a result may take ([`PoolBuilder::results_capacity`](crate::PoolBuilder::results_capacity) less framing).
        max: usize,
    },
    /// A task's arguments (in the parent) or result (in the worker) did not encode (serde):
    /// the message says which, and the serializer's error. Nothing was run with them.
    Encode(String),
    /// A task's arguments (in the worker) or result (in the parent) did not decode (serde),
    /// or the type's `Deserialize` panicked: the message says which.
    Decode(String),
    /// [`start`](crate::Process::start) was called in a daemonic process: a daemon may not
    /// have children (Python's rule, since a daemon is killed without joining them). Start
    /// the process from a non-daemon, or make the caller a non-daemon.
    DaemonicParent {
        /// The calling (daemonic) process's name.
        name: String,
    },
    /// The pool was closed: it takes no new tasks.
    PoolClosed,
    /// [`Pool::join`](crate::Pool::join) was called on a running pool: call `close` or
    /// `terminate` first.
    PoolRunning,
    /// The pool was terminated before the task finished.
    PoolTerminated,
    /// The pool is out of service (its initializer panicked, its spawner process died).
    PoolBroken {
        /// Why.
        reason: String,
    },
    /// [`wait`](crate::wait) could not poll its objects.
    Wait(io::Error),
    /// No result came within the time given ([`IMap::next_timeout`](crate::IMap::next_timeout)).
    Timeout,
    /// [`StartMethod::Fork`](crate::StartMethod::Fork) was asked for in a process that has
    /// other threads: the child would inherit locks (the allocator's, stdout's, any `Mutex`)
    /// held by threads that do not exist there, and may hang on them. Use
    /// [`StartMethod::Forkserver`](crate::StartMethod::Forkserver) (or `Spawn`) with a task
    /// ([`Process::task`](crate::Process::task), any [`Pool`](crate::Pool)), or start the
    /// processes before the threads.
    ForkWithThreads {
        /// Threads of the calling process at the time.
        threads: usize,
    },
    /// What was asked cannot cross to a child made by `method`: a closure (it lives only in
    /// this process's memory) or a function outside the program's executable. Use a plain
    /// function with serde arguments ([`Process::task`](crate::Process::task),
    /// [`PoolBuilder::initializer_fn`](crate::PoolBuilder::initializer_fn)), or
    /// [`StartMethod::Fork`](crate::StartMethod::Fork).
    NeedsFork {
        /// What could not cross.
        what: String,
        /// The start method asked for.
        method: crate::StartMethod,
    },
    /// This process was started by the `spawn` or `forkserver` start method to run a task,
    /// but its `main` did not call [`main_guard`](crate::main_guard) first: it went on with
    /// the program's own `main` instead (Python's missing `if __name__ == '__main__':`).
    /// Starting processes is refused in such a child, so that it cannot start copies of
    /// itself for ever; in the parent, [`join`](crate::Process::join) of such a child says so.
    MainGuardMissing {
        /// The child's pid.
        pid: i32,
    },
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Fork(_) => f.write_str("cannot fork a child process"),
            ProcessError::AlreadyStarted { name } => {
                write!(f, "process {name} was already started: make a new Process")
            }
            ProcessError::NotStarted { name } => {
                write!(f, "process {name} has not been started: call start() first")
            }
            ProcessError::NotChild { name, pid } => write!(
                f,
                "process {name} (pid {pid}) is not a child of this process: only its parent can wait for or signal it"
            ),
            ProcessError::Os { op, pid, .. } => write!(f, "cannot {op} child process {pid}"),
            ProcessError::ResultSlot(_) => {
                f.write_str("cannot make the shared-memory slot for the child's result")
            }
            ProcessError::Panicked { pid, message } => {
                write!(f, "child process {pid} panicked: {message}")
            }
            ProcessError::Died { pid, signal } => {
                write!(f, "child process {pid} was killed by signal {signal}")
            }
            ProcessError::NoResult {
                pid,
                exitcode,
                detail,
            } => {
                write!(
                    f,
                    "child process {pid} exited with code {exitcode} without a result"
                )?;
                if let Some(d) = detail {
                    write!(f, " ({d})")?;
                }
                Ok(())
            }
            ProcessError::Invalid { what } => write!(f, "invalid argument: {what}"),
            ProcessError::PoolSetup { what, .. } => write!(f, "cannot set up the pool: cannot {what}"),
            ProcessError::TaskPanicked {
                message,
                location,
                backtrace,
            } => {
                f.write_str("the task panicked in a pool worker")?;
                if let Some(at) = location {
                    write!(f, " at {at}")?;
                }
                write!(f, ": {message}")?;
                if let Some(bt) = backtrace {
                    write!(f, "\n\nworker backtrace:\n{bt}")?;
                }
                Ok(())
            }
            ProcessError::WorkerDied {
                pid,
                signal,
                exit_status,
            } => match (signal, exit_status) {
                (Some(sig), _) => write!(
                    f,
                    "pool worker {pid} was killed by signal {sig} ({}) while running the task; it has been replaced",
                    signal_name(*sig)
                ),
                (None, Some(code)) => write!(
                    f,
                    "pool worker {pid} exited with status {code} while running the task; it has been replaced"
                ),
                (None, None) => write!(f, "pool worker {pid} died while running the task"),
            },
            ProcessError::TaskTooLarge { len, max } => write!(
                f,
                "the task's arguments take {len} bytes, more than a worker's task queue holds ({max}): use smaller chunks or a larger task_capacity"
            ),
            ProcessError::ResultTooLarge { len, max } => write!(
                f,
                "the task's result takes {len} bytes, more than the results queue holds ({max}): use smaller chunks or a larger results_capacity"
            ),
            ProcessError::Encode(m) | ProcessError::Decode(m) => f.write_str(m),
            ProcessError::DaemonicParent { name } => write!(
                f,
                "process {name} is a daemon, and a daemonic process may not start children: start them from a non-daemon"
            ),
            ProcessError::PoolClosed => f.write_str("the pool is closed: it takes no new tasks"),
            ProcessError::PoolRunning => {
                f.write_str("the pool is still running: call close() or terminate() before join()")
            }
            ProcessError::PoolTerminated => f.write_str("the pool was terminated"),
            ProcessError::PoolBroken { reason } => write!(f, "the pool is broken: {reason}"),
            ProcessError::Timeout => f.write_str("no result within the time given"),
            ProcessError::Wait(_) => f.write_str("cannot wait on the objects: poll failed"),
            ProcessError::ForkWithThreads { threads } => write!(
                f,
                "cannot fork: this process has {threads} threads, and a forked child could hang on a lock one of them held; use StartMethod::Forkserver (a task, not a closure), or start processes before threads"
            ),
            ProcessError::NeedsFork { what, method } => write!(
                f,
                "{what} cannot cross to a child started by {method}: use a plain function with serde arguments (Process::task, PoolBuilder::initializer_fn), or StartMethod::Fork"
            ),
            ProcessError::MainGuardMissing { pid } => write!(
                f,
                "process {pid} was started by spawn/forkserver to run a task, but its main() did not call baozi::main_guard() first (put it on main's first line, as Python's `if __name__ == '__main__':`)"
            ),
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Fork(e) | ProcessError::Wait(e) => Some(e),
            ProcessError::Os { source, .. } => Some(source),
            ProcessError::ResultSlot(e) => Some(e),
            ProcessError::PoolSetup { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

/// The usual name of a signal, for messages.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "a signal",
    }
}
