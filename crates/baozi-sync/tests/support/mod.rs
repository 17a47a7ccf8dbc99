//! The runner and process helpers of baozi-sync's `harness = false` test binaries: every case
//! runs in a forked process that leads its own process group, under a watchdog.

#![allow(dead_code)] // each binary uses its own share of the helpers

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baozi_shm::{Offset, Region};

// ------------------------------------------------------------------------------------------
// Processes
// ------------------------------------------------------------------------------------------

pub(crate) fn flush() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub(crate) fn from_status(status: libc::c_int) -> Exit {
        if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else {
            Exit::Signal(libc::WTERMSIG(status))
        }
    }
}

/// A forked child; dropped unreaped, it is SIGKILLed and reaped.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: libc::pid_t,
    pub(crate) exit: Option<Exit>,
}

/// Runs `body` in a forked child that leaves with `_exit(body())` (101 if it panics) and dies
/// with its parent.
pub(crate) fn spawn(body: impl FnOnce() -> i32) -> Child {
    flush();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the case process is single-threaded, so the child gets consistent private locks.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: prctl and getppid have no memory-safety preconditions.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(102);
            }
        }
        let code = catch_unwind(AssertUnwindSafe(body)).unwrap_or(101);
        flush();
        // SAFETY: leaves without unwinding into the parent's code.
        unsafe { libc::_exit(code) }
    }
    Child { pid, exit: None }
}

impl Child {
    pub(crate) fn try_wait(&mut self) -> Option<Exit> {
        if self.exit.is_none() {
            let mut status = 0;
            // SAFETY: our own unreaped child; status is a valid int.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.exit = Some(Exit::from_status(status));
            }
        }
        self.exit
    }

    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<Exit> {
        let mut exit = None;
        wait_until(timeout, || {
            exit = self.try_wait();
            exit.is_some()
        });
        exit
    }

    /// Waits at most `timeout`; a child still running then is killed and the case fails.
    pub(crate) fn join(mut self, timeout: Duration, what: &str) -> Exit {
        match self.wait_timeout(timeout) {
            Some(e) => e,
            None => {
                self.kill();
                panic!("{what} (pid {}) still running after {timeout:?}", self.pid)
            }
        }
    }

    pub(crate) fn join_code(self, timeout: Duration, what: &str, code: i32) {
        let pid = self.pid;
        let exit = self.join(timeout, what);
        assert_eq!(exit, Exit::Code(code), "{what} (pid {pid}) ended badly");
    }

    pub(crate) fn join_ok(self, timeout: Duration, what: &str) {
        self.join_code(timeout, what, 0);
    }

    /// SIGKILLs it (if it still runs) and reaps it.
    pub(crate) fn kill(&mut self) -> Exit {
        if let Some(e) = self.exit {
            return e;
        }
        // SAFETY: an unreaped child of ours, so the pid cannot have been reused.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let mut status = 0;
        loop {
            // SAFETY: as in try_wait.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                let e = Exit::from_status(status);
                self.exit = Some(e);
                return e;
            }
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                self.exit = Some(Exit::Code(-1));
                return Exit::Code(-1);
            }
        }
    }

    /// Whether it is asleep (`S`) right now, i.e. blocked in a futex wait in these tests.
    pub(crate) fn is_sleeping(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        stat[close + 1..].trim_start().starts_with('S')
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn join_all_ok(children: Vec<Child>, timeout: Duration, what: &str) {
    let start = Instant::now();
    for (i, c) in children.into_iter().enumerate() {
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(50));
        c.join_ok(left, &format!("{what} #{i}"));
    }
}

/// Polls `cond` with short sleeps until it holds or `timeout` passes; whether it held.
pub(crate) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// Waits until every child is asleep (blocked), twice in a row a little apart, so that a
/// spinning waiter is not mistaken for a sleeping one.
pub(crate) fn wait_asleep(children: &[&Child], what: &str) {
    let all = || children.iter().all(|c| c.is_sleeping());
    let ok = wait_until(Duration::from_secs(10), || {
        all() && {
            std::thread::sleep(Duration::from_millis(5));
            all()
        }
    });
    assert!(ok, "{what}: the children never all went to sleep");
}

/// `n` zeroed shared `AtomicU64` words, inherited by children forked later.
pub(crate) struct Words {
    pub(crate) region: Region,
    pub(crate) n: usize,
}

impl Words {
    pub(crate) fn new(n: usize) -> Self {
        Words {
            region: Region::anonymous(n * 8).expect("map scratch words"),
            n,
        }
    }

    pub(crate) fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.n);
        self.region
            .get(Offset::new(i as u64 * 8))
            .expect("in bounds")
    }
}

static NAMES: AtomicU64 = AtomicU64::new(0);
/// The runner's pid, set before any case is forked: names carry it, so that the runner can
/// remove what a case killed by the watchdog left behind.
pub(crate) static RUNNER_PID: AtomicU64 = AtomicU64::new(0);

/// A fresh shared-memory name for this run.
pub(crate) fn unique_name(tag: &str) -> String {
    format!(
        "test-prim-{}-{tag}-{}",
        RUNNER_PID.load(Ordering::Relaxed),
        NAMES.fetch_add(1, Ordering::Relaxed)
    )
}

/// A small seeded generator (splitmix64).
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

pub(crate) fn seed() -> u64 {
    std::env::var("BAOZI_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| baozi_sync::monotonic_ns() ^ u64::from(std::process::id()))
}

// ------------------------------------------------------------------------------------------
// Runner
// ------------------------------------------------------------------------------------------

pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) run: fn(),
    pub(crate) timeout: Duration,
}

pub(crate) fn case(name: &'static str, run: fn()) -> Case {
    Case {
        name,
        run,
        timeout: Duration::from_secs(60),
    }
}

/// Runs the selected cases (arguments: substrings selecting cases; `--list`; other flags are
/// ignored), prints one line per case and one `N passed, N failed` line, and exits non-zero on
/// any failure.
pub(crate) fn run(cases: Vec<Case>) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let list = args.iter().any(|a| a == "--list");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<&Case> = cases
        .iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())))
        .collect();
    if list {
        for c in &selected {
            println!("{}: test", c.name);
        }
        std::process::exit(0);
    }
    RUNNER_PID.store(u64::from(std::process::id()), Ordering::Relaxed);
    // SAFETY: prctl has no memory-safety preconditions; orphans of a case are re-parented to
    // this process, which reaps them.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    println!(
        "\nrunning {} cases (each in its own process group, under a watchdog)",
        selected.len()
    );
    let started = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    let mut failures = Vec::new();
    for c in selected {
        let start = Instant::now();
        let outcome = run_case(c);
        let secs = start.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("test {} ... ok ({secs:.2} s)", c.name);
            }
            Err(why) => {
                failed += 1;
                println!("test {} ... FAILED ({why}; {secs:.2} s)", c.name);
                failures.push(c.name);
            }
        }
        flush();
    }
    remove_leftover_names();
    if !failures.is_empty() {
        println!("\nfailures: {}", failures.join(", "));
    }
    println!("(all cases: {:.1} s)", started.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed");
    flush();
    std::process::exit(i32::from(failed > 0));
}

impl Case {
    pub(crate) fn timeout(mut self, secs: u64) -> Self {
        self.timeout = Duration::from_secs(secs);
        self
    }
}

pub(crate) fn run_case(c: &Case) -> Result<(), String> {
    flush();
    // SAFETY: the runner never starts a thread, so forking it is safe.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: no memory-safety preconditions. The case leads its own process group so the
        // watchdog can kill all it started; it dies with the runner.
        unsafe {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        let code = catch_unwind(c.run).map_or(101, |()| 0);
        flush();
        // SAFETY: leaves without unwinding into the runner.
        unsafe { libc::_exit(code) }
    }
    // SAFETY: as above; whichever of the two setpgid calls runs first makes the group.
    unsafe { libc::setpgid(pid, pid) };
    let mut child = Child { pid, exit: None };
    let outcome = match child.wait_timeout(c.timeout) {
        Some(Exit::Code(0)) => Ok(()),
        Some(Exit::Code(101)) => Err("panicked".to_owned()),
        Some(e) => Err(format!("ended with {e:?}")),
        None => {
            // SAFETY: -pid is the case's own process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            child.kill();
            Err(format!(
                "WATCHDOG: still running after {:?}; its process group was SIGKILLed",
                c.timeout
            ))
        }
    };
    // Whatever the case left running dies now; reap what was re-parented to us.
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: status is a valid int.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        if r < 0 || start.elapsed() > Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    outcome
}

/// Named objects of a case killed by the watchdog are never unlinked by their handles.
pub(crate) fn remove_leftover_names() {
    let prefix = format!("baozi-test-prim-{}-", std::process::id());
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
