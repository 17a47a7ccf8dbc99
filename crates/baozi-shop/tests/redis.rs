//! The bun shop over Redis (`--transport redis`) as a user runs it: on a private
//! `redis-server` and on a given one, with kill -9, a real loss, bad URLs, and the private
//! server's lifetime. Without `redis-server` these tests are skipped with one loud line, unless
//! `BAOZI_REQUIRE_REDIS=1` (CI).

use std::process::{Command, Output};

mod common;

use common::{alive, children_of, shop, stderr, stdout};

/// The tests that need `redis-server`.
const REDIS_TESTS: &[&str] = &[
    "redis_runs_beside_baozi_on_a_private_server_and_stops_it_after",
    "kill_every_over_redis_accounts_for_every_committed_message",
    "a_real_loss_over_redis_fails_the_run",
    "the_private_redis_server_lives_exactly_as_long_as_the_run",
    "redis_on_a_given_server_leaves_no_keys_behind",
    "killing_the_shop_stops_its_private_redis_server",
];

/// Whether the Redis runs can go ahead: without `redis-server` they are skipped with one loud
/// line (as baozi-redis's tests do), unless `BAOZI_REQUIRE_REDIS=1` (CI), which fails them.
fn redis_here(test: &str) -> bool {
    assert!(
        REDIS_TESTS.contains(&test),
        "{test} is missing from REDIS_TESTS"
    );
    if baozi_redis::LocalServer::available() {
        return true;
    }
    let hint = baozi_redis::INSTALL_HINT;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Straight to the stderr fd, past the test harness's capture: a skip must be seen.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! baozi-shop: SKIPPED {} Redis tests ({}): redis-server not found; install it with `{hint}` !!!\n",
            REDIS_TESTS.len(),
            REDIS_TESTS.join(", ")
        );
    });
    assert!(
        !std::env::var("BAOZI_REQUIRE_REDIS").is_ok_and(|v| v == "1"),
        "BAOZI_REQUIRE_REDIS=1: the Redis tests must run here ({hint})"
    );
    false
}

/// Runs the shop and returns its output and pid (to look for what it left behind).
fn shop_with_pid(args: &[&str], env: &[(&str, &str)]) -> (Output, u32) {
    let child = Command::new(env!("CARGO_BIN_EXE_baozi-shop"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the baozi-shop binary runs");
    let pid = child.id();
    (child.wait_with_output().expect("it ends"), pid)
}

/// Pids of redis-servers that the shop with pid `shop` started. redis-server rewrites its
/// command line, but it runs in its `--dir`, which names the shop's pid.
fn private_servers_of(shop: u32) -> Vec<u32> {
    let tag = format!("baozi-redis-{shop}-");
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|d| d.to_string_lossy().contains(&tag))
        })
        .collect()
}

#[test]
fn redis_runs_beside_baozi_on_a_private_server_and_stops_it_after() {
    if !redis_here("redis_runs_beside_baozi_on_a_private_server_and_stops_it_after") {
        return;
    }
    let (o, pid) = shop_with_pid(
        &[
            "run",
            "--transport",
            "baozi,redis",
            "--count",
            "2000",
            "--maxsize",
            "16",
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["baozi", "redis"]);
    let r = &lines[1];
    assert_eq!(
        (r["sent"].as_u64(), r["received"].as_u64()),
        (Some(4000), Some(4000)),
        "{r}"
    );
    assert_eq!(r["maxsize"], 16, "{r}");
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(
        private_servers_of(pid),
        Vec::<u32>::new(),
        "the private redis-server outlived the shop"
    );
}

#[test]
fn kill_every_over_redis_accounts_for_every_committed_message() {
    if !redis_here("kill_every_over_redis_accounts_for_every_committed_message") {
        return;
    }
    let (o, pid) = shop_with_pid(
        &[
            "run",
            "--transport",
            "redis",
            "--consumers",
            "3",
            "--count",
            "15000",
            "--maxsize",
            "64",
            "--kill-every",
            "20",
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    assert_eq!(r["reordered"], 0, "{r}");
    assert!(r["kills"].as_u64().unwrap() > 0, "no kill happened: {r}");
    // A killed consumer accounts for at most one message: the one it was taking.
    let consumer_kills: u64 = r["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"].as_str().unwrap().starts_with("eater"))
        .map(|p| p["kills"].as_u64().unwrap())
        .sum();
    let in_flight_consumer = r["in_flight_consumer"].as_u64().unwrap();
    assert!(in_flight_consumer <= consumer_kills, "{r}");
    let sent = r["sent"].as_u64().unwrap();
    let received = r["received"].as_u64().unwrap();
    assert!(received + in_flight_consumer >= sent, "{r}");
    assert_eq!(
        private_servers_of(pid),
        Vec::<u32>::new(),
        "the private redis-server outlived the shop"
    );
}

#[test]
fn a_real_loss_over_redis_fails_the_run() {
    if !redis_here("a_real_loss_over_redis_fails_the_run") {
        return;
    }
    // eater-1 drops the 5th message it takes (the harness's self-check): no kill can explain it.
    let (o, _) = shop_with_pid(
        &["run", "--transport", "redis", "--count", "500", "--json"],
        &[("BAOZI_SHOP_LOSE", "5")],
    );
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(o.status.code(), Some(1), "{r}");
    assert_eq!(r["lost"], 1, "{r}");
    assert_eq!(r["verified"], false, "{r}");
}

#[test]
fn a_bad_redis_url_is_one_line_and_an_error_exit() {
    // Not a Redis URL: a usage error, before anything runs.
    for url in ["http://127.0.0.1:6379", "rediss://127.0.0.1:6379/0"] {
        let o = shop(&["run", "--transport", "redis", "--redis-url", url]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{url}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{url}: {err}");
        assert!(
            err.starts_with("baozi-shop: error: --redis-url"),
            "{url}: {err}"
        );
        assert!(o.stdout.is_empty(), "{url}");
    }
    // A server that is not there (port 1): the run fails in one line, the password unshown.
    let o = shop(&[
        "run",
        "--transport",
        "redis",
        "--redis-url",
        "redis://user:hunter2@127.0.0.1:1/0",
        "--count",
        "10",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("baozi-shop: transport redis: "), "{err}");
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn redis_without_a_server_or_url_names_the_install_command() {
    // No redis-server on PATH and no --redis-url: exit 2, one line that says how to install it.
    let o = Command::new(env!("CARGO_BIN_EXE_baozi-shop"))
        .args(["run", "--transport", "redis", "--count", "10"])
        .env("PATH", "/nonexistent")
        .output()
        .expect("the baozi-shop binary runs");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("apt-get install redis-server"), "{err}");
    assert!(err.contains("--redis-url"), "{err}");
}

#[test]
fn the_private_redis_server_lives_exactly_as_long_as_the_run() {
    if !redis_here("the_private_redis_server_lives_exactly_as_long_as_the_run") {
        return;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_baozi-shop"))
        .args(["run", "--transport", "redis", "--duration", "1.5", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the baozi-shop binary runs");
    let pid = child.id();
    // While it runs, the shop's own server is there (so the check after it can see one).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut seen = Vec::new();
    while seen.is_empty() && std::time::Instant::now() < deadline {
        seen = private_servers_of(pid);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = child.wait_with_output().expect("it ends");
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert_eq!(seen.len(), 1, "no private redis-server seen during the run");
    assert!(
        !alive(seen[0]),
        "the private redis-server outlived the shop"
    );
    assert_eq!(private_servers_of(pid), Vec::<u32>::new());
}

/// The number of keys on the Redis server at 127.0.0.1:`port` (one `DBSIZE`, spoken directly).
fn redis_keys(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the server answers");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(b"DBSIZE\r\n").unwrap();
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).expect("a reply");
    String::from_utf8_lossy(&reply[..n]).trim().to_owned()
}

#[test]
fn redis_on_a_given_server_leaves_no_keys_behind() {
    if !redis_here("redis_on_a_given_server_leaves_no_keys_behind") {
        return;
    }
    let server = baozi_redis::LocalServer::start().expect("start redis-server");
    let url = server.url();
    let o = shop(&[
        "run",
        "--transport",
        "redis",
        "--redis-url",
        &url,
        "--count",
        "3000",
        "--kill-every",
        "50",
        "--json",
    ]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(
        redis_keys(server.port()),
        ":0",
        "the run's queue is still on the server"
    );
}

#[test]
fn killing_the_shop_stops_its_private_redis_server() {
    if !redis_here("killing_the_shop_stops_its_private_redis_server") {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_baozi-shop"))
        .args(["run", "--transport", "redis", "--duration", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the baozi-shop binary runs");
    let shop = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut servers = Vec::new();
    // The run is under way once the server, its reaper and the 4 workers are there.
    while (servers.is_empty() || children_of(shop).len() < 6)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        servers = private_servers_of(shop);
    }
    assert_eq!(servers.len(), 1, "no private redis-server seen");
    assert_eq!(children_of(shop).len(), 6, "server, reaper and 4 workers");
    let dir = std::fs::read_link(format!("/proc/{}/cwd", servers[0])).expect("its directory");
    child.kill().expect("SIGKILL the shop");
    child.wait().expect("reap the shop");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(servers[0]) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !alive(servers[0]),
        "the private redis-server outlived the SIGKILLed shop"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!dir.exists(), "{} was left behind", dir.display());
}
