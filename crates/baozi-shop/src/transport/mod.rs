//! One workload, four transports: the baozi queue, a pipe, a Unix socket, a POSIX message queue.
//!
//! Each transport is built in the parent before the workers are forked; workers use their
//! inherited copy. Many producers send into it and many consumers receive from it.

mod baozi;
mod mq;
mod pipe;
mod unix;

use std::fmt;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::message;
use crate::sys;

/// What a receive returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    /// A message is in the buffer.
    Message,
    /// Nothing arrived within the timeout.
    Timeout,
    /// The transport is closed and drained.
    Closed,
}

/// A many-to-many message channel between forked processes.
pub trait Transport: Send + Sync {
    /// Sends one message, blocking while the channel is full.
    ///
    /// # Errors
    /// A description of the failure.
    fn send(&self, msg: &[u8]) -> Result<(), String>;

    /// Receives one message into `buf` (resized to the message), waiting at most `timeout`.
    ///
    /// # Errors
    /// A description of the failure.
    fn recv(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<Recv, String>;

    /// Called once all producers are done: makes each of `consumers` live consumers stop after
    /// draining (a close, or one stop sentinel each).
    ///
    /// # Errors
    /// A description of the failure.
    fn finish(&self, consumers: usize) -> Result<(), String>;

    /// How many messages the channel holds at most, as built (0: no item limit).
    fn effective_maxsize(&self) -> usize;
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
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Baozi => "baozi",
            TransportKind::Pipe => "pipe",
            TransportKind::Unix => "unix",
            TransportKind::Mq => "mq",
        })
    }
}

/// What a transport is asked to carry.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Item limit (0: none).
    pub maxsize: usize,
    /// Bytes per message.
    pub size: usize,
    /// Byte capacity for transports that have one (the baozi queue).
    pub capacity: usize,
}

impl TransportKind {
    /// Checks that this transport can carry `shape`, saying why not in one line.
    ///
    /// # Errors
    /// The reason, phrased for the command line.
    pub fn check(self, shape: Shape) -> Result<(), String> {
        match self {
            TransportKind::Baozi => baozi::check(shape),
            TransportKind::Pipe => pipe::check(shape),
            TransportKind::Unix => unix::check(shape),
            TransportKind::Mq => mq::check(shape),
        }
    }

    /// Builds the transport.
    ///
    /// # Errors
    /// The operating system's refusal, described.
    pub fn build(self, shape: Shape) -> Result<Box<dyn Transport>, String> {
        self.check(shape)?;
        Ok(match self {
            TransportKind::Baozi => Box::new(baozi::BaoziTransport::new(shape)?),
            TransportKind::Pipe => Box::new(pipe::PipeTransport::new(shape)?),
            TransportKind::Unix => Box::new(unix::UnixTransport::new(shape)?),
            TransportKind::Mq => Box::new(mq::MqTransport::new(shape)?),
        })
    }
}

/// One message from a non-blocking fd (pipe or datagram socket), polling up to `timeout`.
fn recv_fd(
    fd: RawFd,
    buf: &mut Vec<u8>,
    size: usize,
    timeout: Duration,
    what: &str,
) -> Result<Recv, String> {
    buf.resize(size, 0);
    loop {
        match sys::read_nonblocking(fd, buf) {
            Ok(Some(0)) => return Ok(Recv::Closed),
            Ok(Some(n)) => {
                buf.truncate(n);
                return Ok(Recv::Message);
            }
            Ok(None) => {}
            Err(e) => return Err(format!("{what}: {e}")),
        }
        if !sys::poll_readable(fd, timeout).map_err(|e| format!("poll: {e}"))? {
            return Ok(Recv::Timeout);
        }
    }
}

/// Sends one stop sentinel of `size` bytes per consumer.
fn send_stops(t: &dyn Transport, size: usize, consumers: usize) -> Result<(), String> {
    let mut stop = vec![0u8; size];
    message::encode_stop(&mut stop);
    (0..consumers).try_for_each(|_| t.send(&stop))
}
