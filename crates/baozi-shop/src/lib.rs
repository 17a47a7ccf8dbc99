//! The bun shop (包子铺): baozi's producer–consumer harness.
//!
//! Bakers (producers) put buns (messages) into a counter (a queue); eaters (consumers) take
//! them. The same harness runs the seed scenario — two bakers, one eater, a counter that holds one
//! bun — and N producers × M consumers workloads that
//!
//! * verify that every message whose send returned Ok arrives exactly once, and in each
//!   producer's order (every message carries producer id, sequence number and send time);
//! * report throughput and end-to-end latency percentiles;
//! * run the same workload over the baozi queue, a pipe, a Unix socket or a POSIX message queue;
//! * kill a random worker with SIGKILL at an interval and start a replacement that carries on its
//!   share, and still account for every message exactly.
//!
//! ```
//! use baozi_shop::{run, Scenario, StopRule, TransportKind};
//!
//! let scenario = Scenario {
//!     producers: 2,
//!     consumers: 2,
//!     maxsize: 16,
//!     size: 64,
//!     stop: StopRule::Count(1000),
//!     ..Scenario::default()
//! };
//! let report = run(&scenario).unwrap();
//! assert!(report.verified);
//! assert_eq!((report.sent, report.received, report.lost, report.duplicated), (2000, 2000, 0, 0));
//! ```
//!
//! Workers are forked from the calling thread, which must be the process's only thread.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod chaos;
mod histogram;
mod ledger;
pub mod message;
mod report;
mod seed;
mod sys;
mod transport;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baozi_process::Process;

use chaos::Rng;
use ledger::Ledger;
use message::{Decoded, Stamp};
use transport::{Recv, Shape, Transport};

pub use histogram::Latency;
pub use report::{human_ns, Percentiles, ProcessCount, Report};
pub use seed::{run_seed, SEED_PACE};
pub use transport::TransportKind;

/// The largest number of producers or consumers a run accepts.
pub const MAX_WORKERS: u32 = 256;

/// Sequence numbers a run may use in all (the delivery ledger holds one byte per message).
const LEDGER_BUDGET: u64 = 1 << 28;

/// When producers stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StopRule {
    /// Each producer sends this many messages.
    Count(u64),
    /// Producers send until this much time has passed.
    Duration(Duration),
}

/// A workload: who sends what over which transport, and whether to kill workers.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Producer processes (≥ 1).
    pub producers: u32,
    /// Consumer processes (≥ 1).
    pub consumers: u32,
    /// Item limit of the queue (0: no item limit, as Python's `maxsize <= 0`).
    pub maxsize: usize,
    /// Bytes per message (≥ 24: producer id, sequence, timestamp).
    pub size: usize,
    /// Byte capacity of the baozi queue; `None` picks room for `maxsize` messages (or 1 MiB when
    /// `maxsize` is 0).
    pub capacity: Option<usize>,
    /// When producers stop.
    pub stop: StopRule,
    /// Kill a random worker with SIGKILL this often, and start a replacement.
    pub kill_every: Option<Duration>,
    /// The transport.
    pub transport: TransportKind,
    /// Show a live progress line (only when stdout is a terminal).
    pub progress: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            producers: 2,
            consumers: 2,
            maxsize: 1024,
            size: 64,
            capacity: None,
            stop: StopRule::Count(100_000),
            kill_every: None,
            transport: TransportKind::Baozi,
            progress: false,
        }
    }
}

/// Why a run could not be done.
#[derive(Debug)]
pub enum ShopError {
    /// The scenario makes no sense (the command line exits with 2).
    Usage(String),
    /// Setting up or running the workers failed.
    Failed(String),
}

impl fmt::Display for ShopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShopError::Usage(s) | ShopError::Failed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for ShopError {}

fn frame_len(size: usize) -> usize {
    8 + size.div_ceil(8) * 8
}

impl Scenario {
    /// The byte capacity the baozi queue gets.
    pub fn effective_capacity(&self) -> usize {
        self.capacity.unwrap_or_else(|| {
            let frames = if self.maxsize == 0 {
                0
            } else {
                self.maxsize.saturating_mul(frame_len(self.size))
            };
            frames.max(1 << 20).clamp(64, 1 << 30)
        })
    }

    /// Checks the scenario, saying what is wrong in one line.
    ///
    /// # Errors
    /// [`ShopError::Usage`].
    pub fn validate(&self) -> Result<(), ShopError> {
        let usage = |s: String| Err(ShopError::Usage(s));
        if self.producers == 0 || self.producers > MAX_WORKERS {
            return usage(format!(
                "--producers must be between 1 and {MAX_WORKERS}, not {}",
                self.producers
            ));
        }
        if self.consumers == 0 || self.consumers > MAX_WORKERS {
            return usage(format!(
                "--consumers must be between 1 and {MAX_WORKERS}, not {}",
                self.consumers
            ));
        }
        if self.size < message::STAMP_LEN {
            return usage(format!(
                "--size must be at least {} bytes (producer id, sequence and timestamp), not {}",
                message::STAMP_LEN,
                self.size
            ));
        }
        if self.size > (1 << 30) - 8 {
            return usage(format!(
                "--size {} is larger than any queue can hold (1 GiB)",
                self.size
            ));
        }
        if let Some(c) = self.capacity {
            if !(64..=1 << 30).contains(&c) {
                return usage(format!(
                    "--capacity must be between 64 and {} bytes, not {c}",
                    1u64 << 30
                ));
            }
        }
        if self.maxsize > baozi_queue::MAX_MAXSIZE {
            return usage(format!(
                "--maxsize must be at most {}, not {}",
                baozi_queue::MAX_MAXSIZE,
                self.maxsize
            ));
        }
        match self.stop {
            StopRule::Count(0) => return usage("--count must be at least 1".to_owned()),
            StopRule::Count(n) if n > LEDGER_BUDGET / u64::from(self.producers) => {
                return usage(format!(
                    "--count {n} is too large: at most {} messages per producer with {} producers",
                    LEDGER_BUDGET / u64::from(self.producers),
                    self.producers
                ))
            }
            StopRule::Duration(d) if d.is_zero() || d > Duration::from_secs(24 * 3600) => {
                return usage("--duration must be more than 0 and at most 86400 seconds".to_owned())
            }
            _ => {}
        }
        if self
            .kill_every
            .is_some_and(|k| k < Duration::from_millis(1))
        {
            return usage("--kill-every must be at least 1 ms".to_owned());
        }
        self.transport.check(self.shape()).map_err(ShopError::Usage)
    }

    fn shape(&self) -> Shape {
        Shape {
            maxsize: self.maxsize,
            size: self.size,
            capacity: self.effective_capacity(),
        }
    }

    fn per_producer(&self) -> u64 {
        match self.stop {
            StopRule::Count(n) => n,
            StopRule::Duration(_) => LEDGER_BUDGET / u64::from(self.producers),
        }
    }
}

/// How long a consumer waits in one receive before it looks at the world again.
const RECV_SLICE: Duration = Duration::from_millis(100);

fn producer_main(
    t: &dyn Transport,
    ledger: &Ledger,
    p: usize,
    from: u64,
    until: u64,
    size: usize,
) -> i32 {
    ledger
        .producer_pid(p)
        .store(std::process::id(), Ordering::Relaxed);
    let mut buf = vec![0x42u8; size];
    for seq in from..until {
        if ledger.stop_flag().load(Ordering::Relaxed) != 0 {
            break;
        }
        let stamp = Stamp {
            producer: p as u32,
            seq,
            sent_ns: baozi_sync::monotonic_ns(),
        };
        message::encode(stamp, &mut buf);
        if let Err(e) = t.send(&buf) {
            eprintln!(
                "baozi-shop: baker-{} (pid {}): {e}",
                p + 1,
                std::process::id()
            );
            return 1;
        }
        // The send returned Ok: from here on the message must arrive.
        ledger.committed(p).store(seq + 1, Ordering::Release);
    }
    0
}

fn consumer_main(
    t: &dyn Transport,
    ledger: &Ledger,
    c: usize,
    producers: usize,
    size: usize,
) -> i32 {
    ledger
        .consumer_pid(c)
        .store(std::process::id(), Ordering::Relaxed);
    let mut buf = Vec::with_capacity(size);
    let mut last = vec![u64::MAX; producers];
    loop {
        match t.recv(&mut buf, RECV_SLICE) {
            Ok(Recv::Message) => match message::decode(&buf) {
                Decoded::Data(stamp) => {
                    ledger.deliver(c, stamp, &mut last, baozi_sync::monotonic_ns())
                }
                Decoded::Stop => return 0,
                Decoded::Garbage => ledger.garbage(c),
            },
            Ok(Recv::Timeout) => {}
            Ok(Recv::Closed) => return 0,
            Err(e) => {
                eprintln!(
                    "baozi-shop: eater-{} (pid {}): {e}",
                    c + 1,
                    std::process::id()
                );
                return 1;
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Producer(usize),
    Consumer(usize),
}

#[derive(Debug)]
struct Worker {
    role: Role,
    process: Process,
    running: bool,
    kills: u32,
}

impl Worker {
    fn pid(&self) -> i32 {
        self.process.pid().unwrap_or(0)
    }

    /// Its exit code (Python's meaning) if it has ended; reaps it.
    fn poll(&self) -> Result<Option<i32>, ShopError> {
        self.process.join_timeout(Duration::ZERO).map_err(|e| {
            ShopError::Failed(format!(
                "{} (pid {}): {e}",
                worker_name(self.role),
                self.pid()
            ))
        })
    }
}

/// An exit code in words.
fn exit_text(code: i32) -> String {
    if code < 0 {
        format!("killed by signal {}", -code)
    } else {
        format!("exit code {code}")
    }
}

/// Runs a workload and verifies it.
///
/// # Errors
/// [`ShopError::Usage`] for a scenario that makes no sense; [`ShopError::Failed`] when a worker
/// fails on its own, the transport cannot be built, or consumers do not drain within a minute
/// after the producers finish.
pub fn run(s: &Scenario) -> Result<Report, ShopError> {
    s.validate()?;
    let failed = ShopError::Failed;
    let transport: Arc<dyn Transport> = Arc::from(s.transport.build(s.shape()).map_err(failed)?);
    let (np, nc) = (s.producers as usize, s.consumers as usize);
    let until = s.per_producer();
    let ledger = Arc::new(Ledger::new(np, nc, until).map_err(failed)?);
    let size = s.size;

    // Workers are daemons: if the shop itself is killed, they die with it.
    let spawn = |role: Role, from: u64| -> Result<Process, ShopError> {
        let (t, ledger) = (Arc::clone(&transport), Arc::clone(&ledger));
        let process = Process::builder()
            .name(worker_name(role))
            .daemon(true)
            .spawn_fn(move || match role {
                Role::Producer(p) => producer_main(&*t, &ledger, p, from, until, size),
                Role::Consumer(c) => consumer_main(&*t, &ledger, c, np, size),
            });
        process
            .start()
            .map_err(|e| ShopError::Failed(format!("fork: {e}")))?;
        Ok(process)
    };

    let start = Instant::now();
    let mut workers = Vec::with_capacity(np + nc);
    let abort = |workers: &mut Vec<Worker>, why: String| {
        for w in workers.iter_mut().filter(|w| w.running) {
            let _ = w.process.kill();
            let _ = w.process.join();
            w.running = false;
        }
        ShopError::Failed(why)
    };
    for c in 0..nc {
        let process = spawn(Role::Consumer(c), 0)?;
        workers.push(Worker {
            role: Role::Consumer(c),
            process,
            running: true,
            kills: 0,
        });
    }
    for p in 0..np {
        match spawn(Role::Producer(p), 0) {
            Ok(process) => workers.push(Worker {
                role: Role::Producer(p),
                process,
                running: true,
                kills: 0,
            }),
            Err(e) => return Err(abort(&mut workers, e.to_string())),
        }
    }

    let total = match s.stop {
        StopRule::Count(n) => Some(n * np as u64),
        StopRule::Duration(_) => None,
    };
    let mut progress = report::Progress::new(s.progress, total);
    let mut rng = Rng::seeded();
    let mut next_kill = s.kill_every.map(|k| start + k);
    let mut kills = 0u64;
    let sent_now = |ledger: &Ledger| -> u64 {
        (0..np)
            .map(|p| ledger.committed(p).load(Ordering::Relaxed))
            .sum()
    };

    // Run until every producer slot has finished its share.
    loop {
        for w in workers.iter_mut().filter(|w| w.running) {
            if let Some(code) = w.poll()? {
                w.running = false;
                let ok = code == 0 && matches!(w.role, Role::Producer(_));
                if !ok {
                    let name = worker_name(w.role);
                    let why = format!(
                        "{name} (pid {}) ended unexpectedly: {}",
                        w.pid(),
                        exit_text(code)
                    );
                    return Err(abort(&mut workers, why));
                }
            }
        }
        let producing = workers
            .iter()
            .any(|w| w.running && matches!(w.role, Role::Producer(_)));
        if !producing {
            break;
        }
        let now = Instant::now();
        if let StopRule::Duration(d) = s.stop {
            if now.duration_since(start) >= d {
                ledger.stop_flag().store(1, Ordering::Relaxed);
            }
        }
        if let (Some(due), Some(every)) = (next_kill, s.kill_every) {
            if now >= due && ledger.stop_flag().load(Ordering::Relaxed) == 0 {
                let live: Vec<usize> = (0..workers.len()).filter(|&i| workers[i].running).collect();
                let i = live[rng.below(live.len())];
                let victim = &mut workers[i];
                let _ = victim.process.kill();
                let code = victim.process.join().map_err(|e| {
                    ShopError::Failed(format!(
                        "{} (pid {}): {e}",
                        worker_name(victim.role),
                        victim.pid()
                    ))
                })?;
                let role = victim.role;
                let from = if code == 0 {
                    // It finished before the signal landed: no kill, nothing to resume.
                    victim.running = false;
                    None
                } else {
                    kills += 1;
                    victim.kills += 1;
                    match role {
                        Role::Producer(p) => {
                            // The send of `committed` may have been in flight (delivered or
                            // not): skip it, never re-send it, which could deliver it twice.
                            let committed = ledger.committed(p).load(Ordering::Acquire);
                            if committed < until {
                                if let Err(e) = ledger.add_maybe(p, committed) {
                                    return Err(abort(&mut workers, e));
                                }
                            }
                            let resume = (committed + 1).min(until);
                            ledger.committed(p).store(resume, Ordering::Release);
                            Some(resume)
                        }
                        Role::Consumer(_) => Some(0),
                    }
                };
                if let Some(from) = from {
                    match spawn(role, from) {
                        Ok(process) => {
                            workers[i].process = process;
                            workers[i].running = true;
                        }
                        Err(e) => return Err(abort(&mut workers, e.to_string())),
                    }
                }
                next_kill = Some(now + every);
            }
        }
        progress.update(start.elapsed(), sent_now(&ledger), kills);
        let nap = next_kill.map_or(Duration::from_millis(5), |k| {
            k.saturating_duration_since(Instant::now())
        });
        std::thread::sleep(nap.clamp(Duration::from_micros(200), Duration::from_millis(5)));
    }

    // Producers are done: let consumers drain and stop.
    let live_consumers = workers.iter().filter(|w| w.running).count();
    if let Err(e) = transport.finish(live_consumers) {
        return Err(abort(&mut workers, format!("finishing the transport: {e}")));
    }
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while workers.iter().any(|w| w.running) {
        for w in workers.iter_mut().filter(|w| w.running) {
            if let Some(code) = w.poll()? {
                w.running = false;
                if code != 0 {
                    let name = worker_name(w.role);
                    let why = format!(
                        "{name} (pid {}) ended unexpectedly: {}",
                        w.pid(),
                        exit_text(code)
                    );
                    return Err(abort(&mut workers, why));
                }
            }
        }
        if Instant::now() > drain_deadline {
            return Err(abort(
                &mut workers,
                "consumers did not drain within 60 s after the producers finished: a hang"
                    .to_owned(),
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.finish();

    Ok(verify(
        s,
        &ledger,
        &workers,
        transport.effective_maxsize(),
        kills,
        seconds,
    ))
}

fn worker_name(role: Role) -> String {
    match role {
        Role::Producer(p) => format!("baker-{}", p + 1),
        Role::Consumer(c) => format!("eater-{}", c + 1),
    }
}

/// Compares what was committed with what was delivered.
fn verify(
    s: &Scenario,
    ledger: &Ledger,
    workers: &[Worker],
    maxsize: usize,
    kills: u64,
    seconds: f64,
) -> Report {
    let np = s.producers as usize;
    let maybes = ledger.maybes();
    let consumer_kills: u64 = workers
        .iter()
        .filter(|w| matches!(w.role, Role::Consumer(_)))
        .map(|w| u64::from(w.kills))
        .sum();
    let (mut sent, mut received, mut missing, mut duplicated, mut in_flight_producer) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut per_producer = vec![0u64; np];
    for (p, sent_by_p) in per_producer.iter_mut().enumerate() {
        let committed = ledger.committed(p).load(Ordering::Acquire);
        let mut mine: Vec<u64> = maybes.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
        mine.sort_unstable();
        let end = committed
            .max(mine.last().map_or(0, |m| m + 1))
            .min(ledger.per_producer());
        for seq in 0..end {
            let n = u64::from(ledger.deliveries(p, seq));
            received += n;
            let maybe = mine.binary_search(&seq).is_ok();
            if n > 1 {
                duplicated += n - 1;
            }
            match (n, maybe) {
                (0, true) => in_flight_producer += 1,
                (0, false) => missing += 1,
                _ => {}
            }
            if !maybe {
                *sent_by_p += 1;
            }
        }
        sent += *sent_by_p;
    }
    // A killed consumer may have taken one message with it (its get committed, then it died).
    let in_flight_consumer = missing.min(consumer_kills);
    let lost = missing - in_flight_consumer;
    let mut reordered = 0;
    let mut garbage = 0;
    let mut max_latency = 0;
    for c in 0..ledger.consumers() {
        let t = ledger.tally(c);
        reordered += t.reordered;
        garbage += t.garbage;
        max_latency = max_latency.max(t.max_latency_ns);
    }
    let hists: Vec<Vec<u64>> = (0..ledger.consumers())
        .map(|c| ledger.histogram(c))
        .collect();
    let latency = Latency::merge(hists.iter().map(Vec::as_slice));
    let mut consumer_counts = vec![0u64; ledger.consumers()];
    for (c, h) in hists.iter().enumerate() {
        consumer_counts[c] = h.iter().sum();
    }
    let processes = workers
        .iter()
        .map(|w| {
            let name = worker_name(w.role);
            let messages = match w.role {
                Role::Producer(p) => per_producer[p],
                Role::Consumer(c) => consumer_counts[c],
            };
            ProcessCount {
                name,
                pid: w.pid() as u32,
                messages,
                kills: w.kills,
            }
        })
        .collect();
    let verified = lost == 0 && duplicated == 0 && reordered == 0 && garbage == 0;
    Report {
        transport: s.transport,
        producers: s.producers,
        consumers: s.consumers,
        maxsize,
        size: s.size,
        sent,
        received,
        lost,
        duplicated,
        reordered,
        garbage,
        in_flight_at_kill: in_flight_producer + in_flight_consumer,
        in_flight_producer,
        in_flight_consumer,
        kills,
        seconds,
        msgs_per_s: received as f64 / seconds,
        mb_per_s: received as f64 * s.size as f64 / seconds / 1e6,
        latency_ns: Report::percentiles(&latency, max_latency),
        processes,
        verified,
        latency,
    }
}
