//! The bun shop (包子铺): baozi's producer–consumer harness.
//!
//! Bakers (producers) put buns (messages) into a counter (a queue); eaters (consumers) take
//! them. The same harness runs the seed scenario — two bakers, one eater, a counter that holds one
//! bun — and N producers × M consumers workloads that
//!
//! * verify that every message whose send returned Ok arrives exactly once, and in each
//!   producer's order (every message carries producer id, sequence number and send time);
//! * report throughput and end-to-end latency percentiles;
//! * run the same workload over the baozi queue, a pipe, a Unix socket, a POSIX message queue or
//!   a queue on a Redis server;
//! * kill a random worker with SIGKILL at an interval and start a replacement that carries on its
//!   share, and still account for every message exactly.
//!
//! ```
//! use baozi_shop::{run, Scenario, StopRule, TransportKind};
//!
//! let scenario = Scenario {
//!     producers: 2,
//!     consumers: 2,
//!     maxsize: 16,
//!     size: 64,
//!     stop: StopRule::Count(1000),
//!     ..Scenario::default()
//! };
//! let report = run(&scenario).unwrap();
//! assert!(report.verified);
//! assert_eq!((report.sent, report.received, report.lost, report.duplicated), (2000, 2000, 0, 0));
//! ```
//!
//! Workers are forked from the calling thread, which must be the process's only thread.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod chaos;
mod histogram;
mod ledger;
pub mod message;
mod plot;
mod report;
mod run;
mod seed;
mod sys;
mod transport;

use std::fmt;
use std::time::Duration;

use transport::Shape;

pub use histogram::Latency;
pub use plot::plot_svg;
pub use report::{human_ns, Percentiles, ProcessCount, Report, Spread, Summary, SCHEMA_VERSION};
pub use run::run;
pub use seed::{run_seed, SEED_PACE};
pub use transport::TransportKind;

/// The largest number of producers or consumers a run accepts.
pub const MAX_WORKERS: u32 = 256;

/// The watchdog's default: no progress for this long is a deadlock.
pub const DEFAULT_STALL: Duration = Duration::from_secs(10);

/// Sequence numbers a run may use in all (the delivery ledger holds one byte per message).
const LEDGER_BUDGET: u64 = 1 << 28;

/// When producers stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StopRule {
    /// Each producer sends this many messages.
    Count(u64),
    /// Producers send until this much time has passed.
    Duration(Duration),
}

/// A workload: who sends what over which transport, and whether to kill workers.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Producer processes (≥ 1).
    pub producers: u32,
    /// Consumer processes (≥ 1).
    pub consumers: u32,
    /// Item limit of the queue (0: no item limit, as Python's `maxsize <= 0`).
    pub maxsize: usize,
    /// Bytes per message (≥ 24: producer id, sequence, timestamp).
    pub size: usize,
    /// Byte capacity of the baozi queue; `None` picks room for `maxsize` messages (or 1 MiB when
    /// `maxsize` is 0).
    pub capacity: Option<usize>,
    /// When producers stop.
    pub stop: StopRule,
    /// Kill a random worker with SIGKILL this often, and start a replacement.
    pub kill_every: Option<Duration>,
    /// The transport.
    pub transport: TransportKind,
    /// Offered load in messages per second over all producers (`None`: as fast as they can).
    /// Each producer sends on a fixed schedule and stamps each message with the instant it was
    /// due, so a late send counts its lateness as latency (no coordinated omission).
    pub rate: Option<f64>,
    /// The watchdog: a run in which no message is sent or taken for this long is stopped and
    /// reported as a deadlock.
    pub stall: Duration,
    /// Whether to show the live progress line on stderr.
    pub progress: ProgressMode,
    /// The Redis server of [`TransportKind::Redis`] (`redis://[user:password@]host[:port][/db]`);
    /// `None` starts a private `redis-server` for the run and stops it after.
    pub redis_url: Option<String>,
}

/// When the live progress line is shown (on stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// Never.
    #[default]
    Never,
    /// When stderr is a terminal.
    Auto,
    /// Always, also into a file or pipe.
    Always,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            producers: 2,
            consumers: 2,
            maxsize: 1024,
            size: 64,
            capacity: None,
            stop: StopRule::Count(100_000),
            kill_every: None,
            transport: TransportKind::Baozi,
            rate: None,
            stall: DEFAULT_STALL,
            progress: ProgressMode::Never,
            redis_url: None,
        }
    }
}

/// Why a run could not be done.
#[derive(Debug)]
pub enum ShopError {
    /// The scenario makes no sense (the command line exits with 2).
    Usage(String),
    /// Setting up or running the workers failed.
    Failed(String),
}

impl fmt::Display for ShopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShopError::Usage(s) | ShopError::Failed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for ShopError {}

pub(crate) fn frame_len(size: usize) -> usize {
    8 + size.div_ceil(8) * 8
}

impl Scenario {
    /// The byte capacity the baozi queue gets.
    pub fn effective_capacity(&self) -> usize {
        self.capacity.unwrap_or_else(|| {
            let frames = if self.maxsize == 0 {
                0
            } else {
                self.maxsize.saturating_mul(frame_len(self.size))
            };
            frames.max(1 << 20).clamp(64, 1 << 30)
        })
    }

    /// Checks the scenario, saying what is wrong in one line.
    ///
    /// # Errors
    /// [`ShopError::Usage`].
    pub fn validate(&self) -> Result<(), ShopError> {
        let usage = |s: String| Err(ShopError::Usage(s));
        if self.producers == 0 || self.producers > MAX_WORKERS {
            return usage(format!(
                "--producers must be between 1 and {MAX_WORKERS}, not {}",
                self.producers
            ));
        }
        if self.consumers == 0 || self.consumers > MAX_WORKERS {
            return usage(format!(
                "--consumers must be between 1 and {MAX_WORKERS}, not {}",
                self.consumers
            ));
        }
        if self.size < message::STAMP_LEN {
            return usage(format!(
                "--size must be at least {} bytes (producer id, sequence and timestamp), not {}",
                message::STAMP_LEN,
                self.size
            ));
        }
        if self.size > (1 << 30) - 8 {
            return usage(format!(
                "--size {} is larger than any queue can hold (1 GiB)",
                self.size
            ));
        }
        if let Some(c) = self.capacity {
            if !(64..=1 << 30).contains(&c) {
                return usage(format!(
                    "--capacity must be between 64 and {} bytes, not {c}",
                    1u64 << 30
                ));
            }
        }
        if self.maxsize > baozi_queue::MAX_MAXSIZE {
            return usage(format!(
                "--maxsize must be at most {}, not {}",
                baozi_queue::MAX_MAXSIZE,
                self.maxsize
            ));
        }
        match self.stop {
            StopRule::Count(0) => return usage("--count must be at least 1".to_owned()),
            StopRule::Count(n) if n > LEDGER_BUDGET / u64::from(self.producers) => {
                return usage(format!(
                    "--count {n} is too large: at most {} messages per producer with {} producers",
                    LEDGER_BUDGET / u64::from(self.producers),
                    self.producers
                ))
            }
            StopRule::Duration(d) if d.is_zero() || d > Duration::from_secs(24 * 3600) => {
                return usage("--duration must be more than 0 and at most 86400 seconds".to_owned())
            }
            _ => {}
        }
        if self
            .kill_every
            .is_some_and(|k| k < Duration::from_millis(1))
        {
            return usage("--kill-every must be at least 1 ms".to_owned());
        }
        if self.stall < Duration::from_millis(100) || self.stall > Duration::from_secs(86_400) {
            return usage("--stall-timeout must be between 0.1 and 86400 seconds".to_owned());
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1e9) {
                return usage(
                    "--rate must be a number of messages per second above 0 and at most 1e9"
                        .to_owned(),
                );
            }
            // Each producer sends every producers/rate seconds: the watchdog must not take that
            // quiet for a stall.
            let gap = f64::from(self.producers) / rate;
            if gap * 2.0 > self.stall.as_secs_f64() {
                return usage(format!(
                    "--rate {rate} leaves {gap:.1} s between two messages of a producer: raise --stall-timeout above {:.1} s",
                    gap * 2.0
                ));
            }
        }
        self.transport.check(self.shape()).map_err(ShopError::Usage)
    }

    pub(crate) fn shape(&self) -> Shape<'_> {
        Shape {
            maxsize: self.maxsize,
            size: self.size,
            capacity: self.effective_capacity(),
            redis_url: self.redis_url.as_deref(),
        }
    }

    pub(crate) fn per_producer(&self) -> u64 {
        match self.stop {
            StopRule::Count(n) => n,
            StopRule::Duration(_) => LEDGER_BUDGET / u64::from(self.producers),
        }
    }
}
