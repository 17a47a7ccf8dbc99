//! The run's report: human text, `--json`, `--repeat` summaries, and the live progress line.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;

use crate::histogram::Latency;
use crate::transport::TransportKind;
use crate::{ProgressMode, StopRule};

/// The version of the `--json` schema (documented in the shop's README). Bumped when a field
/// changes meaning or goes away; new fields may appear without a bump.
pub const SCHEMA_VERSION: u32 = 2;

/// Latency percentiles in nanoseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest seen.
    pub max: u64,
}

/// One worker process's share.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessCount {
    /// "baker-N" or "eater-N".
    pub name: String,
    /// The slot's latest pid.
    pub pid: u32,
    /// Messages sent (producers: sends that returned Ok) or taken (consumers).
    pub messages: u64,
    /// How many times this slot's process was killed and replaced.
    pub kills: u32,
}

/// What a run measured and verified.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The transport the workload ran over.
    pub transport: TransportKind,
    /// Producer processes.
    pub producers: u32,
    /// Consumer processes.
    pub consumers: u32,
    /// The transport's item limit as built (0: none).
    pub maxsize: usize,
    /// How many messages of this size the transport holds before a send blocks (measured for
    /// pipe and socket; the message queue is capped by `/proc/sys/fs/mqueue/msg_max`).
    pub effective_depth: u64,
    /// Bytes per message.
    pub size: usize,
    /// Offered load in messages per second (`None`: as fast as possible).
    pub rate: Option<f64>,
    /// Sends that returned Ok.
    pub sent: u64,
    /// Deliveries, duplicates included.
    pub received: u64,
    /// Messages whose send returned Ok, that nobody received, and that no killed process was
    /// holding: real losses. Must be 0.
    pub lost: u64,
    /// Extra deliveries of a message already delivered. Must be 0.
    pub duplicated: u64,
    /// Messages a consumer saw after a later one from the same producer. Must be 0.
    pub reordered: u64,
    /// Received messages that do not parse, or name an unknown producer. Must be 0.
    pub garbage: u64,
    /// Messages absent because the process holding them was killed: `in_flight_producer +
    /// in_flight_consumer`.
    pub in_flight_at_kill: u64,
    /// Of those, sends in flight in killed producers (the send had not returned).
    pub in_flight_producer: u64,
    /// Of those, messages a killed consumer had taken and not recorded: measured from the mark
    /// the consumer writes in shared memory before its take commits.
    pub in_flight_consumer: u64,
    /// Committed messages still undelivered when a stalled run was stopped (0 unless
    /// `deadlocks` > 0).
    pub stranded: u64,
    /// Stalls: the watchdog saw no message sent or taken for the stall timeout and stopped the
    /// run. Must be 0.
    pub deadlocks: u64,
    /// Processes killed by `--kill-every`.
    pub kills: u64,
    /// Wall time from start until every message was drained.
    pub seconds: f64,
    /// Deliveries per second.
    pub msgs_per_s: f64,
    /// Payload megabytes (10^6) per second.
    pub mb_per_s: f64,
    /// End-to-end latency, send to receive.
    pub latency_ns: Percentiles,
    /// Per-process counts.
    pub processes: Vec<ProcessCount>,
    /// Whether every check passed: lost, duplicated, reordered, garbage and deadlocks all 0.
    pub verified: bool,
    /// Runs behind this report (`--repeat`); counts are summed over them and latency
    /// percentiles come from their merged histograms.
    pub runs: u32,
    /// With more than one run: the median and spread of each run's figures.
    pub repeat: Option<Summary>,
    /// Latency samples behind the percentiles (for the plot).
    #[serde(skip)]
    pub(crate) latency: Latency,
}

/// The median and spread of one figure over several runs.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (at least one).
    pub fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }

    /// (max - min) / median, in percent.
    pub fn spread_pct(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median * 100.0
        }
    }
}

/// Each run's figures over a `--repeat`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Deliveries per second.
    pub msgs_per_s: Spread,
    /// Payload megabytes per second.
    pub mb_per_s: Spread,
    /// Median latency, ns.
    pub p50_ns: Spread,
    /// 99th percentile latency, ns.
    pub p99_ns: Spread,
    /// 99.9th percentile latency, ns.
    pub p999_ns: Spread,
    /// Wall time of a run, s.
    pub seconds: Spread,
}

impl Report {
    /// Combines the reports of repeated runs of one scenario: counts summed, latency merged,
    /// throughput the median run's, and [`Report::repeat`] with each figure's median and
    /// spread. `None` for no reports.
    pub fn combine(reports: &[Report]) -> Option<Report> {
        let (first, rest) = reports.split_first()?;
        if rest.is_empty() {
            return Some(first.clone());
        }
        let mut out = first.clone();
        for r in rest {
            out.sent += r.sent;
            out.received += r.received;
            out.lost += r.lost;
            out.duplicated += r.duplicated;
            out.reordered += r.reordered;
            out.garbage += r.garbage;
            out.in_flight_at_kill += r.in_flight_at_kill;
            out.in_flight_producer += r.in_flight_producer;
            out.in_flight_consumer += r.in_flight_consumer;
            out.stranded += r.stranded;
            out.deadlocks += r.deadlocks;
            out.kills += r.kills;
            out.seconds += r.seconds;
            out.verified &= r.verified;
            out.latency.add(&r.latency);
            for (p, q) in out.processes.iter_mut().zip(&r.processes) {
                p.messages += q.messages;
                p.kills += q.kills;
                p.pid = q.pid;
            }
        }
        let figure =
            |f: &dyn Fn(&Report) -> f64| Spread::of(&reports.iter().map(f).collect::<Vec<_>>());
        let summary = Summary {
            msgs_per_s: figure(&|r| r.msgs_per_s),
            mb_per_s: figure(&|r| r.mb_per_s),
            p50_ns: figure(&|r| r.latency_ns.p50 as f64),
            p99_ns: figure(&|r| r.latency_ns.p99 as f64),
            p999_ns: figure(&|r| r.latency_ns.p999 as f64),
            seconds: figure(&|r| r.seconds),
        };
        out.msgs_per_s = summary.msgs_per_s.median;
        out.mb_per_s = summary.mb_per_s.median;
        let max = reports.iter().map(|r| r.latency_ns.max).max().unwrap_or(0);
        out.latency_ns = Report::percentiles(&out.latency, max);
        out.runs = reports.len() as u32;
        out.repeat = Some(summary);
        Some(out)
    }

    /// The merged latency histogram behind the percentiles.
    pub fn latency(&self) -> &Latency {
        &self.latency
    }

    pub(crate) fn percentiles(l: &Latency, max: u64) -> Percentiles {
        Percentiles {
            p50: l.quantile(0.50),
            p90: l.quantile(0.90),
            p99: l.quantile(0.99),
            p999: l.quantile(0.999),
            max,
        }
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serialises")
    }

    /// The report as text for a person.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_ns;
        let rate = self.rate.map_or("as fast as possible".to_owned(), |r| {
            format!("offered {r} msgs/s")
        });
        let runs = if self.runs > 1 {
            format!(", {} runs", self.runs)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "transport {}: {} producer(s) × {} consumer(s), maxsize {}, effective depth {} messages, {} B messages, {rate}{runs}",
            self.transport, self.producers, self.consumers, self.maxsize, self.effective_depth, self.size
        );
        let _ = writeln!(
            s,
            "  sent {}  received {}  lost {}  duplicated {}  reordered {}  garbage {}  in flight at kill {} ({} producer, {} consumer)  stranded {}  deadlocks {}  kills {}",
            self.sent,
            self.received,
            self.lost,
            self.duplicated,
            self.reordered,
            self.garbage,
            self.in_flight_at_kill,
            self.in_flight_producer,
            self.in_flight_consumer,
            self.stranded,
            self.deadlocks,
            self.kills
        );
        let _ = writeln!(
            s,
            "  throughput {:.3} M msgs/s, {:.1} MB/s over {:.3} s",
            self.msgs_per_s / 1e6,
            self.mb_per_s,
            self.seconds
        );
        let _ = writeln!(
            s,
            "  latency p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
            human_ns(l.p50),
            human_ns(l.p90),
            human_ns(l.p99),
            human_ns(l.p999),
            human_ns(l.max)
        );
        if let Some(r) = &self.repeat {
            let ns = |x: &Spread| {
                format!(
                    "{} ({}–{})",
                    human_ns(x.median as u64),
                    human_ns(x.min as u64),
                    human_ns(x.max as u64)
                )
            };
            let _ = writeln!(
                s,
                "  over {} runs, median (min–max): {:.3} M msgs/s ({:.3}–{:.3}, spread {:.1} %)  p50 {}  p99 {}  p99.9 {}",
                self.runs,
                r.msgs_per_s.median / 1e6,
                r.msgs_per_s.min / 1e6,
                r.msgs_per_s.max / 1e6,
                r.msgs_per_s.spread_pct(),
                ns(&r.p50_ns),
                ns(&r.p99_ns),
                ns(&r.p999_ns)
            );
        }
        let procs: Vec<String> = self
            .processes
            .iter()
            .map(|p| {
                let killed = if p.kills > 0 {
                    format!(", killed {}×", p.kills)
                } else {
                    String::new()
                };
                format!("{} (pid {}) {}{}", p.name, p.pid, p.messages, killed)
            })
            .collect();
        let _ = writeln!(s, "  per process: {}", procs.join(", "));
        if self.deadlocks > 0 {
            let _ = writeln!(
                s,
                "DEADLOCK: no message was sent or taken for the stall timeout; the run was stopped"
            );
        } else if self.verified {
            let _ = writeln!(
                s,
                "verified: every committed message arrived exactly once, in per-producer order"
            );
        } else {
            let _ = writeln!(
                s,
                "FAILED: lost, duplicated, reordered or garbage messages (see above)"
            );
        }
        s
    }
}

/// Formats nanoseconds for people.
pub fn human_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=9_999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

/// The live progress line on stderr: drawn from the start, with an ETA; a bar over time in
/// `--duration` mode and over messages in `--count` mode.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    stop: StopRule,
    total: u64,
}

/// stderr as indicatif's terminal, drawn even when it is not a terminal (`--progress always`).
#[derive(Debug)]
struct Stderr;

impl indicatif::TermLike for Stderr {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        use std::io::Write;
        writeln!(std::io::stderr(), "{s}")
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        use std::io::Write;
        write!(std::io::stderr(), "{s}")
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.write_str("\r")
    }
    fn flush(&self) -> std::io::Result<()> {
        use std::io::Write;
        std::io::stderr().flush()
    }
}

impl Progress {
    /// `producers` scale a `--count` (per producer) to the run's total.
    pub(crate) fn new(mode: ProgressMode, stop: StopRule, producers: u64) -> Self {
        let target = match mode {
            ProgressMode::Never => None,
            ProgressMode::Auto if !std::io::stderr().is_terminal() => None,
            ProgressMode::Auto => Some(indicatif::ProgressDrawTarget::stderr_with_hz(10)),
            ProgressMode::Always => Some(indicatif::ProgressDrawTarget::term_like_with_hz(
                Box::new(Stderr),
                10,
            )),
        };
        let total = match stop {
            StopRule::Count(n) => n * producers,
            StopRule::Duration(d) => d.as_millis() as u64,
        };
        let bar = target.map(|t| {
            let bar = indicatif::ProgressBar::with_draw_target(Some(total), t);
            let style =
                indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        Progress { bar, stop, total }
    }

    pub(crate) fn update(&mut self, elapsed: Duration, sent: u64, kills: u64) {
        let Some(bar) = &self.bar else {
            return;
        };
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = sent as f64 / secs;
        let (position, eta) = match self.stop {
            StopRule::Duration(d) => (
                elapsed.as_millis() as u64,
                d.saturating_sub(elapsed).as_secs_f64(),
            ),
            StopRule::Count(_) if rate > 0.0 => {
                (sent, self.total.saturating_sub(sent) as f64 / rate)
            }
            StopRule::Count(_) => (sent, f64::NAN),
        };
        let eta = if eta.is_finite() {
            format!("ETA {:.0}s", eta.ceil())
        } else {
            "ETA ?".to_owned()
        };
        bar.set_position(position.min(self.total));
        bar.set_message(format!(
            "{sent} msgs  {:.2} M/s  {kills} kills  {eta}",
            rate / 1e6
        ));
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
