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
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Fork(e) => Some(e),
            ProcessError::Os { source, .. } => Some(source),
            ProcessError::ResultSlot(e) => Some(e),
            _ => None,
        }
    }
}
