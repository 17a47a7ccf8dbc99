//! Start methods in a multi-threaded program: fork is refused (the child could hang on a lock
//! another thread held), forkserver and spawn start clean children that run plain functions,
//! and `main_guard()` on main's first line keeps a spawned child out of `main`.
//!
//! Run: `cargo run --example start_methods`

use baozi::{Pool, Process, ProcessError, Queue, StartMethod};

/// A task: a plain function, its argument a serde value (a queue handle and a filling).
fn bake((q, filling): (Queue<String>, String)) -> i32 {
    let msg = format!("{filling} bun from pid {}", std::process::id());
    i32::from(q.put(msg).is_err())
}

fn steam(minutes: u32) -> u32 {
    minutes * 2
}

fn main() -> Result<(), ProcessError> {
    baozi::main_guard(); // Python's `if __name__ == '__main__':`
                         // A program with a thread of its own (a logger, a runtime, ...).
    let _ticker = std::thread::spawn(|| loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    });
    let refused = Process::builder()
        .start_method(StartMethod::Fork)
        .spawn_fn(|| 0)
        .start();
    println!("fork with 2 threads: {}", refused.unwrap_err());
    println!("default start method now: {}", baozi::get_start_method());

    let q: Queue<String> = Queue::new(16, 1 << 16).expect("queue");
    for (method, filling) in [
        (StartMethod::Forkserver, "pork"),
        (StartMethod::Spawn, "leek"),
    ] {
        let p = Process::builder()
            .start_method(method)
            .task(bake, (q.clone(), filling.to_string()))?;
        p.start()?;
        p.join()?;
        println!("{method}: {}", q.get().expect("a bun"));
    }
    let pool = Pool::builder().processes(2).build()?; // the default: forkserver
    println!("pool (forkserver): {:?}", pool.map(steam, [1, 2, 3])?);
    Ok(())
}
