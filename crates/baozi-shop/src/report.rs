//! The run's report: human text, `--json`, the `--plot` SVG, and the live progress line.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use serde::Serialize;

use crate::histogram::Latency;
use crate::transport::TransportKind;

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
    /// The transport the workload ran over.
    pub transport: TransportKind,
    /// Producer processes.
    pub producers: u32,
    /// Consumer processes.
    pub consumers: u32,
    /// The transport's item limit as built (0: none).
    pub maxsize: usize,
    /// Bytes per message.
    pub size: usize,
    /// Sends that returned Ok.
    pub sent: u64,
    /// Deliveries, duplicates included.
    pub received: u64,
    /// Messages whose send returned Ok and that nobody received (beyond what killed consumers
    /// may have taken with them). Must be 0.
    pub lost: u64,
    /// Extra deliveries of a message already delivered. Must be 0.
    pub duplicated: u64,
    /// Messages a consumer saw after a later one from the same producer. Must be 0.
    pub reordered: u64,
    /// Received messages that do not parse, or name an unknown producer. Must be 0.
    pub garbage: u64,
    /// Messages absent because the process holding them was killed: a producer's send in flight,
    /// or a message a killed consumer had taken (at most one per consumer kill).
    pub in_flight_at_kill: u64,
    /// Of those, sends in flight in killed producers.
    pub in_flight_producer: u64,
    /// Of those, messages taken by killed consumers.
    pub in_flight_consumer: u64,
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
    /// Whether every check passed: lost, duplicated, reordered and garbage all 0.
    pub verified: bool,
    /// Latency samples behind the percentiles (for the plot).
    #[serde(skip)]
    pub(crate) latency: Latency,
}

impl Report {
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
        let _ = writeln!(
            s,
            "transport {}: {} producer(s) × {} consumer(s), maxsize {}, {} B messages",
            self.transport, self.producers, self.consumers, self.maxsize, self.size
        );
        let _ = writeln!(
            s,
            "  sent {}  received {}  lost {}  duplicated {}  reordered {}  garbage {}  in flight at kill {} ({} producer, {} consumer)  kills {}",
            self.sent,
            self.received,
            self.lost,
            self.duplicated,
            self.reordered,
            self.garbage,
            self.in_flight_at_kill,
            self.in_flight_producer,
            self.in_flight_consumer,
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
        if self.verified {
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

    /// An SVG plot of latency against percentile (log scale of 1/(1-q), as HdrHistogram plots).
    pub fn to_svg(&self) -> String {
        let (w, h, left, bottom, top, right) = (800.0, 480.0, 70.0, 50.0, 40.0, 20.0);
        let nines = [0.0, 0.9, 0.99, 0.999, 0.9999, 0.99999];
        let x_of = |q: f64| {
            let n = (-(1.0 - q).max(1e-5).log10()).min(5.0);
            left + n / 5.0 * (w - left - right)
        };
        let mut points = Vec::new();
        let mut q = 0.0f64;
        while q <= 0.99999 {
            points.push((q, self.latency.quantile(q) as f64 / 1000.0));
            q += (1.0 - q) / 20.0;
        }
        points.push((0.99999, self.latency_ns.max as f64 / 1000.0));
        let ymax = points.iter().map(|p| p.1).fold(1e-3, f64::max) * 1.1;
        let y_of = |us: f64| h - bottom - us / ymax * (h - bottom - top);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = write!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15">baozi-shop latency by percentile: {} , {}×{}, {} B, maxsize {}</text>"#,
            w / 2.0,
            self.transport,
            self.producers,
            self.consumers,
            self.size,
            self.maxsize
        );
        for q in nines {
            let x = x_of(q);
            let _ = write!(
                s,
                r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{}%</text>"##,
                top,
                h - bottom,
                h - bottom + 18.0,
                q * 100.0
            );
        }
        for i in 0..=5 {
            let us = ymax * f64::from(i) / 5.0;
            let y = y_of(us);
            let _ = write!(
                s,
                r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{:.1} µs</text>"##,
                w - right,
                left - 6.0,
                y + 4.0,
                us
            );
        }
        let path: Vec<String> = points
            .iter()
            .map(|(q, us)| format!("{:.1},{:.1}", x_of(*q), y_of(*us)))
            .collect();
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{}"/>"##,
            path.join(" ")
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">percentile</text></svg>"#,
            w / 2.0,
            h - 10.0
        );
        s.push('\n');
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

/// The live progress line: shown on stderr after the first second, only when stdout is a
/// terminal and the run was not asked for JSON.
#[derive(Debug)]
pub(crate) struct Progress {
    enabled: bool,
    bar: Option<indicatif::ProgressBar>,
    total: Option<u64>,
}

impl Progress {
    pub(crate) fn new(wanted: bool, total: Option<u64>) -> Self {
        Progress {
            enabled: wanted && std::io::stdout().is_terminal(),
            bar: None,
            total,
        }
    }

    pub(crate) fn update(&mut self, elapsed: Duration, received: u64, kills: u64) {
        if !self.enabled || elapsed < Duration::from_secs(1) {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = match self.total {
                Some(t) => indicatif::ProgressBar::new(t),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            let style = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} msgs {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        bar.set_position(received);
        let rate = received as f64 / elapsed.as_secs_f64();
        bar.set_message(format!("{:.2} M/s, {kills} kills", rate / 1e6));
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
