//! The program's forkserver (Python's): one spawned, single-threaded run of this program,
//! started on the first [`StartMethod::Forkserver`](super::StartMethod) `Process`, that forks
//! every such child. The children are as clean as spawned ones (forks of a process that never
//! had other threads) and start at the cost of a fork.
//!
//! They are the server's children, not ours, so the server reaps them and reports each exit
//! code on a status socket; the program holds each child's pidfd (passed by the server with
//! `SCM_RIGHTS` before it could be reaped), so it waits for the exit and sends signals without
//! any risk of a reused pid. The server ends when the program's end of its socket closes
//! (the program exited, even by SIGKILL); daemon children die with it (`PR_SET_PDEATHSIG`).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::job::Job;
use crate::error::ProcessError;
use crate::process::Process;
use crate::sys;
use crate::task::TaskJob;

/// What the server needs: its two sockets (inherited fds) and the program's pid.
#[derive(Serialize, Deserialize)]
pub(crate) struct ForkserverJob {
    ctl: i32,
    status: i32,
    parent: sys::Pid,
}

/// The program's side.
struct Client {
    /// Requests (a job memfd) → replies (the pid, and its pidfd).
    ctl: OwnedFd,
    /// Exit codes: `(pid, code)` records.
    status: OwnedFd,
    server: Process,
    /// Exit codes reported and not yet taken.
    codes: HashMap<sys::Pid, i32>,
    /// The status socket reached end-of-file: the server is gone.
    gone: bool,
    /// Which server this is (a new one replaces one that died): a child's code can come only
    /// from the server that forked it.
    generation: u64,
    /// The process that started the server. A fork of it has a copy of this client, which it
    /// must not use (it would share the sockets with its parent): it starts its own server.
    owner: sys::Pid,
}

impl Client {
    /// Takes in every exit code the server has reported.
    fn drain(&mut self) {
        let mut rec = [0u8; 8];
        while !self.gone {
            match sys::recv_msg(&self.status, &mut rec, true) {
                Ok(Some((8, _))) => {
                    let p = i32::from_le_bytes(rec[..4].try_into().expect("4 bytes"));
                    let code = i32::from_le_bytes(rec[4..].try_into().expect("4 bytes"));
                    self.codes.insert(p, code);
                }
                Ok(Some((0, _))) | Err(_) => self.gone = true,
                Ok(Some(_)) => {}
                Ok(None) => break,
            }
        }
    }
}

static CLIENT: Mutex<Option<Client>> = Mutex::new(None);

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn lock() -> std::sync::MutexGuard<'static, Option<Client>> {
    CLIENT.lock().unwrap_or_else(|e| e.into_inner())
}

fn os(op: &'static str) -> impl Fn(std::io::Error) -> ProcessError {
    move |source| ProcessError::Os { op, pid: 0, source }
}

fn start_server() -> Result<Client, ProcessError> {
    let (ctl, ctl_server) = sys::seqpacket_pair().map_err(ProcessError::Fork)?;
    let (status, status_server) = sys::seqpacket_pair().map_err(ProcessError::Fork)?;
    let job = ForkserverJob {
        ctl: ctl_server.as_raw_fd(),
        status: status_server.as_raw_fd(),
        parent: sys::getpid(),
    };
    let keep = [ctl_server.as_raw_fd(), status_server.as_raw_fd()];
    // Not a daemon: PR_SET_PDEATHSIG follows the *thread* that started it, which may end long
    // before the program. It ends when its socket closes instead.
    let server = Process::start_job_with("Forkserver".into(), Job::Forkserver(job), &keep, false)?;
    Ok(Client {
        ctl,
        status,
        server,
        codes: HashMap::new(),
        gone: false,
        generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
        owner: sys::getpid(),
    })
}

/// Stops the program's forkserver, if it runs (Python's forkserver stops at exit): it exits
/// once the children it started have been joined (a daemon child dies with it). The next
/// [`StartMethod::Forkserver`](super::StartMethod) process starts a new one. There is no
/// need to call this before exiting: the server leaves when the program's end of its socket
/// closes. Tests that count their children call it.
pub fn stop_forkserver() {
    let client = lock().take();
    if let Some(c) = client.filter(|c| c.owner == sys::getpid()) {
        drop(c.ctl);
        let _ = c.server.join();
    }
}

/// Has the server fork a child that runs `job`; its pid, pidfd and the server's generation.
pub(crate) fn start_child(job: &TaskJob) -> Result<(sys::Pid, OwnedFd, u64), ProcessError> {
    let bytes = postcard::to_allocvec(job)
        .map_err(|e| ProcessError::Encode(format!("the child's job did not encode: {e}")))?;
    let file = sys::memfd_with(&bytes).map_err(ProcessError::Fork)?;
    let mut client = lock();
    if client.as_ref().map_or(true, |c| {
        c.owner != sys::getpid() || c.gone || !c.server.is_alive()
    }) {
        *client = Some(start_server()?);
    }
    let c = client.as_mut().expect("started above");
    sys::send_msg(&c.ctl, &[1], Some(&file)).map_err(os("ask the forkserver for"))?;
    let mut reply = [0u8; 4];
    let mut ready = Vec::new();
    loop {
        // The server may be blocked reporting exits that nobody has asked about yet (children
        // started and not joined): take those in while waiting, or both would wait for ever.
        let _ = sys::poll_many(&[c.ctl.as_fd(), c.status.as_fd()], None, &mut ready);
        if ready.get(1) == Some(&true) {
            c.drain();
        }
        if ready.first() != Some(&true) {
            continue;
        }
        match sys::recv_msg(&c.ctl, &mut reply, false) {
            Ok(Some((4, fd))) => {
                let pid = i32::from_le_bytes(reply);
                return match fd {
                    Some(pidfd) if pid > 0 => Ok((pid, pidfd, c.generation)),
                    _ => Err(ProcessError::Fork(std::io::Error::from_raw_os_error(
                        -pid.min(-1),
                    ))),
                };
            }
            Ok(Some((n, _))) if n > 0 => continue,
            // End-of-file or a reset: the server is gone.
            _ => {
                c.gone = true;
                // A server that skipped main_guard ran the program's main instead, and left.
                if let Err(e @ ProcessError::MainGuardMissing { .. }) =
                    c.server.join_timeout(std::time::Duration::from_secs(1))
                {
                    return Err(e);
                }
                return Err(ProcessError::Fork(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the forkserver is gone",
                )));
            }
        }
    }
}

/// The exit code of a served child once the server has reaped it; `Ok(None)` before.
pub(crate) fn exit_code(pid: sys::Pid, generation: u64) -> Result<Option<i32>, ProcessError> {
    let mut client = lock();
    let me = sys::getpid();
    let Some(c) = client
        .as_mut()
        .filter(|c| c.generation == generation && c.owner == me)
    else {
        return Err(gone(pid));
    };
    c.drain();
    match c.codes.remove(&pid) {
        Some(code) => Ok(Some(code)),
        None if c.gone => Err(gone(pid)),
        None => Ok(None),
    }
}

fn gone(pid: sys::Pid) -> ProcessError {
    ProcessError::Os {
        op: "learn the exit code of",
        pid,
        source: std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "the forkserver that started it is gone",
        ),
    }
}

/// In the spawned server: forks children on request and reports their exits, until the
/// program's end of the socket closes. Returns the exit code.
pub(crate) fn run_server(job: ForkserverJob) -> i32 {
    let (Ok(ctl), Ok(status)) = (
        sys::inherited_file(job.ctl),
        sys::inherited_file(job.status),
    ) else {
        return 2;
    };
    let (ctl, status) = (OwnedFd::from(ctl), OwnedFd::from(status));
    let parent_fd = sys::pidfd_open(job.parent).ok();
    let mut children: Vec<(sys::Pid, OwnedFd)> = Vec::new();
    let mut ready = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        let mut fds = vec![ctl.as_fd()];
        fds.extend(parent_fd.as_ref().map(|fd| fd.as_fd()));
        let first_child = fds.len();
        fds.extend(children.iter().map(|(_, fd)| fd.as_fd()));
        if sys::poll_many(&fds, None, &mut ready).is_err() {
            continue;
        }
        if parent_fd.is_some() && ready.get(1) == Some(&true) {
            return 0; // the program died: daemon children die with this server
        }
        let exited: Vec<usize> = (0..children.len())
            .filter(|&i| ready.get(first_child + i) == Some(&true))
            .collect();
        for &i in exited.iter().rev() {
            let (pid, _) = children.swap_remove(i);
            let code = sys::reap_blocking(pid).unwrap_or(-libc::SIGKILL);
            let mut rec = [0u8; 8];
            rec[..4].copy_from_slice(&pid.to_le_bytes());
            rec[4..].copy_from_slice(&code.to_le_bytes());
            let _ = sys::send_msg(&status, &rec, None);
        }
        if ready.first() != Some(&true) {
            continue;
        }
        let Ok(Some((n, job_fd))) = sys::recv_msg(&ctl, &mut buf, false) else {
            return 0;
        };
        if n == 0 {
            return 0; // the program closed its end
        }
        let reply = match job_fd {
            Some(job_fd) => fork_child(&ctl, &status, job_fd),
            None => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        };
        let sent = match reply {
            Ok((pid, pidfd)) => {
                let s = sys::send_msg(&ctl, &pid.to_le_bytes(), Some(&pidfd));
                children.push((pid, pidfd));
                s
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                sys::send_msg(&ctl, &(-errno).to_le_bytes(), None)
            }
        };
        if sent.is_err() {
            return 0;
        }
    }
}

/// Forks a child that runs the job in `job_fd`; its pid and pidfd.
fn fork_child(
    ctl: &OwnedFd,
    status: &OwnedFd,
    job_fd: OwnedFd,
) -> std::io::Result<(sys::Pid, OwnedFd)> {
    let bytes = sys::read_all_at(&job_fd)?;
    drop(job_fd);
    let job: TaskJob = postcard::from_bytes(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let server = sys::getpid();
    // SAFETY: this server is single-threaded (a spawned run that only ever runs this loop),
    // so the child may do anything; it leaves through `child::run`, which ends in _exit.
    match unsafe { sys::fork() }? {
        sys::Forked::Child => {
            // The program must see end-of-file when the server goes, whatever children live.
            sys::close_in_child(ctl.as_raw_fd());
            sys::close_in_child(status.as_raw_fd());
            crate::task::run_served_job(job, server)
        }
        sys::Forked::Parent(pid) => Ok((pid, sys::pidfd_open(pid)?)),
    }
}
