//! Shared-memory regions for baozi.
//!
//! This crate is the bottom layer of baozi: memory and layout, nothing about locks. It gives you
//!
//! * [`Region`]: a cheap, clonable handle to a `MAP_SHARED` mapping, either anonymous (a memfd)
//!   or named in `/dev/shm` (unrelated programs meet by name; creation is exclusive), that any
//!   process of the machine can attach to through a [`RegionRef`] (a serde value with the
//!   `serde` feature);
//! * [`Header`]: the 128-byte `#[repr(C)]` header at offset 0 of every shared object, with magic,
//!   format version, kind, total size, layout checksum, object id, contents type ([`TypeTag`])
//!   and an initialisation state word, and the
//!   create → [`Header::publish`] / open → [`Header::wait_ready`] protocol, so an opener never sees a
//!   half-made object and gets a typed [`ShmError`] for anything foreign, old, truncated or wrong;
//! * [`Offset`]: a position-independent reference (regions map at different addresses in
//!   different processes), resolved with bounds and alignment checks by [`Region::get`];
//! * [`ShmSafe`]: the marker for types allowed in shared memory, and [`CachePadded`] to keep
//!   contended words apart;
//! * [`list`]: the baozi objects in `/dev/shm`, with who maps them, to find leftovers.
//!
//! # Example: a counter a child process increments
//!
//! The child is a [`baozi_process::Process`](https://docs.rs/baozi-process) (the `baozi`
//! facade re-exports it); an anonymous region is shared with every child started after it is
//! made.
//!
//! ```
//! use baozi_process::Process;
//! use baozi_shm::{Offset, Region};
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! let region = Region::anonymous(4096)?;
//! let at: Offset<AtomicU64> = Offset::new(0);
//!
//! let shared = region.clone();
//! let child = Process::new(move || {
//!     shared.get(at).expect("in bounds").fetch_add(41, Ordering::SeqCst);
//! });
//! child.start()?;
//! assert_eq!(child.join()?, 0);
//!
//! let counter = region.get(at)?;
//! counter.fetch_add(1, Ordering::SeqCst);
//! assert_eq!(counter.load(Ordering::SeqCst), 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Named objects and their lifetime
//!
//! `Region::create("jobs", len)` makes `/dev/shm/baozi-jobs`. The creating process owns the
//! name: dropping its `Region` unlinks it, unless [`Region::persist`] was called; a child forked
//! from the owner never unlinks. An object whose creator died stays openable. Leftovers are listed
//! by [`list`] and removed by [`Region::unlink`].

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod attach;
mod error;
mod header;
mod identity;
mod list;
mod offset;
mod pad;
mod region;
mod shm_safe;
mod sys;

#[cfg(feature = "serde")]
pub use attach::attach_failed;
pub use attach::{take_attach_error, LINGER, LINGER_MAX};
pub use error::ShmError;
pub use header::{
    Header, HeaderSnapshot, LayoutHash, ObjectKind, TypeName, DEFAULT_READY_WAIT, FORMAT_VERSION,
    HEADER_SIZE, MAGIC,
};
pub use identity::{ObjectId, TypeTag, TYPE_NAME_MAX};
pub use list::{list, KeepReason, ShmEntry, ValidHeader};
pub use offset::Offset;
pub use pad::{CachePadded, CACHE_LINE};
pub use region::{
    os_name, Region, RegionRef, UnmapCheck, MAX_NAME_LEN, MAX_REGION_LEN, NAME_PREFIX,
};
pub use shm_safe::ShmSafe;
