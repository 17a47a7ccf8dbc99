//! What the pool's processes say to each other.
//!
//! * parent → worker, through the worker's inbox queue: [`TaskMsg`];
//! * worker and spawner → parent, through the one results queue: [`Event`];
//! * parent → spawner, through a pipe: [`Request`] (8 bytes, so each write is atomic).
//!
//! Queue messages are postcard bytes. The results queue is FIFO across its producers, and the
//! spawner reports a worker's exit only after reaping it, so every result the worker committed
//! reaches the parent before the news of its death: that is what makes the accounting of lost
//! tasks exact (see `parent.rs`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ProcessError;
use crate::start::FnRef;

/// A message in a worker's inbox.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum TaskMsg {
    /// Run `func` through `trampoline` on the encoded chunk `args`.
    Run {
        task: u64,
        trampoline: FnRef,
        func: FnRef,
        args: Vec<u8>,
    },
    /// Exit cleanly (after `close`, once the worker has nothing left to do).
    Stop,
    /// Run the task registered as `name` (with these argument and result type names) on the
    /// encoded chunk `args`: for workers that may run another build (a remote backend).
    RunNamed {
        task: u64,
        name: String,
        arg_type: String,
        result_type: String,
        args: Vec<u8>,
    },
}

/// Why a task produced no value.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Failure {
    /// The function panicked: its message, where, and the worker's backtrace when enabled.
    Panicked {
        message: String,
        location: Option<String>,
        backtrace: Option<String>,
    },
    /// The result did not encode.
    Encode(String),
    /// The arguments did not decode.
    Decode(String),
    /// The encoded result needs `len` bytes; the results queue takes at most `max`.
    ResultTooLarge { len: usize, max: usize },
    /// The worker has no such task (a name it does not register, or other types).
    Missing(String),
}

/// A message in the results queue.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Event {
    /// A worker finished a task: the encoded `Vec` of results, or why there is none.
    Done {
        slot: u32,
        task: u64,
        outcome: Result<Vec<u8>, Failure>,
    },
    /// A worker took `slot` (the spawner forked it, or a remote worker came): its pid and
    /// generation (0 for local workers; remote ones draw a random one, and read only the
    /// inbox of their generation).
    Started { slot: u32, pid: i32, gen: u64 },
    /// The spawner could not fork a worker for `slot`: the error, and its errno (0: none).
    SpawnFailed {
        slot: u32,
        error: String,
        errno: i32,
    },
    /// The spawner reaped the worker of `slot`: its exit code in Python's meaning (`-SIG`).
    Exited { slot: u32, pid: i32, code: i32 },
    /// The worker of `slot` was lost: a remote worker whose heartbeat lapsed.
    Lost { slot: u32, pid: i32 },
    /// The initializer panicked in a worker, which then exited.
    InitFailed { pid: i32, message: String },
    /// Sent by the parent to itself, to wake its result thread.
    Wake,
}

/// A request to the spawner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// Fork a worker for this slot.
    Spawn(u32),
    /// SIGKILL every worker, reap them, exit.
    KillAll,
    /// Every worker has been told to stop: reap them and exit.
    Shutdown,
}

impl Request {
    pub(crate) const LEN: usize = 8;

    pub(crate) fn encode(self) -> [u8; Self::LEN] {
        let (op, slot) = match self {
            Request::Spawn(s) => (1u32, s),
            Request::KillAll => (2, 0),
            Request::Shutdown => (3, 0),
        };
        let mut b = [0u8; Self::LEN];
        b[..4].copy_from_slice(&op.to_le_bytes());
        b[4..].copy_from_slice(&slot.to_le_bytes());
        b
    }

    /// `None` for bytes no parent writes: the spawner treats that as a broken parent.
    pub(crate) fn decode(b: [u8; Self::LEN]) -> Option<Request> {
        let op = u32::from_le_bytes(b[..4].try_into().ok()?);
        let slot = u32::from_le_bytes(b[4..].try_into().ok()?);
        match op {
            1 => Some(Request::Spawn(slot)),
            2 => Some(Request::KillAll),
            3 => Some(Request::Shutdown),
            _ => None,
        }
    }
}

/// postcard bytes of a message (the pool's own types always encode).
pub(crate) fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_allocvec(msg).expect("the pool's messages always encode")
}

/// The message in `bytes`, or `None` for bytes that are not one.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

/// A chunk of items as the bytes a worker decodes. A `Serialize` that panics is an
/// [`ProcessError::Encode`] too (its message is on stderr, by the panic hook).
pub(crate) fn encode_chunk<A: Serialize>(items: &[A]) -> Result<Vec<u8>, ProcessError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        postcard::to_allocvec(items)
    })) {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(ProcessError::Encode(format!(
            "the task's arguments did not encode in the parent: {e}"
        ))),
        Err(p) => Err(ProcessError::Encode(format!(
            "the task's arguments did not encode in the parent: their Serialize panicked: {}",
            crate::child::panic_message(&*p)
        ))),
    }
}

/// A worker's encoded results. A `Deserialize` that panics is a [`ProcessError::Decode`] too:
/// it may run on the pool's result thread (for an `on_ready` callback), and its caller must
/// still get an outcome.
pub(crate) fn decode_chunk<R: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<R>, ProcessError> {
    match std::panic::catch_unwind(|| postcard::from_bytes::<Vec<R>>(bytes)) {
        Ok(Ok(items)) => Ok(items),
        Ok(Err(e)) => {
            // A handle in the result that did not attach says why (postcard drops it).
            let why = baozi_shm::take_attach_error().map_or(String::new(), |w| format!(": {w}"));
            Err(ProcessError::Decode(format!(
                "the task's result did not decode in the parent: {e}{why}"
            )))
        }
        Err(p) => Err(ProcessError::Decode(format!(
            "the task's result did not decode in the parent: its Deserialize panicked: {}",
            crate::child::panic_message(&*p)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_refused() {
        for r in [Request::Spawn(7), Request::KillAll, Request::Shutdown] {
            assert_eq!(Request::decode(r.encode()), Some(r));
        }
        assert_eq!(Request::decode([9; 8]), None);
    }
}
