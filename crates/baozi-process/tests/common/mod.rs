//! The runner shared by the multi-process test binaries (`harness = false`): each case runs
//! in its own forked child (own process group, child subreaper) under a watchdog, and must leave
//! no child behind.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::time::{Duration, Instant};

pub type Case = fn() -> Result<(), String>;

/// Fails the case with the line and the condition (or a message) when the condition is false.
#[macro_export]
macro_rules! check {
    ($cond:expr) => {
        if !$cond {
            return Err(format!("line {}: check failed: {}", line!(), stringify!($cond)));
        }
    };
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("line {}: {}", line!(), format!($($fmt)+)));
        }
    };
}

pub fn e<E: std::fmt::Display>(err: E) -> String {
    err.to_string()
}

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Pids whose parent is this process (any state, zombies included), from /proc/*/stat.
pub fn children() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for ent in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = ent.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == me {
            out.push((pid, state));
        }
    }
    out
}

/// Whether `pid` exists and is not a zombie.
pub fn running(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_some_and(|s| s != 'Z'),
        Err(_) => false,
    }
}

/// Reaps what has come to this case process (a subreaper) as an orphan: under forkserver, the
/// forkserver of a child that exited (it leaves when its program does) and that server's
/// children. Waits up to 2 s for them to exit.
pub fn reap_orphans() {
    let t = Instant::now();
    loop {
        // SAFETY: reaps any exited child without blocking; touches no memory of ours.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        if children().is_empty() || t.elapsed() > Duration::from_secs(2) {
            return;
        }
        sleep_ms(5);
    }
}

/// How long one case may run: 30 s, or `BAOZI_CASE_TIMEOUT_S` (long kill loops).
pub fn watchdog() -> Duration {
    std::env::var("BAOZI_CASE_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_secs)
}

/// Runs one case in a forked child (own process group, subreaper) and returns its verdict.
fn run_case(case: Case) -> Result<(), String> {
    // SAFETY: the runner is single-threaded (harness = false); the child leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: plain syscalls on this process.
        unsafe {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
        let r = std::panic::catch_unwind(case).unwrap_or_else(|_| Err("case panicked".into()));
        // The program's forkserver, if the case started one, is a child too.
        baozi_process::stop_forkserver();
        let r = r.and_then(|()| {
            let left = children();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("children left behind (pid, state): {left:?}"))
            }
        });
        let code = match r {
            Ok(()) => 0,
            Err(msg) => {
                eprintln!("    {msg}");
                1
            }
        };
        // SAFETY: leaves the case process without running the runner's code.
        unsafe { libc::_exit(code) }
    }
    let t = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: status is a valid int.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            break;
        }
        if t.elapsed() > watchdog() {
            // SAFETY: kills the case's process group, then reaps the case.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            // Its orphans (a spawner, workers) die with it (parent-death signals) and come to
            // this runner, a subreaper too: reap them rather than leave zombies to init.
            reap_orphans();
            return Err(format!("watchdog: killed after {:?}", watchdog()));
        }
        sleep_ms(5);
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("case process status {status:#x}"))
    }
}

/// Runs `cases` (filtered by the command-line arguments) and exits non-zero on a failure.
pub fn run_cases(cases: &[(&str, Case)]) {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes this process's own attribute.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let t0 = Instant::now();
    let mut passed = 0;
    let mut failed = Vec::new();
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t = Instant::now();
        match run_case(*case) {
            Ok(()) => {
                passed += 1;
                println!("ok   {name} ({:?})", t.elapsed());
            }
            Err(msg) => {
                println!("FAIL {name}: {msg}");
                failed.push(*name);
            }
        }
    }
    println!(
        "{passed} passed, {} failed in {:.2}s",
        failed.len(),
        t0.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        // Repeated last, so that a log's tail names them whatever the cases printed before.
        println!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}
