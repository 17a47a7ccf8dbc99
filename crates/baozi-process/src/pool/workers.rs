//! How a pool's workers are started and reached: the one seam between what the pool *decides*
//! (`parent.rs`: which task is where, results, deaths, replacements) and the processes that do
//! the work.
//!
//! The parent's bookkeeping talks to its workers only through [`Workers`] and the queues: it
//! asks for a worker in a slot, and later hears through the results queue that one started (or
//! could not), finished a task, or exited. Where the workers come from is the implementation's
//! business: today one spawner process per pool (`spawner.rs`), started and starting workers
//! in the way the pool's [`StartMethod`](crate::StartMethod) says. A backend whose workers
//! live elsewhere (a remote queue) is another implementation of the same trait.

use std::fmt;

/// How the workers are ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// SIGKILL them now (`terminate`, a broken pool).
    Kill,
    /// They were all told to stop (`close` then `join`): let them finish, then reap them.
    Shutdown,
}

/// The parent's handle on where its workers come from. Every method is quick and never waits
/// for a worker, except [`reap`](Workers::reap), which is called without the pool's lock.
pub(crate) trait Workers: Send + Sync + fmt::Debug {
    /// Asks for a worker in `slot`. Its `Started` or `SpawnFailed` event comes later through
    /// the results queue. `false`: no more workers can be asked for (the keeper is gone).
    fn start(&self, slot: u32) -> bool;

    /// Ends every worker, and the keeper; no worker is started after this.
    fn end(&self, how: End);

    /// Why the workers' keeper is gone while the pool still needs it; `None` while it lives.
    fn lost(&self) -> Option<String>;

    /// Waits until the keeper and every worker are gone (after [`end`](Workers::end)).
    fn reap(&self);
}
