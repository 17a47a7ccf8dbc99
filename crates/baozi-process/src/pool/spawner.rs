//! The spawner and the workers: the pool's processes.
//!
//! [`Pool::new`](super::Pool) forks one *spawner* before it starts any thread. The spawner is
//! single-threaded and does one thing: fork a worker when the parent asks (at start, and to
//! replace a worker that died or reached `maxtasksperchild`), reap it when it exits, and report
//! both through the results queue. So every worker is forked from a single-threaded process,
//! whatever threads the parent has by then (its result thread, the caller's own), and a worker
//! never inherits a lock that another thread held at the fork.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baozi_queue::Queue;
use serde::{Deserialize, Serialize};

use super::backend::PoolEnd;
use super::call;
use super::proto::{self, Event, Failure, Request, TaskMsg};
use crate::child::panic_message;
use crate::process::Process;
use crate::start::{FnRef, Job, StartMethod};
use crate::sys;

/// The initializer a worker runs before its first task: a closure (fork only) or a plain
/// function (any start method).
#[derive(Clone)]
pub(crate) enum Initializer {
    Closure(Arc<dyn Fn() + Send + Sync + 'static>),
    Func(FnRef),
}

impl Initializer {
    fn run(&self) {
        match self {
            Initializer::Closure(f) => f(),
            // SAFETY: made by `PoolBuilder::initializer_fn` from an `fn()` of this image, and
            // carried here by fork or by a spawned job whose image mark was checked.
            Initializer::Func(f) => unsafe { call::call_plain(*f) },
        }
    }
}

/// A spawner started by spawn or forkserver: what it needs, as a job (`start/job.rs`).
#[derive(Serialize, Deserialize)]
pub(crate) struct SpawnerJob {
    requests_fd: i32,
    parent: sys::Pid,
    inboxes: Vec<Queue<Vec<u8>>>,
    results: Queue<Vec<u8>>,
    initializer: Option<FnRef>,
    maxtasksperchild: Option<usize>,
    method: StartMethod,
}

/// A worker started by spawn: what it needs, as a job.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerJob {
    name: String,
    spawner: sys::Pid,
    inbox: Queue<Vec<u8>>,
    results: Queue<Vec<u8>>,
    slot: u32,
    initializer: Option<FnRef>,
    maxtasksperchild: Option<usize>,
}

/// In a spawned spawner: runs it (never returns).
pub(crate) fn run_spawner_job(job: SpawnerJob) -> i32 {
    let Ok(requests) = sys::inherited_file(job.requests_fd) else {
        return 2;
    };
    let parent = job.parent;
    let spawner = Spawner {
        requests,
        parent_end: None,
        parent,
        inboxes: Arc::new(job.inboxes),
        results: Arc::new(job.results),
        initializer: job.initializer.map(Initializer::Func),
        maxtasksperchild: job.maxtasksperchild,
        method: job.method,
    };
    // Not a daemon (it starts children), as a forked spawner; PR_SET_PDEATHSIG was set before
    // the exec, and it watches its parent's pidfd as well.
    crate::child::run(
        "PoolSpawner".into(),
        false,
        parent,
        "MainProcess".into(),
        move || spawner.run(),
    )
}

/// In a spawned worker: runs it (never returns).
pub(crate) fn run_worker_job(job: WorkerJob) -> i32 {
    let init = job.initializer.map(Initializer::Func);
    crate::child::run(
        job.name,
        true,
        job.spawner,
        "PoolSpawner".into(),
        move || {
            work(
                &job.inbox,
                &job.results,
                job.slot,
                init.as_ref(),
                job.maxtasksperchild,
            )
        },
    )
}

/// Bytes an [`Event::Done`] adds around a result (enum tags and varints, rounded up).
pub(crate) const DONE_OVERHEAD: usize = 32;

/// How often to look when a pidfd is missing (Linux < 5.3).
const FALLBACK_TICK: Duration = Duration::from_millis(20);

/// Everything the spawner needs; moved into it at the fork.
pub(crate) struct Spawner {
    /// The read end of the request pipe.
    pub(crate) requests: File,
    /// The parent's write end, inherited by the fork: the spawner closes it so that the pipe
    /// reports end-of-file when the parent's end is gone. (`None`: spawned, not inherited.)
    pub(crate) parent_end: Option<RawFd>,
    pub(crate) parent: sys::Pid,
    pub(crate) inboxes: Arc<Vec<Queue<Vec<u8>>>>,
    pub(crate) results: Arc<Queue<Vec<u8>>>,
    pub(crate) initializer: Option<Initializer>,
    pub(crate) maxtasksperchild: Option<usize>,
    /// Fork and Forkserver: fork the workers; Spawn: spawn them.
    pub(crate) method: StartMethod,
}

impl Spawner {
    /// Starts this spawner: forked (Fork), or as a spawned run of the program (Spawn,
    /// Forkserver), which then starts clean whatever threads the parent has.
    pub(crate) fn start(self) -> Result<Process, crate::ProcessError> {
        match self.method {
            StartMethod::Fork => {
                let p = Process::builder()
                    .name("PoolSpawner")
                    .start_method(StartMethod::Fork)
                    .spawn_fn(move || self.run());
                p.start()?;
                Ok(p)
            }
            method => {
                let initializer = match &self.initializer {
                    None => None,
                    Some(Initializer::Func(f)) if f.portable() => Some(*f),
                    Some(_) => {
                        return Err(crate::ProcessError::NeedsFork {
                            what: "a closure initializer (use initializer_fn)".into(),
                            method,
                        })
                    }
                };
                let fd = self.requests.as_raw_fd();
                let job = SpawnerJob {
                    requests_fd: fd,
                    parent: self.parent,
                    inboxes: self.inboxes.iter().cloned().collect(),
                    results: (*self.results).clone(),
                    initializer,
                    maxtasksperchild: self.maxtasksperchild,
                    method,
                };
                Process::start_job("PoolSpawner".into(), Job::PoolSpawner(job), &[fd])
            }
        }
    }
}

/// Puts an event in the results queue. A worker may block here while the queue is full: the
/// parent drains it, and if the parent is gone the spawner kills the worker.
fn send(results: &Queue<Vec<u8>>, event: &Event) -> bool {
    results.put(proto::encode(event)).is_ok()
}

/// How long the spawner waits for room in the results queue before it checks its parent again.
const SEND_SLICE: Duration = Duration::from_millis(100);

impl Spawner {
    /// Puts an event in the results queue, waiting for room only while the parent lives (a
    /// dead parent drains nothing, and the spawner must not wait for it for ever). `false`:
    /// the parent is gone or the queue failed.
    fn report(&self, event: &Event) -> bool {
        let mut bytes = proto::encode(event);
        loop {
            match self.results.put_timeout(bytes, SEND_SLICE) {
                Ok(()) => return true,
                Err(baozi_queue::PutError::Full(b)) if sys::getppid() == self.parent => bytes = b,
                Err(_) => return false,
            }
        }
    }
}

impl Spawner {
    /// The spawner's body; its return value is its exit code.
    pub(crate) fn run(self) -> i32 {
        if let Some(fd) = self.parent_end {
            sys::close_inherited(fd);
        }
        // The parent may die without a word (kill -9): its pidfd turns readable, and the
        // spawner takes its workers down with it. Workers have PDEATHSIG on the spawner.
        let parent_fd = sys::pidfd_open(self.parent).ok();
        if sys::getppid() != self.parent {
            return 0;
        }
        let mut workers: Vec<Option<Process>> = self.inboxes.iter().map(|_| None).collect();
        let mut serial = 0u64;
        let mut ready = Vec::new();
        loop {
            let mut exits = Vec::new();
            for (slot, w) in workers.iter_mut().enumerate() {
                let Some(p) = w else { continue };
                if let Some(code) = p.exitcode() {
                    let pid = p.pid().unwrap_or(0);
                    *w = None;
                    exits.push(Event::Exited {
                        slot: slot as u32,
                        pid,
                        code,
                    });
                }
            }
            if !exits.iter().all(|e| self.report(e)) {
                return kill_all(&mut workers);
            }
            let pidfds: Vec<_> = workers.iter().flatten().map(Process::pidfd).collect();
            let mut fds = vec![self.requests.as_fd()];
            fds.extend(parent_fd.as_ref().map(|fd| fd.as_fd()));
            fds.extend(pidfds.iter().flatten().map(|fd| fd.as_fd()));
            let exact = parent_fd.is_some() && pidfds.iter().all(Option::is_some);
            let timeout = (!exact).then_some(FALLBACK_TICK);
            if sys::poll_many(&fds, timeout, &mut ready).is_err() {
                std::thread::sleep(FALLBACK_TICK);
            }
            let parent_gone = parent_fd.is_some() && ready.get(1) == Some(&true);
            if parent_gone || sys::getppid() != self.parent {
                return kill_all(&mut workers);
            }
            if ready.first() != Some(&true) {
                continue;
            }
            let mut buf = [0u8; Request::LEN];
            // Each request is one atomic 8-byte write, so a readable pipe holds a whole one;
            // end-of-file means the parent's end is gone.
            let request = match (&self.requests).read_exact(&mut buf) {
                Ok(()) => Request::decode(buf),
                Err(_) => None,
            };
            match request {
                Some(Request::Spawn(slot)) => {
                    serial += 1;
                    let event = match self.fork_worker(slot, serial) {
                        Ok(p) => {
                            let pid = p.pid().unwrap_or(0);
                            workers[slot as usize] = Some(p);
                            Event::Started { slot, pid, gen: 0 }
                        }
                        Err(e) => Event::SpawnFailed {
                            slot,
                            errno: match &e {
                                crate::ProcessError::Fork(io) => io.raw_os_error().unwrap_or(0),
                                _ => 0,
                            },
                            error: match &e {
                                crate::ProcessError::Fork(io) => format!("{e}: {io}"),
                                _ => e.to_string(),
                            },
                        },
                    };
                    if !self.report(&event) {
                        return kill_all(&mut workers);
                    }
                }
                Some(Request::KillAll | Request::Shutdown) | None => return kill_all(&mut workers),
            }
        }
    }

    fn fork_worker(&self, slot: u32, serial: u64) -> Result<Process, crate::ProcessError> {
        if slot as usize >= self.inboxes.len() {
            return Err(crate::ProcessError::Invalid {
                what: format!("the parent asked for worker slot {slot}, which does not exist"),
            });
        }
        let name = format!("PoolWorker-{serial}");
        if self.method == StartMethod::Spawn {
            let job = WorkerJob {
                name: name.clone(),
                spawner: sys::getpid(),
                inbox: self.inboxes[slot as usize].clone(),
                results: (*self.results).clone(),
                slot,
                initializer: match &self.initializer {
                    Some(Initializer::Func(f)) => Some(*f),
                    _ => None,
                },
                maxtasksperchild: self.maxtasksperchild,
            };
            return Process::start_job(name, Job::PoolWorker(job), &[]);
        }
        // Fork and Forkserver: this spawner is single-threaded, so a fork of it is safe.
        let inboxes = Arc::clone(&self.inboxes);
        let results = Arc::clone(&self.results);
        let init = self.initializer.clone();
        let maxtasks = self.maxtasksperchild;
        let p = Process::builder()
            .name(name)
            .daemon(true)
            .start_method(StartMethod::Fork)
            .spawn_fn(move || {
                work(
                    &inboxes[slot as usize],
                    &results,
                    slot,
                    init.as_ref(),
                    maxtasks,
                )
            });
        p.start()?;
        Ok(p)
    }
}

/// SIGKILLs and reaps every worker still there; the spawner's exit code.
fn kill_all(workers: &mut [Option<Process>]) -> i32 {
    for p in workers.iter().flatten() {
        let _ = p.kill();
    }
    for p in workers.iter_mut().filter_map(Option::take) {
        let _ = p.join();
    }
    0
}

/// A worker's body: the initializer, then tasks from its inbox until `Stop` or its
/// `maxtasksperchild`. Returns its exit code.
fn work(
    inbox: &Queue<Vec<u8>>,
    results: &Queue<Vec<u8>>,
    slot: u32,
    initializer: Option<&Initializer>,
    maxtasks: Option<usize>,
) -> i32 {
    if let Some(init) = initializer {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| init.run())) {
            // Cut to what surely fits the results queue (a message is not worth a respawn loop).
            let message: String = panic_message(&*payload).chars().take(500).collect();
            send(
                results,
                &Event::InitFailed {
                    pid: sys::getpid(),
                    message,
                },
            );
            return 1;
        }
    }
    let max = results.max_message_len().saturating_sub(DONE_OVERHEAD);
    // A panic's message and backtrace share what a Done event may carry.
    call::install_panic_hook(max / 2);
    let mut ran = 0usize;
    loop {
        if maxtasks.is_some_and(|m| ran >= m) {
            return 0;
        }
        let Ok(bytes) = inbox.get() else { return 2 };
        let Some(msg) = proto::decode::<TaskMsg>(&bytes) else {
            return 2;
        };
        let TaskMsg::Run {
            task,
            trampoline,
            func,
            args,
        } = msg
        else {
            return 0;
        };
        // SAFETY: only the pool's parent writes this inbox, and it writes `Call`s made in this
        // binary image, which this worker shares as a fork of it (call::invoke's contract).
        let mut outcome = unsafe { call::invoke(trampoline, func, &args) };
        drop(args);
        match &mut outcome {
            Ok(r) if r.len() > max => {
                outcome = Err(Failure::ResultTooLarge { len: r.len(), max });
            }
            Err(Failure::Panicked { message, .. }) if message.len() > max / 4 => {
                let mut cut = max / 4;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
            }
            _ => {}
        }
        if !send(
            results,
            &Event::Done {
                slot,
                task,
                outcome,
            },
        ) {
            return 2;
        }
        ran += 1;
    }
}

/// The parent's side of the spawner: requests go down its pipe, and its death is noticed by
/// the result thread. Half of the shared-memory backend (`shm.rs`).
#[derive(Debug)]
pub(crate) struct SpawnerWorkers {
    /// The write end of the request pipe; `None` once the spawner was told to finish.
    requests: Mutex<Option<File>>,
    spawner: Process,
}

impl SpawnerWorkers {
    pub(crate) fn new(requests: File, spawner: Process) -> SpawnerWorkers {
        SpawnerWorkers {
            requests: Mutex::new(Some(requests)),
            spawner,
        }
    }

    fn send(&self, r: Request) -> bool {
        let mut pipe = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *pipe {
            Some(p) => p.write_all(&r.encode()).is_ok(),
            None => false,
        }
    }
}

impl SpawnerWorkers {
    pub(crate) fn start(&self, slot: u32) -> bool {
        self.send(Request::Spawn(slot))
    }

    pub(crate) fn end(&self, how: PoolEnd) {
        self.send(match how {
            PoolEnd::Kill => Request::KillAll,
            PoolEnd::Shutdown => Request::Shutdown,
        });
        // Closing the pipe tells a spawner that missed the request (it reads end-of-file).
        drop(
            self.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
    }

    pub(crate) fn lost(&self) -> Option<String> {
        if self.spawner.is_alive() {
            return None;
        }
        if let Err(e @ crate::ProcessError::MainGuardMissing { .. }) =
            self.spawner.join_timeout(Duration::ZERO)
        {
            return Some(format!("the pool's spawner could not start: {e}"));
        }
        let code = self.spawner.exitcode().unwrap_or(0);
        Some(format!(
            "the pool's spawner process died (exit code {code}), and its workers with it"
        ))
    }

    pub(crate) fn reap(&self) {
        let _ = self.spawner.join();
    }
}
