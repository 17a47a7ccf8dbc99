//! Any bytes as a named region: opening it as a queue or a heap must give a typed error or a working
//! queue — never a crash, a hang or undefined behaviour.
#![no_main]

use std::time::Duration;

use baozi_queue::Queue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = format!("fuzz-open-{}", std::process::id());
    let path = format!("/dev/shm/baozi-{name}");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    // No wait for a creator: a header that is not ready is NotReady at once.
    if let Ok(q) = Queue::<Vec<u8>>::open_with(&name, Duration::ZERO, false) {
        // A queue that passed every check must answer the lock-free questions sanely.
        assert!(q.qsize() <= q.capacity_bytes() / 8);
        assert!(q.used_bytes() <= q.capacity_bytes());
        let _ = (q.empty(), q.full(), q.is_closed(), q.max_message_len());
    }
    // As a typed queue: the header's type words are checked too (a typed error, never garbage).
    if let Ok(q) = Queue::<baozi_queue::Pod<u64>>::open_with(&name, Duration::ZERO, false) {
        assert!(q.qsize() <= q.capacity_bytes() / 8);
    }
    // The same bytes as a heap: a typed error, or a heap whose lock-free answers are sane.
    if let Ok(heap) = baozi_alloc::Heap::open_timeout(&name, Duration::ZERO) {
        let _ = heap.usable_size(baozi_shm::Offset::new(0));
    }
    let _ = std::fs::remove_file(&path);
});
