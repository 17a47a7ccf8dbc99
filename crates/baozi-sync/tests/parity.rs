//! Python-parity cases (issue 16) across forked processes: `Lock`/`RLock::locked()` and the
//! holder in `Debug`, `Barrier`'s action (once per cycle, before the release) and default
//! timeout.
//!
//! `harness = false`: the runner never starts a thread, so forking is safe; each case runs in
//! a forked case process under a watchdog, and one `N passed, N failed` line ends the output.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baozi_shm::{Offset, Region};
use baozi_sync::{Acquired, Barrier, Lock, RLock, SyncError};

/// Forks a child that runs `body` and leaves with `_exit(body())` (101 on a panic).
fn fork_child(body: impl FnOnce() -> i32) -> libc::pid_t {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: the case process is single-threaded; the child leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: leaves the child at once.
        unsafe { libc::_exit(code) }
    }
    pid
}

/// Waits for `pid` and returns its exit code (-signal if killed).
fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: a valid, writable int.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    }
}

fn kill9(pid: libc::pid_t) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// `locked()` sees a holder in another process, and `Debug` names its pid (and depth); a
/// holder killed does not count as holding it.
fn locked_and_holder_in_debug() {
    let lock = Lock::anonymous().unwrap();
    let rlock = RLock::anonymous().unwrap();
    let go = Region::anonymous(4096).unwrap();
    let step: &AtomicU64 = go.get(Offset::new(0)).unwrap();
    assert!(!lock.locked() && !rlock.locked());
    let child = fork_child(|| {
        assert_eq!(lock.acquire().unwrap(), Acquired::Clean);
        assert_eq!(rlock.acquire().unwrap(), Acquired::Clean);
        assert_eq!(rlock.acquire().unwrap(), Acquired::Clean);
        assert_eq!(rlock.acquire().unwrap(), Acquired::Clean);
        step.store(1, Ordering::SeqCst);
        while step.load(Ordering::SeqCst) != 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        lock.release().unwrap();
        std::thread::sleep(Duration::from_secs(60)); // dies holding the rlock
        0
    });
    assert!(eventually(Duration::from_secs(10), || step
        .load(Ordering::SeqCst)
        == 1));
    assert!(lock.locked() && !lock.is_owned());
    assert!(rlock.locked() && rlock.depth() == 0);
    let shown = format!("{lock:?}");
    assert!(shown.contains(&format!("holder_pid: {child}")), "{shown}");
    assert!(
        shown.contains("locked: true") && shown.contains("owned_by_caller: false"),
        "{shown}"
    );
    let shown = format!("{rlock:?}");
    assert!(shown.contains(&format!("holder_pid: {child}")), "{shown}");
    assert!(shown.contains("holder_depth: 3"), "{shown}");
    step.store(2, Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(10), || !lock.locked()));
    assert!(!format!("{lock:?}").contains("holder_pid"));
    // Killed holding the rlock: it is free for the next acquirer, so not "locked".
    kill9(child);
    assert_eq!(reap(child), -libc::SIGKILL);
    assert!(!rlock.locked(), "{rlock:?}");
    assert_eq!(rlock.acquire().unwrap(), Acquired::OwnerDied);
    rlock.mark_consistent().unwrap();
    assert!(rlock.locked());
    rlock.release().unwrap();
    assert!(!rlock.locked());
}

/// The action runs exactly once per cycle, in the process that completes it, before any
/// party is released; a panicking action breaks the cycle.
fn barrier_action_once_per_cycle_before_release() {
    const PARTIES: usize = 4;
    const CYCLES: u64 = 50;
    let shared = Region::anonymous(4096).unwrap();
    // [0]: actions run, [1]: parties released past a cycle while its action had not run,
    // [2]: actions that ran while a party of their cycle was already released.
    let counter = |i: u64| -> &AtomicU64 { shared.get(Offset::new(i * 8)).unwrap() };
    let (actions, early, late) = (counter(0), counter(1), counter(2));
    let released = counter(3);
    let actions_addr = std::ptr::from_ref::<AtomicU64>(actions) as usize;
    let released_addr = std::ptr::from_ref::<AtomicU64>(released) as usize;
    let late_addr = std::ptr::from_ref::<AtomicU64>(late) as usize;
    let barrier = Barrier::anonymous(PARTIES as u32)
        .unwrap()
        .with_timeout(Duration::from_secs(20))
        .with_action(move || {
            // SAFETY: the region is mapped before the forks and outlives every party.
            let (actions, released, late) = unsafe {
                (
                    &*(actions_addr as *const AtomicU64),
                    &*(released_addr as *const AtomicU64),
                    &*(late_addr as *const AtomicU64),
                )
            };
            let cycle = actions.load(Ordering::SeqCst);
            // Before the release: nobody is past this cycle yet.
            if released.load(Ordering::SeqCst) > cycle * PARTIES as u64 {
                late.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_micros(200));
            actions.fetch_add(1, Ordering::SeqCst);
        });
    assert_eq!(barrier.timeout(), Some(Duration::from_secs(20)));
    let party = |barrier: &Barrier| -> i32 {
        for cycle in 1..=CYCLES {
            if barrier.wait().is_err() {
                return 2;
            }
            released.fetch_add(1, Ordering::SeqCst);
            if actions.load(Ordering::SeqCst) < cycle {
                early.fetch_add(1, Ordering::SeqCst);
            }
        }
        0
    };
    let children: Vec<_> = (1..PARTIES)
        .map(|_| fork_child(|| party(&barrier)))
        .collect();
    assert_eq!(party(&barrier), 0);
    for c in children {
        assert_eq!(reap(c), 0);
    }
    assert_eq!(actions.load(Ordering::SeqCst), CYCLES, "not once per cycle");
    assert_eq!(
        early.load(Ordering::SeqCst),
        0,
        "released before the action ran"
    );
    assert_eq!(late.load(Ordering::SeqCst), 0, "action ran after a release");
    // A panicking action breaks the cycle: the other party gets BrokenBarrier.
    let b = Barrier::anonymous(2)
        .unwrap()
        .with_action(|| panic!("the steamer cracked"));
    let child = fork_child(|| match b.wait_timeout(Duration::from_secs(20)) {
        Err(SyncError::BrokenBarrier) => 0,
        _ => 1,
    });
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Whoever arrives last runs the action: the child's copy has it too.
        let _ = b.wait_timeout(Duration::from_secs(20));
    }));
    let child_code = reap(child);
    // Either this process ran the action (panicked) and the child was broken, or the child
    // ran it (its panic made it exit 101) and this process got BrokenBarrier.
    assert!(
        (r.is_err() && child_code == 0) || (r.is_ok() && child_code == 101),
        "{r:?} {child_code}"
    );
    assert!(b.broken());
}

/// The default timeout, given at construction, bounds a plain `wait` in every process.
fn barrier_default_timeout() {
    let b = Barrier::anonymous(3)
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let child = fork_child(|| {
        let t = Instant::now();
        match b.wait() {
            Err(SyncError::BrokenBarrier) if t.elapsed() >= Duration::from_millis(250) => 0,
            _ => 1,
        }
    });
    let t = Instant::now();
    assert!(matches!(b.wait(), Err(SyncError::BrokenBarrier)));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(reap(child), 0);
    assert!(b.broken());
    b.reset();
    assert!(Barrier::anonymous(1).unwrap().timeout().is_none());
}

fn main() {
    let cases: &[(&str, fn())] = &[
        ("locked_and_holder_in_debug", locked_and_holder_in_debug),
        (
            "barrier_action_once_per_cycle_before_release",
            barrier_action_once_per_cycle_before_release,
        ),
        ("barrier_default_timeout", barrier_default_timeout),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, run) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let case = fork_child(|| {
            // SAFETY: plain syscall; the case leads its own group, so the watchdog can kill it all.
            unsafe { libc::setpgid(0, 0) };
            run();
            0
        });
        let t = Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: a valid, writable int.
            if unsafe { libc::waitpid(case, &mut status, libc::WNOHANG) } == case {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                // SAFETY: kills the case's group, then reaps the case.
                unsafe {
                    libc::kill(-case, libc::SIGKILL);
                    libc::waitpid(case, &mut status, 0);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            passed += 1;
            println!("ok   {name} ({:?})", t.elapsed());
        } else {
            failed += 1;
            println!("FAIL {name}: status {status:#x}");
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
