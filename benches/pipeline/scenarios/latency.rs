//! `latency`: from a line's write to its acknowledgement.
//!
//! For each rate (default 1,000 and 10,000 lines/s), `files` files (default
//! 20) share the rate evenly; each holds one line before the agent starts,
//! and once those are acknowledged the writers append for `secs` (default
//! 60). Every line carries its write time (` t=<ns>` in the message, taken
//! just before its `write(2)`); the endpoint records, for each line's first
//! acknowledgement, the time at which its answer to that bulk request was
//! complete. Printed: p50, p99, p99.9 and max of (answer − write), next to
//! the `batch.timeout` in effect (a batch is sent at the latest that long
//! after its first line), and the agent's CPU and RSS over the period.

use std::time::{Duration, Instant};

use super::agent::{Agent, AgentConfig};
use super::endpoint::{Endpoint, Expected, ExpectedFile};
use super::layout;
use super::measure::{self, quantile};
use super::node::expected;
use super::writers::{LineMaker, WriterFile, Writers, append_lines};
use super::{Account, Common, stop_and_account, wait_for_acks};

pub struct Latency {
    pub common: Common,
    pub files: usize,
    /// Total lines per second, one run each.
    pub rates: Vec<u64>,
    pub secs: u64,
}

#[derive(Clone, Debug)]
pub struct LatencyRun {
    pub rate: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub account: Account,
}

impl Latency {
    pub fn run(&self) -> Result<Vec<LatencyRun>, String> {
        self.rates.iter().map(|&rate| self.run_at(rate)).collect()
    }

    fn run_at(&self, rate: u64) -> Result<LatencyRun, String> {
        let work = self.common.fresh_dir(&format!("latency-{rate}"));
        let logs = work.join("logs");
        let endpoint = Endpoint::start();
        let pods = layout::create(&logs, self.files, 17);
        let mut maker = LineMaker::new(9, endpoint.epoch());
        let files: Vec<WriterFile> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                append_lines(&mut maker, &pod.path, i as u32, 0, 1);
                WriterFile {
                    path: pod.path.clone(),
                    file: i as u32,
                    rate: rate as f64 / self.files as f64,
                    first_seq: 1,
                }
            })
            .collect();
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
        if wait_for_acks(
            &endpoint,
            &mut agent,
            pods.len() as u64,
            self.common.drain_timeout,
            |_| {},
        )
        .is_none()
        {
            let first_lines = Expected {
                files: pods
                    .iter()
                    .map(|p| ExpectedFile {
                        name: p.name.clone(),
                        lines: 1,
                    })
                    .collect(),
            };
            let why = stop_and_account(&endpoint, agent, &first_lines).err();
            return Err(format!(
                "latency: the files' first lines were not acknowledged within {:?}: {}",
                self.common.drain_timeout,
                why.unwrap_or_default()
            ));
        }
        // The first lines waited for the agent's start: not part of it.
        endpoint.take_latencies();

        let before = agent.sample();
        let started = Instant::now();
        let writers = Writers::start(files, self.common.writer_threads, endpoint.epoch());
        std::thread::sleep(Duration::from_secs(self.secs));
        let report = writers.stop(pods.len());
        let wall = started.elapsed();
        let during = agent.sample();
        let expected = expected(&pods, &report);
        let drained = wait_for_acks(
            &endpoint,
            &mut agent,
            expected.total(),
            self.common.drain_timeout,
            |_| {},
        );
        let after = agent.sample();
        let account = stop_and_account(&endpoint, agent, &expected)?;
        if drained.is_none() {
            return Err(format!(
                "latency: not every line acknowledged within {:?} of the end of writing",
                self.common.drain_timeout
            ));
        }
        let mut latencies = endpoint.take_latencies();
        if latencies.len() as u64 != report.lines {
            return Err(format!(
                "latency: {} write-to-answer times recorded for {} lines written",
                latencies.len(),
                report.lines
            ));
        }
        latencies.sort_unstable();
        let at = |p: f64| Duration::from_nanos(quantile(&latencies, p));
        let run = LatencyRun {
            rate,
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
            account,
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "latency ({rate} lines/s over {} files, {} s, {} buffer, batch.timeout {}):\n  \
             write → acknowledged: p50 {:.0} ms, p99 {:.0} ms, p99.9 {:.0} ms, max {:.0} ms ({} lines)\n  \
             written: {:.0} lines/s; writers' longest gap {} ms\n  \
             logship: {:.1} % of one core, peak RSS {:.1} MiB\n  \
             delivered: {}\n  \
             load average: {load_before} before, {} after",
            self.files,
            self.secs,
            self.common.buffer.name(),
            config.batch_timeout_shown(),
            ms(run.p50),
            ms(run.p99),
            ms(at(0.999)),
            ms(run.max),
            latencies.len(),
            report.lines as f64 / wall.as_secs_f64(),
            report.longest_gap.as_millis(),
            measure::percent_of_core(during.cpu_seconds - before.cpu_seconds, wall),
            measure::mib(after.hwm_kib),
            run.account,
            measure::load(),
        );
        Ok(run)
    }
}
