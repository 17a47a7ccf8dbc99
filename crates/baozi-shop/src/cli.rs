//! The command line. Errors are one line on stderr with exit code 2; no panic traces.

use std::path::PathBuf;
use std::time::Duration;

use baozi_shop::{
    plot_svg, run, run_seed, ProgressMode, Report, Scenario, ShopError, StopRule, TransportKind,
    DEFAULT_STALL, SEED_PACE,
};
use clap::{Args, Parser, Subcommand};

/// The bun shop (包子铺): baozi's producer–consumer demo and harness.
///
/// With no command it runs the seed scenario: two bakers and one eater share a counter that
/// holds one bun.
#[derive(Debug, Parser)]
#[command(name = "baozi-shop", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Milliseconds each baker waits before each bun in the seed scenario.
    #[arg(long, value_name = "MS", default_value_t = SEED_PACE.as_millis() as u64)]
    pace: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run N producers × M consumers, verify exactly-once and order, report throughput and latency.
    Run(RunArgs),
    /// List or remove baozi objects in /dev/shm.
    #[command(subcommand_required = true)]
    Shm {
        #[command(subcommand)]
        action: ShmAction,
    },
}

#[derive(Debug, Subcommand)]
enum ShmAction {
    /// List baozi objects with their kind, creator and the processes that map them or hold them
    /// open.
    List,
    /// Remove baozi objects whose header is valid, whose creator is gone, and that no process
    /// maps or holds open; list every other one with the reason it was kept.
    Clean {
        /// Say what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Producer processes.
    #[arg(long, default_value_t = 2)]
    producers: u32,
    /// Consumer processes.
    #[arg(long, default_value_t = 2)]
    consumers: u32,
    /// Item limit of the queue (0: no item limit).
    #[arg(long, default_value_t = 1024)]
    maxsize: usize,
    /// Bytes per message (at least 24).
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    size: usize,
    /// Byte capacity of the baozi queue (default: room for maxsize messages, at least 1 MiB).
    #[arg(long, value_name = "BYTES")]
    capacity: Option<usize>,
    /// Messages per producer (default 100000 unless --duration is given).
    #[arg(long, value_name = "PER_PRODUCER", conflicts_with = "duration")]
    count: Option<u64>,
    /// Run for this many seconds instead of a fixed count.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// SIGKILL a random producer or consumer this often (milliseconds) and start a replacement.
    #[arg(long, value_name = "MS")]
    kill_every: Option<u64>,
    /// Offered load: messages per second over all producers, each on a fixed schedule (default:
    /// as fast as they can). Latency then counts from the instant each message was due.
    #[arg(long, value_name = "MSGS_PER_S")]
    rate: Option<f64>,
    /// Run each transport this many times and report the median and spread.
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: u32,
    /// The watchdog: stop the run and report a deadlock when no message is sent or taken for
    /// this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_STALL.as_secs_f64())]
    stall_timeout: f64,
    /// The live progress line on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Print one JSON object per transport instead of text (schema in the README).
    #[arg(long)]
    json: bool,
    /// Write a latency-by-percentile plot (SVG, one curve per transport) to this file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Transport(s) to run the workload over, comma-separated, in one run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "baozi")]
    transport: Vec<TransportKind>,
    /// The Redis server for --transport redis (redis://[user:password@]host[:port][/db]); without
    /// it the shop starts a private redis-server (no persistence) for the run and stops it after.
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
}

fn usage_error(msg: &str) -> i32 {
    eprintln!("baozi-shop: error: {msg}");
    2
}

pub(crate) fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            if matches!(
                e.kind(),
                ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                return usage_error("a command is missing here: `baozi-shop shm list` or `baozi-shop shm clean` (see --help)");
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            return usage_error(&format!("{first} (see --help)"));
        }
    };
    match cli.command {
        None => {
            if cli.pace > 60_000 {
                return usage_error("--pace must be at most 60000 ms");
            }
            match run_seed(Duration::from_millis(cli.pace)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("baozi-shop: {e}");
                    1
                }
            }
        }
        Some(Command::Shm { action }) => shm(action),
        Some(Command::Run(args)) => run_command(args),
    }
}

fn shm(action: ShmAction) -> i32 {
    let entries = match baozi_shm::list() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("baozi-shop: cannot read /dev/shm: {e}");
            return 1;
        }
    };
    match action {
        ShmAction::List => {
            if entries.is_empty() {
                println!("no baozi objects in /dev/shm");
            }
            for e in entries {
                let kind = e
                    .kind
                    .map_or("not a baozi object".to_owned(), |k| k.to_string());
                let creator = match e.creator_pid {
                    Some(pid) => format!(
                        "creator {pid} ({})",
                        if e.creator_alive { "alive" } else { "gone" }
                    ),
                    None => "creator unknown".to_owned(),
                };
                println!(
                    "{}  {} bytes  {kind}  {creator}  mapped by {:?}  open in {:?}",
                    e.name,
                    e.size,
                    e.mapped_by,
                    e.open_by()
                );
            }
            0
        }
        ShmAction::Clean { dry_run } => {
            let (mut removed, mut kept, mut failed) = (0, 0, 0);
            for e in &entries {
                // Checked afresh, just before the unlink: header, creator, maps, open fds.
                match e.check_removable() {
                    Ok(()) if dry_run => {
                        println!("would remove {}", e.name);
                        removed += 1;
                    }
                    Ok(()) => match baozi_shm::Region::unlink(&e.name) {
                        Ok(()) => {
                            println!("removed {}", e.name);
                            removed += 1;
                        }
                        Err(err) => {
                            eprintln!("baozi-shop: {err}");
                            failed += 1;
                        }
                    },
                    Err(why) => {
                        println!("kept {}: {why}", e.name);
                        kept += 1;
                    }
                }
            }
            let verb = if dry_run {
                "would be removed"
            } else {
                "removed"
            };
            println!("{removed} leftover(s) {verb}, {kept} kept");
            i32::from(failed > 0)
        }
    }
}

fn run_command(a: RunArgs) -> i32 {
    let stop = match (a.count, a.duration) {
        (_, Some(d)) if !(d.is_finite() && d > 0.0 && d <= 86_400.0) => {
            return usage_error("--duration must be a number of seconds above 0 and at most 86400");
        }
        (_, Some(d)) => StopRule::Duration(Duration::from_secs_f64(d)),
        (Some(n), None) => StopRule::Count(n),
        (None, None) => StopRule::Count(100_000),
    };
    if a.kill_every == Some(0) {
        return usage_error("--kill-every must be at least 1 ms");
    }
    if a.repeat == 0 || a.repeat > 1000 {
        return usage_error("--repeat must be between 1 and 1000");
    }
    if !(a.stall_timeout.is_finite() && (0.1..=86_400.0).contains(&a.stall_timeout)) {
        return usage_error("--stall-timeout must be between 0.1 and 86400 seconds");
    }
    if let Some(dir) = a
        .plot
        .as_ref()
        .and_then(|p| p.parent())
        .filter(|d| !d.as_os_str().is_empty())
    {
        if !dir.is_dir() {
            return usage_error(&format!(
                "--plot: directory {} does not exist",
                dir.display()
            ));
        }
    }
    let mut transports = a.transport.clone();
    transports.dedup();
    let scenarios: Vec<Scenario> = transports
        .iter()
        .map(|&transport| Scenario {
            producers: a.producers,
            consumers: a.consumers,
            maxsize: a.maxsize,
            size: a.size,
            capacity: a.capacity,
            stop,
            kill_every: a.kill_every.map(Duration::from_millis),
            transport,
            rate: a.rate,
            stall: Duration::from_secs_f64(a.stall_timeout),
            progress: if a.json {
                ProgressMode::Never
            } else {
                a.progress
            },
            redis_url: a.redis_url.clone(),
        })
        .collect();
    // Check every scenario before running any.
    for s in &scenarios {
        if let Err(e) = s.validate() {
            return usage_error(&e.to_string());
        }
    }
    let mut code = 0;
    let mut reports: Vec<Report> = Vec::new();
    for s in &scenarios {
        let mut runs = Vec::new();
        for _ in 0..a.repeat {
            match run(s) {
                Ok(report) => runs.push(report),
                Err(ShopError::Usage(e)) => return usage_error(&e),
                Err(ShopError::Failed(e)) => {
                    eprintln!("baozi-shop: transport {}: {e}", s.transport);
                    code = 1;
                    break;
                }
            }
        }
        let Some(report) = Report::combine(&runs) else {
            continue;
        };
        if a.json {
            println!("{}", report.to_json());
        } else {
            print!("{}", report.to_text());
        }
        if !report.verified {
            code = 1;
        }
        reports.push(report);
    }
    if reports.len() > 1 && !a.json {
        let base = reports
            .iter()
            .find(|r| r.transport == TransportKind::Pipe)
            .unwrap_or(&reports[0]);
        println!("comparison (throughput relative to {}):", base.transport);
        for r in &reports {
            println!(
                "  {:>6}: {:>10.0} msgs/s  {:>6.2}×   p50 {}  p99 {}   depth {} messages",
                r.transport.to_string(),
                r.msgs_per_s,
                r.msgs_per_s / base.msgs_per_s,
                baozi_shop::human_ns(r.latency_ns.p50),
                baozi_shop::human_ns(r.latency_ns.p99),
                r.effective_depth
            );
        }
        let depths: Vec<u64> = reports.iter().map(|r| r.effective_depth).collect();
        if depths.iter().any(|&d| d != depths[0]) && a.rate.is_none() {
            println!(
                "  note: the transports hold different numbers of messages, and at full speed latency is mostly queue depth; compare latency with --rate"
            );
        }
    }
    if let (Some(path), false) = (&a.plot, reports.is_empty()) {
        if let Err(e) = std::fs::write(path, plot_svg(&reports)) {
            eprintln!("baozi-shop: cannot write {}: {e}", path.display());
            code = 1;
        }
    }
    code
}
