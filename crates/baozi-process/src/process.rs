//! [`Process`] and its [`Builder`]: start, join (with a timeout), is_alive, terminate, kill,
//! exit codes.

use std::fmt;
use std::os::fd::OwnedFd;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};

use crate::body::{IntoExitCode, ProcessBody};
use crate::child;
use crate::current;
use crate::error::ProcessError;
use crate::family;
use crate::handle::JoinHandle;
use crate::start::{self, Job, Spawned, StartMethod};
use crate::sys;
use crate::task::{TaskCall, TaskJob};

/// What a child runs: a closure (it crosses only by fork), or a function with serde
/// arguments (it crosses by any start method).
pub(crate) enum Target {
    /// The boxed closure; returns the exit code.
    Closure(Box<dyn FnOnce() -> i32 + Send + 'static>),
    /// A plain function and its encoded argument.
    Task(TaskCall),
}

enum State {
    /// Made, not started; holds the target.
    Initial(Option<Target>),
    /// Started and not yet reaped. `pidfd` is `None` where `pidfd_open` failed (Linux < 5.3).
    Running {
        pid: sys::Pid,
        /// The process that started it: only it may wait for or signal the child.
        parent: sys::Pid,
        pidfd: Option<Arc<OwnedFd>>,
        /// A spawned child's job, to tell whether it reached `main_guard`.
        spawned: Option<Spawned>,
        /// A child of the program's forkserver (`Some` of the server's generation): the
        /// server reaps it and reports its code.
        served: Option<u64>,
    },
    /// Reaped. `unguarded`: a spawned child that never took its job (no `main_guard`).
    Exited {
        pid: sys::Pid,
        code: i32,
        unguarded: bool,
    },
}

/// A child process running a closure, with the API of Python's `multiprocessing.Process`.
///
/// Make it with [`Process::new`] or [`Process::builder`], [`start`](Process::start) it (this
/// forks), then [`join`](Process::join) it. All methods take `&self`, so one thread may wait while
/// another calls [`kill`](Process::kill).
///
/// # Drop
///
/// A `Process` never leaves a zombie behind:
///
/// * a started **daemon** is killed with SIGKILL and reaped;
/// * a started **non-daemon** child is joined: the drop blocks until it exits, as Python joins
///   non-daemon children when the interpreter exits. Call [`kill`](Process::kill) or
///   [`terminate`](Process::terminate) first to not wait;
/// * in a process other than the one that started it (a copy carried into a forked child), drop
///   does nothing.
///
/// # Examples
///
/// ```
/// use baozi_process::Process;
///
/// let p = Process::builder().name("baker").spawn_fn(|| 7);
/// assert_eq!(p.name(), "baker");
/// assert_eq!(p.exitcode(), None);
/// p.start()?;
/// assert_eq!(p.join()?, 7);
/// assert_eq!(p.exitcode(), Some(7));
/// # Ok::<(), baozi_process::ProcessError>(())
/// ```
#[must_use = "a Process does nothing until it is started"]
pub struct Process {
    name: String,
    daemon: bool,
    /// `None`: the process-wide default at `start`.
    method: Option<StartMethod>,
    state: Mutex<State>,
    /// The child's pidfd from its start to the drop of this `Process` (kept after the child is
    /// reaped, so that [`sentinel`](Process::sentinel) can lend it for as long as `self`).
    sentinel: OnceLock<Arc<OwnedFd>>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Process");
        d.field("name", &self.name).field("daemon", &self.daemon);
        match &*self.lock() {
            State::Initial(_) => d.field("state", &"initial"),
            State::Running { pid, .. } => d.field("pid", pid).field("state", &"started"),
            State::Exited { pid, code, .. } => d.field("pid", pid).field("exitcode", code),
        };
        d.finish()
    }
}

/// Options for a [`Process`] or a [`JoinHandle`]: name, daemon flag, result slot size.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    name: Option<String>,
    /// `None`: the creating process's own flag (Python's default).
    daemon: Option<bool>,
    result_capacity: Option<usize>,
    method: Option<StartMethod>,
}

/// Default size of a [`JoinHandle`]'s result slot: 1 MiB (of lazily mapped shared memory).
pub const DEFAULT_RESULT_CAPACITY: usize = 1 << 20;

impl Builder {
    /// Default options: name `Process-N`, daemon as the calling process (so not a daemon in
    /// the main process), 1 MiB result slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process's name (default `Process-N`, N counting the processes made by this process).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemon child is killed when its parent dies (`PR_SET_PDEATHSIG` = SIGKILL) and when its
    /// `Process` is dropped. Default: the flag of the process that makes the `Process`
    /// (`false` in the main process; `true` in a daemon, as in Python — though a daemon may not
    /// [`start`](Process::start) children at all).
    ///
    /// The kernel sends the signal when the *thread* that forked the child exits, so start
    /// daemons from a thread that lives as long as they should (the main thread).
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = Some(daemon);
        self
    }

    /// Bytes of shared memory for a [`spawn`](Builder::spawn)ed child's serialised result or panic
    /// message (default [`DEFAULT_RESULT_CAPACITY`]). A larger result makes
    /// [`JoinHandle::join`] fail with [`ProcessError::NoResult`].
    pub fn result_capacity(mut self, bytes: usize) -> Self {
        self.result_capacity = Some(bytes);
        self
    }

    /// How the child is started (default: the process-wide [`get_start_method`](crate::get_start_method)
    /// at [`start`](Process::start); a closure then uses [`StartMethod::Fork`] unless a method
    /// was set, as only a fork can carry it).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// A [`Process`] that will run `f`; not started yet (Python's `Process(target=f)`).
    ///
    /// A closure crosses to the child only by fork: started with
    /// [`StartMethod::Spawn`] or [`StartMethod::Forkserver`], it fails with
    /// [`ProcessError::NeedsFork`]. Use [`task`](Builder::task) for those.
    pub fn spawn_fn<F, R>(self, f: F) -> Process
    where
        F: FnOnce() -> R + Send + 'static,
        R: IntoExitCode,
    {
        self.make(Target::Closure(Box::new(move || f().into_exit_code())))
    }

    /// A [`Process`] that will run `f(arg)` under any start method (Python's
    /// `Process(target=f, args=(arg,))`): `f` is a plain function of this program (no
    /// captures), `arg` a serde value, encoded now. Several arguments: a tuple. Handles (a
    /// `Queue`, a `Lock`, a `Value`) are serde values that attach in the child.
    ///
    /// ```
    /// use baozi_process::Process;
    ///
    /// fn steam((baskets, minutes): (i32, i32)) -> i32 { baskets * minutes }
    ///
    /// let p = Process::builder().task(steam, (2, 3))?;
    /// p.start()?;
    /// assert_eq!(p.join()?, 6);
    /// # Ok::<(), baozi_process::ProcessError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ProcessError::Encode`] when `arg` does not encode.
    pub fn task<A, R>(self, f: fn(A) -> R, arg: A) -> Result<Process, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: IntoExitCode,
    {
        Ok(self.make(Target::Task(TaskCall::process(f, &arg)?)))
    }

    /// A [`Process`] that will run `body` (see [`Process::from_body`]); the builder's name,
    /// if set, wins over the body's.
    pub fn body<B: ProcessBody>(mut self, body: B) -> Process {
        if self.name.is_none() {
            self.name = body.name();
        }
        self.spawn_fn(move || body.run())
    }

    /// Starts a child running `f` and returns a handle whose [`join`](JoinHandle::join) gives
    /// back `f`'s value, like [`std::thread::Builder::spawn`].
    ///
    /// # Errors
    ///
    /// [`ProcessError::ResultSlot`] when the shared result slot cannot be mapped,
    /// [`ProcessError::Fork`] when `fork` fails.
    pub fn spawn<F, T>(self, f: F) -> Result<JoinHandle<T>, ProcessError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        let cap = self.result_capacity.unwrap_or(DEFAULT_RESULT_CAPACITY);
        JoinHandle::start(self, cap, f)
    }

    /// Starts a child running `f(arg)` under any start method and returns a handle whose
    /// [`join`](JoinHandle::join) gives back its value: [`spawn`](Builder::spawn) for a plain
    /// function with a serde argument.
    ///
    /// ```
    /// fn bake(filling: String) -> String { format!("{filling} bun") }
    ///
    /// let h = baozi_process::Builder::new().spawn_task(bake, "pork".to_string())?;
    /// assert_eq!(h.join()?, "pork bun");
    /// # Ok::<(), baozi_process::ProcessError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Builder::spawn) and [`Process::start`], and [`ProcessError::Encode`] when
    /// `arg` does not encode.
    pub fn spawn_task<A, T>(self, f: fn(A) -> T, arg: A) -> Result<JoinHandle<T>, ProcessError>
    where
        A: Serialize + DeserializeOwned + 'static,
        T: Serialize + DeserializeOwned + 'static,
    {
        let cap = self.result_capacity.unwrap_or(DEFAULT_RESULT_CAPACITY);
        JoinHandle::start_task(self, cap, f, arg)
    }

    /// The start method chosen on this builder, if any.
    pub(crate) fn chosen_method(&self) -> Option<StartMethod> {
        self.method
    }

    pub(crate) fn make(self, target: Target) -> Process {
        Process {
            name: self.name.unwrap_or_else(current::next_default_name),
            daemon: self.daemon.unwrap_or_else(current::is_daemon),
            method: self.method,
            state: Mutex::new(State::Initial(Some(target))),
            sentinel: OnceLock::new(),
        }
    }
}

/// A started child: its pid, its job when spawned, its pidfd when the forkserver forked it.
struct Started {
    pid: sys::Pid,
    spawned: Option<Spawned>,
    served: Option<(OwnedFd, u64)>,
}

/// A started child, or the error and the target to keep.
type StartResult = Result<Started, (ProcessError, Option<Target>)>;

/// Longest sleep between checks when `pidfd_open` is unavailable (Linux < 5.3).
const POLL_MAX: Duration = Duration::from_millis(20);

impl Process {
    /// A process that will run `f`, with default options; not started yet.
    ///
    /// `f` may return `()`, an `i32` exit code or a `Result` (see [`IntoExitCode`]).
    pub fn new<F, R>(f: F) -> Process
    where
        F: FnOnce() -> R + Send + 'static,
        R: IntoExitCode,
    {
        Builder::new().spawn_fn(f)
    }

    /// A process that will run `body` (Python's `Process` subclass with its own `run`); not
    /// started yet. Its name is the body's [`name`](ProcessBody::name), if it gives one.
    ///
    /// ```
    /// use baozi_process::{Process, ProcessBody};
    ///
    /// struct Steamer { baskets: i32 }
    ///
    /// impl ProcessBody for Steamer {
    ///     type Output = i32;
    ///     fn run(self) -> i32 { self.baskets * 2 }
    ///     fn name(&self) -> Option<String> { Some("steamer".into()) }
    /// }
    ///
    /// let p = Process::from_body(Steamer { baskets: 4 });
    /// assert_eq!(p.name(), "steamer");
    /// p.start()?;
    /// assert_eq!(p.join()?, 8);
    /// # Ok::<(), baozi_process::ProcessError>(())
    /// ```
    pub fn from_body<B: ProcessBody>(body: B) -> Process {
        Builder::new().body(body)
    }

    /// Options: name, daemon, start method.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// A process that will run `f(arg)`, under any start method (see [`Builder::task`]).
    ///
    /// # Errors
    ///
    /// [`ProcessError::Encode`] when `arg` does not encode.
    pub fn task<A, R>(f: fn(A) -> R, arg: A) -> Result<Process, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: IntoExitCode,
    {
        Builder::new().task(f, arg)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The name: given to the builder, or `Process-N`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a daemon (see [`Builder::daemon`]).
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// The child's pid, once started (kept after it exits, as Python does).
    pub fn pid(&self) -> Option<i32> {
        match &*self.lock() {
            State::Initial(_) => None,
            State::Running { pid, .. } | State::Exited { pid, .. } => Some(*pid),
        }
    }

    /// Starts the child (by its [start method](Builder::start_method)), which runs the
    /// closure or task and leaves with `_exit`: with its exit code, 1 after a panic (the
    /// message is on stderr). The parent returns at once.
    ///
    /// Read the crate doc's "Passing closures across fork" and "Start methods" before
    /// starting a process from a program that has threads.
    ///
    /// # Errors
    ///
    /// [`ProcessError::AlreadyStarted`] on a second call, [`ProcessError::Fork`] when `fork`
    /// fails (the process can then be started again), [`ProcessError::DaemonicParent`] when
    /// the calling process is a daemon: a daemonic process may not have children (Python's
    /// rule: a daemon is killed without a chance to join them).
    /// [`ProcessError::ForkWithThreads`] for fork from a process with other threads,
    /// [`ProcessError::NeedsFork`] for a closure under spawn or forkserver (both leave the
    /// process startable), [`ProcessError::MainGuardMissing`] in a spawned child that skipped
    /// [`main_guard`](crate::main_guard).
    pub fn start(&self) -> Result<(), ProcessError> {
        start::refuse_unguarded()?;
        if current::is_daemon() {
            return Err(ProcessError::DaemonicParent {
                name: current::name(),
            });
        }
        let mut state = self.lock();
        let target = match &mut *state {
            State::Initial(t) => t.take(),
            _ => None,
        };
        let Some(target) = target else {
            return Err(ProcessError::AlreadyStarted {
                name: self.name.clone(),
            });
        };
        let method = match (&target, self.method) {
            (_, Some(m)) => m,
            // A closure goes by fork unless a method was set for the program: only a fork
            // carries it (and in a multi-threaded program that says why it cannot).
            (Target::Closure(_), None) => start::explicit_default().unwrap_or(StartMethod::Fork),
            (Target::Task(_), None) => start::get_start_method(),
        };
        let parent = sys::getpid();
        let started = match method {
            StartMethod::Fork => match start::check_fork() {
                Ok(()) => self.fork(target, parent),
                Err(e) => Err((e, Some(target))),
            },
            _ => self.spawn_child(target, method, parent),
        };
        match started {
            Ok(Started {
                pid,
                spawned,
                served,
            }) => {
                // Any failure (ENOSYS before 5.3, EMFILE) falls back to sleep-polling.
                let generation = served.as_ref().map(|(_, g)| *g);
                let served_fd = served.map(|(fd, _)| Arc::new(fd));
                let pidfd = served_fd.or_else(|| sys::pidfd_open(pid).ok().map(Arc::new));
                if let Some(fd) = &pidfd {
                    let _ = self.sentinel.set(Arc::clone(fd));
                }
                family::register(pid, &self.name, self.daemon, pidfd.clone());
                *state = State::Running {
                    pid,
                    parent,
                    pidfd,
                    spawned,
                    served: generation,
                };
                Ok(())
            }
            Err((e, target)) => {
                *state = State::Initial(target);
                Err(e)
            }
        }
    }

    /// A daemon child that is a spawned run of this program doing `job` (a pool's spawner or
    /// worker), already started; `keep` are fds it inherits.
    pub(crate) fn start_job(name: String, job: Job, keep: &[i32]) -> Result<Process, ProcessError> {
        Process::start_job_with(name, job, keep, true)
    }

    /// As [`start_job`](Process::start_job), a daemon or not.
    pub(crate) fn start_job_with(
        name: String,
        job: Job,
        keep: &[i32],
        daemon: bool,
    ) -> Result<Process, ProcessError> {
        if current::is_daemon() && !matches!(job, Job::PoolWorker(_)) {
            return Err(ProcessError::DaemonicParent {
                name: current::name(),
            });
        }
        let spawned = Spawned::start(job, keep, daemon)?;
        let pid = spawned.pid;
        let pidfd = sys::pidfd_open(pid).ok().map(Arc::new);
        let p = Process {
            name,
            daemon,
            method: Some(StartMethod::Spawn),
            state: Mutex::new(State::Running {
                pid,
                parent: sys::getpid(),
                pidfd: pidfd.clone(),
                spawned: Some(spawned),
                served: None,
            }),
            sentinel: OnceLock::new(),
        };
        if let Some(fd) = pidfd {
            let _ = p.sentinel.set(fd);
        }
        Ok(p)
    }

    /// Forks a child that runs `target`.
    fn fork(&self, target: Target, parent: sys::Pid) -> StartResult {
        // Everything the child needs is made before the fork.
        let name = self.name.clone();
        let parent_name = current::name();
        // SAFETY: the child runs only `child::run`, which runs the target under catch_unwind
        // and leaves with _exit; what a closure may do is the caller's part (crate doc).
        match unsafe { sys::fork() } {
            Err(e) => Err((ProcessError::Fork(e), Some(target))),
            Ok(sys::Forked::Child) => {
                child::run(name, self.daemon, parent, parent_name, || match target {
                    Target::Closure(f) => f(),
                    Target::Task(call) => call.run(),
                })
            }
            Ok(sys::Forked::Parent(pid)) => Ok(Started {
                pid,
                spawned: None,
                served: None,
            }),
        }
    }

    /// Runs this program again to run `target`, which must be a task.
    fn spawn_child(&self, target: Target, method: StartMethod, parent: sys::Pid) -> StartResult {
        let call = match target {
            Target::Task(call) if call.portable() => call,
            Target::Task(call) => {
                let what = "a function outside the program's executable (a shared library)";
                let e = ProcessError::NeedsFork {
                    what: what.into(),
                    method,
                };
                return Err((e, Some(Target::Task(call))));
            }
            closure => {
                let e = ProcessError::NeedsFork {
                    what: "a closure".into(),
                    method,
                };
                return Err((e, Some(closure)));
            }
        };
        let job = TaskJob {
            name: self.name.clone(),
            daemon: self.daemon,
            parent,
            parent_name: current::name(),
            call,
        };
        if method == StartMethod::Forkserver {
            return match start::start_served(&job) {
                Ok((pid, pidfd, generation)) => Ok(Started {
                    pid,
                    spawned: None,
                    served: Some((pidfd, generation)),
                }),
                Err(e) => Err((e, Some(Target::Task(job.call)))),
            };
        }
        match Spawned::start(Job::Task(job), &[], self.daemon) {
            Ok(spawned) => Ok(Started {
                pid: spawned.pid,
                spawned: Some(spawned),
                served: None,
            }),
            // The job (and its call) went into the failed attempt: the process cannot be
            // started again.
            Err(e) => Err((e, None)),
        }
    }

    /// Reaps the child if it has exited. Returns the state's exit code, or the running child's
    /// pid and pidfd.
    fn check(&self, op: &'static str) -> Result<Result<i32, Option<Arc<OwnedFd>>>, ProcessError> {
        let mut state = self.lock();
        match &*state {
            State::Initial(_) => Err(ProcessError::NotStarted {
                name: self.name.clone(),
            }),
            State::Exited { code, .. } => Ok(Ok(*code)),
            State::Running {
                pid,
                parent,
                pidfd,
                spawned,
                served,
            } => {
                let pid = *pid;
                if *parent != sys::getpid() {
                    return Err(ProcessError::NotChild {
                        name: self.name.clone(),
                        pid,
                    });
                }
                let reaped = if let Some(generation) = *served {
                    start::served_exit_code(pid, generation)
                } else {
                    sys::try_reap(pid).map_err(|source| ProcessError::Os { op, pid, source })
                };
                match reaped {
                    Ok(Some(code)) => {
                        // Killed before it got there, or its exec failed (127): not the guard.
                        let unguarded = code >= 0
                            && code != 127
                            && spawned.as_ref().is_some_and(|s| !s.taken());
                        *state = State::Exited {
                            pid,
                            code,
                            unguarded,
                        };
                        family::unregister(pid);
                        Ok(Ok(code))
                    }
                    Ok(None) => Ok(Err(pidfd.clone())),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Waits until the child exits or `deadline` passes; reaps it.
    fn wait(&self, deadline: Option<Instant>) -> Result<Option<i32>, ProcessError> {
        let mut nap = Duration::from_millis(1);
        loop {
            let pidfd = match self.check("wait for")? {
                Ok(code) => {
                    if let State::Exited {
                        pid,
                        unguarded: true,
                        ..
                    } = *self.lock()
                    {
                        return Err(ProcessError::MainGuardMissing { pid });
                    }
                    return Ok(Some(code));
                }
                Err(pidfd) => pidfd,
            };
            let left = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
            };
            match pidfd {
                // Sleeps in poll until the child exits (the pidfd turns readable) or time is up;
                // the lock is not held, so other threads may signal the child meanwhile.
                Some(fd) => {
                    let exited =
                        sys::poll_readable(&fd, left).map_err(|source| ProcessError::Os {
                            op: "wait for",
                            pid: self.pid().unwrap_or(0),
                            source,
                        })?;
                    // A forkserver's child has exited; the server's report follows within
                    // microseconds (its pidfd stays readable meanwhile: do not spin on it).
                    if exited && self.served() {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
                // No pidfd (Linux < 5.3): sleep-poll, 1 ms doubling to 20 ms, never past the deadline.
                None => {
                    std::thread::sleep(left.map_or(nap, |l| l.min(nap)));
                    nap = (nap * 2).min(POLL_MAX);
                }
            }
        }
    }

    /// Blocks until the child exits, reaps it and returns its exit code: 0 or N for `exit(N)`, 1
    /// after a panic, `-SIG` when killed by a signal. Returns at once for a child already joined.
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`], [`ProcessError::NotChild`] (called in another process than
    /// the starter), [`ProcessError::Os`] when `waitpid` fails (someone else reaped the child),
    /// [`ProcessError::MainGuardMissing`] for a spawned child that never reached
    /// [`main_guard`](crate::main_guard) (its [`exitcode`](Process::exitcode) is still there).
    pub fn join(&self) -> Result<i32, ProcessError> {
        self.wait(None)
            .map(|c| c.expect("a wait without deadline returns a code"))
    }

    /// Like [`join`](Process::join), but gives up after `timeout`: `Ok(None)` means the child
    /// is still running. The wait sleeps in `poll` on a pidfd, so the call returns as soon as the
    /// child exits, not at the next tick of a poll loop.
    ///
    /// # Errors
    ///
    /// As [`join`](Process::join).
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<i32>, ProcessError> {
        self.wait(Some(Instant::now() + timeout))
    }

    /// Whether the child is the forkserver's (it reaps it).
    fn served(&self) -> bool {
        matches!(
            &*self.lock(),
            State::Running {
                served: Some(_),
                ..
            }
        )
    }

    /// The child's pidfd while it runs unreaped (`None` before start, after reaping, or where
    /// `pidfd_open` failed): readable once the child has exited.
    pub(crate) fn pidfd(&self) -> Option<Arc<OwnedFd>> {
        match &*self.lock() {
            State::Running { pidfd, .. } => pidfd.clone(),
            _ => None,
        }
    }

    /// The child's sentinel (Python's `Process.sentinel`): its pidfd, which polls readable
    /// once the child has exited, and stays so. Give it to `poll`/`epoll`/an async reactor, or
    /// wait on several processes at once with [`wait`](crate::wait). It is valid as long as
    /// this `Process`; do not close it or read from it.
    ///
    /// ```
    /// use baozi_process::Process;
    /// use std::os::fd::AsRawFd;
    ///
    /// let p = Process::new(|| 0);
    /// assert!(p.sentinel().is_err()); // not started yet
    /// p.start()?;
    /// let fd = p.sentinel()?;
    /// assert!(fd.as_raw_fd() >= 0);
    /// p.join()?;
    /// # Ok::<(), baozi_process::ProcessError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`] before [`start`](Process::start), [`ProcessError::Os`]
    /// where the kernel has no `pidfd_open` (Linux < 5.3) or it failed (out of fds).
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>, ProcessError> {
        if let Some(fd) = self.sentinel.get() {
            return Ok(fd.as_fd());
        }
        match self.pid() {
            None => Err(ProcessError::NotStarted {
                name: self.name.clone(),
            }),
            Some(pid) => Err(ProcessError::Os {
                op: "open a pidfd (the sentinel) for",
                pid,
                source: std::io::Error::from(std::io::ErrorKind::Unsupported),
            }),
        }
    }

    /// Whether the child has been started and has not exited yet (reaping it if it has).
    pub fn is_alive(&self) -> bool {
        matches!(self.check("check"), Ok(Err(_)))
    }

    /// The exit code: `None` before start and while running; `Some(0)` for success, `Some(N)`
    /// for `exit(N)`, `Some(1)` after a panic, `Some(-SIG)` when killed by a signal (Python's
    /// meaning). Reaps the child if it has exited.
    pub fn exitcode(&self) -> Option<i32> {
        match self.check("check") {
            Ok(Ok(code)) => Some(code),
            _ => None,
        }
    }

    fn signal(&self, sig: i32) -> Result<(), ProcessError> {
        let state = self.lock();
        match &*state {
            State::Initial(_) => Err(ProcessError::NotStarted {
                name: self.name.clone(),
            }),
            // Already reaped: nothing to signal (and the pid may be someone else's by now).
            State::Exited { .. } => Ok(()),
            State::Running {
                pid,
                parent,
                served: Some(_),
                pidfd: Some(fd),
                ..
            } => {
                if *parent != sys::getpid() {
                    return Err(ProcessError::NotChild {
                        name: self.name.clone(),
                        pid: *pid,
                    });
                }
                // The forkserver reaps it: only its pidfd names it for sure. ESRCH: it has
                // exited (and may be reaped already): nothing to signal, as after a join.
                match sys::pidfd_signal(fd, sig) {
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
                    r => r.map_err(|source| ProcessError::Os {
                        op: "signal",
                        pid: *pid,
                        source,
                    }),
                }
            }
            State::Running { pid, parent, .. } => {
                if *parent != sys::getpid() {
                    return Err(ProcessError::NotChild {
                        name: self.name.clone(),
                        pid: *pid,
                    });
                }
                // The child is unreaped (at worst a zombie) while we hold the lock, so its pid
                // cannot have been reused.
                sys::kill(*pid, sig).map_err(|source| ProcessError::Os {
                    op: "signal",
                    pid: *pid,
                    source,
                })
            }
        }
    }

    /// Sends SIGTERM (Python's `terminate`). Does not wait; [`join`](Process::join) then gives
    /// `-15` unless the child handles the signal. A no-op once the child has been joined.
    ///
    /// # Errors
    ///
    /// [`ProcessError::NotStarted`], [`ProcessError::NotChild`], [`ProcessError::Os`].
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.signal(sys::SIGTERM)
    }

    /// Sends SIGKILL (Python's `kill`). Does not wait; [`join`](Process::join) then gives `-9`.
    ///
    /// # Errors
    ///
    /// As [`terminate`](Process::terminate).
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.signal(sys::SIGKILL)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let State::Running {
            pid,
            parent,
            served: Some(_),
            ..
        } = *state
        {
            if parent != sys::getpid() {
                return;
            }
            if self.daemon {
                let _ = self.kill();
            }
            // The forkserver reaps it; wait for its report (an error: the server is gone).
            let _ = self.wait(None);
            family::unregister(pid);
            return;
        }
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let State::Running { pid, parent, .. } = *state {
            if parent != sys::getpid() {
                return; // a copy in a forked child: not ours to reap
            }
            if self.daemon {
                let _ = sys::kill(pid, sys::SIGKILL);
            }
            // Errors (ECHILD: someone else reaped it) leave nothing to clean up.
            if let Ok(code) = sys::reap_blocking(pid) {
                *state = State::Exited {
                    pid,
                    code,
                    unguarded: false,
                };
            }
            family::unregister(pid);
        }
    }
}
