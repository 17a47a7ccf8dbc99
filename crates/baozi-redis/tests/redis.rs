//! The Redis backend against a private `redis-server` (started here, stopped at the end):
//! the generic Queue contract suite (crates/baozi-queue/tests/contract), at-most-once and
//! at-least-once; delivery (dedup of a retried put, the bound under racing producers, leases);
//! connection faults; and a kill -9 torture of 2 producer and 2 consumer processes.
//!
//! `harness = false`: the kill -9 case forks, which needs a single-threaded process; cases run
//! one after the other and join their threads. Without `redis-server` it prints one line naming
//! what it skipped and the install command, and passes, unless `BAOZI_REQUIRE_REDIS=1` (CI).
//! `BAOZI_REDIS_KILL_ITERS` (default 200) sets the torture's iterations.

#[path = "../../baozi-queue/tests/contract/mod.rs"]
mod contract;
mod kill9;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baozi_queue::{GetError, Message, PutError, QueueError};
use baozi_redis::{LocalServer, RedisJoinableQueue, RedisOptions, RedisQueue, RedisQueueError};
use contract::{Backend, Case};

static NEXT: AtomicU64 = AtomicU64::new(0);

fn unique(what: &str) -> String {
    format!(
        "t{}-{what}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

struct Redis {
    url: String,
    lease: Option<Duration>,
}

impl Backend for Redis {
    type Q<T: Message + Send + 'static> = RedisQueue<T>;
    type J<T: Message + Send + 'static> = RedisJoinableQueue<T>;
    fn queue<T: Message + Send + 'static>(&self, maxsize: usize) -> RedisQueue<T> {
        RedisOptions::new()
            .maxsize(maxsize)
            .queue(&self.url, &unique("q"))
            .unwrap()
    }
    fn joinable<T: Message + Send + 'static>(&self, maxsize: usize) -> RedisJoinableQueue<T> {
        let mut o = RedisOptions::new().maxsize(maxsize);
        if let Some(l) = self.lease {
            o = o.lease(l);
        }
        o.joinable(&self.url, &unique("j")).unwrap()
    }
}

const CASES: &[&str] = &[
    "the contract suite (29 cases) at-most-once and at-least-once",
    "a retried put is not duplicated",
    "maxsize under racing producers",
    "leases redeliver",
    "decode errors",
    "shutdown(immediate)",
    "credentials",
    "rediss",
    "server down at start",
    "server restarted mid-run",
    "frozen server (SIGSTOP)",
    "a handle inside a message",
    "kill -9 torture, at-most-once and at-least-once",
];

fn main() {
    if !LocalServer::available_or_skip("baozi-redis", CASES) {
        return;
    }
    let server = LocalServer::start().expect("start redis-server");
    let url = server.url();
    let mut failed = 0;
    // The torture forks: run it while this process has no other thread.
    failed += contract::run(
        "redis",
        url.as_str(),
        vec![
            Case {
                name: "kill9_torture_2p_2c",
                run: kill9::torture,
            },
            Case {
                name: "kill9_torture_2p_2c_at_least_once",
                run: kill9::torture_leased,
            },
        ],
    );
    let plain = Redis {
        url: url.clone(),
        lease: None,
    };
    failed += contract::run("contract_redis", &plain, contract::cases::<Redis>());
    let leased = Redis {
        url: url.clone(),
        lease: Some(Duration::from_secs(30)),
    };
    failed += contract::run("contract_redis_leased", &leased, contract::cases::<Redis>());
    #[allow(unused_mut)]
    let mut cases = vec![
        Case {
            name: "a_put_whose_reply_was_lost_is_retried_without_a_duplicate",
            run: lost_reply,
        },
        Case {
            name: "racing_producers_never_pass_maxsize",
            run: racing_producers,
        },
        Case {
            name: "at_least_once_redelivers_after_the_lease",
            run: lease_redelivers,
        },
        Case {
            name: "shutdown_immediate_discards_and_join_counts_them_done",
            run: shutdown_immediate,
        },
        Case {
            name: "close_wakes_blocked_at_least_once_getters_at_once",
            run: leased_close_wakes,
        },
        Case {
            name: "a_bad_message_comes_back_as_bytes_and_loses_nothing",
            run: decode_error,
        },
        Case {
            name: "credentials_come_from_the_url",
            run: credentials,
        },
        Case {
            name: "rediss_is_a_typed_error",
            run: rediss,
        },
        Case {
            name: "server_down_at_start_is_a_connection_error",
            run: down_at_start,
        },
    ];
    #[cfg(feature = "serde")]
    cases.push(Case {
        name: "a_handle_travels_inside_a_message",
        run: handle_in_a_message,
    });
    failed += contract::run("redis", url.as_str(), cases);
    // Last: it restarts the server.
    failed += contract::run(
        "redis",
        &std::cell::RefCell::new(server),
        vec![
            Case {
                name: "a_frozen_server_is_a_timeout_error_never_a_hang",
                run: frozen,
            },
            Case {
                name: "server_restarted_mid_run_gives_typed_errors_then_works",
                run: restart,
            },
        ],
    );
    std::process::exit(i32::from(failed != 0));
}

fn admin(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn connections_received(url: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut admin(url))
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn lost_reply(url: &str) {
    let q: RedisQueue<u64> = RedisOptions::new()
        .io_timeout(Duration::from_millis(200))
        .retry_for(Duration::from_secs(10))
        .queue(url, &unique("lost"))
        .unwrap();
    q.put(1).unwrap();
    let before = connections_received(url);
    // Writes wait on the server for 1 s: the put's first reply never comes in time, the client
    // reconnects and sends it again; both copies run once the pause ends.
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("WRITE")
        .query::<()>(&mut admin(url))
        .unwrap();
    let start = Instant::now();
    q.put(2).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "the pause did not hold the put"
    );
    assert!(
        connections_received(url) >= before + 2,
        "the put was not retried on a new connection"
    );
    assert_eq!(q.qsize().unwrap(), 2, "a retried put was applied twice");
    assert_eq!(q.get_many(10).unwrap(), [1, 2]);
}

fn racing_producers(url: &str) {
    let name = unique("race");
    let q: RedisQueue<u64> = RedisQueue::create_or_open(url, &name, 10).unwrap();
    let threads: Vec<_> = (0..6)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for i in 0..20 {
                    match q.put_nowait(p * 100 + i) {
                        Ok(()) => ok += 1,
                        Err(PutError::Full(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                    let _ = q.put_many_nowait(vec![1, 2]).map(|()| ok += 2);
                }
                ok
            })
        })
        .collect();
    let accepted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(accepted, 10, "exactly maxsize puts may succeed");
    assert_eq!(q.qsize().unwrap(), 10);
}

fn lease_redelivers(url: &str) {
    let name = unique("lease");
    let a: RedisJoinableQueue<String> = RedisOptions::new()
        .lease(Duration::from_millis(300))
        .wait_slice(Duration::from_millis(100))
        .joinable(url, &name)
        .unwrap();
    let b: RedisJoinableQueue<String> = RedisJoinableQueue::open(url, &name).unwrap();
    assert_eq!(b.lease(), Some(Duration::from_millis(300)));
    a.put("job".into()).unwrap();
    assert_eq!(a.get().unwrap(), "job");
    // `a` stalls (as a dead consumer would): the job comes back to `b` after the lease.
    assert!(matches!(b.get_nowait(), Err(GetError::Empty)));
    let start = Instant::now();
    assert_eq!(b.get_timeout(Duration::from_secs(5)).unwrap(), "job");
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "redelivered before the lease ran out"
    );
    assert_eq!(b.redelivered().unwrap(), 1);
    b.task_done().unwrap();
    match a.task_done() {
        Err(QueueError::Backend(e)) => assert!(matches!(
            e.downcast_ref::<RedisQueueError>(),
            Some(RedisQueueError::LeaseExpired)
        )),
        other => panic!("expected LeaseExpired, got {other:?}"),
    }
    a.join_timeout(Duration::from_secs(2)).unwrap();
    // A job done in time is not redelivered.
    a.put("quick".into()).unwrap();
    assert_eq!(a.get().unwrap(), "quick");
    a.task_done().unwrap();
    assert!(matches!(
        b.get_timeout(Duration::from_millis(600)),
        Err(GetError::Empty)
    ));
    assert_eq!(a.redelivered().unwrap(), 1);
}

fn decode_error(url: &str) {
    let name = unique("decode");
    let raw: RedisQueue<Vec<u8>> = RedisQueue::create_or_open(url, &name, 0).unwrap();
    let nums: RedisQueue<u32> = RedisQueue::open(url, &name).unwrap();
    raw.put(vec![1, 2, 3]).unwrap();
    raw.put(7u32.to_ne_bytes().to_vec()).unwrap();
    match nums.get() {
        Err(GetError::Decode { bytes, .. }) => assert_eq!(bytes, [1, 2, 3]),
        other => panic!("expected Decode, got {other:?}"),
    }
    assert_eq!(nums.get().unwrap(), 7);
    // In a batch: the good ones come, the bad one and what follows stay for the next get.
    raw.put_many(vec![
        5u32.to_ne_bytes().to_vec(),
        vec![9],
        6u32.to_ne_bytes().to_vec(),
    ])
    .unwrap();
    assert_eq!(nums.get_many(10).unwrap(), [5]);
    assert!(matches!(nums.get(), Err(GetError::Decode { .. })));
    assert_eq!(nums.get().unwrap(), 6);
}

fn credentials(url: &str) {
    let port = url.rsplit(':').next().unwrap().trim_end_matches("/0");
    let mut a = admin(url);
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("baker")
        .arg("on")
        .arg(">bun-secret")
        .arg("~*")
        .arg("+@all")
        .query::<()>(&mut a)
        .unwrap();
    let good = format!("redis://baker:bun-secret@127.0.0.1:{port}/0");
    let q: RedisQueue<u64> = RedisQueue::create_or_open(&good, &unique("cred"), 0).unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    let bad = format!("redis://baker:wrong-secret@127.0.0.1:{port}/0");
    let e = RedisQueue::<u64>::create_or_open(&bad, &unique("cred"), 0).unwrap_err();
    let text = e.to_string();
    assert!(
        !text.contains("wrong-secret"),
        "the password leaked into: {text}"
    );
    assert!(matches!(e, RedisQueueError::Server { .. }), "{e:?}");
    redis::cmd("ACL")
        .arg("DELUSER")
        .arg("baker")
        .query::<()>(&mut a)
        .unwrap();
}

/// `rediss://` to a plain server. Without the `tls` feature the URL is refused at once with a
/// `Tls` error naming the feature. With it, the plain server never answers the TLS hello (it
/// waits for the end of a command line), which looks like a frozen server: a connection error
/// once the retry window is over (tests/tls.rs has the real TLS cases).
fn rediss(url: &str) {
    let tls = url.replacen("redis://", "rediss://", 1);
    let t = Instant::now();
    let e = RedisOptions::new()
        .retry_for(Duration::from_millis(300))
        .queue::<u64>(&tls, "tls")
        .unwrap_err();
    if cfg!(feature = "tls") {
        assert!(e.is_connection(), "{e:?}");
    } else {
        assert!(matches!(e, RedisQueueError::Tls { .. }), "{e:?}");
        assert!(e.to_string().contains("`tls` feature"), "{e}");
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

fn down_at_start(_: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = Instant::now();
    let e = RedisOptions::new()
        .retry_for(Duration::from_millis(500))
        .queue::<u64>(&format!("redis://127.0.0.1:{port}/0"), "nobody")
        .unwrap_err();
    assert!(e.is_connection(), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
}

fn restart(server: &std::cell::RefCell<LocalServer>) {
    let url = server.borrow().url();
    let opts = RedisOptions::new()
        .retry_for(Duration::from_millis(300))
        .io_timeout(Duration::from_secs(1));
    let name = unique("restart");
    let q: RedisQueue<u64> = opts.queue(&url, &name).unwrap();
    q.put(1).unwrap();
    let getter = q.clone();
    let blocked = std::thread::spawn(move || {
        let start = Instant::now();
        (getter.get_many(100), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(blocked.join().unwrap().0.unwrap(), [1]);
    let getter = q.clone();
    let blocked = std::thread::spawn(move || {
        let start = Instant::now();
        (getter.get(), start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    server.borrow_mut().stop();
    let (r, took) = blocked.join().unwrap();
    match r {
        Err(GetError::Failed(QueueError::Backend(e))) => {
            assert!(e.downcast_ref::<RedisQueueError>().unwrap().is_connection())
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(5),
        "a get on a dead server took {took:?}"
    );
    let start = Instant::now();
    match q.put(2) {
        Err(PutError::Failed(2, QueueError::Backend(_))) => {}
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    server.borrow_mut().restart().unwrap();
    // The same handle reconnects (and reloads its scripts) by itself.
    q.put(3).unwrap();
    assert_eq!(q.get().unwrap(), 3);
    // The server forgot everything; a new handle's puts must not be taken for repeats of the
    // old handle's (producer ids are not handed out by the server, which would reuse them).
    let fresh: RedisQueue<u64> = opts.queue(&url, &name).unwrap();
    for i in 0..5 {
        q.put(10 + i).unwrap();
        fresh.put(20 + i).unwrap();
    }
    let mut got = q.get_many(100).unwrap();
    got.sort_unstable();
    assert_eq!(got, [10, 11, 12, 13, 14, 20, 21, 22, 23, 24]);
}

#[cfg(feature = "serde")]
fn handle_in_a_message(url: &str) {
    use baozi_queue::Serde;
    // A request carries its reply queue, as Python passes a queue in args=.
    let requests: RedisQueue<Serde<(u64, RedisQueue<u64>)>> =
        RedisQueue::create_or_open(url, &unique("req"), 0).unwrap();
    let replies: RedisQueue<u64> = RedisOptions::new()
        .maxsize(3)
        .queue(url, &unique("reply"))
        .unwrap();
    let server = requests.clone();
    let t = std::thread::spawn(move || {
        let Serde((n, reply)) = server.get().unwrap();
        assert_eq!(reply.maxsize(), 3);
        reply.put(n * 2).unwrap();
    });
    requests.put(Serde((21, replies.clone()))).unwrap();
    assert_eq!(replies.get_timeout(Duration::from_secs(10)).unwrap(), 42);
    t.join().unwrap();
}

fn leased_close_wakes(url: &str) {
    // Slices far longer than the test: only the close sentinel can wake the getters in time.
    let q: RedisJoinableQueue<u64> = RedisOptions::new()
        .lease(Duration::from_secs(30))
        .wait_slice(Duration::from_secs(20))
        .joinable(url, &unique("lclose"))
        .unwrap();
    let getters: Vec<_> = (0..3)
        .map(|_| {
            let g = q.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let r = g.get();
                (r.map_err(|e| e.to_string()), start.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    q.put(5).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    q.put(6).unwrap();
    q.close().unwrap();
    let mut got = Vec::new();
    for g in getters {
        let (r, took) = g.join().unwrap();
        assert!(took < Duration::from_secs(5), "woke after {took:?}");
        if let Ok(v) = r {
            got.push(v);
        } else {
            assert_eq!(r, Err(GetError::Closed.to_string()));
        }
    }
    got.sort_unstable();
    // Both items were taken before the close was seen (or are still there, not lost).
    let left = q.qsize().unwrap();
    assert_eq!(got.len() + left, 2, "got {got:?}, {left} left");
    assert!(q.empty().unwrap() == (left == 0));
    for _ in 0..left {
        got.push(q.get().unwrap());
    }
    assert!(matches!(q.get(), Err(GetError::Closed)));
    assert!(matches!(
        q.get_timeout(Duration::from_millis(50)),
        Err(GetError::Closed)
    ));
    got.sort_unstable();
    assert_eq!(got, [5, 6]);
}

fn frozen(server: &std::cell::RefCell<LocalServer>) {
    let url = server.borrow().url();
    let pid = server.borrow().pid().unwrap() as libc::pid_t;
    // A fault is reported within about retry_for + connect_timeout + io_timeout (+ the slice).
    let q: RedisQueue<u64> = RedisOptions::new()
        .connect_timeout(Duration::from_millis(300))
        .io_timeout(Duration::from_millis(300))
        .retry_for(Duration::from_millis(500))
        .wait_slice(Duration::from_millis(300))
        .queue(&url, &unique("frozen"))
        .unwrap();
    q.put(1).unwrap();
    // SIGSTOP: the kernel still accepts connections, but nothing answers (a silent network).
    // SAFETY: a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let start = Instant::now();
    let put = q.put(2);
    let put_took = start.elapsed();
    let start = Instant::now();
    let get = q.get();
    let get_took = start.elapsed();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    match put {
        Err(PutError::Failed(2, QueueError::Backend(e))) => {
            assert!(
                e.downcast_ref::<RedisQueueError>().unwrap().is_connection(),
                "{e}"
            )
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert!(put_took < Duration::from_secs(3), "put took {put_took:?}");
    assert!(
        matches!(get, Err(GetError::Failed(QueueError::Backend(_)))),
        "{get:?}"
    );
    assert!(get_took < Duration::from_secs(3), "get took {get_took:?}");
    // The put that failed was in doubt: its copies reach the server once it runs again, and the
    // server keeps at most one of them.
    q.put(3).unwrap();
    let got = q.get_many(10).unwrap();
    assert!(got == [1, 2, 3] || got == [1, 3], "{got:?}");
}

fn shutdown_immediate(url: &str) {
    for lease in [None, Some(Duration::from_secs(30))] {
        let mut o = RedisOptions::new();
        if let Some(l) = lease {
            o = o.lease(l);
        }
        let q: RedisJoinableQueue<u64> = o.joinable(url, &unique("shut")).unwrap();
        q.put_many(vec![1, 2, 3, 4]).unwrap();
        assert_eq!(q.get().unwrap(), 1);
        let blocked = {
            let q = q.clone();
            let e = RedisJoinableQueue::<u64>::open(url, q.name()).unwrap();
            std::thread::spawn(move || {
                e.join_timeout(Duration::from_secs(10))
                    .map_err(|e| e.to_string())
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        q.shutdown(true).unwrap();
        assert_eq!(q.qsize().unwrap(), 0, "lease {lease:?}");
        assert!(matches!(q.get_nowait(), Err(GetError::Closed)));
        assert!(matches!(q.put(9), Err(PutError::Closed(9))));
        // 2, 3, 4 were thrown away and count as done; 1 was handed out and is not done yet.
        assert_eq!(q.unfinished_tasks().unwrap(), 1);
        q.task_done().unwrap();
        assert_eq!(blocked.join().unwrap(), Ok(()));
    }
}
