//! Python's shared counter: `Value('i', 0)` incremented by 4 processes under its lock.
//!
//! Each process gets a clone of the handle; the lock makes every `+= 1` whole, so the total is
//! exact. Run: `cargo run --release --example value_counter`.

use baozi::{Process, Value};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counter = Value::new(0i32)?; // Python: counter = Value('i', 0)
    let workers: Vec<Process> = (0..4)
        .map(|_| {
            let counter = counter.clone();
            Process::new(move || -> Result<(), baozi::AllocError> {
                for _ in 0..1000 {
                    *counter.lock()? += 1; // Python: with counter.get_lock(): counter.value += 1
                }
                Ok(())
            })
        })
        .collect();
    for p in &workers {
        p.start()?;
    }
    for p in &workers {
        p.join()?;
    }
    println!("counter = {} (4 processes x 1000)", counter.get()?);
    assert_eq!(counter.get()?, 4000);
    Ok(())
}
