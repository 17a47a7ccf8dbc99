//! The parent's side of the pool: which task is where, and what happens when a worker dies.
//!
//! Every task the parent accepts is, at any moment, in exactly one place: `pending` (not yet
//! given to a worker), some live slot's `assigned` list (in its inbox, or taken and running),
//! or settled (`done`, or handed to its caller). Tasks move only under the state lock, and only
//! the parent moves them, so the accounting needs no cooperation from a worker that may be
//! killed at any instant:
//!
//! * a worker's result commits with one put into the results queue, which is robust to a
//!   producer killed mid-put: either the whole result is there, or none of it;
//! * the spawner reports a worker's exit after reaping it, through the same FIFO queue, so the
//!   parent has read every result the worker committed before it learns of the death;
//! * the dead worker's inbox is then drained: what is still there was never taken and goes back
//!   to the front of `pending`. The rest of its `assigned` list, neither settled nor in the
//!   inbox, is exactly what it had taken and not finished: those tasks, and only those, fail
//!   with [`ProcessError::WorkerDied`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::backend::{Give, PoolBackend, PoolEnd};
use super::call::Call;
use super::proto::{self, Event, Failure, TaskMsg};
use crate::error::ProcessError;
use crate::start::{FnRef, StartMethod};

/// Tasks given to one worker at a time: one running and one waiting in its inbox, so a worker
/// never idles while the parent's result thread wakes up.
pub(crate) const INBOX_DEPTH: usize = 2;

/// Workers per slot that may die in a row without finishing a task before the pool gives up.
const FRUITLESS_EXITS_PER_SLOT: usize = 10;

/// The pool's life: Running → Closed → (joined), or → Terminated / Broken at any time.
#[derive(Clone, Debug)]
pub(crate) enum Phase {
    Running,
    Closed,
    Terminated,
    Broken(String),
}

/// The tasks of one call (`apply_async`, `map_async`, a chunk of `imap`): contiguous ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchId {
    pub(crate) first: u64,
    pub(crate) len: u64,
}

/// How far a call's tasks have come.
#[derive(Debug)]
struct Batch {
    len: u64,
    remaining: u64,
    /// One of its tasks failed. The call is still handed over only once every task has
    /// settled, as Python's `MapResult` does: no task of a returned call is still running.
    failed: bool,
    /// Its caller is gone: results are dropped as they come.
    abandoned: bool,
}

/// A settled call's encoded results (one `Vec` of results per task), or its first failure.
pub(crate) type Chunks = Result<Vec<Vec<u8>>, ProcessError>;

/// What runs when a call settles: gets the call's encoded results.
pub(crate) struct Callback(pub(crate) Box<dyn FnOnce(Chunks) + Send>);

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback")
    }
}

/// One worker place. A slot keeps its inbox across the workers that fill it in turn.
#[derive(Debug)]
enum Slot {
    /// The spawner was asked for a worker.
    Starting,
    Live {
        pid: i32,
        /// Its generation: which inbox of the slot is its own (remote backends).
        gen: u64,
        /// Tasks it may still be given (`maxtasksperchild`).
        budget: Option<usize>,
        /// Tasks given to it and not settled, in the order given.
        assigned: Vec<u64>,
        /// It was sent `Stop`.
        stopping: bool,
        /// Tasks it has finished.
        finished: usize,
    },
    /// Empty for good.
    Final,
}

/// What the parent knows; behind [`Shared::state`].
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) phase: Phase,
    next_task: u64,
    pending: VecDeque<(u64, Vec<u8>)>,
    slots: Vec<Slot>,
    /// Accepted and not settled.
    in_flight: HashSet<u64>,
    /// Settled, waiting for their caller.
    done: HashMap<u64, Result<Vec<u8>, ProcessError>>,
    /// The calls (one per `submit`) whose results a caller may still take, by first task.
    batches: BTreeMap<u64, Batch>,
    /// Callbacks waiting for their call to settle, by its first task.
    callbacks: HashMap<u64, (BatchId, Callback)>,
    /// Calls with a callback that have settled: the result thread runs them.
    due: Vec<u64>,
    /// Where workers come from; `None` once they were told to end.
    workers: Option<Arc<dyn PoolBackend>>,
    /// The pool re-runs a task whose worker died instead of failing it: the message of each
    /// task given to a worker is kept until it settles.
    idempotent: bool,
    /// Messages of tasks given to workers (only when `idempotent`).
    retained: HashMap<u64, Vec<u8>>,
    maxtasksperchild: Option<usize>,
    /// Workers that died in a row without finishing a task: past a bound, respawning is
    /// pointless (CPython respawns such workers for ever).
    fruitless_exits: usize,
    /// Slots whose first worker the spawner has not reported yet (started or failed):
    /// [`Pool::new`](super::Pool::new) waits for none to be left.
    first_reports: Vec<bool>,
    /// The first fork that failed while the pool was being made: `(errno, message)`.
    startup_failure: Option<(i32, String)>,
    /// Tells the result thread to leave.
    pub(crate) quit: bool,
    /// Something a waiter may be waiting for happened (a call settled, a slot ended): the
    /// result thread wakes the waiters. Results that settle nothing wake nobody.
    pub(super) wake: bool,
    /// Calls found portable (spawn and forkserver pools check each call once).
    portable: HashSet<(FnRef, FnRef)>,
}

/// The state, the queues, and the workers' keeper, shared by the pool, its results and its
/// thread.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    pub(crate) workers: Arc<dyn PoolBackend>,
    /// The process that made the pool: only it may stop it.
    owner: crate::sys::Pid,
    /// How the workers were started: with spawn or forkserver, a call must be portable.
    method: StartMethod,
}

impl Shared {
    pub(crate) fn new(
        n: usize,
        workers: Arc<dyn PoolBackend>,
        maxtasksperchild: Option<usize>,
        idempotent: bool,
        method: StartMethod,
    ) -> Shared {
        Shared {
            state: Mutex::new(State {
                phase: Phase::Running,
                next_task: 0,
                pending: VecDeque::new(),
                slots: (0..n).map(|_| Slot::Starting).collect(),
                in_flight: HashSet::new(),
                done: HashMap::new(),
                batches: BTreeMap::new(),
                callbacks: HashMap::new(),
                due: Vec::new(),
                workers: Some(Arc::clone(&workers)),
                idempotent,
                retained: HashMap::new(),
                maxtasksperchild,
                fruitless_exits: 0,
                first_reports: vec![false; n],
                startup_failure: None,
                quit: false,
                wake: false,
                portable: HashSet::new(),
            }),
            changed: Condvar::new(),
            workers,
            owner: crate::sys::getpid(),
            method,
        }
    }

    /// `Ok` in the process that made the pool. A copy of the pool carried into a forked child
    /// has no result thread and shares the workers' queues: using it there would hang or steal
    /// the parent's work, so it is refused.
    pub(crate) fn owned(&self) -> Result<(), ProcessError> {
        if crate::sys::getpid() == self.owner {
            Ok(())
        } else {
            Err(ProcessError::Invalid {
                what: format!(
                    "this pool belongs to process {}; a forked copy of it cannot be used",
                    self.owner
                ),
            })
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes everyone waiting for a change (call after releasing the lock).
    pub(crate) fn notify(&self) {
        self.changed.notify_all();
    }

    /// Waits until `until(state)` holds or `deadline` passes; returns the guard and whether it
    /// holds.
    pub(crate) fn wait_until<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        deadline: Option<Instant>,
        mut until: impl FnMut(&State) -> bool,
    ) -> (MutexGuard<'a, State>, bool) {
        if self.owned().is_err() {
            // Nothing would ever wake a forked copy: answer at once.
            let now = until(&st);
            return (st, now);
        }
        loop {
            if until(&st) {
                return (st, true);
            }
            st = match deadline {
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let Some(left) = d.checked_duration_since(Instant::now()) else {
                        return (st, false);
                    };
                    if left.is_zero() {
                        return (st, false);
                    }
                    self.changed
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Waits until the spawner has reported every slot's first worker (as Python's `Pool()`
    /// starts its workers before it returns), or the pool has ended. The error is the first
    /// fork that failed. A pool broken meanwhile for another reason (an initializer that
    /// panicked, the spawner's death) is returned as it is: it says so on every use, as it
    /// would have a moment later.
    pub(crate) fn wait_started(&self) -> Result<(), ProcessError> {
        let st = self.lock();
        let (st, _) = self.wait_until(st, None, |st| {
            st.first_reports.iter().all(|&r| r) || !matches!(st.phase, Phase::Running)
        });
        match &st.startup_failure {
            None => Ok(()),
            Some((errno, _)) if *errno != 0 => Err(ProcessError::Fork(
                std::io::Error::from_raw_os_error(*errno),
            )),
            Some((_, message)) => Err(ProcessError::PoolSetup {
                what: "start a worker",
                source: message.clone().into(),
            }),
        }
    }

    /// Accepts `chunks` (each an encoded `Vec` of arguments) as tasks running `call`, and gives
    /// what it can to idle workers. Returns the call's tasks.
    pub(crate) fn submit(&self, call: Call, chunks: Vec<Vec<u8>>) -> Result<BatchId, ProcessError> {
        self.owned()?;
        let name = if self.workers.by_name() {
            Some(super::backend::name_of(&call)?)
        } else {
            None
        };
        let mut st = self.lock();
        st.accepting()?;
        if name.is_none()
            && self.method != StartMethod::Fork
            && !st.portable.contains(&(call.trampoline, call.func))
        {
            if !call.portable() {
                return Err(ProcessError::NeedsFork {
                    what: "a function outside the program's executable (a shared library)".into(),
                    method: self.method,
                });
            }
            st.portable.insert((call.trampoline, call.func));
        }
        let max = self.workers.max_task_len();
        let first = st.next_task;
        let mut msgs = Vec::with_capacity(chunks.len());
        for (i, args) in chunks.into_iter().enumerate() {
            let task = first + i as u64;
            let bytes = proto::encode(&match name {
                Some(name) => TaskMsg::RunNamed {
                    task,
                    name: name.into(),
                    arg_type: call.arg_type.into(),
                    result_type: call.result_type.into(),
                    args,
                },
                None => TaskMsg::Run {
                    task,
                    trampoline: call.trampoline,
                    func: call.func,
                    args,
                },
            });
            if bytes.len() > max {
                return Err(ProcessError::TaskTooLarge {
                    len: bytes.len(),
                    max,
                });
            }
            msgs.push((task, bytes));
        }
        let len = msgs.len() as u64;
        st.next_task += len;
        st.in_flight.extend(first..first + len);
        if len > 0 {
            st.batches.insert(
                first,
                Batch {
                    len,
                    remaining: len,
                    failed: false,
                    abandoned: false,
                },
            );
        }
        st.pending.extend(msgs);
        st.dispatch(self);
        Ok(BatchId { first, len })
    }
}

impl State {
    /// Whether new tasks are accepted; the error says why not.
    pub(crate) fn accepting(&self) -> Result<(), ProcessError> {
        match &self.phase {
            Phase::Running => Ok(()),
            Phase::Closed => Err(ProcessError::PoolClosed),
            Phase::Terminated => Err(ProcessError::PoolTerminated),
            Phase::Broken(reason) => Err(ProcessError::PoolBroken {
                reason: reason.clone(),
            }),
        }
    }

    /// The error that ends a task the pool will never run.
    fn ending_error(&self) -> ProcessError {
        match &self.phase {
            Phase::Broken(reason) => ProcessError::PoolBroken {
                reason: reason.clone(),
            },
            _ => ProcessError::PoolTerminated,
        }
    }

    /// Whether every slot is empty for good (what `join` waits for).
    pub(crate) fn all_final(&self) -> bool {
        self.slots.iter().all(|s| matches!(s, Slot::Final))
    }

    /// Whether the call can be handed over: every one of its tasks has settled (done, failed,
    /// or failed for it by a dead worker or the pool's end). A failure does not hand the call
    /// over early: the caller of a `map` that fails must not find its other tasks still running.
    pub(crate) fn settled(&self, id: BatchId) -> bool {
        self.batches
            .get(&id.first)
            .map_or(true, |b| b.remaining == 0)
    }

    /// Whether one of the call's tasks failed.
    pub(crate) fn failed(&self, id: BatchId) -> bool {
        self.batches.get(&id.first).is_some_and(|b| b.failed)
    }

    /// The pids of the workers alive now, by slot.
    pub(crate) fn worker_pids(&self) -> Vec<i32> {
        self.slots
            .iter()
            .filter_map(|s| match s {
                Slot::Live { pid, .. } => Some(*pid),
                _ => None,
            })
            .collect()
    }

    /// Takes the results of a settled call, in task order. When a task has failed, the first
    /// failure in task (input) order is returned and the other results are dropped.
    pub(crate) fn take(&mut self, id: BatchId) -> Chunks {
        let tasks = id.first..id.first + id.len;
        if id.len == 0 {
            return Ok(Vec::new());
        }
        let Some(batch) = self.batches.get(&id.first) else {
            return Err(ProcessError::PoolBroken {
                reason: format!("the results of tasks {tasks:?} were already taken"),
            });
        };
        if batch.failed {
            let first_failure = tasks
                .clone()
                .find(|t| matches!(self.done.get(t), Some(Err(_))));
            let e = match first_failure.and_then(|t| self.done.remove(&t)) {
                Some(Err(e)) => e,
                _ => unreachable!("a failed call has a failed task"),
            };
            self.abandon(id);
            return Err(e);
        }
        debug_assert_eq!(batch.remaining, 0, "taken before it settled");
        let out = tasks
            .filter_map(|t| match self.done.remove(&t) {
                Some(Ok(bytes)) => Some(bytes),
                _ => None,
            })
            .collect();
        self.batches.remove(&id.first);
        Ok(out)
    }

    /// Registers `callback` for a call that has not settled; the result thread runs it when it
    /// does.
    pub(crate) fn on_settled(&mut self, id: BatchId, callback: Callback) {
        self.callbacks.insert(id.first, (id, callback));
    }

    /// The callbacks whose calls have settled, each with its call's results.
    pub(super) fn take_due(&mut self) -> Vec<(Callback, Chunks)> {
        let mut out = Vec::new();
        for first in std::mem::take(&mut self.due) {
            if let Some((id, cb)) = self.callbacks.remove(&first) {
                let r = self.take(id);
                out.push((cb, r));
            }
        }
        out
    }

    /// Lets a call go: drops its results, now and as its tasks settle.
    pub(crate) fn abandon(&mut self, id: BatchId) {
        let Some(batch) = self.batches.get_mut(&id.first) else {
            return;
        };
        for t in id.first..id.first + id.len {
            self.done.remove(&t);
        }
        if batch.remaining == 0 {
            self.batches.remove(&id.first);
        } else {
            batch.abandoned = true;
        }
    }

    fn settle(&mut self, task: u64, result: Result<Vec<u8>, ProcessError>) {
        self.retained.remove(&task);
        if !self.in_flight.remove(&task) {
            return; // already failed (terminate, broken pool): a late result changes nothing
        }
        let Some((&first, batch)) = self.batches.range_mut(..=task).next_back() else {
            return;
        };
        debug_assert!(task < first + batch.len);
        batch.remaining -= 1;
        self.wake |= batch.remaining == 0;
        batch.failed |= result.is_err();
        if batch.remaining == 0 && self.callbacks.contains_key(&first) && !self.due.contains(&first)
        {
            self.due.push(first);
        }
        if !batch.abandoned {
            self.done.insert(task, result);
        } else if batch.remaining == 0 {
            self.batches.remove(&first);
        }
    }

    /// Fails every task not settled yet with the phase's ending error.
    fn fail_all(&mut self) {
        self.pending.clear();
        self.retained.clear();
        for s in &mut self.slots {
            if let Slot::Live { assigned, .. } = s {
                assigned.clear();
            }
        }
        let tasks: Vec<u64> = self.in_flight.iter().copied().collect();
        for t in tasks {
            let e = self.ending_error();
            self.settle(t, Err(e));
        }
    }

    /// Asks for every slot's first worker.
    pub(crate) fn spawn_all(&mut self) {
        for slot in 0..self.slots.len() {
            self.start_worker(slot as u32);
        }
    }

    fn start_worker(&mut self, slot: u32) {
        if !matches!(self.phase, Phase::Running | Phase::Closed) {
            return;
        }
        let ok = self.workers.as_ref().is_some_and(|w| w.start(slot));
        if !ok && matches!(self.phase, Phase::Running | Phase::Closed) {
            let reason = self
                .why_lost()
                .unwrap_or_else(|| "the pool's spawner process stopped taking requests".into());
            self.break_pool(reason);
        }
    }

    /// Why the workers' starter is gone, once it is seen gone: a refused request means it is
    /// exiting (its end of the request pipe closes before its exit is visible), so this waits a
    /// moment for the exit, whose cause (a missing main guard, a death) is the useful reason.
    fn why_lost(&self) -> Option<String> {
        let workers = self.workers.as_ref()?;
        let t = Instant::now();
        loop {
            if let Some(why) = workers.lost() {
                return Some(why);
            }
            if t.elapsed() > std::time::Duration::from_millis(200) {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Puts the pool out of service: fails every unsettled task, stops every worker.
    pub(crate) fn break_pool(&mut self, reason: String) {
        if matches!(self.phase, Phase::Terminated | Phase::Broken(_)) {
            return;
        }
        self.phase = Phase::Broken(reason);
        self.finish(PoolEnd::Kill);
    }

    /// `terminate`: fails every unsettled task, kills every worker.
    pub(crate) fn terminate(&mut self) {
        if matches!(self.phase, Phase::Terminated | Phase::Broken(_)) {
            return;
        }
        self.phase = Phase::Terminated;
        self.finish(PoolEnd::Kill);
    }

    /// Ends the workers as `how` says and marks every slot final.
    pub(crate) fn finish(&mut self, how: PoolEnd) {
        self.fail_all();
        if let Some(w) = self.workers.take() {
            w.end(how);
        }
        for s in &mut self.slots {
            *s = Slot::Final;
        }
        self.wake = true;
    }

    /// `close`: no new tasks; workers stop once everything accepted has run.
    pub(crate) fn close(&mut self, shared: &Shared) {
        if matches!(self.phase, Phase::Running) {
            self.phase = Phase::Closed;
        }
        self.dispatch(shared);
    }

    /// Gives pending tasks to live workers with room, least loaded first; after `close`, tells
    /// idle workers to stop once nothing is pending.
    pub(super) fn dispatch(&mut self, shared: &Shared) {
        while !self.pending.is_empty() {
            let best = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match s {
                    Slot::Live {
                        budget,
                        assigned,
                        stopping: false,
                        ..
                    } if assigned.len() < INBOX_DEPTH && *budget != Some(0) => {
                        Some((assigned.len(), i))
                    }
                    _ => None,
                })
                .min();
            let Some((_, i)) = best else { break };
            let (task, bytes) = self.pending.pop_front().expect("not empty");
            if !self.give(shared, i, task, bytes) {
                // Out of ring bytes (two large tasks): wait for this worker's next result.
                break;
            }
        }
        if self.pending.is_empty() {
            self.steal_for_idle(shared);
        }
        if matches!(self.phase, Phase::Closed) && self.pending.is_empty() {
            let mut failed = None;
            for (i, s) in self.slots.iter_mut().enumerate() {
                match s {
                    Slot::Live {
                        assigned,
                        stopping,
                        gen,
                        ..
                    } if assigned.is_empty() && !*stopping => {
                        match shared
                            .workers
                            .give(i as u32, *gen, proto::encode(&TaskMsg::Stop))
                        {
                            Ok(()) => *stopping = true,
                            Err(Give::Full(_)) => {}
                            Err(Give::Failed(why)) => failed = Some(why),
                        }
                    }
                    // A remote slot still waiting for a worker: nothing is left for it.
                    Slot::Starting if shared.workers.withdraw(i as u32) => *s = Slot::Final,
                    _ => {}
                }
            }
            if let Some(why) = failed {
                self.break_pool(why);
            }
        }
    }

    /// Moves tasks still waiting in a busy worker's inbox to idle workers, so a short task does
    /// not wait behind a long one while a worker idles (the inbox's second place is only a
    /// prefetch). The queue decides races: whatever the parent takes out, the worker did not.
    fn steal_for_idle(&mut self, shared: &Shared) {
        let takes_work = |s: &Slot| {
            matches!(s, Slot::Live { budget, assigned, stopping: false, .. }
                if assigned.is_empty() && *budget != Some(0))
        };
        let mut tried = vec![false; self.slots.len()];
        loop {
            let Some(idle) = self.slots.iter().position(takes_work) else {
                return;
            };
            let busy = self.slots.iter().enumerate().position(|(j, s)| {
                !tried[j] && matches!(s, Slot::Live { assigned, .. } if assigned.len() >= 2)
            });
            let Some(busy) = busy else { return };
            tried[busy] = true;
            // The oldest message in a busy inbox is the task queued behind the running one;
            // Empty means the worker has taken it meanwhile.
            let Slot::Live { gen, .. } = self.slots[busy] else {
                continue;
            };
            let bytes = match shared.workers.take_back(busy as u32, gen) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                Err(why) => return self.break_pool(why),
            };
            let Some(task) = task_of(&bytes) else {
                continue; // never: a Stop goes only to a worker with nothing assigned
            };
            if let Slot::Live {
                budget, assigned, ..
            } = &mut self.slots[busy]
            {
                assigned.retain(|&t| t != task);
                if let Some(b) = budget {
                    *b += 1;
                }
            }
            if !self.give(shared, idle, task, bytes) {
                return;
            }
        }
    }

    /// Puts a task in slot `i`'s inbox and records it there; `false` (the task back at the
    /// front of `pending`) when the inbox has no room.
    fn give(&mut self, shared: &Shared, i: usize, task: u64, bytes: Vec<u8>) -> bool {
        let Slot::Live { gen, .. } = self.slots[i] else {
            self.pending.push_front((task, bytes));
            return false;
        };
        let kept = self.idempotent.then(|| bytes.clone());
        match shared.workers.give(i as u32, gen, bytes) {
            Ok(()) => {
                if let Slot::Live {
                    budget, assigned, ..
                } = &mut self.slots[i]
                {
                    assigned.push(task);
                    if let Some(b) = budget {
                        *b -= 1;
                    }
                }
                if let Some(kept) = kept {
                    self.retained.insert(task, kept);
                }
                true
            }
            Err(Give::Full(bytes)) => {
                self.pending.push_front((task, bytes));
                false
            }
            Err(Give::Failed(why)) => {
                self.break_pool(why);
                false
            }
        }
    }

    /// Takes one event from the results queue into account.
    pub(super) fn on_event(&mut self, shared: &Shared, event: Event) {
        if matches!(self.phase, Phase::Terminated | Phase::Broken(_)) {
            return;
        }
        // Only a result can leave every waiter's condition as it was.
        self.wake |= !matches!(event, Event::Done { .. });
        match event {
            Event::Done {
                slot,
                task,
                outcome,
            } => {
                if let Some(Slot::Live {
                    assigned, finished, ..
                }) = self.slots.get_mut(slot as usize)
                {
                    assigned.retain(|&t| t != task);
                    *finished += 1;
                }
                self.fruitless_exits = 0;
                let result = outcome.map_err(|f| match f {
                    Failure::Panicked {
                        message,
                        location,
                        backtrace,
                    } => ProcessError::TaskPanicked {
                        message,
                        location,
                        backtrace,
                    },
                    Failure::Encode(m) => ProcessError::Encode(m),
                    Failure::Decode(m) => ProcessError::Decode(m),
                    Failure::ResultTooLarge { len, max } => {
                        ProcessError::ResultTooLarge { len, max }
                    }
                    Failure::Missing(what) => ProcessError::Invalid { what },
                });
                self.settle(task, result);
            }
            Event::Started { slot, pid, gen } => {
                if let Some(r) = self.first_reports.get_mut(slot as usize) {
                    *r = true;
                }
                if let Some(s @ Slot::Starting) = self.slots.get_mut(slot as usize) {
                    *s = Slot::Live {
                        pid,
                        gen,
                        budget: self.maxtasksperchild,
                        assigned: Vec::new(),
                        stopping: false,
                        finished: 0,
                    };
                }
            }
            Event::SpawnFailed { slot, error, errno } => {
                if let Some(r) = self.first_reports.get_mut(slot as usize) {
                    if !*r && self.startup_failure.is_none() {
                        self.startup_failure = Some((errno, error.clone()));
                    }
                    *r = true;
                }
                // Later (a replacement): the slot stays empty and the pool runs on with the
                // workers it has; with none left, it breaks (below) rather than wait for ever.
                if let Some(s) = self.slots.get_mut(slot as usize) {
                    *s = Slot::Final;
                }
                let alive = self.slots.iter().any(|s| !matches!(s, Slot::Final));
                let nothing_left = matches!(self.phase, Phase::Closed) && self.pending.is_empty();
                if !(alive || nothing_left) {
                    self.break_pool(format!("no worker is left: the last fork failed ({error})"));
                }
            }
            Event::Exited { slot, pid, code } => {
                self.on_exit(shared, slot as usize, pid, Some(code));
            }
            Event::Lost { slot, pid } => self.on_exit(shared, slot as usize, pid, None),
            Event::InitFailed { pid, message } => self.break_pool(format!(
                "the initializer panicked in worker {pid}: {message}"
            )),
            Event::Wake => {}
        }
    }

    /// A worker is gone: `code` is its exit code in Python's meaning (`-SIG`), `None` when it
    /// was lost (a remote worker's lapsed heartbeat).
    fn on_exit(&mut self, shared: &Shared, slot: usize, pid: i32, code: Option<i32>) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Slot::Live {
            assigned,
            finished,
            gen,
            ..
        } = std::mem::replace(s, Slot::Final)
        else {
            return;
        };
        if finished == 0 && code != Some(0) {
            self.fruitless_exits += 1;
        } else {
            self.fruitless_exits = 0;
        }
        // What is still in its inbox was never taken: back to the front, in order.
        let mut untaken = Vec::new();
        loop {
            match shared.workers.take_back(slot as u32, gen) {
                Ok(Some(bytes)) => {
                    if let Some(task) = task_of(&bytes) {
                        untaken.push((task, bytes));
                    }
                }
                Ok(None) => break,
                Err(why) => return self.break_pool(why),
            }
        }
        let lost: Vec<u64> = assigned
            .into_iter()
            .filter(|t| !untaken.iter().any(|(u, _)| u == t))
            .collect();
        for (task, bytes) in untaken.into_iter().rev() {
            self.pending.push_front((task, bytes));
        }
        for task in lost {
            // An idempotent pool runs the task again, first.
            if let Some(bytes) = self.retained.remove(&task) {
                self.pending.push_front((task, bytes));
                continue;
            }
            let e = ProcessError::WorkerDied {
                pid,
                signal: code.filter(|c| *c < 0).map(|c| -c),
                exit_status: code.filter(|c| *c >= 0),
            };
            self.settle(task, Err(e));
        }
        if self.fruitless_exits > FRUITLESS_EXITS_PER_SLOT * self.slots.len() {
            let n = self.fruitless_exits;
            self.break_pool(format!(
                "workers keep dying before they finish a task ({n} in a row, the last, pid {pid}, with exit code {})",
                code.map_or("unknown (lost)".into(), |c| c.to_string())
            ));
            return;
        }
        let respawn = match self.phase {
            Phase::Running => true,
            Phase::Closed => !self.pending.is_empty(),
            _ => false,
        };
        if respawn {
            self.slots[slot] = Slot::Starting;
            self.start_worker(slot as u32);
        }
    }
}

/// The task id of a task message (`None` for `Stop`).
fn task_of(bytes: &[u8]) -> Option<u64> {
    match proto::decode::<TaskMsg>(bytes)? {
        TaskMsg::Run { task, .. } | TaskMsg::RunNamed { task, .. } => Some(task),
        TaskMsg::Stop => None,
    }
}
