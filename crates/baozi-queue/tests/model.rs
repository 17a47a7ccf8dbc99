//! Model test: random sequences of queue operations, run against a [`Queue`] and against a
//! plain model of its contract (a `VecDeque` with the same item limit and byte capacity), must
//! give identical results — items, `Full`/`Empty`/`TooLarge`/`Closed`, `qsize`, `empty`, `full`
//! and `used_bytes` — after every step.
//!
//! The model's byte accounting follows the documented framing rule: a message takes an 8-byte
//! header plus its length rounded up to 8; a frame never straddles the end of the ring (when it
//! does not fit before the end, the bytes up to the end are padding and it goes at offset 0);
//! an empty ring goes on where the last frame ended if the next batch's first frame fits there
//! before the end, and otherwise starts over at offset 0 (so a batch of up to the capacity
//! always fits an empty ring).
//!
//! Single process, single thread: a blocking call is issued only when the model says it
//! completes at once (otherwise its `_nowait` form is used), so a correct queue never blocks
//! here; if one does, a watchdog closes the queue so that the case fails and shrinks.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use baozi_queue::{GetError, PutError, Queue, QueueOptions};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Timeout of the `_timeout` operations: short, as they run only where the model expects Full
/// or Empty (or an immediate answer).
const SHORT: Duration = Duration::from_micros(300);

// --- the model ---

const HEADER: u32 = 8;

fn frame_len(len: usize) -> u64 {
    u64::from(HEADER) + ((len as u64 + 7) & !7)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PutOutcome {
    Ok,
    Full,
    TooLarge { needed: usize, capacity: usize },
    TooMany { items: usize, maxsize: usize },
    Closed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum GetOutcome {
    Items(Vec<Vec<u8>>),
    Empty,
    Closed,
}

#[derive(Debug)]
struct Model {
    /// Ring bytes (the requested capacity rounded up to 8).
    cap: u32,
    /// 0: no item limit.
    maxsize: u32,
    /// Queued messages, each with the bytes it took (wrap padding before it, then its frame).
    items: VecDeque<(Vec<u8>, u32)>,
    /// Where the next frame goes (also while the ring is empty: where the last one ended).
    tail: u32,
    /// Sum of the costs of the queued messages.
    used: u32,
    closed: bool,
}

impl Model {
    fn new(maxsize: u32, capacity: usize) -> Self {
        Model {
            cap: ((capacity + 7) & !7) as u32,
            maxsize,
            items: VecDeque::new(),
            tail: 0,
            used: 0,
            closed: false,
        }
    }

    /// Where frames of these lengths go: the new tail and each one's cost, or None if there is
    /// no room for all of them now.
    fn place(&self, frames: &[u32]) -> Option<(u32, Vec<u32>)> {
        if self.items.is_empty() {
            self.place_from(self.tail, 0, frames, true)
                .or_else(|| self.place_from(0, 0, frames, false))
        } else {
            self.place_from(self.tail, self.used, frames, false)
        }
    }

    fn place_from(
        &self,
        mut pos: u32,
        mut used: u32,
        frames: &[u32],
        first_must_fit_before_end: bool,
    ) -> Option<(u32, Vec<u32>)> {
        let mut costs = Vec::new();
        for &len in frames {
            let before_end = self.cap - pos;
            let (at, cost) = if len <= before_end {
                (pos, len)
            } else if first_must_fit_before_end && costs.is_empty() {
                return None;
            } else {
                (0, before_end + len)
            };
            if used + cost > self.cap {
                return None;
            }
            used += cost;
            pos = (at + len) % self.cap;
            costs.push(cost);
        }
        Some((pos, costs))
    }

    fn put(&mut self, msgs: &[Vec<u8>]) -> PutOutcome {
        let needed: u64 = msgs.iter().map(|m| frame_len(m.len())).sum();
        let n = msgs.len() as u64;
        if self.maxsize != 0 && n > u64::from(self.maxsize) {
            return PutOutcome::TooMany {
                items: n as usize,
                maxsize: self.maxsize as usize,
            };
        }
        if needed > u64::from(self.cap) {
            return PutOutcome::TooLarge {
                needed: needed as usize,
                capacity: self.cap as usize,
            };
        }
        if self.closed {
            return PutOutcome::Closed;
        }
        if self.maxsize != 0 && self.items.len() as u64 + n > u64::from(self.maxsize) {
            return PutOutcome::Full;
        }
        let frames: Vec<u32> = msgs.iter().map(|m| frame_len(m.len()) as u32).collect();
        let Some((tail, costs)) = self.place(&frames) else {
            return PutOutcome::Full;
        };
        for (m, cost) in msgs.iter().zip(costs) {
            self.used += cost;
            self.items.push_back((m.clone(), cost));
        }
        self.tail = tail;
        PutOutcome::Ok
    }

    /// What a put of these messages would answer now, without doing it.
    fn put_would(&self, msgs: &[Vec<u8>]) -> PutOutcome {
        let mut probe = Model {
            cap: self.cap,
            maxsize: self.maxsize,
            items: self.items.clone(),
            tail: self.tail,
            used: self.used,
            closed: self.closed,
        };
        probe.put(msgs)
    }

    fn get(&mut self, max: usize) -> GetOutcome {
        if self.items.is_empty() {
            return if self.closed {
                GetOutcome::Closed
            } else {
                GetOutcome::Empty
            };
        }
        let mut out = Vec::new();
        while out.len() < max {
            let Some((m, cost)) = self.items.pop_front() else {
                break;
            };
            self.used -= cost;
            out.push(m);
        }
        if self.items.is_empty() {
            self.used = 0;
        }
        GetOutcome::Items(out)
    }

    fn qsize(&self) -> usize {
        self.items.len()
    }

    fn full(&self) -> bool {
        (self.maxsize != 0 && self.items.len() >= self.maxsize as usize)
            || self.place(&[HEADER]).is_none()
    }

    fn used_bytes(&self) -> usize {
        self.used as usize
    }
}

// --- operations ---

/// A message length, resolved against the queue's largest message when the case runs.
#[derive(Clone, Copy, Debug)]
enum Len {
    /// Exactly this many bytes.
    Abs(usize),
    /// This many thousandths of the largest message.
    Frac(u16),
    /// The largest message plus this (may be TooLarge).
    NearMax(i8),
}

impl Len {
    fn resolve(self, max: usize) -> usize {
        match self {
            Len::Abs(n) => n,
            Len::Frac(f) => max * usize::from(f) / 1000,
            Len::NearMax(d) => (max as i64 + i64::from(d)).max(0) as usize,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(Len),
    PutNowait(Len),
    PutTimeout(Len),
    PutBytes(Len, bool),
    PutMany(Vec<Len>),
    PutManyNowait(Vec<Len>),
    Get,
    GetNowait,
    GetTimeout,
    GetBytes(bool),
    GetMany(usize),
    GetManyNowait(usize),
    Close,
}

fn len() -> impl Strategy<Value = Len> {
    prop_oneof![
        4 => (0usize..=24).prop_map(Len::Abs),
        4 => (0usize..=160).prop_map(Len::Abs),
        2 => (0u16..=1000).prop_map(Len::Frac),
        4 => (50u16..=400).prop_map(Len::Frac),
        1 => (-24i8..=8).prop_map(Len::NearMax),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    // Close is rare (about once in 150 operations), so most sequences run long before it.
    prop_oneof![
        24 => len().prop_map(Op::Put),
        24 => len().prop_map(Op::PutNowait),
        4 => len().prop_map(Op::PutTimeout),
        8 => (len(), any::<bool>()).prop_map(|(l, nowait)| Op::PutBytes(l, nowait)),
        8 => prop::collection::vec(len(), 1..=5).prop_map(Op::PutMany),
        8 => prop::collection::vec(len(), 1..=5).prop_map(Op::PutManyNowait),
        20 => Just(Op::Get),
        20 => Just(Op::GetNowait),
        4 => Just(Op::GetTimeout),
        8 => any::<bool>().prop_map(Op::GetBytes),
        8 => (1usize..=6).prop_map(Op::GetMany),
        8 => (1usize..=6).prop_map(Op::GetManyNowait),
        1 => Just(Op::Close),
    ]
}

#[derive(Clone, Debug)]
struct Config {
    maxsize: usize,
    capacity: usize,
    spin: bool,
}

fn config() -> impl Strategy<Value = Config> {
    let maxsize = prop_oneof![3 => Just(0usize), 2 => 1usize..=4, 1 => 5usize..=40];
    let capacity = prop_oneof![1 => Just(64usize), 3 => 64usize..=512, 2 => 512usize..=4096];
    (maxsize, capacity, any::<bool>()).prop_map(|(maxsize, capacity, spin)| Config {
        maxsize,
        capacity,
        spin,
    })
}

// --- running a case ---

/// The `seq`-th message of a case: its bytes identify it, so order and content are checked.
fn message(seq: u64, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|i| (seq as usize).wrapping_mul(131).wrapping_add(i) as u8)
        .collect();
    if len >= 8 {
        v[..8].copy_from_slice(&seq.to_le_bytes());
    }
    v
}

fn put_outcome<T>(r: Result<(), PutError<T>>, item: &T) -> Result<PutOutcome, TestCaseError>
where
    T: PartialEq + std::fmt::Debug,
{
    let back = match r {
        Ok(()) => return Ok(PutOutcome::Ok),
        Err(PutError::Full(back)) => (PutOutcome::Full, back),
        Err(PutError::Closed(back)) => (PutOutcome::Closed, back),
        Err(PutError::TooLarge {
            item,
            needed,
            capacity,
        }) => (PutOutcome::TooLarge { needed, capacity }, item),
        Err(PutError::TooMany {
            item,
            items,
            maxsize,
        }) => (PutOutcome::TooMany { items, maxsize }, item),
        Err(e) => return Err(TestCaseError::fail(format!("unexpected put error: {e}"))),
    };
    prop_assert_eq!(&back.1, item, "the error did not give the item back");
    Ok(back.0)
}

fn get_outcome(r: Result<Vec<Vec<u8>>, GetError>) -> Result<GetOutcome, TestCaseError> {
    match r {
        Ok(items) => Ok(GetOutcome::Items(items)),
        Err(GetError::Empty) => Ok(GetOutcome::Empty),
        Err(GetError::Closed) => Ok(GetOutcome::Closed),
        Err(e) => Err(TestCaseError::fail(format!("unexpected get error: {e}"))),
    }
}

/// What the watchdog reports if an operation hangs.
static CURRENT: Mutex<String> = Mutex::new(String::new());
/// Milliseconds since the watchdog started when the current operation began; 0 when none runs.
static STARTED_MS: AtomicU64 = AtomicU64::new(0);
/// The queue of the case now running, for the watchdog to close.
static RUNNING: Mutex<Option<Weak<Queue<Vec<u8>>>>> = Mutex::new(None);
/// Set by the watchdog when it had to close a hung queue.
static HUNG: AtomicBool = AtomicBool::new(false);

/// Marks an operation as running for the watchdog, until dropped (even by an early return).
struct Busy;

impl Busy {
    fn start(since: Instant) -> Busy {
        STARTED_MS.store(
            (since.elapsed().as_millis() as u64).max(1),
            Ordering::SeqCst,
        );
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        STARTED_MS.store(0, Ordering::SeqCst);
    }
}

/// A blocking call runs only where the model says it completes at once; if the queue disagrees
/// it would block for ever. The watchdog then closes the queue, which wakes the call, so the case
/// fails (and shrinks) instead of hanging; if even that does not help, it aborts.
fn watchdog_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(|| {
        let start = Instant::now();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            let started = STARTED_MS.load(Ordering::SeqCst);
            let running_ms = (start.elapsed().as_millis() as u64).saturating_sub(started);
            if started == 0 || running_ms < 1_000 {
                continue;
            }
            let op = CURRENT.lock().map(|s| s.clone()).unwrap_or_default();
            if running_ms > 60_000 {
                eprintln!("model test: an operation hung for a minute, even after close: {op}");
                std::process::abort();
            }
            if !HUNG.swap(true, Ordering::SeqCst) {
                eprintln!("model test: an operation blocked for 1 s; closing its queue: {op}");
                let q = RUNNING
                    .lock()
                    .ok()
                    .and_then(|r| r.as_ref().and_then(Weak::upgrade));
                if let Some(q) = q {
                    let _ = q.close();
                }
            }
        });
        start
    })
}

fn run(cfg: &Config, ops: &[Op]) -> Result<(), TestCaseError> {
    let start = watchdog_start();
    let q: Queue<Vec<u8>> = QueueOptions::new()
        .maxsize(cfg.maxsize)
        .capacity(cfg.capacity)
        .spin(cfg.spin)
        .anonymous()
        .expect("a valid configuration");
    let q = Arc::new(q);
    HUNG.store(false, Ordering::SeqCst);
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::downgrade(&q));
    let mut model = Model::new(cfg.maxsize as u32, cfg.capacity);
    prop_assert_eq!(q.capacity_bytes(), model.cap as usize);
    prop_assert_eq!(q.max_message_len(), model.cap as usize - 8);
    let max = q.max_message_len();
    let mut seq = 0u64;
    let mut next = |l: Len| {
        seq += 1;
        message(seq, l.resolve(max))
    };
    let mut buf = Vec::new();

    for (step, op) in ops.iter().enumerate() {
        if let Ok(mut c) = CURRENT.lock() {
            *c = format!("step {step}: {op:?} with {cfg:?}");
        }
        let busy = Busy::start(start);
        match op {
            Op::Put(l) | Op::PutNowait(l) | Op::PutTimeout(l) => {
                let m = next(*l);
                let expected = model.put_would(std::slice::from_ref(&m));
                let r = match op {
                    // Blocking only where it completes at once.
                    Op::Put(_) if expected != PutOutcome::Full => q.put(m.clone()),
                    Op::PutTimeout(_) => q.put_timeout(m.clone(), SHORT),
                    _ => q.put_nowait(m.clone()),
                };
                let got = put_outcome(r, &m)?;
                prop_assert_eq!(
                    &got,
                    &model.put(std::slice::from_ref(&m)),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::PutBytes(l, nowait) => {
                let m = next(*l);
                let expected = model.put_would(std::slice::from_ref(&m));
                let timeout = if *nowait || expected == PutOutcome::Full {
                    Some(Duration::ZERO)
                } else {
                    None
                };
                let got = put_outcome(q.put_bytes(&m, timeout), &())?;
                prop_assert_eq!(
                    &got,
                    &model.put(std::slice::from_ref(&m)),
                    "step {}: {:?}",
                    step,
                    op
                );
            }
            Op::PutMany(ls) | Op::PutManyNowait(ls) => {
                let ms: Vec<Vec<u8>> = ls.iter().map(|&l| next(l)).collect();
                let expected = model.put_would(&ms);
                let r = match op {
                    Op::PutMany(_) if expected != PutOutcome::Full => q.put_many(ms.clone()),
                    _ => q.put_many_nowait(ms.clone()),
                };
                let got = put_outcome(r, &ms)?;
                prop_assert_eq!(&got, &model.put(&ms), "step {}: {:?}", step, op);
            }
            Op::Get | Op::GetNowait | Op::GetTimeout | Op::GetBytes(_) => {
                let ready = model.qsize() > 0 || model.closed;
                let r = match op {
                    Op::Get if ready => q.get(),
                    Op::GetTimeout => q.get_timeout(SHORT),
                    Op::GetBytes(nowait) => {
                        let timeout = if *nowait || !ready {
                            Some(Duration::ZERO)
                        } else {
                            None
                        };
                        q.get_bytes_into(&mut buf, timeout).map(|()| buf.clone())
                    }
                    _ => q.get_nowait(),
                };
                let got = get_outcome(r.map(|m| vec![m]))?;
                prop_assert_eq!(&got, &model.get(1), "step {}: {:?}", step, op);
            }
            Op::GetMany(max) | Op::GetManyNowait(max) => {
                let ready = model.qsize() > 0 || model.closed;
                let r = match op {
                    Op::GetMany(_) if ready => q.get_many(*max),
                    _ => q.get_many_nowait(*max),
                };
                let got = get_outcome(r)?;
                prop_assert_eq!(&got, &model.get(*max), "step {}: {:?}", step, op);
            }
            Op::Close => {
                q.close()
                    .map_err(|e| TestCaseError::fail(format!("close: {e}")))?;
                model.closed = true;
            }
        }
        drop(busy);
        prop_assert!(
            !HUNG.load(Ordering::SeqCst),
            "step {}: {:?} blocked although the model says it completes at once",
            step,
            op
        );
        prop_assert_eq!(
            q.qsize(),
            model.qsize(),
            "qsize after step {}: {:?}",
            step,
            op
        );
        prop_assert_eq!(
            q.empty(),
            model.qsize() == 0,
            "empty after step {}: {:?}",
            step,
            op
        );
        prop_assert_eq!(q.full(), model.full(), "full after step {}: {:?}", step, op);
        prop_assert_eq!(
            q.used_bytes(),
            model.used_bytes(),
            "used_bytes after step {}: {:?}",
            step,
            op
        );
        prop_assert_eq!(
            q.is_closed(),
            model.closed,
            "is_closed after step {}: {:?}",
            step,
            op
        );
    }

    // Whatever is left comes out in order.
    let mut rest = Vec::new();
    while let Ok(m) = q.get_nowait() {
        rest.push(m);
    }
    let expected: Vec<Vec<u8>> = model.items.iter().map(|(m, _)| m.clone()).collect();
    prop_assert_eq!(rest, expected, "the items left over differ");
    prop_assert_eq!(q.used_bytes(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        // A case where the queue blocks costs a second per run: bound the shrinking.
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn queue_matches_the_model(cfg in config(), ops in prop::collection::vec(op(), 0..200)) {
        run(&cfg, &ops)?;
    }
}

/// The model itself, on cases worked out by hand, so that a bug in it is not mistaken for one
/// in the queue.
#[test]
fn the_model_follows_the_framing_rule() {
    let mut m = Model::new(0, 64);
    assert_eq!(m.put(&[vec![0; 40]]), PutOutcome::Ok); // 0..48
    assert_eq!(m.used_bytes(), 48);
    assert_eq!(m.get(1), GetOutcome::Items(vec![vec![0; 40]]));
    // Empty again, at 48: a 64-byte frame fits only at 0, so the ring starts over there.
    assert_eq!(m.put(&[vec![1; 56]]), PutOutcome::Ok);
    assert!(m.full());
    assert_eq!(m.put(&[vec![]]), PutOutcome::Full);
    assert_eq!(
        m.put(&[vec![0; 57]]),
        PutOutcome::TooLarge {
            needed: 72,
            capacity: 64
        }
    );
    m.get(1);
    // 0..16 and 16..56, then take the first: 8 bytes before the end, 16 after the start.
    assert_eq!(m.put(&[vec![2; 8], vec![3; 32]]), PutOutcome::Ok);
    m.get(1);
    assert_eq!(m.used_bytes(), 40);
    // A 16-byte frame does not fit in the 8 bytes before the end: 8 of padding, then 0..16.
    assert_eq!(m.put(&[vec![4; 1]]), PutOutcome::Ok);
    assert_eq!(m.used_bytes(), 64);
    assert!(m.full());
    m.get(1);
    assert_eq!(m.used_bytes(), 24);
    // An empty message goes right after it.
    assert_eq!(m.put(&[vec![]]), PutOutcome::Ok);
    assert_eq!(m.used_bytes(), 32);
    m.closed = true;
    assert_eq!(m.put(&[vec![]]), PutOutcome::Closed);
    assert_eq!(
        m.put(&[vec![0; 100]]),
        PutOutcome::TooLarge {
            needed: 112,
            capacity: 64
        }
    );
    assert_eq!(m.get(5), GetOutcome::Items(vec![vec![4; 1], vec![]]));
    assert_eq!(m.get(1), GetOutcome::Closed);

    let mut m = Model::new(2, 4096);
    assert_eq!(
        m.put(&[vec![], vec![], vec![]]),
        PutOutcome::TooMany {
            items: 3,
            maxsize: 2
        }
    );
    assert_eq!(m.put(&[vec![]]), PutOutcome::Ok);
    assert_eq!(m.put(&[vec![], vec![]]), PutOutcome::Full);
    assert!(!m.full());
    assert_eq!(m.put(&[vec![]]), PutOutcome::Ok);
    assert!(m.full());
    assert_eq!(m.get(1), GetOutcome::Items(vec![vec![]]));
    assert_eq!(m.get(1), GetOutcome::Items(vec![vec![]]));
    assert_eq!(m.get(1), GetOutcome::Empty);
}
