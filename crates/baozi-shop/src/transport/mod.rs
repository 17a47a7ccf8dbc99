//! One workload, five transports: the baozi queue, a pipe, a Unix socket, a POSIX message queue,
//! a queue on a Redis server.
//!
//! Each transport is built in the parent before the workers are forked; workers use their
//! inherited copy. Many producers send into it and many consumers receive from it.

mod baozi;
mod mq;
mod pipe;
mod redis;
mod unix;

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use crate::ledger::Mark;
use crate::message;
use crate::sys;

/// What a receive returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recv {
    /// A message of this many bytes was taken; its first bytes (at least the stamp) are in the
    /// buffer.
    Message(usize),
    /// Nothing arrived within the timeout.
    Timeout,
    /// The transport is closed and drained.
    Closed,
}

/// A many-to-many message channel between forked processes.
pub(crate) trait Transport: Send + Sync {
    /// Sends one message, blocking while the channel is full.
    ///
    /// # Errors
    /// A description of the failure.
    fn send(&self, msg: &[u8]) -> Result<(), String>;

    /// Receives one message into `buf` (at least the message size long), waiting at most
    /// `timeout`. A transport whose [`fills_buffer_when_taking`](Self::fills_buffer_when_taking)
    /// is false sets `mark` (then always given) with the message before the take commits.
    ///
    /// # Errors
    /// A description of the failure.
    fn recv(
        &self,
        buf: &mut [u8],
        timeout: Duration,
        mark: Option<Mark<'_>>,
    ) -> Result<Recv, String>;

    /// Whether the step that takes a message off the channel also copies it into `buf` (a
    /// syscall): then a `buf` in shared memory is the consumer's mark, written by the kernel
    /// before any other process can see the take. When false the transport sets the `mark`
    /// given to [`recv`](Self::recv) before it commits the take.
    fn fills_buffer_when_taking(&self) -> bool {
        true
    }

    /// Called once all producers are done: makes each of `consumers` live consumers stop after
    /// draining (a close, or one stop sentinel each).
    ///
    /// # Errors
    /// A description of the failure.
    fn finish(&self, consumers: usize) -> Result<(), String>;

    /// How many messages the channel holds at most, as built (0: no item limit).
    fn effective_maxsize(&self) -> usize;

    /// How many messages of the run's size the channel holds before a send blocks: measured by
    /// filling it when built (pipe, socket), or as built (baozi queue, message queue).
    fn depth(&self) -> u64;
}

/// Which transport to run the workload over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// The baozi shared-memory queue.
    Baozi,
    /// A pipe (fixed-size messages of at most PIPE_BUF bytes, so writes stay atomic).
    Pipe,
    /// A Unix `SOCK_SEQPACKET` socket pair.
    Unix,
    /// A POSIX message queue.
    Mq,
    /// A baozi queue on a Redis server (`--redis-url`, or a private `redis-server` started for
    /// the run).
    Redis,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Baozi => "baozi",
            TransportKind::Pipe => "pipe",
            TransportKind::Unix => "unix",
            TransportKind::Mq => "mq",
            TransportKind::Redis => "redis",
        })
    }
}

/// What a transport is asked to carry.
#[derive(Clone, Copy, Debug)]
pub struct Shape<'a> {
    /// Item limit (0: none).
    pub maxsize: usize,
    /// Bytes per message.
    pub size: usize,
    /// Byte capacity for transports that have one (the baozi queue).
    pub capacity: usize,
    /// The Redis server for the redis transport (`None`: start a private one).
    pub redis_url: Option<&'a str>,
}

impl TransportKind {
    /// Checks that this transport can carry `shape`, saying why not in one line.
    ///
    /// # Errors
    /// The reason, phrased for the command line.
    pub fn check(self, shape: Shape<'_>) -> Result<(), String> {
        match self {
            TransportKind::Baozi => baozi::check(shape),
            TransportKind::Pipe => pipe::check(shape),
            TransportKind::Unix => unix::check(shape),
            TransportKind::Mq => mq::check(shape),
            TransportKind::Redis => redis::check(shape),
        }
    }

    /// Builds the transport.
    ///
    /// # Errors
    /// The operating system's refusal, described.
    pub(crate) fn build(self, shape: Shape<'_>) -> Result<Box<dyn Transport>, String> {
        self.check(shape)?;
        Ok(match self {
            TransportKind::Baozi => Box::new(baozi::BaoziTransport::new(shape)?),
            TransportKind::Pipe => Box::new(pipe::PipeTransport::new(shape)?),
            TransportKind::Unix => Box::new(unix::UnixTransport::new(shape)?),
            TransportKind::Mq => Box::new(mq::MqTransport::new(shape)?),
            TransportKind::Redis => Box::new(redis::RedisTransport::new(shape)?),
        })
    }
}

/// One message from a non-blocking fd (pipe or datagram socket), polling up to `timeout`.
fn recv_fd(
    fd: &OwnedFd,
    buf: &mut [u8],
    size: usize,
    timeout: Duration,
    what: &str,
) -> Result<Recv, String> {
    let buf = buf
        .get_mut(..size)
        .ok_or_else(|| format!("{what}: receive buffer smaller than a message"))?;
    loop {
        match sys::read_nonblocking(fd.as_fd(), buf) {
            Ok(Some(0)) => return Ok(Recv::Closed),
            Ok(Some(n)) => return Ok(Recv::Message(n)),
            Ok(None) => {}
            Err(e) => return Err(format!("{what}: {e}")),
        }
        if !sys::poll_readable(fd.as_fd(), timeout).map_err(|e| format!("poll: {e}"))? {
            return Ok(Recv::Timeout);
        }
    }
}

/// Counts how many `size`-byte messages fit in a pipe or socket before a write would block, by
/// filling it (non-blocking) and draining it again. Done once, before any worker exists.
fn measure_depth(read: &OwnedFd, write: &OwnedFd, size: usize) -> Result<u64, String> {
    const LIMIT: u64 = 1 << 22;
    let msg = vec![0u8; size];
    sys::set_nonblocking(write.as_fd(), true).map_err(|e| format!("fcntl: {e}"))?;
    let mut depth = 0;
    let filled = loop {
        match sys::write_nonblocking(write.as_fd(), &msg) {
            Ok(true) if depth < LIMIT => depth += 1,
            Ok(_) => break Ok(depth),
            Err(e) => break Err(format!("measuring the depth: {e}")),
        }
    };
    let mut buf = vec![0u8; size];
    for _ in 0..depth {
        match sys::read_nonblocking(read.as_fd(), &mut buf) {
            Ok(Some(n)) if n > 0 => {}
            Ok(_) => return Err("measuring the depth: the channel lost a message".to_owned()),
            Err(e) => return Err(format!("measuring the depth: {e}")),
        }
    }
    sys::set_nonblocking(write.as_fd(), false).map_err(|e| format!("fcntl: {e}"))?;
    filled
}

/// Sends one stop sentinel of `size` bytes per consumer.
fn send_stops(t: &dyn Transport, size: usize, consumers: usize) -> Result<(), String> {
    let mut stop = vec![0u8; size];
    message::encode_stop(&mut stop);
    (0..consumers).try_for_each(|_| t.send(&stop))
}
