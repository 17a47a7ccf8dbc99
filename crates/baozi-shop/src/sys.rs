//! Platform calls for the shop: pipes, sockets, POSIX message queues, all through nix (no
//! `unsafe` here). Processes come from baozi-process.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::mqueue::{MQ_OFlag, MqAttr, MqdT};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{AddressFamily, SockFlag, SockType};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use nix::time::ClockId;

fn io(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// A pipe: (read end, write end). The read end is non-blocking (consumers poll first).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    set_nonblocking(r.as_fd(), true)?;
    Ok((r, w))
}

/// A `SOCK_SEQPACKET` socket pair (message boundaries kept): (receiving end, sending end).
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::sys::socket::socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io)?;
    set_nonblocking(r.as_fd(), true)?;
    Ok((r, w))
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(io)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io).map(drop)
}

/// Waits up to `timeout` for `fd` to be readable; false on timeout.
pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    let ms = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    match nix::poll::poll(&mut fds, ms) {
        Ok(0) | Err(Errno::EINTR) => Ok(false),
        Ok(_) => Ok(true),
        Err(e) => Err(io(e)),
    }
}

/// Writes all of `buf` to a blocking fd.
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}

/// One write of `buf` to a non-blocking fd: Ok(false) when it would block.
pub(crate) fn write_nonblocking(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<bool> {
    match nix::unistd::write(fd, buf) {
        Ok(n) if n == buf.len() => Ok(true),
        Ok(n) => Err(io::Error::other(format!(
            "short write: {n} of {} bytes",
            buf.len()
        ))),
        Err(Errno::EAGAIN) => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// One non-blocking read into `buf`; Ok(None) when nothing was there (EAGAIN).
pub(crate) fn read_nonblocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    match nix::unistd::read(fd, buf) {
        Ok(n) => Ok(Some(n)),
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// A POSIX message queue descriptor (an fd on Linux, so forked children inherit it).
#[derive(Debug)]
pub(crate) struct Mq(Option<MqdT>);

impl Mq {
    /// Creates an anonymous-in-effect queue: made under a unique name and unlinked at once.
    pub(crate) fn create(maxmsg: usize, msgsize: usize) -> io::Result<Mq> {
        let name = format!(
            "/baozi-shop-{}-{}",
            std::process::id(),
            baozi_sync::monotonic_ns()
        );
        let attr = MqAttr::new(0, maxmsg as _, msgsize as _, 0);
        let mq = nix::mqueue::mq_open(
            name.as_str(),
            MQ_OFlag::O_CREAT | MQ_OFlag::O_EXCL | MQ_OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
            Some(&attr),
        )
        .map_err(io)?;
        // The descriptor stays valid after the name is gone.
        let _ = nix::mqueue::mq_unlink(name.as_str());
        Ok(Mq(Some(mq)))
    }

    fn mqd(&self) -> &MqdT {
        self.0.as_ref().expect("open until dropped")
    }

    /// Sends one message, blocking while the queue is full.
    pub(crate) fn send(&self, msg: &[u8]) -> io::Result<()> {
        loop {
            match nix::mqueue::mq_send(self.mqd(), msg, 0) {
                Ok(()) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(io(e)),
            }
        }
    }

    /// Receives one message into `buf` (at least msgsize long), waiting up to `timeout`.
    pub(crate) fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        // mq_timedreceive takes an absolute CLOCK_REALTIME deadline.
        let now = nix::time::clock_gettime(ClockId::CLOCK_REALTIME).map_err(io)?;
        let abs = now + TimeSpec::from_duration(timeout);
        let mut prio = 0;
        match nix::mqueue::mq_timedreceive(self.mqd(), buf, &mut prio, &abs) {
            Ok(n) => Ok(Some(n)),
            Err(Errno::ETIMEDOUT | Errno::EINTR) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        if let Some(mq) = self.0.take() {
            let _ = nix::mqueue::mq_close(mq);
        }
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
