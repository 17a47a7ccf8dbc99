//! A fork-aware, crash-safe heap inside a shared-memory region, and Python's shared `Value`
//! and `Array` on it.
//!
//! * [`Heap`]: `alloc(layout) -> Offset`, `free(offset)` from any process; size classes with
//!   per-class free lists (O(1), no syscall), whole 64 KiB chunks for large blocks; alignment up
//!   to 4 KiB; [`AllocError::OutOfMemory`] when full; double frees and foreign offsets reported.
//!   A process killed mid-alloc or mid-free costs at most the one block it was moving, which
//!   [`Heap::stats`] reports as `leaked_suspect`.
//! * [`ShmBox`]: one owned value in a heap.
//! * [`Value`] / [`Array`]: values with a robust lock (Python's `Value`, `Array`; their own
//!   [`Lock`](baozi_sync::Lock), or one given as a [`SharedLock`], Python's `lock=`);
//!   [`RawValue`] / [`RawArray`] without (`RawValue`, `RawArray`). Each is a `Clone` handle that
//!   a `Process` closure captures and (with the `serde` feature) a serde value that attaches in
//!   any process. `Value::new(x)` has shared memory of its own, alive while any process holds it;
//!   `Value::new_in(&heap, x)` shares one heap among many values; `Value::create(name, x)` /
//!   `Value::open(name)` meet by name.
//!
//! # Example: allocate in the parent, free in the child
//!
//! ```
//! use baozi_alloc::{Heap, ShmBox};
//! use baozi_process::Process;
//!
//! let heap = Heap::anonymous(1 << 20)?;
//! let offset = ShmBox::new_in(&heap, 42u64)?.into_offset(); // handed over, not freed
//! let at_heap = heap.clone();
//! let child = Process::new(move || {
//!     // SAFETY: the parent gave up this block with into_offset, and nobody else takes it.
//!     let b = unsafe { ShmBox::<u64>::from_offset(&at_heap, offset) }.unwrap();
//!     let code = if *b == 42 { 0 } else { 1 };
//!     drop(b); // freed here, in the child
//!     code
//! });
//! child.start()?;
//! assert_eq!(child.join()?, 0);
//! assert_eq!(heap.stats()?.used, 0); // the child's free is seen here
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Fork
//! The heap keeps no per-process state — no caches, no cached pid — so a child forked at any
//! instant (even in the middle of another thread's alloc) never hands out memory that its parent
//! also thinks it owns. Handles ([`ShmBox`], [`Value`], [`Array`]) free their block on drop only
//! in the process that made them.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod array;
mod boxed;
mod cells;
mod error;
mod heap;
mod size_class;
mod sys;
mod value;

pub use array::Guard;
pub use array::{Array, RawArray};
pub use boxed::ShmBox;
pub use cells::SharedLock;
pub use error::AllocError;
pub use heap::{Heap, HeapStats, MAX_HEAP};
pub use value::{RawValue, Value, ValueGuard};
