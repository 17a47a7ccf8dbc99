//! A POSIX message queue as a transport.

use std::time::Duration;

use super::{Recv, Shape, Transport};
use crate::ledger::Mark;
use crate::sys::{self, Mq};

pub(super) fn check(shape: Shape<'_>) -> Result<(), String> {
    let (_, msgsize_max) = sys::mq_limits();
    if shape.size > msgsize_max {
        return Err(format!(
            "--size {} is too large for --transport mq: /proc/sys/fs/mqueue/msgsize_max is {msgsize_max}",
            shape.size
        ));
    }
    Ok(())
}

pub(super) struct MqTransport {
    mq: Mq,
    size: usize,
    maxmsg: usize,
}

impl MqTransport {
    pub(super) fn new(shape: Shape<'_>) -> Result<Self, String> {
        let (msg_max, _) = sys::mq_limits();
        // The kernel caps the depth at msg_max (10 by default) for unprivileged tuning.
        let maxmsg = if shape.maxsize == 0 {
            msg_max
        } else {
            shape.maxsize.min(msg_max)
        }
        .max(1);
        let mq = Mq::create(maxmsg, shape.size).map_err(|e| format!("mq_open: {e}"))?;
        Ok(MqTransport {
            mq,
            size: shape.size,
            maxmsg,
        })
    }
}

impl Transport for MqTransport {
    fn send(&self, msg: &[u8]) -> Result<(), String> {
        self.mq.send(msg).map_err(|e| format!("mq_send: {e}"))
    }

    fn recv(
        &self,
        buf: &mut [u8],
        timeout: Duration,
        _mark: Option<Mark<'_>>,
    ) -> Result<Recv, String> {
        let buf = buf
            .get_mut(..self.size)
            .ok_or("mq_receive: receive buffer smaller than a message")?;
        match self
            .mq
            .recv(buf, timeout)
            .map_err(|e| format!("mq_receive: {e}"))?
        {
            Some(n) => Ok(Recv::Message(n)),
            None => Ok(Recv::Timeout),
        }
    }

    fn finish(&self, consumers: usize) -> Result<(), String> {
        super::send_stops(self, self.size, consumers)
    }

    fn effective_maxsize(&self) -> usize {
        self.maxmsg
    }

    fn depth(&self) -> u64 {
        self.maxmsg as u64
    }
}
