//! Linux: fork, _exit, pidfd_open, poll, waitpid, kill, prctl, sysconf, pipe2.
//!
//! The routine calls go through nix. Three stay on libc because nix has no form for them:
//! `fork` is `unsafe` in nix as well (the child's restrictions are the caller's to keep),
//! `_exit` (nix has none; `std::process::exit` would run atexit handlers and flush stdio in a
//! forked child), and `pidfd_open` (no nix wrapper).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
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

/// The number of threads of this process (entries of `/proc/self/task`).
pub(crate) fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// A sealed-size anonymous file (`memfd_create`, close-on-exec) holding `bytes`: how a spawned
/// child gets its job.
pub(crate) fn memfd_with(bytes: &[u8]) -> io::Result<OwnedFd> {
    use std::io::Write;
    // SAFETY: the name is a NUL-terminated literal; flags by value; returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"baozi-job".as_ptr(), libc::MFD_CLOEXEC) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    Ok(OwnedFd::from(file))
}

/// Bytes in the file behind `fd` (`fstat`).
pub(crate) fn fd_len(fd: &OwnedFd) -> io::Result<u64> {
    let file = std::fs::File::from(fd.try_clone()?);
    Ok(file.metadata()?.len())
}

/// What a spawned child executes, made whole in the parent: between `fork` and `execve` the
/// child may only make async-signal-safe calls (the parent may have threads), so nothing there
/// allocates.
pub(crate) struct ExecPlan {
    path: std::ffi::CString,
    _strings: Vec<std::ffi::CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl ExecPlan {
    /// `/proc/self/exe` with this process's `argv[0]` and environment plus `extra` variables.
    pub(crate) fn this_program(extra: &[(&str, String)]) -> io::Result<ExecPlan> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let bad = |_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in argv or env");
        let arg0 = std::env::args_os()
            .next()
            .unwrap_or_else(|| "baozi-child".into());
        let mut strings = vec![CString::new(arg0.as_bytes()).map_err(bad)?];
        let names: Vec<&str> = extra.iter().map(|(k, _)| *k).collect();
        for (k, v) in std::env::vars_os() {
            if names.iter().any(|n| k.as_bytes() == n.as_bytes()) {
                continue;
            }
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            strings.push(CString::new(kv).map_err(bad)?);
        }
        for (k, v) in extra {
            strings.push(CString::new(format!("{k}={v}")).map_err(bad)?);
        }
        let argv = vec![strings[0].as_ptr(), std::ptr::null()];
        let mut envp: Vec<_> = strings[1..].iter().map(|s| s.as_ptr()).collect();
        envp.push(std::ptr::null());
        Ok(ExecPlan {
            path: CString::new("/proc/self/exe").map_err(bad)?,
            _strings: strings,
            argv,
            envp,
        })
    }
}

/// `fork` then, in the child, `execve` of `plan`, keeping `keep` open across it; a daemon
/// child gets `PR_SET_PDEATHSIG` first. Returns the child's pid. The child's side makes only
/// async-signal-safe calls, so this is safe from a multi-threaded parent; a child whose exec
/// fails leaves with exit code 127 (as a shell's "command not found").
pub(crate) fn fork_exec(
    plan: &ExecPlan,
    keep: &[std::os::fd::RawFd],
    daemon: bool,
) -> io::Result<Pid> {
    let parent = getpid();
    // SAFETY: fork has no memory-safety preconditions; the child below only makes
    // async-signal-safe calls (prctl, getppid, kill, fcntl, execve, _exit) on memory the parent
    // prepared, and never returns.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            if daemon {
                // SAFETY: PR_SET_PDEATHSIG takes a signal number by value.
                let r = unsafe {
                    libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                        0,
                        0,
                        0,
                    )
                };
                if r == -1 || getppid() != parent {
                    let _ = kill(getpid(), SIGKILL);
                    exit_now(1);
                }
            }
            for &fd in keep {
                // SAFETY: clearing FD_CLOEXEC on an fd number touches no memory.
                unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
            }
            // SAFETY: every pointer is a NUL-terminated string or the terminating null of its
            // array, all owned by `plan`, which the parent keeps alive (the child has a copy).
            unsafe { libc::execve(plan.path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr()) };
            exit_now(127)
        }
        pid => Ok(pid),
    }
}

/// The base address of the loaded object (executable or shared library) that holds `addr`
/// (`dladdr`), or `None` when no loaded object holds it.
pub(crate) fn object_base(addr: usize) -> Option<usize> {
    // SAFETY: an all-zero Dl_info is a valid value (null pointers); dladdr only fills it.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads no memory at `addr` (it only compares it with the loaded objects'
    // ranges) and writes `info`, which is valid and writable.
    let found = unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) };
    (found != 0 && !info.dli_fbase.is_null()).then_some(info.dli_fbase as usize)
}

/// In a spawned child: reads the whole job file that the parent left open at `fd` (from its
/// start), empties it (so the parent can tell that the job was taken) and closes it.
pub(crate) fn take_job_file(fd: std::os::fd::RawFd) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    // SAFETY: F_GETFD only asks about the number; it fails with EBADF if it is not open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the parent left this fd open for this process alone to take (the environment
    // variable that names it is removed by the caller), so nothing else here owns it.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    let len = file.metadata()?.len() as usize;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)?;
    file.set_len(0)?;
    Ok(bytes)
}

/// In a spawned child: takes ownership of an fd its parent left open for it (named in its
/// job), after checking that it is open.
pub(crate) fn inherited_file(fd: std::os::fd::RawFd) -> io::Result<std::fs::File> {
    // SAFETY: F_GETFD only asks about the number; it fails with EBADF if it is not open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the parent kept this fd open across exec for this process alone (the job names
    // it), and nothing else here owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`: message boundaries kept, both ways.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two ints, as socketpair requires.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both are fresh fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one message on a seqpacket socket, with `fd` passed along (`SCM_RIGHTS`) if given.
pub(crate) fn send_msg(sock: &OwnedFd, bytes: &[u8], fd: Option<&OwnedFd>) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [io::IoSlice::new(bytes)];
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let rights = raw.as_ref().map(|r| [ControlMessage::ScmRights(r)]);
    let cmsgs: &[ControlMessage<'_>] = rights.as_ref().map_or(&[], |c| c);
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message (at most `buf.len()` bytes) and the fd passed with it, if any.
/// `Ok(None)`: nothing there (with `nonblocking`) ; a length of 0: the other end is closed.
pub(crate) fn recv_msg(
    sock: &OwnedFd,
    buf: &mut [u8],
    nonblocking: bool,
) -> io::Result<Option<(usize, Option<OwnedFd>)>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut flags = MsgFlags::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= MsgFlags::MSG_DONTWAIT;
    }
    loop {
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), flags) {
            Ok(msg) => {
                let mut fd = None;
                for c in msg.cmsgs().map_err(io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for raw in fds {
                            // SAFETY: the kernel installed this descriptor in this process for
                            // this message: nobody else owns it.
                            fd = Some(unsafe { OwnedFd::from_raw_fd(raw) });
                        }
                    }
                }
                return Ok(Some((msg.bytes, fd)));
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) if nonblocking => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// `pidfd_send_signal(2)`: a signal to the process behind a pidfd (never to a reused pid).
pub(crate) fn pidfd_signal(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: plain integers and a null siginfo; touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `close(2)` on an fd this process owns as a raw number in a forked child (the forkserver's
/// sockets, which a child it forks must not keep).
pub(crate) fn close_in_child(fd: std::os::fd::RawFd) {
    close_inherited(fd);
}

/// The whole content of the file behind `fd`, read from its start (a job memfd).
pub(crate) fn read_all_at(fd: &OwnedFd) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd.try_clone()?);
    let mut bytes = vec![0u8; file.metadata()?.len() as usize];
    file.read_exact_at(&mut bytes, 0)?;
    Ok(bytes)
}

/// The base address of the program's executable (the object holding its program headers,
/// `getauxval(AT_PHDR)`), or `None` when it cannot be told.
pub(crate) fn executable_base() -> Option<usize> {
    // SAFETY: getauxval reads the process's auxiliary vector; no memory of ours is touched.
    let phdr = unsafe { libc::getauxval(libc::AT_PHDR) } as usize;
    if phdr == 0 {
        return None;
    }
    object_base(phdr)
}
