//! One connection per handle, made lazily, remade after a fault or a fork, with the scripts
//! loaded on each new connection.

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use redis::{ConnectionLike, RedisResult, Value};

use crate::error::{is_transient, RedisQueueError};
use crate::options::RedisOptions;
use crate::scripts::{Keys, Scripts};

pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(Scripts::new)
}

/// With the `tls` feature: makes rustls's `ring` provider the process's default before the first
/// connection, unless the program installed one of its own (the redis crate leaves it unset,
/// and rustls cannot guess when a program enables two providers).
fn crypto_provider() {
    #[cfg(feature = "tls")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Err: the program already chose a provider, which is then used.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
    }
}

/// A client for `url` (parsed, not connected), TLS made ready when the URL asks for it.
pub(crate) fn open_client(url: &str) -> RedisResult<redis::Client> {
    crypto_provider();
    redis::Client::open(url)
}

/// What every handle of one queue in this process shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: redis::Client,
    /// The URL as given (it may hold credentials: never printed; a serialised handle carries it).
    #[cfg_attr(not(feature = "serde"), allow(dead_code))]
    pub(crate) url: String,
    /// The URL without its password, for messages.
    pub(crate) shown: String,
    pub(crate) name: String,
    pub(crate) keys: Keys,
    pub(crate) maxsize: usize,
    /// At-least-once lease, when the queue was made with one.
    pub(crate) lease: Option<Duration>,
    pub(crate) opts: RedisOptions,
}

/// This handle's connection and identities.
#[derive(Default)]
pub(crate) struct Link {
    conn: Option<redis::Connection>,
    read_timeout: Option<Duration>,
    pid: u32,
    /// Producer id (64 random bits), drawn at the first put.
    pub(crate) producer: Option<u64>,
    /// Last sequence number used by puts, and by task_done calls.
    pub(crate) seq: u64,
    pub(crate) done_seq: u64,
    /// At-least-once: envelopes got by this handle and not yet task_done, oldest first.
    pub(crate) outstanding: std::collections::VecDeque<Vec<u8>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("connected", &self.conn.is_some())
            .field("producer", &self.producer)
            .finish_non_exhaustive()
    }
}

/// A locked link: one operation at a time per handle, so sequence numbers go out in order.
pub(crate) struct Guard<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) link: MutexGuard<'a, Link>,
}

pub(crate) fn lock<'a>(shared: &'a Shared, link: &'a Mutex<Link>) -> Guard<'a> {
    let mut link = link.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if link.pid != pid {
        // A forked child: the socket and the identities belong to the parent. Dropping the
        // connection closes only this process's copy of the fd, and sends nothing.
        *link = Link {
            pid,
            ..Link::default()
        };
    }
    Guard { shared, link }
}

impl Guard<'_> {
    /// Runs `f` on a connection, connecting first if need be. A connection fault drops the
    /// connection; it is retried (with a fresh one) within `retry_for` when `retry` says the
    /// step may run twice, else returned.
    pub(crate) fn run<R>(
        &mut self,
        retry: bool,
        read_timeout: Duration,
        mut f: impl FnMut(&mut redis::Connection) -> RedisResult<R>,
    ) -> Result<R, RedisQueueError> {
        let start = Instant::now();
        let opts = &self.shared.opts;
        let mut pause = Duration::from_millis(20);
        loop {
            let r = self.connected(read_timeout).and_then(&mut f);
            match r {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let transient = is_transient(&e);
                    if transient || e.kind() == redis::ErrorKind::NoScriptError {
                        self.link.conn = None;
                    }
                    // Connecting failed: nothing was sent, so a retry is always safe.
                    let unsent = e.is_connection_refusal();
                    if transient && (retry || unsent) && start.elapsed() < opts.retry_for {
                        std::thread::sleep(
                            pause.min(opts.retry_for.saturating_sub(start.elapsed())),
                        );
                        pause = (pause * 2).min(Duration::from_millis(500));
                        continue;
                    }
                    return Err(RedisQueueError::from_redis(&self.shared.shown, e));
                }
            }
        }
    }

    fn connected(&mut self, read_timeout: Duration) -> RedisResult<&mut redis::Connection> {
        if self.link.conn.is_none() {
            let opts = &self.shared.opts;
            let mut c = crate::conn::open(&self.shared.client, opts)?;
            let mut p = redis::pipe();
            for s in scripts().all() {
                p.cmd("SCRIPT").arg("LOAD").arg(&s.src);
            }
            p.query::<Vec<String>>(&mut c)?;
            self.link.read_timeout = Some(opts.io_timeout);
            self.link.conn = Some(c);
        }
        let link = &mut *self.link;
        let c = link.conn.as_mut().expect("connected above");
        if link.read_timeout != Some(read_timeout) {
            c.set_read_timeout(Some(read_timeout))?;
            link.read_timeout = Some(read_timeout);
        }
        Ok(c)
    }

    /// This handle's producer id: 64 random bits, drawn once per handle and process.
    ///
    /// Not a counter on the server: a server restarted without persistence (or an unlinked
    /// queue) would hand out an id again while an old handle still uses it with a higher
    /// sequence number, and the new handle's puts would be dropped as repeats.
    pub(crate) fn producer(&mut self) -> Result<u64, RedisQueueError> {
        if let Some(p) = self.link.producer {
            return Ok(p);
        }
        let p = random_id();
        self.link.producer = Some(p);
        Ok(p)
    }
}

/// 64 bits from the kernel's random source; should it be unreadable, a hash of the pid, the
/// time and a per-process random key (std's `RandomState`, itself seeded from the kernel).
pub(crate) fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b).max(1);
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish().max(1)
}

/// Sends a pipeline and returns each reply, server errors as errors.
pub(crate) fn pipeline(
    c: &mut redis::Connection,
    p: &redis::Pipeline,
    n: usize,
) -> RedisResult<Vec<Value>> {
    let replies = c.req_packed_commands(&p.get_packed_pipeline(), 0, n)?;
    for r in &replies {
        if let Value::ServerError(e) = r {
            return Err(e.clone().into());
        }
    }
    Ok(replies)
}

/// The URL with its password replaced, for messages.
pub(crate) fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..s + 3], &cred[..colon], &url[at..]),
                None => format!("{}***{}", &url[..s + 3], &url[at..]),
            }
        }
        _ => url.to_owned(),
    }
}

/// Seconds for a blocking command's timeout (never 0, which would mean for ever).
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64().max(0.001))
}
