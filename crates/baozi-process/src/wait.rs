//! [`wait`] on several processes and other fds at once, as Python's
//! `multiprocessing.connection.wait`.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::error::ProcessError;
use crate::family::{ActiveChild, ParentProcess};
use crate::handle::JoinHandle;
use crate::process::Process;
use crate::sys;

/// Something [`wait`] can wait on: it lends an fd that polls readable once it is ready (a
/// process: once it has exited).
///
/// Implemented for [`Process`], [`JoinHandle`], [`ActiveChild`], [`ParentProcess`], and every
/// [`AsFd`] type (a pipe, a socket, an eventfd, a `File`), as Python's `wait` takes sockets and
/// connections next to sentinels. Implement it for your own type by lending its fd.
pub trait Waitable {
    /// The fd to poll for readability.
    ///
    /// # Errors
    ///
    /// When there is none to lend (a process not started yet, no pidfd on Linux < 5.3).
    fn ready_fd(&self) -> Result<BorrowedFd<'_>, ProcessError>;
}

impl Waitable for Process {
    fn ready_fd(&self) -> Result<BorrowedFd<'_>, ProcessError> {
        self.sentinel()
    }
}

impl<T> Waitable for JoinHandle<T> {
    fn ready_fd(&self) -> Result<BorrowedFd<'_>, ProcessError> {
        self.process().sentinel()
    }
}

impl Waitable for ActiveChild {
    fn ready_fd(&self) -> Result<BorrowedFd<'_>, ProcessError> {
        self.sentinel()
    }
}

impl Waitable for ParentProcess {
    fn ready_fd(&self) -> Result<BorrowedFd<'_>, ProcessError> {
        self.sentinel()
    }
}

impl<T: AsFd> Waitable for T {
    fn ready_fd(&self) -> Result<BorrowedFd<'_>, ProcessError> {
        Ok(self.as_fd())
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`: no limit), and
/// returns the indices of those ready, in order; empty on timeout (Python's
/// `multiprocessing.connection.wait(object_list, timeout)`, which returns the objects). A
/// process is ready once it has exited; it is not reaped here (join it).
///
/// ```
/// use baozi_process::{wait, Process};
/// use std::time::Duration;
///
/// let quick = Process::new(|| 0);
/// let slow = Process::new(|| std::thread::sleep(Duration::from_secs(60)));
/// quick.start()?;
/// slow.start()?;
/// assert_eq!(wait(&[&slow, &quick], None)?, [1]);
/// assert!(wait(&[&slow], Some(Duration::from_millis(10)))?.is_empty());
/// slow.kill()?; // does not wait: the death is seen by the next wait
/// assert_eq!(wait(&[&slow], Some(Duration::from_secs(10)))?, [0]);
/// assert_eq!(wait(&[&slow, &quick], None)?, [0, 1]);
/// # quick.join()?; slow.join()?;
/// # Ok::<(), baozi_process::ProcessError>(())
/// ```
///
/// # Errors
///
/// The error of an object that has no fd to lend (see [`Waitable::ready_fd`]), or
/// [`ProcessError::Wait`] when `poll` fails.
pub fn wait(
    objects: &[&dyn Waitable],
    timeout: Option<Duration>,
) -> Result<Vec<usize>, ProcessError> {
    let fds = objects
        .iter()
        .map(|o| o.ready_fd())
        .collect::<Result<Vec<_>, _>>()?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut ready = Vec::new();
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        sys::poll_many(&fds, left, &mut ready).map_err(ProcessError::Wait)?;
        let out: Vec<usize> = (0..fds.len()).filter(|&i| ready[i]).collect();
        // Empty: a timeout, or EINTR (go on waiting what is left).
        if !out.is_empty() || left.is_some_and(|l| l.is_zero()) {
            return Ok(out);
        }
    }
}
