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

use baozi::{GetError, Queue, Serde};
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

/// Runs `work` in a forked child that leaves with `_exit`, never returning into main.
fn spawn(work: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the program is single-threaded here; the child only does its work and _exits.
    match unsafe { libc::fork() } {
        -1 => panic!("fork failed: {}", std::io::Error::last_os_error()),
        0 => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or(101);
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        pid => pid,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counter: Queue<Serde<Bun>> = Queue::new(1, 4096)?;
    println!(
        "包子铺 opens: a counter that holds {} bun, {BAKERS} bakers, 1 eater",
        counter.maxsize()
    );

    let mut children = Vec::new();
    for baker in 1..=BAKERS {
        let counter = &counter;
        children.push(spawn(move || {
            let pid = std::process::id();
            for (seq, filling) in Filling::MENU.into_iter().enumerate() {
                std::thread::sleep(PACE);
                let bun = Bun {
                    baker,
                    baker_pid: pid,
                    seq: seq as u32,
                    filling,
                };
                println!(
                    "  baker-{baker} (pid {pid}) baked a {} bun",
                    filling.label()
                );
                if counter.put(Serde(bun)).is_err() {
                    return 1;
                }
            }
            0
        }));
    }

    let total = BAKERS as usize * Filling::MENU.len();
    let eater = {
        let counter = &counter;
        spawn(move || {
            let pid = std::process::id();
            let mut next_seq = vec![0u32; BAKERS as usize + 1];
            for _ in 0..total {
                let Serde(bun) = match counter.get_timeout(Duration::from_secs(10)) {
                    Ok(bun) => bun,
                    Err(GetError::Empty) => {
                        eprintln!("eater: no bun for 10 s");
                        return 2;
                    }
                    Err(e) => {
                        eprintln!("eater: {e}");
                        return 3;
                    }
                };
                println!(
                    "  eater (pid {pid}) ate the {} bun from baker-{} (pid {})",
                    bun.filling.label(),
                    bun.baker,
                    bun.baker_pid
                );
                if bun.seq != next_seq[bun.baker as usize] {
                    eprintln!("eater: baker-{}'s buns came out of order", bun.baker);
                    return 4;
                }
                next_seq[bun.baker as usize] += 1;
            }
            0
        })
    };
    children.push(eater);

    let mut failed = 0;
    for pid in children {
        let mut status = 0;
        // SAFETY: waiting for our own child; status is a valid out-pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
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
