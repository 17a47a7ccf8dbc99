//! Conformance suite: the cases of CPython's `_TestQueue` and `_TestJoinableQueue`
//! (`Lib/test/_test_multiprocessing.py`) ported to Rust, and every contract point of the
//! [`Queue`] API, in one process (threads where a second party is needed).
//!
//! It is stricter than CPython where baozi is exact: there is no feeder thread, so `qsize`,
//! `empty` and `full` are checked the moment each put or get returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use baozi_queue::{
    Endpoints, GetError, JoinableQueue, Pod, PutError, Queue, QueueError, QueueOptions, Serde,
    MAX_MAXSIZE,
};
use baozi_shm::ShmError;

// --- helpers ---

/// Slack allowed past a timeout: the machine is small and shared.
const SLACK: Duration = Duration::from_millis(500);

/// A name no other test (thread or process) uses.
fn unique_name() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "conf-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Unlinks its name when dropped (even when the test panics), ignoring "not found".
struct NameGuard(String);

impl NameGuard {
    fn new() -> Self {
        NameGuard(unique_name())
    }
}

impl Drop for NameGuard {
    fn drop(&mut self) {
        let _ = Queue::<Vec<u8>>::unlink(&self.0);
    }
}

/// Runs its closure if dropped while the thread panics: closes a queue so that a helper thread
/// blocked on it wakes up, and a failed assertion fails the test instead of hanging it.
struct OnUnwind<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnUnwind<F> {
    fn drop(&mut self) {
        if thread::panicking() {
            (self.0)();
        }
    }
}

fn close_on_unwind<T>(q: &Queue<T>) -> OnUnwind<impl FnMut() + '_> {
    OnUnwind(move || {
        let _ = q.close();
    })
}

/// Runs `f`, returning its result and how long it took.
fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let start = Instant::now();
    let r = f();
    (r, start.elapsed())
}

/// Asserts `elapsed` is at least `timeout` and within the slack after it.
fn assert_waited(elapsed: Duration, timeout: Duration, what: &str) {
    assert!(
        elapsed >= timeout,
        "{what}: returned after {elapsed:?}, before the {timeout:?} timeout"
    );
    assert!(
        elapsed < timeout + SLACK,
        "{what}: returned after {elapsed:?}, far past the {timeout:?} timeout"
    );
}

fn assert_get_empty<T: std::fmt::Debug>(r: Result<T, GetError>) {
    match r {
        Err(GetError::Empty) => {}
        other => panic!("expected GetError::Empty, got {other:?}"),
    }
}

fn assert_get_closed<T: std::fmt::Debug>(r: Result<T, GetError>) {
    match r {
        Err(GetError::Closed) => {}
        other => panic!("expected GetError::Closed, got {other:?}"),
    }
}

fn shm_error(e: QueueError) -> ShmError {
    match e {
        QueueError::Shm(s) => s,
        other => panic!("expected QueueError::Shm, got {other:?}"),
    }
}

/// Deterministic xorshift, so the random tests need no extra crate and replay exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A message whose first bytes carry `seq` (when long enough) and the rest a pattern of it.
fn message(seq: u64, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (seq as usize).wrapping_mul(31).wrapping_add(i) as u8)
        .collect();
    if len >= 8 {
        v[..8].copy_from_slice(&seq.to_le_bytes());
    }
    v
}

// --- CPython _TestQueue.test_put ---

#[test]
fn test_put() {
    const MAXSIZE: usize = 6;
    let timeout = Duration::from_millis(200);
    let q: Queue<u32> = Queue::new(MAXSIZE, 4096).unwrap();
    assert_eq!(q.maxsize(), MAXSIZE);
    assert!(q.empty());
    assert!(!q.full());

    q.put(1).unwrap();
    q.put_timeout(2, timeout).unwrap();
    q.put_nowait(3).unwrap();
    q.put_timeout(4, timeout).unwrap();
    q.put_nowait(5).unwrap();
    assert_eq!(q.qsize(), 5);
    assert!(!q.empty());
    assert!(!q.full());
    q.put(6).unwrap();
    assert_eq!(q.qsize(), MAXSIZE);
    assert!(!q.empty());
    assert!(q.full());

    match q.put_nowait(7) {
        Err(PutError::Full(7)) => {}
        other => panic!("expected Full(7), got {other:?}"),
    }
    let (r, elapsed) = timed(|| q.put_timeout(7, timeout));
    assert!(matches!(r, Err(PutError::Full(7))), "{r:?}");
    assert_waited(elapsed, timeout, "put_timeout on a full queue");
    assert_eq!(q.qsize(), MAXSIZE, "a failed put changed the queue");

    for expected in 1..=6 {
        assert_eq!(q.get().unwrap(), expected);
        assert_eq!(q.qsize(), MAXSIZE - expected as usize);
        assert!(!q.full());
    }
    assert!(q.empty());
}

// --- CPython _TestQueue.test_get ---

#[test]
fn test_get() {
    let timeout = Duration::from_millis(200);
    let q: Queue<u32> = Queue::new(0, 4096).unwrap();
    for i in 1..=5 {
        q.put(i).unwrap();
    }
    assert!(!q.empty());
    assert_eq!(q.qsize(), 5);

    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get_timeout(timeout).unwrap(), 2);
    assert_eq!(q.get_nowait().unwrap(), 3);
    assert_eq!(q.get_timeout(timeout).unwrap(), 4);
    assert_eq!(q.get_nowait().unwrap(), 5);
    assert!(q.empty());
    assert_eq!(q.qsize(), 0);

    assert_get_empty(q.get_nowait());
    let (r, elapsed) = timed(|| q.get_timeout(timeout));
    assert_get_empty(r);
    assert_waited(elapsed, timeout, "get_timeout on an empty queue");
}

// --- CPython _TestQueue.test_qsize, exact at once ---

#[test]
fn test_qsize_is_exact_after_every_call() {
    let q: Queue<u64> = Queue::new(0, 4096).unwrap();
    assert_eq!(q.qsize(), 0);
    for i in 0..100u64 {
        q.put(i).unwrap();
        assert_eq!(q.qsize(), i as usize + 1);
        assert!(!q.empty());
    }
    for i in 0..100u64 {
        assert_eq!(q.get().unwrap(), i);
        assert_eq!(q.qsize(), 99 - i as usize);
    }
    assert!(q.empty());
    assert_eq!(q.used_bytes(), 0);
}

// --- CPython _TestQueue.test_timeout: get(timeout=0.5) on an empty queue ---

#[test]
fn test_get_timeout_half_a_second() {
    let timeout = Duration::from_millis(500);
    let q: Queue<String> = Queue::new(0, 4096).unwrap();
    let (r, elapsed) = timed(|| q.get_timeout(timeout));
    assert_get_empty(r);
    assert_waited(elapsed, timeout, "get_timeout(0.5 s)");
}

#[test]
fn timeouts_hold_without_spinning_too() {
    let timeout = Duration::from_millis(300);
    let q: Queue<u8> = QueueOptions::new()
        .maxsize(1)
        .capacity(4096)
        .spin(false)
        .anonymous()
        .unwrap();
    let (r, elapsed) = timed(|| q.get_timeout(timeout));
    assert_get_empty(r);
    assert_waited(elapsed, timeout, "get_timeout without spin");
    q.put(1).unwrap();
    let (r, elapsed) = timed(|| q.put_timeout(2, timeout));
    assert!(matches!(r, Err(PutError::Full(2))), "{r:?}");
    assert_waited(elapsed, timeout, "put_timeout without spin");
}

#[test]
fn batch_timeouts_wait_then_fail() {
    let timeout = Duration::from_millis(250);
    let q: Queue<u8> = Queue::new(2, 4096).unwrap();
    let (r, elapsed) = timed(|| q.get_many_timeout(5, timeout));
    assert_get_empty(r);
    assert_waited(elapsed, timeout, "get_many_timeout on an empty queue");
    q.put(1).unwrap();
    let (r, elapsed) = timed(|| q.put_many_timeout(vec![2, 3], timeout));
    match r {
        Err(PutError::Full(items)) => assert_eq!(items, [2, 3]),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_waited(
        elapsed,
        timeout,
        "put_many_timeout with room for one of two",
    );
    assert_eq!(q.qsize(), 1);
}

// --- bounds: items and bytes ---

#[test]
fn maxsize_bounds_items() {
    let q: Queue<Vec<u8>> = Queue::new(3, 64 * 1024).unwrap();
    for i in 0..3 {
        q.put_nowait(vec![i; 10]).unwrap();
    }
    assert!(q.full());
    assert_eq!(q.qsize(), 3);
    // Plenty of bytes left, yet the item limit refuses even an empty message.
    assert!(q.used_bytes() < 100);
    let err = q.put_nowait(Vec::new()).unwrap_err();
    assert!(err.is_full(), "{err:?}");
    q.get().unwrap();
    assert!(!q.full());
    q.put_nowait(Vec::new()).unwrap();
    assert!(q.full());
}

#[test]
fn maxsize_zero_means_only_bytes_bound_the_queue() {
    // Each empty message is one 8-byte frame header: a 4096-byte ring holds exactly 512.
    let q: Queue<Vec<u8>> = Queue::new(0, 4096).unwrap();
    assert_eq!(q.maxsize(), 0);
    for i in 0..512 {
        assert!(!q.full(), "full after {i} empty messages");
        q.put_nowait(Vec::new())
            .unwrap_or_else(|e| panic!("put {i}: {e}"));
    }
    assert_eq!(q.qsize(), 512);
    assert_eq!(q.used_bytes(), 4096);
    assert!(q.full());
    assert!(q.put_nowait(Vec::new()).unwrap_err().is_full());
    for _ in 0..512 {
        assert_eq!(q.get_nowait().unwrap(), Vec::<u8>::new());
    }
    assert!(q.empty());
}

#[test]
fn byte_capacity_bounds_memory() {
    const CAP: usize = 64 * 1024;
    const LEN: usize = 4000; // frame: 8 + 4000 = 4008 bytes
    let q: Queue<Vec<u8>> = Queue::new(0, CAP).unwrap();
    assert_eq!(q.capacity_bytes(), CAP);
    let mut n = 0u64;
    loop {
        match q.put_nowait(message(n, LEN)) {
            Ok(()) => n += 1,
            Err(PutError::Full(item)) => {
                assert_eq!(item, message(n, LEN), "Full gave back another item");
                break;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(n < 1000, "a 64 KiB queue took {n} 4 KB messages");
    }
    assert_eq!(n as usize, CAP / (8 + LEN));
    assert_eq!(q.qsize(), n as usize);
    assert_eq!(q.used_bytes(), n as usize * (8 + LEN));
    // 1408 bytes are left: the queue is not full, and a small message still fits.
    assert!(!q.full());
    q.put_nowait(message(n, 100)).unwrap();
    for i in 0..n {
        assert_eq!(q.get().unwrap(), message(i, LEN));
    }
    assert_eq!(q.get().unwrap(), message(n, 100));
    assert_eq!(q.used_bytes(), 0);
}

#[test]
fn capacity_is_rounded_up_to_eight() {
    let q: Queue<Vec<u8>> = Queue::new(0, 100).unwrap();
    assert_eq!(q.capacity_bytes(), 104);
    assert_eq!(q.max_message_len(), 96);
}

// --- put_nowait / get_nowait ---

#[test]
fn put_nowait_on_full_gives_the_same_item_back() {
    let q: Queue<Vec<u8>> = Queue::new(1, 4096).unwrap();
    q.put(b"first".to_vec()).unwrap();
    let item = b"second".to_vec();
    let ptr = item.as_ptr();
    let err = q.put_nowait(item).unwrap_err();
    assert!(err.is_full());
    assert_eq!(err.to_string(), "the queue is full");
    let back = err.into_inner();
    assert_eq!(back, b"second");
    assert_eq!(
        back.as_ptr(),
        ptr,
        "the item came back as a copy, not the same allocation"
    );
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get().unwrap(), b"first");
}

#[test]
fn empty_messages_round_trip_wherever_they_land() {
    // An empty message is a bare 8-byte header; in the last 8 bytes of the ring its (empty)
    // payload starts exactly at the end of the ring.
    let q: Queue<Vec<u8>> = Queue::new(0, 64).unwrap();
    q.put(vec![5; 48]).unwrap(); // frame 0..56
    q.put(Vec::new()).unwrap(); // frame 56..64
    assert_eq!(q.used_bytes(), 64);
    assert!(q.full());
    assert_eq!(q.get().unwrap(), vec![5; 48]);
    assert_eq!(q.get().unwrap(), Vec::<u8>::new());
    assert!(q.empty());
    // And at every other offset.
    for at in (0..64).step_by(8) {
        if at > 0 {
            q.put(vec![1; at - 8]).unwrap();
        }
        q.put(Vec::new()).unwrap();
        if at > 0 {
            assert_eq!(q.get().unwrap(), vec![1; at - 8]);
        }
        assert_eq!(
            q.get().unwrap(),
            Vec::<u8>::new(),
            "empty message at offset {at}"
        );
    }
}

#[test]
fn get_nowait_on_empty_is_empty() {
    let q: Queue<String> = Queue::new(4, 4096).unwrap();
    let (r, elapsed) = timed(|| q.get_nowait());
    let err = r.unwrap_err();
    assert!(err.is_empty(), "{err:?}");
    assert!(
        elapsed < Duration::from_millis(100),
        "get_nowait waited {elapsed:?}"
    );
    q.put("x".to_owned()).unwrap();
    q.get().unwrap();
    assert_get_empty(q.get_nowait());
}

// --- messages that can never fit ---

#[test]
fn too_large_is_immediate_even_for_a_blocking_put_and_changes_nothing() {
    let q: Queue<Vec<u8>> = Queue::new(2, 4096).unwrap();
    let big = vec![7u8; q.max_message_len() + 1];
    // With the queue full, a put that waited for room would hang for ever.
    q.put(b"a".to_vec()).unwrap();
    q.put(b"b".to_vec()).unwrap();
    assert!(q.full());
    let used = q.used_bytes();
    let (r, elapsed) = timed(|| q.put(big.clone()));
    assert!(
        elapsed < Duration::from_millis(100),
        "TooLarge took {elapsed:?}"
    );
    match r {
        Err(PutError::TooLarge {
            item,
            needed,
            capacity,
        }) => {
            assert_eq!(item, big);
            assert_eq!(capacity, 4096);
            assert!(needed > capacity, "needed {needed} <= capacity {capacity}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let (r, elapsed) = timed(|| q.put_timeout(big.clone(), Duration::from_secs(5)));
    assert!(
        elapsed < Duration::from_millis(100),
        "TooLarge took {elapsed:?}"
    );
    assert!(matches!(r, Err(PutError::TooLarge { .. })), "{r:?}");
    assert!(matches!(
        q.put_nowait(big.clone()),
        Err(PutError::TooLarge { .. })
    ));
    let (r, elapsed) = timed(|| q.put_bytes(&big, None));
    assert!(
        elapsed < Duration::from_millis(100),
        "TooLarge took {elapsed:?}"
    );
    assert!(matches!(r, Err(PutError::TooLarge { .. })), "{r:?}");

    assert_eq!(q.qsize(), 2);
    assert_eq!(q.used_bytes(), used);
    assert_eq!(q.get().unwrap(), b"a");
    assert_eq!(q.get().unwrap(), b"b");
    assert!(q.empty());
}

#[test]
fn too_large_on_an_empty_queue_too() {
    let q: Queue<String> = Queue::new(0, 64).unwrap();
    assert_eq!(q.max_message_len(), 56);
    let (r, elapsed) = timed(|| q.put("x".repeat(57)));
    assert!(
        elapsed < Duration::from_millis(100),
        "TooLarge took {elapsed:?}"
    );
    match r {
        Err(e @ PutError::TooLarge { .. }) => {
            assert!(e.to_string().contains("can never fit"), "{e}");
            assert_eq!(e.into_inner(), "x".repeat(57));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(q.empty());
    assert_eq!(q.used_bytes(), 0);
}

#[test]
fn a_max_len_message_fits_an_empty_queue_wherever_the_offsets_are() {
    let q: Queue<Vec<u8>> = Queue::new(0, 1024).unwrap();
    let max = q.max_message_len();
    assert_eq!(max, 1024 - 8);
    let big = message(1, max);

    // At offset 0.
    q.put(big.clone()).unwrap();
    assert_eq!(q.used_bytes(), 1024);
    assert!(q.full());
    assert_eq!(q.get().unwrap(), big);

    // Move the offsets to the middle of the ring, several different ways, and empty it again.
    for (k, step) in [(3usize, 100usize), (1, 8), (5, 33), (7, 0)]
        .into_iter()
        .enumerate()
    {
        for j in 0..step.0 {
            q.put(message(j as u64, step.1)).unwrap();
        }
        for j in 0..step.0 {
            assert_eq!(q.get().unwrap(), message(j as u64, step.1));
        }
        assert!(q.empty());
        let big = message(k as u64 + 2, max);
        let (r, elapsed) = timed(|| q.put(big.clone()));
        r.unwrap_or_else(|e| panic!("max-length message after {step:?}: {e}"));
        assert!(elapsed < Duration::from_millis(100));
        assert_eq!(q.qsize(), 1);
        assert_eq!(q.used_bytes(), 1024);
        assert!(q.full());
        // While it is in, another max-length message is Full, not TooLarge.
        assert!(q.put_nowait(big.clone()).unwrap_err().is_full());
        assert_eq!(q.get().unwrap(), big);
    }

    // And one byte more never fits.
    assert!(matches!(
        q.put(vec![0; max + 1]),
        Err(PutError::TooLarge { .. })
    ));
}

#[test]
fn a_max_len_message_waits_for_the_ring_to_empty() {
    // The ring holds one small message; a max-length put must wait, then go through.
    let q: Queue<Vec<u8>> = Queue::new(0, 256).unwrap();
    q.put(vec![1; 40]).unwrap();
    q.get().unwrap();
    q.put(vec![2; 40]).unwrap();
    let big = vec![3; q.max_message_len()];
    thread::scope(|s| {
        let _unwind = close_on_unwind(&q);
        let putter = s.spawn(|| q.put(big.clone()));
        thread::sleep(Duration::from_millis(100));
        assert!(
            !putter.is_finished(),
            "a max-length put went into a non-empty ring"
        );
        assert_eq!(q.get().unwrap(), vec![2; 40]);
        putter.join().unwrap().unwrap();
    });
    assert_eq!(q.get().unwrap(), big);
}

// --- batches ---

#[test]
fn put_many_is_all_or_nothing() {
    let q: Queue<u32> = Queue::new(5, 4096).unwrap();
    q.put_many(vec![1, 2, 3]).unwrap();
    assert_eq!(q.qsize(), 3);

    // Room for two, not three: none goes in, and the batch comes back whole.
    match q.put_many_nowait(vec![4, 5, 6]) {
        Err(PutError::Full(items)) => assert_eq!(items, [4, 5, 6]),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(q.qsize(), 3);

    // More than maxsize can never fit: TooMany at once, even blocking, naming the item limit.
    let (r, elapsed) = timed(|| q.put_many(vec![10, 11, 12, 13, 14, 15]));
    assert!(
        elapsed < Duration::from_millis(100),
        "TooLarge batch took {elapsed:?}"
    );
    match r {
        Err(e @ PutError::TooMany { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("6 items") && text.contains("maxsize"),
                "{text}"
            );
            assert!(!text.contains("bytes"), "{text}");
            assert_eq!(e.into_inner(), [10, 11, 12, 13, 14, 15]);
        }
        other => panic!("expected TooMany, got {other:?}"),
    }
    assert_eq!(q.qsize(), 3);

    q.put_many(vec![4, 5]).unwrap();
    assert!(q.full());
    assert_eq!(q.qsize(), 5);
    assert_eq!(q.get_many(3).unwrap(), [1, 2, 3]);
    assert_eq!(q.qsize(), 2);
    assert_eq!(q.get_many(10).unwrap(), [4, 5]);
    assert!(q.empty());
    assert_get_empty(q.get_many_nowait(4));
}

#[test]
fn put_many_from_a_slice_keeps_the_items_and_is_all_or_nothing() {
    let q: Queue<String> = Queue::new(4, 4096).unwrap();
    let batch = [
        "pork".to_owned(),
        "cabbage".to_owned(),
        "red bean".to_owned(),
    ];
    q.put_many_from(&batch, None).unwrap();
    assert_eq!(batch[0], "pork", "the caller keeps its items");
    assert_eq!(q.qsize(), 3);
    // Room for one, not three; zero timeout: Full at once, nothing goes in.
    let (r, elapsed) = timed(|| q.put_many_from(&batch, Some(Duration::ZERO)));
    assert!(matches!(r, Err(PutError::Full(()))), "{r:?}");
    assert!(elapsed < Duration::from_millis(100), "{elapsed:?}");
    // A timeout waits, then fails.
    let (r, elapsed) = timed(|| q.put_many_from(&batch, Some(Duration::from_millis(50))));
    assert!(matches!(r, Err(PutError::Full(()))), "{r:?}");
    assert!(elapsed >= Duration::from_millis(45), "{elapsed:?}");
    // More than maxsize can never fit.
    let five: Vec<String> = (0..5).map(|i| i.to_string()).collect();
    assert!(matches!(
        q.put_many_from(&five, None),
        Err(PutError::TooMany { item: (), .. })
    ));
    assert_eq!(q.qsize(), 3);
    // An empty slice is a no-op.
    q.put_many_from(&[], None).unwrap();
    let mut out = Vec::new();
    assert_eq!(q.get_many_into(&mut out, 10, None).unwrap(), 3);
    assert_eq!(out, batch);
    q.close().unwrap();
    assert!(matches!(
        q.put_many_from(&batch, None),
        Err(PutError::Closed(()))
    ));
}

#[test]
fn put_many_is_all_or_nothing_in_bytes_too() {
    let q: Queue<Vec<u8>> = Queue::new(0, 1024).unwrap();
    q.put(vec![0; 500]).unwrap(); // 508 bytes
    let used = q.used_bytes();
    // 3 × 208 = 624 > 516 left: the first two would fit, the third not.
    let batch = vec![vec![1; 200], vec![2; 200], vec![3; 200]];
    match q.put_many_nowait(batch.clone()) {
        Err(PutError::Full(items)) => assert_eq!(items, batch),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.used_bytes(), used);

    // A batch bigger than the whole ring is TooLarge, at once.
    let huge = vec![vec![1; 400], vec![2; 400], vec![3; 400]];
    let (r, elapsed) = timed(|| q.put_many(huge.clone()));
    assert!(elapsed < Duration::from_millis(100));
    match r {
        Err(PutError::TooLarge {
            item,
            needed,
            capacity,
        }) => {
            assert_eq!(item, huge);
            assert_eq!(capacity, 1024);
            assert_eq!(needed, 3 * 408);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // One message in the batch that alone can never fit: TooLarge too.
    let r = q.put_many(vec![vec![1; 8], vec![0; 2000]]);
    assert!(matches!(r, Err(PutError::TooLarge { .. })), "{r:?}");
    assert_eq!(q.qsize(), 1);

    assert_eq!(q.get().unwrap(), vec![0; 500]);
    q.put_many(batch.clone()).unwrap();
    assert_eq!(q.get_many(3).unwrap(), batch);
}

#[test]
fn get_many_returns_one_to_max_in_fifo_order() {
    let q: Queue<u64> = Queue::new(0, 64 * 1024).unwrap();
    for i in 0..20 {
        q.put(i).unwrap();
    }
    let mut seen = Vec::new();
    for max in [1usize, 2, 3, 5, 100] {
        let got = q.get_many(max).unwrap();
        assert!(
            !got.is_empty() && got.len() <= max,
            "get_many({max}) returned {}",
            got.len()
        );
        assert_eq!(
            got.len(),
            max.min(20 - seen.len()),
            "get_many took less than was there"
        );
        seen.extend(got);
        assert_eq!(q.qsize(), 20 - seen.len());
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>());

    // get_many_into appends, reusing the vector.
    q.put_many(vec![100, 101, 102]).unwrap();
    let mut out = vec![99];
    assert_eq!(q.get_many_into(&mut out, 2, None).unwrap(), 2);
    assert_eq!(
        q.get_many_into(&mut out, 2, Some(Duration::from_millis(10)))
            .unwrap(),
        1
    );
    assert_eq!(out, [99, 100, 101, 102]);
    assert_get_empty(q.get_many_into(&mut out, 2, Some(Duration::from_millis(10))));
    assert_eq!(out.len(), 4);
}

#[test]
fn blocked_get_many_is_released_by_a_put_many() {
    let q: Queue<u32> = Queue::new(0, 4096).unwrap();
    thread::scope(|s| {
        let _unwind = close_on_unwind(&q);
        let getter = s.spawn(|| q.get_many(10));
        thread::sleep(Duration::from_millis(100));
        assert!(!getter.is_finished());
        q.put_many(vec![1, 2, 3]).unwrap();
        let got = getter.join().unwrap().unwrap();
        // All three were committed together, so the getter may see 1..=3 of them, in order.
        assert!(!got.is_empty());
        assert_eq!(got, (1..=got.len() as u32).collect::<Vec<_>>());
    });
}

// --- close (CPython test_closed_queue, and more) ---

#[test]
fn put_after_close_is_closed_and_gives_the_item_back() {
    let q: Queue<String> = Queue::new(0, 4096).unwrap();
    assert!(!q.is_closed());
    q.put("before".to_owned()).unwrap();
    q.close().unwrap();
    assert!(q.is_closed());
    for r in [
        q.put("after".to_owned()),
        q.put_nowait("after".to_owned()),
        q.put_timeout("after".to_owned(), Duration::from_secs(5)),
    ] {
        match r {
            Err(e @ PutError::Closed(_)) => {
                assert_eq!(e.to_string(), "the queue is closed");
                assert_eq!(e.into_inner(), "after");
            }
            other => panic!("expected Closed, got {other:?}"),
        }
    }
    match q.put_many(vec!["a".to_owned(), "b".to_owned()]) {
        Err(PutError::Closed(items)) => assert_eq!(items, ["a", "b"]),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert_eq!(q.qsize(), 1);
    // Closing twice is harmless.
    q.close().unwrap();
    assert!(q.is_closed());
    assert_eq!(q.qsize(), 1);
}

#[test]
fn getters_drain_a_closed_queue_then_see_closed() {
    let q: Queue<u32> = Queue::new(0, 4096).unwrap();
    q.put_many(vec![1, 2, 3, 4]).unwrap();
    q.close().unwrap();
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get_nowait().unwrap(), 2);
    assert_eq!(q.get_timeout(Duration::from_millis(10)).unwrap(), 3);
    assert_eq!(q.get_many(10).unwrap(), [4]);
    assert!(q.empty());
    // Drained: Closed, never Empty, and no waiting even for the blocking forms.
    let (r, elapsed) = timed(|| q.get());
    assert_get_closed(r);
    assert!(elapsed < Duration::from_millis(100));
    let (r, elapsed) = timed(|| q.get_timeout(Duration::from_secs(5)));
    assert_get_closed(r);
    assert!(elapsed < Duration::from_millis(100));
    assert_get_closed(q.get_nowait());
    assert_get_closed(q.get_many(3));
    let raw: Queue<Vec<u8>> = Queue::new(0, 4096).unwrap();
    raw.close().unwrap();
    let mut buf = Vec::new();
    assert_get_closed(raw.get_bytes_into(&mut buf, None));
    assert_eq!(
        GetError::Closed.to_string(),
        "the queue is closed and drained"
    );
}

#[test]
fn close_wakes_a_getter_blocked_in_another_thread() {
    let q: Queue<u32> = Queue::new(0, 4096).unwrap();
    thread::scope(|s| {
        let _unwind = close_on_unwind(&q);
        let getter = s.spawn(|| timed(|| q.get()));
        let timed_getter = s.spawn(|| timed(|| q.get_timeout(Duration::from_secs(30))));
        thread::sleep(Duration::from_millis(200));
        assert!(
            !getter.is_finished() && !timed_getter.is_finished(),
            "a get on an empty queue returned"
        );
        let closed_at = Instant::now();
        q.close().unwrap();
        for h in [getter, timed_getter] {
            let (r, _) = h.join().unwrap();
            assert_get_closed(r);
        }
        assert!(
            closed_at.elapsed() < Duration::from_secs(1),
            "getters took {:?} to wake",
            closed_at.elapsed()
        );
    });
}

#[test]
fn close_wakes_a_putter_blocked_in_another_thread() {
    let q: Queue<u32> = Queue::new(1, 4096).unwrap();
    q.put(1).unwrap();
    thread::scope(|s| {
        let _unwind = close_on_unwind(&q);
        let putter = s.spawn(|| q.put(2));
        thread::sleep(Duration::from_millis(200));
        assert!(!putter.is_finished(), "a put on a full queue returned");
        let closed_at = Instant::now();
        q.close().unwrap();
        match putter.join().unwrap() {
            Err(PutError::Closed(2)) => {}
            other => panic!("expected Closed(2), got {other:?}"),
        }
        assert!(closed_at.elapsed() < Duration::from_secs(1));
    });
    assert_eq!(q.get().unwrap(), 1);
    assert_get_closed(q.get());
}

// --- blocking across threads ---

#[test]
fn blocked_put_is_released_by_a_get_in_another_thread() {
    let q: Queue<u32> = Queue::new(1, 4096).unwrap();
    q.put(1).unwrap();
    thread::scope(|s| {
        let _unwind = close_on_unwind(&q);
        let putter = s.spawn(|| q.put(2));
        thread::sleep(Duration::from_millis(200));
        assert!(!putter.is_finished(), "a put on a full queue returned");
        assert_eq!(q.qsize(), 1);
        assert_eq!(q.get().unwrap(), 1);
        putter.join().unwrap().unwrap();
    });
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get().unwrap(), 2);
}

#[test]
fn blocked_put_is_released_when_bytes_free_up() {
    // Item limit not reached: the putter waits for bytes.
    let q: Queue<Vec<u8>> = Queue::new(0, 1024).unwrap();
    q.put(vec![1; 600]).unwrap();
    thread::scope(|s| {
        let _unwind = close_on_unwind(&q);
        let putter = s.spawn(|| q.put(vec![2; 600]));
        thread::sleep(Duration::from_millis(200));
        assert!(!putter.is_finished(), "a put with no room returned");
        assert_eq!(q.get().unwrap(), vec![1; 600]);
        putter.join().unwrap().unwrap();
    });
    assert_eq!(q.get().unwrap(), vec![2; 600]);
}

#[test]
fn blocked_get_is_released_by_a_put_in_another_thread() {
    let q: Queue<String> = Queue::new(0, 4096).unwrap();
    thread::scope(|s| {
        let _unwind = close_on_unwind(&q);
        let getter = s.spawn(|| q.get());
        thread::sleep(Duration::from_millis(200));
        assert!(!getter.is_finished(), "a get on an empty queue returned");
        q.put("bun".to_owned()).unwrap();
        assert_eq!(getter.join().unwrap().unwrap(), "bun");
    });
    assert!(q.empty());
}

// --- FIFO ---

#[test]
fn fifo_over_many_wrap_arounds_with_random_sizes() {
    let q: Queue<Vec<u8>> = Queue::new(0, 1024).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut expected = std::collections::VecDeque::new();
    let (mut next, mut bytes) = (0u64, 0usize);
    while next < 20_000 {
        // Put until Full (or a random stop), then take a random number.
        for _ in 0..rng.below(12) {
            let len = rng.below(300) as usize;
            let m = message(next, len);
            match q.put_nowait(m) {
                Ok(()) => {
                    expected.push_back(message(next, len));
                    bytes += len;
                    next += 1;
                }
                Err(PutError::Full(back)) => {
                    assert_eq!(back, message(next, len));
                    break;
                }
                Err(e) => panic!("{e}"),
            }
            assert_eq!(q.qsize(), expected.len());
        }
        for _ in 0..rng.below(12) {
            match q.get_nowait() {
                Ok(m) => assert_eq!(Some(m), expected.pop_front(), "out of order"),
                Err(GetError::Empty) => {
                    assert!(expected.is_empty(), "Empty with {} queued", expected.len())
                }
                Err(e) => panic!("{e}"),
            }
            assert_eq!(q.qsize(), expected.len());
        }
    }
    while let Some(m) = expected.pop_front() {
        assert_eq!(q.get_nowait().unwrap(), m);
    }
    assert!(q.empty());
    assert_eq!(q.used_bytes(), 0);
    assert!(
        bytes > 1000 * 1024,
        "only {bytes} bytes went through: too few wrap-arounds"
    );
}

#[test]
fn fifo_between_two_threads_with_random_sizes() {
    const N: u64 = 20_000;
    let q: Queue<Vec<u8>> = Queue::new(16, 2048).unwrap();
    thread::scope(|s| {
        let _unwind = close_on_unwind(&q);
        s.spawn(|| {
            let mut rng = Rng(12345);
            for i in 0..N {
                let len = rng.below(500) as usize;
                q.put(message(i, len)).unwrap();
            }
            q.close().unwrap();
        });
        let mut rng = Rng(12345);
        for i in 0..N {
            let len = rng.below(500) as usize;
            assert_eq!(q.get().unwrap(), message(i, len), "message {i}");
        }
        assert_get_closed(q.get());
    });
}

// --- message types ---

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Tick {
    seq: u64,
    price: f64,
    qty: u32,
    side: u32,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Filling {
    Pork,
    Cabbage { leaves: u8 },
    RedBean(String),
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    customer: String,
    fillings: Vec<Filling>,
    note: Option<String>,
    price: f32,
}

fn round_trip<T: baozi_queue::Message + PartialEq + std::fmt::Debug + Clone>(values: &[T]) {
    let q: Queue<T> = Queue::new(0, 64 * 1024).unwrap();
    for v in values {
        q.put(v.clone()).unwrap();
    }
    assert_eq!(q.qsize(), values.len());
    for v in values {
        assert_eq!(&q.get().unwrap(), v);
    }
}

#[test]
fn numbers_round_trip() {
    round_trip(&[0u8, 1, u8::MAX]);
    round_trip(&[0u16, 0xbeef, u16::MAX]);
    round_trip(&[0u32, 0xdead_beef, u32::MAX]);
    round_trip(&[0u64, 0x0123_4567_89ab_cdef, u64::MAX]);
    round_trip(&[0u128, u128::MAX / 3, u128::MAX]);
    round_trip(&[i8::MIN, -1, 0, i8::MAX]);
    round_trip(&[i16::MIN, -1, i16::MAX]);
    round_trip(&[i32::MIN, -1, i32::MAX]);
    round_trip(&[i64::MIN, -1, i64::MAX]);
    round_trip(&[i128::MIN, -1, i128::MAX]);
    round_trip(&[0.0f32, -1.5, f32::MAX, f32::MIN_POSITIVE, f32::INFINITY]);
    round_trip(&[0.0f64, -1.5, f64::MAX, f64::MIN_POSITIVE, f64::NEG_INFINITY]);
    // NaN is not equal to itself: compare its bits.
    let q: Queue<f64> = Queue::new(0, 4096).unwrap();
    let nan = f64::from_bits(0x7ff8_dead_beef_0001);
    q.put(nan).unwrap();
    assert_eq!(q.get().unwrap().to_bits(), nan.to_bits());
}

#[test]
fn pod_round_trips_and_takes_its_size() {
    let ticks: Vec<Pod<Tick>> = (0..10)
        .map(|i| {
            Pod(Tick {
                seq: i,
                price: 9.5 + i as f64,
                qty: i as u32 * 3,
                side: (i % 2) as u32,
            })
        })
        .collect();
    round_trip(&ticks);
    let q: Queue<Pod<Tick>> = Queue::new(0, 4096).unwrap();
    q.put(ticks[3]).unwrap();
    assert_eq!(q.used_bytes(), 8 + std::mem::size_of::<Tick>());
    assert_eq!(q.get().unwrap(), ticks[3]);
    round_trip(&[Pod([1u8, 2, 3]), Pod([0; 3])]);
}

#[test]
fn bytes_and_strings_round_trip() {
    round_trip(&[
        Vec::new(),
        vec![0u8],
        vec![0xff; 7],
        vec![1; 8],
        vec![2; 9],
        (0..=255).collect(),
    ]);
    round_trip(&[
        String::new(),
        "pork".to_owned(),
        "包子 🥟".to_owned(),
        "x".repeat(1000),
    ]);
    round_trip(&[Box::<[u8]>::from(&b""[..]), Box::from(&b"red bean"[..])]);
}

#[test]
fn serde_round_trips() {
    let orders = vec![
        Order {
            id: 1,
            customer: "Li".to_owned(),
            fillings: vec![Filling::Pork],
            note: None,
            price: 3.5,
        },
        Order {
            id: u64::MAX,
            customer: "王".to_owned(),
            fillings: vec![
                Filling::Cabbage { leaves: 3 },
                Filling::RedBean("sweet".to_owned()),
            ],
            note: Some("extra hot".to_owned()),
            price: -0.0,
        },
        Order {
            id: 0,
            customer: String::new(),
            fillings: Vec::new(),
            note: Some(String::new()),
            price: 1e9,
        },
    ];
    let q: Queue<Serde<Order>> = Queue::new(0, 4096).unwrap();
    for o in &orders {
        q.put(Serde(o.clone())).unwrap();
    }
    for o in &orders {
        assert_eq!(&q.get().unwrap().0, o);
    }
    // Tuples and the batch path.
    let q: Queue<Serde<(String, u32)>> = Queue::new(0, 4096).unwrap();
    q.put_many(vec![Serde(("a".to_owned(), 1)), Serde(("b".to_owned(), 2))])
        .unwrap();
    let got: Vec<_> = q.get_many(5).unwrap().into_iter().map(|s| s.0).collect();
    assert_eq!(got, [("a".to_owned(), 1), ("b".to_owned(), 2)]);
}

// --- decode errors ---

#[test]
fn decoding_a_wrong_size_message_as_pod_gives_the_bytes_back() {
    let name = NameGuard::new();
    let raw: Queue<Vec<u8>> = Queue::create(&name.0, 0, 4096).unwrap();
    raw.put(vec![1, 2, 3]).unwrap();
    raw.put(42u64.to_le_bytes().to_vec()).unwrap();

    let words: Queue<Pod<u64>> = Queue::open(&name.0).unwrap();
    assert_eq!(words.qsize(), 2);
    match words.get() {
        Err(e @ GetError::Decode { .. }) => {
            assert!(e.to_string().contains("3-byte message"), "{e}");
            let GetError::Decode { bytes, error } = e else {
                unreachable!()
            };
            assert_eq!(bytes, [1, 2, 3]);
            assert!(error.to_string().contains("expected 8 bytes"), "{error}");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
    // The bad message was taken (its bytes are in the error): nothing is stuck or lost.
    assert_eq!(words.qsize(), 1);
    assert_eq!(raw.qsize(), 1);
    assert_eq!(words.get().unwrap(), Pod(42));
    assert!(raw.empty());
}

#[test]
fn get_many_stops_before_a_bad_message_and_loses_nothing() {
    let name = NameGuard::new();
    let raw: Queue<Vec<u8>> = Queue::create(&name.0, 0, 4096).unwrap();
    raw.put(b"good".to_vec()).unwrap();
    raw.put(vec![0xff, 0xfe]).unwrap(); // not UTF-8
    raw.put(b"after".to_vec()).unwrap();

    let text: Queue<String> = Queue::open(&name.0).unwrap();
    assert_eq!(text.get_many(10).unwrap(), ["good"]);
    assert_eq!(text.qsize(), 2);
    match text.get_many(10) {
        Err(GetError::Decode { bytes, .. }) => assert_eq!(bytes, [0xff, 0xfe]),
        other => panic!("expected Decode, got {other:?}"),
    }
    assert_eq!(text.get_many(10).unwrap(), ["after"]);
    assert!(text.empty());
}

// --- raw bytes ---

#[test]
fn put_bytes_and_get_bytes_into() {
    let q: Queue<Vec<u8>> = Queue::new(2, 4096).unwrap();
    q.put_bytes(b"pork", None).unwrap();
    q.put_bytes(b"", Some(Duration::ZERO)).unwrap();
    assert_eq!(q.qsize(), 2);

    // Full: zero timeout is nowait, a timeout waits.
    let (r, elapsed) = timed(|| q.put_bytes(b"x", Some(Duration::ZERO)));
    assert!(matches!(r, Err(PutError::Full(()))), "{r:?}");
    assert!(elapsed < Duration::from_millis(100));
    let timeout = Duration::from_millis(200);
    let (r, elapsed) = timed(|| q.put_bytes(b"x", Some(timeout)));
    assert!(matches!(r, Err(PutError::Full(()))), "{r:?}");
    assert_waited(elapsed, timeout, "put_bytes with a timeout on a full queue");

    // The buffer is cleared first and its allocation reused.
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"stale contents");
    let ptr = buf.as_ptr();
    q.get_bytes_into(&mut buf, None).unwrap();
    assert_eq!(buf, b"pork");
    assert_eq!(
        buf.as_ptr(),
        ptr,
        "get_bytes_into reallocated a big enough buffer"
    );
    q.get_bytes_into(&mut buf, Some(Duration::ZERO)).unwrap();
    assert!(buf.is_empty());

    let (r, elapsed) = timed(|| q.get_bytes_into(&mut buf, Some(Duration::ZERO)));
    assert_get_empty(r);
    assert!(elapsed < Duration::from_millis(100));
    let (r, elapsed) = timed(|| q.get_bytes_into(&mut buf, Some(timeout)));
    assert_get_empty(r);
    assert_waited(
        elapsed,
        timeout,
        "get_bytes_into with a timeout on an empty queue",
    );

    // They interoperate with the typed calls.
    q.put(b"typed".to_vec()).unwrap();
    q.get_bytes_into(&mut buf, None).unwrap();
    assert_eq!(buf, b"typed");
    q.put_bytes(b"raw", None).unwrap();
    assert_eq!(q.get().unwrap(), b"raw");
    q.close().unwrap();
    assert!(matches!(
        q.put_bytes(b"late", None),
        Err(PutError::Closed(()))
    ));
}

// --- JoinableQueue (CPython _TestJoinableQueue) ---

#[test]
fn joinable_counts_unfinished_tasks() {
    let q: JoinableQueue<u32> = JoinableQueue::new(0, 4096).unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
    q.join().unwrap(); // nothing unfinished: at once
    assert!(matches!(
        q.task_done(),
        Err(QueueError::TaskDoneTooManyTimes)
    ));

    q.put(1).unwrap();
    q.put_many(vec![2, 3]).unwrap();
    assert_eq!(q.unfinished_tasks(), 3);
    // A get does not finish a task; task_done does.
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.unfinished_tasks(), 3);
    q.task_done().unwrap();
    assert_eq!(q.unfinished_tasks(), 2);

    let timeout = Duration::from_millis(250);
    let (r, elapsed) = timed(|| q.join_timeout(timeout));
    match r {
        Err(e @ QueueError::JoinTimeout { unfinished: 2 }) => {
            assert!(e.to_string().contains("2 task(s) unfinished"), "{e}");
        }
        other => panic!("expected JoinTimeout {{ unfinished: 2 }}, got {other:?}"),
    }
    assert_waited(elapsed, timeout, "join_timeout");

    assert_eq!(q.get_many(5).unwrap(), [2, 3]);
    q.task_done().unwrap();
    q.task_done().unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
    let (r, elapsed) = timed(|| q.join_timeout(Duration::from_secs(5)));
    r.unwrap();
    assert!(elapsed < Duration::from_millis(100));
    match q.task_done() {
        Err(e @ QueueError::TaskDoneTooManyTimes) => {
            assert_eq!(
                e.to_string(),
                "task_done() called more times than items were put"
            );
        }
        other => panic!("expected TaskDoneTooManyTimes, got {other:?}"),
    }
    assert_eq!(q.unfinished_tasks(), 0);
}

#[test]
fn joinable_task_done_with_worker_threads() {
    // CPython test_task_done: workers get and task_done; join returns once all are done.
    let q: JoinableQueue<u32> = JoinableQueue::new(0, 4096).unwrap();
    let sum = AtomicUsize::new(0);
    thread::scope(|s| {
        let _unwind = close_on_unwind(&q);
        for _ in 0..4 {
            s.spawn(|| loop {
                match q.get() {
                    Ok(n) => {
                        sum.fetch_add(n as usize, Ordering::Relaxed);
                        q.task_done().unwrap();
                    }
                    Err(GetError::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            });
        }
        for i in 0..100 {
            q.put(i).unwrap();
        }
        q.join_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(q.unfinished_tasks(), 0);
        assert_eq!(sum.load(Ordering::Relaxed), (0..100).sum::<u32>() as usize);
        q.close().unwrap();
    });
}

#[test]
fn join_is_released_by_task_done_in_another_thread() {
    let q: JoinableQueue<u32> = JoinableQueue::new(0, 4096).unwrap();
    q.put(7).unwrap();
    thread::scope(|s| {
        let _unwind = OnUnwind(|| {
            let _ = q.task_done();
        });
        let joiner = s.spawn(|| q.join());
        thread::sleep(Duration::from_millis(200));
        assert!(
            !joiner.is_finished(),
            "join returned with a task unfinished"
        );
        assert_eq!(q.get().unwrap(), 7);
        thread::sleep(Duration::from_millis(50));
        assert!(
            !joiner.is_finished(),
            "join returned on get, before task_done"
        );
        q.task_done().unwrap();
        joiner.join().unwrap().unwrap();
    });
}

#[test]
fn joinable_by_name_shares_the_task_count() {
    let name = NameGuard::new();
    let creator: JoinableQueue<u32> = JoinableQueue::create(&name.0, 0, 4096).unwrap();
    let opener: JoinableQueue<u32> = JoinableQueue::open(&name.0).unwrap();
    creator.put(1).unwrap();
    assert_eq!(opener.unfinished_tasks(), 1);
    assert_eq!(opener.get().unwrap(), 1);
    opener.task_done().unwrap();
    assert_eq!(creator.unfinished_tasks(), 0);
    creator.join().unwrap();
    let plain: Queue<u32> = opener.into_inner();
    assert!(plain.empty());
}

// --- named queues: create / open / unlink ---

#[test]
fn open_of_a_missing_name_is_not_found() {
    let name = unique_name();
    let err = Queue::<u32>::open(&name).unwrap_err();
    match shm_error(err) {
        ShmError::NotFound { name: n } => assert!(n.contains(&name), "{n}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        shm_error(Queue::<u32>::unlink(&name).unwrap_err()),
        ShmError::NotFound { .. }
    ));
}

#[test]
fn create_twice_is_already_exists() {
    let name = NameGuard::new();
    let first: Queue<u32> = Queue::create(&name.0, 4, 4096).unwrap();
    first.put(5).unwrap();
    match shm_error(Queue::<u32>::create(&name.0, 4, 4096).unwrap_err()) {
        ShmError::AlreadyExists { .. } => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // The failed create left the first queue alone.
    assert_eq!(first.get().unwrap(), 5);
    let again: Queue<u32> = Queue::open(&name.0).unwrap();
    assert_eq!(again.maxsize(), 4);
}

#[test]
fn invalid_names_are_refused() {
    let long = "n".repeat(201);
    for bad in [
        "",
        "/",
        "a/b",
        ".",
        "..",
        "has space",
        "tab\t",
        "nul\0",
        "ünï",
        long.as_str(),
    ] {
        for (what, r) in [
            ("create", Queue::<u32>::create(bad, 0, 4096).map(drop)),
            ("open", Queue::<u32>::open(bad).map(drop)),
            ("unlink", Queue::<u32>::unlink(bad)),
        ] {
            match r {
                Err(QueueError::Shm(ShmError::InvalidName { .. })) => {}
                other => panic!("{what}({bad:?}): expected InvalidName, got {other:?}"),
            }
        }
    }
    // The longest accepted name works.
    let mut name = NameGuard::new();
    name.0 += &"n".repeat(200 - name.0.len());
    let q: Queue<u32> = Queue::create(&name.0, 0, 4096).unwrap();
    Queue::<u32>::open(&name.0).unwrap();
    drop(q);
}

#[test]
fn sizes_out_of_range_are_invalid_size() {
    let expect_invalid = |r: Result<Queue<u32>, QueueError>, what: &str| match r {
        Err(QueueError::Shm(ShmError::InvalidSize { .. })) => {}
        other => panic!("{what}: expected InvalidSize, got {other:?}"),
    };
    expect_invalid(Queue::new(0, 0), "capacity 0");
    expect_invalid(Queue::new(0, 63), "capacity 63");
    expect_invalid(Queue::new(0, (1 << 30) + 1), "capacity 1 GiB + 1");
    expect_invalid(Queue::new(0, usize::MAX), "capacity usize::MAX");
    expect_invalid(Queue::new(MAX_MAXSIZE + 1, 4096), "maxsize MAX_MAXSIZE + 1");
    expect_invalid(Queue::new(usize::MAX, 4096), "maxsize usize::MAX");
    expect_invalid(
        QueueOptions::new().capacity(10).anonymous(),
        "options capacity 10",
    );
    // A named create with a bad size leaves no name behind.
    let name = NameGuard::new();
    expect_invalid(Queue::create(&name.0, 0, 32), "named capacity 32");
    expect_invalid(
        Queue::create(&name.0, MAX_MAXSIZE + 1, 4096),
        "named maxsize",
    );
    assert!(matches!(
        shm_error(Queue::<u32>::open(&name.0).unwrap_err()),
        ShmError::NotFound { .. }
    ));

    // The limits themselves are accepted.
    let q: Queue<u32> = Queue::new(MAX_MAXSIZE, 64).unwrap();
    assert_eq!(q.maxsize(), MAX_MAXSIZE);
    assert_eq!(q.capacity_bytes(), 64);
    q.put(1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
}

#[test]
fn creator_drop_unlinks_the_name() {
    let name = NameGuard::new();
    let q: Queue<u32> = Queue::create(&name.0, 0, 4096).unwrap();
    let opener: Queue<u32> = Queue::open(&name.0).unwrap();
    drop(opener); // an opener's drop leaves the name
    Queue::<u32>::open(&name.0).unwrap();
    drop(q);
    match shm_error(Queue::<u32>::open(&name.0).unwrap_err()) {
        ShmError::NotFound { .. } => {}
        other => panic!("expected NotFound after the creator dropped, got {other:?}"),
    }
    // The name is free again.
    let _again: Queue<u32> = Queue::create(&name.0, 0, 4096).unwrap();
}

#[test]
fn persist_keeps_the_name_until_unlinked() {
    let name = NameGuard::new();
    let q: Queue<String> = Queue::create(&name.0, 3, 4096).unwrap();
    q.put("kept".to_owned()).unwrap();
    q.persist();
    drop(q);
    let reopened: Queue<String> = Queue::open(&name.0).unwrap();
    assert_eq!(reopened.maxsize(), 3);
    assert_eq!(reopened.qsize(), 1);
    assert_eq!(reopened.get().unwrap(), "kept");
    Queue::<String>::unlink(&name.0).unwrap();
    match shm_error(Queue::<String>::open(&name.0).unwrap_err()) {
        ShmError::NotFound { .. } => {}
        other => panic!("expected NotFound after unlink, got {other:?}"),
    }
    // A handle that was open keeps working after the unlink.
    reopened.put("still here".to_owned()).unwrap();
    assert_eq!(reopened.get().unwrap(), "still here");
}

#[test]
fn a_queue_opened_by_name_sees_the_creators_items() {
    let name = NameGuard::new();
    let creator: Queue<String> = QueueOptions::new()
        .maxsize(5)
        .capacity(8192)
        .create(&name.0)
        .unwrap();
    creator.put("one".to_owned()).unwrap();
    let opener: Queue<String> = Queue::open(&name.0).unwrap();
    assert_eq!(opener.maxsize(), 5);
    assert_eq!(opener.capacity_bytes(), 8192);
    assert_eq!(opener.qsize(), 1);
    creator
        .put_many(vec!["two".to_owned(), "three".to_owned()])
        .unwrap();
    assert_eq!(opener.qsize(), 3);
    assert_eq!(opener.get().unwrap(), "one");
    assert_eq!(creator.qsize(), 2);
    opener.put("four".to_owned()).unwrap();
    assert_eq!(creator.get_many(10).unwrap(), ["two", "three", "four"]);
    assert!(opener.empty());
    // Both handles see the same item limit.
    creator
        .put_many(vec![
            "a".into(),
            "b".into(),
            "c".into(),
            "d".into(),
            "e".into(),
        ])
        .unwrap();
    assert!(opener.full());
    assert!(opener.put_nowait("f".to_owned()).unwrap_err().is_full());
    // Close through one handle is seen by the other.
    opener.close().unwrap();
    assert!(creator.is_closed());
    assert!(matches!(
        creator.put("late".to_owned()),
        Err(PutError::Closed(_))
    ));
    assert_eq!(creator.get_many(10).unwrap().len(), 5);
    assert_get_closed(opener.get());
    assert_eq!(opener.region().name(), Some(name.0.as_str()));
}

#[test]
fn a_getter_on_an_opened_handle_is_woken_by_the_creators_put() {
    let name = NameGuard::new();
    let creator: Queue<u64> = Queue::create(&name.0, 0, 4096).unwrap();
    let opener: Queue<u64> = Queue::open(&name.0).unwrap();
    thread::scope(|s| {
        let _unwind = close_on_unwind(&opener);
        let getter = s.spawn(|| opener.get());
        thread::sleep(Duration::from_millis(100));
        assert!(!getter.is_finished());
        creator.put(99).unwrap();
        assert_eq!(getter.join().unwrap().unwrap(), 99);
    });
}

// --- shutdown (Python 3.13's Queue.shutdown) ---

#[test]
fn shutdown_graceful_refuses_puts_and_drains_gets() {
    let q: Queue<String> = Queue::new(0, 4096).unwrap();
    q.put("pork".into()).unwrap();
    q.put("cabbage".into()).unwrap();
    q.shutdown(false).unwrap();
    assert!(matches!(q.put("late".into()), Err(PutError::Closed(s)) if s == "late"));
    assert_eq!(q.get().unwrap(), "pork");
    assert_eq!(q.get_nowait().unwrap(), "cabbage");
    assert_get_closed(q.get());
    assert_get_closed(q.get_timeout(Duration::from_secs(5)));
}

#[test]
fn shutdown_immediate_discards_and_joinable_counts_them_done() {
    let q: JoinableQueue<Pod<u32>> = JoinableQueue::new(0, 4096).unwrap();
    for i in 0..5 {
        q.put(Pod(i)).unwrap();
    }
    // One item handed out before the shutdown: it still counts until its task_done.
    assert_eq!(q.get().unwrap(), Pod(0));
    assert_eq!(q.unfinished_tasks(), 5);
    q.shutdown(true).unwrap();
    assert_eq!(q.qsize(), 0, "the four left were thrown away");
    assert!(q.empty());
    assert_get_closed(q.get());
    assert!(matches!(q.put(Pod(9)), Err(PutError::Closed(Pod(9)))));
    assert_eq!(q.unfinished_tasks(), 1, "discarded items count as done");
    let (r, elapsed) = timed(|| q.join_timeout(Duration::from_millis(100)));
    assert!(matches!(r, Err(QueueError::JoinTimeout { .. })), "{r:?}");
    assert!(elapsed >= Duration::from_millis(100));
    q.task_done().unwrap();
    q.join_timeout(Duration::from_secs(1)).unwrap();
    assert!(matches!(
        q.task_done(),
        Err(QueueError::TaskDoneTooManyTimes)
    ));
    // Twice is harmless.
    q.shutdown(true).unwrap();
    assert_eq!(q.unfinished_tasks(), 0);
}

#[test]
fn shutdown_immediate_wakes_blocked_getters_and_putters() {
    let empty: Queue<Pod<u32>> = Queue::new(0, 4096).unwrap();
    let full: Queue<Pod<u32>> = Queue::new(1, 4096).unwrap();
    full.put(Pod(1)).unwrap();
    thread::scope(|s| {
        let _a = close_on_unwind(&empty);
        let _b = close_on_unwind(&full);
        let getter = s.spawn(|| timed(|| empty.get()));
        let putter = s.spawn(|| timed(|| full.put(Pod(2))));
        thread::sleep(Duration::from_millis(100));
        empty.shutdown(true).unwrap();
        full.shutdown(true).unwrap();
        let (r, _) = getter.join().unwrap();
        assert_get_closed(r);
        let (r, _) = putter.join().unwrap();
        assert!(matches!(r, Err(PutError::Closed(Pod(2)))), "{r:?}");
    });
    assert_eq!(full.qsize(), 0);
}

// --- endpoints: a blocked call learns that the other side is gone ---

#[test]
fn get_is_disconnected_once_every_registered_producer_left() {
    let q: Queue<String> = Queue::new(0, 4096).unwrap();
    assert_eq!(q.endpoints(), Endpoints::default());
    let a = q.register_producer().unwrap();
    let b = q.register_producer().unwrap();
    assert_eq!(q.endpoints().producers, 2);
    q.put("pork".into()).unwrap();
    drop(a);
    assert_eq!(q.endpoints().producers, 1);
    assert_eq!(q.get().unwrap(), "pork");
    // One producer is left: a get waits for it.
    let (r, elapsed) = timed(|| q.get_timeout(Duration::from_millis(200)));
    assert_get_empty(r);
    assert_waited(
        elapsed,
        Duration::from_millis(200),
        "get with a live producer",
    );
    thread::scope(|s| {
        let _unwind = close_on_unwind(&q);
        let getter = s.spawn(|| timed(|| q.get()));
        thread::sleep(Duration::from_millis(100));
        drop(b); // the last producer leaves: the blocked get wakes with Disconnected
        let (r, elapsed) = getter.join().unwrap();
        assert!(matches!(r, Err(GetError::Disconnected)), "{r:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    });
    // _nowait keeps Python's answer, and a new producer reconnects.
    assert_get_empty(q.get_nowait());
    let c = q.register_producer().unwrap();
    q.put("cabbage".into()).unwrap();
    assert_eq!(q.get().unwrap(), "cabbage");
    drop(c);
    assert!(matches!(q.get(), Err(GetError::Disconnected)));
    assert!(matches!(q.get_many(4), Err(GetError::Disconnected)));
}

#[test]
fn put_is_disconnected_once_every_registered_consumer_left() {
    let q: Queue<String> = Queue::new(1, 4096).unwrap();
    let consumer = q.register_consumer().unwrap();
    q.put("pork".into()).unwrap();
    let (r, _) = timed(|| q.put_timeout("cabbage".into(), Duration::from_millis(100)));
    assert!(matches!(r, Err(PutError::Full(_))), "{r:?}");
    drop(consumer);
    match q.put("red bean".into()) {
        Err(PutError::Disconnected(item)) => assert_eq!(item, "red bean"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert_eq!(q.endpoints(), Endpoints::default());
}

#[test]
fn a_queue_nobody_registers_with_keeps_pythons_wait() {
    let q: Queue<String> = Queue::new(0, 4096).unwrap();
    let (r, elapsed) = timed(|| q.get_timeout(Duration::from_millis(150)));
    assert_get_empty(r);
    assert_waited(elapsed, Duration::from_millis(150), "unregistered get");
}

#[test]
fn get_bytes_with_hands_over_each_message_once_in_order_and_waits_like_get() {
    let q: Queue<Vec<u8>> = Queue::new(4, 4096).unwrap();
    for m in [&b"pork"[..], b"cabbage", b""] {
        q.put_bytes(m, None).unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let n = q.get_bytes_with(None, |b| {
            seen.push(b.to_vec());
            b.len()
        });
        assert_eq!(n.unwrap(), seen.last().unwrap().len());
    }
    assert_eq!(seen, [b"pork".to_vec(), b"cabbage".to_vec(), Vec::new()]);
    assert!(q.empty());
    // Empty: f never runs, the timeout is kept.
    let (r, elapsed) = timed(|| q.get_bytes_with(Some(Duration::from_millis(30)), |_| panic!()));
    assert_get_empty(r);
    assert_waited(elapsed, Duration::from_millis(30), "get_bytes_with");
    q.close().unwrap();
    assert!(matches!(
        q.get_bytes_with(None, |_| ()),
        Err(GetError::Closed)
    ));
}

#[test]
fn the_iterator_takes_items_until_the_queue_is_closed() {
    let q: Queue<u32> = Queue::new(8, 4096).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..100 {
                q.put(i).unwrap();
            }
            q.close().unwrap();
        });
        let mut n = 0;
        for (i, item) in (&q).into_iter().enumerate() {
            assert_eq!(item, i as u32);
            n += 1;
        }
        assert_eq!(n, 100);
    });
    let mut it = q.iter();
    assert!(it.next().is_none());
    assert!(it.take_error().is_none(), "closed is not an error");
}
