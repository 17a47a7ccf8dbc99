//! A spawned child's job: what the parent asks of a run of this program, how it gets there
//! (a memfd named by an environment variable), and [`main_guard`], which runs it.

use std::os::fd::{AsRawFd, OwnedFd};

use serde::{Deserialize, Serialize};

use super::image::image_mark;
use crate::error::ProcessError;
use crate::sys;

/// The environment variable that tells a run of this program that it is a spawned child, and
/// which fd holds its job.
const ENV: &str = "BAOZI_SPAWNED_JOB";

/// What a spawned child is to do.
#[derive(Serialize, Deserialize)]
pub(crate) enum Job {
    /// A [`Process`](crate::Process) started with a task.
    Task(crate::task::TaskJob),
    /// A pool's spawner (forkserver and spawn pools).
    PoolSpawner(crate::pool::SpawnerJob),
    /// A pool worker (spawn pools).
    PoolWorker(crate::pool::WorkerJob),
    /// The program's forkserver.
    Forkserver(super::forkserver::ForkserverJob),
}

/// The job with the mark of the image that sent it.
#[derive(Serialize, Deserialize)]
struct Envelope {
    mark: isize,
    job: Job,
}

/// The parent's record of a spawned child's job: emptied by the child's [`main_guard`].
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) pid: sys::Pid,
    job: OwnedFd,
}

impl Spawned {
    /// Whether the child took its job (reached [`main_guard`]). `true` when it cannot be told.
    pub(crate) fn taken(&self) -> bool {
        sys::fd_len(&self.job).map_or(true, |n| n == 0)
    }

    /// Starts a run of this program that does `job`, keeping `keep` open in it. A daemon gets
    /// `PR_SET_PDEATHSIG`. Safe from a multi-threaded process (the child only execs).
    pub(crate) fn start(job: Job, keep: &[i32], daemon: bool) -> Result<Spawned, ProcessError> {
        refuse_unguarded()?;
        if !super::image::in_executable() {
            return Err(ProcessError::NeedsFork {
                what:
                    "baozi inside a shared library (a spawned child runs the program's executable)"
                        .into(),
                method: super::StartMethod::Spawn,
            });
        }
        let bytes = postcard::to_allocvec(&Envelope {
            mark: image_mark(),
            job,
        })
        .map_err(|e| {
            ProcessError::Encode(format!("the spawned child's job did not encode: {e}"))
        })?;
        let file = sys::memfd_with(&bytes).map_err(ProcessError::Fork)?;
        let fd = file.as_raw_fd();
        let plan =
            sys::ExecPlan::this_program(&[(ENV, fd.to_string())]).map_err(ProcessError::Fork)?;
        let mut fds = keep.to_vec();
        fds.push(fd);
        let pid = sys::fork_exec(&plan, &fds, daemon).map_err(ProcessError::Fork)?;
        Ok(Spawned { pid, job: file })
    }
}

/// `Err` in a spawned child that skipped [`main_guard`]: it must not start processes (each
/// would run `main` again, for ever).
pub(crate) fn refuse_unguarded() -> Result<(), ProcessError> {
    if std::env::var_os(ENV).is_some() {
        return Err(ProcessError::MainGuardMissing { pid: sys::getpid() });
    }
    Ok(())
}

/// The first line of `main` in a program that uses the `spawn` or `forkserver` start method
/// (Python's `if __name__ == '__main__':`).
///
/// Those methods start a child by running the program again; in that child, `main_guard`
/// runs the task it was started for and exits, so the rest of `main` runs only in the
/// original process. In any other process it returns at once (one environment look-up).
///
/// ```no_run
/// fn bake(filling: String) -> i32 {
///     println!("a {filling} bun");
///     0
/// }
///
/// fn main() -> Result<(), baozi_process::ProcessError> {
///     baozi_process::main_guard(); // first line: a spawned child stops here
///     let p = baozi_process::Process::builder()
///         .start_method(baozi_process::StartMethod::Spawn)
///         .task(bake, "pork".to_string())?;
///     p.start()?;
///     assert_eq!(p.join()?, 0);
///     Ok(())
/// }
/// ```
///
/// Forgetting it is not a fork bomb: the child then runs `main`, but every attempt there to
/// start a process fails with [`ProcessError::MainGuardMissing`], and the parent's
/// [`join`](crate::Process::join) reports the same error. Call it before anything that has a
/// side effect and before starting threads.
pub fn main_guard() {
    let Some(value) = std::env::var_os(ENV) else {
        return;
    };
    // The child's own children must not think they are spawned; the process is still
    // single-threaded here (the guard's contract).
    std::env::remove_var(ENV);
    let fd = value.to_str().and_then(|v| v.parse::<i32>().ok());
    let envelope = fd
        .ok_or_else(|| format!("{ENV}={value:?} does not name an fd"))
        .and_then(|fd| sys::take_job_file(fd).map_err(|e| format!("cannot read the job: {e}")))
        .and_then(|bytes| {
            postcard::from_bytes::<Envelope>(&bytes)
                .map_err(|e| format!("the job did not decode: {e}"))
        });
    let envelope = match envelope {
        Ok(env) if env.mark == image_mark() => env,
        Ok(_) => fail("the job comes from another build of this program"),
        Err(why) => fail(&why),
    };
    let code = match envelope.job {
        Job::Task(job) => crate::task::run_task_job(job),
        Job::PoolSpawner(job) => crate::pool::run_spawner_job(job),
        Job::PoolWorker(job) => crate::pool::run_worker_job(job),
        Job::Forkserver(job) => super::forkserver::run_server(job),
    };
    sys::exit_now(code)
}

/// [`main_guard`] for a program whose `main` you do not write: a test binary with libtest's
/// harness (`#[test]` functions; `cargo test`'s default), a benchmark harness. Put it once at
/// the top level of the file; it registers a function that the loader runs before `main`
/// (an `.init_array` entry, as the `task!` registry's), which does what `main_guard()` does.
///
/// ```
/// baozi_process::guard_before_main!();
///
/// fn steam(minutes: u32) -> i32 { minutes as i32 }
///
/// # fn main() -> Result<(), baozi_process::ProcessError> {
/// // In a #[test] (libtest runs it on a thread of its own: fork is refused there).
/// let p = baozi_process::Process::builder()
///     .start_method(baozi_process::StartMethod::Spawn)
///     .task(steam, 3)?;
/// p.start()?;
/// assert_eq!(p.join()?, 3);
/// # Ok(()) }
/// ```
///
/// Before `main`, std has not set up the main thread's name or its stack-overflow message; a
/// task's panic still prints and gives exit code 1.
#[macro_export]
macro_rules! guard_before_main {
    () => {
        #[used]
        #[link_section = ".init_array"]
        static __BAOZI_GUARD_BEFORE_MAIN: extern "C" fn() = {
            extern "C" fn __baozi_guard_before_main() {
                $crate::main_guard();
            }
            __baozi_guard_before_main
        };
    };
}

fn fail(why: &str) -> ! {
    eprintln!("baozi: a spawned child cannot run its job: {why}");
    sys::exit_now(2)
}
