//! A pipe as a transport: writes of at most PIPE_BUF bytes are atomic, so with fixed-size
//! messages many writers and many (non-blocking) readers never see a torn message.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use super::{Recv, Shape, Transport};
use crate::ledger::Mark;
use crate::sys;

/// POSIX guarantees atomic pipe writes up to PIPE_BUF bytes; Linux's is 4096.
const PIPE_BUF: usize = 4096;

pub(super) fn check(shape: Shape<'_>) -> Result<(), String> {
    if shape.size > PIPE_BUF {
        return Err(format!(
            "--size {} is too large for --transport pipe: writes above {PIPE_BUF} bytes are not atomic",
            shape.size
        ));
    }
    Ok(())
}

pub(super) struct PipeTransport {
    read: OwnedFd,
    write: OwnedFd,
    size: usize,
    depth: u64,
}

impl PipeTransport {
    pub(super) fn new(shape: Shape<'_>) -> Result<Self, String> {
        let (read, write) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let depth = super::measure_depth(&read, &write, shape.size)?;
        Ok(PipeTransport {
            read,
            write,
            size: shape.size,
            depth,
        })
    }
}

impl Transport for PipeTransport {
    fn send(&self, msg: &[u8]) -> Result<(), String> {
        sys::write_all(self.write.as_fd(), msg).map_err(|e| format!("pipe write: {e}"))
    }

    fn recv(
        &self,
        buf: &mut [u8],
        timeout: Duration,
        _mark: Option<Mark<'_>>,
    ) -> Result<Recv, String> {
        let got = super::recv_fd(&self.read, buf, self.size, timeout, "pipe read")?;
        if let Recv::Message(n) = got {
            if n != self.size {
                return Err(format!("pipe read returned {n} of {} bytes", self.size));
            }
        }
        Ok(got)
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
