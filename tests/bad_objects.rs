//! Opening what is not a good queue: garbage, foreign bytes, another version or kind, truncated
//! or empty files, a header never published, no permission, a layout checksum that does not
//! match, corrupt state. Each is written into `/dev/shm/baozi-<unique>` with `std::fs` and
//! `Queue::open` must return the matching typed error, whose `Display` names the object, in
//! bounded time: never a panic, never a hang.
//!
//! Normal test harness (no fork here; the permission case runs a copy of this binary as
//! `nobody` through `std::process::Command`).

mod support;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baozi::shm::{ObjectKind, Region, ShmError, CACHE_LINE, FORMAT_VERSION, HEADER_SIZE, MAGIC};
use baozi::sync::SyncError;
use baozi::{Queue, QueueError, ShmMutex};
use support::{Rng, ShmName};

/// Header field offsets (`baozi_shm::Header` is `repr(C)`).
const VERSION_AT: u64 = 8;
const KIND_AT: u64 = 12;
const TOTAL_SIZE_AT: u64 = 16;
const STATE_AT: u64 = 36;
/// Queue layout (baozi-queue `layout.rs`): Meta on line 1, lock on 2, tail on 3, head on 4,
/// ring from line 6.
const MAXSIZE_AT: u64 = CACHE_LINE as u64;
const CAPACITY_AT: u64 = CACHE_LINE as u64 + 4;
/// The put lock's and the get lock's lines (glibc mutexes: garbage there is not ours to judge).
const LOCK_LINES: [std::ops::Range<u64>; 2] = [
    2 * CACHE_LINE as u64..3 * CACHE_LINE as u64,
    5 * CACHE_LINE as u64..6 * CACHE_LINE as u64,
];
const HEAD_AT: u64 = 4 * CACHE_LINE as u64;
const RING_AT: u64 = 7 * CACHE_LINE as u64;
const RING_BYTES: usize = 4096;
/// The endpoint registry after the ring: 64 words.
const ENDPOINTS_LEN: usize = 64 * 8;
/// A whole queue of RING_BYTES.
const QUEUE_LEN: usize = RING_AT as usize + RING_BYTES + ENDPOINTS_LEN;

/// A short wait for the cases that must end in `NotReady`.
const SHORT_WAIT: Duration = Duration::from_millis(200);
/// Any open must be answered within this, whatever is in the file (the longest legitimate
/// wait is the 2 s default, counted once for the region and once for the header).
const ANSWER_BOUND: Duration = Duration::from_secs(5);

type Q = Queue<Vec<u8>>;

/// Opens with `wait`, timing it and checking the bound.
fn open_within(name: &str, wait: Duration) -> (Result<Q, QueueError>, Duration) {
    let t0 = Instant::now();
    let r = Q::open_with(name, wait, true);
    let took = t0.elapsed();
    assert!(took < ANSWER_BOUND, "open of {name} took {took:?}");
    (r, took)
}

/// The `ShmError` of a failed open; panics on success or another kind of error. Checks that
/// the error's text names the object.
fn shm_error(name: &ShmName, r: Result<Q, QueueError>) -> ShmError {
    let err = match r {
        Ok(q) => panic!("{} opened as a queue: {q:?}", name.name()),
        Err(e) => e,
    };
    let text = err.to_string();
    let path = format!("/dev/shm/baozi-{}", name.name());
    assert!(
        text.contains(&path),
        "error text does not name {path}: {text:?}"
    );
    match err {
        QueueError::Shm(e) => e,
        other => panic!("expected a ShmError, got {other:?}"),
    }
}

fn write_file(name: &ShmName, bytes: &[u8]) {
    std::fs::write(name.path(), bytes).unwrap();
}

/// The bytes of a real queue (maxsize 8, 4 KiB ring) holding three messages.
fn real_queue_bytes() -> Vec<u8> {
    let name = ShmName::new("bad-model");
    let q = Q::create(name.name(), 8, RING_BYTES).unwrap();
    for m in [&b"pork"[..], b"cabbage", b"red bean"] {
        q.put(m.to_vec()).unwrap();
    }
    let bytes = std::fs::read(name.path()).unwrap();
    assert_eq!(bytes.len(), QUEUE_LEN);
    bytes
}

/// A copy of a real queue in a fresh file, with `patch` applied.
fn patched_queue(tag: &str, patch: impl FnOnce(&mut Vec<u8>)) -> ShmName {
    let name = ShmName::new(tag);
    let mut bytes = real_queue_bytes();
    patch(&mut bytes);
    write_file(&name, &bytes);
    name
}

fn put_u32(bytes: &mut [u8], at: u64, v: u32) {
    bytes[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: u64, v: u64) {
    bytes[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn a_copy_of_a_real_queue_opens() {
    // The control for everything below: the unpatched copy is a good queue.
    let name = patched_queue("bad-control", |_| {});
    let q = open_within(name.name(), SHORT_WAIT)
        .0
        .expect("an unpatched copy opens");
    assert_eq!(
        (q.maxsize(), q.capacity_bytes(), q.qsize()),
        (8, RING_BYTES, 3)
    );
    assert_eq!(q.get_nowait().unwrap(), b"pork");
}

#[test]
fn missing_name_is_not_found() {
    let name = ShmName::new("bad-missing");
    let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
    assert!(matches!(e, ShmError::NotFound { .. }), "{e:?}");
    assert!(!name.exists(), "a failed open created the file");
}

#[test]
fn invalid_names_are_refused() {
    let long = "x".repeat(201);
    for bad in [
        "",
        "/",
        "a/b",
        "..",
        ".",
        "with space",
        "tab\t",
        "nul\0",
        long.as_str(),
    ] {
        match Q::open(bad) {
            Err(QueueError::Shm(ShmError::InvalidName { name, .. })) => assert_eq!(name, bad),
            other => panic!("name {bad:?}: {other:?}"),
        }
    }
}

#[test]
fn garbage_is_wrong_magic_at_once() {
    let name = ShmName::new("bad-garbage");
    let mut rng = Rng::new(7);
    let bytes: Vec<u8> = (0..8192).map(|_| rng.next_u64() as u8).collect();
    write_file(&name, &bytes);
    // The default wait is 2 s; foreign bytes must not wait at all.
    let t0 = Instant::now();
    let e = shm_error(&name, Q::open(name.name()));
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "WrongMagic took {:?}",
        t0.elapsed()
    );
    match e {
        ShmError::WrongMagic { found, .. } => {
            assert_eq!(found, u64::from_le_bytes(bytes[..8].try_into().unwrap()))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn foreign_text_is_wrong_magic() {
    let name = ShmName::new("bad-foreign");
    let text = "#!/bin/sh\necho this is not a queue\n".repeat(100);
    write_file(&name, text.as_bytes());
    let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
    assert!(
        matches!(e, ShmError::WrongMagic { found, .. } if found == u64::from_le_bytes(*b"#!/bin/s")),
        "{e:?}"
    );
    assert!(e.to_string().contains("not a baozi object"), "{e}");
}

#[test]
fn magic_zero_with_a_state_word_is_wrong_magic() {
    let name = ShmName::new("bad-nomagic");
    let mut bytes = vec![0u8; 4096];
    put_u32(&mut bytes, STATE_AT, 0x5245_4459); // READY, but no magic
    write_file(&name, &bytes);
    let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
    assert!(matches!(e, ShmError::WrongMagic { found: 0, .. }), "{e:?}");
}

#[test]
fn all_zero_file_is_not_ready_after_a_bounded_wait() {
    let name = ShmName::new("bad-zeros");
    write_file(&name, &[0u8; 4096]);
    let (r, took) = open_within(name.name(), SHORT_WAIT);
    let e = shm_error(&name, r);
    assert!(
        matches!(e, ShmError::NotReady { waited, .. } if waited == SHORT_WAIT),
        "{e:?}"
    );
    assert!(
        took >= SHORT_WAIT,
        "gave up after {took:?}, before its wait"
    );
}

#[test]
fn zero_length_file_is_not_ready_after_a_bounded_wait() {
    let name = ShmName::new("bad-empty");
    write_file(&name, &[]);
    let (r, took) = open_within(name.name(), SHORT_WAIT);
    let e = shm_error(&name, r);
    assert!(matches!(e, ShmError::NotReady { .. }), "{e:?}");
    assert!(
        took >= SHORT_WAIT && took < SHORT_WAIT * 2 + Duration::from_secs(1),
        "{took:?}"
    );
}

#[test]
fn header_never_published_is_not_ready_after_a_bounded_wait() {
    let name = ShmName::new("bad-unpublished");
    // A creator that began and never finished (it may have died): Region::create + begin, no
    // publish. The region stays mapped here while the opener waits.
    let region = Region::create(name.name(), QUEUE_LEN).unwrap();
    let header = region.header().unwrap();
    header.begin(
        ObjectKind::QUEUE,
        region.len() as u64,
        0,
        std::process::id(),
    );
    let (r, took) = open_within(name.name(), SHORT_WAIT);
    let e = shm_error(&name, r);
    assert!(matches!(e, ShmError::NotReady { .. }), "{e:?}");
    assert!(
        took >= SHORT_WAIT && took < SHORT_WAIT + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(e.to_string().contains("was not initialised within"), "{e}");
    // The default wait is bounded too (2 s).
    let t0 = Instant::now();
    let e = shm_error(&name, Q::open(name.name()));
    let took = t0.elapsed();
    assert!(matches!(e, ShmError::NotReady { .. }), "{e:?}");
    assert!(
        took >= Duration::from_secs(2) && took < ANSWER_BOUND,
        "default wait took {took:?}"
    );
    drop(region);
}

#[test]
fn other_format_version_is_version_mismatch() {
    for v in [0u32, FORMAT_VERSION + 1, u32::MAX] {
        let name = patched_queue("bad-version", |b| put_u32(b, VERSION_AT, v));
        let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
        match e {
            ShmError::VersionMismatch {
                found, expected, ..
            } => {
                assert_eq!((found, expected), (v, FORMAT_VERSION))
            }
            other => panic!("version {v}: {other:?}"),
        }
    }
}

#[test]
fn shm_mutex_opened_as_queue_is_wrong_kind() {
    let name = ShmName::new("bad-mutex");
    let _m = ShmMutex::create(name.name(), 0u64).unwrap();
    let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
    assert!(
        matches!(e, ShmError::WrongKind { found, expected, .. }
            if found == ObjectKind::SYNC && expected == ObjectKind::QUEUE),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("is a sync object, not a queue"),
        "{e}"
    );
}

#[test]
fn queue_opened_as_shm_mutex_is_wrong_kind() {
    let name = ShmName::new("bad-q-as-mutex");
    let _q = Q::create(name.name(), 1, 4096).unwrap();
    match ShmMutex::<u64>::open(name.name()) {
        Err(SyncError::Shm(ShmError::WrongKind {
            found,
            expected,
            name: n,
        })) => {
            assert_eq!((found, expected), (ObjectKind::QUEUE, ObjectKind::SYNC));
            assert!(n.contains(name.name()));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn heap_or_unknown_kind_is_wrong_kind() {
    for (kind, text) in [
        (ObjectKind::HEAP, "is a heap"),
        (ObjectKind::from_raw(99), "unknown kind 99"),
    ] {
        let name = patched_queue("bad-kind", |b| put_u32(b, KIND_AT, kind.raw()));
        let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
        assert!(
            matches!(e, ShmError::WrongKind { found, .. } if found == kind),
            "{e:?}"
        );
        assert!(e.to_string().contains(text), "{e}");
    }
}

#[test]
fn truncated_files_are_truncated() {
    let full = QUEUE_LEN as u64;
    // (file length, bytes the error must say are needed)
    for (len, needed) in [
        (RING_AT + 100, full),
        (RING_AT, full),
        (HEADER_SIZE as u64, full),
        (40, HEADER_SIZE as u64),
        (1, HEADER_SIZE as u64),
    ] {
        let name = patched_queue("bad-trunc", |b| b.truncate(len as usize));
        let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
        match e {
            ShmError::Truncated {
                size, needed: n, ..
            } => assert_eq!((size, n), (len, needed)),
            other => panic!("length {len}: {other:?}"),
        }
    }
}

#[test]
fn file_shrunk_after_creation_is_truncated() {
    // A real queue whose creator persisted it and left; the file was then cut short.
    let name = ShmName::new("bad-shrunk");
    let q = Q::create(name.name(), 8, RING_BYTES).unwrap();
    q.persist();
    drop(q);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(name.path())
        .unwrap();
    f.set_len(RING_AT + 64).unwrap();
    let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
    assert!(
        matches!(e, ShmError::Truncated { size, .. } if size == RING_AT + 64),
        "{e:?}"
    );
}

#[test]
fn edited_maxsize_or_capacity_is_layout_mismatch() {
    let edits: [(&str, u64, u32); 3] = [
        ("maxsize", MAXSIZE_AT, 9),
        ("maxsize", MAXSIZE_AT, 0),
        ("capacity", CAPACITY_AT, 2048),
    ];
    for (what, at, v) in edits {
        let name = patched_queue("bad-layout", |b| put_u32(b, at, v));
        let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
        assert!(
            matches!(e, ShmError::LayoutMismatch { .. }),
            "{what} = {v}: {e:?}"
        );
        assert!(e.to_string().contains("layout checksum"), "{e}");
    }
}

#[test]
fn edited_maxsize_in_a_live_queue_is_layout_mismatch() {
    // The same edit through the file of a queue whose creator is still running.
    let name = ShmName::new("bad-live");
    let _q = Q::create(name.name(), 8, RING_BYTES).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(name.path())
        .unwrap();
    f.write_all_at(&64u32.to_le_bytes(), MAXSIZE_AT).unwrap();
    let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
    assert!(matches!(e, ShmError::LayoutMismatch { .. }), "{e:?}");
}

#[test]
fn garbage_state_word_is_corrupt() {
    let name = patched_queue("bad-state", |b| put_u32(b, STATE_AT, 0xdead_beef));
    let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
    assert!(matches!(e, ShmError::Corrupt { .. }), "{e:?}");
}

#[test]
fn total_size_below_the_header_is_corrupt() {
    let name = patched_queue("bad-total", |b| put_u64(b, TOTAL_SIZE_AT, 16));
    let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
    assert!(matches!(e, ShmError::Corrupt { .. }), "{e:?}");
}

#[test]
fn total_size_beyond_the_file_is_truncated() {
    let name = patched_queue("bad-total-big", |b| put_u64(b, TOTAL_SIZE_AT, 1 << 30));
    let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
    assert!(
        matches!(e, ShmError::Truncated { needed, .. } if needed == 1 << 30),
        "{e:?}"
    );
}

#[test]
fn impossible_cursor_is_queue_corrupt() {
    // A head cursor that is not 8-aligned: no correct process writes it.
    let name = patched_queue("bad-cursor", |b| put_u32(b, HEAD_AT, 3));
    match open_within(name.name(), SHORT_WAIT).0 {
        Err(QueueError::Corrupt { name: n, detail }) => {
            assert!(n.contains(name.name()), "{n}");
            assert!(detail.contains("cursor"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // And 2^32 - 1 items between the cursors.
    let name = patched_queue("bad-cursor", |b| put_u32(b, HEAD_AT + 4, 4));
    let r = open_within(name.name(), SHORT_WAIT).0;
    assert!(matches!(r, Err(QueueError::Corrupt { .. })), "{r:?}");
}

/// Environment variable that turns [`permission_probe_child`] into the probe.
const PROBE_VAR: &str = "BAOZI_BAD_OBJECTS_PERMISSION_PROBE";
const NOBODY: u32 = 65534;

#[test]
fn mode_000_file_is_permission_denied() {
    let name = patched_queue("bad-perm", |_| {});
    std::fs::set_permissions(name.path(), std::fs::Permissions::from_mode(0o000)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let e = shm_error(&name, open_within(name.name(), SHORT_WAIT).0);
        assert!(matches!(e, ShmError::PermissionDenied { .. }), "{e:?}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the io::Error is the source"
        );
        return;
    }
    // As root the mode is not enforced, so this process cannot see EACCES. Ask a copy of this
    // test binary running as `nobody` instead.
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "permission_probe_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(PROBE_VAR, name.name())
        .uid(NOBODY)
        .gid(NOBODY)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            println!("NOTE: running as root and cannot start a process as nobody ({e}): skipping the EACCES check");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if stdout.contains("PROBE-CANNOT-RUN") || !stdout.contains("PROBE:") {
        println!(
            "NOTE: running as root and the probe as nobody could not run ({}; {}): skipping the EACCES check",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    assert!(
        out.status.success(),
        "probe as nobody: {}\n{stdout}",
        out.status
    );
    assert!(
        stdout.contains("PROBE: PermissionDenied"),
        "probe as nobody said: {stdout}"
    );
    let said = stdout
        .find("PROBE:")
        .map_or("", |at| stdout[at..].lines().next().unwrap_or(""));
    println!("    as nobody: {said}");
    // And root itself is let in (the mode is not enforced for it): the object is a good queue.
    let q = open_within(name.name(), SHORT_WAIT)
        .0
        .expect("root opens a mode-000 queue");
    assert_eq!(q.qsize(), 3);
}

/// Not a test on its own: does nothing unless [`mode_000_file_is_permission_denied`] runs this
/// binary as `nobody` with [`PROBE_VAR`] set, then reports what opening the file gave.
#[test]
fn permission_probe_child() {
    let Ok(name) = std::env::var(PROBE_VAR) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        println!("PROBE-CANNOT-RUN: still root");
        return;
    }
    match Q::open_with(&name, SHORT_WAIT, true) {
        Err(QueueError::Shm(ShmError::PermissionDenied { name: n, source })) => {
            assert!(n.contains(&name), "{n}");
            assert_eq!(source.raw_os_error(), Some(libc::EACCES));
            println!("PROBE: PermissionDenied ({source})");
        }
        other => panic!("PROBE: expected PermissionDenied, got {other:?}"),
    }
}

/// A real queue with a few random bytes changed (anywhere except the pthread mutex, whose
/// bytes glibc trusts), hundreds of times: open either succeeds or returns an error, at once;
/// when it succeeds the queue answers qsize/full and `get_nowait` without panicking.
#[test]
fn random_corruption_never_panics_or_hangs() {
    let base = real_queue_bytes();
    let name = ShmName::new("bad-fuzz");
    let (mut rng, seed) = Rng::from_env("BAOZI_FUZZ_SEED");
    let opened = AtomicU64::new(0);
    for round in 0..400 {
        let mut bytes = base.clone();
        let mut flips = Vec::new();
        for _ in 0..rng.range(1, 4) {
            let at = loop {
                let at = match rng.below(4) {
                    0 => rng.below(HEADER_SIZE as u64),
                    1 => MAXSIZE_AT + rng.below(16),
                    2 => 3 * CACHE_LINE as u64 + rng.below(2 * CACHE_LINE as u64),
                    _ => RING_AT + rng.below(256),
                };
                if !LOCK_LINES.iter().any(|l| l.contains(&at)) {
                    break at;
                }
            };
            let v = rng.next_u64() as u8;
            bytes[at as usize] = v;
            flips.push((at, v));
        }
        write_file(&name, &bytes);
        let t0 = Instant::now();
        let outcome = std::panic::catch_unwind(|| {
            if let Ok(q) = Q::open_with(name.name(), Duration::ZERO, false) {
                opened.fetch_add(1, Ordering::Relaxed);
                let _ = (q.qsize(), q.full(), q.used_bytes(), q.is_closed());
                for _ in 0..4 {
                    let _ = q.get_nowait();
                }
            }
        });
        assert!(
            outcome.is_ok(),
            "round {round} (BAOZI_FUZZ_SEED={seed}): panicked with bytes {flips:?} changed"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "round {round}: took {:?}",
            t0.elapsed()
        );
    }
    println!(
        "    400 corrupted copies: {} opened, the rest refused",
        opened.load(Ordering::Relaxed)
    );
    assert_eq!(MAGIC, u64::from_le_bytes(base[..8].try_into().unwrap()));
}
