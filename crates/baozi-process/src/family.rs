//! Who is related to whom: [`active_children`] (the children this process started and that
//! still run) and [`parent_process`] (the process that started this one), as Python's
//! `multiprocessing.active_children()` and `parent_process()`.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::ProcessError;
use crate::sys;

/// A child started by a [`Process`](crate::Process) and not reaped yet.
struct Entry {
    /// The process that started it: a copy of the registry carried into a forked child is
    /// not that child's (and is not cleared there, which would take a lock another thread of
    /// the parent might have held at the fork).
    owner: sys::Pid,
    pid: sys::Pid,
    name: String,
    daemon: bool,
    pidfd: Option<Arc<OwnedFd>>,
}

static CHILDREN: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The parent's pid and name; `None` in a process not started by this crate.
static PARENT: Mutex<Option<(sys::Pid, String)>> = Mutex::new(None);

/// Records a child just started by this process.
pub(crate) fn register(pid: sys::Pid, name: &str, daemon: bool, pidfd: Option<Arc<OwnedFd>>) {
    let owner = sys::getpid();
    let mut children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    children.retain(|e| e.owner == owner); // drop what a fork carried over from the parent
    children.push(Entry {
        owner,
        pid,
        name: name.to_owned(),
        daemon,
        pidfd,
    });
}

/// Forgets a child this process has reaped.
pub(crate) fn unregister(pid: sys::Pid) {
    let owner = sys::getpid();
    CHILDREN
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|e| !(e.owner == owner && e.pid == pid));
}

/// In a freshly forked child: who its parent is.
pub(crate) fn enter_child(parent: sys::Pid, parent_name: String) {
    *PARENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((parent, parent_name));
}

/// Whether `fd` polls readable now.
fn readable_now(fd: &OwnedFd) -> bool {
    sys::poll_readable(fd, Some(Duration::ZERO)).unwrap_or(false)
}

/// A running child of this process, as [`active_children`] lists it: name, pid, daemon flag,
/// liveness and sentinel. It does not own the child: its [`Process`](crate::Process) does (and
/// joins, kills and reaps it).
#[derive(Clone)]
pub struct ActiveChild {
    pid: i32,
    name: String,
    daemon: bool,
    pidfd: Option<Arc<OwnedFd>>,
}

impl fmt::Debug for ActiveChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveChild")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .field("daemon", &self.daemon)
            .finish()
    }
}

impl ActiveChild {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether it is a daemon.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Whether it still runs (an exited child that its `Process` has not reaped yet does not).
    pub fn is_alive(&self) -> bool {
        match &self.pidfd {
            Some(fd) => !readable_now(fd),
            // Linux < 5.3: a zombie still answers kill(0); close enough without a pidfd.
            None => sys::kill(self.pid, 0).is_ok(),
        }
    }

    /// Its sentinel, as [`Process::sentinel`](crate::Process::sentinel): readable once it exits.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Os`] where no pidfd could be opened (Linux < 5.3).
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>, ProcessError> {
        match &self.pidfd {
            Some(fd) => Ok(fd.as_fd()),
            None => Err(ProcessError::Os {
                op: "open a pidfd (the sentinel) for",
                pid: self.pid,
                source: std::io::Error::from(std::io::ErrorKind::Unsupported),
            }),
        }
    }
}

/// The children this process started (with [`Process`](crate::Process), [`spawn`](crate::spawn),
/// a [`Pool`](crate::Pool)'s spawner) that are still running, in start order (Python's
/// `active_children()`).
///
/// Unlike Python's, it reaps nothing: a child is reaped by its `Process` (join, `exitcode`,
/// `is_alive`, drop), which alone may do so without stealing another waiter's exit status.
///
/// ```
/// use baozi_process::{active_children, Process};
/// use std::time::Duration;
///
/// let p = Process::builder().name("dough").spawn_fn(|| std::thread::sleep(Duration::from_secs(60)));
/// p.start()?;
/// let kids = active_children();
/// assert_eq!(kids.len(), 1);
/// assert_eq!((kids[0].name(), kids[0].pid()), ("dough", p.pid().unwrap()));
/// p.kill()?;
/// p.join()?;
/// assert!(active_children().is_empty());
/// # Ok::<(), baozi_process::ProcessError>(())
/// ```
pub fn active_children() -> Vec<ActiveChild> {
    let owner = sys::getpid();
    let children = CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    children
        .iter()
        .filter(|e| e.owner == owner)
        .map(|e| ActiveChild {
            pid: e.pid,
            name: e.name.clone(),
            daemon: e.daemon,
            pidfd: e.pidfd.clone(),
        })
        .filter(ActiveChild::is_alive)
        .collect()
}

/// The process that started this one, as [`parent_process`] gives it: name, pid, whether it
/// is alive, and a wait for its end (Python's `parent_process()`).
#[derive(Debug)]
pub struct ParentProcess {
    pid: i32,
    name: String,
    /// Readable once the parent is gone: its pidfd, or, when it was gone already at the call,
    /// the read end of a pipe whose write end is closed. `None` on Linux < 5.3.
    sentinel: Option<OwnedFd>,
}

impl ParentProcess {
    /// The parent's name (`"MainProcess"` for a process not started by this crate).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parent's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether the parent is still running.
    pub fn is_alive(&self) -> bool {
        match &self.sentinel {
            Some(fd) => !readable_now(fd),
            // The kernel hands an orphan to a reaper at once.
            None => sys::getppid() == self.pid,
        }
    }

    /// Blocks until the parent has exited (Python's `parent_process().join()`).
    pub fn wait(&self) {
        while !self.wait_timeout(Duration::from_secs(3600)) {}
    }

    /// Blocks until the parent has exited or `timeout` has passed; returns whether it has
    /// exited (Python's `parent_process().join(timeout)`, then `not is_alive()`).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_alive() {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            if left.is_zero() {
                return false;
            }
            match &self.sentinel {
                Some(fd) => {
                    let _ = sys::poll_readable(fd, Some(left));
                }
                None => std::thread::sleep(left.min(Duration::from_millis(20))),
            }
        }
    }

    /// The parent's sentinel: an fd that polls readable once the parent has exited.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Os`] where no pidfd could be opened (Linux < 5.3).
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>, ProcessError> {
        match &self.sentinel {
            Some(fd) => Ok(fd.as_fd()),
            None => Err(ProcessError::Os {
                op: "open a pidfd (the sentinel) for",
                pid: self.pid,
                source: std::io::Error::from(std::io::ErrorKind::Unsupported),
            }),
        }
    }
}

/// The process that started this one with [`Process`](crate::Process) (or a pool's spawner, for
/// a pool worker); `None` in a process not started by this crate (Python's `parent_process()`,
/// `None` in the main process).
///
/// Each call opens a fresh pidfd on the parent, checked to be the parent still: if the parent
/// is gone already, the result says so ([`is_alive`](ParentProcess::is_alive) is false, and a
/// wait returns at once).
///
/// ```
/// use baozi_process::{parent_process, spawn};
///
/// assert!(parent_process().is_none()); // the main process
/// let h = spawn(|| {
///     let p = parent_process().expect("started by baozi");
///     (p.name().to_owned(), p.pid(), p.is_alive())
/// });
/// assert_eq!(h.join()?, ("MainProcess".to_owned(), std::process::id() as i32, true));
/// # Ok::<(), baozi_process::ProcessError>(())
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    let (pid, name) = PARENT.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
    let sentinel = match sys::pidfd_open(pid) {
        // Opened, then still our parent: the fd is the parent's (its pid could not have been
        // reused while it was alive, and it was alive after the open).
        Ok(fd) if sys::getppid() == pid => Some(fd),
        // The parent is gone (the pid may be someone else's by now): a sentinel that is
        // readable already.
        Ok(_) | Err(_) if sys::getppid() != pid => sys::pipe().ok().map(|(read, write)| {
            drop(write);
            read
        }),
        _ => None,
    };
    Some(ParentProcess {
        pid,
        name,
        sentinel,
    })
}
