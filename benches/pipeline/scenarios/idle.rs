//! `idle`: many files, everything shipped, nothing written.
//!
//! `files` files (default 1,000) each hold `lines_per_file` lines (default
//! 20) before the agent starts. Once every line is acknowledged the bench
//! waits 6 s (a rescan, 5 s by default, and a checkpoint write, every
//! 500 ms, happen), then measures for `secs` (default 60) with no writes at
//! all: logship's CPU as a percentage of one core, its RSS at the start and
//! end of the idle period (sampled every second: max), peak RSS, open fds.
//! The account is checked at the end (nothing new may arrive).

use std::time::{Duration, Instant};

use super::agent::{Agent, AgentConfig};
use super::endpoint::{Endpoint, Expected, ExpectedFile};
use super::layout;
use super::measure::{self, ProcSample};
use super::writers::{LineMaker, append_lines};
use super::{Account, Common, stop_and_account, wait_for_acks};

pub struct Idle {
    pub common: Common,
    pub files: usize,
    pub lines_per_file: u64,
    pub secs: u64,
}

#[derive(Clone, Debug)]
pub struct IdleRun {
    pub cpu_percent: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub account: Account,
}

/// How long after the last acknowledgement the idle period starts.
const SETTLE: Duration = Duration::from_secs(6);

impl Idle {
    pub fn run(&self) -> Result<IdleRun, String> {
        let work = self.common.fresh_dir("idle");
        let logs = work.join("logs");
        let endpoint = Endpoint::start();
        let pods = layout::create(&logs, self.files, 13);
        let mut maker = LineMaker::new(5, endpoint.epoch());
        let mut bytes = 0;
        for (i, pod) in pods.iter().enumerate() {
            bytes += append_lines(&mut maker, &pod.path, i as u32, 0, self.lines_per_file);
        }
        let expected = Expected {
            files: pods
                .iter()
                .map(|p| ExpectedFile {
                    name: p.name.clone(),
                    lines: self.lines_per_file,
                })
                .collect(),
        };
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
        let shipped = wait_for_acks(
            &endpoint,
            &mut agent,
            expected.total(),
            self.common.drain_timeout,
            |_| {},
        );
        let Some(shipped) = shipped else {
            let why = stop_and_account(&endpoint, agent, &expected).err();
            return Err(format!(
                "idle: the files' lines were not all acknowledged within {:?}: {}",
                self.common.drain_timeout,
                why.unwrap_or_default()
            ));
        };
        let after_shipping = agent.sample();
        std::thread::sleep(SETTLE);
        agent.assert_running();

        let before = agent.sample();
        let bench_before = ProcSample::this_process();
        let idle = Instant::now();
        let mut rss_max = before.rss_kib;
        while idle.elapsed() < Duration::from_secs(self.secs) {
            std::thread::sleep(Duration::from_secs(1));
            agent.assert_running();
            rss_max = rss_max.max(agent.sample().rss_kib);
        }
        let wall = idle.elapsed();
        let after = agent.sample();
        let bench_cpu = ProcSample::this_process().cpu_seconds - bench_before.cpu_seconds;
        let requests = endpoint.traffic().requests;
        let account = stop_and_account(&endpoint, agent, &expected)?;
        let run = IdleRun {
            cpu_percent: measure::percent_of_core(after.cpu_seconds - before.cpu_seconds, wall),
            rss_mib: measure::mib(after.rss_kib),
            peak_rss_mib: measure::mib(after.hwm_kib),
            account,
        };
        println!(
            "idle ({} files of {} lines, {:.1} MiB, {} buffer; {} s without writes):\n  \
             shipped in {:.1} s (RSS then {:.1} MiB); the idle period began {} s later\n  \
             logship while idle: {:.2} % of one core ({:.2} CPU-s in {:.0} s); RSS {:.1} MiB at its start, \
             {:.1} MiB at its end (anon {:.1}), {:.1} MiB at most; {} fds, {} threads\n  \
             peak RSS: {:.1} MiB\n  \
             delivered: {} ({} bulk requests in all)\n  \
             endpoint and bench while idle: {:.2} % of one core\n  \
             load average: {load_before} before, {} after",
            self.files,
            self.lines_per_file,
            bytes as f64 / 1048576.0,
            self.common.buffer.name(),
            self.secs,
            shipped.as_secs_f64(),
            measure::mib(after_shipping.rss_kib),
            SETTLE.as_secs(),
            run.cpu_percent,
            after.cpu_seconds - before.cpu_seconds,
            wall.as_secs_f64(),
            measure::mib(before.rss_kib),
            run.rss_mib,
            measure::mib(after.anon_kib),
            measure::mib(rss_max),
            after.fds,
            after.threads,
            run.peak_rss_mib,
            run.account,
            requests,
            measure::percent_of_core(bench_cpu, wall),
            measure::load(),
        );
        Ok(run)
    }
}
