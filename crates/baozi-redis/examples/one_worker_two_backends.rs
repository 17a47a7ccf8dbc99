//! The same worker code on the shared-memory queue and on Redis: only how the queue is made
//! changes. `cargo run -p baozi-redis --example one_worker_two_backends [redis://host:port/db]`
//! (without a URL it starts a private redis-server, which must be installed).

use std::time::Duration;

use baozi_queue::{GetError, JoinableContract, JoinableQueue, Serde};
use baozi_redis::{LocalServer, RedisOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
enum Bun {
    Pork,
    Cabbage,
    RedBean,
}

/// An eater: takes buns until the counter closes, marks each one done.
fn eater<Q: JoinableContract<Serde<Bun>> + 'static>(q: Q) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut eaten = 0;
        loop {
            match q.get() {
                Ok(Serde(_bun)) => {
                    eaten += 1;
                    q.task_done().unwrap();
                }
                Err(GetError::Closed) => return eaten,
                Err(e) => panic!("{e}"),
            }
        }
    })
}

/// The shop: two eaters, a baker putting 30 buns in batches, then join and close.
fn shop<Q: JoinableContract<Serde<Bun>> + 'static>(counter: Q) -> Vec<usize> {
    let eaters = [eater(counter.clone()), eater(counter.clone())];
    for round in 0..10 {
        let batch = vec![Serde(Bun::Pork), Serde(Bun::Cabbage), Serde(Bun::RedBean)];
        counter.put_many(batch).unwrap();
        if round % 3 == 0 {
            println!("  {} bun(s) on the counter", counter.qsize().unwrap());
        }
    }
    counter.join_timeout(Duration::from_secs(30)).unwrap();
    counter.close().unwrap();
    eaters.map(|e| e.join().unwrap()).to_vec()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("shared memory:");
    let eaten = shop(JoinableQueue::<Serde<Bun>>::new(4, 1 << 16)?);
    println!("  eaten per eater: {eaten:?}");

    let (_server, url) = match std::env::args().nth(1) {
        Some(url) => (None, url),
        None => {
            let s = LocalServer::start()?;
            let url = s.url();
            (Some(s), url)
        }
    };
    println!("redis ({url}):");
    let name = format!("bun-shop-{}", std::process::id());
    let counter = RedisOptions::new()
        .maxsize(4)
        .joinable::<Serde<Bun>>(&url, &name)?;
    let eaten = shop(counter);
    println!("  eaten per eater: {eaten:?}");
    baozi_redis::RedisQueue::<Serde<Bun>>::unlink(&url, &name)?;
    Ok(())
}
