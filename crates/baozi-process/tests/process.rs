//! Process tests, one forked case at a time under a watchdog (`harness = false`: no test threads,
//! so every fork happens in a single-threaded process).
//!
//! The processes a case starts run under the start method of the run (`BAOZI_START_METHOD`:
//! fork by default; CI runs the suite under spawn and forkserver too) wherever they are tasks
//! ([`mk`], `Builder::task`); what only a fork can carry (a capturing closure, `spawn`'s value,
//! a `ProcessBody`) asks for fork ([`FORK`]).
//!
//! Each case runs in its own child of this runner, which is also a child subreaper, so processes
//! orphaned by a case are reaped and checked there. The runner waits for a case with a deadline
//! and kills its process group when it runs over. After every case the case process checks that
//! it has no children left (no zombies).

use std::fs;
use std::io::{Read, Seek};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use baozi_process::{
    cpu_count, current_process, parent_pid, IntoExitCode, JoinHandle, Process, ProcessError,
    StartMethod,
};
use baozi_shm::{Offset, Region};
use serde::{Deserialize, Serialize};

mod common;
use common::{children, e, run_cases, running, sleep_ms, Case};

/// What only a fork carries.
const FORK: StartMethod = StartMethod::Fork;

/// A process that runs `f` as a task, under the run's start method.
fn mk<R: IntoExitCode>(f: fn(()) -> R) -> Process {
    Process::task(f, ()).expect("a task")
}

/// `spawn` (a value back), by fork: the closure is carried, not named.
fn spawn<T, F>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Serialize + serde::de::DeserializeOwned + 'static,
{
    baozi_process::Builder::new()
        .start_method(FORK)
        .spawn(f)
        .expect("spawn")
}

/// `spawn` for a plain function (a task: the run's start method).
fn spawn_t<T>(f: fn(()) -> T) -> JoinHandle<T>
where
    T: Serialize + serde::de::DeserializeOwned + 'static,
{
    baozi_process::Builder::new()
        .spawn_task(f, ())
        .expect("spawn_task")
}

// ---- cases ---------------------------------------------------------------------------------

fn exitcode_zero() -> Result<(), String> {
    let p = mk(|()| {});
    check!(p.exitcode().is_none() && p.pid().is_none());
    p.start().map_err(e)?;
    check!(p.pid().is_some());
    check!(p.join().map_err(e)? == 0);
    check!(p.exitcode() == Some(0));
    check!(
        p.join().map_err(e)? == 0,
        "a second join returns the same code"
    );
    Ok(())
}

fn exitcode_n() -> Result<(), String> {
    let p = mk(|()| 42);
    p.start().map_err(e)?;
    check!(p.join().map_err(e)? == 42);
    let p = mk(|()| -> Result<(), String> { Err("stale dough".into()) });
    p.start().map_err(e)?;
    check!(p.join().map_err(e)? == 1, "Err from the closure gives 1");
    Ok(())
}

fn exitcode_killed() -> Result<(), String> {
    let p = mk(|()| sleep_ms(30_000));
    p.start().map_err(e)?;
    check!(p.exitcode().is_none(), "None while running");
    p.kill().map_err(e)?;
    check!(p.join().map_err(e)? == -9);
    check!(p.exitcode() == Some(-9));
    p.kill().map_err(e)?; // a no-op after join
    Ok(())
}

fn exitcode_terminated() -> Result<(), String> {
    let p = mk(|()| sleep_ms(30_000));
    p.start().map_err(e)?;
    p.terminate().map_err(e)?;
    check!(p.join().map_err(e)? == -15);
    Ok(())
}

fn panic_exit_one_and_message() -> Result<(), String> {
    // Redirect stderr (fd 2) to a file for the child's panic message.
    let path = std::env::temp_dir().join(format!("baozi-process-panic-{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(e)?;
    let _ = fs::remove_file(&path);
    use std::os::fd::AsRawFd;
    // SAFETY: dup/dup2 on fds this process owns; fd 2 is restored below.
    let saved = unsafe { libc::dup(2) };
    // SAFETY: as above.
    unsafe { libc::dup2(file.as_raw_fd(), 2) };
    let p = mk(|()| -> i32 { panic!("the steamer is on fire") });
    let started = p.start();
    let code = p.join();
    // SAFETY: restores the saved stderr.
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    started.map_err(e)?;
    check!(code.map_err(e)? == 1, "a panic gives exit code 1");
    let mut text = String::new();
    file.rewind().map_err(e)?;
    file.read_to_string(&mut text).map_err(e)?;
    check!(
        text.contains("the steamer is on fire"),
        "panic message on stderr, got {text:?}"
    );
    Ok(())
}

fn join_timeout_then_kill() -> Result<(), String> {
    let p = mk(|()| sleep_ms(30_000));
    p.start().map_err(e)?;
    let t = Instant::now();
    let r = p.join_timeout(Duration::from_millis(300)).map_err(e)?;
    let took = t.elapsed();
    check!(r.is_none(), "still running");
    check!(
        took >= Duration::from_millis(300),
        "returned early: {took:?}"
    );
    check!(took < Duration::from_millis(800), "returned late: {took:?}");
    check!(p.is_alive());
    p.kill().map_err(e)?;
    check!(p.join().map_err(e)? == -9);
    // A timed join returns as soon as the child exits, well before the timeout.
    let p = mk(|()| sleep_ms(100));
    p.start().map_err(e)?;
    let t = Instant::now();
    check!(p.join_timeout(Duration::from_secs(10)).map_err(e)? == Some(0));
    check!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    Ok(())
}

fn is_alive_transitions() -> Result<(), String> {
    let p = mk(|()| sleep_ms(200));
    check!(!p.is_alive(), "not alive before start");
    p.start().map_err(e)?;
    check!(p.is_alive(), "alive after start");
    p.join().map_err(e)?;
    check!(!p.is_alive(), "not alive after join");
    let p = mk(|()| {});
    p.start().map_err(e)?;
    let t = Instant::now();
    while p.is_alive() {
        check!(
            t.elapsed() < Duration::from_secs(5),
            "never stopped being alive"
        );
        sleep_ms(5);
    }
    check!(p.exitcode() == Some(0), "is_alive reaped it");
    Ok(())
}

fn errors() -> Result<(), String> {
    let p = mk(|()| {});
    check!(matches!(p.join(), Err(ProcessError::NotStarted { .. })));
    check!(matches!(p.kill(), Err(ProcessError::NotStarted { .. })));
    p.start().map_err(e)?;
    check!(matches!(
        p.start(),
        Err(ProcessError::AlreadyStarted { .. })
    ));
    p.join().map_err(e)?;
    let msg = ProcessError::Died { pid: 7, signal: 9 }.to_string();
    check!(msg == "child process 7 was killed by signal 9", "{msg}");
    Ok(())
}

fn names() -> Result<(), String> {
    let region = Region::anonymous(4096).map_err(e)?;
    let ok: &AtomicI32 = region.get(Offset::new(0)).map_err(e)?;
    let a = mk(|()| {});
    let b = mk(|()| {});
    let c = Process::builder()
        .name("baker")
        .task(|()| {}, ())
        .map_err(e)?;
    check!(a.name() == "Process-1", "{}", a.name());
    check!(b.name() == "Process-2", "{}", b.name());
    check!(c.name() == "baker");
    check!(current_process().name() == "MainProcess");
    let parent = std::process::id() as i32;
    // The child sees its own name and parent, and counts its own children from 1.
    let ok_addr = std::ptr::from_ref::<AtomicI32>(ok) as usize;
    let d = Process::builder()
        .name("eater")
        .start_method(FORK)
        .spawn_fn(move || {
            // SAFETY: the region is mapped before the fork and outlives the child.
            let ok = unsafe { &*(ok_addr as *const AtomicI32) };
            let me = current_process();
            let inner = mk(|()| {});
            if me.name() == "eater"
                && me.pid() == std::process::id() as i32
                && parent_pid() == parent
                && inner.name() == "Process-1"
            {
                ok.store(1, Ordering::SeqCst);
            }
        });
    d.start().map_err(e)?;
    check!(d.join().map_err(e)? == 0);
    check!(
        ok.load(Ordering::SeqCst) == 1,
        "child's view of itself is wrong"
    );
    check!(mk(|()| {}).name() == "Process-3");
    Ok(())
}

fn daemon_dies_with_parent() -> Result<(), String> {
    let region = Region::anonymous(4096).map_err(e)?;
    let slot: &AtomicI32 = region.get(Offset::new(0)).map_err(e)?;
    let addr = std::ptr::from_ref::<AtomicI32>(slot) as usize;
    let middle = Process::builder().start_method(FORK).spawn_fn(move || {
        // SAFETY: the region is mapped before the fork and outlives this process.
        let slot = unsafe { &*(addr as *const AtomicI32) };
        let d = Process::builder()
            .daemon(true)
            .task(|()| sleep_ms(30_000), ())
            .expect("a task");
        d.start().expect("start daemon");
        slot.store(d.pid().unwrap(), Ordering::SeqCst);
        sleep_ms(30_000);
        drop(d);
    });
    middle.start().map_err(e)?;
    let t = Instant::now();
    let daemon = loop {
        match slot.load(Ordering::SeqCst) {
            0 if t.elapsed() < Duration::from_secs(5) => sleep_ms(5),
            0 => return Err("the daemon never started".into()),
            pid => break pid,
        }
    };
    check!(running(daemon), "daemon not running");
    middle.kill().map_err(e)?;
    check!(middle.join().map_err(e)? == -9);
    // This case process is a subreaper, so the orphaned daemon comes to us: wait for it.
    let mut status = 0;
    let t = Instant::now();
    loop {
        // SAFETY: status is a valid int.
        let r = unsafe { libc::waitpid(daemon, &mut status, libc::WNOHANG) };
        if r == daemon {
            break;
        }
        check!(
            t.elapsed() < Duration::from_secs(5),
            "daemon {daemon} outlived its parent"
        );
        sleep_ms(10);
    }
    check!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "daemon status {status:#x}"
    );
    check!(!running(daemon));
    common::reap_orphans();
    Ok(())
}

fn drop_daemon_kills_drop_other_joins() -> Result<(), String> {
    let d = Process::builder()
        .daemon(true)
        .task(|()| sleep_ms(30_000), ())
        .map_err(e)?;
    d.start().map_err(e)?;
    let pid = d.pid().unwrap();
    let t = Instant::now();
    drop(d);
    check!(t.elapsed() < Duration::from_secs(2), "daemon drop waited");
    check!(!running(pid));
    let p = mk(|()| sleep_ms(200));
    p.start().map_err(e)?;
    let t = Instant::now();
    drop(p);
    check!(
        t.elapsed() >= Duration::from_millis(150),
        "non-daemon drop did not join"
    );
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Basket {
    filling: String,
    count: u32,
    steamed: Vec<bool>,
}

fn join_handle_values() -> Result<(), String> {
    let h = spawn_t(|()| format!("{} from {}", "豆沙包", std::process::id()));
    let child = h.process().pid().unwrap();
    check!(h.join().map_err(e)? == format!("豆沙包 from {child}"));
    let h = spawn_t(|()| Basket {
        filling: "pork".into(),
        count: 12,
        steamed: vec![true, false],
    });
    let b = h.join().map_err(e)?;
    check!(
        b == Basket {
            filling: "pork".into(),
            count: 12,
            steamed: vec![true, false]
        },
        "{b:?}"
    );
    // Timed join gives the handle back while the child runs.
    let h = spawn_t(|()| {
        sleep_ms(300);
        7u8
    });
    let h = match h.join_timeout(Duration::from_millis(20)) {
        Err(h) => h,
        Ok(r) => return Err(format!("joined too early: {r:?}")),
    };
    check!(h.join().map_err(e)? == 7);
    Ok(())
}

fn join_handle_errors() -> Result<(), String> {
    // Silence the child's panic message: the hook is inherited over fork.
    std::panic::set_hook(Box::new(|_| {}));
    let h = spawn_t(|()| -> String { panic!("no more {}", "flour") });
    let r = h.join();
    let _ = std::panic::take_hook();
    match r {
        Err(ProcessError::Panicked { message, .. }) => {
            check!(message == "no more flour", "{message}")
        }
        other => return Err(format!("expected Panicked, got {other:?}")),
    }
    let h = spawn_t(|()| -> u32 {
        sleep_ms(30_000);
        1
    });
    h.process().kill().map_err(e)?;
    let pid = h.process().pid().unwrap();
    match h.join() {
        Err(ProcessError::Died { pid: p, signal: 9 }) if p == pid => {}
        other => return Err(format!("expected Died, got {other:?}")),
    }
    let h = spawn_t(|()| -> u32 {
        // SAFETY: leaves at once without delivering a result.
        unsafe { libc::_exit(5) }
    });
    match h.join() {
        Err(ProcessError::NoResult { exitcode: 5, .. }) => {}
        other => return Err(format!("expected NoResult, got {other:?}")),
    }
    let h = baozi_process::Builder::new()
        .result_capacity(4096)
        .spawn_task(|()| vec![0u8; 100_000], ())
        .map_err(e)?;
    match h.join() {
        Err(ProcessError::NoResult {
            detail: Some(_), ..
        }) => {}
        other => return Err(format!("expected NoResult with detail, got {other:?}")),
    }
    Ok(())
}

fn zombie_check_sees_zombies() -> Result<(), String> {
    // The no-zombie check of every case must see an unreaped child.
    // SAFETY: single-threaded; the child leaves with _exit at once.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe { libc::_exit(0) }
    }
    sleep_ms(50);
    check!(children().contains(&(pid, 'Z')), "{:?}", children());
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    check!(children().is_empty());
    Ok(())
}

fn cpus() -> Result<(), String> {
    check!(cpu_count() >= 1);
    Ok(())
}

// ---- runner --------------------------------------------------------------------------------

// ---- issue 16: daemon semantics and introspection -------------------------------------------

/// Inside a daemon, a new `Process` defaults to daemon, and starting any child is refused.
fn daemon_has_no_children() -> Result<(), String> {
    // In the main process the default is not a daemon, and a non-daemon may start children.
    check!(!mk(|()| {}).is_daemon());
    let nested = spawn(|| {
        let inner = mk(|()| 5);
        let was_daemon = inner.is_daemon();
        inner.start().expect("a non-daemon may start children");
        (was_daemon, inner.join().expect("join"))
    });
    check!(nested.join().map_err(e)? == (false, 5));
    common::reap_orphans();
    let h = baozi_process::Builder::new()
        .start_method(FORK)
        .daemon(true)
        .spawn(|| {
            let me = current_process();
            let inner = mk(|()| 0);
            let default_daemon = inner.is_daemon();
            let refused = matches!(
                inner.start(),
                Err(ProcessError::DaemonicParent { ref name }) if *name == me.name()
            );
            let explicit = Process::builder()
                .daemon(false)
                .task(|()| 0, ())
                .expect("a task");
            let refused_too = matches!(explicit.start(), Err(ProcessError::DaemonicParent { .. }));
            let spawn_refused = matches!(
                baozi_process::Builder::new().spawn(|| 1),
                Err(ProcessError::DaemonicParent { .. })
            );
            let pool_refused = matches!(
                baozi_process::Pool::new(1),
                Err(ProcessError::DaemonicParent { .. })
            );
            (
                me.is_daemon(),
                default_daemon,
                refused,
                refused_too,
                spawn_refused,
                pool_refused,
            )
        })
        .map_err(e)?;
    let got = h.join().map_err(e)?;
    check!(got == (true, true, true, true, true, true), "{got:?}");
    Ok(())
}

/// `active_children`: the running children this process started, not a forked child's view.
fn active_children_lists_the_running() -> Result<(), String> {
    use baozi_process::active_children;
    check!(active_children().is_empty());
    let a = Process::builder()
        .name("a")
        .task(|()| sleep_ms(30_000), ())
        .map_err(e)?;
    let b = Process::builder()
        .name("b")
        .daemon(true)
        .task(|()| sleep_ms(30_000), ())
        .map_err(e)?;
    let quick = Process::builder()
        .name("quick")
        .task(|()| {}, ())
        .map_err(e)?;
    for p in [&a, &b, &quick] {
        p.start().map_err(e)?;
    }
    // The quick one exits; even before it is reaped it is no longer listed.
    check!(baozi_process::wait(&[&quick], Some(Duration::from_secs(5))).map_err(e)? == [0]);
    let kids = active_children();
    let seen: Vec<(String, i32, bool, bool)> = kids
        .iter()
        .map(|c| (c.name().to_owned(), c.pid(), c.is_daemon(), c.is_alive()))
        .collect();
    check!(
        seen == [
            ("a".to_owned(), a.pid().unwrap(), false, true),
            ("b".to_owned(), b.pid().unwrap(), true, true)
        ],
        "{seen:?}"
    );
    // A child of ours does not see its siblings as its children.
    check!(spawn(|| active_children().len()).join().map_err(e)? == 0);
    b.kill().map_err(e)?;
    check!(baozi_process::wait(&[&kids[1]], Some(Duration::from_secs(5))).map_err(e)? == [0]);
    check!(!kids[1].is_alive());
    check!(active_children().len() == 1);
    a.kill().map_err(e)?;
    a.join().map_err(e)?;
    b.join().map_err(e)?;
    quick.join().map_err(e)?;
    check!(active_children().is_empty());
    Ok(())
}

/// `sentinel` and `wait`: the pidfd polls readable once the child exits; `wait` returns the
/// ready ones among processes and plain fds, or nothing at its timeout.
fn sentinels_and_wait() -> Result<(), String> {
    use baozi_process::wait;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let early = mk(|()| sleep_ms(200));
    let late = mk(|()| sleep_ms(30_000));
    check!(matches!(
        early.sentinel(),
        Err(ProcessError::NotStarted { .. })
    ));
    check!(matches!(
        wait(&[&early], None),
        Err(ProcessError::NotStarted { .. })
    ));
    early.start().map_err(e)?;
    late.start().map_err(e)?;
    let (mut tx, rx) = std::os::unix::net::UnixStream::pair().map_err(e)?;
    let t = Instant::now();
    check!(wait(&[&late, &rx], Some(Duration::from_millis(100)))
        .map_err(e)?
        .is_empty());
    let waited = t.elapsed();
    check!(waited >= Duration::from_millis(100), "{waited:?}");
    let ready = wait(&[&late, &early, &rx], Some(Duration::from_secs(10))).map_err(e)?;
    check!(ready == [1], "{ready:?}");
    check!(t.elapsed() < Duration::from_secs(5));
    tx.write_all(b"x").map_err(e)?;
    check!(wait(&[&late, &rx], None).map_err(e)? == [1]);
    // Still readable after the reap, for as long as the Process lives.
    check!(early.join().map_err(e)? == 0);
    let mut pfd = libc::pollfd {
        fd: early.sentinel().map_err(e)?.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    check!(unsafe { libc::poll(&mut pfd, 1, 0) } == 1);
    late.kill().map_err(e)?;
    let h = spawn(|| 7u8);
    check!(!wait(&[&late, &h], None).map_err(e)?.is_empty());
    check!(h.join().map_err(e)? == 7);
    check!(late.join().map_err(e)? == -9);
    Ok(())
}

/// `parent_process`: None in the main process; in a child, the parent's name and pid, alive,
/// and a wait that ends when the parent dies (the child orphaned).
fn parent_process_and_its_end() -> Result<(), String> {
    use baozi_process::parent_process;
    check!(parent_process().is_none());
    let me = std::process::id() as i32;
    let got = spawn(|| {
        let p = parent_process().expect("a parent");
        (
            p.name().to_owned(),
            p.pid(),
            p.is_alive(),
            p.wait_timeout(Duration::from_millis(50)),
        )
    })
    .join()
    .map_err(e)?;
    check!(
        got == ("MainProcess".to_owned(), me, true, false),
        "{got:?}"
    );
    // middle starts grandchild and leaves without joining it; the grandchild's wait on its
    // parent ends, and it exits 42 if it then sees the parent dead, named "middle".
    let middle = Process::builder()
        .name("middle")
        .start_method(FORK)
        .spawn_fn(|| {
            let g = mk(|()| {
                let p = parent_process().expect("a parent");
                let ended = p.wait_timeout(Duration::from_secs(10));
                if ended && !p.is_alive() && p.name() == "middle" {
                    42
                } else {
                    1
                }
            });
            g.start().expect("start grandchild");
            sleep_ms(100);
            std::mem::forget(g);
        });
    middle.start().map_err(e)?;
    check!(middle.join().map_err(e)? == 0);
    // The orphan comes to this case process (a subreaper); under forkserver, middle's
    // forkserver (the grandchild's OS parent) comes too, and exits 0 first.
    let mut statuses = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: status is a valid int; blocks until an orphan exits (the watchdog bounds it).
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r <= 0 {
            break;
        }
        statuses.push(status);
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 42 {
            break;
        }
    }
    check!(
        statuses
            .iter()
            .any(|&s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 42),
        "grandchild statuses {statuses:x?}"
    );
    common::reap_orphans();
    Ok(())
}

/// `current_process` reports is_alive, daemon and exitcode; a `ProcessBody` type runs as a
/// process body with its own name.
fn current_process_and_bodies() -> Result<(), String> {
    use baozi_process::ProcessBody;
    let me = current_process();
    check!(me.is_alive() && !me.is_daemon() && me.exitcode().is_none());
    struct Oven {
        buns: i32,
    }
    impl ProcessBody for Oven {
        type Output = Result<i32, String>;
        fn run(self) -> Result<i32, String> {
            let me = current_process();
            if me.name() != "oven" || !me.is_alive() || me.exitcode().is_some() {
                return Err("wrong view of itself".into());
            }
            Ok(self.buns)
        }
        fn name(&self) -> Option<String> {
            Some("oven".into())
        }
    }
    let p = Process::builder()
        .start_method(FORK)
        .body(Oven { buns: 12 });
    check!(p.name() == "oven");
    p.start().map_err(e)?;
    check!(p.join().map_err(e)? == 12);
    let q = Process::builder()
        .name("stove")
        .start_method(FORK)
        .body(Oven { buns: 3 });
    check!(q.name() == "stove");
    q.start().map_err(e)?;
    check!(q.join().map_err(e)? == 1, "the body saw the wrong name");
    Ok(())
}

const CASES: &[(&str, Case)] = &[
    ("exitcode_zero", exitcode_zero),
    ("exitcode_n", exitcode_n),
    ("exitcode_killed", exitcode_killed),
    ("exitcode_terminated", exitcode_terminated),
    ("panic_exit_one_and_message", panic_exit_one_and_message),
    ("join_timeout_then_kill", join_timeout_then_kill),
    ("is_alive_transitions", is_alive_transitions),
    ("errors", errors),
    ("names", names),
    ("daemon_dies_with_parent", daemon_dies_with_parent),
    (
        "drop_daemon_kills_drop_other_joins",
        drop_daemon_kills_drop_other_joins,
    ),
    ("join_handle_values", join_handle_values),
    ("join_handle_errors", join_handle_errors),
    ("cpu_count", cpus),
    ("zombie_check_sees_zombies", zombie_check_sees_zombies),
    ("daemon_has_no_children", daemon_has_no_children),
    (
        "active_children_lists_the_running",
        active_children_lists_the_running,
    ),
    ("sentinels_and_wait", sentinels_and_wait),
    ("parent_process_and_its_end", parent_process_and_its_end),
    ("current_process_and_bodies", current_process_and_bodies),
];

fn main() {
    baozi_process::main_guard();
    run_cases(CASES);
}
