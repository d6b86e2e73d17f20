//! The `logship` binary: command line, exit codes, signals. All the work is in
//! the library; this file only turns its results into a process outcome.
//!
//! Exit codes: 0 success (also after a signal-initiated drain); 64 the
//! configuration is unusable (the message names file, line and key); 70 a
//! runtime failure; 130 a second SIGTERM/SIGINT arrived during the drain;
//! 2 a command-line usage error (clap's own). SIGHUP reloads the config file
//! (`app::serve`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use logship::config;
use logship::telemetry::logging;

const EXIT_CONFIG: u8 = 64;
const EXIT_RUNTIME: u8 = 70;
const EXIT_SECOND_SIGNAL: i32 = 130;

/// The crate version and the git commit it was built from (`build.rs`:
/// `-dirty` when the sources differed from it, `unknown` without git).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("LOGSHIP_GIT_COMMIT"),
    ")"
);

/// Node-level log shipper: tails container and host log files and bulk-ships
/// them to Elasticsearch without losing or duplicating a line.
#[derive(Parser)]
#[command(name = "logship", version = VERSION, disable_version_flag = true)]
struct Cli {
    /// Print the version and the git commit it was built from.
    #[arg(short = 'V', long, action = clap::ArgAction::Version)]
    version: (),
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tail the configured files and ship them until SIGTERM or SIGINT.
    Run {
        /// YAML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file and print the effective configuration, defaults
    /// included, as YAML (exit 0, or 64 with the error).
    CheckConfig {
        /// YAML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Re-ship the documents of a dead-letter file to the configured
    /// Elasticsearch (same `_index` and `_id`, so nothing is indexed twice).
    /// What still fails is written to FILE.remaining; exit 0 when nothing
    /// remains, 1 otherwise.
    Replay {
        /// The dead-letter file (`data_dir/dead-letter.ndjson` or a rotated one).
        #[arg(long, value_name = "FILE")]
        dead_letter: PathBuf,
        /// YAML config file (its `sink.elasticsearch` is used).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Prove that every line of a file is in Elasticsearch: recompute each
    /// line's `_id` as shipping does and look it up (read-only).
    ///
    /// Each file is read from its start with its source's format,
    /// max_line_bytes, multiline rule and processors (one code path with
    /// the agent), its identity and generation taken from the checkpoint
    /// store in data_dir (read, never written or locked: safe beside a
    /// running agent). The `_id`s are looked up in batches of 5,000, 4
    /// requests at a time, as `ids` searches over the index pattern of
    /// sink.elasticsearch.index, through the configured hosts, TLS and
    /// credentials. Nothing is written to Elasticsearch.
    ///
    /// Every line is one of: present; missing (with its byte offset and the
    /// first few lines' text); dropped by processors; not yet shipped (not
    /// found, at or past the checkpoint); dead-lettered (its `_id` is in
    /// data_dir/dead-letter*.ndjson); unknown generation (content the
    /// checkpoints do not know, e.g. rewritten by copytruncate since the
    /// agent read it: not looked up, not missing). journald sources are not
    /// audited.
    ///
    /// Exit codes: 0 nothing missing; 1 a line is missing; 64 the config is
    /// unusable; 70 a file could not be read or Elasticsearch could not be
    /// asked. See docs/audit.md.
    Audit {
        /// YAML config file (the agent's: sources, data_dir, sink.elasticsearch).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// `text` for people, `json` (one object on stdout) for scripts.
        #[arg(long, value_enum, default_value_t = AuditFormat::Text)]
        format: AuditFormat,
        /// Files to audit (a rotated or `.gz` copy too). Default: every file
        /// the sources match plus the rotated files on disk the checkpoints know.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Print the version and the git commit it was built from, as
    /// `logship 0.1.0 (ae41de8)` (same as --version).
    Version,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuditFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    tune_allocator();
    raise_fd_limit();
    match Cli::parse().command {
        Command::Version => {
            println!("logship {VERSION}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => run(&config),
        Command::Replay {
            dead_letter,
            config,
        } => replay(&dead_letter, &config),
        Command::Audit {
            config,
            format,
            paths,
        } => audit(&config, format, paths),
    }
}

fn audit(path: &Path, format: AuditFormat, paths: Vec<PathBuf>) -> ExitCode {
    // The agent's info lines (startup, files) are not the audit's business:
    // its stderr is for warnings and progress.
    let (config, runtime) = match one_shot(path, Some("warn")) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let options = logship::audit::Options {
        paths,
        progress: true,
    };
    match runtime.block_on(logship::audit::audit(&config, &options)) {
        Ok(report) => {
            match format {
                AuditFormat::Text => print!("{}", report.text()),
                AuditFormat::Json => match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("logship: cannot print the report: {e}");
                        return ExitCode::from(EXIT_RUNTIME);
                    }
                },
            }
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("logship: audit failed: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Loads the config, or prints why not and gives exit code 64.
fn load_config(path: &Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("logship: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// For a one-shot command: the config, logging (at `level` instead of the
/// config's, if given) and a single-threaded runtime; or the exit code.
fn one_shot(
    path: &Path,
    level: Option<&str>,
) -> Result<(config::Config, tokio::runtime::Runtime), ExitCode> {
    let config = load_config(path)?;
    let mut log = config.log.clone();
    if let Some(level) = level {
        log.level = level.to_owned();
    }
    if let Err(e) = logging::init(&log) {
        eprintln!("logship: {e}");
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("logship: cannot start the runtime: {e}");
            ExitCode::from(EXIT_RUNTIME)
        })?;
    Ok((config, runtime))
}

fn replay(file: &Path, path: &Path) -> ExitCode {
    let (config, runtime) = match one_shot(path, None) {
        Ok(setup) => setup,
        Err(code) => return code,
    };
    let sink_config = config.sink;
    match runtime.block_on(logship::sink::elasticsearch::replay::replay(
        &sink_config,
        file,
    )) {
        Ok(summary) => {
            println!(
                "replayed {}: {} records, {} delivered, {} already indexed, {} not delivered{}",
                file.display(),
                summary.records,
                summary.delivered,
                summary.duplicates,
                summary.not_delivered,
                summary
                    .remaining
                    .as_ref()
                    .map(|p| format!(" (written to {})", p.display()))
                    .unwrap_or_default()
            );
            if summary.not_delivered == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("logship: replay failed: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match serde_yaml_ng::to_string(&config) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("logship: cannot print the effective config: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(e) = logging::init(&config.log) {
        eprintln!("logship: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    match run_pipeline(config, path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "logship stopped on an error");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Threads of Tokio's blocking pool (file I/O, gzip, checkpoint writes).
const BLOCKING_THREADS: usize = 16;

fn run_pipeline(config: config::Config, path: &Path) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        // File reads, checks and checkpoint writes hop to the blocking pool:
        // with hundreds of files Tokio's default (512 threads) filled up,
        // each thread holding a stack and its share of heap (issue 10:
        // 516 threads, ~300 MiB, with 1,000 idle files). These are short
        // page-cache reads; a few threads serve them all.
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("logship-worker")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = env!("LOGSHIP_GIT_COMMIT"),
        node_name = %config.node_name,
        sources = config.sources.len(),
        journald_sources = config.journald.len(),
        worker_threads = workers,
        "logship starting"
    );
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let terminate =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        tokio::spawn(watch_signals(terminate, interrupt, shutdown.clone()));
        let hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(watch_hangup(hangup, reload_tx));
        let reload = logship::app::Reload {
            path: path.to_owned(),
            requests: reload_rx,
        };
        logship::app::serve(config, Some(reload), shutdown).await
    });
    // `app::run` has drained and written checkpoints; do not wait long for
    // blocking reads that are still parked.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// First SIGTERM/SIGINT: start the drain. Second: exit at once.
async fn watch_signals(mut terminate: Signal, mut interrupt: Signal, shutdown: CancellationToken) {
    let first = next_signal(&mut terminate, &mut interrupt).await;
    tracing::info!(
        signal = first,
        "shutting down; send it again to exit at once without draining"
    );
    shutdown.cancel();
    let second = next_signal(&mut terminate, &mut interrupt).await;
    tracing::warn!(
        signal = second,
        "second signal: exiting now; unacknowledged lines will be read again on the next start"
    );
    std::process::exit(EXIT_SECOND_SIGNAL);
}

/// SIGHUP: ask for a config reload (several while one is pending count once).
async fn watch_hangup(mut hangup: Signal, reloads: tokio::sync::mpsc::Sender<()>) {
    while hangup.recv().await.is_some() {
        tracing::info!(signal = "SIGHUP", "reloading the config");
        if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = reloads.try_send(()) {
            return;
        }
    }
}

async fn next_signal(terminate: &mut Signal, interrupt: &mut Signal) -> &'static str {
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

/// Raises the soft open-file limit to the hard one, as the Go runtime and
/// many daemons do: systemd and containerd start services with a soft limit
/// of 1024 (the `select()` era) and a hard one far above, while logship
/// may hold up to `buffer.max_open_files` rotated or deleted files during an
/// outage besides the files it follows. Never lowers a limit.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Keeps peak RSS close to the live set (docs/performance.md, "Memory").
///
/// glibc gives threads their own heap arenas (up to 8 per core), and its mmap
/// threshold rises to the size of the largest block freed (up to 32 MiB). Our
/// large buffers (bulk bodies, gzip output, several MiB) are allocated on one
/// thread and freed on another; once they land in the heaps, the heaps
/// fragment and peak RSS grew with the amount shipped (108 MiB after 1 GiB in
/// the pipeline bench). A fixed 256 KiB threshold sends every large buffer to
/// mmap, returned to the system when freed (32 MiB peak), and two arenas are
/// enough for our few allocating threads. Span bodies stay under the threshold
/// and are recycled (`event::span_pool`). `MALLOC_ARENA_MAX` and
/// `MALLOC_MMAP_THRESHOLD_` in the environment still win.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only adjusts allocator parameters; called first
        // thing in main, before any other thread exists.
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
            }
        }
    }
}
