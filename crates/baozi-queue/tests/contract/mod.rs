//! The Queue contract suite, generic over the backend: one list of cases, run against the
//! shared-memory queue (tests/contract_shm.rs here) and the Redis queue
//! (crates/baozi-redis/tests/redis.rs), each through its own [`Backend`].
//!
//! Cases are plain functions, so a `harness = false` binary can run them one by one (the Redis
//! binary forks for its kill -9 test and must stay single-threaded between cases).

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use baozi_queue::{GetError, JoinableContract, Message, PutError, QueueContract, QueueError};

/// Makes fresh, empty queues of one backend.
pub trait Backend {
    /// The backend's queue.
    type Q<T: Message + Send + 'static>: QueueContract<T> + 'static;
    /// The backend's joinable queue.
    type J<T: Message + Send + 'static>: JoinableContract<T> + 'static;
    /// A new queue with an item limit (0: none).
    fn queue<T: Message + Send + 'static>(&self, maxsize: usize) -> Self::Q<T>;
    /// A new joinable queue.
    fn joinable<T: Message + Send + 'static>(&self, maxsize: usize) -> Self::J<T>;
}

/// One case: its name and its body.
pub struct Case<B: ?Sized> {
    pub name: &'static str,
    pub run: fn(&B),
}

macro_rules! cases {
    ($($f:ident),* $(,)?) => {
        /// Every case of the suite, for backend `B`.
        pub fn cases<B: Backend>() -> Vec<Case<B>> {
            vec![$(Case { name: stringify!($f), run: $f::<B> }),*]
        }
    };
}

cases!(
    put_get_is_fifo,
    qsize_is_exact_after_every_call,
    get_nowait_on_empty_is_empty,
    get_timeout_waits_then_is_empty,
    put_nowait_on_full_gives_the_same_item_back,
    put_timeout_on_full_waits_then_gives_the_item_back,
    maxsize_bounds_items_and_full_says_so,
    put_many_is_all_or_nothing,
    put_many_over_maxsize_is_too_many_at_once,
    get_many_returns_one_to_max_in_fifo_order,
    blocked_get_many_is_released_by_a_put_many,
    put_after_close_is_closed_and_gives_the_item_back,
    getters_drain_a_closed_queue_then_see_closed,
    close_wakes_a_blocked_getter,
    close_wakes_a_blocked_putter,
    blocked_put_is_released_by_a_get,
    blocked_get_is_released_by_a_put,
    fifo_between_two_threads,
    clones_are_handles_to_the_same_queue,
    strings_and_numbers_round_trip,
    joinable_counts_unfinished_tasks,
    task_done_too_many_times_is_an_error,
    join_is_released_by_task_done_in_another_thread,
    join_timeout_reports_the_unfinished,
    joinable_task_done_with_worker_threads,
    two_producers_keep_their_order,
    concurrent_getters_never_share_an_item,
    empty_batches_and_zero_max_are_no_ops,
    join_with_nothing_put_returns_at_once,
);

fn assert_waited(elapsed: Duration, timeout: Duration, what: &str) {
    assert!(
        elapsed >= timeout,
        "{what} returned after {elapsed:?}, before its {timeout:?}"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(2),
        "{what} returned after {elapsed:?}, far past its {timeout:?}"
    );
}

fn put_get_is_fifo<B: Backend>(b: &B) {
    let q = b.queue::<u64>(0);
    for i in 0..100 {
        q.put(i).unwrap();
    }
    for i in 0..100 {
        assert_eq!(q.get().unwrap(), i);
    }
}

fn qsize_is_exact_after_every_call<B: Backend>(b: &B) {
    let q = b.queue::<u64>(0);
    assert_eq!(q.qsize().unwrap(), 0);
    assert!(q.empty().unwrap());
    for i in 0..10 {
        q.put(i).unwrap();
        assert_eq!(q.qsize().unwrap(), i as usize + 1);
    }
    q.put_many(vec![1, 2, 3]).unwrap();
    assert_eq!(q.qsize().unwrap(), 13);
    q.get_many(5).unwrap();
    assert_eq!(q.qsize().unwrap(), 8);
    for i in (0..8).rev() {
        q.get().unwrap();
        assert_eq!(q.qsize().unwrap(), i);
    }
    assert!(q.empty().unwrap());
}

fn get_nowait_on_empty_is_empty<B: Backend>(b: &B) {
    let q = b.queue::<u64>(0);
    assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
    assert!(matches!(q.get_many_nowait(5), Err(GetError::Empty)));
    q.put(1).unwrap();
    assert_eq!(q.get_nowait().unwrap(), 1);
    assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
}

fn get_timeout_waits_then_is_empty<B: Backend>(b: &B) {
    let q = b.queue::<u64>(0);
    let t = Duration::from_millis(300);
    let start = Instant::now();
    assert!(matches!(q.get_timeout(t), Err(GetError::Empty)));
    assert_waited(start.elapsed(), t, "get_timeout");
    let start = Instant::now();
    assert!(matches!(q.get_many_timeout(4, t), Err(GetError::Empty)));
    assert_waited(start.elapsed(), t, "get_many_timeout");
}

fn put_nowait_on_full_gives_the_same_item_back<B: Backend>(b: &B) {
    let q = b.queue::<String>(2);
    q.put("a".into()).unwrap();
    q.put("b".into()).unwrap();
    match q.put_nowait("c".into()) {
        Err(PutError::Full(item)) => assert_eq!(item, "c"),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(q.qsize().unwrap(), 2);
    assert_eq!(q.get().unwrap(), "a");
    q.put_nowait("c".into()).unwrap();
}

fn put_timeout_on_full_waits_then_gives_the_item_back<B: Backend>(b: &B) {
    let q = b.queue::<u64>(1);
    q.put(1).unwrap();
    let t = Duration::from_millis(300);
    let start = Instant::now();
    match q.put_timeout(2, t) {
        Err(PutError::Full(2)) => {}
        other => panic!("expected Full(2), got {other:?}"),
    }
    assert_waited(start.elapsed(), t, "put_timeout");
    let start = Instant::now();
    match q.put_many_timeout(vec![3], t) {
        Err(PutError::Full(v)) => assert_eq!(v, [3]),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_waited(start.elapsed(), t, "put_many_timeout");
    assert_eq!(q.qsize().unwrap(), 1);
}

fn maxsize_bounds_items_and_full_says_so<B: Backend>(b: &B) {
    let q = b.queue::<u64>(5);
    assert_eq!(q.maxsize(), 5);
    for i in 0..5 {
        assert!(!q.full().unwrap());
        q.put_nowait(i).unwrap();
    }
    assert!(q.full().unwrap());
    assert!(q.put_nowait(9).unwrap_err().is_full());
    q.get().unwrap();
    assert!(!q.full().unwrap());
    q.put_nowait(9).unwrap();
}

fn put_many_is_all_or_nothing<B: Backend>(b: &B) {
    let q = b.queue::<u64>(4);
    q.put_many(vec![1, 2]).unwrap();
    match q.put_many_nowait(vec![3, 4, 5]) {
        Err(PutError::Full(v)) => assert_eq!(v, [3, 4, 5]),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(q.qsize().unwrap(), 2);
    q.put_many_nowait(vec![3, 4]).unwrap();
    assert_eq!(q.get_many(10).unwrap(), [1, 2, 3, 4]);
}

fn put_many_over_maxsize_is_too_many_at_once<B: Backend>(b: &B) {
    let q = b.queue::<u64>(3);
    let start = Instant::now();
    match q.put_many(vec![1, 2, 3, 4]) {
        Err(PutError::TooMany {
            item,
            items: 4,
            maxsize: 3,
        }) => assert_eq!(item, [1, 2, 3, 4]),
        other => panic!("expected TooMany, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "TooMany must not wait"
    );
    assert!(q.empty().unwrap());
}

fn get_many_returns_one_to_max_in_fifo_order<B: Backend>(b: &B) {
    let q = b.queue::<u64>(0);
    q.put_many((0..10).collect()).unwrap();
    assert_eq!(q.get_many(3).unwrap(), [0, 1, 2]);
    assert_eq!(q.get_many(100).unwrap(), (3..10).collect::<Vec<_>>());
    q.put(42).unwrap();
    assert_eq!(q.get_many(5).unwrap(), [42]);
}

fn blocked_get_many_is_released_by_a_put_many<B: Backend>(b: &B) {
    let q = b.queue::<u64>(0);
    let p = q.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        p.put_many(vec![7, 8]).unwrap();
    });
    let got = q.get_many_timeout(10, Duration::from_secs(10)).unwrap();
    assert!(got == [7, 8] || got == [7], "{got:?}");
    t.join().unwrap();
}

fn put_after_close_is_closed_and_gives_the_item_back<B: Backend>(b: &B) {
    let q = b.queue::<String>(0);
    q.close().unwrap();
    q.close().unwrap();
    match q.put("late".into()) {
        Err(PutError::Closed(item)) => assert_eq!(item, "late"),
        other => panic!("expected Closed, got {other:?}"),
    }
    match q.put_many(vec!["x".into()]) {
        Err(PutError::Closed(v)) => assert_eq!(v, ["x"]),
        other => panic!("expected Closed, got {other:?}"),
    }
}

fn getters_drain_a_closed_queue_then_see_closed<B: Backend>(b: &B) {
    let q = b.queue::<u64>(0);
    q.put_many(vec![1, 2, 3]).unwrap();
    q.close().unwrap();
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get_many(10).unwrap(), [2, 3]);
    assert!(matches!(q.get(), Err(GetError::Closed)));
    assert!(matches!(q.get_nowait(), Err(GetError::Closed)));
    assert!(matches!(
        q.get_timeout(Duration::from_millis(50)),
        Err(GetError::Closed)
    ));
}

fn close_wakes_a_blocked_getter<B: Backend>(b: &B) {
    let q = b.queue::<u64>(0);
    let getters: Vec<_> = (0..2)
        .map(|_| {
            let g = q.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let r = g.get();
                (r.map_err(|e| e.to_string()), start.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    q.close().unwrap();
    for g in getters {
        let (r, took) = g.join().unwrap();
        assert_eq!(r, Err(GetError::Closed.to_string()));
        assert!(took < Duration::from_secs(5), "woke after {took:?}");
    }
}

fn close_wakes_a_blocked_putter<B: Backend>(b: &B) {
    let q = b.queue::<u64>(1);
    q.put(1).unwrap();
    let p = q.clone();
    let t = std::thread::spawn(move || p.put(2));
    std::thread::sleep(Duration::from_millis(200));
    q.close().unwrap();
    match t.join().unwrap() {
        Err(PutError::Closed(2)) => {}
        other => panic!("expected Closed(2), got {other:?}"),
    }
}

fn blocked_put_is_released_by_a_get<B: Backend>(b: &B) {
    let q = b.queue::<u64>(1);
    q.put(1).unwrap();
    let p = q.clone();
    let t = std::thread::spawn(move || p.put_timeout(2, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(q.get().unwrap(), 1);
    t.join().unwrap().unwrap();
    assert_eq!(q.get().unwrap(), 2);
}

fn blocked_get_is_released_by_a_put<B: Backend>(b: &B) {
    let q = b.queue::<u64>(0);
    let g = q.clone();
    let t = std::thread::spawn(move || g.get_timeout(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(200));
    q.put(5).unwrap();
    assert_eq!(t.join().unwrap().unwrap(), 5);
}

fn fifo_between_two_threads<B: Backend>(b: &B) {
    let q = b.queue::<u64>(8);
    let p = q.clone();
    let n = 2000u64;
    let t = std::thread::spawn(move || {
        for i in 0..n {
            if i % 3 == 0 {
                p.put_many(vec![i]).unwrap();
            } else {
                p.put(i).unwrap();
            }
        }
    });
    let mut next = 0;
    while next < n {
        for v in q.get_many(5).unwrap() {
            assert_eq!(v, next);
            next += 1;
        }
    }
    t.join().unwrap();
}

fn clones_are_handles_to_the_same_queue<B: Backend>(b: &B) {
    let q = b.queue::<u64>(0);
    let c = q.clone();
    c.put(9).unwrap();
    assert_eq!(q.qsize().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 9);
    c.close().unwrap();
    assert!(matches!(q.get_nowait(), Err(GetError::Closed)));
}

fn strings_and_numbers_round_trip<B: Backend>(b: &B) {
    let s = b.queue::<String>(0);
    for v in ["", "包子", "pork and cabbage"] {
        s.put(v.to_owned()).unwrap();
        assert_eq!(s.get().unwrap(), v);
    }
    let f = b.queue::<f64>(0);
    f.put(-1.5).unwrap();
    assert_eq!(f.get().unwrap(), -1.5);
    let bytes = b.queue::<Vec<u8>>(0);
    let big = (0..100_000u32).map(|i| i as u8).collect::<Vec<u8>>();
    bytes.put(big.clone()).unwrap();
    bytes.put(Vec::new()).unwrap();
    assert_eq!(bytes.get().unwrap(), big);
    assert_eq!(bytes.get().unwrap(), Vec::<u8>::new());
}

fn joinable_counts_unfinished_tasks<B: Backend>(b: &B) {
    let q = b.joinable::<u64>(0);
    assert_eq!(q.unfinished_tasks().unwrap(), 0);
    q.put_many(vec![1, 2, 3]).unwrap();
    assert_eq!(q.unfinished_tasks().unwrap(), 3);
    q.get().unwrap();
    assert_eq!(q.unfinished_tasks().unwrap(), 3, "a get is not a task_done");
    q.task_done().unwrap();
    assert_eq!(q.unfinished_tasks().unwrap(), 2);
    q.get_many(2).unwrap();
    q.task_done().unwrap();
    q.task_done().unwrap();
    assert_eq!(q.unfinished_tasks().unwrap(), 0);
    q.join().unwrap();
}

fn task_done_too_many_times_is_an_error<B: Backend>(b: &B) {
    let q = b.joinable::<u64>(0);
    assert!(matches!(
        q.task_done(),
        Err(QueueError::TaskDoneTooManyTimes)
    ));
    q.put(1).unwrap();
    q.get().unwrap();
    q.task_done().unwrap();
    assert!(matches!(
        q.task_done(),
        Err(QueueError::TaskDoneTooManyTimes)
    ));
    assert_eq!(q.unfinished_tasks().unwrap(), 0);
}

fn join_is_released_by_task_done_in_another_thread<B: Backend>(b: &B) {
    let q = b.joinable::<u64>(0);
    q.put(1).unwrap();
    let w = q.clone();
    let t = std::thread::spawn(move || {
        let v = w.get().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        w.task_done().unwrap();
        v
    });
    let start = Instant::now();
    q.join_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(150),
        "join returned before task_done"
    );
    assert_eq!(t.join().unwrap(), 1);
}

fn join_timeout_reports_the_unfinished<B: Backend>(b: &B) {
    let q = b.joinable::<u64>(0);
    q.put_many(vec![1, 2]).unwrap();
    let t = Duration::from_millis(300);
    let start = Instant::now();
    match q.join_timeout(t) {
        Err(QueueError::JoinTimeout { unfinished: 2 }) => {}
        other => panic!("expected JoinTimeout(2), got {other:?}"),
    }
    assert_waited(start.elapsed(), t, "join_timeout");
}

fn joinable_task_done_with_worker_threads<B: Backend>(b: &B) {
    let q = b.joinable::<u64>(16);
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let w = q.clone();
            std::thread::spawn(move || {
                let mut sum = 0;
                loop {
                    match w.get() {
                        Ok(v) => {
                            sum += v;
                            w.task_done().unwrap();
                        }
                        Err(GetError::Closed) => return sum,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for i in 1..=300 {
        q.put(i).unwrap();
    }
    q.join_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(q.unfinished_tasks().unwrap(), 0);
    q.close().unwrap();
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, 300 * 301 / 2);
}

fn two_producers_keep_their_order<B: Backend>(b: &B) {
    let q = b.queue::<u64>(4);
    let n = 500u64;
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while i < n {
                    if i % 5 == 0 && i + 2 <= n {
                        q.put_many(vec![p << 32 | i, p << 32 | (i + 1)]).unwrap();
                        i += 2;
                    } else {
                        q.put(p << 32 | i).unwrap();
                        i += 1;
                    }
                }
            })
        })
        .collect();
    let mut next = [0u64; 2];
    for _ in 0..2 * n {
        let v = q.get_timeout(Duration::from_secs(10)).unwrap();
        let (p, i) = ((v >> 32) as usize, v & 0xffff_ffff);
        assert_eq!(i, next[p], "producer {p}'s items out of order");
        next[p] += 1;
    }
    for t in producers {
        t.join().unwrap();
    }
    assert!(q.empty().unwrap());
}

fn concurrent_getters_never_share_an_item<B: Backend>(b: &B) {
    let q = b.queue::<u64>(0);
    let n = 600u64;
    q.put_many((0..n).collect()).unwrap();
    q.close().unwrap();
    let getters: Vec<_> = (0..3)
        .map(|g| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let r = if g == 0 {
                        q.get().map(|v| vec![v])
                    } else {
                        q.get_many(7)
                    };
                    match r {
                        Ok(v) => got.extend(v),
                        Err(GetError::Closed) => return got,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let mut all: Vec<u64> = getters
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..n).collect::<Vec<_>>(),
        "an item lost or handed out twice"
    );
}

fn empty_batches_and_zero_max_are_no_ops<B: Backend>(b: &B) {
    let q = b.queue::<u64>(1);
    q.put_many(Vec::new()).unwrap();
    q.put_many_nowait(Vec::new()).unwrap();
    assert!(q.empty().unwrap());
    q.put(1).unwrap();
    assert!(q.get_many(0).unwrap().is_empty());
    q.put_many(Vec::new()).unwrap();
    assert_eq!(q.qsize().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 1);
}

fn join_with_nothing_put_returns_at_once<B: Backend>(b: &B) {
    let q = b.joinable::<u64>(0);
    let start = Instant::now();
    q.join().unwrap();
    q.join_timeout(Duration::from_millis(1)).unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// Runs `cases` one by one on `backend`, printing libtest-like lines and the closing
/// `N passed, N failed` line; returns the number failed. `BAOZI_TEST_FILTER` keeps the cases
/// whose name contains it.
pub fn run<B: ?Sized>(label: &str, backend: &B, cases: Vec<Case<B>>) -> usize {
    let filter = std::env::var("BAOZI_TEST_FILTER").unwrap_or_default();
    let mut failed = Vec::new();
    let mut passed = 0;
    for c in cases.into_iter().filter(|c| c.name.contains(&filter)) {
        let start = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (c.run)(backend)));
        let took = start.elapsed();
        match r {
            Ok(()) => {
                passed += 1;
                println!("test {label}::{} ... ok ({took:.2?})", c.name);
            }
            Err(_) => {
                println!("test {label}::{} ... FAILED ({took:.2?})", c.name);
                failed.push(c.name);
            }
        }
    }
    println!("{label}: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
    }
    failed.len()
}
