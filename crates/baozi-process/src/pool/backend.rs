//! How a pool's workers are started and reached: the one seam between what the pool *decides*
//! (`parent.rs`: which task is where, results, deaths, replacements) and the processes that do
//! the work.
//!
//! The parent's bookkeeping talks to its workers only through [`PoolBackend`]: it asks for a
//! worker in a slot, puts task messages in a slot's inbox (and takes back those not taken
//! yet), and reads one FIFO stream of events: a worker started (or could not), finished a task,
//! or exited. The shared-memory backend (`shm.rs`) keeps the inboxes and the event stream in
//! shared-memory queues and its workers under a spawner process; a backend whose workers live
//! elsewhere (baozi-redis's `RedisWorkers`: any number of hosts around one Redis) implements
//! the same trait, and the whole [`Pool`](crate::Pool) API, with its accounting of dead
//! workers, runs unchanged on it.
//!
//! A backend sees only bytes. What a remote worker does with them is [`serve_task`]: decode
//! the task message, run the task by name (the [`task!`](crate::task) registry), and return
//! the event to send back.

use std::fmt;
use std::time::Duration;

use super::call::{invoke, Call};
use super::proto::{self, Event, Failure, TaskMsg};
use crate::start::FnRef;

/// How the workers are ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolEnd {
    /// Stop them now (`terminate`, a broken pool): local workers are SIGKILLed; remote ones
    /// drop the pool.
    Kill,
    /// They were all told to stop (`close` then `join`): let them finish, then reap them.
    Shutdown,
}

/// Why a task message was not put in an inbox.
#[derive(Debug)]
pub enum Give {
    /// The inbox has no room now: the message comes back, and is offered again after the
    /// slot's next event.
    Full(Vec<u8>),
    /// The backend failed (a lost connection): the pool breaks with this reason.
    Failed(String),
}

/// Where a [`Pool`](crate::Pool)'s workers live, and how task messages and events travel to
/// and from them; given to [`PoolBuilder::backend`](crate::PoolBuilder::backend).
///
/// The contract the parent relies on (its accounting of lost tasks is exact only with it):
///
/// * events come back in one FIFO stream ([`next_event`](PoolBackend::next_event)), and the
///   event that says a worker is gone comes *after* every result that worker sent;
/// * a worker takes messages from its slot's inbox oldest first, and a message taken back with
///   [`take_back`](PoolBackend::take_back) was not taken by the worker (the store decides the
///   race atomically);
/// * `gen` tells the successive workers of one slot apart (the `gen` of their start event): a
///   worker never reads another generation's inbox.
///
/// Every method is quick and never waits for a worker, except
/// [`next_event`](PoolBackend::next_event) (at most `wait`) and [`reap`](PoolBackend::reap);
/// all but those two are called under the pool's lock.
pub trait PoolBackend: Send + Sync + fmt::Debug {
    /// Whether tasks must cross by name (registered with [`task!`](crate::task)), because the
    /// workers may run another build of the program, elsewhere. Default: no (by address).
    fn by_name(&self) -> bool {
        false
    }

    /// Whether [`PoolBuilder::build`](crate::PoolBuilder::build) waits until every slot's
    /// first worker has started (as Python's `Pool()` does). Remote workers come when they
    /// come: default yes, `false` for a backend whose workers are started by others.
    fn waits_for_workers(&self) -> bool {
        true
    }

    /// The largest task message an inbox takes.
    fn max_task_len(&self) -> usize;

    /// Asks for a worker in `slot`. Its start event (or its failure) comes later through
    /// [`next_event`](PoolBackend::next_event). `false`: no more workers can be asked for.
    fn start(&self, slot: u32) -> bool;

    /// After `close`, for a slot whose worker has not started: cancels the request. `true`:
    /// cancelled, no worker will come for it; `false`: its start event will still come.
    fn withdraw(&self, _slot: u32) -> bool {
        false
    }

    /// Ends every worker; no worker is started after this.
    fn end(&self, how: PoolEnd);

    /// Why the workers' keeper is gone while the pool still needs it; `None` while it lives.
    fn lost(&self) -> Option<String>;

    /// Waits until the keeper and every worker are gone (after [`end`](PoolBackend::end)).
    fn reap(&self);

    /// Puts a task message in the inbox of `slot`'s worker of generation `gen`.
    ///
    /// # Errors
    ///
    /// [`Give::Full`] with the message when there is no room now; [`Give::Failed`] when the
    /// backend cannot go on.
    fn give(&self, slot: u32, gen: u64, msg: Vec<u8>) -> Result<(), Give>;

    /// Takes the oldest message back out of that inbox, if the worker has not taken it.
    ///
    /// # Errors
    ///
    /// Why the backend cannot go on (the pool breaks).
    fn take_back(&self, slot: u32, gen: u64) -> Result<Option<Vec<u8>>, String>;

    /// The next event, waiting at most `wait`; `None` when none came.
    ///
    /// # Errors
    ///
    /// Why the backend cannot go on (the pool breaks).
    fn next_event(&self, wait: Duration) -> Result<Option<Vec<u8>>, String>;

    /// Sends [`wake_event`] to the event stream (the pool stopping its result thread).
    fn wake(&self);
}

/// The event a worker sends when it takes `slot` (its `pid` on its host, and its generation).
pub fn started_event(slot: u32, pid: i32, gen: u64) -> Vec<u8> {
    proto::encode(&Event::Started { slot, pid, gen })
}

/// The event that a worker of `slot` left cleanly (it was told to stop).
pub fn exited_event(slot: u32, pid: i32) -> Vec<u8> {
    proto::encode(&Event::Exited { slot, pid, code: 0 })
}

/// The event that the worker of `slot` was lost (its heartbeat lapsed): the task it was
/// running fails with [`ProcessError::WorkerDied`](crate::ProcessError::WorkerDied), without a
/// signal or status (they are not known).
pub fn lost_event(slot: u32, pid: i32) -> Vec<u8> {
    proto::encode(&Event::Lost { slot, pid })
}

/// The event that only wakes the pool's result thread.
pub fn wake_event() -> Vec<u8> {
    proto::encode(&Event::Wake)
}

/// What a remote worker does with a message from its inbox ([`serve_task`]).
#[derive(Debug)]
pub enum Served {
    /// It ran a task: send this event back.
    Done(Vec<u8>),
    /// It was told to stop: leave the slot (send [`exited_event`]).
    Stop,
    /// The bytes are not a pool message.
    Garbled,
}

/// In a remote worker of `slot`: runs the task in `msg` by its registered name, catching a
/// panic (its message, place and backtrace go back to the caller as
/// [`ProcessError::TaskPanicked`](crate::ProcessError::TaskPanicked)), and returns the event
/// to send back. A name this program does not register, or registers with other types, fails
/// the task with [`ProcessError::Invalid`](crate::ProcessError::Invalid). Call
/// [`prepare_worker`] once first.
pub fn serve_task(slot: u32, msg: &[u8]) -> Served {
    let (task, outcome) = match proto::decode::<TaskMsg>(msg) {
        Some(TaskMsg::Stop) => return Served::Stop,
        None => return Served::Garbled,
        Some(TaskMsg::Run { task, .. }) => (
            task,
            Err(Failure::Missing(
                "a task by address reached a remote worker (send it by name)".into(),
            )),
        ),
        Some(TaskMsg::RunNamed {
            task,
            name,
            arg_type,
            result_type,
            args,
        }) => (task, run_named(&name, &arg_type, &result_type, &args)),
    };
    Served::Done(proto::encode(&Event::Done {
        slot,
        task,
        outcome,
    }))
}

fn run_named(
    name: &str,
    arg_type: &str,
    result_type: &str,
    args: &[u8],
) -> Result<Vec<u8>, Failure> {
    let pid = std::process::id();
    let Some(entry) = crate::registered_tasks().find(|e| e.name() == name) else {
        return Err(Failure::Missing(format!(
            "no task is registered as {name:?} in worker {pid} (see baozi_process::task!)"
        )));
    };
    if entry.arg_type() != arg_type || entry.result_type() != result_type {
        return Err(Failure::Missing(format!(
            "task {name} is fn({}) -> {} in worker {pid}, but the caller's is fn({arg_type}) -> {result_type}",
            entry.arg_type(),
            entry.result_type()
        )));
    }
    let refs = entry.refs();
    // SAFETY: `refs` was made in this process by the `task!` registration of `name` (from
    // `Call::unary`/`binary` of that very function), which is what `invoke` requires.
    unsafe { invoke(FnRef::new(refs.trampoline), FnRef::new(refs.func), args) }
}

/// In a remote worker, once before [`serve_task`]: a panic hook that records a task's panic
/// place and backtrace for its caller (the hook that was there still prints it).
pub fn prepare_worker() {
    super::call::install_panic_hook(64 << 10);
}

/// The registered name of `call`, for a backend that sends tasks by name.
pub(crate) fn name_of(call: &Call) -> Result<&'static str, crate::ProcessError> {
    crate::registered_tasks()
        .find(|e| {
            e.refs().func == call.func.addr()
                && e.arg_type() == call.arg_type
                && e.result_type() == call.result_type
        })
        .map(|e| e.name())
        .ok_or_else(|| crate::ProcessError::Invalid {
            what: format!(
                "this pool's workers run tasks by name, and this fn({}) -> {} is not registered: define it with baozi_process::task! (a closure cannot cross to another host)",
                call.arg_type, call.result_type
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProcessError;

    crate::task! {
        fn triple(x: u32) -> u32 { x * 3 }
    }

    crate::task! {
        fn sub(a: i64, b: i64) -> i64 { a - b }
    }

    fn unregistered(x: u32) -> u32 {
        x
    }

    fn run(msg: &TaskMsg) -> Result<Vec<u8>, Failure> {
        match serve_task(4, &proto::encode(msg)) {
            Served::Done(ev) => match proto::decode::<Event>(&ev) {
                Some(Event::Done {
                    slot: 4,
                    task: 9,
                    outcome,
                }) => outcome,
                other => panic!("not a Done event of slot 4, task 9: {other:?}"),
            },
            other => panic!("not a result: {other:?}"),
        }
    }

    fn named(call: &Call, args: Vec<u8>) -> TaskMsg {
        TaskMsg::RunNamed {
            task: 9,
            name: name_of(call).unwrap().into(),
            arg_type: call.arg_type.into(),
            result_type: call.result_type.into(),
            args,
        }
    }

    #[test]
    fn a_registered_task_runs_by_name() {
        let args = postcard::to_allocvec(&vec![1u32, 2]).unwrap();
        let out = run(&named(&Call::unary(triple), args)).unwrap();
        assert_eq!(postcard::from_bytes::<Vec<u32>>(&out).unwrap(), [3, 6]);
        let args = postcard::to_allocvec(&vec![(5i64, 7i64)]).unwrap();
        let out = run(&named(&Call::binary(sub), args)).unwrap();
        assert_eq!(postcard::from_bytes::<Vec<i64>>(&out).unwrap(), [-2]);
    }

    #[test]
    fn an_unregistered_function_or_closure_is_refused_by_name() {
        for call in [Call::unary(unregistered), Call::unary(|x: u32| x + 1)] {
            match name_of(&call) {
                Err(ProcessError::Invalid { what }) => assert!(what.contains("task!"), "{what}"),
                other => panic!("expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn an_unknown_name_or_other_types_fail_the_task_not_the_worker() {
        let mut msg = named(
            &Call::unary(triple),
            postcard::to_allocvec(&vec![1u32]).unwrap(),
        );
        if let TaskMsg::RunNamed { name, .. } = &mut msg {
            *name = "no::such::task".into();
        }
        assert!(matches!(run(&msg), Err(Failure::Missing(w)) if w.contains("no::such::task")));
        let mut msg = named(
            &Call::unary(triple),
            postcard::to_allocvec(&vec![1u32]).unwrap(),
        );
        if let TaskMsg::RunNamed { arg_type, .. } = &mut msg {
            *arg_type = "u64".into();
        }
        assert!(matches!(run(&msg), Err(Failure::Missing(w)) if w.contains("u64")));
        assert!(matches!(
            serve_task(0, &proto::encode(&TaskMsg::Stop)),
            Served::Stop
        ));
        assert!(matches!(serve_task(0, &[0xff, 0xff]), Served::Garbled));
    }
}
