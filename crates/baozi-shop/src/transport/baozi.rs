//! The baozi queue as a transport.

use std::time::Duration;

use baozi_queue::{GetError, Queue, QueueOptions};

use super::{Recv, Shape, Transport};

pub(super) fn check(shape: Shape) -> Result<(), String> {
    let frame = 8 + shape.size.div_ceil(8) * 8;
    if frame > shape.capacity {
        return Err(format!(
            "--size {} can never fit a queue of {} bytes (each message takes {} bytes with framing): raise --capacity",
            shape.size, shape.capacity, frame
        ));
    }
    Ok(())
}

pub(super) struct BaoziTransport {
    queue: Queue<Vec<u8>>,
}

impl BaoziTransport {
    pub(super) fn new(shape: Shape) -> Result<Self, String> {
        let queue = QueueOptions::new()
            .maxsize(shape.maxsize)
            .capacity(shape.capacity)
            .anonymous()
            .map_err(|e| e.to_string())?;
        Ok(BaoziTransport { queue })
    }
}

impl Transport for BaoziTransport {
    fn send(&self, msg: &[u8]) -> Result<(), String> {
        self.queue.put_bytes(msg, None).map_err(|e| e.to_string())
    }

    fn recv(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<Recv, String> {
        match self.queue.get_bytes_into(buf, Some(timeout)) {
            Ok(()) => Ok(Recv::Message),
            Err(GetError::Empty) => Ok(Recv::Timeout),
            Err(GetError::Closed) => Ok(Recv::Closed),
            Err(e) => Err(e.to_string()),
        }
    }

    fn finish(&self, _consumers: usize) -> Result<(), String> {
        self.queue.close().map_err(|e| e.to_string())
    }

    fn effective_maxsize(&self) -> usize {
        self.queue.maxsize()
    }
}
