//! Helpers shared by the multi-process tests (STYLE.md section 3, item 19).
//!
//! * [`run_main`]: the runner of the `harness = false` binaries. Each case runs in a forked
//!   process that leads its own process group, under a watchdog: a case that outlives its bound
//!   has its whole group SIGKILLed and fails loudly. The runner itself stays single-threaded (it
//!   never starts a thread), so forking from it is safe, and it is a child subreaper, so every
//!   process a case leaves behind is reaped. It prints one line per case and closes with exactly
//!   one `N passed, N failed` line.
//! * [`fork`] / [`fork_code`]: run a closure in a child under `catch_unwind`; the child always
//!   leaves with `_exit` (101 on panic), never unwinds into the parent's code, and dies with its
//!   parent (`PR_SET_PDEATHSIG`). [`Child`] reaps with a timeout and kills-and-reaps on drop.
//! * [`unique_name`] / [`ShmName`]: shared-memory names with a prefix, the pid and a counter,
//!   unlinked on drop.
//! * [`Ledger`]: an anonymous region of `AtomicU64` words where children record what they did.
//! * [`Rng`]: a small seeded generator (splitmix64), so a failing run can be replayed.
//!
//! Not every test binary uses every helper.
#![allow(dead_code)]

use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baozi::shm::{Offset, Region};

/// Exit code of a forked child whose body panicked.
pub(crate) const CHILD_PANICKED: i32 = 101;
/// Exit code of a forked child whose parent was already gone when it started.
pub(crate) const CHILD_ORPHANED: i32 = 102;

/// The default bound on one case; `BAOZI_CASE_TIMEOUT_S` overrides it for every case.
pub(crate) const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Flushes stdout and stderr (before a fork, so buffered text is not written twice, and before
/// `_exit`, which skips Rust's own flushing).
pub(crate) fn flush_std() {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable between processes, unlike `Instant`.
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", io::Error::last_os_error());
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Polls `cond` (with short sleeps) until it holds or `timeout` passes; whether it held.
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

/// The scheduler state letter of a process (`R`, `S`, `D`, `Z`...), from `/proc/PID/stat`.
pub(crate) fn proc_state(pid: libc::pid_t) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows the last ')'.
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

// ------------------------------------------------------------------------------------------
// Children
// ------------------------------------------------------------------------------------------

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It called `_exit(code)`.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    fn from_status(status: libc::c_int) -> Exit {
        if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(-1)
        }
    }

    /// Exited with code 0.
    pub(crate) fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// Killed by SIGKILL.
    pub(crate) fn sigkilled(self) -> bool {
        self == Exit::Signal(libc::SIGKILL)
    }
}

/// A forked child. Dropping one that was not reaped SIGKILLs and reaps it, so a failing test
/// leaves neither stray processes nor zombies.
#[derive(Debug)]
pub(crate) struct Child {
    pid: libc::pid_t,
    exit: Option<Exit>,
}

/// Runs `body` in a forked child, which exits 0 when it returns and [`CHILD_PANICKED`] when it
/// panics. See [`fork_code`].
pub(crate) fn fork(body: impl FnOnce()) -> Child {
    fork_code(|| {
        body();
        0
    })
}

/// Runs `body` in a forked child, which leaves with `_exit(body())`, or `_exit(101)` if `body`
/// panics: the child never returns into the caller's code. The child dies with the process that
/// forked it (`PR_SET_PDEATHSIG`).
///
/// Call it only from a single-threaded process (a case of [`run_main`] is one): the child of a
/// multi-threaded process may find a lock held for ever.
pub(crate) fn fork_code(body: impl FnOnce() -> i32) -> Child {
    flush_std();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the caller forks from a single-threaded process (this function's contract), so the
    // child gets a consistent copy of every process-private lock.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid have no memory-safety preconditions.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(CHILD_ORPHANED);
            }
        }
        let code = catch_unwind(AssertUnwindSafe(body)).unwrap_or(CHILD_PANICKED);
        flush_std();
        // SAFETY: _exit ends the process without running the parent's destructors or unwinding.
        unsafe { libc::_exit(code) }
    }
    Child { pid, exit: None }
}

impl Child {
    /// The child's pid.
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// How it ended, if it has ended (reaps it then).
    pub(crate) fn try_wait(&mut self) -> Option<Exit> {
        if self.exit.is_none() {
            let mut status = 0;
            // SAFETY: status is a valid c_int; pid is our own unreaped child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.exit = Some(Exit::from_status(status));
            } else if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    panic!("waitpid({}) failed: {e}", self.pid);
                }
            }
        }
        self.exit
    }

    /// Waits at most `timeout` for it to end.
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<Exit> {
        let mut exit = None;
        wait_until(timeout, || {
            exit = self.try_wait();
            exit.is_some()
        });
        exit
    }

    /// Waits at most `timeout`; if it is still running then, kills and reaps it and panics with
    /// `what` (a hang is a failure, never a wedged test).
    pub(crate) fn join(mut self, timeout: Duration, what: &str) -> Exit {
        match self.wait_timeout(timeout) {
            Some(exit) => exit,
            None => {
                self.kill_and_reap();
                panic!(
                    "{what} (pid {}) did not finish within {timeout:?}: killed it",
                    self.pid
                )
            }
        }
    }

    /// [`join`](Self::join), and panics unless it exited with code 0.
    pub(crate) fn join_ok(self, timeout: Duration, what: &str) {
        let pid = self.pid;
        let exit = self.join(timeout, what);
        assert!(exit.success(), "{what} (pid {pid}) failed: {exit:?}");
    }

    /// Sends `sig` unless it has been reaped (a reaped pid may belong to someone else).
    pub(crate) fn signal(&self, sig: libc::c_int) {
        if self.exit.is_none() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child, so
            // it cannot have been reused.
            unsafe { libc::kill(self.pid, sig) };
        }
    }

    /// SIGKILLs it (if still running) and waits for it.
    pub(crate) fn kill_and_reap(&mut self) -> Exit {
        if let Some(exit) = self.exit {
            return exit;
        }
        self.signal(libc::SIGKILL);
        let mut status = 0;
        loop {
            // SAFETY: as in try_wait.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                let exit = Exit::from_status(status);
                self.exit = Some(exit);
                return exit;
            }
            if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                // Already reaped elsewhere: nothing left to do.
                self.exit = Some(Exit::Code(-1));
                return Exit::Code(-1);
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.kill_and_reap();
        }
    }
}

/// Waits for every child in turn (sharing one overall bound) and panics unless all exited 0.
pub(crate) fn join_all_ok(children: Vec<Child>, timeout: Duration, what: &str) {
    let start = Instant::now();
    for (i, c) in children.into_iter().enumerate() {
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(10));
        c.join_ok(left, &format!("{what} #{i}"));
    }
}

/// Waits at most `timeout` for a spawned (exec'd) process; on timeout kills it and panics.
pub(crate) fn wait_process(
    child: &mut std::process::Child,
    timeout: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().expect("try_wait on a spawned process");
        status.is_some()
    });
    match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} (pid {}) did not finish within {timeout:?}: killed it",
                child.id()
            )
        }
    }
}

// ------------------------------------------------------------------------------------------
// Names and shared scratch memory
// ------------------------------------------------------------------------------------------

static NAME_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh shared-memory name: `test-TAG-PID-N`.
pub(crate) fn unique_name(tag: &str) -> String {
    let n = NAME_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("test-{tag}-{}-{n}", std::process::id())
}

/// A unique name whose `/dev/shm/baozi-NAME` file is removed on drop (if it still exists),
/// whatever the test did with it.
#[derive(Debug)]
pub(crate) struct ShmName {
    name: String,
}

impl ShmName {
    /// A fresh name (see [`unique_name`]); nothing is created.
    pub(crate) fn new(tag: &str) -> Self {
        ShmName {
            name: unique_name(tag),
        }
    }

    /// The name to pass to `create`/`open`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The file in `/dev/shm`.
    pub(crate) fn path(&self) -> std::path::PathBuf {
        format!("/dev/shm/{}{}", baozi::shm::NAME_PREFIX, self.name).into()
    }

    /// Whether the file exists now.
    pub(crate) fn exists(&self) -> bool {
        self.path().exists()
    }
}

impl Drop for ShmName {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

/// `n` zeroed `AtomicU64` words in an anonymous region, shared with children forked later.
#[derive(Debug)]
pub(crate) struct Ledger {
    region: Region,
    words: usize,
}

impl Ledger {
    /// A ledger of `words` words.
    pub(crate) fn new(words: usize) -> Self {
        let region = Region::anonymous(words.max(1) * 8).expect("map a ledger");
        Ledger { region, words }
    }

    /// Word `i`.
    pub(crate) fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words, "ledger word {i} of {}", self.words);
        self.region
            .get(Offset::new(i as u64 * 8))
            .expect("ledger word in bounds")
    }

    /// How many words it has.
    pub(crate) fn len(&self) -> usize {
        self.words
    }

    /// Sets every word to 0.
    pub(crate) fn clear(&self) {
        for i in 0..self.words {
            self.word(i).store(0, Ordering::Relaxed);
        }
    }
}

/// A start line for children: they wait at [`Gate::wait`] until the parent calls
/// [`Gate::open`], so that all of them start at once instead of one after another as forked.
#[derive(Debug)]
pub(crate) struct Gate {
    ledger: Ledger,
}

impl Gate {
    /// A closed gate, shared with children forked later.
    pub(crate) fn new() -> Self {
        Gate {
            ledger: Ledger::new(1),
        }
    }

    /// Lets every waiting child go.
    pub(crate) fn open(&self) {
        self.ledger.word(0).store(1, Ordering::Release);
    }

    /// Waits (yielding) until the gate opens; panics after 30 s.
    pub(crate) fn wait(&self) {
        let start = Instant::now();
        while self.ledger.word(0).load(Ordering::Acquire) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the gate never opened"
            );
            std::thread::yield_now();
        }
    }
}

/// splitmix64: small, fast, good enough to pick delays and sizes; seeded so runs replay.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The seed in the environment variable `var`, or one from the clock and pid; returns the
    /// seed too, to print it.
    pub(crate) fn from_env(var: &str) -> (Self, u64) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                now_ns() ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15
            });
        (Rng(seed), seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num/den`.
    pub(crate) fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

// ------------------------------------------------------------------------------------------
// The runner
// ------------------------------------------------------------------------------------------

/// One named case of a `harness = false` test binary.
#[derive(Debug)]
pub(crate) struct Case {
    name: &'static str,
    run: fn(),
    timeout: Duration,
}

/// A case with the default bound ([`DEFAULT_CASE_TIMEOUT`]).
pub(crate) fn case(name: &'static str, run: fn()) -> Case {
    Case {
        name,
        run,
        timeout: DEFAULT_CASE_TIMEOUT,
    }
}

impl Case {
    /// The same case with another bound.
    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// What the command line asked for.
struct Selection {
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
    list: bool,
}

impl Selection {
    fn from_args() -> Self {
        let mut sel = Selection {
            filters: Vec::new(),
            skips: Vec::new(),
            exact: false,
            list: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--exact" => sel.exact = true,
                "--list" => sel.list = true,
                "--skip" => sel.skips.extend(args.next()),
                // libtest options that take a value: accepted and ignored.
                "--test-threads" | "--color" | "--format" | "--logfile" => {
                    let _ = args.next();
                }
                _ if a.starts_with('-') => {} // --nocapture, --quiet, --test-threads=1, ...
                _ => sel.filters.push(a),
            }
        }
        sel
    }

    fn wants(&self, name: &str) -> bool {
        let hit = |f: &String| {
            if self.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(hit))
            && !self.skips.iter().any(|s| name.contains(s.as_str()))
    }
}

/// How one case ended.
enum Outcome {
    Passed,
    Failed(String),
}

/// Runs the selected cases one after another, each in its own forked process group under a
/// watchdog, prints `test NAME ... ok` / `FAILED` per case and then exactly one line
/// `N passed, N failed`, and exits (non-zero if any failed).
///
/// Arguments: substrings selecting cases (all when none), `--exact`, `--skip PATTERN`, `--list`;
/// libtest's other flags are accepted and ignored. `BAOZI_CASE_TIMEOUT_S` overrides every bound.
pub(crate) fn run_main(cases: Vec<Case>) -> ! {
    let sel = Selection::from_args();
    if sel.list {
        for c in cases.iter().filter(|c| sel.wants(c.name)) {
            println!("{}: test", c.name);
        }
        flush_std();
        std::process::exit(0);
    }
    let override_timeout = std::env::var("BAOZI_CASE_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) has no memory-safety preconditions. Processes a case
    // orphans are re-parented to this one, which reaps them.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let selected: Vec<&Case> = cases.iter().filter(|c| sel.wants(c.name)).collect();
    println!(
        "\nrunning {} case{} (each in its own process group, under a watchdog)",
        selected.len(),
        if selected.len() == 1 { "" } else { "s" }
    );
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut failures = Vec::new();
    for c in selected {
        let timeout = override_timeout.unwrap_or(c.timeout);
        let start = Instant::now();
        let outcome = run_case(c, timeout);
        let secs = start.elapsed().as_secs_f64();
        match outcome {
            Outcome::Passed => {
                passed += 1;
                println!("test {} ... ok ({secs:.2} s)", c.name);
            }
            Outcome::Failed(why) => {
                failed += 1;
                println!("test {} ... FAILED ({why}; {secs:.2} s)", c.name);
                failures.push(c.name);
            }
        }
        flush_std();
    }
    if !failures.is_empty() {
        println!("\nfailures: {}", failures.join(", "));
    }
    println!("{passed} passed, {failed} failed");
    flush_std();
    std::process::exit(i32::from(failed > 0))
}

fn run_case(c: &Case, timeout: Duration) -> Outcome {
    flush_std();
    // SAFETY: the runner never starts a thread, so forking it is safe.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: setpgid/prctl have no memory-safety preconditions. The case leads a process
        // group of its own, so the watchdog can kill everything it started at once.
        unsafe {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
        let code = catch_unwind(c.run).map_or(CHILD_PANICKED, |()| 0);
        flush_std();
        // SAFETY: leaves without unwinding into the runner's code.
        unsafe { libc::_exit(code) }
    }
    // Also from this side, so the group exists before any kill (whichever runs first wins).
    // SAFETY: as above.
    unsafe { libc::setpgid(pid, pid) };
    let mut child = Child { pid, exit: None };
    let outcome = match child.wait_timeout(timeout) {
        Some(Exit::Code(0)) => Outcome::Passed,
        Some(Exit::Code(CHILD_PANICKED)) => Outcome::Failed("panicked".to_owned()),
        Some(exit) => Outcome::Failed(format!("ended with {exit:?}")),
        None => {
            // SAFETY: kill has no memory-safety preconditions; -pid is the case's group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            child.kill_and_reap();
            Outcome::Failed(format!(
                "WATCHDOG: still running after {timeout:?}; its process group was SIGKILLed"
            ))
        }
    };
    // Whatever the case left running in its group dies now; then reap what was re-parented to us.
    // SAFETY: as above.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    reap_orphans(Duration::from_secs(5));
    outcome
}

/// Reaps children re-parented to this (subreaper) process, until there are none or `bound`.
fn reap_orphans(bound: Duration) {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: status is a valid c_int.
        let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if r > 0 {
            continue;
        }
        if r < 0 || start.elapsed() >= bound {
            return; // ECHILD: nobody left
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
