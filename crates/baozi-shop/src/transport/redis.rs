//! A queue on a Redis server ([`baozi_redis::RedisQueue`] of bytes) as a transport.
//!
//! With no `--redis-url` the shop starts its own `redis-server` ([`LocalServer`]: a free port,
//! no persistence, a temporary directory) for the run and stops it at the end.
//!
//! The server pops a message before the consumer learns which one it was, so a consumer cannot
//! mark the message before the take commits, as it does on the baozi queue. It marks "getting"
//! before each take and names the message as soon as the reply is decoded; a consumer killed
//! while "getting" may have taken one message no one can name (see [`crate::ledger`]).

use std::time::Duration;

use baozi_process::Process;
use baozi_queue::GetError;
use baozi_redis::{LocalServer, RedisOptions, RedisQueue, INSTALL_HINT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Recv, Shape, Transport};
use crate::ledger::Mark;
use crate::message::STAMP_LEN;

pub(super) fn check(shape: Shape<'_>) -> Result<(), String> {
    match shape.redis_url {
        Some(url) if url.starts_with("rediss://") && cfg!(not(feature = "tls")) => Err(format!(
            "--redis-url {:?}: TLS (rediss://) needs a shop built with `--features tls`",
            shown(url)
        )),
        Some(url) if !["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|s| url.starts_with(s)) => Err(format!(
            "--redis-url {:?} is not a redis://[user:password@]host[:port][/db] or unix:// URL",
            shown(url)
        )),
        Some(_) => Ok(()),
        None if LocalServer::available() => Ok(()),
        None => Err(format!(
            "--transport redis without --redis-url starts its own redis-server, which is not installed: `{INSTALL_HINT}`, or give --redis-url"
        )),
    }
}

/// The URL without its password, for messages.
fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

pub(super) struct RedisTransport {
    queue: RedisQueue<Vec<u8>>,
    /// Kills the private server if the shop dies without dropping the transport (SIGKILL).
    reaper: Option<Process>,
    /// The private server, when no URL was given; stopped when the parent drops the transport.
    /// (Workers are forked copies that leave with `_exit`: they never drop it.)
    server: Option<LocalServer>,
    url: String,
    owner: u32,
}

impl RedisTransport {
    pub(super) fn new(shape: Shape<'_>) -> Result<Self, String> {
        let server = match shape.redis_url {
            Some(_) => None,
            None => Some(
                LocalServer::start()
                    .map_err(|e| format!("starting a private redis-server: {e}"))?,
            ),
        };
        let reaper = match server.as_ref().and_then(LocalServer::pid) {
            Some(pid) => Some(spawn_reaper(pid)?),
            None => None,
        };
        let url = match (&server, shape.redis_url) {
            (Some(s), _) => s.url(),
            (None, Some(u)) => u.to_owned(),
            (None, None) => unreachable!("a server was started above"),
        };
        // One queue per run, named after the shop's pid and the clock, so runs sharing a
        // server never meet.
        let name = format!(
            "baozi-shop-{}-{}",
            std::process::id(),
            baozi_sync::monotonic_ns()
        );
        let queue = match RedisOptions::new()
            .maxsize(shape.maxsize)
            // A server that stops answering is an error within seconds, not a hang.
            .connect_timeout(Duration::from_secs(2))
            .queue(&url, &name)
        {
            Ok(q) => q,
            Err(e) => {
                stop_reaper(reaper);
                return Err(format!("opening the queue: {e}"));
            }
        };
        Ok(RedisTransport {
            queue,
            reaper,
            server,
            url,
            owner: std::process::id(),
        })
    }
}

/// A small process that outlives the shop if the shop is SIGKILLed (it is no daemon), notices
/// that its parent changed, kills the private `redis-server` and removes its directory. On a
/// normal end the shop kills it first, before it stops the server itself.
fn spawn_reaper(server: u32) -> Result<Process, String> {
    let shop = std::process::id();
    let reaper = Process::builder().name("redis-reaper").spawn_fn(move || {
        while std::os::unix::process::parent_id() == shop {
            std::thread::sleep(Duration::from_millis(100));
        }
        // The shop is gone. Its server runs in its directory, which names the shop's pid:
        // check that, so that a pid reused by another process is never killed.
        let tag = format!("baozi-redis-{shop}-");
        let Ok(dir) = std::fs::read_link(format!("/proc/{server}/cwd")) else {
            return 0;
        };
        if dir.to_string_lossy().contains(&tag) {
            let _ = kill(Pid::from_raw(server as i32), Signal::SIGKILL);
            let _ = std::fs::remove_dir_all(dir);
        }
        0
    });
    reaper
        .start()
        .map_err(|e| format!("fork (redis-server reaper): {e}"))?;
    Ok(reaper)
}

/// Stops the reaper before the server is stopped (so it never outlives a stopped server).
fn stop_reaper(reaper: Option<Process>) {
    if let Some(reaper) = reaper {
        let _ = reaper.kill();
        let _ = reaper.join();
    }
}

impl Drop for RedisTransport {
    fn drop(&mut self) {
        stop_reaper(self.reaper.take());
        // On a server the user gave, leave nothing behind; a private one goes away whole.
        if self.server.is_none() && std::process::id() == self.owner {
            let _ = RedisQueue::<Vec<u8>>::unlink(&self.url, self.queue.name());
        }
    }
}

impl Transport for RedisTransport {
    fn send(&self, msg: &[u8]) -> Result<(), String> {
        self.queue
            .put(msg.to_vec())
            .map_err(|e| format!("redis put: {e}"))
    }

    fn recv(
        &self,
        buf: &mut [u8],
        timeout: Duration,
        mark: Option<Mark<'_>>,
    ) -> Result<Recv, String> {
        if let Some(mark) = mark {
            mark.set_getting();
        }
        match self.queue.get_timeout(timeout) {
            Ok(bytes) => {
                if let Some(mark) = mark {
                    mark.set(&bytes);
                }
                // The stamp is all the consumer reads.
                let n = bytes.len().min(STAMP_LEN).min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                Ok(Recv::Message(bytes.len().min(buf.len())))
            }
            Err(GetError::Empty) => Ok(Recv::Timeout),
            Err(GetError::Closed) => Ok(Recv::Closed),
            Err(e) => Err(format!("redis get: {e}")),
        }
    }

    fn fills_buffer_when_taking(&self) -> bool {
        false
    }

    fn finish(&self, _consumers: usize) -> Result<(), String> {
        self.queue.close().map_err(|e| format!("redis close: {e}"))
    }

    fn effective_maxsize(&self) -> usize {
        self.queue.maxsize()
    }

    fn depth(&self) -> u64 {
        // No byte limit on the server: the item limit, or none (0).
        self.queue.maxsize() as u64
    }
}
