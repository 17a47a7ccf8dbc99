//! The `baozi-shop` binary as a user runs it: the seed scenario, harness runs that verify
//! exactly-once delivery (with and without kill -9), the JSON report, and bad flags.

use std::process::{Command, Output};

fn shop(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baozi-shop"))
        .args(args)
        .output()
        .expect("the baozi-shop binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_seed_scenario_bakes_and_eats_six_buns_exactly_once_in_order() {
    let o = shop(&["--pace", "20"]);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "stdout:\n{out}\nstderr:\n{}",
        stderr(&o)
    );
    for baker in ["baker-1", "baker-2"] {
        for bun in ["猪肉", "白菜", "豆沙"] {
            let baked = out
                .lines()
                .filter(|l| l.contains(baker) && l.contains("baked") && l.contains(bun))
                .count();
            let eaten = out
                .lines()
                .filter(|l| l.contains("ate") && l.contains(bun) && l.contains(baker))
                .count();
            assert_eq!((baked, eaten), (1, 1), "{baker} {bun}:\n{out}");
        }
    }
    assert!(out.contains("pid"), "{out}");
    assert!(out.contains("verified: 6 buns baked, 6 eaten"), "{out}");
}

#[test]
fn a_four_by_four_run_delivers_every_message_exactly_once() {
    let o = shop(&[
        "run",
        "--producers",
        "4",
        "--consumers",
        "4",
        "--maxsize",
        "64",
        "--count",
        "20000",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(r["sent"], 80_000);
    assert_eq!(r["received"], 80_000);
    for field in [
        "lost",
        "duplicated",
        "reordered",
        "in_flight_at_kill",
        "kills",
    ] {
        assert_eq!(r[field], 0, "{field}");
    }
    assert_eq!(r["verified"], true);
}

#[test]
fn the_json_report_has_every_documented_field() {
    let o = shop(&["run", "--count", "500", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    for field in [
        "producers",
        "consumers",
        "maxsize",
        "size",
        "sent",
        "received",
        "lost",
        "duplicated",
        "reordered",
        "in_flight_at_kill",
        "kills",
        "seconds",
        "msgs_per_s",
        "mb_per_s",
        "latency_ns",
        "transport",
    ] {
        assert!(!r[field].is_null(), "missing {field}: {r}");
    }
    for p in ["p50", "p90", "p99", "p999", "max"] {
        assert!(r["latency_ns"][p].is_u64(), "latency_ns.{p}: {r}");
    }
    assert!(r["latency_ns"]["p50"].as_u64() <= r["latency_ns"]["max"].as_u64());
    assert_eq!(r["transport"], "baozi");
}

#[test]
fn kill_every_loses_and_duplicates_nothing_that_was_committed() {
    let o = shop(&[
        "run",
        "--producers",
        "2",
        "--consumers",
        "2",
        "--maxsize",
        "8",
        "--count",
        "200000",
        "--kill-every",
        "15",
        "--json",
    ]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    assert_eq!(r["reordered"], 0, "{r}");
    assert!(r["kills"].as_u64().unwrap() > 0, "no kill happened: {r}");
    // Everything sent arrived, except what was in flight in a killed process.
    let sent = r["sent"].as_u64().unwrap();
    let received = r["received"].as_u64().unwrap();
    let in_flight = r["in_flight_at_kill"].as_u64().unwrap();
    assert!(in_flight <= r["kills"].as_u64().unwrap(), "{r}");
    assert!(
        received + r["in_flight_consumer"].as_u64().unwrap() >= sent,
        "{r}"
    );
}

#[test]
fn every_transport_runs_the_same_workload_in_one_run() {
    let o = shop(&[
        "run",
        "--transport",
        "baozi,pipe,unix,mq",
        "--count",
        "2000",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["baozi", "pipe", "unix", "mq"]);
    for r in &lines {
        assert_eq!(r["received"], 4000, "{r}");
        assert_eq!(r["verified"], true, "{r}");
    }
}

#[test]
fn the_plot_is_an_svg_file() {
    let path = std::env::temp_dir().join(format!("baozi-shop-plot-{}.svg", std::process::id()));
    let o = shop(&["run", "--count", "2000", "--plot", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&path).expect("plot written");
    let _ = std::fs::remove_file(&path);
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert!(svg.contains("polyline"));
}

#[test]
fn bad_flags_exit_with_2_and_one_line_without_a_panic() {
    let cases: &[&[&str]] = &[
        &["run", "--producers", "0"],
        &["run", "--consumers", "0"],
        &["run", "--size", "8"],
        &["run", "--size", "100000", "--capacity", "4096"],
        &["run", "--count", "0"],
        &["run", "--duration", "-1"],
        &["run", "--duration", "nan"],
        &["run", "--count", "10", "--duration", "1"],
        &["run", "--kill-every", "0"],
        &["run", "--transport", "carrier-pigeon"],
        &["run", "--size", "5000", "--transport", "pipe"],
        &["run", "--producers", "lots"],
        &["run", "--plot", "/no/such/dir/x.svg"],
        &["--no-such-flag"],
    ];
    for args in cases {
        let o = shop(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("baozi-shop: error: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn maxsize_zero_means_no_item_limit() {
    let o = shop(&["run", "--maxsize", "0", "--count", "3000", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(r["maxsize"], 0);
    assert_eq!(r["received"], 6000);
}

/// Pids whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = ent.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid == parent {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_some_and(|s| s != 'Z')
    })
}

#[test]
fn killing_the_shop_kills_its_bakers_and_eaters() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baozi-shop"))
        .args([
            "run",
            "--producers",
            "2",
            "--consumers",
            "2",
            "--duration",
            "30",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the baozi-shop binary runs");
    let shop = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut workers = Vec::new();
    while workers.len() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
        workers = children_of(shop);
    }
    assert_eq!(workers.len(), 4, "the shop's workers: {workers:?}");
    child.kill().expect("SIGKILL the shop");
    child.wait().expect("reap the shop");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while workers.iter().any(|&p| alive(p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left: Vec<u32> = workers.iter().copied().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "workers outlived the shop: {left:?}");
}
