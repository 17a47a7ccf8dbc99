//! The shared-memory backend: one inbox queue per slot and one results queue, all in shared
//! memory, and the workers under the pool's spawner process (`spawner.rs`).

use std::sync::Arc;
use std::time::Duration;

use baozi_queue::{GetError, Queue};

use super::backend::{wake_event, Give, PoolBackend, PoolEnd};
use super::spawner::SpawnerWorkers;

/// The pool's queues and its spawner.
#[derive(Debug)]
pub(crate) struct ShmBackend {
    pub(crate) inboxes: Arc<Vec<Queue<Vec<u8>>>>,
    pub(crate) results: Arc<Queue<Vec<u8>>>,
    pub(crate) spawner: SpawnerWorkers,
}

impl PoolBackend for ShmBackend {
    fn max_task_len(&self) -> usize {
        self.inboxes[0].max_message_len()
    }

    fn start(&self, slot: u32) -> bool {
        self.spawner.start(slot)
    }

    fn end(&self, how: PoolEnd) {
        self.spawner.end(how);
    }

    fn lost(&self) -> Option<String> {
        self.spawner.lost()
    }

    fn reap(&self) {
        self.spawner.reap();
    }

    fn give(&self, slot: u32, _gen: u64, msg: Vec<u8>) -> Result<(), Give> {
        self.inboxes[slot as usize]
            .put_nowait(msg)
            .map_err(|e| Give::Full(e.into_inner()))
    }

    fn take_back(&self, slot: u32, _gen: u64) -> Result<Option<Vec<u8>>, String> {
        Ok(self.inboxes[slot as usize].get_nowait().ok())
    }

    fn next_event(&self, wait: Duration) -> Result<Option<Vec<u8>>, String> {
        match self.results.get_timeout(wait) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(GetError::Empty) => Ok(None),
            Err(e) => Err(format!("the results queue failed: {e}")),
        }
    }

    fn wake(&self) {
        let _ = self.results.put(wake_event());
    }
}
