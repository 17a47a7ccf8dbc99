//! Start methods: what a user relies on, under fork, spawn and forkserver alike (exit codes,
//! daemon flag, name, terminate/kill, join timeouts, kill -9 in a loop, handles as task
//! arguments, WorkerDied in pools), and the refusals (closures outside fork, fork from a
//! multi-threaded process). `harness = false`: main calls `main_guard` first, as a program
//! using spawn must.

use std::time::{Duration, Instant};

use baozi_process::{current_process, Pool, Process, ProcessError, StartMethod};
use baozi_queue::Queue;

mod common;
use common::{e, run_cases, sleep_ms, Case};

const METHODS: [StartMethod; 3] = [
    StartMethod::Fork,
    StartMethod::Spawn,
    StartMethod::Forkserver,
];

// ---- tasks ----------------------------------------------------------------------------------

fn code(n: i32) -> i32 {
    n
}

fn nothing(_: ()) {}

fn panics(msg: String) -> i32 {
    panic!("{msg}")
}

fn exits(n: i32) -> i32 {
    std::process::exit(n)
}

fn sleeps(ms: u64) -> i32 {
    sleep_ms(ms);
    0
}

/// 1 when the child sees itself as a daemon named `name`.
fn identity(name: String) -> i32 {
    let me = current_process();
    i32::from(me.is_daemon()) * 10 + i32::from(me.name() == name)
}

fn doubles((q, x): (Queue<u64>, u64)) -> i32 {
    match q.put(x * 2) {
        Ok(()) => 0,
        Err(_) => 3,
    }
}

fn parent_pid_into((q, _): (Queue<i32>, ())) -> i32 {
    // SAFETY: getppid touches no memory.
    let ppid = unsafe { libc::getppid() };
    i32::from(q.put(ppid).is_err())
}

/// A daemon may not start children: 7 when the start is refused so.
fn starts_a_grandchild(m: StartMethod) -> i32 {
    let p = match Process::builder().start_method(m).task(code, 1) {
        Ok(p) => p,
        Err(_) => return 2,
    };
    match p.start() {
        Err(ProcessError::DaemonicParent { .. }) => 7,
        _ => 3,
    }
}

fn square(x: u64) -> u64 {
    x * x
}

fn worker_pid(ms: u64) -> i32 {
    sleep_ms(ms);
    std::process::id() as i32
}

baozi_process::task! {
    /// Registered by name; looked up by name in the parent.
    fn named_triple(x: u64) -> u64 { x * 3 }
}

fn start(m: StartMethod, p: Process) -> Result<Process, String> {
    let _ = m;
    p.start().map_err(e)?;
    Ok(p)
}

fn task<A, R>(m: StartMethod, f: fn(A) -> R, a: A) -> Result<Process, String>
where
    A: serde::Serialize + serde::de::DeserializeOwned,
    R: baozi_process::IntoExitCode,
{
    start(m, Process::builder().start_method(m).task(f, a).map_err(e)?)
}

// ---- cases ----------------------------------------------------------------------------------

fn exit_codes_under_every_method() -> Result<(), String> {
    for m in METHODS {
        check!(task(m, code, 7)?.join().map_err(e)? == 7, "{m}: exit code");
        check!(task(m, nothing, ())?.join().map_err(e)? == 0, "{m}: ()");
        check!(task(m, exits, 4)?.join().map_err(e)? == 4, "{m}: exit(4)");
        let p = task(m, panics, "no filling".to_string())?;
        check!(p.join().map_err(e)? == 1, "{m}: a panic is exit code 1");
        check!(p.exitcode() == Some(1));
    }
    Ok(())
}

fn name_daemon_terminate_kill_timeouts() -> Result<(), String> {
    for m in METHODS {
        let p = Process::builder()
            .name("steamer")
            .daemon(true)
            .start_method(m)
            .task(identity, "steamer".to_string())
            .map_err(e)?;
        p.start().map_err(e)?;
        check!(
            p.join().map_err(e)? == 11,
            "{m}: the child's name and daemon flag"
        );

        let p = task(m, sleeps, 60_000)?;
        let t = Instant::now();
        check!(p
            .join_timeout(Duration::from_millis(50))
            .map_err(e)?
            .is_none());
        check!(t.elapsed() >= Duration::from_millis(50));
        check!(p.is_alive(), "{m}: alive while sleeping");
        p.terminate().map_err(e)?;
        check!(p.join().map_err(e)? == -15, "{m}: terminate");

        let p = task(m, sleeps, 60_000)?;
        p.kill().map_err(e)?;
        check!(p.join().map_err(e)? == -9, "{m}: kill");
        check!(!p.is_alive());
        check!(matches!(
            p.start(),
            Err(ProcessError::AlreadyStarted { .. })
        ));
    }
    Ok(())
}

/// Children SIGKILLed at random moments of their start, under each method: every one is
/// reaped with -9 (or 0, when it finished first), none is left behind (the runner checks).
fn kill9_children_in_a_loop() -> Result<(), String> {
    let iters: u64 = std::env::var("BAOZI_START_KILL_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for m in METHODS {
        let mut killed = 0;
        for _ in 0..iters {
            let p = task(m, sleeps, 5)?;
            sleep_ms(rand(8));
            p.kill().map_err(e)?;
            match p.join().map_err(e)? {
                -9 => killed += 1,
                0 => {}
                other => return Err(format!("{m}: exit code {other} after kill -9")),
            }
        }
        println!("    {m}: {iters} iterations, {killed} killed before they finished");
    }
    Ok(())
}

/// Handles are serde values: a queue made before the child goes to it as its argument.
fn handles_as_task_arguments() -> Result<(), String> {
    for m in METHODS {
        let q: Queue<u64> = Queue::new(8, 4096).map_err(e)?;
        let p = task(m, doubles, (q.clone(), 21))?;
        check!(p.join().map_err(e)? == 0, "{m}: the child's put");
        check!(
            q.get_timeout(Duration::from_secs(5)).map_err(e)? == 42,
            "{m}"
        );
    }
    Ok(())
}

fn pools_under_every_method() -> Result<(), String> {
    for m in METHODS {
        let pool = Pool::builder()
            .processes(2)
            .start_method(m)
            .build()
            .map_err(e)?;
        check!(
            pool.map(square, 0..10u64).map_err(e)? == (0..10).map(|x| x * x).collect::<Vec<_>>()
        );
        let triple =
            baozi_process::lookup_task::<u64, u64>(&format!("{}::named_triple", module_path!()))
                .map_err(e)?;
        check!(
            pool.apply(triple, 5).map_err(e)? == 15,
            "{m}: a task by name"
        );
        // A worker killed while it runs a task: its caller gets WorkerDied, the pool goes on.
        let r = pool.apply_async(worker_pid, 60_000).map_err(e)?;
        let pids = pool.worker_pids();
        sleep_ms(100);
        for pid in &pids {
            // SAFETY: a signal to a pid.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        match r.get() {
            Err(ProcessError::WorkerDied {
                signal: Some(9), ..
            }) => {}
            other => return Err(format!("{m}: {other:?}")),
        }
        check!(
            pool.apply(square, 3).map_err(e)? == 9,
            "{m}: replaced workers"
        );
        pool.close();
        pool.join().map_err(e)?;
    }
    Ok(())
}

/// A closure cannot cross spawn or forkserver: a clear error, and the process can still be
/// started by fork.
fn closures_need_fork() -> Result<(), String> {
    for m in [StartMethod::Spawn, StartMethod::Forkserver] {
        let p = Process::builder().start_method(m).spawn_fn(|| 3);
        match p.start() {
            Err(ProcessError::NeedsFork { method, .. }) if method == m => {}
            other => return Err(format!("{m}: {other:?}")),
        }
        let built = Pool::builder()
            .processes(1)
            .start_method(m)
            .initializer(|| {})
            .build();
        check!(
            matches!(built, Err(ProcessError::NeedsFork { .. })),
            "{m}: closure initializer: {built:?}"
        );
    }
    let p = Process::builder()
        .start_method(StartMethod::Fork)
        .spawn_fn(|| 3);
    p.start().map_err(e)?;
    check!(p.join().map_err(e)? == 3);
    Ok(())
}

/// With another thread running, fork is refused (naming forkserver), and the default start
/// method moves to forkserver for what can cross it.
fn fork_with_threads_is_refused() -> Result<(), String> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = std::sync::Arc::clone(&stop);
    // This case is about the default policy: no override from the environment (removed while
    // the case process still has one thread).
    std::env::remove_var("BAOZI_START_METHOD");
    let thread = std::thread::spawn(move || {
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            sleep_ms(5);
        }
    });
    let result = (|| {
        let p = Process::builder()
            .start_method(StartMethod::Fork)
            .spawn_fn(|| 0);
        match p.start() {
            Err(err @ ProcessError::ForkWithThreads { threads }) => {
                check!(threads >= 2, "{threads}");
                check!(err.to_string().contains("Forkserver"), "{err}");
            }
            other => return Err(format!("{other:?}")),
        }
        // The default for a closure is fork: the same refusal.
        let p = Process::new(|| 0);
        check!(matches!(
            p.start(),
            Err(ProcessError::ForkWithThreads { .. })
        ));
        check!(baozi_process::get_start_method() == StartMethod::Forkserver);
        // A task and a pool take the default, forkserver, and work.
        let p = Process::task(code, 5).map_err(e)?;
        p.start().map_err(e)?;
        check!(p.join().map_err(e)? == 5);
        let pool = Pool::new(2).map_err(e)?;
        check!(pool.apply(square, 4).map_err(e)? == 16);
        let forked = Pool::builder()
            .processes(1)
            .start_method(StartMethod::Fork)
            .build();
        check!(matches!(forked, Err(ProcessError::ForkWithThreads { .. })));
        Ok(())
    })();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = thread.join();
    result
}

/// One forkserver serves every forkserver child of the program; killed, its children's
/// joins fail instead of hanging (its daemon children die with it), and the next start
/// makes a new one.
fn one_forkserver_per_program() -> Result<(), String> {
    let m = StartMethod::Forkserver;
    let q: Queue<i32> = Queue::new(8, 4096).map_err(e)?;
    let mut parents = Vec::new();
    for _ in 0..3 {
        let p = task(m, parent_pid_into, (q.clone(), ()))?;
        check!(p.join().map_err(e)? == 0);
        parents.push(q.get_timeout(Duration::from_secs(5)).map_err(e)?);
    }
    let me = std::process::id() as i32;
    check!(
        parents.iter().all(|&p| p == parents[0] && p != me),
        "{parents:?}, me {me}"
    );
    let server = parents[0];
    let daemon = Process::builder()
        .daemon(true)
        .start_method(m)
        .task(sleeps, 60_000)
        .map_err(e)?;
    daemon.start().map_err(e)?;
    // SAFETY: a signal to a pid.
    unsafe { libc::kill(server, libc::SIGKILL) };
    let t = Instant::now();
    check!(daemon.join().is_err(), "no exit code without the server");
    check!(t.elapsed() < Duration::from_secs(5));
    check!(task(m, code, 9)?.join().map_err(e)? == 9, "a new server");
    // The orphaned daemon came to this case process (a subreaper, as init would be): reap it,
    // and the killed server if nothing did, before the runner counts children.
    for pid in [server, daemon.pid().unwrap_or(0)] {
        let mut status = 0;
        // SAFETY: a valid, writable int.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    Ok(())
}

/// Drop, sentinels and `wait`, `active_children`, and the daemon rule, under every method.
fn drop_wait_children_daemons() -> Result<(), String> {
    for m in METHODS {
        // A dropped daemon is killed and reaped; a dropped non-daemon is joined.
        let d = Process::builder()
            .daemon(true)
            .start_method(m)
            .task(sleeps, 60_000)
            .map_err(e)?;
        d.start().map_err(e)?;
        let dpid = d.pid().ok_or("no pid")?;
        let t = Instant::now();
        drop(d);
        check!(
            t.elapsed() < Duration::from_secs(5),
            "{m}: daemon drop waited"
        );
        check!(!common::running(dpid), "{m}: the dropped daemon still runs");
        let n = task(m, sleeps, 100)?;
        let t = Instant::now();
        drop(n);
        check!(
            t.elapsed() >= Duration::from_millis(90),
            "{m}: non-daemon drop did not join"
        );

        // wait() over sentinels: the short one first.
        let slow = task(m, sleeps, 60_000)?;
        let fast = task(m, sleeps, 20)?;
        let names: Vec<i32> = baozi_process::active_children()
            .iter()
            .map(|c| c.pid())
            .collect();
        check!(
            names.contains(&slow.pid().unwrap_or(0)) && names.contains(&fast.pid().unwrap_or(0)),
            "{m}: active_children {names:?}"
        );
        let ready =
            baozi_process::wait(&[&slow, &fast], Some(Duration::from_secs(10))).map_err(e)?;
        check!(ready == [1], "{m}: wait gave {ready:?}");
        check!(fast.join().map_err(e)? == 0);
        slow.kill().map_err(e)?;
        check!(slow.join().map_err(e)? == -9);

        // A daemon may not have children, whatever its start method.
        let p = Process::builder()
            .daemon(true)
            .start_method(m)
            .task(starts_a_grandchild, m)
            .map_err(e)?;
        p.start().map_err(e)?;
        check!(
            p.join().map_err(e)? == 7,
            "{m}: a daemon's child was not refused"
        );
    }
    Ok(())
}

fn ppid_of_me(q: Queue<i32>) -> i32 {
    // SAFETY: getppid touches no memory.
    let pair = [std::process::id() as i32, unsafe { libc::getppid() }];
    if pair.iter().all(|&p| q.put(p).is_ok()) {
        sleep_ms(60_000);
    }
    0
}

/// The program SIGKILLed: its forkserver leaves (its socket closed) and takes the daemon
/// children with it.
fn forkserver_dies_with_the_program() -> Result<(), String> {
    let q: Queue<i32> = Queue::new(8, 4096).map_err(e)?;
    let theirs = q.clone();
    // SAFETY: single-threaded case process; the child leaves with _exit or is killed.
    let owner = unsafe { libc::fork() };
    if owner == 0 {
        let p = Process::builder()
            .daemon(true)
            .start_method(StartMethod::Forkserver)
            .task(ppid_of_me, theirs)
            .and_then(|p| p.start().map(|()| p));
        if p.is_ok() {
            sleep_ms(60_000);
        }
        // SAFETY: leaves the child.
        unsafe { libc::_exit(1) };
    }
    let child = q.get_timeout(Duration::from_secs(10)).map_err(e)?;
    let server = q.get_timeout(Duration::from_secs(10)).map_err(e)?;
    check!(server != owner && common::running(server) && common::running(child));
    // SAFETY: a signal to our own child, then its reaping.
    unsafe {
        libc::kill(owner, libc::SIGKILL);
        libc::waitpid(owner, std::ptr::null_mut(), 0);
    }
    let t = Instant::now();
    while (common::running(server) || common::running(child))
        && t.elapsed() < Duration::from_secs(5)
    {
        sleep_ms(5);
    }
    check!(
        !common::running(server),
        "the forkserver outlived its program"
    );
    check!(
        !common::running(child),
        "a daemon child outlived its forkserver"
    );
    // The orphans came to this case process (a subreaper): reap them.
    let t = Instant::now();
    while !common::children().is_empty() && t.elapsed() < Duration::from_secs(2) {
        // SAFETY: reaps any exited child without blocking.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        sleep_ms(5);
    }
    Ok(())
}

/// A fork of a program that has a forkserver starts its own (it must not share its parent's
/// sockets), and both go on working.
fn a_fork_gets_its_own_forkserver() -> Result<(), String> {
    let q: Queue<i32> = Queue::new(8, 4096).map_err(e)?;
    let p = task(StartMethod::Forkserver, parent_pid_into, (q.clone(), ()))?;
    check!(p.join().map_err(e)? == 0);
    let ours = q.get_timeout(Duration::from_secs(5)).map_err(e)?;
    let theirs_q = q.clone();
    let forked = Process::builder()
        .start_method(StartMethod::Fork)
        .spawn_fn(move || {
            let inner = Process::builder()
                .start_method(StartMethod::Forkserver)
                .task(parent_pid_into, (theirs_q, ()))
                .and_then(|p| p.start().map(|()| p))
                .and_then(|p| p.join());
            baozi_process::stop_forkserver();
            i32::from(inner.ok() != Some(0))
        });
    forked.start().map_err(e)?;
    check!(
        forked.join().map_err(e)? == 0,
        "the fork's own forkserver child"
    );
    let theirs = q.get_timeout(Duration::from_secs(5)).map_err(e)?;
    check!(
        theirs != ours,
        "the fork used its parent's forkserver ({ours})"
    );
    check!(task(StartMethod::Forkserver, code, 4)?.join().map_err(e)? == 4);
    Ok(())
}

/// Many children started before any is joined: the server's exit reports pile up meanwhile
/// (more than its socket holds), and starting goes on all the same.
fn many_started_then_joined() -> Result<(), String> {
    for m in [StartMethod::Forkserver, StartMethod::Spawn] {
        let n = if m == StartMethod::Spawn { 50 } else { 600 };
        let ps = (0..n)
            .map(|i| task(m, code, i % 100))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, p) in ps.iter().enumerate() {
            check!(p.join().map_err(e)? == (i % 100) as i32, "{m}: child {i}");
        }
    }
    Ok(())
}

fn basket(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("bun {i}")).collect()
}

fn burnt(_: u32) -> Vec<String> {
    panic!("burnt at the bottom")
}

/// `spawn_task`: the value comes back under every method, and a panic as `Panicked`.
fn values_back_under_every_method() -> Result<(), String> {
    for m in METHODS {
        let b = baozi_process::Builder::new().start_method(m);
        let h = b.spawn_task(basket, 3).map_err(e)?;
        check!(h.join().map_err(e)? == ["bun 0", "bun 1", "bun 2"], "{m}");
        let b = baozi_process::Builder::new().start_method(m);
        match b.spawn_task(burnt, 1).map_err(e)?.join() {
            Err(ProcessError::Panicked { message, .. }) => {
                check!(message == "burnt at the bottom", "{m}: {message}")
            }
            other => return Err(format!("{m}: {other:?}")),
        }
    }
    Ok(())
}

const CASES: &[(&str, Case)] = &[
    (
        "values_back_under_every_method",
        values_back_under_every_method,
    ),
    ("many_started_then_joined", many_started_then_joined),
    (
        "a_fork_gets_its_own_forkserver",
        a_fork_gets_its_own_forkserver,
    ),
    (
        "forkserver_dies_with_the_program",
        forkserver_dies_with_the_program,
    ),
    ("drop_wait_children_daemons", drop_wait_children_daemons),
    ("one_forkserver_per_program", one_forkserver_per_program),
    (
        "exit_codes_under_every_method",
        exit_codes_under_every_method,
    ),
    (
        "name_daemon_terminate_kill_timeouts",
        name_daemon_terminate_kill_timeouts,
    ),
    ("kill9_children_in_a_loop", kill9_children_in_a_loop),
    ("handles_as_task_arguments", handles_as_task_arguments),
    ("pools_under_every_method", pools_under_every_method),
    ("closures_need_fork", closures_need_fork),
    ("fork_with_threads_is_refused", fork_with_threads_is_refused),
];

fn main() {
    baozi_process::main_guard();
    run_cases(CASES);
}
