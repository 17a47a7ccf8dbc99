//! The baozi queue as a transport.
//!
//! The queue carries [`Frame`]s. A frame's `decode` runs inside the queue's get, under the get
//! lock and before the get commits (the head moves): that is where a consumer marks in shared
//! memory which message it is taking, so that a kill after the commit is attributed exactly.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use baozi_queue::{CodecError, GetError, Message, Queue, QueueOptions};

use super::{Marker, Recv, Shape, Transport};
use crate::message::STAMP_LEN;

pub(super) fn check(shape: Shape) -> Result<(), String> {
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

thread_local! {
    /// A producer's outgoing message: the padding stays, the stamp is rewritten per send.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A consumer's mark, set with each message before its get commits.
    static MARKER: Cell<Option<Marker>> = const { Cell::new(None) };
}

/// A harness message as the baozi queue carries it.
#[derive(Clone, Copy, Debug)]
enum Frame {
    /// To send: the stamp, then padding up to `size` bytes (0x42, as every producer pads).
    Out { head: [u8; STAMP_LEN], size: usize },
    /// Taken: the first bytes (all ones past a short message) and the length.
    In { head: [u8; STAMP_LEN], len: usize },
}

impl Message for Frame {
    fn with_encoded<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, CodecError> {
        let Frame::Out { head, size } = *self else {
            return Err(CodecError::new("a taken frame is not sent again"));
        };
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() != size {
                s.clear();
                s.resize(size, 0x42);
            }
            s[..STAMP_LEN].copy_from_slice(&head);
            Ok(f(&s))
        })
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        if let Some(mark) = MARKER.get() {
            mark.set(bytes);
        }
        let mut head = [0xff; STAMP_LEN];
        let n = bytes.len().min(STAMP_LEN);
        head[..n].copy_from_slice(&bytes[..n]);
        Ok(Frame::In {
            head,
            len: bytes.len(),
        })
    }
}

pub(super) struct BaoziTransport {
    queue: Queue<Frame>,
    size: usize,
}

impl BaoziTransport {
    pub(super) fn new(shape: Shape) -> Result<Self, String> {
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
        let head: [u8; STAMP_LEN] = msg
            .get(..STAMP_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or("a message shorter than its stamp")?;
        let frame = Frame::Out {
            head,
            size: msg.len(),
        };
        self.queue.put(frame).map_err(|e| e.to_string())
    }

    fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<Recv, String> {
        match self.queue.get_timeout(timeout) {
            Ok(Frame::In { head, len }) => {
                let n = buf.len().min(STAMP_LEN);
                buf[..n].copy_from_slice(&head[..n]);
                Ok(Recv::Message(len.min(buf.len())))
            }
            Ok(Frame::Out { .. }) => Err("decode made an outgoing frame".to_owned()),
            Err(GetError::Empty) => Ok(Recv::Timeout),
            Err(GetError::Closed) => Ok(Recv::Closed),
            Err(e) => Err(e.to_string()),
        }
    }

    fn fills_buffer_when_taking(&self) -> bool {
        false
    }

    fn install_marker(&self, marker: Marker) {
        MARKER.set(Some(marker));
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
