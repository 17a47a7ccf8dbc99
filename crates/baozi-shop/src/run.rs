//! One run: fork the workers, kill and replace them on schedule, watch for stalls, drain, and
//! verify what was committed against what was delivered.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baozi_process::Process;

use crate::chaos::Rng;
use crate::histogram::Latency;
use crate::ledger::{Ledger, MARK_LEN};
use crate::message::{self, Decoded, Stamp};
use crate::report::{self, ProcessCount, Report};
use crate::transport::{Recv, Transport};
use crate::{Scenario, ShopError, StopRule};

/// How long a consumer waits in one receive before it looks at the world again.
const RECV_SLICE: Duration = Duration::from_millis(100);

/// Waits until `due_ns` (CLOCK_MONOTONIC): sleeps while far, then spins the last stretch.
fn wait_until(due_ns: u64) {
    loop {
        let now = baozi_sync::monotonic_ns();
        if now >= due_ns {
            return;
        }
        let left = due_ns - now;
        if left > 200_000 {
            std::thread::sleep(Duration::from_nanos(left - 100_000));
        } else {
            // Yield rather than spin: on a small machine the consumers need the core.
            std::thread::yield_now();
        }
    }
}

struct ProducerPlan {
    p: usize,
    from: u64,
    until: u64,
    size: usize,
    /// Nanoseconds between two sends of this producer in fixed-rate mode.
    interval_ns: Option<u64>,
}

fn producer_main(t: &dyn Transport, ledger: &Ledger, plan: &ProducerPlan) -> i32 {
    let p = plan.p;
    ledger
        .producer_pid(p)
        .store(std::process::id(), Ordering::Relaxed);
    // The fixed-rate schedule starts once every worker is up (the parent publishes it then), so
    // that fork time is not counted as the first messages' latency.
    let start = match plan.interval_ns {
        Some(_) => loop {
            let s = ledger.start_ns().load(Ordering::Acquire);
            if s != 0 {
                break s;
            }
            std::thread::sleep(Duration::from_micros(100));
        },
        None => 0,
    };
    let mut buf = vec![0x42u8; plan.size];
    for seq in plan.from..plan.until {
        if ledger.stop_flag().load(Ordering::Relaxed) != 0 {
            break;
        }
        let sent_ns = match plan.interval_ns {
            // Stamp the instant the message was due, not when it went out: a late send counts
            // its lateness as latency.
            Some(every) => {
                let due = start.saturating_add(seq.saturating_mul(every));
                wait_until(due);
                due
            }
            None => baozi_sync::monotonic_ns(),
        };
        let stamp = Stamp {
            producer: p as u32,
            seq,
            sent_ns,
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
    ledger: &Arc<Ledger>,
    c: usize,
    producers: usize,
    size: usize,
) -> i32 {
    ledger
        .consumer_pid(c)
        .store(std::process::id(), Ordering::Relaxed);
    let mut private;
    let kernel_fills = t.fills_buffer_when_taking();
    // With a transport that fills the buffer, the buffer is the mark: no other handle on it.
    let mark = (!kernel_fills).then(|| ledger.mark_of(c));
    let buf: &mut [u8] = if kernel_fills {
        // SAFETY: this is consumer c's process, this is the only call in it, and with a
        // transport that fills the buffer this process never writes c's mark otherwise.
        unsafe { ledger.receive_area(c) }
    } else {
        private = vec![0u8; size.max(MARK_LEN)];
        &mut private
    };
    let mut last = vec![u64::MAX; producers];
    // The harness's own check: `BAOZI_SHOP_LOSE=N` makes eater-1 drop the N-th message it takes
    // (taken, never recorded, mark cleared), a real loss the report must show as `lost`.
    let mut lose_at: Option<u64> = (c == 0)
        .then(|| std::env::var("BAOZI_SHOP_LOSE").ok()?.parse().ok())
        .flatten();
    loop {
        match t.recv(buf, RECV_SLICE, mark) {
            Ok(Recv::Message(n)) => {
                match message::decode(&buf[..n]) {
                    Decoded::Data(_) if lose_at == Some(1) => lose_at = None,
                    Decoded::Data(stamp) => {
                        lose_at = lose_at.map(|k| k.saturating_sub(1));
                        ledger.deliver(c, stamp, &mut last, baozi_sync::monotonic_ns())
                    }
                    Decoded::Stop => return 0,
                    Decoded::Garbage => ledger.garbage(c),
                }
                // Recorded: the mark is no longer needed.
                match mark {
                    Some(mark) => mark.clear(),
                    // The stamp's producer word: the mark is empty again.
                    None => buf[..8].fill(0xff),
                }
            }
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
pub(crate) fn exit_text(code: i32) -> String {
    if code < 0 {
        format!("killed by signal {}", -code)
    } else {
        format!("exit code {code}")
    }
}

fn worker_name(role: Role) -> String {
    match role {
        Role::Producer(p) => format!("baker-{}", p + 1),
        Role::Consumer(c) => format!("eater-{}", c + 1),
    }
}

/// Kills every running worker and reaps it.
fn stop_all(workers: &mut [Worker]) {
    for w in workers.iter_mut().filter(|w| w.running) {
        let _ = w.process.kill();
        let _ = w.process.join();
        w.running = false;
    }
}

/// What the watchdog sees: messages sent plus messages taken, over all slots.
fn progress_count(ledger: &Ledger, np: usize, nc: usize) -> u64 {
    let sent: u64 = (0..np)
        .map(|p| ledger.committed(p).load(Ordering::Relaxed))
        .sum();
    let taken: u64 = (0..nc).map(|c| ledger.taken(c)).sum();
    sent + taken
}

/// Runs a workload and verifies it.
///
/// A run in which no message is sent or taken for [`Scenario::stall`] is stopped: every worker is
/// killed and the report counts one deadlock (and is not verified).
///
/// # Errors
/// [`ShopError::Usage`] for a scenario that makes no sense; [`ShopError::Failed`] when a worker
/// fails on its own or the transport cannot be built.
pub fn run(s: &Scenario) -> Result<Report, ShopError> {
    s.validate()?;
    let failed = ShopError::Failed;
    let transport: Arc<dyn Transport> = Arc::from(s.transport.build(s.shape()).map_err(failed)?);
    let (np, nc) = (s.producers as usize, s.consumers as usize);
    let until = s.per_producer();
    // Transports whose kernel copies the message in as it takes it get a receive area of a
    // whole message in the ledger; the baozi queue's consumers mark only the stamp.
    let area = if transport.fills_buffer_when_taking() {
        s.size
    } else {
        MARK_LEN
    };
    let ledger = Arc::new(Ledger::new(np, nc, until, area).map_err(failed)?);
    let size = s.size;
    let interval_ns = s
        .rate
        .map(|r| ((f64::from(s.producers) * 1e9 / r).round() as u64).max(1));

    // Workers are daemons: if the shop itself is killed, they die with it.
    let spawn = |role: Role, from: u64| -> Result<Process, ShopError> {
        let (t, ledger) = (Arc::clone(&transport), Arc::clone(&ledger));
        let process = Process::builder()
            .name(worker_name(role))
            .daemon(true)
            .spawn_fn(move || match role {
                Role::Producer(p) => {
                    let plan = ProducerPlan {
                        p,
                        from,
                        until,
                        size,
                        interval_ns,
                    };
                    producer_main(&*t, &ledger, &plan)
                }
                Role::Consumer(c) => consumer_main(&*t, &ledger, c, np, size),
            });
        process
            .start()
            .map_err(|e| ShopError::Failed(format!("fork: {e}")))?;
        Ok(process)
    };

    let start = Instant::now();
    let mut workers: Vec<Worker> = Vec::with_capacity(np + nc);
    let abort = |workers: &mut Vec<Worker>, why: String| {
        stop_all(workers);
        ShopError::Failed(why)
    };
    let roles = (0..nc)
        .map(Role::Consumer)
        .chain((0..np).map(Role::Producer));
    for role in roles {
        match spawn(role, 0) {
            Ok(process) => workers.push(Worker {
                role,
                process,
                running: true,
                kills: 0,
            }),
            Err(e) => return Err(abort(&mut workers, e.to_string())),
        }
    }

    // Every worker is up: the fixed-rate schedule starts a millisecond from now.
    ledger
        .start_ns()
        .store(baozi_sync::monotonic_ns() + 1_000_000, Ordering::Release);
    let mut progress = report::Progress::new(s.progress, s.stop, np as u64);
    let mut rng = Rng::seeded();
    let mut next_kill = s.kill_every.map(|k| start + k);
    let mut kills = 0u64;
    // Messages a killed consumer had marked as taking: its take may have committed.
    let mut taken_at_kill: Vec<(usize, u64)> = Vec::new();
    // Consumers killed inside a take they could not name yet (Redis): each may have taken one.
    let mut unnamed_at_kill = 0u64;
    let mut seen = progress_count(&ledger, np, nc);
    let mut last_progress = Instant::now();
    let mut deadlocks = 0u64;
    let mut draining = false;

    // Run until every producer slot has finished its share, then until consumers have drained.
    loop {
        for w in workers.iter_mut().filter(|w| w.running) {
            if let Some(code) = w.poll()? {
                w.running = false;
                let ok = code == 0 && (draining || matches!(w.role, Role::Producer(_)));
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
        let now = Instant::now();
        let count = progress_count(&ledger, np, nc);
        if count != seen {
            seen = count;
            last_progress = now;
        } else if now.duration_since(last_progress) >= s.stall {
            // The watchdog: nothing was sent or taken for the whole stall window.
            deadlocks += 1;
            stop_all(&mut workers);
            break;
        }
        if !draining {
            let producing = workers
                .iter()
                .any(|w| w.running && matches!(w.role, Role::Producer(_)));
            if !producing {
                // Producers are done: let consumers drain and stop.
                draining = true;
                let live_consumers = workers.iter().filter(|w| w.running).count();
                if let Err(e) = transport.finish(live_consumers) {
                    return Err(abort(&mut workers, format!("finishing the transport: {e}")));
                }
                continue;
            }
        } else if !workers.iter().any(|w| w.running) {
            break;
        }
        if let StopRule::Duration(d) = s.stop {
            if now.duration_since(start) >= d {
                ledger.stop_flag().store(1, Ordering::Relaxed);
            }
        }
        if let (Some(due), Some(every), false) = (next_kill, s.kill_every, draining) {
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
                        Role::Consumer(c) => {
                            // The process is dead: its mark is final.
                            if let Some(m) = ledger.read_mark(c) {
                                taken_at_kill.push(m);
                            } else if ledger.mark_is_getting(c) {
                                unnamed_at_kill += 1;
                            }
                            ledger.clear_mark(c);
                            Some(0)
                        }
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
        progress.update(
            start.elapsed(),
            (0..np)
                .map(|p| ledger.committed(p).load(Ordering::Relaxed))
                .sum(),
            kills,
        );
        let nap = next_kill.map_or(Duration::from_millis(5), |k| {
            k.saturating_duration_since(Instant::now())
        });
        let nap = if draining {
            Duration::from_millis(1)
        } else {
            nap
        };
        std::thread::sleep(nap.clamp(Duration::from_micros(200), Duration::from_millis(5)));
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.finish();

    let outcome = Outcome {
        maxsize: transport.effective_maxsize(),
        depth: transport.depth(),
        kills,
        deadlocks,
        seconds,
        taken_at_kill,
        unnamed_at_kill,
    };
    Ok(verify(s, &ledger, &workers, outcome))
}

/// What the run loop hands to [`verify`].
struct Outcome {
    maxsize: usize,
    depth: u64,
    kills: u64,
    deadlocks: u64,
    seconds: f64,
    taken_at_kill: Vec<(usize, u64)>,
    /// Consumer kills inside a take whose message was not known yet (Redis).
    unnamed_at_kill: u64,
}

/// Compares what was committed with what was delivered.
fn verify(s: &Scenario, ledger: &Ledger, workers: &[Worker], o: Outcome) -> Report {
    let np = s.producers as usize;
    let maybes = ledger.maybes();
    let mut taken = o.taken_at_kill.clone();
    taken.sort_unstable();
    let (mut sent, mut received, mut missing, mut duplicated) = (0u64, 0u64, 0u64, 0u64);
    let (mut in_flight_producer, mut in_flight_consumer) = (0u64, 0u64);
    let mut per_producer = vec![0u64; np];
    // Each consumer killed inside an unnamed take may account for one missing message.
    let mut unnamed_left = o.unnamed_at_kill;
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
            if n == 0 {
                if taken.binary_search(&(p, seq)).is_ok() {
                    // Measured: a killed consumer had marked it and never recorded it.
                    in_flight_consumer += 1;
                } else if maybe {
                    in_flight_producer += 1;
                } else if unnamed_left > 0 {
                    // Bounded, not measured: a consumer killed inside a Redis take.
                    unnamed_left -= 1;
                    in_flight_consumer += 1;
                } else {
                    missing += 1;
                }
            }
            if !maybe {
                *sent_by_p += 1;
            }
        }
        sent += *sent_by_p;
    }
    // After a stall the workers were killed with messages still in the channel: those are
    // stranded, not known lost.
    let (lost, stranded) = if o.deadlocks > 0 {
        (0, missing)
    } else {
        (missing, 0)
    };
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
    let processes = workers
        .iter()
        .map(|w| {
            let messages = match w.role {
                Role::Producer(p) => per_producer[p],
                Role::Consumer(c) => hists[c].iter().sum(),
            };
            ProcessCount {
                name: worker_name(w.role),
                pid: w.pid() as u32,
                messages,
                kills: w.kills,
            }
        })
        .collect();
    let verified =
        lost == 0 && duplicated == 0 && reordered == 0 && garbage == 0 && o.deadlocks == 0;
    Report {
        schema_version: report::SCHEMA_VERSION,
        transport: s.transport,
        producers: s.producers,
        consumers: s.consumers,
        maxsize: o.maxsize,
        effective_depth: o.depth,
        size: s.size,
        rate: s.rate,
        sent,
        received,
        lost,
        duplicated,
        reordered,
        garbage,
        in_flight_at_kill: in_flight_producer + in_flight_consumer,
        in_flight_producer,
        in_flight_consumer,
        stranded,
        deadlocks: o.deadlocks,
        kills: o.kills,
        seconds: o.seconds,
        msgs_per_s: received as f64 / o.seconds,
        mb_per_s: received as f64 * s.size as f64 / o.seconds / 1e6,
        latency_ns: Report::percentiles(&latency, max_latency),
        processes,
        verified,
        runs: 1,
        repeat: None,
        latency,
    }
}
