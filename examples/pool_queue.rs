//! The tutorial's "Pool下的Queue通信" (queues between pool workers), in baozi.
//!
//! Python needs a `Manager().Queue()` here: a plain `multiprocessing.Queue` cannot be a pool
//! task's argument, because the workers were started before it existed. A baozi queue is a
//! handle: passing `q.clone()` to a task sends a reference, and the worker attaches to the same
//! shared memory. No manager process, no copy of the messages.
//!
//! 1. A writer task puts A, B, C; a reader task gets them.
//! 2. The same with a `JoinableQueue`: the parent `join`s until the reader has called
//!    `task_done` for every item.
//!
//! Run: `cargo run --release --example pool_queue`.

use std::time::Duration;

use baozi::{JoinableQueue, Pool, Queue};

fn write(q: Queue<String>) -> String {
    for value in ["A", "B", "C"] {
        println!("  writer (pid {}) puts {value}", std::process::id());
        q.put(value.to_owned()).expect("put");
        std::thread::sleep(Duration::from_millis(50));
    }
    format!("writer {} done", std::process::id())
}

fn read(q: Queue<String>) -> String {
    for _ in 0..3 {
        let value = q.get().expect("get");
        println!("  reader (pid {}) got {value}", std::process::id());
    }
    format!("reader {} done", std::process::id())
}

fn work(q: JoinableQueue<String>) -> usize {
    let mut n = 0;
    while let Ok(job) = q.get_timeout(Duration::from_millis(200)) {
        println!("  worker (pid {}) did {job}", std::process::id());
        q.task_done().expect("task_done");
        n += 1;
    }
    n
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::new(2)?;
    println!("Pool(2), parent pid {}", std::process::id());

    // Python: q = Manager().Queue(); pool.apply_async(write, (q,)); pool.apply_async(read, (q,))
    let q: Queue<String> = Queue::new(0, 4096)?;
    let w = pool.apply_async(write, q.clone())?;
    let r = pool.apply_async(read, q.clone())?;
    println!("{}\n{}", w.get()?, r.get()?);

    // The same with a JoinableQueue: join() returns once every item was task_done().
    let jobs: JoinableQueue<String> = JoinableQueue::new(0, 4096)?;
    for i in 1..=5 {
        jobs.put(format!("job {i}"))?;
    }
    let done = pool.apply_async(work, jobs.clone())?;
    jobs.join()?;
    println!("every job done ({} by the worker)", done.get()?);

    pool.close();
    pool.join()?;
    Ok(())
}
