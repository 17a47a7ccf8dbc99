//! Linux: fork, _exit, pidfd_open, poll, waitpid, kill, prctl, sysconf.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A process id.
pub(crate) type Pid = libc::pid_t;

/// SIGTERM, for `terminate`.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
/// SIGKILL, for `kill` and daemon clean-up.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;

/// Which side of a fork we are on.
pub(crate) enum Forked {
    /// In the new process.
    Child,
    /// In the caller; the child's pid.
    Parent(Pid),
}

/// `fork(2)`.
///
/// # Safety
///
/// In the child only the calling thread exists. The caller must keep the child's work to what is
/// safe there (see the crate doc's "Passing closures across fork") and must leave the child with
/// [`exit_now`], never by returning into code that expects the parent's threads.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; the caller keeps the child's
    // path to what is safe after fork (this function's contract).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// `_exit(2)`: leave at once, without atexit handlers, destructors or stdio flushing.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes any int; it does not return.
    unsafe { libc::_exit(code) }
}

/// `getpid(2)`.
pub(crate) fn getpid() -> Pid {
    // SAFETY: getpid cannot fail and touches no memory.
    unsafe { libc::getpid() }
}

/// `getppid(2)`.
pub(crate) fn getppid() -> Pid {
    // SAFETY: getppid cannot fail and touches no memory.
    unsafe { libc::getppid() }
}

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills this process when the thread that forked
/// it exits.
pub(crate) fn set_parent_death_kill() -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number by value; the unused arguments are zero.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `kill(2)`.
pub(crate) fn kill(pid: Pid, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers and touches no memory.
    if unsafe { libc::kill(pid, sig) } == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `pidfd_open(2)` (Linux ≥ 5.3): an fd that becomes readable when `pid` exits. Before 5.3 this
/// fails with `ENOSYS`.
pub(crate) fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd (it fits an int) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// A `poll` timeout in milliseconds: -1 for none, rounded up so that a sub-millisecond remainder
/// does not become a zero-timeout spin.
fn poll_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(libc::c_int::MAX as u128) as libc::c_int,
    }
}

/// `poll(2)` one fd for readability, for at most `timeout` (`None`: no limit). Returns whether
/// it became readable; `false` on timeout or `EINTR` (the caller re-checks and waits again).
pub(crate) fn poll_readable(fd: &OwnedFd, timeout: Option<Duration>) -> io::Result<bool> {
    let ms = poll_ms(timeout);
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid, writable pollfd and nfds is 1; the fd is kept open by `fd`.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r == -1 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}

/// Python's exit code from a wait status: the exit status, or minus the killing signal.
fn decode(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// `waitpid(pid, WNOHANG)`: reap `pid` if it has exited. `Ok(None)` while it runs.
pub(crate) fn try_reap(pid: Pid) -> io::Result<Option<i32>> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid, writable int; waitpid only writes it.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        match r {
            0 => return Ok(None),
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            _ => return Ok(Some(decode(status))),
        }
    }
}

/// `waitpid(pid, 0)`: block until `pid` exits and reap it.
pub(crate) fn reap_blocking(pid: Pid) -> io::Result<i32> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid, writable int; waitpid only writes it.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            return Ok(decode(status));
        }
    }
}

/// `sysconf(_SC_NPROCESSORS_ONLN)`: CPUs online, at least 1.
pub(crate) fn cpu_count() -> usize {
    // SAFETY: sysconf takes a name by value and touches no memory.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

/// `pipe2(O_CLOEXEC)`: the read end and the write end.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two ints, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are fresh fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `close(2)` on a raw fd number that this process inherited across `fork` but does not own
/// as an `OwnedFd` (the parent's end of a pipe). Errors (EBADF: already closed) are ignored.
pub(crate) fn close_inherited(fd: std::os::fd::RawFd) {
    // SAFETY: closing an fd number affects no memory; the caller knows that no live OwnedFd in
    // this process owns the number (it is the other side's end, carried over by fork).
    unsafe { libc::close(fd) };
}

/// `poll(2)` several fds for readability (or hang-up), for at most `timeout` (`None`: no
/// limit). Sets `ready[i]` for each fd that is readable; on `EINTR` or timeout none is set.
pub(crate) fn poll_many(
    fds: &[std::os::fd::BorrowedFd<'_>],
    timeout: Option<Duration>,
    ready: &mut Vec<bool>,
) -> io::Result<()> {
    let ms = poll_ms(timeout);
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    ready.clear();
    ready.resize(fds.len(), false);
    // SAFETY: `polled` is a valid, writable array of `polled.len()` pollfds; the fds are kept
    // open by the borrows in `fds` for the duration of the call.
    let r = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
    if r == -1 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(())
        } else {
            Err(e)
        };
    }
    for (flag, p) in ready.iter_mut().zip(&polled) {
        *flag = p.revents != 0;
    }
    Ok(())
}
