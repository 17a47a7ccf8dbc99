//! Spawn and forkserver from `#[test]` functions under libtest's own harness (its `main` is
//! not ours, and it runs each test on a thread of its own, so fork is refused):
//! `guard_before_main!()` sends a spawned child to its task before libtest's `main`.

use baozi_process::{Pool, Process, ProcessError, StartMethod};

baozi_process::guard_before_main!();

fn code(n: i32) -> i32 {
    n
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn fork_is_refused_on_a_test_thread() {
    let p = Process::builder()
        .start_method(StartMethod::Fork)
        .spawn_fn(|| 0);
    assert!(matches!(
        p.start(),
        Err(ProcessError::ForkWithThreads { .. })
    ));
}

#[test]
fn tasks_run_under_spawn_and_forkserver() {
    for m in [StartMethod::Spawn, StartMethod::Forkserver] {
        let p = Process::builder().start_method(m).task(code, 7).unwrap();
        p.start().unwrap();
        assert_eq!(p.join().unwrap(), 7, "{m}");
    }
    baozi_process::stop_forkserver();
}

#[test]
fn a_pool_takes_the_default() {
    // libtest has threads: the default is forkserver (unless BAOZI_START_METHOD picks another;
    // forced to fork here, the pool is refused, which `fork_is_refused_on_a_test_thread` covers).
    if std::env::var("BAOZI_START_METHOD").is_ok_and(|m| m == "fork") {
        eprintln!("a_pool_takes_the_default: not run with BAOZI_START_METHOD=fork");
        return;
    }
    let pool = Pool::new(2).unwrap();
    assert_eq!(pool.map(square, 0..5u64).unwrap(), [0, 1, 4, 9, 16]);
}
