//! Handles that travel: every shared object is a clonable handle that reaches another process by
//! every route a Python user passes objects by, and finds the same object there.
//!
//! `harness = false`: every case runs in its own forked process group under a watchdog (see
//! `tests/support/mod.rs`); the binary ends with one `N passed, N failed` line.
//!
//! One set of handles ([`Handles`]: every handle type, anonymous or named) goes through each
//! route; the other side *touches* each object in a way only the same object can show (it finds
//! the parent's locks held, bumps the values, puts, sets, releases, meets the parent at a barrier),
//! and the parent then *checks* every effect. Routes:
//!
//! * captured by a `Process` closure (fork after the objects exist);
//! * as a `Pool` task's argument, to workers forked *before* the objects existed;
//! * as a `Pool` task's result: objects a worker made, returned to the parent;
//! * inside a message through a `Queue`, to a child forked before the objects existed;
//! * to an exec'd program, as a serialised reference on its command line (anonymous objects);
//! * to an exec'd program by name (named objects).
//!
//! Also: a type mismatch by name and by handle is a typed error at open; `create_or_open` with
//! 8 racing processes makes exactly one creator per round; a creator killed with SIGKILL leaves
//! its objects usable for the others (a late attacher finds another holder) and, once every
//! holder is gone, nothing that `Region::unlink_if_stale` does not remove.
//!
//! Roles (`handles --role ROLE ARGS...`): `touch-ref HEX TAG`, `touch-name PREFIX TAG`.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use baozi::shm::{Offset, Region, ShmError};
use baozi::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
use baozi::{
    AllocError, Array, Heap, JoinableQueue, Pool, Process, Queue, QueueError, RawArray, RawValue,
    Serde, ShmMutex, Value,
};
use support::{case, fork, fork_code, wait_process, ShmName};

const BOUND: Duration = Duration::from_secs(20);

/// One handle of every type (two values share a lock given by the caller: Python's `lock=`).
#[derive(Clone, Serialize, Deserialize)]
struct Handles {
    queue: Queue<String>,
    joinable: JoinableQueue<String>,
    lock: Lock,
    rlock: RLock,
    sem: Semaphore,
    bsem: BoundedSemaphore,
    event: Event,
    cond: Condition,
    barrier: Barrier,
    heap: Heap,
    value: Value<u64>,
    raw_value: RawValue<u64>,
    array: Array<u32>,
    /// Flags the toucher sets: [lock seen held, rlock seen held, condition seen held, done].
    flags: RawArray<u32>,
    mutex: ShmMutex<u64>,
    region: Region,
    value_in_heap: Value<u64>,
    shared_a: Value<u32>,
    shared_b: Value<u32>,
}

impl Handles {
    fn anonymous() -> Handles {
        let heap = Heap::anonymous(1 << 20).unwrap();
        let shared = Lock::anonymous().unwrap();
        Handles {
            queue: Queue::new(0, 4096).unwrap(),
            joinable: JoinableQueue::new(0, 4096).unwrap(),
            lock: Lock::anonymous().unwrap(),
            rlock: RLock::anonymous().unwrap(),
            sem: Semaphore::anonymous(0).unwrap(),
            bsem: BoundedSemaphore::anonymous(1).unwrap(),
            event: Event::anonymous().unwrap(),
            cond: Condition::anonymous().unwrap(),
            barrier: Barrier::anonymous(2).unwrap(),
            value: Value::new(0).unwrap(),
            raw_value: RawValue::new(0).unwrap(),
            array: Array::zeroed(4).unwrap(),
            flags: RawArray::zeroed(4).unwrap(),
            mutex: ShmMutex::anonymous(0).unwrap(),
            region: Region::anonymous(4096).unwrap(),
            value_in_heap: Value::new_in(&heap, 0).unwrap(),
            shared_a: Value::with_lock(0, shared.clone()).unwrap(),
            shared_b: Value::with_lock(0, shared).unwrap(),
            heap,
        }
    }

    fn create_named(prefix: &str) -> Handles {
        let n = |what: &str| format!("{prefix}-{what}");
        let heap = Heap::create(&n("heap"), 1 << 20).unwrap();
        Handles {
            queue: Queue::create(&n("queue"), 0, 4096).unwrap(),
            joinable: JoinableQueue::create(&n("joinable"), 0, 4096).unwrap(),
            lock: Lock::create(&n("lock")).unwrap(),
            rlock: RLock::create(&n("rlock")).unwrap(),
            sem: Semaphore::create(&n("sem"), 0).unwrap(),
            bsem: BoundedSemaphore::create(&n("bsem"), 1).unwrap(),
            event: Event::create(&n("event")).unwrap(),
            cond: Condition::create(&n("cond")).unwrap(),
            barrier: Barrier::create(&n("barrier"), 2).unwrap(),
            value: Value::create(&n("value"), 0).unwrap(),
            raw_value: RawValue::create(&n("raw-value"), 0).unwrap(),
            array: Array::create(&n("array"), &[0; 4]).unwrap(),
            flags: RawArray::create(&n("flags"), &[0; 4]).unwrap(),
            mutex: ShmMutex::create(&n("mutex"), 0).unwrap(),
            region: Region::create(&n("region"), 4096).unwrap(),
            // No name of its own: it lives in the named heap, found through the root.
            value_in_heap: Value::new_in(&heap, 0).unwrap(),
            shared_a: Value::create(&n("shared-a"), 0).unwrap(),
            shared_b: Value::create(&n("shared-b"), 0).unwrap(),
            heap,
        }
    }

    fn open_named(prefix: &str) -> Handles {
        let n = |what: &str| format!("{prefix}-{what}");
        let heap = Heap::open(&n("heap")).unwrap();
        Handles {
            queue: Queue::open(&n("queue")).unwrap(),
            joinable: JoinableQueue::open(&n("joinable")).unwrap(),
            lock: Lock::open(&n("lock")).unwrap(),
            rlock: RLock::open(&n("rlock")).unwrap(),
            sem: Semaphore::open(&n("sem")).unwrap(),
            bsem: BoundedSemaphore::open(&n("bsem")).unwrap(),
            event: Event::open(&n("event")).unwrap(),
            cond: Condition::open(&n("cond")).unwrap(),
            barrier: Barrier::open(&n("barrier")).unwrap(),
            value: Value::open(&n("value")).unwrap(),
            raw_value: RawValue::open(&n("raw-value")).unwrap(),
            array: Array::open(&n("array")).unwrap(),
            flags: RawArray::open(&n("flags")).unwrap(),
            mutex: ShmMutex::open(&n("mutex")).unwrap(),
            region: Region::open(&n("region")).unwrap(),
            // Named objects have no way to name a block in another object's heap: the value in
            // the heap is reached through a second open of the named value instead.
            value_in_heap: Value::open(&n("value-in-heap")).unwrap(),
            shared_a: Value::open(&n("shared-a")).unwrap(),
            shared_b: Value::open(&n("shared-b")).unwrap(),
            heap,
        }
    }

    /// The parent's side before the touch: hold the three locks, take the bounded semaphore's
    /// one unit, queue one job.
    fn prepare(&self) {
        for acquired in [
            self.lock.acquire(),
            self.rlock.acquire(),
            self.cond.acquire(),
        ] {
            assert_eq!(acquired.unwrap(), baozi::sync::Acquired::Clean);
        }
        assert!(self.bsem.try_acquire());
        self.joinable.put("job".to_owned()).unwrap();
    }

    /// The parent's side after the touch: every effect is there.
    fn check(&self, tag: &str, heap_used_before: usize) {
        assert_eq!(self.flags.to_vec(), [1, 1, 1, 1], "{tag}: toucher's flags");
        assert_eq!(
            self.queue.get_timeout(BOUND).unwrap(),
            format!("touched by {tag}")
        );
        self.joinable.join_timeout(BOUND).unwrap();
        assert_eq!(self.sem.get_value(), 1, "{tag}: semaphore");
        assert_eq!(self.bsem.get_value(), 1, "{tag}: bounded semaphore");
        assert!(self.event.is_set(), "{tag}: event");
        assert!(self.heap.stats().unwrap().used > heap_used_before, "{tag}");
        assert_eq!(self.value.get().unwrap(), 1, "{tag}: value");
        assert_eq!(self.raw_value.get(), 7, "{tag}: raw value");
        assert_eq!(self.array.to_vec().unwrap(), [0, 9, 0, 0], "{tag}: array");
        assert_eq!(*self.mutex.lock().unwrap(), 1, "{tag}: mutex");
        assert_eq!(
            word(&self.region).load(Ordering::SeqCst),
            1,
            "{tag}: region"
        );
        assert_eq!(self.value_in_heap.get().unwrap(), 1, "{tag}: value in heap");
        assert_eq!(self.shared_a.get().unwrap(), 1, "{tag}: shared a");
        assert_eq!(self.shared_b.get().unwrap(), 1, "{tag}: shared b");
        self.lock.release().unwrap();
        self.rlock.release().unwrap();
        self.cond.release().unwrap();
    }
}

fn word(region: &Region) -> &AtomicU64 {
    region.get(Offset::new(0)).unwrap()
}

/// The other side: only the same objects as the parent's can show every one of these effects.
fn touch(h: &Handles, tag: &str) -> Result<(), String> {
    let held = |r: Result<Option<baozi::sync::Acquired>, _>| matches!(r, Ok(None));
    if held(h.lock.try_acquire()) {
        h.flags.set(0, 1).unwrap();
    }
    if held(h.rlock.try_acquire()) {
        h.flags.set(1, 1).unwrap();
    }
    if held(h.cond.try_acquire()) {
        h.flags.set(2, 1).unwrap();
    }
    h.barrier
        .wait_timeout(BOUND)
        .map_err(|e| format!("barrier: {e}"))?;
    h.queue.put(format!("touched by {tag}")).unwrap();
    let job = h.joinable.get_timeout(BOUND).map_err(|e| e.to_string())?;
    assert_eq!(job, "job");
    h.joinable.task_done().unwrap();
    h.sem.release().unwrap();
    h.bsem.release().unwrap();
    h.event.set();
    let block = h
        .heap
        .alloc(std::alloc::Layout::from_size_align(64, 8).unwrap())
        .unwrap();
    // SAFETY: the block was just allocated for us, 64 bytes, and nobody else knows it.
    unsafe { h.heap.ptr(block).unwrap().as_ptr().write_bytes(0xab, 64) };
    *h.value.lock().unwrap() += 1;
    h.raw_value.set(7);
    h.array.set(1, 9).unwrap();
    *h.mutex.lock().unwrap() += 1;
    word(&h.region).fetch_add(1, Ordering::SeqCst);
    *h.value_in_heap.lock().unwrap() += 1;
    *h.shared_a.lock().unwrap() += 1;
    *h.shared_b.lock().unwrap() += 1;
    h.flags.set(3, 1).unwrap();
    Ok(())
}

/// Runs `start` (which makes the other side touch `h` with `tag`), meets it at the barrier, waits
/// with `finish`, and checks.
fn through<S>(h: &Handles, tag: &str, start: impl FnOnce() -> S, finish: impl FnOnce(S)) {
    h.prepare();
    let used = h.heap.stats().unwrap().used;
    let started = start();
    h.barrier.wait_timeout(BOUND).unwrap();
    finish(started);
    h.check(tag, used);
}

/// Every handle is `Clone + Send + Sync + 'static` (checked at compile time): a `Process`
/// closure can capture it, a struct can store it, a function can return it.
#[allow(dead_code)]
fn handles_are_clone_send_sync() {
    fn handle<T: Clone + Send + Sync + 'static>() {}
    handle::<Queue<String>>();
    handle::<JoinableQueue<String>>();
    handle::<Lock>();
    handle::<RLock>();
    handle::<Semaphore>();
    handle::<BoundedSemaphore>();
    handle::<Event>();
    handle::<Condition>();
    handle::<Barrier>();
    handle::<Heap>();
    handle::<Value<u64>>();
    handle::<RawValue<u64>>();
    handle::<Array<u32>>();
    handle::<RawArray<u32>>();
    handle::<ShmMutex<u64>>();
    handle::<Region>();
    handle::<baozi::alloc::SharedLock>();
    fn owned<T: Send + Sync + 'static>() {}
    owned::<baozi::ShmBox<u64>>(); // one owner, like Box: not Clone
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--role") {
        let code = std::panic::catch_unwind(|| role(&args[2..])).unwrap_or(support::CHILD_PANICKED);
        support::flush_std();
        std::process::exit(code);
    }
    support::run_main(vec![
        case("captured_by_a_process", captured_by_a_process),
        case("pool_argument_to_workers_forked_before", pool_argument),
        case("pool_result_made_by_a_worker", pool_result),
        case("inside_a_message_through_a_queue", inside_a_message),
        case("exec_peer_attaches_a_serialised_reference", exec_by_ref),
        case("exec_peer_opens_by_name", exec_by_name),
        case("python_pool_queue_scenario", python_pool_queue_scenario),
        case("type_mismatch_by_name_and_by_handle", type_mismatch),
        case("create_or_open_race_8_processes", create_or_open_race)
            .timeout(Duration::from_secs(120)),
        case("creator_killed_objects_stay_and_clean_up", creator_killed),
        case("handles_of_a_dead_object_are_gone", dead_object_is_gone),
        case(
            "a_lock_held_when_its_last_handle_goes_stays_mapped",
            held_lock_stays_mapped,
        ),
    ])
}

fn role(args: &[String]) -> i32 {
    match args {
        [r, hex, tag] if r == "touch-ref" => {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let h: Handles = postcard::from_bytes(&bytes).expect("attach every handle");
            touch(&h, tag).map(|()| 0).unwrap()
        }
        [r, prefix, tag] if r == "touch-name" => {
            let h = Handles::open_named(prefix);
            touch(&h, tag).map(|()| 0).unwrap()
        }
        _ => panic!("unknown role {args:?}"),
    }
}

fn captured_by_a_process() {
    let h = Handles::anonymous();
    let theirs = h.clone();
    let p = Process::new(move || touch(&theirs, "process"));
    through(
        &h,
        "process",
        || p.start().unwrap(),
        |()| assert_eq!(p.join().unwrap(), 0),
    );
}

fn touch_task((h, tag): (Handles, String)) -> Result<(), String> {
    touch(&h, &tag)
}

fn pool_argument() {
    let pool = Pool::new(2).unwrap(); // workers exist before the objects
    let h = Handles::anonymous();
    through(
        &h,
        "pool-arg",
        || {
            pool.apply_async(touch_task, (h.clone(), "pool-arg".into()))
                .unwrap()
        },
        |pending| pending.get().unwrap().unwrap(),
    );
    pool.close();
    pool.join().unwrap();
}

fn make_task(seed: u64) -> Handles {
    let mut h = Handles::anonymous();
    h.value.set(seed).unwrap();
    h.queue.put("made by a worker".to_owned()).unwrap();
    // A block in a shared heap lives while its creator holds it, and the worker lets go when the
    // task returns: a worker's result carries a value of its own instead (see heap_value_task).
    h.value_in_heap = Value::new(0).unwrap();
    h
}

fn heap_value_task(heap: Heap) -> Value<u64> {
    Value::new_in(&heap, 5).unwrap()
}

fn pool_result() {
    let pool = Pool::new(1).unwrap();
    // The worker drops its handles when the task returns; the objects live on in the parent.
    let h = pool.apply(make_task, 41).unwrap();
    // What a worker made in a shared heap and let go of is refused, not read as garbage.
    let e = pool.apply(heap_value_task, h.heap.clone()).unwrap_err();
    assert!(
        e.to_string()
            .contains("lives while the process that made it"),
        "{e}"
    );
    assert_eq!(h.value.get().unwrap(), 41);
    assert_eq!(h.queue.get_timeout(BOUND).unwrap(), "made by a worker");
    h.value.set(0).unwrap();
    // The pool's result thread is gone once it is joined: fork is refused while a process has
    // other threads (ProcessError::ForkWithThreads).
    pool.close();
    pool.join().unwrap();
    // And the returned handles travel on: to a process forked from the parent.
    let theirs = h.clone();
    let p = Process::new(move || touch(&theirs, "after-pool"));
    through(
        &h,
        "after-pool",
        || p.start().unwrap(),
        |()| assert_eq!(p.join().unwrap(), 0),
    );
}

fn inside_a_message() {
    let channel: Queue<Serde<Handles>> = Queue::new(1, 1 << 16).unwrap();
    let rx = channel.clone();
    // Forked before the objects exist: it can only reach them through the message.
    let child = fork_code(move || {
        let Serde(h) = rx.get_timeout(BOUND).expect("the handles");
        i32::from(touch(&h, "message").is_err())
    });
    let h = Handles::anonymous();
    through(
        &h,
        "message",
        || channel.put(Serde(h.clone())).unwrap(),
        |()| child.join_ok(BOUND, "message toucher"),
    );
}

fn exec_by_ref() {
    let h = Handles::anonymous();
    let hex: String = postcard::to_allocvec(&h)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    through(
        &h,
        "exec-ref",
        || {
            Command::new(std::env::current_exe().unwrap())
                .args(["--role", "touch-ref", &hex, "exec-ref"])
                .spawn()
                .unwrap()
        },
        |mut child| {
            let status = wait_process(&mut child, BOUND, "exec toucher");
            assert!(status.success(), "{status}");
        },
    );
}

fn exec_by_name() {
    let prefix = support::unique_name("handles");
    let mut h = Handles::create_named(&prefix);
    // The value in the named heap gets a name of its own for the peer (see open_named).
    h.value_in_heap = Value::<u64>::create(&format!("{prefix}-value-in-heap"), 0).unwrap();
    through(
        &h,
        "exec-name",
        || {
            Command::new(std::env::current_exe().unwrap())
                .args(["--role", "touch-name", &prefix, "exec-name"])
                .spawn()
                .unwrap()
        },
        |mut child| {
            let status = wait_process(&mut child, BOUND, "exec toucher");
            assert!(status.success(), "{status}");
        },
    );
    drop(h);
    let left: Vec<_> = baozi::shm::list()
        .unwrap()
        .into_iter()
        .filter(|e| e.name.starts_with(&prefix))
        .map(|e| e.name)
        .collect();
    assert!(left.is_empty(), "the creator's drop left {left:?}");
}

fn write(q: Queue<String>) -> usize {
    for x in ["A", "B", "C"] {
        q.put(x.to_owned()).unwrap();
    }
    3
}

fn read(q: Queue<String>) -> Vec<String> {
    (0..3).map(|_| q.get_timeout(BOUND).unwrap()).collect()
}

fn read_joinable(q: JoinableQueue<String>) -> usize {
    (0..3)
        .map(|_| {
            q.get_timeout(BOUND).unwrap();
            q.task_done().unwrap();
        })
        .count()
}

/// The tutorial's "Pool下的Queue通信": a writer task and a reader task share a queue that the
/// pool's workers never inherited.
fn python_pool_queue_scenario() {
    let pool = Pool::new(2).unwrap();
    let q: Queue<String> = Queue::new(0, 4096).unwrap();
    let w = pool.apply_async(write, q.clone()).unwrap();
    let r = pool.apply_async(read, q.clone()).unwrap();
    assert_eq!(w.get().unwrap(), 3);
    assert_eq!(r.get().unwrap(), ["A", "B", "C"]);
    let jq: JoinableQueue<String> = JoinableQueue::new(0, 4096).unwrap();
    for x in ["A", "B", "C"] {
        jq.put(x.to_owned()).unwrap();
    }
    let done = pool.apply_async(read_joinable, jq.clone()).unwrap();
    jq.join_timeout(BOUND).unwrap();
    assert_eq!(done.get().unwrap(), 3);
    pool.close();
    pool.join().unwrap();
}

fn type_mismatch() {
    let name = ShmName::new("typed");
    let q: Queue<String> = Queue::create(name.name(), 0, 4096).unwrap();
    match Queue::<Serde<Vec<u32>>>::open(name.name()) {
        Err(QueueError::Shm(ShmError::TypeMismatch {
            found, expected, ..
        })) => {
            assert_eq!(found, "alloc::string::String");
            assert!(
                expected.contains("Serde<alloc::vec::Vec<u32>>"),
                "{expected}"
            );
        }
        other => panic!("expected TypeMismatch, got {other:?}"),
    }
    // By handle: the reference says which queue, the header says what it holds.
    let bytes = postcard::to_allocvec(&q).unwrap();
    let e = postcard::from_bytes::<Queue<Serde<u64>>>(&bytes)
        .expect_err("a String queue read as a u64 queue");
    let why = baozi::shm::take_attach_error().expect("the reason is kept");
    assert!(why.contains("holds alloc::string::String"), "{e}: {why}");
    // The untyped view still opens it: raw bytes are always readable.
    q.put("pork".to_owned()).unwrap();
    let raw: Queue<Vec<u8>> = Queue::open(name.name()).unwrap();
    assert_eq!(raw.get().unwrap(), b"pork");
    drop((q, raw));

    let vname = ShmName::new("typed-value");
    let v = Value::<u32>::create(vname.name(), 5).unwrap();
    assert!(matches!(
        Value::<u64>::open(vname.name()),
        Err(AllocError::Shm(ShmError::TypeMismatch { .. }))
    ));
    let bytes = postcard::to_allocvec(&v).unwrap();
    assert!(postcard::from_bytes::<Value<i32>>(&bytes).is_err());
    assert_eq!(
        postcard::from_bytes::<Value<u32>>(&bytes)
            .unwrap()
            .get()
            .unwrap(),
        5
    );
    // Serialising keeps the mapping lingering for other processes, but not the names: they go
    // with the creator's last handle.
    drop(v);
    let lock_file = format!("/dev/shm/baozi-{}.lock", vname.name());
    assert!(!vname.exists() && !std::path::Path::new(&lock_file).exists());
    let arr = Array::<u16>::zeroed(3).unwrap();
    let bytes = postcard::to_allocvec(&arr).unwrap();
    assert!(postcard::from_bytes::<Array<u32>>(&bytes).is_err());
    let mutex = ShmMutex::<u32>::anonymous(1).unwrap();
    let bytes = postcard::to_allocvec(&mutex).unwrap();
    assert!(postcard::from_bytes::<ShmMutex<u64>>(&bytes).is_err());
    // A primitive of another kind is refused by the same route.
    let bytes = postcard::to_allocvec(&Event::anonymous().unwrap()).unwrap();
    assert!(postcard::from_bytes::<Lock>(&bytes).is_err());
}

/// 8 processes race `create_or_open` on a fresh name, 200 rounds: exactly one creates each
/// round, and all of them see the same queue.
fn create_or_open_race() {
    const PROCS: usize = 8;
    const ROUNDS: usize = 200;
    // Tallies per round: creators, then processes that saw all 8 puts.
    let created = Region::anonymous(ROUNDS * 4).unwrap();
    let seen = Region::anonymous(ROUNDS * 4).unwrap();
    let start = Barrier::anonymous(PROCS as u32).unwrap();
    let prefix = support::unique_name("race");
    let children: Vec<_> = (0..PROCS)
        .map(|_| {
            let (created, seen, start, prefix) =
                (created.clone(), seen.clone(), start.clone(), prefix.clone());
            fork(move || {
                for round in 0..ROUNDS {
                    let name = format!("{prefix}-{round}");
                    start.wait_timeout(BOUND).unwrap();
                    let q: Queue<String> = Queue::create_or_open(&name, 0, 4096).unwrap();
                    if q.region().is_owner() {
                        q.persist(); // the test unlinks it: the creator may finish first
                        add(&created, round);
                    }
                    q.put("here".to_owned()).unwrap();
                    start.wait_timeout(BOUND).unwrap();
                    if q.qsize() == PROCS {
                        add(&seen, round);
                    }
                    start.wait_timeout(BOUND).unwrap();
                }
            })
        })
        .collect();
    support::join_all_ok(children, Duration::from_secs(100), "racer");
    for round in 0..ROUNDS {
        let _ = Region::unlink(&format!("{prefix}-{round}"));
    }
    for round in 0..ROUNDS {
        let c = tally_at(&created, round).load(Ordering::SeqCst);
        let s = tally_at(&seen, round).load(Ordering::SeqCst);
        assert_eq!(c, 1, "round {round}: {c} creators");
        assert_eq!(s, PROCS as u32, "round {round}: only {s} saw every put");
    }
}

fn add(tally: &Region, round: usize) {
    tally_at(tally, round).fetch_add(1, Ordering::SeqCst);
}

fn tally_at(tally: &Region, round: usize) -> &std::sync::atomic::AtomicU32 {
    tally.get(Offset::new(round as u64 * 4)).unwrap()
}

/// The creator of an anonymous and of a named queue is SIGKILLed: those holding them go on; a
/// process that attaches afterwards (its reference names the dead creator) finds another holder;
/// when every holder is gone the named one is a leftover that `unlink_if_stale` removes.
fn creator_killed() {
    let name = ShmName::new("orphan");
    let channel: Queue<Serde<(Queue<String>, Queue<String>)>> = Queue::new(2, 1 << 14).unwrap();
    let go = Event::anonymous().unwrap();
    let ready = Event::anonymous().unwrap();
    let tx = channel.clone();
    let (go2, ready2) = (go.clone(), ready.clone());
    let queue_name = name.name().to_owned();
    let mut creator = fork(move || {
        let anon: Queue<String> = Queue::new(0, 4096).unwrap();
        let named: Queue<String> = Queue::create(&queue_name, 0, 4096).unwrap();
        anon.put("from the creator".to_owned()).unwrap();
        named.put("from the creator".to_owned()).unwrap();
        // Two references: one for the parent now, one for a latecomer.
        tx.put(Serde((anon.clone(), named.clone()))).unwrap();
        tx.put(Serde((anon.clone(), named.clone()))).unwrap();
        ready2.set();
        go2.wait_timeout(BOUND).unwrap(); // killed while waiting here
        unreachable!("the creator is killed before it is told to go");
    });
    // The latecomer is forked before this process attaches to anything: it has no mapping of
    // the queues, and its reference names the creator, dead by the time it reads it. It must
    // find another holder (this process) through /proc for the anonymous queue.
    let killed = Event::anonymous().unwrap();
    let (late_rx, killed2) = (channel.clone(), killed.clone());
    let latecomer = fork_code(move || {
        assert!(killed2.wait_timeout(BOUND).unwrap());
        let Serde((anon, named)) = late_rx.get_timeout(BOUND).expect("attach after the kill");
        anon.put("from the latecomer".to_owned()).unwrap();
        named.put("from the latecomer".to_owned()).unwrap();
        0
    });
    let Serde((anon, named)) = channel.get_timeout(BOUND).unwrap();
    assert!(
        ready.wait_timeout(BOUND).unwrap(),
        "the creator sent both references"
    );
    creator.signal(libc::SIGKILL);
    assert!(creator.wait_timeout(BOUND).unwrap().sigkilled());
    killed.set();
    latecomer.join_ok(BOUND, "latecomer");
    for q in [&anon, &named] {
        assert_eq!(q.get_timeout(BOUND).unwrap(), "from the creator");
        assert_eq!(q.get_timeout(BOUND).unwrap(), "from the latecomer");
    }
    // The named queue's creator never unlinked it; while the parent holds it, it is in use.
    assert!(name.exists());
    assert!(!Region::unlink_if_stale(name.name()).unwrap(), "in use");
    let entry = baozi::shm::list()
        .unwrap()
        .into_iter()
        .find(|e| e.name == name.name())
        .unwrap();
    assert!(!entry.creator_alive && !entry.is_orphan());
    drop((anon, named, channel, killed));
    std::thread::sleep(Duration::from_millis(50));
    let entry = baozi::shm::list()
        .unwrap()
        .into_iter()
        .find(|e| e.name == name.name())
        .unwrap();
    assert!(entry.is_orphan() && !entry.creator_alive, "{entry:?}");
    assert!(Region::unlink_if_stale(name.name()).unwrap());
    assert!(!name.exists());
    // And a fresh queue of that name can be made again (QueueOptions::replace_stale for the
    // same in one call).
    let again: Queue<String> = Queue::create(name.name(), 0, 4096).unwrap();
    drop(go);
    drop(again);
}

/// A reference to an anonymous object that every holder has let go of: `Gone`, at once.
fn dead_object_is_gone() {
    let channel: Queue<Vec<u8>> = Queue::new(1, 4096).unwrap();
    let tx = channel.clone();
    let child = fork(move || {
        let q: Queue<String> = Queue::new(0, 4096).unwrap();
        tx.put(postcard::to_allocvec(&q).unwrap()).unwrap();
        // Leaves at once (its lingering copy goes with it).
    });
    child.join_ok(BOUND, "maker");
    let bytes = channel.get_timeout(BOUND).unwrap();
    let started = std::time::Instant::now();
    assert!(postcard::from_bytes::<Queue<String>>(&bytes).is_err());
    let why = baozi::shm::take_attach_error().unwrap();
    assert!(why.contains("no longer exists"), "{why}");
    // Through baozi's own codec the reason is part of the error.
    let e = <Serde<Queue<String>> as baozi::Message>::decode(&bytes).unwrap_err();
    assert!(e.to_string().contains("no longer exists"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A robust mutex held by this thread when the last handle to its object goes (taken with
/// `acquire` and never released, or a guard forgotten) is on the thread's glibc robust list:
/// unmapping it would make the next robust lock of the thread fault. The mapping stays, and
/// every later lock works.
fn held_lock_stays_mapped() {
    for round in 0..3 {
        let lock = Lock::new().unwrap();
        assert_eq!(lock.acquire().unwrap(), baozi::sync::Acquired::Clean);
        let rlock = RLock::new().unwrap();
        let _ = rlock.acquire().unwrap();
        let cond = Condition::new().unwrap();
        let _ = cond.acquire().unwrap();
        let mutex = ShmMutex::new(5u64).unwrap();
        std::mem::forget(mutex.lock().unwrap());
        let value = Value::new(1u32).unwrap();
        std::mem::forget(value.lock().unwrap());
        let copies = (lock.clone(), rlock.clone());
        drop((lock, rlock, cond, mutex, value, copies));
        // The thread's robust list still names them; these would fault on an unmapped entry.
        let q: Queue<String> = Queue::new(0, 4096).unwrap();
        q.put(format!("round {round}")).unwrap();
        assert_eq!(q.get().unwrap(), format!("round {round}"));
        let fresh = Lock::new().unwrap();
        assert_eq!(fresh.acquire().unwrap(), baozi::sync::Acquired::Clean);
        fresh.release().unwrap();
        let heap = Heap::new(1 << 16).unwrap();
        let block = heap
            .alloc(std::alloc::Layout::from_size_align(64, 8).unwrap())
            .unwrap();
        heap.free(block).unwrap();
    }
}
