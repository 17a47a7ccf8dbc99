//! A program that forgets `main_guard` (Python's missing `if __name__ == '__main__':`): its
//! spawned children run `main` again, where every start is refused (no fork bomb), and the
//! parent is told. `harness = false`, and deliberately no `main_guard()` in `main`.

use std::process::exit;

use baozi_process::{Pool, Process, ProcessError, StartMethod};

fn code(n: i32) -> i32 {
    n
}

fn square(x: u64) -> u64 {
    x * x
}

/// In a spawned child that skipped the guard: everything that starts a process is refused.
fn unguarded_child() -> ! {
    let p = Process::builder()
        .start_method(StartMethod::Fork)
        .spawn_fn(|| 0);
    let process = p.start();
    let spawned = Process::builder()
        .start_method(StartMethod::Spawn)
        .task(code, 1)
        .and_then(|p| p.start());
    let pool = Pool::builder().processes(1).build().map(drop);
    let refused =
        |r: &Result<(), ProcessError>| matches!(r, Err(ProcessError::MainGuardMissing { .. }));
    if refused(&process) && refused(&spawned) && refused(&pool) {
        exit(42)
    }
    eprintln!("not refused: {process:?} {spawned:?} {pool:?}");
    exit(43)
}

fn main() {
    if std::env::var_os("BAOZI_SPAWNED_JOB").is_some() {
        unguarded_child();
    }
    let mut failed = 0;
    let mut check = |ok: bool, what: String| {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        failed += usize::from(!ok);
    };
    for m in [StartMethod::Spawn, StartMethod::Forkserver] {
        let p = Process::builder().start_method(m).task(code, 5).unwrap();
        if m == StartMethod::Spawn {
            p.start().unwrap();
            let joined = p.join();
            check(
                matches!(joined, Err(ProcessError::MainGuardMissing { .. })),
                format!("{m}: join of an unguarded child: {joined:?}"),
            );
            check(
                p.exitcode() == Some(42),
                format!(
                    "{m}: the child refused to start processes: {:?}",
                    p.exitcode()
                ),
            );
        } else {
            // The forkserver itself is the spawned run that skipped the guard.
            let started = p.start();
            check(
                matches!(started, Err(ProcessError::MainGuardMissing { .. })),
                format!("{m}: start with an unguarded forkserver: {started:?}"),
            );
        }
        let pool = Pool::builder().processes(1).start_method(m).build();
        let outcome = pool.and_then(|pool| pool.apply(square, 2));
        let said = matches!(&outcome, Err(ProcessError::PoolBroken { reason }) if reason.contains("main_guard"));
        check(
            said,
            format!("{m}: a pool whose spawner is unguarded: {outcome:?}"),
        );
    }
    println!("{failed} failed");
    exit(i32::from(failed > 0))
}
