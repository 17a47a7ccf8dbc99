//! What a process knows about itself: its name, pid, parent pid, and the CPU count.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::sys;

/// This process's name; `None` means "MainProcess" (never forked by baozi-process).
static NAME: Mutex<Option<String>> = Mutex::new(None);

/// Counter for default names `Process-N`, per process: reset to zero in every child.
static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Whether this process is a daemon: set in a child started with the daemon flag.
static DAEMON: AtomicBool = AtomicBool::new(false);

/// Whether the calling process is a daemon (the main process is not).
pub(crate) fn is_daemon() -> bool {
    DAEMON.load(Ordering::Relaxed)
}

/// This process's name, as [`current_process`] gives it.
pub(crate) fn name() -> String {
    NAME.lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_else(|| "MainProcess".to_owned())
}

/// The next default name, `Process-1`, `Process-2`, ... counted in this process.
pub(crate) fn next_default_name() -> String {
    // Relaxed: only uniqueness within this process matters, which fetch_add gives at any ordering.
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
    format!("Process-{n}")
}

/// Called first thing in a forked child: take the child's name and daemon flag, restart the
/// name counter.
pub(crate) fn enter_child(name: String, daemon: bool, parent: sys::Pid, parent_name: String) {
    COUNTER.store(0, Ordering::Relaxed);
    DAEMON.store(daemon, Ordering::Relaxed);
    crate::family::enter_child(parent, parent_name);
    *NAME.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
}

/// The calling process, as Python's `multiprocessing.current_process()` sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentProcess {
    name: String,
    pid: i32,
    daemon: bool,
}

impl CurrentProcess {
    /// The name: `"MainProcess"` in a process not started by this crate, otherwise the name of
    /// the [`Process`](crate::Process) it runs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether this process is a daemon: it was started with [`Builder::daemon`](crate::Builder::daemon)
    /// (or by a daemon's default). A daemon may not start children.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Always `true`: the process asking is running (as Python's `current_process().is_alive()`).
    pub fn is_alive(&self) -> bool {
        true
    }

    /// Always `None`: a running process has no exit code yet (as in Python).
    pub fn exitcode(&self) -> Option<i32> {
        None
    }
}

/// The calling process: its name, pid and daemon flag.
///
/// # Examples
///
/// ```
/// let me = baozi_process::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid() as u32, std::process::id());
/// assert!(me.is_alive() && !me.is_daemon() && me.exitcode().is_none());
/// ```
pub fn current_process() -> CurrentProcess {
    CurrentProcess {
        name: name(),
        pid: sys::getpid(),
        daemon: is_daemon(),
    }
}

/// The parent's pid (`getppid`). After the parent dies this is the pid of the reaper the
/// child was handed to (init or a subreaper).
pub fn parent_pid() -> i32 {
    sys::getppid()
}

/// The number of CPUs online (`sysconf(_SC_NPROCESSORS_ONLN)`, as Python's `os.cpu_count()`),
/// at least 1. It ignores the affinity mask; see [`std::thread::available_parallelism`] for that.
///
/// # Examples
///
/// ```
/// assert!(baozi_process::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    sys::cpu_count()
}
