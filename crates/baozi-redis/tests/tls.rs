//! `rediss://` (the `tls` feature) against a private TLS-only `redis-server` with a self-signed
//! certificate: a verified connection once the certificate is trusted (`SSL_CERT_FILE`), an
//! `#insecure` one without, a typed error, not a hang, for a certificate nobody trusts, and a
//! Pool whose worker (a run of this binary) talks TLS too.
//!
//! `harness = false`: the cases run in order in one thread, because trusting the certificate
//! sets `SSL_CERT_FILE` for the whole process. Without `redis-server` it prints one line naming
//! what it skipped and passes, unless `BAOZI_REQUIRE_REDIS=1` (CI).

use std::time::{Duration, Instant};

use baozi_queue::GetError;
use baozi_redis::{LocalServer, RedisOptions, RedisQueue, RedisQueueError, INSTALL_HINT};

/// Puts and gets through `q` as a user would: one item, a batch, a blocking get that times out.
fn round_trip(q: &RedisQueue<u64>) {
    q.put(7).unwrap();
    q.put_many(vec![8, 9]).unwrap();
    assert_eq!(q.qsize().unwrap(), 3);
    assert_eq!(q.get().unwrap(), 7);
    assert_eq!(q.get_many(5).unwrap(), vec![8, 9]);
    let t = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(200)),
        Err(GetError::Empty)
    ));
    assert!(t.elapsed() >= Duration::from_millis(200));
}

baozi_process::task! {
    fn cube(x: u64) -> u64 { x * x * x }
}

/// A pool over `url` with one worker, a run of this binary (`--baozi-worker`), which inherits
/// the trust in the certificate through the environment.
fn pool_round_trip(url: &str) {
    let mut worker = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--baozi-worker", url, "--baozi-pool", "tls"])
        .spawn()
        .unwrap();
    let pool = baozi_process::Pool::builder()
        .processes(1)
        .backend(
            baozi_redis::RedisWorkers::builder(url)
                .namespace("tls")
                .connect()
                .unwrap(),
        )
        .build()
        .unwrap();
    let got = pool.map(cube, 1..=4u64);
    pool.close();
    let joined = pool.join();
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(got.unwrap(), [1, 8, 27, 64]);
    joined.unwrap();
}

fn main() {
    baozi_redis::main_guard(); // a run with --baozi-worker is a pool worker
    if !LocalServer::available() {
        eprintln!(
            "\n!!! baozi-redis: SKIPPED the TLS tests (verified, insecure, untrusted, pool): redis-server not found; install it with `{INSTALL_HINT}` !!!\n"
        );
        if std::env::var("BAOZI_REQUIRE_REDIS").is_ok_and(|v| v == "1") {
            eprintln!("BAOZI_REQUIRE_REDIS=1: the Redis tests must run here");
            std::process::exit(1);
        }
        return;
    }
    let server = LocalServer::start_tls().expect("start a TLS redis-server");
    let url = server.url();
    assert!(url.starts_with("rediss://localhost:"), "{url}");

    // Nobody trusts the self-signed certificate yet: a typed error, quickly, not a hang.
    let t = Instant::now();
    let e = RedisOptions::new()
        .retry_for(Duration::from_millis(300))
        .queue::<u64>(&url, "untrusted")
        .unwrap_err();
    assert!(
        matches!(e, RedisQueueError::Tls { .. }),
        "an untrusted certificate: {e:?}"
    );
    assert!(
        e.to_string().contains("certificate"),
        "the message names the certificate: {e}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    println!(
        "ok   untrusted_certificate_is_a_typed_error ({:?})",
        t.elapsed()
    );

    // `#insecure` skips verification: the traffic is still encrypted.
    let t = Instant::now();
    let insecure = format!("{url}#insecure");
    let q = RedisQueue::<u64>::create_or_open(&insecure, "insecure", 0).unwrap();
    round_trip(&q);
    println!("ok   insecure_url_round_trip ({:?})", t.elapsed());

    // Trusted through OpenSSL's own variable: verified, the host name checked.
    let t = Instant::now();
    // This test binary has one thread, so the environment write races with nothing.
    std::env::set_var("SSL_CERT_FILE", server.ca_file().unwrap());
    let q = RedisQueue::<u64>::create_or_open(&url, "verified", 3).unwrap();
    round_trip(&q);
    // A second handle, as another process would make from the same URL, sees the same queue.
    q.put(1).unwrap();
    let other = RedisQueue::<u64>::open(&url, "verified").unwrap();
    assert_eq!(other.maxsize(), 3);
    assert_eq!(other.get().unwrap(), 1);
    println!("ok   verified_round_trip ({:?})", t.elapsed());

    // The Pool across hosts over TLS: parent and worker both verify the server.
    let t = Instant::now();
    pool_round_trip(&url);
    println!("ok   pool_over_tls ({:?})", t.elapsed());

    // A frozen server (SIGSTOP) in the middle of the handshake: a connection error within the
    // timeouts, not a hang.
    let pid = server.pid().unwrap() as libc::pid_t;
    // SAFETY: signals to the private server this test started; they touch no memory here.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let t = Instant::now();
    let e = RedisOptions::new()
        .connect_timeout(Duration::from_millis(300))
        .io_timeout(Duration::from_millis(300))
        .retry_for(Duration::from_millis(300))
        .queue::<u64>(&url, "frozen")
        .unwrap_err();
    let waited = t.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    assert!(e.is_connection(), "a frozen server: {e:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    println!("ok   frozen_server_is_a_connection_error ({waited:?})");
    println!("5 passed, 0 failed");
}
