//! The baozi queue as a transport.
//!
//! A consumer takes each message with [`Queue::get_bytes_with`], whose closure runs under the
//! get lock before the take commits: that is where it marks in shared memory which message it is
//! taking, so that a kill after the commit is attributed exactly.

use std::time::Duration;

use baozi_queue::{GetError, Queue, QueueOptions};

use super::{Recv, Shape, Transport};
use crate::ledger::Mark;
use crate::message::STAMP_LEN;

pub(super) fn check(shape: Shape<'_>) -> Result<(), String> {
    let frame = frame_len(shape.size);
    if frame > shape.capacity {
        return Err(format!(
            "--size {} can never fit a queue of {} bytes (each message takes {} bytes with framing): raise --capacity",
            shape.size, shape.capacity, frame
        ));
    }
    Ok(())
}

fn frame_len(size: usize) -> usize {
    8 + size.div_ceil(8) * 8
}

pub(super) struct BaoziTransport {
    queue: Queue<Vec<u8>>,
    size: usize,
}

impl BaoziTransport {
    pub(super) fn new(shape: Shape<'_>) -> Result<Self, String> {
        let queue = QueueOptions::new()
            .maxsize(shape.maxsize)
            .capacity(shape.capacity)
            .anonymous()
            .map_err(|e| e.to_string())?;
        Ok(BaoziTransport {
            queue,
            size: shape.size,
        })
    }
}

impl Transport for BaoziTransport {
    fn send(&self, msg: &[u8]) -> Result<(), String> {
        self.queue.put_bytes(msg, None).map_err(|e| e.to_string())
    }

    fn recv(
        &self,
        buf: &mut [u8],
        timeout: Duration,
        mark: Option<Mark<'_>>,
    ) -> Result<Recv, String> {
        let taken = self.queue.get_bytes_with(Some(timeout), |bytes| {
            if let Some(mark) = mark {
                mark.set(bytes);
            }
            // The stamp is all the consumer reads; a shorter message is garbage either way.
            let n = bytes.len().min(STAMP_LEN).min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            bytes.len().min(buf.len())
        });
        match taken {
            Ok(n) => Ok(Recv::Message(n)),
            Err(GetError::Empty) => Ok(Recv::Timeout),
            Err(GetError::Closed) => Ok(Recv::Closed),
            Err(e) => Err(e.to_string()),
        }
    }

    fn fills_buffer_when_taking(&self) -> bool {
        false
    }

    fn finish(&self, _consumers: usize) -> Result<(), String> {
        self.queue.close().map_err(|e| e.to_string())
    }

    fn effective_maxsize(&self) -> usize {
        self.queue.maxsize()
    }

    fn depth(&self) -> u64 {
        let by_bytes = (self.queue.capacity_bytes() / frame_len(self.size)) as u64;
        match self.queue.maxsize() {
            0 => by_bytes,
            m => by_bytes.min(m as u64),
        }
    }
}
