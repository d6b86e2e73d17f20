//! `node`: a node's worth of containers writing steadily.
//!
//! `trickle_files` files (default 1,000) at 10 lines/s each plus
//! `busy_files` (default 20) at 500 lines/s each, for `secs` (default 60):
//! 20,000 lines/s of ~170-byte CRI lines by default, appended by a few
//! writer threads ([`super::writers`]). Each file holds one line before the
//! agent starts; the steady period begins once those are all acknowledged
//! (every file is followed). Figures over the steady period: logship's CPU
//! as a percentage of one core and per GiB of raw input, its RSS (sampled
//! every second: min and max) and peak RSS, open fds and threads; then, after
//! the writers stop, the time to acknowledge the rest and the exact account.

use std::time::{Duration, Instant};

use super::agent::{Agent, AgentConfig};
use super::endpoint::{Endpoint, Expected, ExpectedFile};
use super::layout::{self, PodLog};
use super::measure::{self, ProcSample};
use super::writers::{LineMaker, WriteReport, WriterFile, Writers, append_lines};
use super::{Account, Common, stop_and_account, wait_for_acks};

/// The files of a node and how fast each is written.
#[derive(Clone, Debug)]
pub struct NodeLoad {
    pub trickle_files: usize,
    /// Lines per second of each trickling file.
    pub trickle_rate: f64,
    pub busy_files: usize,
    /// Lines per second of each busy file.
    pub busy_rate: f64,
}

impl NodeLoad {
    pub fn files(&self) -> usize {
        self.trickle_files + self.busy_files
    }

    pub fn lines_per_second(&self) -> f64 {
        self.trickle_files as f64 * self.trickle_rate + self.busy_files as f64 * self.busy_rate
    }

    pub fn describe(&self) -> String {
        format!(
            "{} files × {} lines/s + {} files × {} lines/s = {:.0} lines/s",
            self.trickle_files,
            self.trickle_rate,
            self.busy_files,
            self.busy_rate,
            self.lines_per_second()
        )
    }

    /// Creates the files under `logs`, each with its line 0, and returns
    /// them with what the writers go on with (from line 1).
    pub fn create(&self, logs: &std::path::Path, epoch: Instant) -> (Vec<PodLog>, Vec<WriterFile>) {
        let pods = layout::create(logs, self.files(), 11);
        let mut maker = LineMaker::new(3, epoch);
        let writers = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                append_lines(&mut maker, &pod.path, i as u32, 0, 1);
                WriterFile {
                    path: pod.path.clone(),
                    file: i as u32,
                    rate: if i < self.trickle_files {
                        self.trickle_rate
                    } else {
                        self.busy_rate
                    },
                    first_seq: 1,
                }
            })
            .collect();
        (pods, writers)
    }
}

/// What the files hold after the writers stopped.
pub fn expected(pods: &[PodLog], report: &WriteReport) -> Expected {
    Expected {
        files: pods
            .iter()
            .zip(&report.lines_in_file)
            .map(|(pod, &lines)| ExpectedFile {
                name: pod.name.clone(),
                lines,
            })
            .collect(),
    }
}

pub struct Node {
    pub common: Common,
    pub load: NodeLoad,
    pub secs: u64,
}

/// The steady period's figures.
#[derive(Clone, Debug)]
pub struct NodeRun {
    pub cpu_percent: f64,
    pub cpu_per_gib: f64,
    pub peak_rss_mib: f64,
    pub account: Account,
}

impl Node {
    pub fn run(&self) -> Result<NodeRun, String> {
        let work = self.common.fresh_dir("node");
        let logs = work.join("logs");
        let endpoint = Endpoint::start();
        let (pods, files) = self.load.create(&logs, endpoint.epoch());
        let config = AgentConfig {
            work: &work,
            include: layout::include(&logs),
            url: endpoint.url(),
            concurrency: self.common.concurrency,
            buffer: self.common.buffer,
            batch_timeout: self.common.batch_timeout,
        };
        let load_before = measure::load();
        let mut agent = Agent::start(&config.write());
        let following = wait_for_acks(
            &endpoint,
            &mut agent,
            pods.len() as u64,
            self.common.drain_timeout,
            |_| {},
        );
        if following.is_none() {
            let expected = Expected {
                files: pods
                    .iter()
                    .map(|p| ExpectedFile {
                        name: p.name.clone(),
                        lines: 1,
                    })
                    .collect(),
            };
            return Err(format!(
                "node: the first line of every file was not acknowledged within {:?}: {}",
                self.common.drain_timeout,
                stop_and_account(&endpoint, agent, &expected)
                    .err()
                    .unwrap_or_default()
            ));
        }
        let ready = agent.age();

        let before = agent.sample();
        let bench_before = ProcSample::this_process();
        let acked_before = endpoint.acknowledged();
        let steady = Instant::now();
        let writers = Writers::start(files, self.common.writer_threads, endpoint.epoch());
        let (mut rss_min, mut rss_max) = (u64::MAX, 0u64);
        let mut last = (before, Instant::now());
        while steady.elapsed() < Duration::from_secs(self.secs) {
            std::thread::sleep(Duration::from_secs(1).min(Duration::from_secs(self.secs)));
            agent.assert_running();
            let now = agent.sample();
            rss_min = rss_min.min(now.rss_kib);
            rss_max = rss_max.max(now.rss_kib);
            if last.1.elapsed() >= Duration::from_secs(10) {
                println!(
                    "  t={:>3} s: rss {:.1} MiB (anon {:.1}), {:.1} % of one core over the last {:.0} s, {} lines acknowledged",
                    steady.elapsed().as_secs(),
                    measure::mib(now.rss_kib),
                    measure::mib(now.anon_kib),
                    measure::percent_of_core(
                        now.cpu_seconds - last.0.cpu_seconds,
                        last.1.elapsed()
                    ),
                    last.1.elapsed().as_secs_f64(),
                    endpoint.acknowledged()
                );
                last = (now, Instant::now());
            }
        }
        let report = writers.stop(pods.len());
        let wall = steady.elapsed();
        let after = agent.sample();
        let acked_during = endpoint.acknowledged() - acked_before;
        let bench_cpu = ProcSample::this_process().cpu_seconds - bench_before.cpu_seconds;

        let expected = expected(&pods, &report);
        let drained = wait_for_acks(
            &endpoint,
            &mut agent,
            expected.total(),
            self.common.drain_timeout,
            |_| {},
        );
        let end = agent.sample();
        let account = stop_and_account(&endpoint, agent, &expected)?;
        let Some(drained) = drained else {
            return Err(format!(
                "node: not every line acknowledged within {:?} of the end of writing",
                self.common.drain_timeout
            ));
        };
        let cpu = after.cpu_seconds - before.cpu_seconds;
        let gib = report.bytes as f64 / (1u64 << 30) as f64;
        let run = NodeRun {
            cpu_percent: measure::percent_of_core(cpu, wall),
            cpu_per_gib: cpu / gib.max(1e-12),
            peak_rss_mib: measure::mib(end.hwm_kib),
            account,
        };
        println!(
            "node ({}, {} s, {} buffer):\n  \
             every file followed and its first line acknowledged {:.1} s after the start\n  \
             written: {} lines, {:.1} MiB ({:.2} MiB/s, {:.0} lines/s); writers' longest gap between passes {} ms (every 5 ms)\n  \
             logship over the steady {:.0} s: {:.1} % of one core ({:.2} CPU-s), {:.1} CPU-s per GiB of input; \
             RSS {:.1}–{:.1} MiB (anon {:.1} at the end); {} fds, {} threads\n  \
             acknowledged during the steady period: {:.0} lines/s; the rest within {:.2} s of the writers' stop\n  \
             peak RSS: {:.1} MiB\n  \
             delivered: {}\n  \
             endpoint and writers: {:.0} % of one core\n  \
             load average: {load_before} before, {} after",
            self.load.describe(),
            self.secs,
            self.common.buffer.name(),
            ready.as_secs_f64(),
            report.lines,
            report.bytes as f64 / 1048576.0,
            report.bytes as f64 / 1048576.0 / wall.as_secs_f64(),
            report.lines as f64 / wall.as_secs_f64(),
            report.longest_gap.as_millis(),
            wall.as_secs_f64(),
            run.cpu_percent,
            cpu,
            run.cpu_per_gib,
            measure::mib(if rss_min == u64::MAX { 0 } else { rss_min }),
            measure::mib(rss_max),
            measure::mib(after.anon_kib),
            after.fds,
            after.threads,
            acked_during as f64 / wall.as_secs_f64(),
            drained.as_secs_f64(),
            run.peak_rss_mib,
            run.account,
            measure::percent_of_core(bench_cpu, wall),
            measure::load(),
        );
        Ok(run)
    }
}
