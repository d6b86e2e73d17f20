//! Chaos test: the real agent against a real Elasticsearch, through
//! randomized schedules of file rotations, truncations, deletions,
//! compressions, kills, signals and outages, for a fixed time budget.
//!
//! Each schedule is a fresh world (see `world`): ten streams written
//! concurrently at a few hundred lines a second — containerd and CRI-O
//! files with 16 KiB and 8 KiB partial lines and `Z`/`+02:00`/`-05:00`
//! stamps, a docker `json-file`, all in the kubelet layout behind
//! `containers/*.log` symlinks; plain host files rotated by logrotate
//! (rename, or copytruncate); files in a directory whose glob matches their
//! rotations; files whose first line is always the same; a source that
//! reloads add and remove. Meanwhile the schedule (see `schedule`) rotates,
//! prunes, compresses, truncates, `kill -9`s the agent (at random, while a
//! bulk request is in flight, while a checkpoint is written), stops it with
//! SIGTERM, reloads it with SIGHUP, and makes Elasticsearch unreachable or
//! slow through a proxy (see `proxy`). It runs once with the memory buffer
//! and once with the disk buffer, alternately. At the end the index must
//! hold exactly the lines written, matched by their `seq=` marker; lines
//! missing must be exactly those the agent counted as lost, bar the ones no
//! shipper could have read (see `verify`); nothing may be indexed twice.
//!
//! Knobs (environment):
//!
//! * `CHAOS_SEED=n`: the master seed (printed as `CHAOS_SEED=…` at start
//!   and on failure); schedule `k` uses seed `n + k`.
//! * `CHAOS_BUDGET_SECS` (default 100): chaos time over all schedules;
//!   `CHAOS_SCHEDULE_SECS` (default 50): per schedule; `CHAOS_SCHEDULES`:
//!   a fixed number of schedules instead.
//! * `CHAOS_BUFFER=memory|disk`: one buffer type only (default: alternate).
//! * `CHAOS_ACTIONS=rotate,kill9,…`: only these actions (names in
//!   `schedule::ACTIONS`); `CHAOS_SKIP=…`: all but these. For bisecting.
//! * `CHAOS_KILLS` (default 1000): kills the long test runs to.
//!
//! `cargo test --test chaos chaos -- --nocapture` runs the CI budget
//! (`cargo test` runs it too);
//! `cargo test --test chaos chaos_long -- --ignored --nocapture`
//! runs until 1,000 kills and prints the figures.

#[path = "../support/mod.rs"]
mod support;

mod agent;
mod proxy;
mod schedule;
mod verify;
mod world;

use std::time::{Duration, Instant};

use agent::Buffer;
use schedule::{ACTIONS, Outcome, Plan};

struct Settings {
    seed: u64,
    budget: Duration,
    schedule: Duration,
    schedules: Option<usize>,
    buffer: Option<Buffer>,
    actions: Vec<&'static str>,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

fn settings() -> Settings {
    let list = |name: &str| -> Option<Vec<String>> {
        std::env::var(name).ok().map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
    };
    let known: Vec<&'static str> = ACTIONS.iter().map(|(n, _)| *n).collect();
    for name in ["CHAOS_ACTIONS", "CHAOS_SKIP"] {
        for a in list(name).unwrap_or_default() {
            assert!(
                known.contains(&a.as_str()),
                "{name}: unknown action {a:?}; known: {}",
                known.join(",")
            );
        }
    }
    let only = list("CHAOS_ACTIONS");
    let skip = list("CHAOS_SKIP").unwrap_or_default();
    let actions = known
        .into_iter()
        .filter(|a| only.as_ref().is_none_or(|o| o.iter().any(|x| x == a)))
        .filter(|a| !skip.iter().any(|x| x == a))
        .collect();
    Settings {
        seed: env_u64("CHAOS_SEED").unwrap_or_else(|| fastrand::u64(..1_000_000)),
        budget: Duration::from_secs(env_u64("CHAOS_BUDGET_SECS").unwrap_or(100)),
        schedule: Duration::from_secs(env_u64("CHAOS_SCHEDULE_SECS").unwrap_or(50)),
        schedules: env_u64("CHAOS_SCHEDULES").map(|n| n as usize),
        buffer: std::env::var("CHAOS_BUFFER")
            .ok()
            .map(|b| match b.as_str() {
                "memory" => Buffer::Memory,
                "disk" => Buffer::Disk,
                other => panic!("CHAOS_BUFFER={other:?}: memory or disk"),
            }),
        actions,
    }
}

/// Schedule `k` of a run.
fn plan(s: &Settings, test: &str, k: usize) -> Plan {
    let buffer = s.buffer.unwrap_or(if k.is_multiple_of(2) {
        Buffer::Memory
    } else {
        Buffer::Disk
    });
    let seed = s.seed + k as u64;
    Plan {
        seed,
        buffer,
        duration: s.schedule,
        actions: s.actions.clone(),
        name: format!("chaos-{test}-{seed}-{}", buffer.name()),
        keep_index: test != "long",
    }
}

fn replay(p: &Plan) -> String {
    format!(
        "CHAOS_SEED={} CHAOS_SCHEDULES=1 CHAOS_BUFFER={} CHAOS_SCHEDULE_SECS={} cargo test --test chaos -- --nocapture",
        p.seed,
        p.buffer.name(),
        p.duration.as_secs()
    )
}

/// Runs one schedule on a thread of its own: the agent dies with the thread
/// that started it (`PR_SET_PDEATHSIG`), and a panic fails this schedule
/// only.
fn run_one(p: &Plan) -> Result<Outcome, String> {
    let plan = Plan {
        seed: p.seed,
        buffer: p.buffer,
        duration: p.duration,
        actions: p.actions.clone(),
        name: p.name.clone(),
        keep_index: p.keep_index,
    };
    std::thread::Builder::new()
        .name(p.name.clone())
        .spawn(move || schedule::run(&plan))
        .expect("spawn schedule thread")
        .join()
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string())
        })
}

/// Totals over schedules.
#[derive(Default)]
struct Figures {
    schedules: u64,
    kills: u64,
    kills_in_flight: u64,
    kills_in_checkpoint_write: u64,
    lines: u64,
    lost_counted: u64,
    lost_uncounted: u64,
    inherent: u64,
    duplicated: u64,
    failures: Vec<String>,
}

impl Figures {
    fn add(&mut self, p: &Plan, r: Result<Outcome, String>) {
        self.schedules += 1;
        match r {
            Ok(o) => {
                println!("schedule {}", o.summary());
                self.kills += o.kills;
                self.kills_in_flight += o.kills_in_flight;
                self.kills_in_checkpoint_write += o.kills_in_checkpoint_write;
                self.lines += o.verdict.lines;
                self.lost_counted += o.verdict.owed - o.verdict.uncounted;
                self.lost_uncounted += o.verdict.uncounted;
                self.inherent += o.verdict.inherent;
                self.duplicated += o.verdict.duplicated;
                if o.verdict.failed {
                    println!("{}", o.verdict.report);
                    self.failures.push(format!(
                        "seed {} ({} buffer): {}\n  replay: {}",
                        p.seed,
                        p.buffer.name(),
                        o.verdict.summary(),
                        replay(p)
                    ));
                }
            }
            Err(panic) => {
                println!(
                    "schedule seed={} buffer={} PANICKED: {panic}",
                    p.seed,
                    p.buffer.name()
                );
                self.failures.push(format!(
                    "seed {} ({} buffer): panicked: {panic}\n  replay: {}",
                    p.seed,
                    p.buffer.name(),
                    replay(p)
                ));
            }
        }
    }

    fn line(&self) -> String {
        format!(
            "schedules {}, kills {} (with a bulk request in flight {}, during a checkpoint write {}), \
             lines {}, lost (counted) {}, lost (uncounted) {}, lost (inherent: truncated or gone before \
             the agent could read them) {}, duplicated {}",
            self.schedules,
            self.kills,
            self.kills_in_flight,
            self.kills_in_checkpoint_write,
            self.lines,
            self.lost_counted,
            self.lost_uncounted,
            self.inherent,
            self.duplicated
        )
    }

    fn assert_ok(&self, seed: u64) {
        assert!(
            self.failures.is_empty(),
            "CHAOS_SEED={seed}: {} of {} schedules failed (reports above):\n{}\n{}",
            self.failures.len(),
            self.schedules,
            self.failures.join("\n"),
            self.line()
        );
    }
}

/// The CI run: schedules for `CHAOS_BUDGET_SECS`, at least one per buffer.
#[test]
fn chaos() {
    let s = settings();
    println!(
        "CHAOS_SEED={} (budget {:?}, {:?} per schedule, actions {})",
        s.seed,
        s.budget,
        s.schedule,
        s.actions.join(",")
    );
    // Start the node before the clock runs.
    support::elasticsearch::shared();
    let started = Instant::now();
    let count = s.schedules.unwrap_or_else(|| {
        (s.budget.as_secs_f64() / s.schedule.as_secs_f64().max(1.0))
            .ceil()
            .max(2.0) as usize
    });
    let mut figures = Figures::default();
    for k in 0..count {
        let p = plan(&s, "ci", k);
        let r = run_one(&p);
        figures.add(&p, r);
    }
    println!(
        "CHAOS_SEED={}: {} in {:.0}s",
        s.seed,
        figures.line(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        figures.kills_in_flight > 0 || !s.actions.contains(&"kill9_inflight"),
        "no kill happened with a bulk request in flight"
    );
    figures.assert_ok(s.seed);
}

/// The long run: schedules until `CHAOS_KILLS` kills (default 1,000).
#[test]
#[ignore = "long: runs until 1,000 kills; figures go in docs/testing.md"]
fn chaos_long() {
    let s = settings();
    let target = env_u64("CHAOS_KILLS").unwrap_or(1000);
    println!(
        "CHAOS_SEED={} (until {target} kills, {:?} per schedule)",
        s.seed, s.schedule
    );
    support::elasticsearch::shared();
    let started = Instant::now();
    let mut figures = Figures::default();
    let mut k = 0;
    while figures.kills < target {
        let p = plan(&s, "long", k);
        let r = run_one(&p);
        figures.add(&p, r);
        println!("  so far: {}", figures.line());
        k += 1;
    }
    println!(
        "CHAOS_SEED={}: {} in {:.0}s",
        s.seed,
        figures.line(),
        started.elapsed().as_secs_f64()
    );
    figures.assert_ok(s.seed);
}
