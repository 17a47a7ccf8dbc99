//! Linux: fork, _exit, pidfd_open, poll, waitpid, kill, prctl, sysconf, pipe2.
//!
//! The routine calls go through nix. Three stay on libc because nix has no form for them:
//! `fork` is `unsafe` in nix as well (the child's restrictions are the caller's to keep),
//! `_exit` (nix has none; `std::process::exit` would run atexit handlers and flush stdio in a
//! forked child), and `pidfd_open` (no nix wrapper).

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid as NixPid;

/// A process id.
pub(crate) type Pid = libc::pid_t;

/// SIGTERM, for `terminate`.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
/// SIGKILL, for `kill` and daemon clean-up.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;

fn io(e: Errno) -> io::Error {
    io::Error::from(e)
}

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
    // SAFETY: nix's fork has the same contract as this function: the child keeps to what is
    // safe after fork (async-signal-safe work, then `exit_now`), which the caller promises.
    match unsafe { nix::unistd::fork() }.map_err(io)? {
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw())),
    }
}

/// `_exit(2)`: leave at once, without atexit handlers, destructors or stdio flushing.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes any int; it does not return.
    unsafe { libc::_exit(code) }
}

/// `getpid(2)`.
pub(crate) fn getpid() -> Pid {
    nix::unistd::getpid().as_raw()
}

/// `getppid(2)`.
pub(crate) fn getppid() -> Pid {
    nix::unistd::getppid().as_raw()
}

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills this process when the thread that forked
/// it exits.
pub(crate) fn set_parent_death_kill() -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io)
}

/// `kill(2)`.
pub(crate) fn kill(pid: Pid, sig: i32) -> io::Result<()> {
    let sig = Signal::try_from(sig).map_err(io)?;
    nix::sys::signal::kill(NixPid::from_raw(pid), sig).map_err(io)
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

/// A `poll` timeout: none for `None`, else milliseconds rounded up so that a sub-millisecond
/// remainder does not become a zero-timeout spin.
fn poll_timeout(timeout: Option<Duration>) -> PollTimeout {
    match timeout {
        None => PollTimeout::NONE,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// `poll(2)` one fd for readability, for at most `timeout` (`None`: no limit). Returns whether
/// it became readable; `false` on timeout or `EINTR` (the caller re-checks and waits again).
pub(crate) fn poll_readable(fd: &OwnedFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, poll_timeout(timeout)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// `waitpid(pid, flags)`, retried on `EINTR`: Python's exit code (the exit status, or minus the
/// killing signal) once `pid` has ended, `None` while it runs (with `WNOHANG`).
fn wait(pid: Pid, flags: Option<WaitPidFlag>) -> io::Result<Option<i32>> {
    loop {
        match nix::sys::wait::waitpid(NixPid::from_raw(pid), flags) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Some(-(sig as i32))),
            // Stopped, continued or traced (without WUNTRACED/WCONTINUED these are not
            // reported, but be exact): still running.
            Ok(_) if flags.is_some() => return Ok(None),
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(e) => return Err(io(e)),
        }
    }
}

/// `waitpid(pid, WNOHANG)`: reap `pid` if it has exited. `Ok(None)` while it runs.
pub(crate) fn try_reap(pid: Pid) -> io::Result<Option<i32>> {
    wait(pid, Some(WaitPidFlag::WNOHANG))
}

/// `waitpid(pid, 0)`: block until `pid` exits and reap it.
pub(crate) fn reap_blocking(pid: Pid) -> io::Result<i32> {
    loop {
        if let Some(code) = wait(pid, None)? {
            return Ok(code);
        }
    }
}

/// `sysconf(_SC_NPROCESSORS_ONLN)`: CPUs online, at least 1.
pub(crate) fn cpu_count() -> usize {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN) {
        Ok(Some(n)) if n >= 1 => n as usize,
        _ => 1,
    }
}

/// `pipe2(O_CLOEXEC)`: the read end and the write end.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io)
}

/// `close(2)` on a raw fd number that this process inherited across `fork` but does not own
/// as an `OwnedFd` (the parent's end of a pipe). Errors (EBADF: already closed) are ignored.
pub(crate) fn close_inherited(fd: std::os::fd::RawFd) {
    // The caller knows that no live OwnedFd in this process owns the number (it is the other
    // side's end, carried over by fork).
    let _ = nix::unistd::close(fd);
}

/// `poll(2)` several fds for readability (or hang-up), for at most `timeout` (`None`: no
/// limit). Sets `ready[i]` for each fd that is readable; on `EINTR` or timeout none is set.
pub(crate) fn poll_many(
    fds: &[std::os::fd::BorrowedFd<'_>],
    timeout: Option<Duration>,
    ready: &mut Vec<bool>,
) -> io::Result<()> {
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    ready.clear();
    ready.resize(fds.len(), false);
    match nix::poll::poll(&mut polled, poll_timeout(timeout)) {
        Ok(_) => {}
        Err(Errno::EINTR) => return Ok(()),
        Err(e) => return Err(io(e)),
    }
    for (flag, p) in ready.iter_mut().zip(&polled) {
        *flag = p.revents().is_some_and(|r| !r.is_empty());
    }
    Ok(())
}
