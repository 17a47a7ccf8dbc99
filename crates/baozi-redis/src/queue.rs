//! [`RedisQueue`]: the Queue contract on a Redis list.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baozi_queue::{GetError, Message, PutError, QueueError};
use redis::Value;

use crate::error::{put_failed, RedisQueueError};
use crate::link::{self, lock, pipeline, scripts, secs, Guard, Link, Shared};
use crate::options::RedisOptions;
use crate::scripts::Keys;

/// Bytes before each message on the server: the producer id and its sequence number, which
/// make every entry unique and let the server drop a retried put.
pub(crate) const HEADER: usize = 16;

/// A bounded queue on a Redis server with the contract of Python's `multiprocessing.Queue`,
/// for processes on any number of hosts. See the [crate] docs for the guarantees.
///
/// A clone is another handle to the same queue, with its own connection (made at first use)
/// and its own producer identity; so is a handle used in a forked child.
pub struct RedisQueue<T = Vec<u8>> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) link: Mutex<Link>,
    pub(crate) _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for RedisQueue<T> {
    fn clone(&self) -> Self {
        RedisQueue {
            shared: self.shared.clone(),
            link: Mutex::new(Link::default()),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for RedisQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueue")
            .field("url", &self.shared.shown)
            .field("name", &self.shared.name)
            .field("maxsize", &self.shared.maxsize)
            .field("lease", &self.shared.lease)
            .finish()
    }
}

/// How long a call may wait.
#[derive(Clone, Copy)]
pub(crate) enum Wait {
    No,
    Until(Instant),
    Forever,
}

impl Wait {
    fn timeout(d: Duration) -> Wait {
        Instant::now()
            .checked_add(d)
            .map_or(Wait::Forever, Wait::Until)
    }
    /// The next server-side wait, or None when the time is up.
    fn slice(self, max: Duration) -> Option<Duration> {
        match self {
            Wait::No => None,
            Wait::Forever => Some(max),
            Wait::Until(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left >= Duration::from_millis(1) {
                    return Some(left.min(max));
                }
                // Less than the server's millisecond is left (its clock may also have ended the
                // last wait a fraction early): wait it out here, so that a timeout never
                // returns before its time.
                std::thread::sleep(left);
                None
            }
        }
    }
}

fn int(v: &Value) -> Result<i64, RedisQueueError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(RedisQueueError::protocol(format!(
            "expected an integer, got {other:?}"
        ))),
    }
}

/// `{closed, envelopes...}` from TAKE and TAKE_LEASED.
fn taken(v: Value) -> Result<(bool, Vec<Vec<u8>>), RedisQueueError> {
    let Value::Array(items) = v else {
        return Err(RedisQueueError::protocol(format!(
            "expected an array, got {v:?}"
        )));
    };
    let mut it = items.into_iter();
    let closed = it.next().map(|v| int(&v)).transpose()?.unwrap_or(0) == 1;
    let mut out = Vec::new();
    for v in it {
        match v {
            Value::BulkString(b) => out.push(b),
            other => {
                return Err(RedisQueueError::protocol(format!(
                    "expected bytes, got {other:?}"
                )))
            }
        }
    }
    Ok((closed, out))
}

fn evalsha<'a>(cmd: &'a mut redis::Cmd, sha: &str, keys: &[&str]) -> &'a mut redis::Cmd {
    cmd.arg(sha).arg(keys.len());
    for k in keys {
        cmd.arg(*k);
    }
    cmd
}

impl<T: Message> RedisQueue<T> {
    /// Opens the queue `name` on the server at `url` (`redis://[user:password@]host[:port][/db]`),
    /// creating it with `maxsize` (0: no limit) if it does not exist.
    ///
    /// # Errors
    /// [`RedisQueueError::Connection`] if the server cannot be reached; [`RedisQueueError::Server`]
    /// for a bad URL or a wrong password; [`RedisQueueError::Tls`] for a `rediss://` server whose
    /// certificate is not trusted (or any `rediss://` URL without the `tls` feature);
    /// [`RedisQueueError::Mismatch`] for a queue that exists with another `maxsize` or lease.
    pub fn create_or_open(url: &str, name: &str, maxsize: usize) -> Result<Self, RedisQueueError> {
        RedisOptions::new().maxsize(maxsize).queue(url, name)
    }

    /// Opens the existing queue `name` on the server at `url`, with its `maxsize` and mode.
    ///
    /// # Errors
    /// [`RedisQueueError::NotFound`], and the errors of [`create_or_open`](Self::create_or_open).
    pub fn open(url: &str, name: &str) -> Result<Self, RedisQueueError> {
        Self::connect(url, name, RedisOptions::new(), false)
    }

    pub(crate) fn connect(
        url: &str,
        name: &str,
        opts: RedisOptions,
        create: bool,
    ) -> Result<Self, RedisQueueError> {
        let shown = link::shown_url(url);
        let client =
            crate::link::open_client(url).map_err(|e| RedisQueueError::from_redis(&shown, e))?;
        let keys = Keys::new(name);
        let mut shared = Shared {
            client,
            url: url.to_owned(),
            shown,
            name: name.to_owned(),
            keys,
            maxsize: opts.maxsize,
            lease: opts.lease,
            opts,
        };
        let link = Mutex::new(Link::default());
        let want_lease = shared.lease.map_or(0, |d| d.as_millis().max(1) as u64);
        let (maxsize, lease) = {
            let mut g = lock(&shared, &link);
            let meta = shared.keys.meta.clone();
            let io = shared.opts.io_timeout;
            g.run(true, io, |c| {
                let mut p = redis::pipe();
                if create {
                    p.cmd("HSETNX")
                        .arg(&meta)
                        .arg("maxsize")
                        .arg(shared.maxsize)
                        .ignore();
                    p.cmd("HSETNX")
                        .arg(&meta)
                        .arg("lease_ms")
                        .arg(want_lease)
                        .ignore();
                }
                p.cmd("HMGET").arg(&meta).arg("maxsize").arg("lease_ms");
                p.query::<((Option<u64>, Option<u64>),)>(c)
            })?
            .0
        };
        let Some(maxsize) = maxsize else {
            return Err(RedisQueueError::NotFound {
                name: name.to_owned(),
            });
        };
        let lease = lease.unwrap_or(0);
        if create && (maxsize != shared.maxsize as u64 || lease != want_lease) {
            return Err(RedisQueueError::Mismatch {
                name: name.to_owned(),
                detail: format!(
                    "maxsize {maxsize} and lease {lease} ms, asked for maxsize {} and lease {want_lease} ms",
                    shared.maxsize
                ),
            });
        }
        shared.maxsize = maxsize as usize;
        shared.lease = (lease > 0).then(|| Duration::from_millis(lease));
        drop(link);
        Ok(RedisQueue {
            shared: Arc::new(shared),
            link: Mutex::new(Link::default()),
            _t: PhantomData,
        })
    }
}

impl<T> RedisQueue<T> {
    fn guard(&self) -> Guard<'_> {
        lock(&self.shared, &self.link)
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The item limit (0: none).
    pub fn maxsize(&self) -> usize {
        self.shared.maxsize
    }

    /// The at-least-once lease, if the queue was made with one.
    pub fn lease(&self) -> Option<Duration> {
        self.shared.lease
    }

    /// Items in the queue now (items got and still leased are not counted).
    ///
    /// # Errors
    /// [`RedisQueueError::Connection`] if the server cannot be reached.
    pub fn qsize(&self) -> Result<usize, RedisQueueError> {
        let key = self.shared.keys.items.clone();
        let io = self.shared.opts.io_timeout;
        if self.shared.lease.is_none() {
            return self
                .guard()
                .run(true, io, |c| redis::cmd("LLEN").arg(&key).query::<usize>(c));
        }
        // At-least-once: a closed queue's close sentinel (an empty entry at the tail) is no item.
        let (n, last): (usize, Option<Vec<u8>>) = self.guard().run(true, io, |c| {
            redis::pipe()
                .cmd("LLEN")
                .arg(&key)
                .cmd("LINDEX")
                .arg(&key)
                .arg(-1)
                .query(c)
        })?;
        Ok(n - usize::from(last.is_some_and(|l| l.is_empty())))
    }

    /// Whether the queue holds no item now.
    ///
    /// # Errors
    /// As [`qsize`](Self::qsize).
    pub fn empty(&self) -> Result<bool, RedisQueueError> {
        Ok(self.qsize()? == 0)
    }

    /// Whether the queue holds `maxsize` items now (never, without a limit).
    ///
    /// # Errors
    /// As [`qsize`](Self::qsize).
    pub fn full(&self) -> Result<bool, RedisQueueError> {
        Ok(self.shared.maxsize != 0 && self.qsize()? >= self.shared.maxsize)
    }

    /// Whether the queue was closed (by any handle anywhere).
    ///
    /// # Errors
    /// As [`qsize`](Self::qsize).
    pub fn is_closed(&self) -> Result<bool, RedisQueueError> {
        let key = self.shared.keys.meta.clone();
        let io = self.shared.opts.io_timeout;
        let v: Option<String> = self.guard().run(true, io, |c| {
            redis::cmd("HGET").arg(&key).arg("closed").query(c)
        })?;
        Ok(v.as_deref() == Some("1"))
    }

    /// Closes the queue for everyone: puts fail with [`PutError::Closed`], getters drain what is
    /// left, then get [`GetError::Closed`]. Blocked callers on every host wake. Closing twice is
    /// harmless.
    ///
    /// # Errors
    /// As [`qsize`](Self::qsize).
    pub fn close(&self) -> Result<(), RedisQueueError> {
        self.shutdown(false)
    }

    /// Python 3.13's `shutdown(immediate)`: [`close`](Self::close), and with `immediate` what is
    /// left is thrown away and counted done for `join`.
    ///
    /// # Errors
    /// As [`qsize`](Self::qsize).
    pub fn shutdown(&self, immediate: bool) -> Result<(), RedisQueueError> {
        let k = &self.shared.keys;
        let keys = [&*k.meta, &*k.closed, &*k.room, &*k.items, &*k.alldone];
        let io = self.shared.opts.io_timeout;
        self.guard().run(true, io, |c| {
            evalsha(&mut redis::cmd("EVALSHA"), &scripts().close.sha, &keys)
                .arg(u8::from(immediate))
                .arg(u8::from(self.shared.lease.is_some()))
                .query::<i64>(c)
        })?;
        Ok(())
    }

    /// Deletes the queue `name` and everything in it from the server at `url`. Handles still
    /// open see an empty queue without a limit recorded; make them again.
    ///
    /// # Errors
    /// As [`create_or_open`](RedisQueue::create_or_open).
    pub fn unlink(url: &str, name: &str) -> Result<(), RedisQueueError> {
        let shown = link::shown_url(url);
        let fail = |e| RedisQueueError::from_redis(&shown, e);
        let client = crate::link::open_client(url).map_err(fail)?;
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(fail)?;
        let keys = Keys::new(name);
        let mut del = redis::cmd("DEL");
        for k in keys.all() {
            del.arg(k);
        }
        del.query::<i64>(&mut c).map_err(fail)?;
        // Producer ids expire by themselves; remove them now all the same.
        let pattern = format!("{}p:*", keys.prefix);
        let dedup: Vec<String> = c.scan_match(&pattern).map_err(fail)?.collect();
        let pattern = format!("{}d:*", keys.prefix);
        let done: Vec<String> = c.scan_match(&pattern).map_err(fail)?.collect();
        for k in dedup.iter().chain(&done) {
            redis::cmd("DEL")
                .arg(k)
                .query::<i64>(&mut c)
                .map_err(fail)?;
        }
        Ok(())
    }

    /// How many items went back to the queue because their lease ran out (at-least-once).
    ///
    /// # Errors
    /// As [`qsize`](Self::qsize).
    pub fn redelivered(&self) -> Result<u64, RedisQueueError> {
        let key = self.shared.keys.meta.clone();
        let io = self.shared.opts.io_timeout;
        let v: Option<u64> = self.guard().run(true, io, |c| {
            redis::cmd("HGET").arg(&key).arg("redelivered").query(c)
        })?;
        Ok(v.unwrap_or(0))
    }
}

use redis::Commands as _;

impl<T: Message> RedisQueue<T> {
    /// Encodes items with the envelope header left blank (filled in once the producer id and
    /// sequence numbers are known, under the link's lock).
    fn encode(&self, items: &[T]) -> Result<Vec<Vec<u8>>, PutError<()>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let env = item
                .with_encoded(|bytes| {
                    let mut env = Vec::with_capacity(HEADER + bytes.len());
                    env.extend_from_slice(&[0; HEADER]);
                    env.extend_from_slice(bytes);
                    env
                })
                .map_err(|e| PutError::Encode((), e))?;
            if env.len() - HEADER > self.shared.opts.max_message_len {
                return Err(PutError::TooLarge {
                    item: (),
                    needed: env.len() - HEADER,
                    capacity: self.shared.opts.max_message_len,
                });
            }
            out.push(env);
        }
        let max = self.shared.maxsize;
        if max != 0 && items.len() > max {
            return Err(PutError::TooMany {
                item: (),
                items: items.len(),
                maxsize: max,
            });
        }
        Ok(out)
    }

    fn put_envs(&self, mut envs: Vec<Vec<u8>>, wait: Wait) -> Result<(), PutError<()>> {
        if envs.is_empty() {
            return Ok(());
        }
        let sh = &*self.shared;
        let mut g = self.guard();
        let producer = g.producer().map_err(|e| put_failed((), e))?;
        let first = g.link.seq + 1;
        g.link.seq += envs.len() as u64;
        let last = g.link.seq;
        for (i, env) in envs.iter_mut().enumerate() {
            env[..8].copy_from_slice(&producer.to_le_bytes());
            env[8..HEADER].copy_from_slice(&(first + i as u64).to_le_bytes());
        }
        let dedup = sh.keys.dedup(producer, "p");
        let keys = [&*sh.keys.items, &*sh.keys.meta, &*sh.keys.room, &*dedup];
        let mut cmd = redis::cmd("EVALSHA");
        evalsha(&mut cmd, &scripts().put.sha, &keys)
            .arg(sh.maxsize)
            .arg(first)
            .arg(last)
            .arg(sh.opts.dedup_ttl.as_millis() as u64);
        for env in &envs {
            cmd.arg(&env[..]);
        }
        let io = sh.opts.io_timeout;
        loop {
            // Safe to run twice: the server drops a second (producer, sequence) it has seen.
            let r = g
                .run(true, io, |c| cmd.query::<i64>(c))
                .map_err(|e| put_failed((), e))?;
            match r {
                1 | 2 => return Ok(()),
                -1 => return Err(PutError::Closed(())),
                0 => {}
                other => {
                    return Err(put_failed(
                        (),
                        RedisQueueError::protocol(format!("put script returned {other}")),
                    ))
                }
            }
            let Some(slice) = wait.slice(sh.opts.wait_slice) else {
                return Err(PutError::Full(()));
            };
            // Wait on the server for a room token; a get leaves one per freed slot.
            let room = sh.keys.room.clone();
            g.run(true, slice + io, |c| {
                redis::cmd("BLPOP")
                    .arg(&room)
                    .arg(secs(slice))
                    .query::<Value>(c)
            })
            .map_err(|e| put_failed((), e))?;
        }
    }

    fn put_one(&self, item: T, wait: Wait) -> Result<(), PutError<T>> {
        let envs = match self.encode(std::slice::from_ref(&item)) {
            Ok(e) => e,
            Err(f) => return Err(f.map(|()| item)),
        };
        self.put_envs(envs, wait).map_err(|f| f.map(|()| item))
    }

    fn put_batch(&self, items: Vec<T>, wait: Wait) -> Result<(), PutError<Vec<T>>> {
        let envs = match self.encode(&items) {
            Ok(e) => e,
            Err(f) => return Err(f.map(|()| items)),
        };
        self.put_envs(envs, wait).map_err(|f| f.map(|()| items))
    }

    /// Takes up to `max` envelopes; at-least-once when the queue has a lease.
    pub(crate) fn take(&self, max: usize, wait: Wait) -> Result<Vec<Vec<u8>>, GetError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let sh = &*self.shared;
        let mut g = self.guard();
        let io = sh.opts.io_timeout;
        let k = &sh.keys;
        loop {
            let slice = wait.slice(sh.opts.wait_slice);
            let (closed, envs) = match sh.lease {
                None => {
                    let keys = [&*k.items, &*k.meta, &*k.room, &*k.closed];
                    match slice {
                        None => {
                            let mut cmd = redis::cmd("EVALSHA");
                            evalsha(&mut cmd, &scripts().take.sha, &keys)
                                .arg(sh.maxsize)
                                .arg(max);
                            let v = g.run(false, io, |c| cmd.query::<Value>(c))?;
                            taken(v)?
                        }
                        Some(slice) => {
                            // BLPOP waits on the server for an item or the close token; the
                            // script, pipelined behind it, takes up to max-1 more, puts the
                            // close token back and leaves room tokens, in the same round trip.
                            let mut p = redis::pipe();
                            p.cmd("BLPOP").arg(&k.items).arg(&k.closed).arg(secs(slice));
                            let mut cmd = redis::cmd("EVALSHA");
                            evalsha(&mut cmd, &scripts().take.sha, &keys)
                                .arg(sh.maxsize)
                                .arg(max - 1);
                            p.add_command(cmd);
                            let mut r = g.run(false, slice + io, |c| pipeline(c, &p, 2))?;
                            let (closed, more) = taken(r.pop().unwrap_or(Value::Nil))?;
                            let mut envs = Vec::new();
                            if let Some(Value::Array(kv)) = r.pop() {
                                if let [Value::BulkString(key), Value::BulkString(env)] = &kv[..] {
                                    if key[..] == *k.items.as_bytes() {
                                        envs.push(env.clone());
                                    }
                                }
                            }
                            envs.extend(more);
                            (closed, envs)
                        }
                    }
                }
                Some(lease) => {
                    let lease_ms = lease.as_millis().max(1) as u64;
                    let keys = [
                        &*k.items,
                        &*k.pending,
                        &*k.leases,
                        &*k.meta,
                        &*k.room,
                        &*k.closed,
                    ];
                    let mut cmd = redis::cmd("EVALSHA");
                    evalsha(&mut cmd, &scripts().take_leased.sha, &keys)
                        .arg(lease_ms)
                        .arg(max)
                        .arg(sh.maxsize);
                    let (closed, envs) = taken(g.run(false, io, |c| cmd.query::<Value>(c))?)?;
                    if !envs.is_empty() || closed {
                        (closed, envs)
                    } else if let Some(slice) = slice {
                        // Wait on the server for an item, moving it to `pending` as it is
                        // taken; the lease follows (and a consumer killed in between leaves
                        // an entry without one, which the next TAKE_LEASED gives a lease).
                        let slice = slice.min(lease / 2).max(Duration::from_millis(10));
                        let got = g.run(false, slice + io, |c| {
                            redis::cmd("BLMOVE")
                                .arg(&k.items)
                                .arg(&k.pending)
                                .arg("LEFT")
                                .arg("RIGHT")
                                .arg(secs(slice))
                                .query::<Option<Vec<u8>>>(c)
                        })?;
                        match got {
                            None => (false, Vec::new()),
                            Some(env) => {
                                let mut cmd = redis::cmd("EVALSHA");
                                evalsha(&mut cmd, &scripts().take_leased.sha, &keys)
                                    .arg(lease_ms)
                                    .arg(max - 1)
                                    .arg(sh.maxsize)
                                    .arg(&env[..]);
                                let (closed, more) =
                                    taken(g.run(false, io, |c| cmd.query::<Value>(c))?)?;
                                // An empty entry is the close sentinel, never an item.
                                let mut envs = if env.is_empty() {
                                    Vec::new()
                                } else {
                                    vec![env]
                                };
                                envs.extend(more);
                                (closed, envs)
                            }
                        }
                    } else {
                        (false, Vec::new())
                    }
                }
            };
            if !envs.is_empty() {
                if sh.lease.is_some() {
                    g.link.outstanding.extend(envs.iter().cloned());
                }
                return Ok(envs);
            }
            if closed {
                return Err(GetError::Closed);
            }
            if slice.is_none() {
                return Err(GetError::Empty);
            }
        }
    }

    /// Decodes envelopes; on a message that does not decode, the ones after it go back to the
    /// head of the queue (nothing is lost) and the bad one's bytes are returned.
    fn decode(&self, envs: Vec<Vec<u8>>) -> Result<Vec<T>, GetError> {
        let mut out = Vec::with_capacity(envs.len());
        for (i, env) in envs.iter().enumerate() {
            let payload = env.get(HEADER..).unwrap_or(&[]);
            match T::decode(payload) {
                Ok(v) => out.push(v),
                Err(error) => {
                    let rest = &envs[i + 1..];
                    if !rest.is_empty() {
                        self.push_back(rest).map_err(GetError::from)?;
                    }
                    if i > 0 {
                        // Hand out the good ones; the bad one goes back too, to be reported next.
                        self.push_back(&envs[i..i + 1]).map_err(GetError::from)?;
                        return Ok(out);
                    }
                    return Err(GetError::Decode {
                        bytes: payload.to_vec(),
                        error,
                    });
                }
            }
        }
        Ok(out)
    }

    fn push_back(&self, envs: &[Vec<u8>]) -> Result<(), RedisQueueError> {
        let key = self.shared.keys.items.clone();
        let io = self.shared.opts.io_timeout;
        let mut cmd = redis::cmd("LPUSH");
        cmd.arg(&key);
        for e in envs.iter().rev() {
            cmd.arg(&e[..]);
        }
        self.guard().run(false, io, |c| cmd.query::<i64>(c))?;
        Ok(())
    }

    fn get_wait(&self, max: usize, wait: Wait) -> Result<Vec<T>, GetError> {
        let envs = self.take(max, wait)?;
        self.decode(envs)
    }

    fn get_one(&self, wait: Wait) -> Result<T, GetError> {
        let mut v = self.get_wait(1, wait)?;
        v.pop().ok_or_else(|| {
            GetError::Failed(RedisQueueError::protocol("a get returned no item").into())
        })
    }

    /// Puts `item`, waiting (on the server) as long as the queue is full.
    ///
    /// # Errors
    /// [`PutError::TooLarge`], [`PutError::Closed`], [`PutError::Encode`], and
    /// [`PutError::Failed`] with a [`RedisQueueError`] inside; the item comes back in each.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_one(item, Wait::Forever)
    }

    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`PutError::Full`] when the time is up, and the errors of [`put`](Self::put).
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_one(item, Wait::timeout(timeout))
    }

    /// Puts `item` only if there is room now.
    ///
    /// # Errors
    /// [`PutError::Full`], and the errors of [`put`](Self::put).
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_one(item, Wait::No)
    }

    /// Puts all of `items` in one script call (one round trip), all or nothing, waiting as long
    /// as there is no room for all.
    ///
    /// # Errors
    /// [`PutError::TooMany`] at once for more than `maxsize` items, and the errors of
    /// [`put`](Self::put).
    pub fn put_many(&self, items: Vec<T>) -> Result<(), PutError<Vec<T>>> {
        self.put_batch(items, Wait::Forever)
    }

    /// [`put_many`](Self::put_many), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PutError::Full`] when the time is up, and the errors of [`put_many`](Self::put_many).
    pub fn put_many_timeout(
        &self,
        items: Vec<T>,
        timeout: Duration,
    ) -> Result<(), PutError<Vec<T>>> {
        self.put_batch(items, Wait::timeout(timeout))
    }

    /// [`put_many`](Self::put_many) only if there is room for all now.
    ///
    /// # Errors
    /// [`PutError::Full`], and the errors of [`put_many`](Self::put_many).
    pub fn put_many_nowait(&self, items: Vec<T>) -> Result<(), PutError<Vec<T>>> {
        self.put_batch(items, Wait::No)
    }

    /// Takes the oldest item, waiting (on the server) as long as the queue is empty.
    ///
    /// # Errors
    /// [`GetError::Closed`] once closed and drained; [`GetError::Decode`] (the bytes are in it);
    /// [`GetError::Failed`] with a [`RedisQueueError`] inside.
    pub fn get(&self) -> Result<T, GetError> {
        self.get_one(Wait::Forever)
    }

    /// Takes the oldest item, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetError::Empty`] when the time is up, and the errors of [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_one(Wait::timeout(timeout))
    }

    /// Takes the oldest item if there is one now.
    ///
    /// # Errors
    /// [`GetError::Empty`], and the errors of [`get`](Self::get).
    pub fn get_nowait(&self) -> Result<T, GetError> {
        self.get_one(Wait::No)
    }

    /// Takes between 1 and `max` items in one round trip, waiting as long as the queue is empty.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn get_many(&self, max: usize) -> Result<Vec<T>, GetError> {
        self.get_wait(max, Wait::Forever)
    }

    /// [`get_many`](Self::get_many), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`GetError::Empty`] when the time is up, and the errors of [`get`](Self::get).
    pub fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>, GetError> {
        self.get_wait(max, Wait::timeout(timeout))
    }

    /// [`get_many`](Self::get_many) of what is there now.
    ///
    /// # Errors
    /// [`GetError::Empty`], and the errors of [`get`](Self::get).
    pub fn get_many_nowait(&self, max: usize) -> Result<Vec<T>, GetError> {
        self.get_wait(max, Wait::No)
    }

    /// Items put and not yet marked done (for [`RedisJoinableQueue`](crate::RedisJoinableQueue)).
    pub(crate) fn unfinished(&self) -> Result<i64, RedisQueueError> {
        let k = &self.shared.keys;
        let keys = [&*k.meta, &*k.alldone];
        let io = self.shared.opts.io_timeout;
        let mut cmd = redis::cmd("EVALSHA");
        evalsha(&mut cmd, &scripts().unfinished.sha, &keys);
        self.guard().run(true, io, |c| cmd.query::<i64>(c))
    }

    pub(crate) fn task_done_impl(&self) -> Result<(), QueueError> {
        let sh = &*self.shared;
        let k = &sh.keys;
        let io = sh.opts.io_timeout;
        let mut g = self.guard();
        if sh.lease.is_some() {
            let Some(env) = g.link.outstanding.pop_front() else {
                return Err(QueueError::TaskDoneTooManyTimes);
            };
            let keys = [&*k.pending, &*k.leases, &*k.meta, &*k.alldone];
            let mut cmd = redis::cmd("EVALSHA");
            evalsha(&mut cmd, &scripts().ack.sha, &keys).arg(&env[..]);
            let mut tries = 0;
            // A retry after a lost reply finds the entry already gone: count that as done.
            let r = g.run(true, io, |c| {
                tries += 1;
                cmd.query::<i64>(c)
            })?;
            return match (r, tries) {
                (1, _) => Ok(()),
                (_, t) if t > 1 => Ok(()),
                _ => Err(RedisQueueError::LeaseExpired.into()),
            };
        }
        let producer = g.producer()?;
        g.link.done_seq += 1;
        let seq = g.link.done_seq;
        let dedup = k.dedup(producer, "d");
        let keys = [&*k.meta, &*k.alldone, &*dedup];
        let mut cmd = redis::cmd("EVALSHA");
        evalsha(&mut cmd, &scripts().task_done.sha, &keys)
            .arg(seq)
            .arg(sh.opts.dedup_ttl.as_millis() as u64);
        match g.run(true, io, |c| cmd.query::<i64>(c))? {
            1 => Ok(()),
            _ => Err(QueueError::TaskDoneTooManyTimes),
        }
    }

    pub(crate) fn join_wait(&self, wait: Wait) -> Result<(), QueueError> {
        let sh = &*self.shared;
        let io = sh.opts.io_timeout;
        loop {
            let u = self.unfinished()?;
            if u <= 0 {
                return Ok(());
            }
            let Some(slice) = wait.slice(sh.opts.wait_slice) else {
                return Err(QueueError::JoinTimeout {
                    unfinished: u.min(i64::from(u32::MAX)) as u32,
                });
            };
            let key = sh.keys.alldone.clone();
            self.guard().run(true, slice + io, |c| {
                redis::cmd("BLPOP")
                    .arg(&key)
                    .arg(secs(slice))
                    .query::<Value>(c)
            })?;
        }
    }
}

pub(crate) fn wait_timeout(d: Duration) -> Wait {
    Wait::timeout(d)
}

pub(crate) fn wait_forever() -> Wait {
    Wait::Forever
}
