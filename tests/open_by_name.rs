//! Unrelated programs meet by name: each peer here is a fresh process that re-executes this test
//! binary (`std::env::current_exe()`) with a role argument, not a fork.
//!
//! `harness = false`: every case runs in its own forked process group under a watchdog (see
//! `tests/support/mod.rs`); the binary ends with one `N passed, N failed` line.
//!
//! * a producer program and a consumer program exchange messages through a queue the test
//!   created, in order and complete, with a queue small enough that both block on each other;
//! * a queue whose creator has exited (and persisted it) still opens and works;
//! * opening while the creator is still initialising waits for it, then succeeds (and a shorter
//!   wait gives `NotReady`, in bounded time);
//! * a `JoinableQueue` joined by its creator while a worker program calls `task_done`;
//! * a name that does not exist is `NotFound`, in this process and in a peer.
//!
//! Roles (`open_by_name --role ROLE ARGS...`), each exiting 0 on success:
//! `producer NAME FIRST COUNT`, `consumer NAME COUNT`, `create-persist NAME COUNT`,
//! `slow-create NAME DELAY_MS`, `joinable-worker NAME COUNT`, `expect-not-found NAME`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baozi::shm::ShmError;
use baozi::{GetError, JoinableQueue, Pod, Queue, QueueError};
use support::{case, wait_process, ShmName};

/// The message every role speaks: sequence, producer pid, check word.
type Msg = Pod<[u64; 3]>;

const PEER_BOUND: Duration = Duration::from_secs(30);
const OP_BOUND: Duration = Duration::from_secs(10);

fn msg(seq: u64, pid: u64) -> Msg {
    Pod([seq, pid, seq ^ pid.rotate_left(29) ^ 0x5eed])
}

fn check(m: &Msg) -> u64 {
    let [seq, pid, k] = m.0;
    assert_eq!(
        k,
        seq ^ pid.rotate_left(29) ^ 0x5eed,
        "torn message {:?}",
        m.0
    );
    seq
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--role") {
        let code = std::panic::catch_unwind(|| role(&args[2..])).unwrap_or(support::CHILD_PANICKED);
        support::flush_std();
        std::process::exit(code);
    }
    support::run_main(vec![
        case(
            "producer_and_consumer_programs_meet_by_name",
            producer_consumer_programs,
        ),
        case(
            "two_producer_programs_one_consumer_here",
            two_producers_consumer_here,
        ),
        case(
            "open_after_creator_exited_and_persisted",
            open_after_creator_exited,
        ),
        case(
            "open_waits_for_a_creator_still_initialising",
            open_waits_for_initialising_creator,
        ),
        case(
            "joinable_queue_by_name_join_waits_for_worker",
            joinable_by_name,
        ),
        case("name_that_does_not_exist_is_not_found", not_found),
    ])
}

// ------------------------------------------------------------------------------------------
// Roles: what a peer program does
// ------------------------------------------------------------------------------------------

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("role argument {i} missing or invalid in {args:?}"))
}

fn role(args: &[String]) -> i32 {
    let name: String = arg(args, 1);
    let me = u64::from(std::process::id());
    match args[0].as_str() {
        "producer" => {
            let (first, count): (u64, u64) = (arg(args, 2), arg(args, 3));
            let q: Queue<Msg> = Queue::open(&name).unwrap_or_else(|e| panic!("producer: {e}"));
            for s in first..first + count {
                q.put_timeout(msg(s, me), OP_BOUND)
                    .unwrap_or_else(|e| panic!("put {s}: {e}"));
            }
            0
        }
        "consumer" => {
            let count: u64 = arg(args, 2);
            let q: Queue<Msg> = Queue::open(&name).unwrap_or_else(|e| panic!("consumer: {e}"));
            let mut sum = 0;
            for expected in 0..count {
                let m = q
                    .get_timeout(OP_BOUND)
                    .unwrap_or_else(|e| panic!("get {expected}: {e}"));
                let s = check(&m);
                assert_eq!(s, expected, "consumer: out of order");
                sum += s;
            }
            println!("received {count} sum {sum}");
            0
        }
        "create-persist" => {
            let count: u64 = arg(args, 2);
            let q: Queue<Msg> = Queue::create(&name, 0, 4096).expect("create");
            for s in 0..count {
                q.put(msg(s, me)).expect("put");
            }
            q.persist();
            println!("created by {me}");
            0 // the queue is dropped here; persisted, its name stays
        }
        "slow-create" => {
            let delay: u64 = arg(args, 2);
            // A creator that is slow to finish: the object is fully built, then put back into
            // the "initialising" state through the header API (begin() with its own identity),
            // announced, and published only after `delay` ms.
            let q: Queue<Msg> = Queue::create(&name, 4, 4096).expect("create");
            let header = q.region().header().expect("header");
            let snap = header.snapshot();
            header.begin(
                snap.kind,
                snap.total_size,
                snap.layout_hash,
                snap.creator_pid,
            );
            assert!(!header.is_ready());
            println!("initialising");
            support::flush_std();
            std::thread::sleep(Duration::from_millis(delay));
            q.put(msg(42, me)).expect("put before publishing");
            header.publish();
            // Stay until the opener took the item (the name goes with this process).
            assert!(
                support::wait_until(PEER_BOUND, || q.empty()),
                "nobody took the item"
            );
            0
        }
        "joinable-worker" => {
            let count: u64 = arg(args, 2);
            let q: JoinableQueue<Msg> = JoinableQueue::open(&name).expect("open");
            for expected in 0..count {
                let m = q
                    .get_timeout(OP_BOUND)
                    .unwrap_or_else(|e| panic!("get {expected}: {e}"));
                assert_eq!(check(&m), expected);
                std::thread::sleep(Duration::from_millis(3)); // the "work"
                q.task_done().expect("task_done");
            }
            0
        }
        "expect-not-found" => match Queue::<Msg>::open(&name) {
            Err(QueueError::Shm(ShmError::NotFound { .. })) => 0,
            Err(e) => {
                eprintln!("expect-not-found: wrong error: {e:?}");
                1
            }
            Ok(_) => {
                eprintln!("expect-not-found: it opened");
                1
            }
        },
        other => panic!("unknown role {other:?}"),
    }
}

/// A fresh exec of this binary in `role`.
fn peer(role: &str, args: &[&str]) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = Command::new(exe);
    cmd.arg("--role").arg(role).args(args).stdin(Stdio::null());
    cmd
}

fn run_peer(mut cmd: Command, what: &str) -> String {
    let child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    wait_output(child, what)
}

/// Waits (bounded) for a spawned peer, checks it exited 0, returns its stdout.
fn wait_output(mut child: std::process::Child, what: &str) -> String {
    let status = wait_process(&mut child, PEER_BOUND, what);
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        use std::io::Read;
        so.read_to_string(&mut out).expect("read peer output");
    }
    assert!(
        status.success(),
        "{what} failed: {status} (stdout: {out:?}; its stderr is above)"
    );
    out
}

// ------------------------------------------------------------------------------------------
// Cases
// ------------------------------------------------------------------------------------------

/// The test creates the queue (maxsize 2: producer and consumer block on each other) and
/// touches it no more; a producer program and a consumer program, started one after the other,
/// exchange 3000 messages in order.
fn producer_consumer_programs() {
    let name = ShmName::new("pc");
    let q: Queue<Msg> = Queue::create(name.name(), 2, 4096).unwrap();
    let consumer = peer("consumer", &[name.name(), "3000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let producer = peer("producer", &[name.name(), "0", "3000"])
        .spawn()
        .unwrap();
    let out = wait_output(consumer, "consumer program");
    wait_output(producer, "producer program");
    assert_eq!(out.trim(), format!("received 3000 sum {}", 3000 * 2999 / 2));
    assert!(q.empty());
    drop(q);
    assert!(!name.exists(), "the creator's drop unlinks the name");
}

/// Two producer programs put disjoint ranges; this process consumes and checks each program's
/// messages arrive exactly once and in its order.
fn two_producers_consumer_here() {
    let name = ShmName::new("pp");
    let q: Queue<Msg> = Queue::create(name.name(), 8, 4096).unwrap();
    let a = peer("producer", &[name.name(), "0", "2000"])
        .spawn()
        .unwrap();
    let b = peer("producer", &[name.name(), "100000", "2000"])
        .spawn()
        .unwrap();
    let (pa, pb) = (u64::from(a.id()), u64::from(b.id()));
    let (mut next_a, mut next_b) = (0, 100_000);
    for _ in 0..4000 {
        let m = q
            .get_timeout(OP_BOUND)
            .expect("get from the producer programs");
        let s = check(&m);
        match m.0[1] {
            p if p == pa => {
                assert_eq!(s, next_a);
                next_a += 1;
            }
            p if p == pb => {
                assert_eq!(s, next_b);
                next_b += 1;
            }
            p => panic!("message from unknown pid {p}"),
        }
    }
    wait_output(a, "producer a");
    wait_output(b, "producer b");
    assert_eq!((next_a, next_b), (2000, 102_000));
    assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
}

/// A creator program makes a queue, puts 5 items, persists it and exits. The name survives;
/// a consumer program opens it and takes the 5; so can this process afterwards, and then the
/// name is unlinked.
fn open_after_creator_exited() {
    let name = ShmName::new("persist");
    let out = run_peer(
        peer("create-persist", &[name.name(), "5"]),
        "creator program",
    );
    let creator: u32 = out
        .trim()
        .strip_prefix("created by ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(name.exists(), "a persisted queue outlives its creator");
    assert!(
        !std::path::Path::new(&format!("/proc/{creator}")).exists(),
        "creator still alive"
    );
    let entry = baozi::shm::list()
        .unwrap()
        .into_iter()
        .find(|e| e.name == name.name())
        .expect("list() shows the persisted queue");
    assert_eq!(entry.creator_pid, Some(creator));
    assert!(!entry.creator_alive);
    {
        let q: Queue<Msg> = Queue::open(name.name()).expect("open after the creator exited");
        assert_eq!(q.qsize(), 5);
        let out = run_peer(peer("consumer", &[name.name(), "5"]), "consumer program");
        assert_eq!(out.trim(), "received 5 sum 10");
        assert!(q.empty());
        q.put(msg(0, 1)).unwrap();
        assert_eq!(check(&q.get().unwrap()), 0);
    }
    Queue::<Msg>::unlink(name.name()).expect("unlink");
    assert!(!name.exists());
    assert!(matches!(
        Queue::<Msg>::open(name.name()),
        Err(QueueError::Shm(ShmError::NotFound { .. }))
    ));
}

/// A creator program is still initialising (header not yet published) when this process opens:
/// a short wait gives `NotReady` in bounded time; the default wait (2 s) blocks until the
/// creator publishes 800 ms in, then succeeds, and the queue works.
fn open_waits_for_initialising_creator() {
    let name = ShmName::new("slow");
    let mut creator = peer("slow-create", &[name.name(), "800"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(creator.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "initialising");
    let t0 = Instant::now();

    let short = Duration::from_millis(100);
    match Queue::<Msg>::open_with(name.name(), short, true) {
        Err(QueueError::Shm(ShmError::NotReady { name: n, waited })) => {
            assert!(n.contains(name.name()), "NotReady names the object: {n}");
            assert_eq!(waited, short);
        }
        other => panic!("open during initialisation with a 100 ms wait: {other:?}"),
    }
    let e = t0.elapsed();
    assert!(
        e >= short && e < Duration::from_millis(700),
        "a 100 ms wait took {e:?}"
    );

    let q: Queue<Msg> = Queue::open(name.name()).expect("open waits for the creator");
    let waited = t0.elapsed();
    println!("    open returned {waited:?} after the creator announced it was initialising");
    assert!(
        waited >= Duration::from_millis(600),
        "open did not wait for publication: {waited:?}"
    );
    assert!(q.region().header().unwrap().is_ready());
    assert_eq!(q.maxsize(), 4);
    assert_eq!(
        check(&q.get_timeout(OP_BOUND).expect("the creator's item")),
        42
    );
    let status = wait_process(&mut creator, PEER_BOUND, "slow creator");
    assert!(status.success(), "slow creator: {status}");
}

/// This process creates a `JoinableQueue` and puts 50 items; a worker program opens it by name
/// and calls `task_done` after each; `join` here returns only when all 50 are done.
fn joinable_by_name() {
    let name = ShmName::new("join");
    let q: JoinableQueue<Msg> = JoinableQueue::create(name.name(), 0, 8192).unwrap();
    for s in 0..50 {
        q.put(msg(s, 7)).unwrap();
    }
    let mut worker = peer("joinable-worker", &[name.name(), "50"])
        .spawn()
        .unwrap();
    q.join_timeout(PEER_BOUND).expect("join");
    assert_eq!(q.unfinished_tasks(), 0);
    assert!(q.empty());
    let status = wait_process(&mut worker, PEER_BOUND, "worker program");
    assert!(status.success(), "worker: {status}");
}

/// A name nobody created: `NotFound` here (naming the object) and in a peer program.
fn not_found() {
    let name = ShmName::new("nobody");
    let err = Queue::<Msg>::open(name.name()).expect_err("opened a name nobody created");
    match &err {
        QueueError::Shm(ShmError::NotFound { name: n }) => {
            assert!(n.contains(name.name()), "NotFound names the object: {n}")
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!("baozi-{}", name.name())),
        "display: {text}"
    );
    assert!(matches!(
        JoinableQueue::<Msg>::open(name.name()),
        Err(QueueError::Shm(ShmError::NotFound { .. }))
    ));
    assert!(!name.exists(), "a failed open must not create the name");
    run_peer(
        peer("expect-not-found", &[name.name()]),
        "peer opening a missing name",
    );
}
