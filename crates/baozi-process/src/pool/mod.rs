//! [`Pool`]: Python's `multiprocessing.Pool` under fork, spawn or forkserver, where a worker
//! that dies never hangs the caller.
//!
//! # How it is built
//!
//! ```text
//!   parent ──tasks──▶ inbox[i] (one shared queue per worker) ──▶ worker i
//!     ▲  └──spawn/kill requests (pipe)──▶ spawner ──fork/reap──▶ workers
//!     └──────────── results queue (shared, FIFO) ◀── results, "started", "exited"
//! ```
//!
//! The parent decides which worker gets which task, so it always knows what a worker holds.
//! When a worker dies, the tasks still in its inbox go to another worker, and the one it was
//! running fails with [`ProcessError::WorkerDied`] (pid and signal), delivered to exactly its
//! caller; a new worker takes the slot. The pool never marks itself broken for a dead worker
//! (unlike `concurrent.futures`) and never waits for a result that cannot come (unlike
//! CPython's `Pool`, bpo-22393). The reasoning is in `parent.rs`.
//!
//! Workers are started by a single-threaded spawner process made at [`Pool::new`], not by the
//! parent, which by then has a result thread: a fork of a multi-threaded process can inherit a
//! lock that some other thread held (stdout's, a `Mutex`), and hang on it. The start method
//! decides how the spawner and the workers begin (`spawner.rs`); the parent's bookkeeping
//! reaches them only through the [`PoolBackend`](backend::PoolBackend) trait (`backend.rs`),
//! which a backend with workers on other hosts implements too (baozi-redis).

pub mod backend;
mod call;
mod chunked;
mod parent;
mod proto;
mod result;
mod shm;
mod spawner;
mod thread;

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle as ThreadHandle;

use baozi_queue::QueueOptions;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use chunked::Chunked;
pub use result::{AsyncResult, IMap};

use crate::error::ProcessError;
use crate::start::{FnRef, StartMethod};
use crate::sys;
use backend::{PoolBackend, PoolEnd};
use call::Call;
pub use call::{binary_refs, unary_refs, TaskRefs};
use parent::{Phase, Shared, INBOX_DEPTH};
use proto::encode_chunk;
use shm::ShmBackend;
pub(crate) use spawner::{run_spawner_job, run_worker_job, SpawnerJob, WorkerJob};
use spawner::{Initializer, Spawner, SpawnerWorkers};

/// Default ring bytes of each worker's task queue (1 MiB, mapped lazily): bounds the encoded
/// arguments of one chunk.
pub const DEFAULT_TASK_CAPACITY: usize = 1 << 20;

/// The smallest task queue a pool accepts (bytes).
pub const MIN_TASK_CAPACITY: usize = 1024;

/// The smallest results queue a pool accepts (bytes): room for the pool's own messages.
pub const MIN_RESULTS_CAPACITY: usize = 4096;

/// Default ring bytes of the results queue (16 MiB, mapped lazily): bounds the encoded results
/// of one chunk.
pub const DEFAULT_RESULTS_CAPACITY: usize = 16 << 20;

/// A pool of worker processes, with the API of Python's `multiprocessing.Pool`.
///
/// # Functions and arguments
///
/// A task is a plain function (`fn(A) -> R`; `fn(A, B) -> R` for
/// [`starmap`](Pool::starmap)), not a capturing closure: it crosses to the worker as its place
/// in the program's executable, valid there because every worker runs this program (a fork of
/// it, or, under spawn and forkserver, a run of the same executable), the same way under
/// every [start method](PoolBuilder::start_method).
/// Arguments and results cross as serde values (postcard), so `A: Serialize` and
/// `R: DeserializeOwned` in the parent, and the reverse in the workers. What a capturing
/// closure would carry, put in the [`initializer`](PoolBuilder::initializer) (it runs in each
/// worker, and may set a `static` or a `thread_local!`), or in shared memory made before the
/// pool (a baozi `Queue`, `Value`, `Array`), or pass it in the arguments.
///
/// # Failures
///
/// * A task that panics: its caller gets [`ProcessError::TaskPanicked`] with the message, the
///   worker's `file:line`, and its backtrace when `RUST_BACKTRACE` asks for one (Python's
///   `RemoteTraceback`); the worker goes on. Arguments or results that serde cannot handle:
///   [`ProcessError::Encode`] / [`ProcessError::Decode`], saying which side.
/// * A call of several tasks ([`map`](Pool::map) and its kin) reports its first failure (in
///   input order) only once every one of its tasks has ended, as Python's does: none of them
///   still runs when the caller has the error.
/// * A worker that dies (SIGKILL, abort, a segfault, `exit`): the caller of the task it was
///   running gets [`ProcessError::WorkerDied`] with its pid and signal, within a moment; tasks
///   queued behind it run on another worker; a new worker replaces it.
/// * An initializer that panics: the pool is [broken](ProcessError::PoolBroken) at once, with
///   the message (CPython respawns such workers for ever).
///
/// # Life
///
/// [`close`](Pool::close) then [`join`](Pool::join) runs everything submitted, then stops the
/// workers; [`terminate`](Pool::terminate) kills them at once and fails what is pending with
/// [`ProcessError::PoolTerminated`]. Dropping a pool terminates it, as Python's `with Pool()`.
/// No worker, spawner or zombie outlives the pool, and if the parent is killed its workers
/// die with it.
///
/// # Workers elsewhere
///
/// With [`PoolBuilder::backend`] the same pool runs on workers that live elsewhere, such as
/// baozi-redis's `RedisWorkers` (processes on any number of hosts around one Redis server):
/// every method above works the same, tasks cross by name ([`task!`](crate::task)), and the
/// backend says how a lost worker is found and how long that takes.
///
/// # Example
///
/// ```
/// use baozi_process::Pool;
///
/// fn bake(filling: String) -> String { format!("{filling} bun") }
/// fn add(a: i32, b: i32) -> i32 { a + b }
///
/// let pool = Pool::new(4)?;
/// assert_eq!(pool.apply(bake, "pork".to_owned())?, "pork bun");
/// assert_eq!(pool.map(|x: i32| x * x, 1..=4)?, [1, 4, 9, 16]);
/// assert_eq!(pool.starmap(add, [(1, 2), (3, 4)])?, [3, 7]);
/// let total: i32 = pool.imap(|x: i32| x + 1, 0..100)?.map(Result::unwrap).sum();
/// assert_eq!(total, 5050);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), baozi_process::ProcessError>(())
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    thread: Mutex<Option<ThreadHandle<()>>>,
    processes: usize,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .field("phase", &st.phase)
            .field("worker_pids", &st.worker_pids())
            .finish()
    }
}

/// Options for a [`Pool`]: processes, initializer, `maxtasksperchild`, queue sizes.
///
/// ```
/// use baozi_process::Pool;
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static FLOUR: AtomicU32 = AtomicU32::new(0);
/// fn flour(_: u8) -> u32 { FLOUR.load(Ordering::Relaxed) }
///
/// let pool = Pool::builder()
///     .processes(2)
///     .initializer(|| FLOUR.store(500, Ordering::Relaxed)) // runs in each worker
///     .maxtasksperchild(10)                                 // then a fresh worker
///     .build()?;
/// assert_eq!(pool.map(flour, [0u8; 30])?, [500; 30]);
/// # Ok::<(), baozi_process::ProcessError>(())
/// ```
#[derive(Clone)]
pub struct PoolBuilder {
    processes: Option<usize>,
    initializer: Option<Initializer>,
    maxtasksperchild: Option<usize>,
    task_capacity: usize,
    results_capacity: usize,
    method: Option<StartMethod>,
    backend: Option<Arc<dyn PoolBackend>>,
    idempotent: bool,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("initializer", &self.initializer.is_some())
            .field("maxtasksperchild", &self.maxtasksperchild)
            .field("task_capacity", &self.task_capacity)
            .field("results_capacity", &self.results_capacity)
            .field("start_method", &self.method)
            .field("backend", &self.backend)
            .field("idempotent", &self.idempotent)
            .finish()
    }
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            processes: None,
            initializer: None,
            maxtasksperchild: None,
            task_capacity: DEFAULT_TASK_CAPACITY,
            results_capacity: DEFAULT_RESULTS_CAPACITY,
            method: None,
            backend: None,
            idempotent: false,
        }
    }
}

impl PoolBuilder {
    /// Worker processes (default: [`cpu_count`](crate::cpu_count)).
    #[must_use]
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs in each worker before its first task (Python's `initializer` with its `initargs`
    /// captured). If it panics, the pool is broken: every task fails with
    /// [`ProcessError::PoolBroken`] carrying the message.
    ///
    /// A closure crosses to the workers only by fork: with [`StartMethod::Spawn`] or
    /// [`StartMethod::Forkserver`], [`build`](PoolBuilder::build) fails with
    /// [`ProcessError::NeedsFork`]; use [`initializer_fn`](PoolBuilder::initializer_fn).
    #[must_use]
    pub fn initializer(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.initializer = Some(Initializer::Closure(Arc::new(f)));
        self
    }

    /// A plain function run in each worker before its first task, under any start method
    /// (what it would capture, it reads from the environment, a file, or shared memory made
    /// by name). A panic breaks the pool, as for [`initializer`](PoolBuilder::initializer).
    #[must_use]
    pub fn initializer_fn(mut self, f: fn()) -> Self {
        self.initializer = Some(Initializer::Func(FnRef::new(f as usize)));
        self
    }

    /// How the workers are started (default: the process-wide
    /// [`get_start_method`](crate::get_start_method) at `build`).
    ///
    /// * [`StartMethod::Fork`]: the pool's spawner (the process that starts and reaps the
    ///   workers) is forked from this process, and forks the workers. Refused when this
    ///   process has other threads ([`ProcessError::ForkWithThreads`]).
    /// * [`StartMethod::Forkserver`]: the spawner is a spawned run of this program, a clean
    ///   single-threaded process, and forks the workers: safe from any process, and a worker
    ///   still starts at the cost of a fork.
    /// * [`StartMethod::Spawn`]: the spawner is spawned, and spawns each worker.
    ///
    /// Spawn and forkserver need [`main_guard`](crate::main_guard) on the first line of
    /// `main`. Tasks run the same way under all three once the workers run.
    ///
    /// ```
    /// use baozi_process::{Pool, StartMethod};
    ///
    /// fn triple(x: u32) -> u32 { x * 3 }
    ///
    /// // (The doc-test's main has no main_guard: this example uses fork.)
    /// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
    /// assert_eq!(pool.map(triple, [1, 2])?, [3, 6]);
    /// # Ok::<(), baozi_process::ProcessError>(())
    /// ```
    #[must_use]
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// A worker exits after this many tasks (a chunk of a map is one task) and a fresh one
    /// takes its place, to bound what a leaky task can hold. Default: no limit.
    #[must_use]
    pub fn maxtasksperchild(mut self, n: usize) -> Self {
        self.maxtasksperchild = Some(n);
        self
    }

    /// Ring bytes of each worker's task queue (default [`DEFAULT_TASK_CAPACITY`], at least
    /// [`MIN_TASK_CAPACITY`]): a chunk whose encoded arguments do not fit is refused with
    /// [`ProcessError::TaskTooLarge`].
    #[must_use]
    pub fn task_capacity(mut self, bytes: usize) -> Self {
        self.task_capacity = bytes;
        self
    }

    /// Ring bytes of the results queue (default [`DEFAULT_RESULTS_CAPACITY`], at least
    /// [`MIN_RESULTS_CAPACITY`]): a chunk whose encoded results do not fit fails with
    /// [`ProcessError::ResultTooLarge`].
    #[must_use]
    pub fn results_capacity(mut self, bytes: usize) -> Self {
        self.results_capacity = bytes;
        self
    }

    /// Workers from another [`PoolBackend`](backend::PoolBackend) instead of forked ones: for
    /// workers on other hosts, baozi-redis's `RedisWorkers`. The pool's API and its accounting
    /// are the same; the backend's documentation says how workers come and how a lost one is
    /// found. [`processes`](PoolBuilder::processes) is then the number of workers the pool uses
    /// at once (default: this machine's CPU count); an [`initializer`](PoolBuilder::initializer),
    /// `maxtasksperchild` and the queue sizes are refused with [`ProcessError::Invalid`] (a
    /// remote worker serves many pools; give what an initializer would set in the arguments).
    #[must_use]
    pub fn backend(mut self, backend: impl PoolBackend + 'static) -> Self {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// Idempotent tasks (default: no): a task whose worker dies is run again on another worker
    /// instead of failing with [`ProcessError::WorkerDied`]. Only for tasks that may run twice
    /// (the dead worker may have done part or all of it): the parent keeps each task's message
    /// until its result comes. Tasks that kill every worker that runs them still end: after
    /// ten deaths per worker place in a row without a finished task the pool is
    /// [broken](ProcessError::PoolBroken).
    #[must_use]
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = yes;
        self
    }

    /// Maps the queues, forks the spawner, which forks the workers, and starts the parent's
    /// result thread. Returns once every worker has been forked (not waiting for the
    /// initializers): when a fork fails, the workers already started are stopped and the error
    /// is returned, as Python's `Pool()` raises.
    ///
    /// A *replacement* worker (after a death, or `maxtasksperchild`) that cannot be forked
    /// later leaves its slot empty: the pool runs on with the workers it has, and once none is
    /// left it is [broken](ProcessError::PoolBroken) with the fork's error, so that no task
    /// waits for a worker that will never come.
    ///
    /// With [`StartMethod::Fork`] the spawner is forked from the calling thread, so the
    /// process must have no other thread then ([`ProcessError::ForkWithThreads`]); the default
    /// start method turns to forkserver by itself once the process has threads (see
    /// [`start_method`](PoolBuilder::start_method)).
    ///
    /// # Errors
    ///
    /// [`ProcessError::Invalid`] for 0 processes, a `maxtasksperchild` of 0 or a queue below its
    /// minimum,
    /// [`ProcessError::PoolSetup`] when a queue cannot be mapped (an out-of-range capacity) or
    /// the pipe cannot be made, [`ProcessError::Fork`] when the spawner or a worker cannot be
    /// forked (e.g. `EAGAIN` under `RLIMIT_NPROC`), [`ProcessError::DaemonicParent`] in a
    /// daemonic process (a pool worker, for one), [`ProcessError::ForkWithThreads`],
    /// [`ProcessError::NeedsFork`] for a closure initializer under spawn or forkserver,
    /// [`ProcessError::MainGuardMissing`] in a spawned child that skipped
    /// [`main_guard`](crate::main_guard).
    pub fn build(self) -> Result<Pool, ProcessError> {
        let processes = self.processes.unwrap_or_else(crate::cpu_count);
        if processes == 0 || processes > u32::MAX as usize {
            return Err(ProcessError::Invalid {
                what: format!("a pool needs at least 1 process, not {processes}"),
            });
        }
        if self.task_capacity < MIN_TASK_CAPACITY || self.results_capacity < MIN_RESULTS_CAPACITY {
            return Err(ProcessError::Invalid {
                what: format!(
                    "the task queues need at least {MIN_TASK_CAPACITY} bytes and the results queue at least {MIN_RESULTS_CAPACITY} (asked: {} and {})",
                    self.task_capacity, self.results_capacity
                ),
            });
        }
        if self.maxtasksperchild == Some(0) {
            return Err(ProcessError::Invalid {
                what: "maxtasksperchild must be at least 1 (or not set, for no limit)".into(),
            });
        }
        if let Some(backend) = self.backend {
            if self.initializer.is_some()
                || self.maxtasksperchild.is_some()
                || self.method.is_some()
                || self.task_capacity != DEFAULT_TASK_CAPACITY
                || self.results_capacity != DEFAULT_RESULTS_CAPACITY
            {
                return Err(ProcessError::Invalid {
                    what: format!("a pool on {backend:?} takes no initializer, maxtasksperchild, start method or queue sizes"),
                });
            }
            return Pool::start(
                processes,
                backend,
                None,
                self.idempotent,
                StartMethod::Spawn,
            );
        }
        let inboxes = (0..processes)
            .map(|_| {
                QueueOptions::new()
                    .maxsize(INBOX_DEPTH)
                    .capacity(self.task_capacity)
                    .anonymous::<Vec<u8>>()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(setup("map a worker's task queue"))?;
        let results = QueueOptions::new()
            .capacity(self.results_capacity)
            .anonymous::<Vec<u8>>()
            .map_err(setup("map the results queue"))?;
        let (inboxes, results) = (Arc::new(inboxes), Arc::new(results));
        crate::start::refuse_unguarded()?;
        let method = self.method.unwrap_or_else(crate::get_start_method);
        if method == StartMethod::Fork {
            crate::start::check_fork()?;
        }
        let (read_end, write_end) = sys::pipe().map_err(setup("make the spawner's pipe"))?;
        let spawner = Spawner {
            requests: File::from(read_end),
            parent_end: Some(write_end.as_raw_fd()),
            parent: sys::getpid(),
            inboxes: Arc::clone(&inboxes),
            results: Arc::clone(&results),
            initializer: self.initializer,
            maxtasksperchild: self.maxtasksperchild,
            method,
        };
        let spawner = spawner.start()?;
        let backend = Arc::new(ShmBackend {
            inboxes,
            results,
            spawner: SpawnerWorkers::new(File::from(write_end), spawner),
        });
        Pool::start(
            processes,
            backend,
            self.maxtasksperchild,
            self.idempotent,
            method,
        )
    }
}

impl Pool {
    /// Starts the result thread, asks for the workers, and (when the backend says so) waits
    /// for them to start.
    fn start(
        processes: usize,
        backend: Arc<dyn PoolBackend>,
        maxtasksperchild: Option<usize>,
        idempotent: bool,
        method: StartMethod,
    ) -> Result<Pool, ProcessError> {
        let waits = backend.waits_for_workers();
        let shared = Arc::new(Shared::new(
            processes,
            backend,
            maxtasksperchild,
            idempotent,
            method,
        ));
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("baozi-pool-results".into())
            .spawn(move || thread::result_thread(for_thread))
            .map_err(setup("start the pool's result thread"))?;
        // The workers are asked for once the thread is up: a process limit then fails a
        // worker's fork, which Pool::new reports, rather than the thread's start.
        shared.lock().spawn_all();
        let pool = Pool {
            shared,
            thread: Mutex::new(Some(thread)),
            processes,
        };
        if waits {
            if let Err(e) = pool.shared.wait_started() {
                // Python's Pool() stops the workers it had started and raises.
                pool.terminate();
                return Err(e);
            }
        }
        Ok(pool)
    }
}

/// A `map_err` for a set-up step: `what` could not be done, because of the error.
fn setup<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> ProcessError {
    move |e| ProcessError::PoolSetup {
        what,
        source: Box::new(e),
    }
}

impl Pool {
    /// A pool of `processes` workers with default options ([`PoolBuilder`]). For one worker per
    /// CPU (Python's `Pool()`), use `Pool::builder().build()`.
    ///
    /// # Errors
    ///
    /// As [`PoolBuilder::build`].
    pub fn new(processes: usize) -> Result<Pool, ProcessError> {
        Pool::builder().processes(processes).build()
    }

    /// Options: processes, initializer, `maxtasksperchild`, queue sizes.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of worker places.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The pids of the workers alive now (replacements get new pids).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.shared.lock().worker_pids()
    }

    /// Runs `f(arg)` in a worker and waits for its value (Python's `apply`).
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async) and [`AsyncResult::get`].
    pub fn apply<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<R, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.apply_async(f, arg)?.get()
    }

    /// Starts `f(arg)` in a worker and returns at once (Python's `apply_async`).
    ///
    /// # Errors
    ///
    /// [`ProcessError::PoolClosed`] after [`close`](Pool::close),
    /// [`ProcessError::PoolTerminated`], [`ProcessError::PoolBroken`],
    /// [`ProcessError::TaskTooLarge`], [`ProcessError::Encode`].
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<AsyncResult<R>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let chunk = encode_chunk(std::slice::from_ref(&arg))?;
        let tasks = self.shared.submit(Call::unary(f), vec![chunk])?;
        Ok(AsyncResult::new(
            Arc::clone(&self.shared),
            tasks,
            result::finish_one::<R>,
        ))
    }

    /// [`map`](Pool::map), [`starmap`](Pool::starmap), [`imap`](Pool::imap) and their
    /// variants with `chunksize` items per task: fewer, larger messages for cheap functions.
    ///
    /// ```
    /// # use baozi_process::Pool;
    /// let pool = Pool::new(2)?;
    /// let squares = pool.with_chunksize(64).map(|x: u32| x * x, 0..1000)?;
    /// assert_eq!(squares[999], 998_001);
    /// # Ok::<(), baozi_process::ProcessError>(())
    /// ```
    pub fn with_chunksize(&self, chunksize: usize) -> Chunked<'_> {
        Chunked {
            pool: self,
            chunksize: Some(chunksize),
        }
    }

    fn auto(&self) -> Chunked<'_> {
        Chunked {
            pool: self,
            chunksize: None,
        }
    }

    /// `f` over every item, in parallel; the results in input order (Python's `map`). The
    /// input is read whole first, and cut in chunks of about `len / (4 × processes)` items.
    ///
    /// # Errors
    ///
    /// The first failing chunk in input order, once every chunk has ended (see
    /// [`AsyncResult::get`]), or a submission error (see [`apply_async`](Pool::apply_async)).
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.auto().map(f, items)
    }

    /// [`map`](Pool::map) without waiting (Python's `map_async`).
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.auto().map_async(f, items)
    }

    /// `f(a, b)` for every pair (Python's `starmap`); results in input order.
    ///
    /// # Errors
    ///
    /// As [`map`](Pool::map).
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.auto().starmap(f, items)
    }

    /// [`starmap`](Pool::starmap) without waiting (Python's `starmap_async`).
    ///
    /// # Errors
    ///
    /// As [`apply_async`](Pool::apply_async).
    pub fn starmap_async<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<AsyncResult<Vec<R>>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.auto().starmap_async(f, items)
    }

    /// `f` over the items, lazily: an iterator of results in input order, each as soon as it
    /// and those before it are done (Python's `imap`, chunksize 1).
    ///
    /// Unlike Python's, it reads the input only as results are taken, keeping at most
    /// `3 × processes` chunks in flight: an endless or huge input is fine, and memory stays
    /// bounded.
    ///
    /// # Errors
    ///
    /// [`ProcessError::PoolClosed`], [`ProcessError::PoolTerminated`],
    /// [`ProcessError::PoolBroken`] at once; the iterator's items carry the per-chunk errors.
    ///
    /// # Panics
    ///
    /// When the input iterator panics, `next()` panics with the same payload at that place,
    /// after yielding every result before it (Python raises the input's exception there); the
    /// iteration ends. (The panic hook prints the message when the input is read, a little
    /// ahead.)
    pub fn imap<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
    ) -> Result<IMap<A, R, I::IntoIter>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.with_chunksize(1).imap(f, items)
    }

    /// Like [`imap`](Pool::imap), but each result comes as soon as it is done, whatever its
    /// place in the input (Python's `imap_unordered`).
    ///
    /// # Errors
    ///
    /// As [`imap`](Pool::imap).
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
    ) -> Result<IMap<A, R, I::IntoIter>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.with_chunksize(1).imap_unordered(f, items)
    }

    /// No new tasks; the workers stop once everything already submitted has run (Python's
    /// `close`). Then [`join`](Pool::join) waits for that.
    pub fn close(&self) {
        self.shared.lock().close(&self.shared);
        self.shared.notify();
    }

    /// Stops the workers at once (SIGKILL) and fails every task not done with
    /// [`ProcessError::PoolTerminated`] (Python's `terminate`). Returns once every worker has
    /// been reaped.
    pub fn terminate(&self) {
        self.shared.lock().terminate();
        self.shared.notify();
        self.stop_helpers();
    }

    /// Waits until the workers have stopped after [`close`](Pool::close) (all submitted tasks
    /// done) or [`terminate`](Pool::terminate) (Python's `join`).
    ///
    /// # Errors
    ///
    /// [`ProcessError::PoolRunning`] when neither was called: the workers would never stop.
    pub fn join(&self) -> Result<(), ProcessError> {
        let st = self.shared.lock();
        if matches!(st.phase, Phase::Running) {
            return Err(ProcessError::PoolRunning);
        }
        let (mut st, _) = self.shared.wait_until(st, None, |st| st.all_final());
        st.finish(PoolEnd::Shutdown);
        drop(st);
        self.shared.notify();
        self.stop_helpers();
        Ok(())
    }

    /// Reaps the workers' keeper (which has been told to finish) and stops the result thread.
    fn stop_helpers(&self) {
        self.shared.workers.reap();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            self.shared.lock().quit = true;
            self.shared.workers.wake();
            let _ = thread.join();
        }
    }
}

impl Drop for Pool {
    /// Terminates the pool (Python's `with Pool() as p:` does the same on exit).
    fn drop(&mut self) {
        if self.shared.owned().is_err() {
            return; // a copy carried into a forked child: not ours to stop
        }
        self.terminate();
    }
}
