//! End-to-end bench: files → logship (the real binary, release build) → a
//! local `_bulk` endpoint, in scenarios a node meets.
//!
//! `cargo bench --bench pipeline` runs every scenario at full size, one
//! after the other (about 7 minutes, plus the corpora's first generation);
//! `LOGSHIP_BENCH_SCENARIO` picks some, comma-separated:
//!
//! - `catch-up`: a 1 GiB realistic corpus in 20 files shipped as fast as
//!   possible: MiB/s, lines/s, CPU-s per GiB, % of a core, peak RSS.
//! - `easy`: the same on the bench's former corpus (short, repetitive,
//!   few escapes), for comparison with older figures.
//! - `node`: 1,000 files × 10 lines/s + 20 files × 500 lines/s for 60 s:
//!   CPU % of one core and RSS in the steady state.
//! - `idle`: 1,000 files shipped, then 60 s without writes: CPU % and RSS.
//! - `outage`: the `node` load for 60 s while the endpoint refuses
//!   connections, RSS every 5 s; then the endpoint comes back and every line
//!   must be acknowledged once.
//! - `latency`: 1,000 and 10,000 lines/s over 20 files for 60 s each: p50,
//!   p99 and max from a line's write to its acknowledgement.
//!
//! Every scenario ends with an exact account (every line written was
//! acknowledged, once); a run whose account is not exact fails, naming the
//! missing lines, and the bench exits non-zero. How each one measures is in
//! its module (`scenarios/*.rs`); what they share in `scenarios/mod.rs`.
//!
//! Environment (defaults in brackets):
//!
//! - `LOGSHIP_BENCH_SCENARIO` [`all`]: `all` or a list of the names above.
//! - `LOGSHIP_BENCH_DIR` [`/var/tmp/logship-bench`]: corpora are cached in
//!   `corpus/`, each run works in `run/<scenario>/` (recreated).
//! - `LOGSHIP_BENCH_MIB` [1024], `LOGSHIP_BENCH_FILES` [20]: `catch-up` and
//!   `easy` corpus size and file count.
//! - `LOGSHIP_BENCH_NODE_FILES` [1000]: trickling files in `node`,
//!   `outage` and `idle`; `LOGSHIP_BENCH_BUSY_FILES` [20]: busy files in
//!   `node` and `outage`; `LOGSHIP_BENCH_IDLE_LINES` [20]: lines per file
//!   in `idle`.
//! - `LOGSHIP_BENCH_SECS` [60]: the steady, idle, outage and latency periods.
//! - `LOGSHIP_BENCH_SAMPLE_SECS` [5]: RSS sampling period in `outage`.
//! - `LOGSHIP_BENCH_LATENCY_RATES` [`1000,10000`], `LOGSHIP_BENCH_LATENCY_FILES` [20].
//! - `LOGSHIP_BENCH_BUFFER` [`memory`]: `memory`, `disk` (the disk buffer
//!   in the run's data dir, fsync every second), or `compare`: `catch-up`
//!   and `easy` interleave memory and disk runs on the same corpus
//!   (m, d, m, d, …, `LOGSHIP_BENCH_ROUNDS` [3] rounds) and print each
//!   round's disk/memory ratio and their median; the other scenarios run
//!   once with each buffer.
//! - `LOGSHIP_BENCH_PROCESSORS` [`none`]: `typical` adds a three-step
//!   processor chain to every scenario's config (drop by regex, dissect,
//!   add_fields; see `scenarios/agent.rs`), to compare with `none`.
//! - `LOGSHIP_BENCH_CONCURRENCY` [2]: the sink's `concurrency`.
//! - `LOGSHIP_BENCH_BATCH_TIMEOUT_MS` [the agent's default, 1 s].
//! - `LOGSHIP_BENCH_WRITERS` [4]: writer threads.
//! - `LOGSHIP_BENCH_TIMEOUT_SECS` [1800]: how long to wait for the last
//!   acknowledgement before declaring the missing lines.
//!
//! The endpoint and the writers share the machine's cores with logship; the
//! endpoint's gunzip costs about a fifth of a core at full speed, which is
//! reflected in MiB/s but not in logship's CPU seconds. Each scenario prints
//! the bench process's own CPU and the load average before and after.
//!
//! `tests/bench_smoke.rs` runs every scenario at a tiny size under
//! `cargo test` and checks only the accounts.

mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use scenarios::catch_up::CatchUp;
use scenarios::corpus::CorpusKind;
use scenarios::idle::Idle;
use scenarios::latency::Latency;
use scenarios::node::{Node, NodeLoad};
use scenarios::outage::Outage;
use scenarios::{Buffer, Common};

const ALL: [&str; 6] = ["catch-up", "easy", "node", "idle", "outage", "latency"];

fn main() {
    // `cargo bench` passes `--bench`; only run when asked for as a bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pipeline bench: run with `cargo bench --bench pipeline`");
        return;
    }
    let selected = std::env::var("LOGSHIP_BENCH_SCENARIO").unwrap_or_else(|_| "all".into());
    let selected: Vec<&str> = if selected.trim() == "all" {
        ALL.to_vec()
    } else {
        selected.split(',').map(str::trim).collect()
    };
    for name in &selected {
        assert!(
            ALL.contains(name),
            "LOGSHIP_BENCH_SCENARIO: unknown scenario {name:?}; expected all or some of {ALL:?}"
        );
    }
    let root = PathBuf::from(
        std::env::var("LOGSHIP_BENCH_DIR").unwrap_or_else(|_| "/var/tmp/logship-bench".into()),
    );
    let compare = match std::env::var("LOGSHIP_BENCH_BUFFER").as_deref() {
        Err(_) | Ok("memory") => None,
        Ok("disk") => Some(false),
        Ok("compare") => Some(true),
        Ok(other) => panic!("LOGSHIP_BENCH_BUFFER={other}: expected memory, disk or compare"),
    };
    let buffers: &[Buffer] = match compare {
        None => &[Buffer::Memory],
        Some(false) => &[Buffer::Disk],
        Some(true) => &[Buffer::Memory, Buffer::Disk],
    };
    let common = Common {
        root: root.join("run"),
        concurrency: env_u64("LOGSHIP_BENCH_CONCURRENCY", 2),
        buffer: buffers[0],
        batch_timeout: std::env::var("LOGSHIP_BENCH_BATCH_TIMEOUT_MS")
            .ok()
            .map(|_| Duration::from_millis(env_u64("LOGSHIP_BENCH_BATCH_TIMEOUT_MS", 1000))),
        writer_threads: env_u64("LOGSHIP_BENCH_WRITERS", 4) as usize,
        drain_timeout: Duration::from_secs(env_u64("LOGSHIP_BENCH_TIMEOUT_SECS", 1800)),
    };
    let secs = env_u64("LOGSHIP_BENCH_SECS", 60);
    let load = NodeLoad {
        trickle_files: env_u64("LOGSHIP_BENCH_NODE_FILES", 1000) as usize,
        trickle_rate: 10.0,
        busy_files: env_u64("LOGSHIP_BENCH_BUSY_FILES", 20) as usize,
        busy_rate: 500.0,
    };
    println!(
        "pipeline bench: {} on {} (logship {})",
        selected.join(", "),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim(),
        scenarios::agent::LOGSHIP_BIN
    );

    let mut failed = Vec::new();
    for &name in &selected {
        for &buffer in buffers {
            let common = Common {
                buffer,
                ..common.clone()
            };
            let result = match name {
                "catch-up" | "easy" => {
                    let catch_up = CatchUp {
                        common,
                        corpus: if name == "easy" {
                            CorpusKind::Easy
                        } else {
                            CorpusKind::Realistic
                        },
                        cache: root.join("corpus"),
                        mib: env_u64("LOGSHIP_BENCH_MIB", 1024),
                        files: env_u64("LOGSHIP_BENCH_FILES", 20) as usize,
                    };
                    let corpus = catch_up.prepare();
                    if compare == Some(true) {
                        let rounds = env_u64("LOGSHIP_BENCH_ROUNDS", 3).max(1);
                        let result = catch_up.compare(&corpus, rounds);
                        report(name, result, &mut failed);
                        break;
                    }
                    catch_up.run_once(&corpus, buffer).map(drop)
                }
                "node" => Node {
                    common,
                    load: load.clone(),
                    secs,
                }
                .run()
                .map(drop),
                "idle" => Idle {
                    common,
                    files: load.trickle_files,
                    lines_per_file: env_u64("LOGSHIP_BENCH_IDLE_LINES", 20),
                    secs,
                }
                .run()
                .map(drop),
                "outage" => Outage {
                    common,
                    load: load.clone(),
                    secs,
                    sample_every: Duration::from_secs(env_u64("LOGSHIP_BENCH_SAMPLE_SECS", 5)),
                }
                .run()
                .map(drop),
                "latency" => Latency {
                    common,
                    files: env_u64("LOGSHIP_BENCH_LATENCY_FILES", 20) as usize,
                    rates: env_list("LOGSHIP_BENCH_LATENCY_RATES", &[1000, 10000]),
                    secs,
                }
                .run()
                .map(drop),
                _ => unreachable!("checked above"),
            };
            report(name, result, &mut failed);
        }
    }
    if !failed.is_empty() {
        eprintln!("pipeline bench: FAILED: {}", failed.join(", "));
        std::process::exit(1);
    }
}

fn report(name: &str, result: Result<(), String>, failed: &mut Vec<String>) {
    if let Err(e) = result {
        eprintln!("{name}: FAILED: {e}");
        failed.push(name.to_string());
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: expected a whole number")),
        Err(_) => default,
    }
}

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .split(',')
            .map(|n| {
                n.trim().parse().unwrap_or_else(|_| {
                    panic!("{name}={v}: expected whole numbers, comma-separated")
                })
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}
