//! A bounded shared-memory queue with the contract of Python's `multiprocessing.Queue`,
//! robust to `kill -9`.
//!
//! [`Queue`] is a lock-based ring buffer of variable-size messages in a shared region: many
//! producers and many consumers, forked children (`Queue::new`) or unrelated programs
//! (`Queue::create` / `Queue::open` by name). It has Python's `maxsize`, `qsize`/`empty`/`full`,
//! blocking `put`/`get`, `_timeout` and `_nowait` variants with distinct [`PutError::Full`]
//! (which hands the item back) and [`GetError::Empty`], plus batches under one lock,
//! [`close`](Queue::close), and [`JoinableQueue`].
//!
//! # Example: the bun shop, in one process pair
//!
//! ```
//! use baozi_process::Process;
//! use baozi_queue::Queue;
//!
//! // maxsize 1: the baker waits for the eater after every bun.
//! let counter: Queue<String> = Queue::new(1, 4096)?;
//! let at_counter = counter.clone();
//! let baker = Process::new(move || -> Result<(), Box<dyn std::error::Error>> {
//!     for bun in ["pork", "cabbage", "red bean"] {
//!         at_counter.put(bun.to_owned())?;
//!     }
//!     Ok(at_counter.close()?)
//! });
//! baker.start()?;
//! // Take buns until the baker closes the counter.
//! let eaten: Vec<String> = counter.iter().collect();
//! assert_eq!(baker.join()?, 0);
//! assert_eq!(eaten, ["pork", "cabbage", "red bean"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # One contract, several backends
//! [`QueueContract`] and [`JoinableContract`] state the contract as traits, implemented here for
//! [`Queue`] and [`JoinableQueue`] and in `baozi-redis` for queues on a Redis server, so code
//! written against them moves from one machine to many by changing how the queue is made.
//!
//! # Messages
//! Anything that implements [`Message`]: bytes (`Vec<u8>`, `String`, with allocation-free
//! [`Queue::put_bytes`] / [`Queue::get_bytes_into`] for byte queues), numbers and [`Pod<T>`]
//! (copied as they are), and [`Serde<T>`] (postcard; feature `serde`, on by default).
//!
//! # Crash safety
//! Each put and get commits with one aligned store of a cursor, made after the copy, under a
//! process-shared lock whose word names its holder ([`baozi_sync::RawOwnerLock`]): producers
//! share a put lock, consumers a get lock. A process killed anywhere leaves either the old or
//! the new state; a waiter finds the holder dead (through `/proc`, after about a millisecond of
//! waiting), takes the lock over, checks the cursors, and goes on. Waiting uses futexes on sequence words, so
//! a killed waiter cannot wedge anyone either. See `docs/DESIGN.md`.
//!
//! # Performance
//! `put`/`get` with nobody waiting make no syscall and allocate nothing (for bytes, numbers and
//! `Pod`); taking and releasing a lock is one compare-and-swap and one store. A put and a get
//! never take the same lock, and each side reads the other's cache line
//! only when what it last saw runs out (producer and consumer state live on separate lines);
//! a commit wakes the other side only if one of its callers sleeps. Blocked callers spin
//! adaptively (on the other side's cursor) before they sleep. Batches ([`Queue::put_many_from`],
//! [`Queue::get_many_into`]) pay the lock once per batch.
//!
//! # Features
//! * `serde` (default): [`Serde<T>`] messages through postcard.
//! * `crash-points`: test hooks that SIGKILL the process at named steps inside put and get
//!   (`BAOZI_CRASH_AT=put-before-commit:N`); for crash tests only.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod codec;
mod contract;
mod crash;
mod endpoint;
mod error;
#[cfg(feature = "serde")]
mod handle;
mod iter;
mod joinable;
mod layout;
mod queue;
mod ring;

#[cfg(feature = "serde")]
pub use codec::Serde;
pub use codec::{CodecError, Message, Pod};
pub use contract::{JoinableContract, QueueContract};
pub use endpoint::{Endpoint, Endpoints, CHECK_EVERY};
pub use error::{GetError, PutError, QueueError};
pub use iter::Iter;
pub use joinable::JoinableQueue;
pub use queue::{Queue, QueueOptions, DEFAULT_CAPACITY, MAX_MAXSIZE, NOWAIT_LOCK_WAIT};
