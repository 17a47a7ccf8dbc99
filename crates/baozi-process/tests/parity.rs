//! Python-parity regressions of the pool (issue 16), one forked case at a time under a watchdog
//! (`harness = false`): imap's input errors at their position, map waiting for every job,
//! decode failures reaching `on_ready`, worker-start failures failing `Pool::new`, and the
//! worker's side of a task's panic.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use baozi_process::{Pool, ProcessError, StartMethod};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod common;
use common::{children, e, run_cases, sleep_ms, Case};

// ---- task functions (plain fns: they cross the fork by address) -----------------------------

fn sqr(x: u32) -> u32 {
    x * x
}

/// Fails at once for 0; otherwise sleeps `ms`, then leaves a mark in the file `path`.
fn fail_now_or_sleep_then_mark((ms, path): (u64, String)) -> u64 {
    if ms == 0 {
        panic!("fails at once");
    }
    sleep_ms(ms);
    std::fs::write(&path, b"finished").expect("write the mark");
    ms
}

/// A value whose `Deserialize` panics on 13: it encodes in the worker, and blows up when the
/// parent decodes it.
#[derive(Debug)]
struct Grenade(u32);

impl Serialize for Grenade {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Grenade {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if v == 13 {
            panic!("grenade {v} went off");
        }
        Ok(Grenade(v))
    }
}

fn grenade(x: u32) -> Grenade {
    Grenade(x)
}

/// A value that will not encode (its `Serialize` says no) but decodes fine.
#[derive(Debug)]
struct Shy(u32);

impl Serialize for Shy {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("too shy to travel"))
    }
}

impl<'de> Deserialize<'de> for Shy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(Shy)
    }
}

fn shy_len(s: Shy) -> u32 {
    s.0
}

fn make_shy(x: u32) -> Shy {
    Shy(x)
}

/// Decodes only values under 100 (an error, not a panic, from its `Deserialize`).
#[derive(Debug, Serialize)]
struct Small(u32);

impl<'de> Deserialize<'de> for Small {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if v >= 100 {
            return Err(serde::de::Error::custom(format!("{v} is not small")));
        }
        Ok(Small(v))
    }
}

fn small(s: Small) -> u32 {
    s.0
}

#[inline(never)]
fn burns_the_buns(x: u32) -> u32 {
    if x > 0 {
        panic!("burnt bun {x}");
    }
    x
}

/// The text of a panic payload.
fn payload_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

// ---- cases ---------------------------------------------------------------------------------

/// Defect 1: Python's imap yields 0, 1, 4 and then raises the input's error; the input panic
/// must come out after every result before it, in every form of imap.
fn imap_input_panic_comes_at_its_position() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    let input = || (0..10u32).map(|i| if i == 3 { panic!("bad input {i}") } else { i });
    for (form, chunksize) in [("imap", 1), ("imap", 2), ("imap_unordered", 1)] {
        let chunked = pool.with_chunksize(chunksize);
        let mut it = if form == "imap" {
            chunked.imap(sqr, input()).map_err(e)?
        } else {
            chunked.imap_unordered(sqr, input()).map_err(e)?
        };
        let mut got = Vec::new();
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            for x in it.by_ref() {
                got.push(x.expect("no task fails"));
            }
        }));
        got.sort_unstable();
        check!(
            got == [0, 1, 4],
            "{form} chunksize {chunksize}: results before the panic: {got:?}"
        );
        match r {
            Err(p) => check!(payload_text(&*p) == "bad input 3", "{form}: the panic"),
            Ok(()) => return Err(format!("{form}: the input's panic was lost")),
        }
    }
    // The pool is fine afterwards.
    check!(pool.map(sqr, 0..4).map_err(e)? == [0, 1, 4, 9]);
    Ok(())
}

/// Defect 2: map returns the first error only once every job of the call has finished.
fn map_returns_only_when_every_job_is_done() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    let mark = format!("/tmp/baozi-parity-map-{}", std::process::id());
    let _ = std::fs::remove_file(&mark);
    let jobs = [(0u64, mark.clone()), (800, mark.clone())];
    let t = Instant::now();
    let r = pool
        .with_chunksize(1)
        .map(fail_now_or_sleep_then_mark, jobs.clone());
    let took = t.elapsed();
    check!(
        matches!(&r, Err(ProcessError::TaskPanicked { message, .. }) if message == "fails at once"),
        "{r:?}"
    );
    check!(
        std::path::Path::new(&mark).exists(),
        "map returned after {took:?} while its other job was still running"
    );
    std::fs::remove_file(&mark).map_err(e)?;
    // map_async: not ready while a job runs, though one has failed.
    let m = pool
        .with_chunksize(1)
        .map_async(fail_now_or_sleep_then_mark, jobs)
        .map_err(e)?;
    sleep_ms(300);
    check!(!m.ready(), "ready with a job still running");
    check!(m.successful().is_none());
    check!(m.wait_timeout(Duration::from_secs(10)));
    check!(m.successful() == Some(false));
    check!(std::path::Path::new(&mark).exists());
    let _ = std::fs::remove_file(&mark);
    Ok(())
}

/// Defect 3 and part of "the worker side": every outcome reaches `on_ready`, a result whose
/// `Deserialize` panics in the parent included, as a decode error; encode and decode failures
/// are distinct errors, on either side.
fn codec_failures_are_distinct_and_reach_callbacks() -> Result<(), String> {
    let pool = Pool::new(2).map_err(e)?;
    let (tx, rx) = mpsc::channel();
    pool.apply_async(grenade, 13)
        .map_err(e)?
        .on_ready(move |r| tx.send(r.map(|g| g.0)).unwrap());
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Err(ProcessError::Decode(m))) => {
            check!(
                m.contains("grenade 13 went off") && m.contains("parent"),
                "{m}"
            )
        }
        other => return Err(format!("the callback got {other:?}")),
    }
    // The same, waited for: an error, not a panic on the caller's thread.
    match pool.apply(grenade, 13) {
        Err(ProcessError::Decode(m)) => check!(m.contains("grenade 13"), "{m}"),
        other => return Err(format!("{other:?}")),
    }
    check!(pool.apply(grenade, 12).map_err(e)?.0 == 12);
    // Arguments that do not encode in the parent: refused at submission.
    match pool.apply_async(shy_len, Shy(1)) {
        // (postcard keeps no custom message: the variant and the side tell what failed.)
        Err(ProcessError::Encode(m)) => check!(m.contains("arguments") && m.contains("parent")),
        other => return Err(format!("{:?}", other.map(|_| ()))),
    }
    // A result that does not encode in the worker.
    match pool.apply(make_shy, 1) {
        Err(ProcessError::Encode(m)) => check!(m.contains("result") && m.contains("worker")),
        other => return Err(format!("{other:?}")),
    }
    // Arguments that do not decode in the worker.
    match pool.apply(small, Small(100)) {
        Err(ProcessError::Decode(m)) => check!(m.contains("arguments") && m.contains("worker")),
        other => return Err(format!("{other:?}")),
    }
    check!(pool.apply(small, Small(7)).map_err(e)? == 7);
    Ok(())
}

/// The tasks (threads: RLIMIT_NPROC counts them) of the processes whose real uid is `uid`,
/// from /proc.
fn tasks_of(uid: u32) -> usize {
    let mut n = 0;
    for ent in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if ent.file_name().to_string_lossy().parse::<i32>().is_err() {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(ent.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|u| u.parse::<usize>().ok())
        };
        if field("Uid:") == Some(uid as usize) {
            n += field("Threads:").unwrap_or(1);
        }
    }
    n
}

/// Root is exempt from RLIMIT_NPROC: the case process becomes `nobody` first. `false` (and a
/// note) where it cannot: a user namespace without `nobody` mapped.
fn unprivileged() -> bool {
    // SAFETY: plain syscalls on this (single-threaded) case process.
    unsafe {
        if libc::getuid() == 0 {
            let nobody = 65534;
            let dropped = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(nobody, nobody, nobody) == 0
                && libc::setresuid(nobody, nobody, nobody) == 0;
            if !dropped {
                println!(
                    "    skipped: root cannot become nobody here, and root ignores RLIMIT_NPROC"
                );
                return false;
            }
        }
    }
    true
}

/// The parent of `pid`, from /proc.
fn ppid_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Defect 4, later: a replacement worker that cannot be forked leaves its slot empty, the pool
/// runs on with the others, and with none left it breaks (the fork's error in the reason)
/// instead of leaving a task waiting for a worker that never comes.
fn replacement_fork_failure_breaks_pool_when_none_left() -> Result<(), String> {
    // Fork only: this case drops to another user, and a process that changed credentials is not
    // dumpable, so spawned workers could not open its /proc/PID/fd to attach the pool's queues.
    baozi_process::set_start_method(Some(StartMethod::Fork));
    if !unprivileged() {
        return Ok(());
    }
    let pool = Pool::builder()
        .processes(2)
        .maxtasksperchild(1)
        .build()
        .map_err(e)?;
    let pids = pool.worker_pids();
    check!(pids.len() == 2, "{pids:?}");
    let spawner = ppid_of(pids[0]).ok_or("no spawner")?;
    // From now on the spawner cannot fork: RLIMIT_NPROC 1 for a user with several tasks.
    let one = libc::rlimit {
        rlim_cur: 1,
        rlim_max: 1,
    };
    // SAFETY: a valid rlimit, for a process of the same user.
    check!(unsafe { libc::prlimit(spawner, libc::RLIMIT_NPROC, &one, std::ptr::null_mut()) } == 0);
    // Each worker runs one task, exits, and cannot be replaced.
    check!(pool.apply(sqr, 3).map_err(e)? == 9);
    check!(pool.apply(sqr, 4).map_err(e)? == 16);
    let t = Instant::now();
    match pool.apply(sqr, 5) {
        Err(ProcessError::PoolBroken { reason }) => {
            check!(reason.contains("fork"), "{reason}")
        }
        other => return Err(format!("{other:?}")),
    }
    check!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    Ok(())
}

/// Defect 4: with forks failing (RLIMIT_NPROC), `Pool::new` fails with the error and stops the
/// workers already started.
fn failed_worker_start_fails_pool_new() -> Result<(), String> {
    // Fork only: this case drops to another user, and a process that changed credentials is not
    // dumpable, so spawned workers could not open its /proc/PID/fd to attach the pool's queues.
    baozi_process::set_start_method(Some(StartMethod::Fork));
    if !unprivileged() {
        return Ok(());
    }
    // SAFETY: getuid touches no memory.
    let uid = unsafe { libc::getuid() };
    let allow = |extra: usize| -> Result<usize, String> {
        let limit = (tasks_of(uid) + extra) as libc::rlim_t;
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid, writable rlimit.
        check!(unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut rl) } == 0);
        rl.rlim_cur = limit.min(rl.rlim_max);
        // SAFETY: a valid rlimit for this process.
        check!(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &rl) } == 0);
        Ok(limit as usize)
    };
    let before = tasks_of(uid);
    // Room for the spawner, the result thread (threads count) and two workers: a pool of 2
    // comes up...
    allow(4)?;
    let two = Pool::new(2).map_err(e)?;
    check!(two.apply(sqr, 9).map_err(e)? == 81);
    drop(two);
    check!(children().is_empty());
    // ...a pool of 5 does not, and says why.
    allow(4)?;
    let t = Instant::now();
    match Pool::new(5) {
        Err(ProcessError::Fork(io)) => {
            check!(io.raw_os_error() == Some(libc::EAGAIN), "{io}")
        }
        other => return Err(format!("Pool::new(5) gave {other:?}")),
    }
    check!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Nothing of it is left: the spawner is reaped, and so are the two workers it had started
    // (orphans would come to this case process, a subreaper).
    sleep_ms(100);
    check!(children().is_empty(), "left: {:?}", children());
    check!(
        tasks_of(uid) == before,
        "{} processes of uid {uid}, {before} before",
        tasks_of(uid)
    );
    Ok(())
}

/// Pool::new waits for the workers' forks, but an initializer that panics meanwhile still
/// gives a pool (that reports itself broken), never an error from `build` or a hang.
fn broken_initializer_while_starting() -> Result<(), String> {
    for _ in 0..5 {
        let pool = Pool::builder()
            .processes(8)
            .initializer_fn(|| panic!("no yeast"))
            .build()
            .map_err(e)?;
        match pool.apply(sqr, 2) {
            Err(ProcessError::PoolBroken { reason }) => check!(reason.contains("no yeast")),
            other => return Err(format!("{other:?}")),
        }
    }
    Ok(())
}

/// Part 2: a task's panic carries the worker's location always, and its backtrace when
/// RUST_BACKTRACE asks for one in the worker.
fn task_panic_carries_the_worker_side() -> Result<(), String> {
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    std::env::set_var("RUST_BACKTRACE", "0");
    let quiet = Pool::new(1).map_err(e)?;
    match quiet.apply(burns_the_buns, 1) {
        Err(ProcessError::TaskPanicked {
            message,
            location,
            backtrace,
        }) => {
            check!(message == "burnt bun 1", "{message}");
            let at = location.unwrap_or_default();
            check!(at.contains("parity.rs:"), "location {at:?}");
            check!(backtrace.is_none(), "a backtrace nobody asked for");
        }
        other => return Err(format!("{other:?}")),
    }
    drop(quiet);
    std::env::set_var("RUST_LIB_BACKTRACE", "1");
    let pool = Pool::new(1).map_err(e)?;
    match pool.apply(burns_the_buns, 2) {
        Err(err @ ProcessError::TaskPanicked { .. }) => {
            let shown = err.to_string();
            let ProcessError::TaskPanicked { backtrace, .. } = err else {
                unreachable!()
            };
            let bt = backtrace.ok_or("no backtrace with RUST_LIB_BACKTRACE=1")?;
            check!(bt.contains("burns_the_buns"), "backtrace:\n{bt}");
            // file:line in a backtrace needs debug info (none in a release build by default).
            check!(
                !cfg!(debug_assertions) || bt.contains("parity.rs:"),
                "backtrace without file:line:\n{bt}"
            );
            check!(shown.contains("burnt bun 2") && shown.contains("worker backtrace"));
        }
        other => return Err(format!("{other:?}")),
    }
    Ok(())
}

const CASES: &[(&str, Case)] = &[
    (
        "imap_input_panic_comes_at_its_position",
        imap_input_panic_comes_at_its_position,
    ),
    (
        "map_returns_only_when_every_job_is_done",
        map_returns_only_when_every_job_is_done,
    ),
    (
        "codec_failures_are_distinct_and_reach_callbacks",
        codec_failures_are_distinct_and_reach_callbacks,
    ),
    (
        "failed_worker_start_fails_pool_new",
        failed_worker_start_fails_pool_new,
    ),
    (
        "replacement_fork_failure_breaks_pool_when_none_left",
        replacement_fork_failure_breaks_pool_when_none_left,
    ),
    (
        "broken_initializer_while_starting",
        broken_initializer_while_starting,
    ),
    (
        "task_panic_carries_the_worker_side",
        task_panic_carries_the_worker_side,
    ),
];

fn main() {
    baozi_process::main_guard();
    run_cases(CASES);
}
