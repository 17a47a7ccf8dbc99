//! Tasks: plain functions that cross to a child under any start method, by reference
//! ([`TaskCall`], for `Process::task`) or by name (the [`task!`](crate::task) registry).

use std::any::Any;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::body::IntoExitCode;
use crate::child;
use crate::error::ProcessError;
use crate::start::FnRef;
use crate::sys;

/// What a spawned child started with a task needs: its identity and its call.
#[derive(Serialize, Deserialize)]
pub(crate) struct TaskJob {
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) parent: sys::Pid,
    pub(crate) parent_name: String,
    pub(crate) call: TaskCall,
}

/// In a spawned child: runs its task as a forked child runs its closure (never returns).
pub(crate) fn run_task_job(job: TaskJob) -> i32 {
    child::run(
        job.name,
        job.daemon,
        job.parent,
        job.parent_name,
        move || job.call.run(),
    )
}

/// In a child forked by the forkserver `server`: as [`run_task_job`], with the server as the
/// parent that a daemon dies with.
pub(crate) fn run_served_job(job: TaskJob, server: sys::Pid) -> ! {
    child::run(job.name, job.daemon, server, job.parent_name, move || {
        job.call.run()
    })
}

/// A plain function as a serde value (by its place in the executable), for a task whose
/// argument names another function (`spawn_task`: the child runs `deliver`, which calls it).
#[derive(Serialize, Deserialize)]
pub(crate) struct FnArg<A, R> {
    func: FnRef,
    #[serde(skip)]
    _types: std::marker::PhantomData<fn(A) -> R>,
}

impl<A, R> FnArg<A, R> {
    pub(crate) fn new(f: fn(A) -> R) -> Self {
        FnArg {
            func: FnRef::new(f as usize),
            _types: std::marker::PhantomData,
        }
    }

    /// Whether it holds in a spawned run of the program.
    pub(crate) fn portable(&self) -> bool {
        self.func.portable()
    }

    /// Calls the function.
    pub(crate) fn call(self, a: A) -> R {
        // SAFETY: an `FnArg<A, R>` is made only by `new` from an `fn(A) -> R` of this image,
        // and reaches a child inside a task whose trampoline was monomorphised for the same
        // `A` and `R` (`TaskCall::process` with `Delivery<A, R>`), in a fork of the process
        // that made it or a run of the same executable (image mark checked).
        let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(self.func.addr()) };
        f(a)
    }
}

/// A process trampoline: (function address, encoded argument) → exit code.
type ProcessTrampoline = unsafe fn(usize, &[u8]) -> i32;

/// A function and its encoded argument, ready to run in a child (forked or spawned).
#[derive(Serialize, Deserialize)]
pub(crate) struct TaskCall {
    trampoline: FnRef,
    func: FnRef,
    arg: Vec<u8>,
}

impl TaskCall {
    /// `f(arg)` for a [`Process`](crate::Process): the exit code is `R`'s.
    pub(crate) fn process<A, R>(f: fn(A) -> R, arg: &A) -> Result<TaskCall, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: IntoExitCode,
    {
        let arg = postcard::to_allocvec(arg).map_err(|e| {
            ProcessError::Encode(format!("the task's argument did not encode: {e}"))
        })?;
        Ok(TaskCall {
            trampoline: FnRef::new(run_process::<A, R> as ProcessTrampoline as usize),
            func: FnRef::new(f as usize),
            arg,
        })
    }

    /// Whether the call holds in a spawned copy of the program.
    pub(crate) fn portable(&self) -> bool {
        self.trampoline.portable() && self.func.portable()
    }

    /// Runs the call (in the child); returns the exit code. A panic unwinds to the caller
    /// (`child::run` makes it exit code 1).
    pub(crate) fn run(self) -> i32 {
        // SAFETY: `trampoline` is a `ProcessTrampoline` taken in `TaskCall::process` in this
        // program's image: this process is a fork of the one that made the call (same
        // addresses), or a spawned run of the same executable whose image mark was checked
        // (same offsets); nothing else makes a `TaskCall`.
        let run =
            unsafe { std::mem::transmute::<usize, ProcessTrampoline>(self.trampoline.addr()) };
        // SAFETY: `func` was made with `trampoline`, for the types it was monomorphised with.
        unsafe { run(self.func.addr(), &self.arg) }
    }
}

impl fmt::Debug for TaskCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskCall")
            .field("arg_bytes", &self.arg.len())
            .finish_non_exhaustive()
    }
}

/// # Safety
///
/// `func` is the address of an `fn(A) -> R` with these `A` and `R` (made by
/// [`TaskCall::process`]).
unsafe fn run_process<A: DeserializeOwned, R: IntoExitCode>(func: usize, arg: &[u8]) -> i32 {
    // SAFETY: `func` is an `fn(A) -> R` of this image (this function's contract).
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    match postcard::from_bytes::<A>(arg) {
        Ok(a) => f(a).into_exit_code(),
        Err(e) => {
            let why = baozi_shm::take_attach_error().map_or(String::new(), |w| format!(": {w}"));
            eprintln!("baozi: the task's argument did not decode in the child: {e}{why}");
            1
        }
    }
}

/// A task registered by name with [`task!`](crate::task): found by
/// [`lookup_task`](crate::lookup_task) in any process of the program (and, by its name and
/// types, by the same program built elsewhere).
pub struct TaskEntry {
    name: &'static str,
    func: fn() -> Box<dyn Any + Send>,
    run: ErasedRun,
    arg_type: fn() -> &'static str,
    result_type: fn() -> &'static str,
    refs: fn() -> crate::pool::TaskRefs,
}

/// A registered task run on encoded bytes: the postcard argument in, the postcard result out.
pub type ErasedRun = fn(&[u8]) -> Result<Vec<u8>, String>;

inventory::collect!(TaskEntry);

impl TaskEntry {
    #[doc(hidden)]
    pub const fn __new(
        name: &'static str,
        func: fn() -> Box<dyn Any + Send>,
        run: ErasedRun,
        arg_type: fn() -> &'static str,
        result_type: fn() -> &'static str,
        refs: fn() -> crate::pool::TaskRefs,
    ) -> TaskEntry {
        TaskEntry {
            name,
            func,
            run,
            arg_type,
            result_type,
            refs,
        }
    }

    /// The task as a pool call in this process.
    pub(crate) fn refs(&self) -> crate::pool::TaskRefs {
        (self.refs)()
    }

    /// The task's name: `module::path::function`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The argument's type name (`std::any::type_name`; a tuple for a task of two arguments).
    pub fn arg_type(&self) -> &'static str {
        (self.arg_type)()
    }

    /// The result's type name.
    pub fn result_type(&self) -> &'static str {
        (self.result_type)()
    }

    /// Runs the task on a postcard-encoded argument and returns its postcard-encoded result
    /// (for a worker that gets tasks by name from elsewhere). A panic unwinds.
    ///
    /// # Errors
    ///
    /// A message when the argument does not decode or the result does not encode.
    pub fn run_encoded(&self, arg: &[u8]) -> Result<Vec<u8>, String> {
        (self.run)(arg)
    }
}

impl fmt::Debug for TaskEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskEntry")
            .field("name", &self.name)
            .field("arg_type", &self.arg_type())
            .field("result_type", &self.result_type())
            .finish()
    }
}

/// Every task registered with [`task!`](crate::task) in this program, in no set order.
pub fn registered_tasks() -> impl Iterator<Item = &'static TaskEntry> {
    inventory::iter::<TaskEntry>.into_iter()
}

/// The registered task `name` (`module::path::function`, as [`task!`](crate::task) names
/// it) as a plain function, ready for [`Pool::apply`](crate::Pool::apply),
/// [`Process::task`](crate::Process::task) and the rest.
///
/// ```
/// baozi_process::task! {
///     /// Steams a basket.
///     fn steam(minutes: u32) -> String {
///         format!("steamed {minutes} min")
///     }
/// }
///
/// let name = format!("{}::steam", module_path!());
/// let f = baozi_process::lookup_task::<u32, String>(&name)?;
/// assert_eq!(f(8), "steamed 8 min");
/// assert!(baozi_process::lookup_task::<i64, String>(&name).is_err()); // other types
/// # Ok::<(), baozi_process::ProcessError>(())
/// ```
///
/// # Errors
///
/// [`ProcessError::Invalid`] when no task has that name, or when it takes or returns other
/// types than `A` and `R` (both named in the message).
pub fn lookup_task<A: 'static, R: 'static>(name: &str) -> Result<fn(A) -> R, ProcessError> {
    let entry =
        registered_tasks()
            .find(|t| t.name == name)
            .ok_or_else(|| ProcessError::Invalid {
                what: format!("no task is registered as {name:?} (see baozi_process::task!)"),
            })?;
    match (entry.func)().downcast::<fn(A) -> R>() {
        Ok(f) => Ok(*f),
        Err(_) => Err(ProcessError::Invalid {
            what: format!(
                "task {name} is fn({}) -> {}, not fn({}) -> {}",
                entry.arg_type(),
                entry.result_type(),
                std::any::type_name::<A>(),
                std::any::type_name::<R>()
            ),
        }),
    }
}

#[doc(hidden)]
pub fn __run_erased2<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    f: fn(A, B) -> R,
    arg: &[u8],
) -> Result<Vec<u8>, String> {
    let (a, b) = postcard::from_bytes::<(A, B)>(arg)
        .map_err(|e| format!("the task's argument did not decode: {e}"))?;
    postcard::to_allocvec(&f(a, b)).map_err(|e| format!("the task's result did not encode: {e}"))
}

#[doc(hidden)]
pub fn __run_erased<A: DeserializeOwned, R: Serialize>(
    f: fn(A) -> R,
    arg: &[u8],
) -> Result<Vec<u8>, String> {
    let a = postcard::from_bytes::<A>(arg)
        .map_err(|e| format!("the task's argument did not decode: {e}"))?;
    postcard::to_allocvec(&f(a)).map_err(|e| format!("the task's result did not encode: {e}"))
}

/// Defines a plain function and registers it by name at link time (Python's functions found
/// by their qualified name in a spawned child). The function is an ordinary `fn` (one
/// argument: use a tuple pattern for several; serde argument and result), usable as any
/// other; the registry adds [`lookup_task`](crate::lookup_task) by name
/// (`module::path::function`) and [`registered_tasks`](crate::registered_tasks).
///
/// ```
/// baozi_process::task! {
///     pub fn add((a, b): (i32, i32)) -> i32 { a + b }
/// }
///
/// let pool = baozi_process::Pool::new(2)?;
/// assert_eq!(pool.apply(add, (2, 3))?, 5);
/// # Ok::<(), baozi_process::ProcessError>(())
/// ```
///
/// A task of two arguments (for [`Pool::starmap`](crate::Pool::starmap)) is registered the
/// same way; its argument type is the pair:
///
/// ```
/// baozi_process::task! {
///     pub fn mul(a: i32, b: i32) -> i32 { a * b }
/// }
/// assert_eq!(mul(6, 7), 42);
/// ```
///
/// Any start method can run any plain function of the program (they cross by their place
/// in the executable); the name is what a worker elsewhere (another build, another machine)
/// finds a task by: a pool on a remote backend (baozi-redis's `RedisWorkers`) runs only
/// registered tasks.
#[macro_export]
macro_rules! task {
    ($(#[$attr:meta])* $vis:vis fn $name:ident ($arg:tt : $ty:ty) -> $ret:ty $body:block) => {
        $(#[$attr])* $vis fn $name($arg: $ty) -> $ret $body
        $crate::__private::inventory::submit! {
            $crate::TaskEntry::__new(
                ::core::concat!(::core::module_path!(), "::", ::core::stringify!($name)),
                || -> ::std::boxed::Box<dyn ::std::any::Any + ::core::marker::Send> {
                    ::std::boxed::Box::new($name as fn($ty) -> $ret)
                },
                |bytes| $crate::__private::run_erased($name as fn($ty) -> $ret, bytes),
                ::std::any::type_name::<$ty>,
                ::std::any::type_name::<$ret>,
                || $crate::__private::unary_refs($name as fn($ty) -> $ret),
            )
        }
    };
    ($(#[$attr:meta])* $vis:vis fn $name:ident ($a:tt : $ta:ty, $b:tt : $tb:ty $(,)?) -> $ret:ty $body:block) => {
        $(#[$attr])* $vis fn $name($a: $ta, $b: $tb) -> $ret $body
        $crate::__private::inventory::submit! {
            $crate::TaskEntry::__new(
                ::core::concat!(::core::module_path!(), "::", ::core::stringify!($name)),
                || -> ::std::boxed::Box<dyn ::std::any::Any + ::core::marker::Send> {
                    ::std::boxed::Box::new($name as fn($ta, $tb) -> $ret)
                },
                |bytes| $crate::__private::run_erased2($name as fn($ta, $tb) -> $ret, bytes),
                ::std::any::type_name::<($ta, $tb)>,
                ::std::any::type_name::<$ret>,
                || $crate::__private::binary_refs($name as fn($ta, $tb) -> $ret),
            )
        }
    };
    ($(#[$attr:meta])* $vis:vis fn $name:ident ($arg:tt : $ty:ty) $body:block) => {
        $crate::task! { $(#[$attr])* $vis fn $name($arg: $ty) -> () $body }
    };
}
