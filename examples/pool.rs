//! Python's `multiprocessing.Pool` examples, in baozi.
//!
//! 1. `Pool(4)`, `apply_async` for each order, then `close()` and `join()`: four bakers share
//!    ten orders, and each result says which worker made it.
//! 2. The `imap` / `imap_unordered` demo: tasks that sleep 4, 3 and 2 units (here 400, 300 and
//!    200 ms) come back in input order from `imap` and in finishing order from
//!    `imap_unordered`.
//! 3. A worker killed with `kill -9` in the middle of a map: the caller gets `WorkerDied` for
//!    the task it was running, at once, and the pool goes on (CPython's Pool hangs here).
//!
//! Run: `cargo run --release --example pool`.

use std::time::{Duration, Instant};

use baozi::{Pool, ProcessError};

const FILLINGS: [&str; 3] = ["pork 猪肉", "cabbage 白菜", "red bean 豆沙"];

/// One order: takes a little while, says who made it.
fn bake(order: usize) -> String {
    std::thread::sleep(Duration::from_millis(100));
    format!(
        "order {order:>2}: a {} bun, baked by pid {}",
        FILLINGS[order % 3],
        std::process::id()
    )
}

/// Sleeps `units` tenths of a second and returns them.
fn nap(units: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(100 * units));
    units
}

/// A slow double, long enough to be killed in the middle of.
fn slow_double(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(50));
    x * 2
}

fn main() -> Result<(), ProcessError> {
    println!("1. Pool(4), apply_async, close, join");
    let pool = Pool::new(4)?;
    let t = Instant::now();
    let orders: Vec<_> = (0..10)
        .map(|i| pool.apply_async(bake, i))
        .collect::<Result<_, _>>()?;
    pool.close();
    pool.join()?;
    for order in orders {
        println!("   {}", order.get()?);
    }
    println!(
        "   10 orders of 100 ms on 4 workers in {:.0} ms\n",
        t.elapsed().as_secs_f64() * 1e3
    );

    println!("2. imap keeps input order, imap_unordered gives results as they finish");
    let pool = Pool::new(3)?;
    let t = Instant::now();
    for r in pool.imap(nap, [4, 3, 2])? {
        println!("   imap:           {} (after {:.0} ms)", r?, ms(t));
    }
    let t = Instant::now();
    for r in pool.imap_unordered(nap, [4, 3, 2])? {
        println!("   imap_unordered: {} (after {:.0} ms)", r?, ms(t));
    }

    println!("\n3. kill -9 of a worker in the middle of a map");
    let running = pool.with_chunksize(1).map_async(slow_double, 0..30)?;
    std::thread::sleep(Duration::from_millis(120));
    let victim = pool.worker_pids()[0];
    // SAFETY: a signal to one of our pool's workers; touches no memory.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let t = Instant::now();
    match running.get() {
        Err(e @ ProcessError::WorkerDied { .. }) => {
            println!("   the map failed in {:.0} ms: {e}", ms(t))
        }
        other => println!("   unexpected: {other:?}"),
    }
    let again = pool.map(slow_double, 0..6)?;
    println!("   the pool goes on with a new worker: {again:?}");
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}
