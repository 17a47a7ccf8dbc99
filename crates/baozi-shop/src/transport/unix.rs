//! A Unix `SOCK_SEQPACKET` socket pair as a transport: the kernel keeps message boundaries.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use super::{Recv, Shape, Transport};
use crate::ledger::Mark;
use crate::sys;

/// Above this a single datagram exceeds the default socket buffer.
const MAX_DATAGRAM: usize = 200 * 1024;

pub(super) fn check(shape: Shape<'_>) -> Result<(), String> {
    if shape.size > MAX_DATAGRAM {
        return Err(format!(
            "--size {} is too large for --transport unix (at most {MAX_DATAGRAM} bytes per datagram)",
            shape.size
        ));
    }
    Ok(())
}

pub(super) struct UnixTransport {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
    depth: u64,
}

impl UnixTransport {
    pub(super) fn new(shape: Shape<'_>) -> Result<Self, String> {
        let (read, write) = sys::seqpacket_pair().map_err(|e| format!("socketpair: {e}"))?;
        let depth = super::measure_depth(&read, &write, shape.size)?;
        Ok(UnixTransport {
            read,
            write,
            size: shape.size,
            depth,
        })
    }
}

impl Transport for UnixTransport {
    fn send(&self, msg: &[u8]) -> Result<(), String> {
        sys::write_all(self.write.as_fd(), msg).map_err(|e| format!("socket send: {e}"))
    }

    fn recv(
        &self,
        buf: &mut [u8],
        timeout: Duration,
        _mark: Option<Mark<'_>>,
    ) -> Result<Recv, String> {
        super::recv_fd(&self.read, buf, self.size, timeout, "socket recv")
    }

    fn finish(&self, consumers: usize) -> Result<(), String> {
        super::send_stops(self, self.size, consumers)
    }

    fn effective_maxsize(&self) -> usize {
        0
    }

    fn depth(&self) -> u64 {
        self.depth
    }
}
