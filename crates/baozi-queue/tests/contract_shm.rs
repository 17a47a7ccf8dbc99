//! The generic Queue contract suite (tests/contract/mod.rs) on the shared-memory queue; the
//! same cases run on Redis in crates/baozi-redis/tests/redis.rs.

mod contract;

use baozi_queue::{JoinableQueue, Message, Queue};
use contract::Backend;

struct Shm;

impl Backend for Shm {
    type Q<T: Message + Send + 'static> = Queue<T>;
    type J<T: Message + Send + 'static> = JoinableQueue<T>;
    fn queue<T: Message + Send + 'static>(&self, maxsize: usize) -> Queue<T> {
        Queue::new(maxsize, 1 << 20).unwrap()
    }
    fn joinable<T: Message + Send + 'static>(&self, maxsize: usize) -> JoinableQueue<T> {
        JoinableQueue::new(maxsize, 1 << 20).unwrap()
    }
}

fn main() {
    let failed = contract::run("contract_shm", &Shm, contract::cases::<Shm>());
    std::process::exit(i32::from(failed != 0));
}
