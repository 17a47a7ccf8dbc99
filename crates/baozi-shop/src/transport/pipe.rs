//! A pipe as a transport: writes of at most PIPE_BUF bytes are atomic, so with fixed-size
//! messages many writers and many (non-blocking) readers never see a torn message.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use super::{Recv, Shape, Transport};
use crate::message;
use crate::sys;

/// POSIX guarantees atomic pipe writes up to PIPE_BUF bytes; Linux's is 4096.
const PIPE_BUF: usize = 4096;

pub(super) fn check(shape: Shape) -> Result<(), String> {
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
}

impl PipeTransport {
    pub(super) fn new(shape: Shape) -> Result<Self, String> {
        let (read, write) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        Ok(PipeTransport {
            read,
            write,
            size: shape.size,
        })
    }
}

impl Transport for PipeTransport {
    fn send(&self, msg: &[u8]) -> Result<(), String> {
        sys::write_all(self.write.as_raw_fd(), msg).map_err(|e| format!("pipe write: {e}"))
    }

    fn recv(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<Recv, String> {
        buf.resize(self.size, 0);
        loop {
            match sys::read_nonblocking(self.read.as_raw_fd(), buf) {
                Ok(Some(n)) if n == self.size => return Ok(Recv::Message),
                Ok(Some(0)) => return Ok(Recv::Closed),
                Ok(Some(n)) => {
                    return Err(format!("pipe read returned {n} of {} bytes", self.size))
                }
                Ok(None) => {}
                Err(e) => return Err(format!("pipe read: {e}")),
            }
            if !sys::poll_readable(self.read.as_raw_fd(), timeout)
                .map_err(|e| format!("poll: {e}"))?
            {
                return Ok(Recv::Timeout);
            }
        }
    }

    fn finish(&self, consumers: usize) -> Result<(), String> {
        let mut stop = vec![0u8; self.size];
        message::encode_stop(&mut stop);
        (0..consumers).try_for_each(|_| self.send(&stop))
    }

    fn effective_maxsize(&self) -> usize {
        0
    }
}
