//! The `baozi-shop` binary as a user runs it: the seed scenario, harness runs that verify
//! exactly-once delivery (with and without kill -9), the JSON report, and bad flags.

mod common;

use std::process::Command;

use common::{alive, children_of, shop, stderr, stdout};

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
    assert_eq!(r["schema_version"], 2);
    // Every count the text report shows is in the JSON too.
    for field in [
        "effective_depth",
        "garbage",
        "in_flight_producer",
        "in_flight_consumer",
        "stranded",
        "deadlocks",
        "runs",
        "verified",
        "processes",
    ] {
        assert!(!r[field].is_null(), "missing {field}: {r}");
    }
    let text = stdout(&shop(&["run", "--count", "500"]));
    for label in [
        "sent",
        "received",
        "lost",
        "duplicated",
        "reordered",
        "garbage",
        "in flight at kill",
        "stranded",
        "deadlocks",
        "kills",
        "effective depth",
    ] {
        assert!(text.contains(label), "text report lacks {label}: {text}");
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
    // Measured, not inferred (lost is 0 above): every committed message arrived, or a killed
    // consumer's mark names it.
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
fn the_plot_has_one_curve_per_transport_a_legend_and_clean_labels() {
    let path = std::env::temp_dir().join(format!("baozi-shop-plot-{}.svg", std::process::id()));
    let o = shop(&[
        "run",
        "--count",
        "2000",
        "--transport",
        "baozi,mq",
        "--plot",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(&path).expect("plot written");
    let _ = std::fs::remove_file(&path);
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
    for legend in ["baozi (depth", "mq (depth 10)"] {
        assert!(svg.contains(legend), "no legend {legend}: {svg}");
    }
    for label in [">90%<", ">99.9%<", ">99.999%<", "log scale"] {
        assert!(svg.contains(label), "no {label}: {svg}");
    }
    assert!(!svg.contains("0000000"), "unrounded label: {svg}");
}

#[test]
fn a_stopped_consumer_is_reported_as_a_deadlock_with_a_nonzero_exit() {
    let child = Command::new(env!("CARGO_BIN_EXE_baozi-shop"))
        .args([
            "run",
            "--consumers",
            "1",
            "--maxsize",
            "4",
            "--duration",
            "60",
            "--stall-timeout",
            "1",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the baozi-shop binary runs");
    let shop = child.id();
    let start = std::time::Instant::now();
    let mut eater = None;
    while eater.is_none() && start.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Consumers are forked first: the eater is the oldest of the workers.
        let workers = children_of(shop);
        if workers.len() == 3 {
            eater = workers.into_iter().min();
        }
    }
    let eater = eater.expect("the shop's eater");
    let stopped = Command::new("kill")
        .args(["-STOP", &eater.to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let o = child.wait_with_output().expect("the shop ends");
    // One stall timeout after the stop (plus slack), not the 60 s the run was asked for.
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(r["deadlocks"], 1, "{r}");
    assert_eq!(r["verified"], false, "{r}");
    assert!(!alive(eater), "the stopped eater was left behind");
}

#[test]
fn repeat_reports_the_median_and_spread_of_each_run() {
    let o = shop(&["run", "--count", "2000", "--repeat", "3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(r["runs"], 3, "{r}");
    assert_eq!(r["sent"], 12_000, "{r}");
    assert_eq!(r["received"], 12_000, "{r}");
    for figure in ["msgs_per_s", "p50_ns", "p99_ns", "seconds"] {
        let f = &r["repeat"][figure];
        let (lo, med, hi) = (
            f["min"].as_f64().unwrap(),
            f["median"].as_f64().unwrap(),
            f["max"].as_f64().unwrap(),
        );
        assert!(lo <= med && med <= hi, "{figure}: {f}");
    }
    assert_eq!(r["msgs_per_s"], r["repeat"]["msgs_per_s"]["median"]);
    let text = stdout(&shop(&["run", "--count", "2000", "--repeat", "2"]));
    assert!(text.contains("over 2 runs, median"), "{text}");
}

#[test]
fn a_fixed_rate_paces_the_producers() {
    // 2 producers × 500 messages at 1000 msgs/s in all: half a second at least.
    let o = shop(&[
        "run",
        "--count",
        "500",
        "--rate",
        "1000",
        "--json",
        "--transport",
        "baozi,pipe",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for line in stdout(&o).lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert_eq!(r["rate"], 1000.0, "{r}");
        assert_eq!(r["received"], 1000, "{r}");
        let secs = r["seconds"].as_f64().unwrap();
        assert!(secs >= 0.45, "a 1000 msgs/s run of 1000 took {secs} s");
        assert!(r["msgs_per_s"].as_f64().unwrap() < 1500.0, "{r}");
    }
}

#[test]
fn each_transport_reports_its_effective_depth() {
    let o = shop(&[
        "run",
        "--count",
        "200",
        "--maxsize",
        "64",
        "--transport",
        "baozi,pipe,mq",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let depths: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["effective_depth"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(depths[0], 64, "baozi holds maxsize messages");
    // A 64 KiB pipe holds 1024 messages of 64 B (more if the system's default is larger).
    assert!(depths[1] >= 64, "{depths:?}");
    assert!(depths[2] <= 64 && depths[2] >= 1, "{depths:?}");
}

#[test]
fn the_progress_line_starts_at_once_with_an_eta_and_a_time_bar_in_duration_mode() {
    let o = shop(&["run", "--duration", "1.5", "--progress", "always"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let frames: Vec<&str> = err
        .split(['\r', '\n'])
        .filter(|f| f.contains("ETA"))
        .collect();
    let first = frames
        .first()
        .unwrap_or_else(|| panic!("no progress line: {err:?}"));
    // Drawn within the first second, and the bar is not full at the start.
    assert!(first.starts_with("00:00:00"), "{first:?}");
    assert!(
        !first.contains("[=============================="),
        "{first:?}"
    );
    assert!(
        first.contains("ETA 1s") || first.contains("ETA 2s"),
        "{first:?}"
    );
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
        &["shm"],
        &["run", "--repeat", "0"],
        &["run", "--rate", "0"],
        &["run", "--rate", "-5"],
        &["run", "--stall-timeout", "0"],
        &["run", "--rate", "0.1", "--stall-timeout", "5"],
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

/// A baozi header as a creator writes it (see baozi-shm's header.rs), for `shm clean` tests.
fn header(total: u64, creator: u32, ready: bool) -> Vec<u8> {
    let mut h = vec![0u8; total as usize];
    h[0..8].copy_from_slice(&baozi_shm::MAGIC.to_le_bytes());
    h[8..12].copy_from_slice(&baozi_shm::FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&4u32.to_le_bytes());
    h[16..24].copy_from_slice(&total.to_le_bytes());
    h[32..36].copy_from_slice(&creator.to_le_bytes());
    let state: u32 = if ready { 0x5245_4459 } else { 0x494e_4954 };
    h[36..40].copy_from_slice(&state.to_le_bytes());
    h
}

/// A pid that no longer exists: a child that has been reaped.
fn dead_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("true runs");
    let pid = c.id();
    c.wait().expect("reaped");
    pid
}

#[test]
fn shm_clean_removes_only_validated_leftovers_and_says_why_it_keeps_the_rest() {
    let me = std::process::id();
    let path = |n: &str| format!("/dev/shm/baozi-shoptest-{me}-{n}");
    let junk = path("junk");
    let unready = path("unready");
    let leftover = path("leftover");
    let held = path("held");
    std::fs::write(&junk, b"junk\n").unwrap();
    std::fs::write(&unready, header(4096, dead_pid(), false)).unwrap();
    std::fs::write(&leftover, header(4096, dead_pid(), true)).unwrap();
    std::fs::write(&held, header(4096, dead_pid(), true)).unwrap();
    let holder = std::fs::File::open(&held).unwrap();

    let dry = shop(&["shm", "clean", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let out = stdout(&dry);
    assert!(
        out.contains(&format!("would remove shoptest-{me}-leftover")),
        "{out}"
    );
    for f in [&junk, &unready, &leftover, &held] {
        assert!(std::path::Path::new(f).exists(), "--dry-run removed {f}");
    }

    let o = shop(&["shm", "clean"]);
    let out = stdout(&o);
    let gone = |f: &str| !std::path::Path::new(f).exists();
    let line = |n: &str| {
        out.lines()
            .find(|l| l.contains(&format!("shoptest-{me}-{n}")))
            .unwrap_or_default()
            .to_owned()
    };
    let (junk_kept, unready_kept, leftover_gone, held_kept) =
        (!gone(&junk), !gone(&unready), gone(&leftover), !gone(&held));
    drop(holder);
    for f in [&junk, &unready, &leftover, &held] {
        let _ = std::fs::remove_file(f);
    }
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        junk_kept && line("junk").contains("header not valid"),
        "{out}"
    );
    assert!(
        unready_kept && line("unready").contains("not finished"),
        "{out}"
    );
    assert!(
        held_kept && line("held").contains(&format!("open in [{me}]")),
        "{out}"
    );
    assert!(
        leftover_gone && line("leftover").starts_with("removed"),
        "{out}"
    );
}

#[test]
fn kill_every_over_a_pipe_accounts_exactly_too() {
    let o = shop(&[
        "run",
        "--consumers",
        "3",
        "--count",
        "100000",
        "--kill-every",
        "10",
        "--transport",
        "pipe",
        "--json",
    ]);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    assert!(r["kills"].as_u64().unwrap() > 0, "{r}");
    let sent = r["sent"].as_u64().unwrap();
    let received = r["received"].as_u64().unwrap();
    // `received` also counts delivered sends of killed producers, which `sent` leaves out.
    assert!(
        received + r["in_flight_consumer"].as_u64().unwrap() >= sent,
        "{r}"
    );
}

#[test]
fn a_real_loss_is_reported_even_in_a_run_that_kills_consumers() {
    // Each eater-1 process drops the first message it takes (BAOZI_SHOP_LOSE, the harness's
    // self-check) while consumers are being killed: those losses must not be written off as
    // "taken by a killed consumer" (the old inference, missing.min(consumer kills), hid them).
    let o = Command::new(env!("CARGO_BIN_EXE_baozi-shop"))
        .args([
            "run",
            "--producers",
            "1",
            "--consumers",
            "3",
            "--count",
            "200000",
            "--maxsize",
            "8",
            "--kill-every",
            "20",
            "--json",
        ])
        .env("BAOZI_SHOP_LOSE", "1")
        .output()
        .expect("the baozi-shop binary runs");
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("one JSON object");
    assert_eq!(o.status.code(), Some(1), "{r}");
    assert_eq!(r["verified"], false, "{r}");
    let eater1_processes = r["processes"][0]["kills"].as_u64().unwrap() + 1;
    let lost = r["lost"].as_u64().unwrap();
    assert!(lost >= 1 && lost <= eater1_processes, "{r}");
    assert!(r["kills"].as_u64().unwrap() > 0, "{r}");
}
