//! Pool tests across real worker processes, one forked case at a time under a watchdog
//! (`harness = false`). Each case must leave no child behind: no worker, spawner or zombie.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use baozi_process::{Pool, ProcessError};
use baozi_shm::{Offset, Region};

mod common;
use common::{children, e, run_cases, running, sleep_ms, Case};

// ---- task functions (plain fns: they cross the fork by address) -----------------------------

fn square(x: u64) -> u64 {
    x * x
}

fn add(a: i32, b: i32) -> i32 {
    a + b
}

fn shout(s: String) -> String {
    s.to_uppercase()
}

fn pid_of_worker(_: u32) -> i32 {
    std::process::id() as i32
}

fn sleep_then_pid(ms: u64) -> i32 {
    sleep_ms(ms);
    std::process::id() as i32
}

fn sleep_then_double(ms: u64) -> u64 {
    sleep_ms(ms % 1000);
    ms * 2
}

fn double_slowly(x: u64) -> u64 {
    sleep_ms(2);
    x * 2
}

fn panics_on_odd(x: u32) -> u32 {
    if x % 2 == 1 {
        panic!("odd dough: {x}");
    }
    x
}

/// Dies in the way named: the worker never returns from this.
fn die(how: String) -> u32 {
    match how.as_str() {
        // SAFETY: raising a signal on this process; default actions end it.
        "kill" => unsafe {
            libc::raise(libc::SIGKILL);
        },
        "abort" => std::process::abort(),
        // SAFETY: as above. std's own SIGSEGV handler (stack overflow detection) would return
        // from a raised, not faulted, SIGSEGV, so the default action is put back first.
        "segv" => unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
        },
        "exit" => std::process::exit(3),
        _ => {}
    }
    0
}

fn big_result(n: usize) -> Vec<u8> {
    vec![7; n]
}

fn len_of(v: Vec<u8>) -> usize {
    v.len()
}

/// The parent of `pid`, from /proc.
fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn kill9(pid: i32) {
    // SAFETY: a signal to a pid; touches no memory.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Waits up to `limit` for `cond`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        sleep_ms(5);
    }
    cond()
}

/// The pool's workers, once all `n` are up.
fn workers(pool: &Pool, n: usize) -> Result<Vec<i32>, String> {
    let ok = eventually(Duration::from_secs(10), || pool.worker_pids().len() == n);
    check!(ok, "only {:?} of {n} workers came up", pool.worker_pids());
    Ok(pool.worker_pids())
}

// ---- cases ---------------------------------------------------------------------------------

fn apply_and_map_values() -> Result<(), String> {
    let pool = Pool::new(3).map_err(e)?;
    check!(pool.processes() == 3);
    check!(pool.apply(square, 12).map_err(e)? == 144);
    check!(pool.apply(shout, "pork".to_owned()).map_err(e)? == "PORK");
    let asyncs: Vec<_> = (0..50u64)
        .map(|i| pool.apply_async(square, i))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let got: Vec<u64> = asyncs
        .into_iter()
        .map(|r| r.get())
        .collect::<Result<_, _>>()
        .map_err(e)?;
    check!(got == (0..50u64).map(|i| i * i).collect::<Vec<_>>());
    let want: Vec<u64> = (0..1000u64).map(|i| i * i).collect();
    check!(pool.map(square, 0..1000u64).map_err(e)? == want);
    for size in [1, 7, 1000, 5000] {
        check!(
            pool.with_chunksize(size)
                .map(square, 0..1000u64)
                .map_err(e)?
                == want,
            "chunksize {size}"
        );
    }
    check!(pool.map(square, Vec::<u64>::new()).map_err(e)?.is_empty());
    check!(pool.starmap(add, [(1, 2), (3, 4), (-5, 5)]).map_err(e)? == [3, 7, 0]);
    check!(
        pool.with_chunksize(2)
            .starmap_async(add, (0..9).map(|i| (i, i)))
            .map_err(e)?
            .get()
            .map_err(e)?
            == (0..9).map(|i| 2 * i).collect::<Vec<_>>()
    );
    // The work was spread: more than one worker answered.
    let pids = pool
        .with_chunksize(1)
        .map(sleep_then_pid, [30u64; 12])
        .map_err(e)?;
    let distinct: std::collections::HashSet<_> = pids.iter().collect();
    check!(distinct.len() > 1, "one worker did everything: {pids:?}");
    Ok(())
}

/// One pool shared by several threads of the parent (made before the threads start).
fn threads_share_a_pool() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    let sums: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u64)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    let one: u64 = (0..50)
                        .map(|i| pool.apply(square, t * 100 + i).unwrap())
                        .sum();
                    let many: u64 = pool
                        .map(square, t * 100..t * 100 + 50)
                        .unwrap()
                        .iter()
                        .sum();
                    assert_eq!(one, many);
                    one
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, sum) in sums.iter().enumerate() {
        let want: u64 = (0..50u64).map(|i| (t as u64 * 100 + i).pow(2)).sum();
        check!(*sum == want, "thread {t}: {sum} != {want}");
    }
    Ok(())
}

fn async_result_methods() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    // The task sleeps 950 ms so that the bounds below keep wide slack on a loaded machine.
    let r = pool.apply_async(sleep_then_double, 950).map_err(e)?;
    check!(!r.ready());
    check!(r.successful().is_none());
    let t = Instant::now();
    check!(!r.wait_timeout(Duration::from_millis(50)));
    let waited = t.elapsed();
    check!(
        waited >= Duration::from_millis(50) && waited < Duration::from_millis(800),
        "{waited:?}"
    );
    let r = match r.get_timeout(Duration::from_millis(10)) {
        Ok(v) => return Err(format!("ready too early: {v:?}")),
        Err(r) => r,
    };
    r.wait();
    check!(r.ready());
    check!(r.successful() == Some(true));
    check!(r.get().map_err(e)? == 1900);
    let bad = pool.apply_async(panics_on_odd, 3).map_err(e)?;
    bad.wait();
    check!(bad.successful() == Some(false));
    // A dropped result does not disturb the pool.
    drop(pool.apply_async(sleep_then_double, 100).map_err(e)?);
    check!(pool.apply(square, 3).map_err(e)? == 9);
    Ok(())
}

/// `on_ready` callbacks get values and errors alike, once each, and a panicking callback does
/// not disturb the pool.
fn callbacks_get_every_outcome() -> Result<(), String> {
    use std::sync::mpsc;
    let pool = Pool::new(2).map_err(e)?;
    let (tx, rx) = mpsc::channel::<Result<u32, String>>();
    for x in 0..10u32 {
        let tx = tx.clone();
        pool.apply_async(panics_on_odd, x)
            .map_err(e)?
            .on_ready(move |r| tx.send(r.map_err(|e| e.to_string())).unwrap());
    }
    let tx2 = tx.clone();
    pool.apply_async(die, "kill".to_owned())
        .map_err(e)?
        .on_ready(move |r| tx2.send(r.map_err(|e| e.to_string())).unwrap());
    // A panicking callback: printed and ignored.
    pool.apply_async(square, 3)
        .map_err(e)?
        .on_ready(|_| panic!("a clumsy callback"));
    let mut got: Vec<Result<u32, String>> = (0..11)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    got.sort();
    let oks: Vec<u32> = got
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    check!(oks == [0, 2, 4, 6, 8], "{got:?}");
    check!(
        got.iter()
            .filter(|r| matches!(r, Err(m) if m.contains("odd dough")))
            .count()
            == 5
    );
    check!(
        got.iter()
            .any(|r| matches!(r, Err(m) if m.contains("signal 9"))),
        "{got:?}"
    );
    // Already ready: runs at once on this thread. Terminated: the callback hears of it.
    let r = pool.apply_async(square, 4).map_err(e)?;
    r.wait();
    let here = std::thread::current().id();
    let (tx3, rx3) = mpsc::channel();
    r.on_ready(move |v| tx3.send((v.unwrap(), std::thread::current().id())).unwrap());
    check!(rx3.try_recv().map_err(e)? == (16, here));
    let (tx4, rx4) = mpsc::channel();
    pool.apply_async(sleep_then_double, 5000)
        .map_err(e)?
        .on_ready(move |r| {
            tx4.send(matches!(r, Err(ProcessError::PoolTerminated)))
                .unwrap()
        });
    pool.terminate();
    check!(rx4.recv_timeout(Duration::from_secs(5)).map_err(e)?);
    drop(tx);
    Ok(())
}

fn imap_orders() -> Result<(), String> {
    // The Python docs' demo, scaled: 3 workers sleep 600, 300 and 0 ms.
    let pool = Pool::new(3).map_err(e)?;
    workers(&pool, 3)?;
    let ordered: Vec<u64> = pool
        .imap(sleep_then_double, [600u64, 300, 0])
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    check!(ordered == [1200, 600, 0], "{ordered:?}");
    let unordered: Vec<u64> = pool
        .imap_unordered(sleep_then_double, [600u64, 300, 0])
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    check!(unordered == [0, 600, 1200], "{unordered:?}");
    let chunked: Vec<u64> = pool
        .with_chunksize(16)
        .imap(double_slowly, 0..100)
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    check!(chunked == (0..100).map(|x| x * 2).collect::<Vec<_>>());
    let mut it = pool.imap(sleep_then_double, [500u64]).map_err(e)?;
    check!(matches!(
        it.next_timeout(Duration::from_millis(20)),
        Some(Err(ProcessError::Timeout))
    ));
    check!(matches!(
        it.next_timeout(Duration::from_secs(10)),
        Some(Ok(1000))
    ));
    check!(it.next().is_none());
    Ok(())
}

/// A task queued behind a long one moves to a worker that has gone idle.
fn short_task_not_stuck_behind_long_one() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    workers(&pool, 2)?;
    let t = Instant::now();
    // Stuck behind the long task, the short ones would take at least 990 ms.
    let long = pool.apply_async(sleep_then_double, 990).map_err(e)?;
    let short: Vec<_> = (0..4)
        .map(|_| pool.apply_async(sleep_then_double, 10))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    for r in short {
        check!(r.get().map_err(e)? == 20);
    }
    let waited = t.elapsed();
    check!(
        waited < Duration::from_millis(900),
        "short tasks waited {waited:?} behind the long one"
    );
    check!(long.get().map_err(e)? == 1980);
    Ok(())
}

fn imap_reads_input_lazily() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    let read = Cell::new(0u64);
    let endless = (0u64..).inspect(|_| read.set(read.get() + 1));
    let mut it = pool.imap(double_slowly, endless).map_err(e)?;
    for i in 0..50u64 {
        check!(it.next().transpose().map_err(e)? == Some(i * 2));
    }
    sleep_ms(100);
    // Taking 50 results read at most 50 + the window (3 chunks per worker) items.
    check!(read.get() <= 50 + 6, "read {} items ahead", read.get());
    let mut un = pool.imap_unordered(double_slowly, 0u64..).map_err(e)?;
    let mut seen: Vec<u64> = (0..40).map(|_| un.next().unwrap().unwrap()).collect();
    seen.sort_unstable();
    seen.dedup();
    check!(seen.len() == 40 && seen.iter().all(|v| v % 2 == 0 && *v < 2 * 46));
    Ok(())
}

fn task_panic_keeps_worker() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    let before = workers(&pool, 2)?;
    match pool.apply(panics_on_odd, 7) {
        Err(ProcessError::TaskPanicked { message, .. }) => {
            check!(message == "odd dough: 7", "{message}")
        }
        other => return Err(format!("{other:?}")),
    }
    // map fails with the first failing chunk, once every chunk has run.
    check!(matches!(
        pool.map(panics_on_odd, 0..10),
        Err(ProcessError::TaskPanicked { .. })
    ));
    check!(pool.apply(panics_on_odd, 8).map_err(e)? == 8);
    let mut after = pool.worker_pids();
    after.sort_unstable();
    let mut before = before;
    before.sort_unstable();
    check!(
        before == after,
        "workers changed after panics: {before:?} -> {after:?}"
    );
    Ok(())
}

fn worker_deaths_fail_only_their_task() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    for (how, signal, status) in [
        ("kill", Some(9), None),
        ("abort", Some(6), None),
        ("segv", Some(11), None),
        ("exit", None, Some(3)),
    ] {
        let others: Vec<_> = (0..10u64)
            .map(|i| pool.apply_async(sleep_then_double, i * 3))
            .collect::<Result<_, _>>()
            .map_err(e)?;
        let t = Instant::now();
        match pool.apply(die, how.to_owned()) {
            Err(ProcessError::WorkerDied {
                pid,
                signal: s,
                exit_status: x,
            }) => {
                check!(
                    (s, x) == (signal, status),
                    "{how}: signal {s:?} status {x:?}"
                );
                check!(pid > 0 && !running(pid), "{how}: worker {pid} still runs");
            }
            other => return Err(format!("{how}: {other:?}")),
        }
        check!(
            t.elapsed() < Duration::from_secs(5),
            "{how}: took {:?}",
            t.elapsed()
        );
        for (i, r) in others.into_iter().enumerate() {
            check!(r.get().map_err(e)? == i as u64 * 6, "{how}: task {i}");
        }
        workers(&pool, 2)?;
    }
    check!(pool.map(square, 0..100u64).map_err(e)?.len() == 100);
    Ok(())
}

/// An idempotent pool runs the task of a worker killed mid-task again, on its replacement or
/// the other worker: every call gets its value.
fn idempotent_pool_reruns_a_dead_workers_task() -> Result<(), String> {
    let pool = Pool::builder()
        .processes(2)
        .idempotent(true)
        .build()
        .map_err(e)?;
    let victims = workers(&pool, 2)?;
    let calls: Vec<_> = (0..2)
        .map(|_| pool.apply_async(sleep_then_pid, 600))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    sleep_ms(150); // both workers are in their task
    kill9(victims[0]);
    for c in calls {
        let ran = c.get().map_err(e)?;
        check!(
            ran != victims[0],
            "a result came from the killed worker {ran}"
        );
    }
    check!(pool.map(square, 0..10u64).map_err(e)?.len() == 10);
    Ok(())
}

/// kill -9 of a worker from outside during map, imap and apply, in a loop.
fn kill9_workers_in_a_loop() -> Result<(), String> {
    let iters: u64 = std::env::var("BAOZI_POOL_KILL_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let pool = Pool::new(3).map_err(e)?;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let (mut kills, mut died, mut ok) = (0, 0, 0);
    for it in 0..iters {
        let pids = workers(&pool, 3)?;
        let victim = pids[rand(pids.len() as u64) as usize];
        match it % 3 {
            0 => {
                let r = pool
                    .with_chunksize(1)
                    .map_async(double_slowly, 0..60u64)
                    .map_err(e)?;
                sleep_ms(rand(40));
                kill9(victim);
                kills += 1;
                match r.get() {
                    Ok(v) => {
                        check!(v == (0..60).map(|x| x * 2).collect::<Vec<_>>());
                        ok += 1;
                    }
                    Err(ProcessError::WorkerDied { pid, signal, .. }) => {
                        check!(
                            pid == victim && signal == Some(9),
                            "died: {pid} {signal:?}, killed {victim}"
                        );
                        died += 1;
                    }
                    Err(other) => return Err(format!("map: {other}")),
                }
            }
            1 => {
                let mut errs = 0;
                let mut n = 0u64;
                for (i, r) in pool.imap(double_slowly, 0..60u64).map_err(e)?.enumerate() {
                    if i == 20 {
                        kill9(victim);
                        kills += 1;
                    }
                    match r {
                        Ok(v) => check!(v == i as u64 * 2, "imap item {i} is {v}"),
                        Err(ProcessError::WorkerDied { pid, .. }) => {
                            check!(pid == victim);
                            errs += 1;
                        }
                        Err(other) => return Err(format!("imap: {other}")),
                    }
                    n += 1;
                }
                // Every item is accounted for, in order, and at most the one the victim was
                // running failed.
                check!(n == 60 && errs <= 1, "imap: {n} items, {errs} errors");
                died += errs;
                ok += 1 - errs.min(1);
            }
            _ => {
                let r = pool.apply_async(sleep_then_pid, 200).map_err(e)?;
                sleep_ms(50);
                let running_on = pool.worker_pids();
                for p in &running_on {
                    kill9(*p);
                }
                kills += running_on.len();
                match r.get() {
                    Err(ProcessError::WorkerDied {
                        signal: Some(9), ..
                    }) => died += 1,
                    other => return Err(format!("apply on a killed worker: {other:?}")),
                }
            }
        }
    }
    check!(pool.map(square, 0..30u64).map_err(e)?.len() == 30);
    println!("    {iters} iterations: {kills} workers killed, {died} tasks failed with WorkerDied, {ok} calls unharmed");
    Ok(())
}

fn maxtasksperchild_replaces_workers() -> Result<(), String> {
    let pool = Pool::builder()
        .processes(2)
        .maxtasksperchild(3)
        .build()
        .map_err(e)?;
    let pids = pool
        .with_chunksize(1)
        .map(pid_of_worker, 0..30u32)
        .map_err(e)?;
    let mut count: HashMap<i32, usize> = HashMap::new();
    for p in pids {
        *count.entry(p).or_default() += 1;
    }
    check!(count.values().all(|&c| c <= 3), "{count:?}");
    check!(count.len() >= 10, "{count:?}");
    Ok(())
}

static FLOUR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn flour(_: u8) -> u64 {
    FLOUR.load(std::sync::atomic::Ordering::Relaxed)
}

fn initializer_runs_in_each_worker() -> Result<(), String> {
    let pool = Pool::builder()
        .processes(2)
        .initializer_fn(|| FLOUR.store(500, std::sync::atomic::Ordering::Relaxed))
        .build()
        .map_err(e)?;
    check!(pool.with_chunksize(1).map(flour, [0u8; 20]).map_err(e)? == [500; 20]);
    check!(
        FLOUR.load(std::sync::atomic::Ordering::Relaxed) == 0,
        "the parent ran the initializer"
    );
    // One pool at a time: a running pool's result thread makes a fork (BAOZI_START_METHOD=fork)
    // refuse the next one.
    drop(pool);
    let broken = Pool::builder()
        .processes(2)
        .initializer_fn(|| panic!("no yeast"))
        .build()
        .map_err(e)?;
    let t = Instant::now();
    match broken.apply(square, 2) {
        Err(ProcessError::PoolBroken { reason }) => check!(reason.contains("no yeast"), "{reason}"),
        other => return Err(format!("{other:?}")),
    }
    check!(t.elapsed() < Duration::from_secs(5));
    check!(matches!(
        broken.apply_async(square, 2),
        Err(ProcessError::PoolBroken { .. })
    ));
    drop(broken);
    // Workers that die before doing anything are not respawned for ever.
    let doomed = Pool::builder()
        .processes(2)
        .initializer_fn(|| std::process::exit(5))
        .build()
        .map_err(e)?;
    let t = Instant::now();
    match doomed.apply(square, 2) {
        Err(ProcessError::PoolBroken { reason }) => {
            check!(reason.contains("keep dying"), "{reason}")
        }
        other => return Err(format!("{other:?}")),
    }
    check!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    Ok(())
}

fn close_then_join_runs_everything() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    check!(matches!(pool.join(), Err(ProcessError::PoolRunning)));
    let rs: Vec<_> = (0..20u64)
        .map(|i| pool.apply_async(sleep_then_double, 10 + i))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    pool.close();
    check!(matches!(
        pool.apply_async(square, 1),
        Err(ProcessError::PoolClosed)
    ));
    check!(matches!(
        pool.imap(square, [1]),
        Err(ProcessError::PoolClosed)
    ));
    pool.join().map_err(e)?;
    check!(pool.worker_pids().is_empty());
    check!(children().is_empty(), "after join: {:?}", children());
    for (i, r) in rs.into_iter().enumerate() {
        check!(r.ready());
        check!(r.get().map_err(e)? == 2 * (10 + i as u64));
    }
    Ok(())
}

fn terminate_fails_pending_at_once() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    let rs: Vec<_> = (0..6)
        .map(|_| pool.apply_async(sleep_then_pid, 5000))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    workers(&pool, 2)?;
    sleep_ms(50);
    let t = Instant::now();
    pool.terminate();
    check!(
        t.elapsed() < Duration::from_secs(2),
        "terminate took {:?}",
        t.elapsed()
    );
    check!(children().is_empty(), "after terminate: {:?}", children());
    for r in rs {
        check!(matches!(r.get(), Err(ProcessError::PoolTerminated)));
    }
    check!(matches!(
        pool.apply_async(square, 1),
        Err(ProcessError::PoolTerminated)
    ));
    pool.join().map_err(e)?;
    // Dropping a busy pool terminates it too (the runner then checks for leftovers).
    let busy = Pool::new(2).map_err(e)?;
    let _r = busy.apply_async(sleep_then_pid, 5000).map_err(e)?;
    let t = Instant::now();
    drop(busy);
    check!(
        t.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        t.elapsed()
    );
    Ok(())
}

fn sizes_and_bad_arguments() -> Result<(), String> {
    check!(matches!(Pool::new(0), Err(ProcessError::Invalid { .. })));
    check!(matches!(
        Pool::builder().processes(1).maxtasksperchild(0).build(),
        Err(ProcessError::Invalid { .. })
    ));
    check!(matches!(
        Pool::builder().processes(1).task_capacity(0).build(),
        Err(ProcessError::Invalid { .. })
    ));
    check!(matches!(
        Pool::builder().processes(1).results_capacity(100).build(),
        Err(ProcessError::Invalid { .. })
    ));
    check!(matches!(
        Pool::builder().processes(1).task_capacity(1 << 40).build(),
        Err(ProcessError::PoolSetup { .. })
    ));
    let pool = Pool::builder()
        .processes(1)
        .task_capacity(4096)
        .results_capacity(8192)
        .build()
        .map_err(e)?;
    match pool.apply(len_of, vec![1u8; 10_000]) {
        Err(ProcessError::TaskTooLarge { len, max }) => check!(len > 10_000 && max < 4096),
        other => return Err(format!("{other:?}")),
    }
    match pool.apply(big_result, 20_000) {
        Err(ProcessError::ResultTooLarge { len, max }) => check!(len > 20_000 && max < 8192),
        other => return Err(format!("{other:?}")),
    }
    check!(matches!(
        pool.with_chunksize(0).map(square, [1u64]),
        Err(ProcessError::Invalid { .. })
    ));
    check!(matches!(
        pool.with_chunksize(0).imap(square, [1u64]),
        Err(ProcessError::Invalid { .. })
    ));
    // Nothing was lost on the way: the pool still works.
    check!(pool.apply(len_of, vec![1u8; 1000]).map_err(e)? == 1000);
    Ok(())
}

fn workers_die_with_the_parent() -> Result<(), String> {
    let region = Region::anonymous(4096).map_err(e)?;
    let slots: &[std::sync::atomic::AtomicI32; 4] = region.get(Offset::new(0)).map_err(e)?;
    // SAFETY: single-threaded case process; the child leaves with _exit or is killed.
    let owner = unsafe { libc::fork() };
    if owner == 0 {
        let pool = Pool::new(3).expect("pool");
        let ok = eventually(Duration::from_secs(10), || pool.worker_pids().len() == 3);
        for (i, p) in pool.worker_pids().iter().enumerate() {
            slots[i].store(*p, std::sync::atomic::Ordering::SeqCst);
        }
        slots[3].store(ok as i32, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(60));
        // SAFETY: leaves the child.
        unsafe { libc::_exit(0) };
    }
    let up = eventually(Duration::from_secs(10), || {
        slots[3].load(std::sync::atomic::Ordering::SeqCst) == 1
    });
    check!(up, "the pool in the child did not come up");
    let pids: Vec<i32> = (0..3)
        .map(|i| slots[i].load(std::sync::atomic::Ordering::SeqCst))
        .collect();
    check!(pids.iter().all(|&p| p > 0 && running(p)));
    kill9(owner);
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(owner, std::ptr::null_mut(), 0) };
    let gone = eventually(Duration::from_secs(5), || pids.iter().all(|&p| !running(p)));
    check!(gone, "workers outlived their pool's process: {pids:?}");
    // The runner (a subreaper) reaps the orphans; give it the zombies.
    eventually(Duration::from_secs(2), || {
        // SAFETY: reaps any exited child without blocking.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        children().is_empty()
    });
    Ok(())
}

fn spawner_death_breaks_the_pool_without_hanging() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    let pids = workers(&pool, 2)?;
    let spawner = ppid_of(pids[0]).ok_or("no ppid")?;
    check!(spawner != std::process::id() as i32);
    let r = pool.apply_async(sleep_then_pid, 3000).map_err(e)?;
    kill9(spawner);
    let t = Instant::now();
    match r.get() {
        Err(ProcessError::PoolBroken { reason }) => check!(reason.contains("spawner"), "{reason}"),
        Err(ProcessError::WorkerDied { .. }) => {}
        other => return Err(format!("{other:?}")),
    }
    check!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    check!(eventually(Duration::from_secs(3), || pids
        .iter()
        .all(|&p| !running(p))));
    drop(pool);
    eventually(Duration::from_secs(2), || {
        // SAFETY: reaps any exited child without blocking (orphaned workers come to the runner).
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        children().is_empty()
    });
    Ok(())
}

/// An endless imap ends (one error) when the pool is terminated under it, and a copy of the
/// pool in a forked child refuses to work instead of hanging or stealing the parent's tasks.
fn terminated_imap_ends_and_forked_copy_refuses() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    let mut it = pool.imap(double_slowly, 0u64..).map_err(e)?;
    check!(it.next().transpose().map_err(e)? == Some(0));
    pool.terminate();
    let rest: Vec<_> = it.by_ref().take(1000).collect();
    check!(
        rest.len() < 100,
        "an endless imap went on after terminate: {} items",
        rest.len()
    );
    check!(rest
        .iter()
        .any(|r| matches!(r, Err(ProcessError::PoolTerminated))));

    let pool = Pool::new(1).map_err(e)?;
    let pending = pool.apply_async(sleep_then_double, 300).map_err(e)?;
    let region = Region::anonymous(4096).map_err(e)?;
    let verdict: &std::sync::atomic::AtomicI32 = region.get(Offset::new(0)).map_err(e)?;
    // SAFETY: single-threaded case process apart from the pool's result thread, which the
    // child never touches; the child leaves with _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let refused = matches!(
            pool.apply_async(square, 2),
            Err(ProcessError::Invalid { .. })
        ) && matches!(
            pool.imap(square, [1u64]).map(|mut i| i.next()),
            Ok(Some(Err(ProcessError::Invalid { .. })))
        );
        verdict.store(
            if refused { 1 } else { 2 },
            std::sync::atomic::Ordering::SeqCst,
        );
        // SAFETY: leaves the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    check!(
        verdict.load(std::sync::atomic::Ordering::SeqCst) == 1,
        "the forked copy did not refuse"
    );
    check!(pending.get().map_err(e)? == 600);
    Ok(())
}

const CASES: &[(&str, Case)] = &[
    (
        "terminated_imap_ends_and_forked_copy_refuses",
        terminated_imap_ends_and_forked_copy_refuses,
    ),
    ("apply_and_map_values", apply_and_map_values),
    ("async_result_methods", async_result_methods),
    ("threads_share_a_pool", threads_share_a_pool),
    ("callbacks_get_every_outcome", callbacks_get_every_outcome),
    ("imap_orders", imap_orders),
    ("imap_reads_input_lazily", imap_reads_input_lazily),
    (
        "short_task_not_stuck_behind_long_one",
        short_task_not_stuck_behind_long_one,
    ),
    ("task_panic_keeps_worker", task_panic_keeps_worker),
    (
        "worker_deaths_fail_only_their_task",
        worker_deaths_fail_only_their_task,
    ),
    ("kill9_workers_in_a_loop", kill9_workers_in_a_loop),
    (
        "idempotent_pool_reruns_a_dead_workers_task",
        idempotent_pool_reruns_a_dead_workers_task,
    ),
    (
        "maxtasksperchild_replaces_workers",
        maxtasksperchild_replaces_workers,
    ),
    (
        "initializer_runs_in_each_worker",
        initializer_runs_in_each_worker,
    ),
    (
        "close_then_join_runs_everything",
        close_then_join_runs_everything,
    ),
    (
        "terminate_fails_pending_at_once",
        terminate_fails_pending_at_once,
    ),
    ("sizes_and_bad_arguments", sizes_and_bad_arguments),
    ("workers_die_with_the_parent", workers_die_with_the_parent),
    (
        "spawner_death_breaks_the_pool_without_hanging",
        spawner_death_breaks_the_pool_without_hanging,
    ),
];

fn main() {
    baozi_process::main_guard();
    run_cases(CASES);
}
