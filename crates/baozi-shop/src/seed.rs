//! The seed scenario: two bakers, one eater, a counter that holds one bun.

use std::sync::Arc;
use std::time::Duration;

use baozi_process::{current_process, Process};
use baozi_queue::{GetError, Queue, Serde};
use serde::{Deserialize, Serialize};

use crate::ShopError;

/// The default pause between two buns of one baker.
pub const SEED_PACE: Duration = Duration::from_millis(500);

const BAKERS: u32 = 2;

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

/// Runs the seed scenario: a queue with maxsize 1; two baker processes each bake a pork, a
/// cabbage and a red-bean bun, `pace` apart; one eater process eats them all. Prints who baked
/// and who ate which bun, then a verification line.
///
/// # Errors
/// [`ShopError::Failed`] if a worker fails or a bun is lost, duplicated or out of order.
pub fn run_seed(pace: Duration) -> Result<(), ShopError> {
    let failed = |e: String| ShopError::Failed(e);
    let counter: Arc<Queue<Serde<Bun>>> =
        Arc::new(Queue::new(1, 4096).map_err(|e| failed(e.to_string()))?);
    let total = BAKERS as usize * Filling::MENU.len();
    println!(
        "包子铺 opens (pid {}): a counter that holds {} bun, {BAKERS} bakers, 1 eater, {} buns",
        std::process::id(),
        counter.maxsize(),
        total
    );
    // Daemons: if the shop is killed, its bakers and eater die with it.
    let worker = |name: String, body: Box<dyn FnOnce() -> i32 + Send>| {
        let p = Process::builder().name(name).daemon(true).spawn_fn(body);
        p.start()
            .map(|()| p)
            .map_err(|e| failed(format!("fork: {e}")))
    };
    let at_counter = Arc::clone(&counter);
    let eater = worker(
        "eater-1".into(),
        Box::new(move || {
            let counter = at_counter;
            let me = current_process();
            let (name, pid) = (me.name(), me.pid());
            let mut next = [0u32; BAKERS as usize];
            for _ in 0..total {
                let Serde(bun) = match counter.get_timeout(pace * 4 + Duration::from_secs(5)) {
                    Ok(bun) => bun,
                    Err(GetError::Empty) => {
                        eprintln!("{name} (pid {pid}): no bun came");
                        return 2;
                    }
                    Err(e) => {
                        eprintln!("{name} (pid {pid}): {e}");
                        return 3;
                    }
                };
                println!(
                    "  {name} (pid {pid}) ate the {} bun from baker-{} (pid {})",
                    bun.filling.label(),
                    bun.baker,
                    bun.baker_pid
                );
                let slot = bun.baker.wrapping_sub(1) as usize;
                if slot >= next.len() || bun.seq != next[slot] {
                    eprintln!(
                        "{name} (pid {pid}): baker-{}'s buns came out of order",
                        bun.baker
                    );
                    return 4;
                }
                next[slot] += 1;
            }
            0
        }),
    )?;
    let mut workers = vec![eater];
    for baker in 1..=BAKERS {
        let at_counter = Arc::clone(&counter);
        let p = worker(
            format!("baker-{baker}"),
            Box::new(move || {
                let counter = at_counter;
                let pid = current_process().pid();
                for (seq, filling) in Filling::MENU.into_iter().enumerate() {
                    std::thread::sleep(pace);
                    println!(
                        "  baker-{baker} (pid {pid}) baked a {} bun",
                        filling.label()
                    );
                    let bun = Bun {
                        baker,
                        baker_pid: pid as u32,
                        seq: seq as u32,
                        filling,
                    };
                    if let Err(e) = counter.put(Serde(bun)) {
                        eprintln!("baker-{baker} (pid {pid}): {e}");
                        return 1;
                    }
                }
                0
            }),
        )?;
        workers.push(p);
    }
    let mut problems = Vec::new();
    for p in workers {
        let (name, pid) = (p.name(), p.pid().unwrap_or(0));
        match p.join() {
            Ok(0) => {}
            Ok(code) => problems.push(format!(
                "{name} (pid {pid}) ended with {}",
                crate::run::exit_text(code)
            )),
            Err(e) => problems.push(format!("{name} (pid {pid}): {e}")),
        }
    }
    if !counter.empty() {
        problems.push(format!("{} bun(s) left uneaten", counter.qsize()));
    }
    if problems.is_empty() {
        println!(
            "verified: {total} buns baked, {total} eaten, each exactly once, in each baker's order"
        );
        Ok(())
    } else {
        Err(failed(problems.join("; ")))
    }
}
