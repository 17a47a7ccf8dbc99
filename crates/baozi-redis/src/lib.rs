//! baozi's `Queue` and `JoinableQueue` on a Redis server: the same contract as the
//! shared-memory queue ([`baozi_queue::QueueContract`]), for processes on any number of hosts;
//! and a [`Pool`](baozi_process::Pool) whose workers run on any number of hosts
//! ([`RedisWorkers`], see [Pool across hosts](#pool-across-hosts)).
//!
//! ```no_run
//! use baozi_queue::{GetError, QueueContract};
//! use baozi_redis::RedisQueue;
//!
//! // The same code as with `baozi_queue::Queue::new(1, 4096)?`, only made differently.
//! let counter: RedisQueue<String> = RedisQueue::create_or_open("redis://127.0.0.1:6379/0", "buns", 1)?;
//! let baker = counter.clone(); // another handle (its own connection); move it to a thread,
//!                              // or make it by name in a program on another host
//! std::thread::spawn(move || {
//!     for bun in ["pork", "cabbage", "red bean"] {
//!         baker.put(bun.to_owned()).unwrap();
//!     }
//!     baker.close().unwrap();
//! });
//! let mut eaten = Vec::new();
//! loop {
//!     match counter.get() {
//!         Ok(bun) => eaten.push(bun),
//!         Err(GetError::Closed) => break,
//!         Err(e) => panic!("{e}"),
//!     }
//! }
//! assert_eq!(eaten, ["pork", "cabbage", "red bean"]);
//! # Ok::<(), baozi_redis::RedisQueueError>(())
//! ```
//!
//! # How it works
//! A queue `NAME` is a Redis list `baozi:{NAME}:items` and a few small keys beside it, all with
//! the hash tag `{NAME}` (one hash slot, so it runs on Redis Cluster too). Each step that must be
//! atomic is one Lua script: a put checks `maxsize` and appends in one step, so N producers on N
//! hosts never push the queue past it. Blocking waits happen on the server: a get is a `BLPOP`
//! on the items and a close token, a put that finds the queue full is a `BLPOP` on a room token
//! that each get leaves, `join` a `BLPOP` on an all-done token. Waits go in slices
//! ([`RedisOptions::wait_slice`], default 2 s) so a silent network failure is an error, never a
//! hang. Messages use the same codecs as the shared-memory queue ([`baozi_queue::Message`]),
//! each behind a 16-byte header: the producer's id and sequence number.
//!
//! # Delivery guarantees
//! * **A put that returned `Ok` is in the queue exactly once.** Each handle has a producer id
//!   (64 random bits) and numbers its puts; the put script drops a (producer, sequence) it has
//!   seen. So a put whose reply was lost (timeout, dropped connection) is retried on a new
//!   connection (for [`RedisOptions::retry_for`]) without a duplicate.
//! * **A put that fails is in doubt**: a put that returns [`baozi_queue::PutError::Failed`]
//!   after its retries may still land (once) when the server answers again — its request was
//!   sent. The item comes back in the error; putting it again may deliver it twice, so give items
//!   an id where that matters. (Python's queues have the same hole when a feeder thread dies.)
//! * **Per-producer order**: one handle's puts are applied in the order they were made, and
//!   a consumer takes them in that order (a batch stays together).
//! * **A consumer that dies after taking an item**: at-most-once by default, as the
//!   shared-memory queue (the item was delivered; a get whose reply is lost loses it). With
//!   [`RedisOptions::lease`] a [`RedisJoinableQueue`] is at-least-once: an item not
//!   `task_done` within the lease goes back to the head of the queue for another consumer
//!   (so it may be processed twice, and a redelivered item may pass later ones).
//! * **Faults are typed errors**: a server that is down, restarted or unreachable gives
//!   [`RedisQueueError::Connection`] (inside [`baozi_queue::QueueError::Backend`] for the
//!   contract's methods) within `connect_timeout`/`io_timeout` plus `retry_for`, never a hang. A
//!   server restarted without persistence has lost what it held; configure AOF
//!   (`appendfsync always`) where puts must survive a server crash.
//!
//! # URLs, credentials, TLS
//! `redis://[user:password@]host[:port][/db]` (credentials go to `AUTH`; they never appear in
//! error messages). `rediss://host:port/db` (TLS) needs the `tls` feature (off by default: it
//! brings rustls and its `ring` crypto provider): the server's certificate is checked against
//! the system's store and OpenSSL's `SSL_CERT_FILE`/`SSL_CERT_DIR`, and a `#insecure` fragment
//! (`rediss://host:port/0#insecure`) skips the check (the traffic is still encrypted). A
//! certificate that is not trusted, or a `rediss://` URL without the feature, is a
//! [`RedisQueueError::Tls`] error at once, never retried. `LocalServer::start_tls` starts a
//! TLS-only test server with a self-signed certificate.
//!
//! # Handles
//! A clone is another handle with its own connection (made at first use) and its own producer
//! identity; a handle used in a forked child notices the new pid and does the same. With the
//! `serde` feature (on by default) a handle is a serde value: it serialises as the URL, name and
//! options, and deserialises, in any process on any host, into a handle that connects at first
//! use — so a reply queue can travel inside a request. The URL travels with its credentials.
//!
//! # Pool across hosts
//! [`RedisWorkers`] is a backend of [`baozi_process::Pool`]: the same `Pool` (apply, map,
//! imap, starmap, callbacks, close/join/terminate), with workers that are processes on any
//! number of hosts, meeting the pool on this Redis server. A program becomes a worker host by
//! starting `main` with [`main_guard`] and being run as
//! `program --baozi-worker redis://host:6379/0`. Tasks cross by name ([`baozi_process::task!`]).
//! A worker that dies mid-task (kill -9, host lost) is found by its heartbeat lease, and its task
//! fails with [`ProcessError::WorkerDied`](baozi_process::ProcessError::WorkerDied) within
//! `heartbeat + min(heartbeat/4, 250 ms)` plus a round trip (3.25 s by default), or runs again in
//! an [idempotent](baozi_process::PoolBuilder::idempotent) pool. Connection faults break the
//! pool with [`ProcessError::PoolBroken`](baozi_process::ProcessError::PoolBroken) naming the
//! fault, never a hang.
//!
//! ```no_run
//! use baozi_process::Pool;
//! use baozi_redis::RedisWorkers;
//!
//! baozi_process::task! {
//!     fn steam(minutes: u32) -> String { format!("steamed {minutes} min") }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     baozi_redis::main_guard(); // run as `prog --baozi-worker URL`: a worker, for ever
//!     let pool = Pool::builder()
//!         .processes(4) // workers used at once
//!         .idempotent(true) // steaming twice is fine: re-run a dead worker's task
//!         .backend(RedisWorkers::connect("redis://127.0.0.1:6379/0")?)
//!         .build()?;
//!     let baskets = pool.map(steam, 1..=8)?;
//!     assert_eq!(baskets[7], "steamed 8 min");
//!     pool.close();
//!     pool.join()?;
//!     Ok(())
//! }
//! ```
//!
//! The protocol (keys, who writes what, the bound, each failure) is in [`RedisWorkers`]'s
//! module and in docs/DESIGN.md, "Pool across hosts".
//!
//! # Tests
//! [`LocalServer`] starts a private `redis-server` (no persistence, free port, temporary
//! directory) and stops it on drop; the crate's tests use it.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod conn;
mod contract;
mod error;
#[cfg(feature = "serde")]
mod handle;
mod joinable;
mod link;
mod options;
mod pool;
mod queue;
mod scripts;
mod server;
mod worker;

pub use error::RedisQueueError;
pub use joinable::RedisJoinableQueue;
pub use options::RedisOptions;
pub use pool::{RedisWorkers, RedisWorkersBuilder, DEFAULT_HEARTBEAT, DEFAULT_PARENT_TTL};
pub use queue::RedisQueue;
pub use server::{LocalServer, INSTALL_HINT};
pub use worker::{main_guard, serve};

/// The largest encoded message (Redis's 512 MiB string limit, less the 16-byte header).
pub const MAX_MESSAGE_LEN: usize = (512 << 20) - 16;
