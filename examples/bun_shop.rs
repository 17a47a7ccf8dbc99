//! The bun shop (包子铺), the seed program of baozi, in Rust.
//!
//! A counter that holds one bun (a queue with maxsize 1); two baker processes each bake a pork
//! (猪肉), a cabbage (白菜) and a red-bean (豆沙) bun, in turn; one eater process eats them. Each
//! line says who did what, with process names and pids. Run it with
//!
//! ```text
//! cargo run --release --example bun_shop
//! ```

use std::time::Duration;

use baozi::process::current_process;
use baozi::{GetError, Process, PutError, Queue, Serde};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Filling {
    Pork,
    Cabbage,
    RedBean,
}

impl Filling {
    const MENU: [Filling; 3] = [Filling::Pork, Filling::Cabbage, Filling::RedBean];

    fn label(self) -> &'static str {
        match self {
            Filling::Pork => "猪肉 pork",
            Filling::Cabbage => "白菜 cabbage",
            Filling::RedBean => "豆沙 red-bean",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Bun {
    baker: u32,
    baker_pid: u32,
    seq: u32,
    filling: Filling,
}

const BAKERS: u32 = 2;
const PACE: Duration = Duration::from_millis(150);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A handle: each process below gets a clone (Python's `args=(q,)`).
    let counter: Queue<Serde<Bun>> = Queue::new(1, 4096)?;
    println!(
        "包子铺 opens: a counter that holds {} bun, {BAKERS} bakers, 1 eater",
        counter.maxsize()
    );

    let mut shop = Vec::new();
    for baker in 1..=BAKERS {
        let counter = counter.clone();
        let p = Process::builder()
            .name(format!("baker-{baker}"))
            .spawn_fn(move || {
                let me = current_process();
                for (seq, filling) in Filling::MENU.into_iter().enumerate() {
                    std::thread::sleep(PACE);
                    let bun = Bun {
                        baker,
                        baker_pid: me.pid() as u32,
                        seq: seq as u32,
                        filling,
                    };
                    println!(
                        "  {} (pid {}) baked a {} bun",
                        me.name(),
                        me.pid(),
                        filling.label()
                    );
                    counter.put(Serde(bun))?;
                }
                Ok::<(), PutError<Serde<Bun>>>(())
            });
        p.start()?;
        shop.push(p);
    }

    let total = BAKERS as usize * Filling::MENU.len();
    let eater = Process::builder().name("eater").spawn_fn({
        let counter = counter.clone();
        move || -> Result<(), String> {
            let me = current_process();
            let mut next_seq = vec![0u32; BAKERS as usize + 1];
            for _ in 0..total {
                let Serde(bun) = match counter.get_timeout(Duration::from_secs(10)) {
                    Ok(bun) => bun,
                    Err(GetError::Empty) => return Err("no bun for 10 s".into()),
                    Err(e) => return Err(e.to_string()),
                };
                println!(
                    "  {} (pid {}) ate the {} bun from baker-{} (pid {})",
                    me.name(),
                    me.pid(),
                    bun.filling.label(),
                    bun.baker,
                    bun.baker_pid
                );
                if bun.seq != next_seq[bun.baker as usize] {
                    return Err(format!("baker-{}'s buns came out of order", bun.baker));
                }
                next_seq[bun.baker as usize] += 1;
            }
            Ok(())
        }
    });
    eater.start()?;
    shop.push(eater);

    // Exit codes as in Python: 0 is success (an Err return gives 1, with the error on stderr).
    let mut failed = 0;
    for p in &shop {
        if p.join()? != 0 {
            failed += 1;
        }
    }
    if failed == 0 && counter.empty() {
        println!(
            "verified: {total} buns baked, {total} eaten, each exactly once, in each baker's order"
        );
        Ok(())
    } else {
        Err(format!(
            "{failed} process(es) failed; {} bun(s) left on the counter",
            counter.qsize()
        )
        .into())
    }
}
