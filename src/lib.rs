#![doc = include_str!("../README.md")]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

/// Shared-memory regions, headers and offsets ([`baozi_shm`]).
pub mod shm {
    pub use baozi_shm::*;
}

/// Process-shared, robust locks and waits ([`baozi_sync`]).
pub mod sync {
    pub use baozi_sync::*;
}

/// The shared heap, `Value` and `Array` ([`baozi_alloc`]).
pub mod alloc {
    pub use baozi_alloc::*;
}

/// Processes over fork ([`baozi_process`]).
pub mod process {
    pub use baozi_process::*;
}

/// `bytemuck`, re-exported: `#[derive(baozi::bytemuck::Pod, baozi::bytemuck::Zeroable)]` makes
/// a `repr(C)` struct fit for a `Value`, an `Array` or a `ShmMutex`.
pub use bytemuck;

pub use baozi_alloc::{AllocError, Array, Heap, RawArray, RawValue, ShmBox, Value, ValueGuard};
pub use baozi_process::{
    current_process, get_start_method, guard_before_main, lookup_task, main_guard,
    set_start_method, spawn, task, AsyncResult, JoinHandle, Pool, Process, ProcessError,
    StartMethod,
};
pub use baozi_queue::Serde;
pub use baozi_queue::{
    CodecError, GetError, Iter, JoinableQueue, Message, Pod, PutError, Queue, QueueError,
    QueueOptions,
};
/// The Queue contract as traits, for code generic over the backend (shared memory here, Redis
/// in the `baozi-redis` crate).
pub use baozi_queue::{JoinableContract, QueueContract};
pub use baozi_shm::{Region, ShmError};
pub use baozi_sync::{
    Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, ShmMutex, SyncError,
};
