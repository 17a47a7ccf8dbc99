//! A `Pool` whose workers are other processes meeting it on Redis: here two runs of this very
//! program on localhost, on a private `redis-server`; on real hosts, run
//! `pool_across_hosts --baozi-worker redis://HOST:6379/0` on each machine and give the pool the
//! same URL (`BAOZI_REDIS_URL=redis://HOST:6379/0 pool_across_hosts`).
//!
//! `cargo run -p baozi-redis --example pool_across_hosts` (needs redis-server).

use std::process::{Command, Stdio};

use baozi_process::Pool;
use baozi_redis::{LocalServer, RedisWorkers};

baozi_process::task! {
    /// Steams a basket; says where.
    fn steam(filling: String) -> String {
        format!("{filling} bun, steamed by worker {}", std::process::id())
    }
}

baozi_process::task! {
    fn price(count: u32, each: u32) -> u32 { count * each }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    baozi_redis::main_guard(); // a run with --baozi-worker serves pools here, for ever
                               // A private server and two local workers, unless a server is named.
    let (server, url) = match std::env::var("BAOZI_REDIS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = LocalServer::start()?;
            let url = server.url();
            (Some(server), url)
        }
    };
    let mut workers = Vec::new();
    if server.is_some() {
        for _ in 0..2 {
            workers.push(
                Command::new(std::env::current_exe()?)
                    .args(["--baozi-worker", &url])
                    .stdin(Stdio::null())
                    .spawn()?,
            );
        }
    }
    let pool = Pool::builder()
        .processes(2)
        .backend(RedisWorkers::connect(&url)?)
        .build()?;
    for line in pool.map(steam, ["pork", "cabbage", "red bean"].map(String::from))? {
        println!("{line}");
    }
    println!(
        "total: {} fen",
        pool.starmap(price, [(3, 150), (2, 120)])?
            .iter()
            .sum::<u32>()
    );
    pool.close();
    pool.join()?;
    for mut w in workers {
        w.kill()?;
        w.wait()?;
    }
    Ok(())
}
