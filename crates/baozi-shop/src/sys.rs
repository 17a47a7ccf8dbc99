//! Platform calls for the shop: pipes, sockets, POSIX message queues. Only this module calls
//! libc; processes come from baozi-process.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A pipe: (read end, write end). The read end is non-blocking (consumers poll first).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let (r, w) = (owned(fds[0]), owned(fds[1]));
    set_nonblocking(&r)?;
    Ok((r, w))
}

/// A `SOCK_SEQPACKET` socket pair (message boundaries kept): (receiving end, sending end).
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for socketpair to fill.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    let (r, w) = (owned(fds[0]), owned(fds[1]));
    set_nonblocking(&r)?;
    Ok((r, w))
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on an open fd we own.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Waits up to `timeout` for `fd` to be readable; false on timeout.
pub(crate) fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: p is one valid pollfd.
    match unsafe { libc::poll(&mut p, 1, ms) } {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// Writes all of `buf` to a blocking fd.
pub(crate) fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for buf.len() bytes of reads.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// One non-blocking read into `buf`; Ok(None) when nothing was there (EAGAIN).
pub(crate) fn read_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: buf is valid for buf.len() bytes of writes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// A POSIX message queue descriptor (an fd on Linux, so forked children inherit it).
#[derive(Debug)]
pub(crate) struct Mq(libc::mqd_t);

impl Mq {
    /// Creates an anonymous-in-effect queue: made under a unique name and unlinked at once.
    pub(crate) fn create(maxmsg: usize, msgsize: usize) -> io::Result<Mq> {
        let name = CString::new(format!(
            "/baozi-shop-{}-{}",
            std::process::id(),
            baozi_sync::monotonic_ns()
        ))
        .expect("no NUL");
        // SAFETY: mq_attr is a plain C struct; zero is a valid starting value.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = maxmsg as libc::c_long;
        attr.mq_msgsize = msgsize as libc::c_long;
        // SAFETY: name is NUL-terminated; attr outlives the call.
        let mq = unsafe {
            libc::mq_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600 as libc::mode_t,
                std::ptr::addr_of!(attr),
            )
        };
        if mq == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: name is NUL-terminated; the descriptor stays valid after unlink.
        unsafe { libc::mq_unlink(name.as_ptr()) };
        Ok(Mq(mq))
    }

    /// Sends one message, blocking while the queue is full.
    pub(crate) fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: msg is valid for msg.len() bytes.
            let r = unsafe { libc::mq_send(self.0, msg.as_ptr().cast(), msg.len(), 0) };
            if r == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Receives one message into `buf` (at least msgsize long), waiting up to `timeout`.
    pub(crate) fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: now is a valid timespec to fill. mq_timedreceive takes CLOCK_REALTIME.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
        let ns = now.tv_nsec as u64 + timeout.subsec_nanos() as u64;
        let abs = libc::timespec {
            tv_sec: now.tv_sec
                + timeout.as_secs() as libc::time_t
                + (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: buf is valid for buf.len() bytes; abs is a normalised timespec.
        let n = unsafe {
            libc::mq_timedreceive(
                self.0,
                buf.as_mut_ptr().cast(),
                buf.len(),
                std::ptr::null_mut(),
                &abs,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ETIMEDOUT) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        }
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        // SAFETY: closing our own descriptor once.
        unsafe { libc::mq_close(self.0) };
    }
}

/// The system limits on POSIX message queues: (msg_max, msgsize_max).
pub(crate) fn mq_limits() -> (usize, usize) {
    let read = |p: &str, default| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(default)
    };
    (
        read("/proc/sys/fs/mqueue/msg_max", 10),
        read("/proc/sys/fs/mqueue/msgsize_max", 8192),
    )
}
